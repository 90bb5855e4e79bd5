//! The SendTargets answer (RFC 7143 §12.3, Appendix C): `TargetName` keys,
//! each followed by the `TargetAddress` keys of the portals it is reachable
//! through. Sans-IO: the caller has already joined and parsed the text.

use crate::text::TextPairs;

/// The well-known iSCSI port (RFC 7143 §13.8), used when a `TargetAddress`
/// names none.
pub const DEFAULT_PORT: u16 = 3260;

/// Errors in a SendTargets answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendTargetsError {
    /// RFC 7143 §12.3: a `TargetAddress` belongs to the `TargetName` before it.
    #[error("SendTargets answer has a TargetAddress before any TargetName")]
    AddressBeforeName,
    /// A `TargetName` key with an empty value names nothing one could log into.
    #[error("SendTargets answer has an empty TargetName")]
    EmptyName,
    /// The value is not `HOST[:PORT],TPGT`.
    #[error("SendTargets answer has an invalid TargetAddress {0:?}")]
    InvalidAddress(String),
}

/// One `TargetAddress` value: `HOST[:PORT],TPGT` (RFC 7143 §13.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetAddress {
    /// Host name or IP literal, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Target portal group tag.
    pub tpgt: u16,
}

/// Splits `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` (a bare IPv6 literal
/// with more than one colon is taken whole, with the default port), the
/// portal form of RFC 7143 §13.8 shared by `TargetAddress` and user input.
/// `None` when the host is empty or holds whitespace, `/`, `@` or brackets,
/// or the port is not 1-65535.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else if s.matches(':').count() > 1 {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '[' | ']')) {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host, port))
}

impl TargetAddress {
    /// Parses `HOST[:PORT],TPGT`, where HOST is a name, an IPv4 literal, a
    /// bracketed IPv6 literal, or (leniently) a bare IPv6 literal, which then
    /// takes the default port. RFC 7143 §13.8: the port defaults to 3260.
    pub fn parse(s: &str) -> Result<Self, SendTargetsError> {
        let bad = || SendTargetsError::InvalidAddress(s.to_owned());
        let (addr, tpgt) = s.rsplit_once(',').ok_or_else(bad)?;
        let tpgt = tpgt.parse::<u16>().map_err(|_| bad())?;
        let (host, port) = split_host_port(addr).ok_or_else(bad)?;
        Ok(Self { host: host.to_owned(), port, tpgt })
    }
}

/// A target named in a SendTargets answer with the addresses listed for it
/// (possibly none: RFC 7143 Appendix C then means the portal that was asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTargetsEntry {
    pub name: String,
    pub addresses: Vec<TargetAddress>,
}

/// Groups `TargetName` / `TargetAddress` pairs into targets, in answer order.
/// Other keys (e.g. `TargetAlias`) are ignored.
pub fn parse_send_targets(pairs: &TextPairs) -> Result<Vec<SendTargetsEntry>, SendTargetsError> {
    let mut out: Vec<SendTargetsEntry> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "TargetName" => {
                if v.is_empty() {
                    return Err(SendTargetsError::EmptyName);
                }
                out.push(SendTargetsEntry { name: v.clone(), addresses: Vec::new() });
            }
            "TargetAddress" => {
                let t = out.last_mut().ok_or(SendTargetsError::AddressBeforeName)?;
                t.addresses.push(TargetAddress::parse(v)?);
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn host_port_forms_shared_with_user_input() {
        assert_eq!(split_host_port("h"), Some(("h", 3260)));
        assert_eq!(split_host_port(" 10.0.0.1:3261 "), Some(("10.0.0.1", 3261)));
        assert_eq!(split_host_port("[::1]:3262"), Some(("::1", 3262)));
        assert_eq!(split_host_port("[::1]"), Some(("::1", 3260)));
        assert_eq!(split_host_port("fe80::1"), Some(("fe80::1", 3260)));
        for bad in ["", ":3260", "h:0", "h:65536", "h:x", "[::1", "[::1]x", "a b", "u@h", "h/x", "[[::1]]"] {
            assert_eq!(split_host_port(bad), None, "{bad:?}");
        }
    }

    fn addr(host: &str, port: u16, tpgt: u16) -> TargetAddress {
        TargetAddress { host: host.into(), port, tpgt }
    }

    #[test]
    fn groups_addresses_under_their_target() {
        let pairs = vec![
            p("TargetName", "iqn.a:1"),
            p("TargetAddress", "127.0.0.1:3260,1"),
            p("TargetAlias", "ignored"),
            p("TargetAddress", "[::1]:3260,1"),
            p("TargetName", "iqn.a:2"),
        ];
        let t = parse_send_targets(&pairs).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].addresses, vec![addr("127.0.0.1", 3260, 1), addr("::1", 3260, 1)]);
        assert_eq!(t[1], SendTargetsEntry { name: "iqn.a:2".into(), addresses: vec![] });
    }

    /// Answers captured from the lab (fuzz/tools/capture.py): tgt lists one
    /// address per target, the one the question came in on; istgt lists
    /// every portal of the portal group, IPv6 in brackets.
    #[test]
    fn parses_real_answers() {
        let tgt = b"TargetName=iqn.2024-01.lab.tgt:ram1\0TargetAddress=127.0.0.1:3260,1\0\
                    TargetName=iqn.2024-01.lab.tgt:chap\0TargetAddress=127.0.0.1:3260,1\0";
        let t = parse_send_targets(&crate::text::parse(tgt).unwrap()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].name, "iqn.2024-01.lab.tgt:chap");
        assert_eq!(t[1].addresses, vec![addr("127.0.0.1", 3260, 1)]);
        let istgt = b"TargetName=iqn.2024-01.lab.istgt:ram1\0TargetAddress=127.0.0.1:3261,1\0\
                      TargetAddress=[::1]:3261,1\0TargetAddress=127.0.0.2:3261,1\0";
        let t = parse_send_targets(&crate::text::parse(istgt).unwrap()).unwrap();
        assert_eq!(t[0].addresses, vec![addr("127.0.0.1", 3261, 1), addr("::1", 3261, 1), addr("127.0.0.2", 3261, 1)]);
    }

    #[test]
    fn address_forms() {
        assert_eq!(TargetAddress::parse("target.example,7").unwrap(), addr("target.example", 3260, 7));
        assert_eq!(TargetAddress::parse("[fe80::1]:860,65535").unwrap(), addr("fe80::1", 860, 65535));
        assert_eq!(TargetAddress::parse("[::1],2").unwrap(), addr("::1", 3260, 2));
        assert_eq!(TargetAddress::parse("fe80::1,1").unwrap(), addr("fe80::1", 3260, 1));
    }

    #[test]
    fn refuses_orphan_or_bad_addresses() {
        assert_eq!(
            parse_send_targets(&vec![p("TargetAddress", "1.2.3.4:3260,1")]),
            Err(SendTargetsError::AddressBeforeName)
        );
        assert_eq!(parse_send_targets(&vec![p("TargetName", "")]), Err(SendTargetsError::EmptyName));
        for bad in [
            "not an address",
            "127.0.0.1:3260",
            "127.0.0.1:3260,x",
            "127.0.0.1:3260,65536",
            "h:0,1",
            "h:65536,1",
            ",1",
            "[::1,1",
            "[::1]x,1",
            "[]:3260,1",
            "[[::1]],1",
            "a b,1",
        ] {
            assert_eq!(
                parse_send_targets(&vec![p("TargetName", "iqn.a"), p("TargetAddress", bad)]),
                Err(SendTargetsError::InvalidAddress(bad.into())),
                "{bad:?}"
            );
        }
    }
}
