//! Where a connection connects from: the initiator port of `--from` and
//! `--add-portal HOST[:PORT]@LOCAL`.
//!
//! An initiator port (Windows' `InitiatorPortNumber`) is a local network
//! interface here, numbered by its interface index as `ip link` shows it
//! (`iscsi_initiator::session::initiator_port_address`). A connection
//! bound to a port connects from that interface's address of the portal's
//! family, and its reinstatement (RFC 7143 §6.3.4) connects from the same
//! address, never from whatever the route picks: a session spread over
//! several links keeps each connection on its own link.

use std::net::IpAddr;

use iscsi_initiator::PortalAddr;
use iscsi_initiator::model::ISCSI_ANY_INITIATOR_PORT;

/// A local address as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// A local IP address (it must be one of this host's).
    Address(IpAddr),
    /// An interface name (`rsl-i2`, `lo`): its address of the portal's family.
    Interface(String),
    /// An interface index, the initiator port number (`ip link` shows it).
    Index(u32),
}

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Local::Address(a) => write!(f, "{a}"),
            Local::Interface(n) => write!(f, "{n}"),
            Local::Index(i) => write!(f, "{i}"),
        }
    }
}

/// The longest interface name Linux takes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// `LOCAL`: an IPv4 or IPv6 address (`[::1]` too), an interface index or
/// an interface name.
pub fn parse_local(s: &str) -> Result<Local, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty local address: give an IP address, an interface name or an interface index".into());
    }
    let bare = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(t);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Local::Address(ip));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return match t.parse::<u32>() {
            Ok(n) if n != 0 && n != ISCSI_ANY_INITIATOR_PORT => Ok(Local::Index(n)),
            _ => Err(format!("{t:?} is not an interface index (1 to {})", ISCSI_ANY_INITIATOR_PORT - 1)),
        };
    }
    // An address that did not parse (`10.0.0`, `fe80::1%eth0`) is not taken for a name.
    let ok_name = t.len() <= IFNAME_MAX
        && !t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && t != "."
        && t != ".."
        && !t.contains(['/', ':', '[', ']', '%', '@'])
        && t.bytes().all(|b| b.is_ascii_graphic());
    if !ok_name {
        return Err(format!(
            "{t:?} is neither an IP address nor an interface name (at most {IFNAME_MAX} characters, no '/' or ':') \
             nor an interface index"
        ));
    }
    Ok(Local::Interface(t.to_string()))
}

/// A portal for an added connection and where it connects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPortal {
    pub portal: PortalAddr,
    pub local: Option<Local>,
}

/// `HOST[:PORT][@LOCAL]` (port 3260 when left out; `[::1]:3260@lo`).
pub fn parse_add_portal(s: &str) -> Result<AddPortal, String> {
    let (portal, local) = match s.split_once('@') {
        Some((p, l)) => (p, Some(parse_local(l)?)),
        None => (s, None),
    };
    if local.is_some() && portal.trim().is_empty() {
        return Err(format!("{s:?}: the portal is missing before '@' (HOST[:PORT]@LOCAL)"));
    }
    let portal = crate::cli::parse_portal(portal)?;
    Ok(AddPortal { portal, local })
}

/// Whether a portal is reached over IPv6 (its host is an IPv6 literal).
pub fn is_v6(portal: &PortalAddr) -> bool {
    portal.host.contains(':')
}

/// The interface index of an interface name, from sysfs.
fn index_of(name: &str) -> Result<u32, String> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| format!("no network interface is named {name:?} (`ip link` lists them)"))?;
    text.trim().parse().map_err(|_| format!("cannot read the index of interface {name:?} from {path}"))
}

/// The local address `local` stands for when connecting to `portal`: an
/// address must be this host's and of the portal's family; an interface
/// (by name or index) gives its first address of that family.
pub fn resolve(local: &Local, portal: &PortalAddr) -> Result<IpAddr, String> {
    let v6 = is_v6(portal);
    let family = if v6 { "IPv6" } else { "IPv4" };
    let (index, name) = match local {
        Local::Address(ip) => {
            if ip.is_ipv6() != v6 {
                return Err(format!("local address {ip} is not {family}, the family of portal {portal}"));
            }
            // Binding to it is what the connection will do: an address
            // that is not this host's fails now, with a clear message.
            return match std::net::UdpSocket::bind((*ip, 0)) {
                Ok(_) => Ok(*ip),
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                    Err(format!("local address {ip} is not an address of this host (`ip address` lists them)"))
                }
                Err(e) => Err(format!("cannot use local address {ip}: {e}")),
            };
        }
        Local::Interface(name) => (index_of(name)?, format!("interface {name}")),
        Local::Index(i) => (*i, format!("interface index {i}")),
    };
    match iscsi_initiator::session::initiator_port_address(index, v6) {
        Ok(Some(ip)) => Ok(ip),
        Ok(None) => Err(format!("{name} is not an interface")),
        Err(st) if st.message.starts_with("no network interface") => {
            Err(format!("no network interface has index {index} (`ip link` lists them)"))
        }
        Err(st) if st.message.contains("family") => {
            Err(format!("{name} has no {family} address, and portal {portal} is {family}"))
        }
        Err(st) => Err(format!("{name}: {}", st.message)),
    }
}

