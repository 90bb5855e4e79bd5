//! Portal addresses: `HOST[:PORT]`, `[IPv6][:PORT]`, and the SendTargets
//! `TargetAddress` form `HOST[:PORT],TPGT` (RFC 7143 §13.8).

use std::fmt;

use crate::error::Error;

/// The well-known iSCSI port (RFC 7143 §13.8).
pub const DEFAULT_PORT: u16 = iscsi_proto::discovery::DEFAULT_PORT;

/// A network portal: host name or IP literal and TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortalAddr {
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl PortalAddr {
    /// Parses `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`. A bare IPv6
    /// literal without brackets is accepted when it has more than one colon.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let (host, port) =
            iscsi_proto::discovery::split_host_port(s).ok_or_else(|| Error::InvalidAddress(s.to_string()))?;
        Ok(Self { host: host.to_string(), port })
    }

    /// `host:port` suitable for `TcpStream::connect` (brackets for IPv6).
    pub fn socket_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for PortalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A portal a target is reachable through, with its portal group tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetPortal {
    pub addr: PortalAddr,
    pub tpgt: u16,
}

impl TargetPortal {
    /// Parses a `TargetAddress` value: `HOST[:PORT],TPGT` (RFC 7143 §13.8).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let (addr, tpgt) = s.rsplit_once(',').ok_or_else(|| Error::InvalidAddress(s.to_string()))?;
        let tpgt = tpgt.parse::<u16>().map_err(|_| Error::InvalidAddress(s.to_string()))?;
        Ok(Self { addr: PortalAddr::parse(addr)?, tpgt })
    }
}

impl fmt::Display for TargetPortal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.addr, self.tpgt)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_forms() {
        let p = PortalAddr::parse("127.0.0.1").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 3260));
        let p = PortalAddr::parse("127.0.0.1:3261").unwrap();
        assert_eq!(p.port, 3261);
        let p = PortalAddr::parse("[::1]:3261").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 3261));
        assert_eq!(p.to_string(), "[::1]:3261");
        let p = PortalAddr::parse("[::1]").unwrap();
        assert_eq!(p.port, 3260);
        let p = PortalAddr::parse("fe80::1").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("fe80::1", 3260));
        let p = PortalAddr::parse("storage.example:860").unwrap();
        assert_eq!(p.to_string(), "storage.example:860");
    }

    #[test]
    fn refuses_bad_addresses() {
        for s in ["", ":3260", "host:0", "host:65536", "host:x", "[::1", "[::1]x", "a b:1", "h/x"] {
            assert!(PortalAddr::parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn parses_target_address_values() {
        let t = TargetPortal::parse("127.0.0.1:3260,1").unwrap();
        assert_eq!(t.to_string(), "127.0.0.1:3260,1");
        let t = TargetPortal::parse("[::1]:3260,1").unwrap();
        assert_eq!((t.addr.host.as_str(), t.tpgt), ("::1", 1));
        let t = TargetPortal::parse("target.example,7").unwrap();
        assert_eq!((t.addr.port, t.tpgt), (3260, 7));
        assert!(TargetPortal::parse("127.0.0.1:3260").is_err());
        assert!(TargetPortal::parse("127.0.0.1:3260,x").is_err());
    }
}
