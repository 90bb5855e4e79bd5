//! `rsiscsi target refresh|list|login` (Windows `RefreshTargetPortal`,
//! `ListTargets`, `LoginTarget` / `PersistentLoginTarget`).

use rsiscsi_api::types as api;
use rsiscsi_api::{Client, ClientError};

use super::format::{Table, host_port};
use super::{Error, Result, emit, emit_json, ipsec_request, login_options, portal_arg};
use crate::cli::{Common, TargetCmd};

pub async fn run(client: &Client, common: &Common, json: bool, cmd: &TargetCmd) -> Result {
    match cmd {
        TargetCmd::Refresh => {
            let r = client.refresh_targets().await?;
            if json {
                emit_json(&r)?;
            } else {
                emit(&target_table(&r.targets))?;
            }
            // Like `ls`: the targets that were found are shown, then a
            // portal that failed makes the exit status non-zero.
            match r.errors.as_slice() {
                [] => Ok(()),
                errs => {
                    let text: Vec<String> = errs
                        .iter()
                        .map(|e| {
                            format!(
                                "{}: {} ({}, {})",
                                host_port(&e.portal.address, e.portal.port),
                                e.error.message,
                                e.error.name,
                                e.error.code_hex
                            )
                        })
                        .collect();
                    Err(Error::RefreshFailed(text.join("; ")))
                }
            }
        }
        TargetCmd::List => {
            let l = client.targets().await?;
            if json {
                return emit_json(&l);
            }
            emit(&target_table(&l.targets))
        }
        TargetCmd::Login {
            target,
            portal,
            persistent,
            connections,
            policy,
            hold_time,
            link_down_time,
            path,
            ipsec,
        } => {
            let mut req = api::LoginRequest::new(target.clone());
            req.portal = portal.as_deref().map(portal_arg).transpose()?;
            req.initiator_port = path.port().map_err(Error::Usage)?;
            (req.security_flags, req.tunnel_outer_address, req.key) = ipsec_request(path.security_flags, ipsec)?;
            req.login_options = login_options(common)?;
            req.persistent = *persistent;
            req.connections = *connections;
            req.load_balance_policy = policy.map(|p| p.as_str().to_string());
            req.max_request_hold_time_s = *hold_time;
            req.link_down_time_s = *link_down_time;
            let r = match client.login(&req).await {
                Ok(r) => r,
                Err(ClientError::Api { body, .. }) if *persistent => {
                    let note = stored_note(client, target, req.portal.as_ref()).await;
                    return Err(Error::PersistentLoginFailed { body, note });
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                return emit_json(&r);
            }
            emit(&login_text(&r))
        }
    }
}

/// After a failed `target login --persistent`: whether a login of `target`
/// (at `portal`, when given) is stored, and the command that removes it.
async fn stored_note(client: &Client, target: &str, portal: Option<&api::Portal>) -> String {
    let stored: Vec<api::Portal> = match client.persistent_logins().await {
        Ok(l) => l
            .persistent_logins
            .into_iter()
            .filter(|l| l.target_name == target && portal.is_none_or(|p| p.same_place(&l.portal)))
            .map(|l| l.portal)
            .collect(),
        Err(e) => return format!("whether the persistent login was stored is unknown ({e})"),
    };
    match stored.as_slice() {
        [] => "the persistent login was not stored".into(),
        ps => {
            let cmds: Vec<String> = ps
                .iter()
                .map(|p| format!("`rsiscsi persistent remove {target} --portal {}`", host_port(&p.address, p.port)))
                .collect();
            format!("remove it with {}", cmds.join(" or "))
        }
    }
}

/// One `session ID` line, then one `connection ID` line per connection:
/// easy to read and to pick apart with `awk '$1=="session"{print $2}'`.
fn login_text(r: &api::LoginResult) -> String {
    let mut t = format!("session {}\n", r.session_id);
    for c in &r.connection_ids {
        t.push_str(&format!("connection {c}\n"));
    }
    t
}

/// A discovery source: a SendTargets portal as `HOST:PORT`, an iSNS server
/// as `isns:HOST:PORT`.
fn source(p: &api::Portal) -> String {
    let place = host_port(&p.address, p.port);
    if p.is_isns_source() { format!("isns:{place}") } else { place }
}

fn target_table(targets: &[api::Target]) -> String {
    if targets.is_empty() {
        return "no targets (add a portal with `rsiscsi portal add HOST[:PORT]`, then `rsiscsi target refresh`, \
                or an iSNS server with `rsiscsi isns add HOST[:PORT]`)\n"
            .into();
    }
    let mut t = Table::new(&["TARGET", "PORTALS", "DISCOVERED-FROM"]);
    for target in targets {
        let portals: Vec<String> =
            target.portals.iter().map(|p| format!("{},{}", host_port(&p.address, p.port), p.tpgt)).collect();
        let from: Vec<String> = target.discovered_from.iter().map(source).collect();
        t.row(vec![target.name.clone(), portals.join(" "), from.join(" ")]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_prints_one_id_per_line() {
        let r = api::LoginResult {
            session_id: "ffff8000-4000013700000001".into(),
            connection_ids: vec!["ffff8000-1".into(), "ffff8000-2".into()],
        };
        assert_eq!(login_text(&r), "session ffff8000-4000013700000001\nconnection ffff8000-1\nconnection ffff8000-2\n");
    }

    #[test]
    fn target_table_lists_portals_with_tpgt() {
        let t = api::Target {
            name: "iqn.2024-01.lab.tgt:svc".into(),
            portals: vec![
                api::TargetPortal { address: "127.0.0.1".into(), port: 3260, tpgt: 1 },
                api::TargetPortal { address: "::1".into(), port: 3260, tpgt: 1 },
            ],
            discovered_from: vec![api::Portal::new("127.0.0.1", 3260), api::Portal::isns_source("::1", 3205)],
        };
        assert_eq!(
            target_table(&[t]),
            "TARGET                   PORTALS                        DISCOVERED-FROM\n\
             iqn.2024-01.lab.tgt:svc  127.0.0.1:3260,1 [::1]:3260,1  127.0.0.1:3260 isns:[::1]:3205\n"
        );
    }
}
