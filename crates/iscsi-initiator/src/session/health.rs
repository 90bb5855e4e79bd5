//! How a connection of the session is doing, as the management view and
//! the balancer see it: in full feature phase, stalled (a link that went
//! quiet under load), or being recovered.

use std::time::{Duration, Instant};

/// The state of one connection of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConnectionState {
    /// Logged in (RFC 7143 §4, full feature phase) and taking commands.
    #[default]
    FullFeature,
    /// Has outstanding work but has heard nothing from the target for
    /// longer than the stall time (`SessionConfig::stall_time`): the
    /// balancer gives it no new commands. Whether the link is dead is asked
    /// with TCP keepalive probes (the session's only connection also gets a
    /// NOP-Out ping, RFC 7143 §11.18); no answer within the NOP timeout
    /// makes it `Recovering`, any PDU `FullFeature` again.
    Stalled,
    /// Declared failed: its commands were moved to the other connections
    /// or re-issued, and it is being logged in again (same CID, RFC 7143
    /// §6.3.4) from its own initiator (local) address.
    Recovering,
}

impl ConnectionState {
    /// The user spelling (CLI, API, metrics).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FullFeature => "full-feature",
            Self::Stalled => "stalled",
            Self::Recovering => "recovering",
        }
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a connection is checked for life (RFC 7143 §11.18 NOP-Out pings),
/// from `SessionConfig`: a connection owed answers is expected to hear
/// from the target within the stall time; an idle one is pinged after the
/// NOP interval; a ping unanswered for the NOP timeout ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watch {
    pub stall_time: Duration,
    pub nop_interval: Duration,
    pub nop_timeout: Duration,
}

/// What a connection's watch decides when its timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing to do before this instant.
    Sleep(Instant),
    /// Quiet for too long: ping the target now. `stalled`: work is
    /// outstanding, so the connection takes no new commands until it hears
    /// from the target again.
    Ping { stalled: bool },
    /// The ping got no answer within the NOP timeout: the connection is
    /// dead (a link that went down drops packets without RST or FIN).
    Dead,
}

impl Watch {
    /// The decision at `now`, for a connection whose last whole PDU came at
    /// `last_pdu`, whose oldest command still unanswered went out at
    /// `oldest_outstanding`, and whose ping (if any) went out at `pinged`.
    pub fn step(
        &self,
        now: Instant,
        last_pdu: Instant,
        oldest_outstanding: Option<Instant>,
        pinged: Option<Instant>,
    ) -> Step {
        if let Some(at) = pinged {
            let due = at + self.nop_timeout;
            return if now >= due { Step::Dead } else { Step::Sleep(due) };
        }
        match oldest_outstanding {
            // Silence counts from the later of the last PDU and the oldest
            // command: a command sent to an idle connection is not late yet.
            Some(sent) => {
                let due = last_pdu.max(sent) + self.stall_time;
                if now >= due { Step::Ping { stalled: true } } else { Step::Sleep(due) }
            }
            None => {
                let due = last_pdu + self.nop_interval;
                if now >= due {
                    Step::Ping { stalled: false }
                } else {
                    // Look again within the stall time: work may come.
                    Step::Sleep(due.min(now + self.stall_time))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Watch = Watch {
        stall_time: Duration::from_secs(2),
        nop_interval: Duration::from_secs(10),
        nop_timeout: Duration::from_secs(5),
    };

    #[test]
    fn a_busy_connection_quiet_for_the_stall_time_stalls_and_is_pinged() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Answers came a second ago: not late yet.
        assert_eq!(W.step(t0 + s(3), t0 + s(2), Some(t0), None), Step::Sleep(t0 + s(4)));
        assert_eq!(W.step(t0 + s(4), t0 + s(2), Some(t0), None), Step::Ping { stalled: true });
        // A command sent to a connection idle for long is timed from its sending.
        assert_eq!(W.step(t0 + s(31), t0, Some(t0 + s(30)), None), Step::Sleep(t0 + s(32)));
    }

    #[test]
    fn an_idle_connection_is_pinged_after_the_nop_interval_and_looked_at_meanwhile() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(W.step(t0 + s(1), t0, None, None), Step::Sleep(t0 + s(3)));
        assert_eq!(W.step(t0 + s(9), t0, None, None), Step::Sleep(t0 + s(10)));
        assert_eq!(W.step(t0 + s(10), t0, None, None), Step::Ping { stalled: false });
    }

    #[test]
    fn an_unanswered_ping_is_death_after_the_nop_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(W.step(t0 + s(6), t0, Some(t0), Some(t0 + s(2))), Step::Sleep(t0 + s(7)));
        assert_eq!(W.step(t0 + s(7), t0, Some(t0), Some(t0 + s(2))), Step::Dead);
    }

    #[test]
    fn states_have_their_user_spellings() {
        assert_eq!(ConnectionState::FullFeature.as_str(), "full-feature");
        assert_eq!(ConnectionState::Stalled.as_str(), "stalled");
        assert_eq!(ConnectionState::Recovering.to_string(), "recovering");
        assert_eq!(ConnectionState::default(), ConnectionState::FullFeature);
    }
}
