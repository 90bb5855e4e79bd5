//! `rsiscsi portal add|remove|list`: the send-target portals of the service
//! (Windows `AddTargetPortal`, `RemoveTargetPortal`, `ListTargetPortals`).

use rsiscsi_api::types as api;
use rsiscsi_api::{Client, ClientError};

use super::format::{Table, flags, host_port, or_dash};
use super::{Error, Result, emit, emit_json, login_options, portal_arg};
use crate::cli::{Common, PortalCmd};

pub async fn run(client: &Client, common: &Common, json: bool, cmd: &PortalCmd) -> Result {
    match cmd {
        PortalCmd::Add { portal, keep, path } => {
            let p = portal_arg(portal)?;
            let req = api::SendTargetPortal {
                address: p.address,
                port: p.port,
                symbolic_name: String::new(),
                initiator_port: path.port().map_err(Error::Usage)?,
                security_flags: path.security_flags.unwrap_or(0),
                login_options: login_options(common)?.unwrap_or_default(),
            };
            let added = match client.add_portal(&req, *keep).await {
                Ok(a) => a,
                // SendTargets failed and nothing was stored (Windows' AddTargetPortal).
                Err(ClientError::Api { body, .. }) if body.message.ends_with(api::PORTAL_NOT_ADDED) => {
                    return Err(Error::PortalNotAdded { body });
                }
                Err(e) => return Err(e.into()),
            };
            let name = host_port(&added.portal.address, added.portal.port);
            if json {
                emit_json(&added)?;
            } else {
                let mut text = format!("portal {name} added\n");
                if added.refresh_error.is_none() {
                    let targets = client.targets().await?;
                    let found = targets
                        .targets
                        .iter()
                        .filter(|t| t.discovered_from.iter().any(|d| d.same_place(&added.portal.portal())))
                        .count();
                    text.push_str(&format!("{found} target(s) discovered through it (`rsiscsi target list`)\n"));
                }
                emit(&text)?;
            }
            // Kept with --keep although SendTargets failed: still a failure for scripts.
            match added.refresh_error {
                Some(body) => Err(Error::PortalKept { portal: name, body }),
                None => Ok(()),
            }
        }
        PortalCmd::Remove { portal } => {
            let p = portal_arg(portal)?;
            client.remove_portal(&p.address, p.port).await?;
            if json {
                return emit_json(&serde_json::json!({}));
            }
            emit(&format!("portal {} removed\n", host_port(&p.address, p.port)))
        }
        PortalCmd::List => {
            let list = client.portals().await?;
            if json {
                return emit_json(&list);
            }
            emit(&portal_table(&list.portals))
        }
    }
}

fn portal_table(portals: &[api::SendTargetPortal]) -> String {
    if portals.is_empty() {
        return "no portals (add one with `rsiscsi portal add HOST[:PORT]`)\n".into();
    }
    let mut t = Table::new(&["PORTAL", "INITIATOR-PORT", "SECURITY-FLAGS", "AUTH", "CHAP-USER"]);
    for p in portals {
        let o = &p.login_options;
        let auth = match o.auth_type {
            None | Some(api::AuthType::None) => "none",
            Some(api::AuthType::Chap) => "chap",
            Some(api::AuthType::MutualChap) => "mutual-chap",
        };
        t.row(vec![
            host_port(&p.address, p.port),
            p.initiator_port.map_or_else(|| "any".into(), |n| n.to_string()),
            flags(p.security_flags),
            auth.into(),
            or_dash(o.username.as_deref()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_table_shows_auth_without_secret() {
        let p = api::SendTargetPortal {
            address: "::1".into(),
            port: 3261,
            symbolic_name: String::new(),
            initiator_port: None,
            security_flags: 0x41,
            login_options: api::LoginOptions {
                auth_type: Some(api::AuthType::Chap),
                username: Some("labuser".into()),
                password_set: true,
                ..Default::default()
            },
        };
        assert_eq!(
            portal_table(&[p]),
            "PORTAL      INITIATOR-PORT  SECURITY-FLAGS  AUTH  CHAP-USER\n\
             [::1]:3261  any             0x41            chap  labuser\n"
        );
    }
}
