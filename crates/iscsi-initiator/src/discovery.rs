//! SendTargets discovery (RFC 7143 §12.3, Appendix C).

use iscsi_proto::text::TextPairs;

use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::portal::{PortalAddr, TargetPortal};
use crate::session::Session;

/// A target and the portals it can be reached through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    pub name: String,
    pub portals: Vec<TargetPortal>,
}

/// Logs in a discovery session at `portal`, asks `SendTargets=All`, logs out.
/// A target listed without TargetAddress is reachable through `portal`
/// itself (RFC 7143 Appendix C).
pub async fn send_targets(portal: &PortalAddr, cfg: SessionConfig) -> Result<Vec<DiscoveredTarget>> {
    let session = Session::login(portal, None, cfg).await?;
    let answer = session.text_request(&vec![("SendTargets".to_string(), "All".to_string())]).await;
    let _ = session.logout().await;
    parse_send_targets(&answer?, portal)
}

/// Groups `TargetName` / `TargetAddress` pairs into targets; the parsing
/// itself is sans-IO in [`iscsi_proto::discovery`]. A target listed without
/// TargetAddress is reachable through `portal` (RFC 7143 Appendix C), with
/// the default portal group tag 1.
pub fn parse_send_targets(pairs: &TextPairs, portal: &PortalAddr) -> Result<Vec<DiscoveredTarget>> {
    let entries = iscsi_proto::discovery::parse_send_targets(pairs).map_err(|e| Error::protocol(e.to_string()))?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let mut portals: Vec<TargetPortal> = e
                .addresses
                .into_iter()
                .map(|a| TargetPortal { addr: PortalAddr { host: a.host, port: a.port }, tpgt: a.tpgt })
                .collect();
            if portals.is_empty() {
                portals.push(TargetPortal { addr: portal.clone(), tpgt: 1 });
            }
            DiscoveredTarget { name: e.name, portals }
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn groups_addresses_under_their_target() {
        let portal = PortalAddr::parse("127.0.0.1:3260").unwrap();
        let pairs = vec![
            p("TargetName", "iqn.a:1"),
            p("TargetAddress", "127.0.0.1:3260,1"),
            p("TargetAddress", "[::1]:3260,1"),
            p("TargetName", "iqn.a:2"),
        ];
        let t = parse_send_targets(&pairs, &portal).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].portals.len(), 2);
        assert_eq!(t[0].portals[1].to_string(), "[::1]:3260,1");
        assert_eq!(t[1].portals[0].to_string(), "127.0.0.1:3260,1");
    }

    #[test]
    fn refuses_orphan_or_bad_addresses() {
        let portal = PortalAddr::parse("127.0.0.1").unwrap();
        assert!(parse_send_targets(&vec![p("TargetAddress", "1.2.3.4:3260,1")], &portal).is_err());
        assert!(
            parse_send_targets(&vec![p("TargetName", "iqn.a"), p("TargetAddress", "not an address")], &portal).is_err()
        );
    }
}
