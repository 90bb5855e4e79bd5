//! Why a connection failed, and when recovery stops trying (RFC 7143
//! §6.2, §7.1): the rules of the recovery budget
//! ([`crate::config::RecoveryBudget`]), with no sockets and no clock of
//! their own, so that each is tested here.
//!
//! A fault that a target repeats on a reinstated connection (a protocol
//! violation, a bad digest) cannot heal by retrying; a cut connection or a
//! stall may. The first fault that hit a command stays with it, so that
//! the error a user finally reads names the cause, not the last timeout.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::RecoveryBudget;

/// What kind of fault ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The target sent something RFC 7143 forbids (a Data-In for an unknown
    /// task, a DataSN gap, a StatSN jump, ...). Deterministic.
    Violation,
    /// A PDU that could not be framed: a bad digest (§12.1), an unknown
    /// opcode, a length beyond the limits. Deterministic as far as we can
    /// tell: a reinstated connection that meets it again gives up.
    Malformed,
    /// The target closed the connection.
    Closed,
    /// The socket failed (a reset, most often).
    Transport,
    /// The target went silent: no answer to NOP-Out, no data for too long.
    Silent,
    /// The target kept its command window closed (MaxCmdSN < ExpCmdSN,
    /// §4.2.2.1) so that no command could be sent.
    WindowClosed,
}

impl FaultKind {
    /// Whether the same fault again on a reinstated connection means that
    /// retrying cannot help (see `RecoveryBudget::same_fault_limit`).
    pub fn deterministic(self) -> bool {
        matches!(self, FaultKind::Violation | FaultKind::Malformed)
    }
}

/// One fault, with the words that say what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionFault {
    pub kind: FaultKind,
    /// What happened, in words (for `Violation` without its prefix).
    pub detail: String,
}

impl ConnectionFault {
    pub fn new(kind: FaultKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }

    /// The fault an error met while handling the target's PDUs stands for.
    pub fn from_error(e: &crate::error::Error) -> Self {
        use crate::error::Error as E;
        match e {
            E::Protocol(m) => Self::new(FaultKind::Violation, m.clone()),
            E::Pdu(_) | E::Text(_) => Self::new(FaultKind::Malformed, e.to_string()),
            E::Rejected(m) => Self::new(FaultKind::Violation, format!("rejected a PDU: {m}")),
            // An Async Message saying the target drops the connection (§11.9.1).
            E::ConnectionLost(m) => Self::new(FaultKind::Closed, m.clone()),
            other => Self::new(FaultKind::Transport, other.to_string()),
        }
    }

    /// Whether `other` is the same fault again: same kind, same words but
    /// for the numbers in them (a task tag or a sequence number changes
    /// from one try to the next, the rule that was broken does not).
    pub fn same_as(&self, other: &ConnectionFault) -> bool {
        self.kind == other.kind && shape(&self.detail) == shape(&other.detail)
    }
}

impl fmt::Display for ConnectionFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::Violation => write!(f, "target broke the iSCSI protocol: {}", self.detail),
            _ => f.write_str(&self.detail),
        }
    }
}

