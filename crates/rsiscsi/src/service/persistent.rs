//! `rsiscsi persistent list|remove` (Windows `ListPersistentTargets`,
//! `RemovePersistentTarget`).

use rsiscsi_api::Client;
use rsiscsi_api::types as api;

use super::format::{Table, host_port, or_dash};
use super::{Error, Result, emit, emit_json, portal_arg};
use crate::cli::PersistentCmd;

pub async fn run(client: &Client, json: bool, cmd: &PersistentCmd) -> Result {
    match cmd {
        PersistentCmd::List => {
            let l = client.persistent_logins().await?;
            if json {
                return emit_json(&l);
            }
            emit(&persistent_table(&l.persistent_logins))
        }
        PersistentCmd::Remove { target, portal } => {
            // Without --portal: every stored login of that target.
            let portals = match portal {
                Some(p) => vec![portal_arg(p)?],
                None => client
                    .persistent_logins()
                    .await?
                    .persistent_logins
                    .into_iter()
                    .filter(|l| &l.target_name == target)
                    .map(|l| l.portal)
                    .collect(),
            };
            if portals.is_empty() {
                return Err(Error::NoPersistentLogin { target: target.clone() });
            }
            let mut text = String::new();
            for p in &portals {
                client.remove_persistent_login(target, &p.address, p.port).await?;
                text.push_str(&format!("persistent login of {target} at {} removed\n", host_port(&p.address, p.port)));
            }
            if json { emit_json(&serde_json::json!({})) } else { emit(&text) }
        }
    }
}

fn persistent_table(logins: &[api::PersistentLogin]) -> String {
    if logins.is_empty() {
        return "no persistent logins (`rsiscsi target login IQN --persistent` adds one)\n".into();
    }
    let mut t = Table::new(&["TARGET", "PORTAL", "CONNECTIONS", "POLICY", "STATE", "SESSION", "LAST-ERROR"]);
    for l in logins {
        let state = match l.state {
            api::PersistentLoginState::LoggedIn => "logged-in",
            api::PersistentLoginState::Retrying => "retrying",
            api::PersistentLoginState::Failed => "failed",
            api::PersistentLoginState::LoggedOut => "logged-out",
        };
        t.row(vec![
            l.target_name.clone(),
            host_port(&l.portal.address, l.portal.port),
            l.connections.to_string(),
            l.load_balance_policy.clone(),
            state.into(),
            or_dash(l.session_id.as_deref()),
            or_dash(l.last_error.as_deref()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_table_rows() {
        let l = api::PersistentLogin {
            target_name: "iqn.2024-01.lab.tgt:svc".into(),
            portal: api::Portal::new("127.0.0.1", 3260),
            initiator_port: None,
            security_flags: 0,
            tunnel_outer_address: None,
            key_set: false,
            login_options: api::LoginOptions::default(),
            connections: 2,
            load_balance_policy: "round-robin".into(),
            max_request_hold_time_s: 60,
            link_down_time_s: 15,
            state: api::PersistentLoginState::Retrying,
            last_error: Some("connection refused".into()),
            session_id: None,
            exports: Vec::new(),
        };
        let text = persistent_table(&[l]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("iqn.2024-01.lab.tgt:svc  127.0.0.1:3260  2            round-robin  retrying  -"));
        assert!(lines[1].ends_with("connection refused"));
    }
}
