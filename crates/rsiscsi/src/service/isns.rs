//! `rsiscsi isns add|remove|list`: the iSNS servers of the service (Windows
//! `AddiSNSServer`, `RemoveiSNSServer`, `ListiSNSServers`). The targets a
//! server lists join `rsiscsi target list`, kept current by the server's
//! State Change Notifications (RFC 4171 §6.4.4).

use rsiscsi_api::types as api;
use rsiscsi_api::{Client, ClientError};

use super::format::{Table, host_port, or_dash};
use super::{Error, Result, emit, emit_json};
use crate::cli::IsnsCmd;

pub async fn run(client: &Client, json: bool, cmd: &IsnsCmd) -> Result {
    match cmd {
        IsnsCmd::Add { server, keep } => {
            let (address, port) = isns_arg(server)?;
            let added = match client.add_isns_server(&address, port, *keep).await {
                Ok(a) => a,
                // Not reachable and nothing was stored (as `portal add`).
                Err(ClientError::Api { body, .. }) if body.message.ends_with(api::ISNS_SERVER_NOT_ADDED) => {
                    return Err(Error::IsnsServerNotAdded { body });
                }
                Err(e) => return Err(e.into()),
            };
            let name = host_port(&added.isns_server.address, added.isns_server.port);
            if json {
                emit_json(&added)?;
            } else {
                let mut text = format!("iSNS server {name} added\n");
                if added.error.is_none() {
                    text.push_str(&format!(
                        "{} target(s) listed for this initiator (`rsiscsi target list`); changes follow by notification\n",
                        added.isns_server.targets
                    ));
                }
                emit(&text)?;
            }
            // Kept with --keep although it cannot be reached: still a failure for scripts.
            match added.error {
                Some(body) => Err(Error::IsnsServerKept { server: name, body }),
                None => Ok(()),
            }
        }
        IsnsCmd::Remove { server } => {
            let (address, port) = isns_arg(server)?;
            client.remove_isns_server(&address, port).await?;
            if json {
                return emit_json(&serde_json::json!({}));
            }
            emit(&format!("iSNS server {} removed\n", host_port(&address, port)))
        }
        IsnsCmd::List => {
            let list = client.isns_servers().await?;
            if json {
                return emit_json(&list);
            }
            emit(&isns_table(&list.isns_servers))
        }
    }
}

/// `HOST[:PORT]` or `[IPv6][:PORT]` of an iSNS server, port 3205 (RFC 4171
/// §6.1) when left out.
pub(crate) fn isns_arg(s: &str) -> Result<(String, u16)> {
    let addr = crate::url::parse_portal(s).map_err(|e| Error::Usage(e.to_string()))?;
    let t = s.trim();
    let explicit = match t.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => t.contains(':'),
    };
    Ok((addr.host, if explicit { addr.port } else { api::ISNS_DEFAULT_PORT }))
}

fn isns_table(servers: &[api::IsnsServer]) -> String {
    if servers.is_empty() {
        return "no iSNS servers (add one with `rsiscsi isns add HOST[:PORT]`)\n".into();
    }
    let mut t = Table::new(&["ISNS-SERVER", "STATE", "TARGETS", "SCN-PORTAL", "LAST-ERROR"]);
    for s in servers {
        let state = match s.state {
            api::IsnsServerState::Connecting => "connecting",
            api::IsnsServerState::Registered => "registered",
            api::IsnsServerState::Unreachable => "unreachable",
        };
        t.row(vec![
            host_port(&s.address, s.port),
            state.into(),
            s.targets.to_string(),
            or_dash(s.scn_portal.as_deref()),
            or_dash(s.last_error.as_deref()),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_default_to_port_3205() {
        assert_eq!(isns_arg("127.0.0.1").unwrap(), ("127.0.0.1".into(), 3205));
        assert_eq!(isns_arg("isns.lab:4000").unwrap(), ("isns.lab".into(), 4000));
        assert_eq!(isns_arg("[::1]").unwrap(), ("::1".into(), 3205));
        assert_eq!(isns_arg("[::1]:3206").unwrap(), ("::1".into(), 3206));
        assert_eq!(isns_arg("h:0").unwrap_err().exit_code(), super::super::EXIT_USAGE);
    }

    #[test]
    fn table_shows_state_and_last_error() {
        let s = |state, err: Option<&str>| api::IsnsServer {
            address: "127.0.0.1".into(),
            port: 3205,
            state,
            last_error: err.map(str::to_string),
            targets: 3,
            registration_period_s: None,
            scn_portal: Some("127.0.0.1:40000".into()),
        };
        let mut down = s(api::IsnsServerState::Unreachable, Some("refused"));
        down.port = 3999;
        down.targets = 0;
        down.scn_portal = None;
        assert_eq!(
            isns_table(&[s(api::IsnsServerState::Registered, None), down]),
            "ISNS-SERVER     STATE        TARGETS  SCN-PORTAL       LAST-ERROR\n\
             127.0.0.1:3205  registered   3        127.0.0.1:40000  -\n\
             127.0.0.1:3999  unreachable  0        -                refused\n"
        );
    }
}