/// `detail` with every run of digits (and hex digits after `0x`) as `#`.
fn shape(detail: &str) -> String {
    let mut out = String::with_capacity(detail.len());
    let mut chars = detail.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let hex = c == '0' && chars.peek() == Some(&'x');
            if hex {
                chars.next();
            }
            while chars.peek().is_some_and(|n| if hex { n.is_ascii_hexdigit() } else { n.is_ascii_digit() }) {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// Why recovery stopped for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUpWhy {
    /// The same deterministic fault came back on this many reinstated
    /// connections.
    SameFault { reinstated: u32 },
    /// The command was held this long since its first fault (Windows
    /// `MaxRequestHoldTime`), after this many reinstated connections.
    HoldTime { held: Duration, reinstated: u32 },
    /// No connection could be re-established within this time (Windows
    /// `LinkDownTime`); `last` is the last attempt's error.
    LinkDown { within: Duration, last: String },
}

/// The error a command ends with when recovery gives up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUp {
    /// The fault that started the recovery.
    pub cause: ConnectionFault,
    pub why: GiveUpWhy,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        match &self.why {
            GiveUpWhy::SameFault { reinstated } => {
                write!(
                    f,
                    "{} (same fault on {reinstated} reinstated connection{}; gave up)",
                    self.cause,
                    plural(*reinstated)
                )
            }
            GiveUpWhy::HoldTime { held, reinstated: 0 } => {
                write!(f, "{} (not recovered within the {} s hold time; gave up)", self.cause, held.as_secs())
            }
            GiveUpWhy::HoldTime { held, reinstated } => write!(
                f,
                "{} (still failing after {reinstated} reinstated connection{} and the {} s hold time; gave up)",
                self.cause,
                plural(*reinstated),
                held.as_secs()
            ),
            GiveUpWhy::LinkDown { within, last } if last.is_empty() => {
                write!(
                    f,
                    "{} (not re-established within the {} s link-down time; gave up)",
                    self.cause,
                    within.as_secs()
                )
            }
            GiveUpWhy::LinkDown { within, last } => write!(
                f,
                "{} (not re-established within the {} s link-down time: {last}; gave up)",
                self.cause,
                within.as_secs()
            ),
        }
    }
}

/// What recovery did in a session, for the management view and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Connections that failed and were taken over by recovery.
    pub recoveries: u64,
    /// Connections logged in again with the failed one's CID (§6.3.4).
    pub connections_reinstated: u64,
    /// Sessions logged in again with the same ISID (§6.3.5).
    pub sessions_reinstated: u64,
    /// Commands failed because recovery gave up on them (budget spent or
    /// the same fault again).
    pub give_ups: u64,
}

/// A target that answers each reinstated connection a little and then goes
/// silent again is one silence, not several: silences of a session that
/// begin within the hold time of the last one noticed continue it, and a
/// command they hit is held from the first. Without this, every command
/// that meets the silence would get a fresh hold time (and a NOP-Out
/// interval and timeout on top), and a one-shot copy could take minutes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silences {
    /// When the first silence of the chain began, when the last was noticed.
    chain: Option<(Instant, Instant)>,
}

impl Silences {
    /// Notes a silence that `began` and was noticed at `now`; returns when
    /// the chain it belongs to began.
    pub fn on_silence(&mut self, began: Instant, now: Instant, budget: &RecoveryBudget) -> Instant {
        let start = match self.chain {
            Some((start, last)) if began.saturating_duration_since(last) < budget.max_request_hold_time => start,
            _ => began,
        };
        self.chain = Some((start, now));
        start
    }
}

/// What recovery has seen of one command: kept on the task from its first
/// fault until it completes.
#[derive(Debug, Clone)]
pub struct TaskRecovery {
    /// The first fault that hit the command.
    pub first: ConnectionFault,
    /// When that was: the hold time counts from here.
    pub since: Instant,
    /// Reinstated connections that failed with the same fault as `first`.
    pub same_again: u32,
    /// Connections the command was on that failed after the first one.
    pub reinstated: u32,
}

/// What to do with a command whose connection just failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it for recovery.
    Hold,
    /// Fail it now with this error.
    GiveUp(GiveUp),
}

impl TaskRecovery {
    /// Notes that the connection of a command failed with `fault` at `now`
    /// (`seen`: what recovery saw of it before, if anything) and decides
    /// whether the command waits for recovery or ends.
    /// The hold time counts from `began`, when the fault began: `now` for
    /// most, but a target that went silent did so when its last PDU came,
    /// a NOP-Out interval and timeout before it was declared dead.
    pub fn on_fault(
        seen: &mut Option<TaskRecovery>,
        fault: &ConnectionFault,
        now: Instant,
        began: Instant,
        budget: &RecoveryBudget,
    ) -> Verdict {
        let r = match seen {
            None => {
                let r = TaskRecovery { first: fault.clone(), since: began.min(now), same_again: 0, reinstated: 0 };
                let verdict = r.check_hold(now, budget).map_or(Verdict::Hold, Verdict::GiveUp);
                *seen = Some(r);
                return verdict;
            }
            Some(r) => r,
        };
        r.reinstated = r.reinstated.saturating_add(1);
        if fault.same_as(&r.first) {
            r.same_again = r.same_again.saturating_add(1);
        }
        if fault.kind.deterministic() && fault.same_as(&r.first) && r.same_again >= budget.same_fault_limit.max(1) {
            return Verdict::GiveUp(GiveUp {
                cause: r.first.clone(),
                why: GiveUpWhy::SameFault { reinstated: r.same_again },
            });
        }
        r.check_hold(now, budget).map_or(Verdict::Hold, Verdict::GiveUp)
    }

