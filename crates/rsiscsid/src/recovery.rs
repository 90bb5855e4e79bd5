//! The recovery budget of a session as the service sets it: Windows'
//! `MaxRequestHoldTime` and `LinkDownTime`, per login, with the service's
//! defaults for a login that does not give them (Windows': 60 s and 15 s).
//! The initiator library enforces them ([`iscsi_initiator::RecoveryBudget`]).

use std::time::Duration;

use iscsi_initiator::RecoveryBudget;
use iscsi_initiator::model::Status;
use rsiscsi_api::types::{DEFAULT_LINK_DOWN_TIME_S, DEFAULT_MAX_REQUEST_HOLD_TIME_S, RECOVERY_TIME_RANGE_S};

/// The two recovery times of a session, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryTimes {
    /// How long a command may be held, from the first fault that hit it,
    /// while its connection is recovered (Windows `MaxRequestHoldTime`).
    pub max_request_hold_time_s: u32,
    /// How long a lost connection may stay down before every command
    /// waiting for it fails (Windows `LinkDownTime`).
    pub link_down_time_s: u32,
}

impl RecoveryTimes {
    /// Windows' defaults: 60 s and 15 s.
    pub const WINDOWS: RecoveryTimes = RecoveryTimes {
        max_request_hold_time_s: DEFAULT_MAX_REQUEST_HOLD_TIME_S,
        link_down_time_s: DEFAULT_LINK_DOWN_TIME_S,
    };

    /// The times of a login: each one given is checked (1 to 3600 s, else
    /// `ISDSC_INVALID_PARAMETER`), each one absent comes from `self` (the
    /// service's defaults).
    pub fn with(self, max_request_hold_time_s: Option<u32>, link_down_time_s: Option<u32>) -> Result<Self, Status> {
        Ok(RecoveryTimes {
            max_request_hold_time_s: check("max_request_hold_time_s", max_request_hold_time_s)?
                .unwrap_or(self.max_request_hold_time_s),
            link_down_time_s: check("link_down_time_s", link_down_time_s)?.unwrap_or(self.link_down_time_s),
        })
    }

    /// The library's budget with these times (and its own same-fault limit).
    pub fn budget(self) -> RecoveryBudget {
        RecoveryBudget {
            max_request_hold_time: Duration::from_secs(u64::from(self.max_request_hold_time_s)),
            link_down_time: Duration::from_secs(u64::from(self.link_down_time_s)),
            ..RecoveryBudget::WINDOWS
        }
    }
}

impl Default for RecoveryTimes {
    fn default() -> Self {
        RecoveryTimes::WINDOWS
    }
}

/// A recovery time must be 1 to 3600 s: 0 would fail every command at its
/// first fault (no recovery at all), more than an hour holds I/O far longer
/// than any application waits.
pub fn check(name: &str, v: Option<u32>) -> Result<Option<u32>, Status> {
    match v {
        Some(s) if !RECOVERY_TIME_RANGE_S.contains(&s) => Err(Status::invalid_parameter(format!(
            "{name} {s}: must be {} to {} seconds",
            RECOVERY_TIME_RANGE_S.start(),
            RECOVERY_TIME_RANGE_S.end()
        ))),
        other => Ok(other),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use iscsi_initiator::model::IsdscCode;

    #[test]
    fn defaults_are_windows() {
        let t = RecoveryTimes::default();
        assert_eq!((t.max_request_hold_time_s, t.link_down_time_s), (60, 15));
        assert_eq!(t.budget(), RecoveryBudget::WINDOWS);
    }

    #[test]
    fn given_times_replace_the_defaults_one_by_one() {
        let d = RecoveryTimes::WINDOWS;
        assert_eq!(d.with(None, None).unwrap(), d);
        let t = d.with(Some(20), None).unwrap();
        assert_eq!((t.max_request_hold_time_s, t.link_down_time_s), (20, 15));
        let t = d.with(None, Some(3600)).unwrap();
        assert_eq!((t.max_request_hold_time_s, t.link_down_time_s), (60, 3600));
        let b = d.with(Some(1), Some(2)).unwrap().budget();
        assert_eq!((b.max_request_hold_time, b.link_down_time), (Duration::from_secs(1), Duration::from_secs(2)));
        assert_eq!(b.same_fault_limit, RecoveryBudget::WINDOWS.same_fault_limit);
    }

    #[test]
    fn zero_and_more_than_an_hour_are_invalid_parameters() {
        for (hold, link, name) in
            [(Some(0), None, "max_request_hold_time_s 0"), (None, Some(3601), "link_down_time_s 3601")]
        {
            let e = RecoveryTimes::WINDOWS.with(hold, link).unwrap_err();
            assert_eq!(e.code, IsdscCode::InvalidParameter);
            assert_eq!(e.message, format!("{name}: must be 1 to 3600 seconds"));
        }
        assert!(check("x", Some(u32::MAX)).is_err());
        assert_eq!(check("x", Some(1)).unwrap(), Some(1));
    }
}
