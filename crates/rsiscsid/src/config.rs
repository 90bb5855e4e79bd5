//! Command-line options of `rsiscsid`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use rsiscsi_api::types::{DEFAULT_LINK_DOWN_TIME_S, DEFAULT_MAX_REQUEST_HOLD_TIME_S, RECOVERY_TIME_RANGE_S};

use crate::recovery::RecoveryTimes;

/// rsiscsid: the rsiscsi initiator service. Owns all sessions, logs in the
/// persistent logins at start, and serves a JSON API on a Unix socket.
#[derive(Debug, Clone, Parser)]
#[command(name = "rsiscsid", version)]
pub struct Options {
    /// API socket (default: $RUNTIME_DIRECTORY/rsiscsid.sock, else
    /// /run/rsiscsi/rsiscsid.sock as root, else
    /// $XDG_RUNTIME_DIR/rsiscsi/rsiscsid.sock).
    #[arg(long, env = "RSISCSI_SOCKET")]
    pub socket: Option<PathBuf>,
    /// State directory (default: $STATE_DIRECTORY, else /var/lib/rsiscsi as
    /// root, else $XDG_STATE_HOME/rsiscsi or ~/.local/state/rsiscsi).
    #[arg(long, env = "RSISCSI_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Let this group use the socket too (mode 0660 instead of 0600).
    #[arg(long, value_name = "NAME")]
    pub socket_group: Option<String>,
    /// Log filter, e.g. `info` or `rsiscsid=debug,iscsi_initiator=info`.
    #[arg(long, env = "RSISCSI_LOG", default_value = "info")]
    pub log_level: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback only).
    #[arg(long, value_name = "127.0.0.1:PORT", value_parser = parse_loopback)]
    pub metrics: Option<SocketAddr>,
    /// Seconds a command may be held while its connection is recovered, for
    /// logins that do not say (Windows' MaxRequestHoldTime; 1 to 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_MAX_REQUEST_HOLD_TIME_S,
          value_parser = clap::value_parser!(u32).range(recovery_range()))]
    pub max_request_hold_time: u32,
    /// Seconds a lost connection may stay down before its commands fail, for
    /// logins that do not say (Windows' LinkDownTime; 1 to 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LINK_DOWN_TIME_S,
          value_parser = clap::value_parser!(u32).range(recovery_range()))]
    pub link_down_time: u32,
    /// strongSwan charon's VICI socket, through which logins that ask for IPsec get their IKEv2
    /// security associations (RFC 7143 §9.3, RFC 3723).
    #[arg(long, env = "RSISCSI_VICI_SOCKET", value_name = "PATH",
          default_value = iscsi_initiator::ipsec::DEFAULT_VICI_SOCKET)]
    pub vici_socket: PathBuf,
}

/// `RECOVERY_TIME_RANGE_S` as clap takes it.
fn recovery_range() -> std::ops::RangeInclusive<i64> {
    i64::from(*RECOVERY_TIME_RANGE_S.start())..=i64::from(*RECOVERY_TIME_RANGE_S.end())
}

/// `--metrics` takes a loopback address only: the counters name targets and
/// sessions, which other hosts have no business reading.
fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s.parse().map_err(|e| format!("{s:?} is not an IP:PORT address: {e}"))?;
    if !a.ip().is_loopback() {
        return Err(format!("{a} is not a loopback address; metrics are served on 127.0.0.1 or [::1] only"));
    }
    Ok(a)
}

impl Options {
    /// The recovery times of a login that does not give its own.
    pub fn recovery_defaults(&self) -> RecoveryTimes {
        RecoveryTimes { max_request_hold_time_s: self.max_request_hold_time, link_down_time_s: self.link_down_time }
    }

    pub fn socket_path(&self) -> PathBuf {
        rsiscsi_api::resolve_socket_path(self.socket.clone())
    }

    pub fn state_path(&self) -> PathBuf {
        match &self.state_dir {
            Some(d) => d.clone(),
            None => rsiscsi_api::identity::default_state_dir(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn metrics_refuses_non_loopback() {
        assert!(parse_loopback("127.0.0.1:9000").is_ok());
        assert!(parse_loopback("[::1]:9000").is_ok());
        let e = parse_loopback("0.0.0.0:9000").unwrap_err();
        assert!(e.contains("not a loopback"), "{e}");
        assert!(Options::try_parse_from(["rsiscsid", "--metrics", "192.168.1.1:9"]).is_err());
    }

    #[test]
    fn recovery_defaults_are_windows_and_bounded() {
        let o = Options::try_parse_from(["rsiscsid"]).unwrap();
        assert_eq!(o.recovery_defaults(), RecoveryTimes::WINDOWS);
        let o =
            Options::try_parse_from(["rsiscsid", "--max-request-hold-time", "3600", "--link-down-time", "1"]).unwrap();
        assert_eq!(o.recovery_defaults(), RecoveryTimes { max_request_hold_time_s: 3600, link_down_time_s: 1 });
        assert!(Options::try_parse_from(["rsiscsid", "--max-request-hold-time", "0"]).is_err());
        assert!(Options::try_parse_from(["rsiscsid", "--link-down-time", "3601"]).is_err());
    }

    #[test]
    fn vici_socket_defaults_to_charons() {
        let o = Options::try_parse_from(["rsiscsid"]).unwrap();
        if std::env::var_os("RSISCSI_VICI_SOCKET").is_none() {
            assert_eq!(o.vici_socket, PathBuf::from("/var/run/charon.vici"));
        }
        let o = Options::try_parse_from(["rsiscsid", "--vici-socket", "/tmp/c.vici"]).unwrap();
        assert_eq!(o.vici_socket, PathBuf::from("/tmp/c.vici"));
    }

    #[test]
    fn explicit_state_dir_wins() {
        let o = Options::try_parse_from(["rsiscsid", "--state-dir", "/tmp/x"]).unwrap();
        assert_eq!(o.state_path(), PathBuf::from("/tmp/x"));
    }
}
