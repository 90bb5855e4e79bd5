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

/// Groups `TargetName` / `TargetAddress` pairs into targets.
pub fn parse_send_targets(pairs: &TextPairs, portal: &PortalAddr) -> Result<Vec<DiscoveredTarget>> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "TargetName" => out.push(DiscoveredTarget { name: v.clone(), portals: Vec::new() }),
            "TargetAddress" => {
                let t = out
                    .last_mut()
                    .ok_or_else(|| Error::protocol("SendTargets answer has a TargetAddress before any TargetName"))?;
                let p = TargetPortal::parse(v)
                    .map_err(|_| Error::protocol(format!("SendTargets answer has an invalid TargetAddress {v:?}")))?;
                t.portals.push(p);
            }
            _ => {}
        }
    }
    for t in &mut out {
        if t.portals.is_empty() {
            t.portals.push(TargetPortal { addr: portal.clone(), tpgt: 1 });
        }
    }
    Ok(out)
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
