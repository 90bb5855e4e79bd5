//! How a connection of the session is doing, as the management view and
//! the balancer see it: in full feature phase, stalled (a link that went
//! quiet under load), or being recovered.

/// The state of one connection of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConnectionState {
    /// Logged in (RFC 7143 §4, full feature phase) and taking commands.
    #[default]
    FullFeature,
    /// Has outstanding work but has heard nothing from the target for
    /// longer than the stall time (`SessionConfig::stall_time`): the
    /// balancer gives it no new commands, and a NOP-Out ping asks whether
    /// the target is still there (RFC 7143 §11.18).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_their_user_spellings() {
        assert_eq!(ConnectionState::FullFeature.as_str(), "full-feature");
        assert_eq!(ConnectionState::Stalled.as_str(), "stalled");
        assert_eq!(ConnectionState::Recovering.to_string(), "recovering");
        assert_eq!(ConnectionState::default(), ConnectionState::FullFeature);
    }
}