    /// The error to end the command with once it has been held longer than
    /// `max_request_hold_time`, else `None`.
    pub fn check_hold(&self, now: Instant, budget: &RecoveryBudget) -> Option<GiveUp> {
        let held = now.saturating_duration_since(self.since);
        (held >= budget.max_request_hold_time).then(|| GiveUp {
            cause: self.first.clone(),
            why: GiveUpWhy::HoldTime { held: budget.max_request_hold_time, reinstated: self.reinstated },
        })
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn budget() -> RecoveryBudget {
        RecoveryBudget {
            max_request_hold_time: Duration::from_secs(20),
            link_down_time: Duration::from_secs(15),
            same_fault_limit: 1,
        }
    }

    fn violation(itt: u32) -> ConnectionFault {
        ConnectionFault::new(FaultKind::Violation, format!("Data-In for unknown task 0x{itt:08x}"))
    }

    #[test]
    fn the_same_rule_broken_again_is_the_same_fault() {
        assert!(violation(0x5a5a_0015).same_as(&violation(0x0000_0026)));
        let gap = |a: u32, b: u32| {
            ConnectionFault::new(FaultKind::Violation, format!("Data-In DataSN {a} where {b} was due"))
        };
        assert!(gap(1, 0).same_as(&gap(7, 3)));
        assert!(!gap(1, 0).same_as(&violation(1)));
        let closed = ConnectionFault::new(FaultKind::Closed, "the target closed the connection");
        assert!(!closed.same_as(&ConnectionFault::new(FaultKind::Transport, "the target closed the connection")));
    }

    #[test]
    fn a_violation_met_again_after_reinstatement_gives_up_at_once() {
        let t0 = Instant::now();
        let mut seen = None;
        assert_eq!(TaskRecovery::on_fault(&mut seen, &violation(0x15), t0, t0, &budget()), Verdict::Hold);
        let v = TaskRecovery::on_fault(&mut seen, &violation(0x26), t0 + Duration::from_secs(2), t0, &budget());
        let Verdict::GiveUp(g) = v else { panic!("expected a give-up, got {v:?}") };
        assert_eq!(g.why, GiveUpWhy::SameFault { reinstated: 1 });
        assert_eq!(
            g.to_string(),
            "target broke the iSCSI protocol: Data-In for unknown task 0x00000015 \
             (same fault on 1 reinstated connection; gave up)"
        );
    }

    #[test]
    fn a_higher_limit_allows_more_reinstatements() {
        let b = RecoveryBudget { same_fault_limit: 2, ..budget() };
        let t0 = Instant::now();
        let mut seen = None;
        assert_eq!(TaskRecovery::on_fault(&mut seen, &violation(1), t0, t0, &b), Verdict::Hold);
        assert_eq!(TaskRecovery::on_fault(&mut seen, &violation(2), t0, t0, &b), Verdict::Hold);
        let Verdict::GiveUp(g) = TaskRecovery::on_fault(&mut seen, &violation(3), t0, t0, &b) else { panic!() };
        assert!(g.to_string().ends_with("(same fault on 2 reinstated connections; gave up)"), "{g}");
    }

    #[test]
    fn cuts_and_stalls_are_retried_until_the_hold_time() {
        let reset = ConnectionFault::new(FaultKind::Transport, "read error: Connection reset by peer (os error 104)");
        let t0 = Instant::now();
        let mut seen = None;
        for s in [0, 2, 4, 19] {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(TaskRecovery::on_fault(&mut seen, &reset, now, t0, &budget()), Verdict::Hold, "at {s} s");
        }
        let Verdict::GiveUp(g) = TaskRecovery::on_fault(&mut seen, &reset, t0 + Duration::from_secs(20), t0, &budget())
        else {
            panic!()
        };
        assert_eq!(g.why, GiveUpWhy::HoldTime { held: Duration::from_secs(20), reinstated: 4 });
        assert_eq!(
            g.to_string(),
            "read error: Connection reset by peer (os error 104) (still failing after 4 reinstated \
             connections and the 20 s hold time; gave up)"
        );
    }

    #[test]
    fn a_different_fault_later_does_not_count_as_the_same() {
        let t0 = Instant::now();
        let mut seen = None;
        let closed = ConnectionFault::new(FaultKind::Closed, "the target closed the connection");
        assert_eq!(TaskRecovery::on_fault(&mut seen, &closed, t0, t0, &budget()), Verdict::Hold);
        // A violation after a cut is not the first fault repeated.
        assert_eq!(TaskRecovery::on_fault(&mut seen, &violation(1), t0, t0, &budget()), Verdict::Hold);
        assert!(seen.as_ref().is_some_and(|r| r.first == closed && r.same_again == 0 && r.reinstated == 1));
    }

    #[test]
    fn the_hold_time_counts_from_the_first_fault() {
        let t0 = Instant::now();
        let r = TaskRecovery { first: violation(1), since: t0, same_again: 0, reinstated: 0 };
        assert_eq!(r.check_hold(t0 + Duration::from_millis(19_999), &budget()), None);
        let g = r.check_hold(t0 + Duration::from_secs(21), &budget()).map(|g| g.to_string());
        assert_eq!(
            g.as_deref(),
            Some(
                "target broke the iSCSI protocol: Data-In for unknown task 0x00000001 \
                 (not recovered within the 20 s hold time; gave up)"
            )
        );
    }

    #[test]
    fn a_silence_counts_from_when_it_began() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let silent = ConnectionFault::new(FaultKind::Silent, "no answer to NOP-Out within 5 s");
        // Declared dead at 10 s, silent since the last PDU at 0 s.
        let mut seen = None;
        assert_eq!(TaskRecovery::on_fault(&mut seen, &silent, at(10), t0, &budget()), Verdict::Hold);
        assert!(seen.as_ref().is_some_and(|r| r.since == t0 && r.check_hold(at(20), &budget()).is_some()));
        // Noticed only after the hold time: no retry left.
        let mut late = None;
        let b = RecoveryBudget { max_request_hold_time: Duration::from_secs(8), ..budget() };
        assert!(matches!(TaskRecovery::on_fault(&mut late, &silent, at(10), t0, &b), Verdict::GiveUp(_)));
    }

    #[test]
    fn silences_close_to_each_other_are_one() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut silences = Silences::default();
        // Silent from 0, noticed at 8; the reinstated connection answers one
        // command and is silent again from 10, noticed at 18: one silence.
        assert_eq!(silences.on_silence(t0, at(8), &budget()), t0);
        assert_eq!(silences.on_silence(at(10), at(18), &budget()), t0);
        assert_eq!(silences.on_silence(at(30), at(38), &budget()), t0, "began 12 s after the last was noticed");
        // 20 s of answers after the last one noticed: a new silence.
        assert_eq!(silences.on_silence(at(58), at(66), &budget()), at(58));
    }

    #[test]
    fn link_down_names_the_last_attempt() {
        let g = GiveUp {
            cause: ConnectionFault::new(FaultKind::Closed, "the target closed the connection"),
            why: GiveUpWhy::LinkDown {
                within: Duration::from_secs(15),
                last: "cannot connect to 127.0.0.1:1: refused".into(),
            },
        };
        assert_eq!(
            g.to_string(),
            "the target closed the connection (not re-established within the 15 s link-down time: \
             cannot connect to 127.0.0.1:1: refused; gave up)"
        );
    }
}