/// The initiator port number (interface index) `local` stands for, for
/// the service's API, which takes a port number: an index as it is, an
/// interface by its index, an address by the interface it is the first
/// address of (of its family: the one the service connects from).
pub fn port_number(local: &Local) -> Result<u32, String> {
    match local {
        Local::Index(i) => Ok(*i),
        Local::Interface(name) => index_of(name),
        Local::Address(ip) => {
            let dir =
                std::fs::read_dir("/sys/class/net").map_err(|e| format!("cannot list network interfaces: {e}"))?;
            let mut indexes: Vec<u32> =
                dir.filter_map(|e| index_of(&e.ok()?.file_name().into_string().ok()?).ok()).collect();
            indexes.sort_unstable();
            indexes
                .into_iter()
                .find(|i| {
                    iscsi_initiator::session::initiator_port_address(*i, ip.is_ipv6()).ok().flatten() == Some(*ip)
                })
                .ok_or_else(|| {
                    format!(
                        "local address {ip} is not the first {} address of an interface of this host (the one the \
                         service connects from): give the interface name or index",
                        if ip.is_ipv6() { "IPv6" } else { "IPv4" }
                    )
                })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn local_forms() {
        assert_eq!(parse_local("127.0.0.1"), Ok(Local::Address("127.0.0.1".parse().unwrap())));
        assert_eq!(parse_local("::1"), Ok(Local::Address("::1".parse().unwrap())));
        assert_eq!(parse_local("[::1]"), Ok(Local::Address("::1".parse().unwrap())));
        assert_eq!(parse_local("198.19.2.1"), Ok(Local::Address("198.19.2.1".parse().unwrap())));
        assert_eq!(parse_local("rsl-i2"), Ok(Local::Interface("rsl-i2".into())));
        assert_eq!(parse_local("lo"), Ok(Local::Interface("lo".into())));
        assert_eq!(parse_local("7"), Ok(Local::Index(7)));
        for bad in [
            "",
            " ",
            "0",
            "4294967295",
            "99999999999",
            "a/b",
            "fe80::1%eth0",
            "10.0.0",
            "x:y",
            "waytoolonginterface",
            "..",
        ] {
            assert!(parse_local(bad).is_err(), "{bad:?}");
        }
        assert!(parse_local("10.0.0").unwrap_err().contains("neither an IP address"));
    }

    #[test]
    fn add_portal_forms() {
        let a = parse_add_portal("198.19.2.2:3261@rsl-i2").unwrap();
        assert_eq!((a.portal.host.as_str(), a.portal.port), ("198.19.2.2", 3261));
        assert_eq!(a.local, Some(Local::Interface("rsl-i2".into())));
        let a = parse_add_portal("[::1]:3260@::1").unwrap();
        assert_eq!((a.portal.host.as_str(), a.portal.port), ("::1", 3260));
        assert_eq!(a.local, Some(Local::Address("::1".parse().unwrap())));
        let a = parse_add_portal("[::1]@[::1]").unwrap();
        assert_eq!((a.portal.port, a.local), (3260, Some(Local::Address("::1".parse().unwrap()))));
        let a = parse_add_portal("h@3").unwrap();
        assert_eq!((a.portal.host.as_str(), a.local), ("h", Some(Local::Index(3))));
        let a = parse_add_portal("h:3262").unwrap();
        assert_eq!((a.portal.port, a.local), (3262, None));
        for bad in ["@lo", "h@", "h@a@b", "h:x@lo", "h@a/b"] {
            assert!(parse_add_portal(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolving_checks_family_host_and_interface() {
        let v4 = PortalAddr::parse("127.0.0.1:3260").unwrap();
        let v6 = PortalAddr::parse("[::1]:3260").unwrap();
        let lo4: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(resolve(&Local::Address(lo4), &v4), Ok(lo4));
        assert!(resolve(&Local::Address(lo4), &v6).unwrap_err().contains("not IPv6"));
        // 198.18.0.0/15 is never configured on the root namespace's loopback.
        let far = Local::Address("198.18.255.254".parse().unwrap());
        assert!(resolve(&far, &v4).unwrap_err().contains("not an address of this host"), "{:?}", resolve(&far, &v4));
        assert_eq!(resolve(&Local::Interface("lo".into()), &v4), Ok(lo4));
        assert_eq!(resolve(&Local::Index(index_of("lo").unwrap()), &v4), Ok(lo4));
        let e = resolve(&Local::Interface("rsnosuch0".into()), &v4).unwrap_err();
        assert!(e.contains("no network interface is named \"rsnosuch0\""), "{e}");
        let e = resolve(&Local::Index(999_999), &v4).unwrap_err();
        assert!(e.contains("no network interface has index 999999"), "{e}");
    }

    #[test]
    fn port_numbers_for_the_service() {
        let lo = index_of("lo").unwrap();
        assert_eq!(port_number(&Local::Index(7)), Ok(7));
        assert_eq!(port_number(&Local::Interface("lo".into())), Ok(lo));
        assert_eq!(port_number(&Local::Address("127.0.0.1".parse().unwrap())), Ok(lo));
        assert!(port_number(&Local::Interface("rsnosuch0".into())).is_err());
        let e = port_number(&Local::Address("198.18.255.254".parse().unwrap())).unwrap_err();
        assert!(e.contains("give the interface name or index"), "{e}");
    }
}
