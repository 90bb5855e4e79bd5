//! `rsiscsi initiator show|set|chap-secret` (Windows `NodeName`,
//! `CHAPSecret`): the identity the service logs in with.

use rsiscsi_api::types as api;
use rsiscsi_api::{Client, ClientError};

use super::{Error, Result, emit, emit_json};
use crate::cli::InitiatorCmd;
use crate::config::{Identity, NameSource};
use crate::creds;
use rsiscsi_api::identity::QueryError;

pub async fn run(client: &Client, json: bool, cmd: &InitiatorCmd) -> Result {
    match cmd {
        InitiatorCmd::Show => match client.initiator().await {
            Ok(i) => {
                if json {
                    emit_json(&i)
                } else {
                    emit(&show(&i))
                }
            }
            // Without the service: the name the one-shot commands use, and where it comes from.
            Err(ClientError::NoService { .. } | ClientError::PermissionDenied { .. }) => {
                let id = tokio::task::spawn_blocking({
                    let socket = client.socket().to_path_buf();
                    move || crate::config::resolve(&socket)
                })
                .await
                .map_err(|e| Error::Local(format!("cannot look up the initiator name: {e}")))?;
                if json { emit_json(&local_json(&id)) } else { emit(&show_local(&id)) }
            }
            Err(e) => Err(e.into()),
        },
        InitiatorCmd::Set { name, alias } => {
            if name.is_none() && alias.is_none() {
                return Err(Error::Usage("nothing to set: give --name IQN and/or --alias TEXT".into()));
            }
            if let Some(n) = name {
                crate::config::validate_name(n).map_err(|e| Error::Usage(e.to_string()))?;
            }
            let update = api::InitiatorUpdate { node_name: name.clone(), alias: alias.clone() };
            let i = client.set_initiator(&update).await?;
            if json { emit_json(&i) } else { emit(&show(&i)) }
        }
        InitiatorCmd::ChapSecret { secret_file } => {
            let secret =
                creds::secret_from(secret_file.as_deref(), creds::INITIATOR_SECRET_ENV).map_err(Error::Local)?;
            let text = std::str::from_utf8(secret.expose())
                .map_err(|_| Error::Local("the CHAP secret must be UTF-8 text to be sent to the service".into()))?;
            client.set_chap_secret(&api::SecretString::new(text)).await?;
            if json {
                emit_json(&serde_json::json!({ "chap_secret_set": true }))
            } else {
                emit("initiator CHAP secret set\n")
            }
        }
    }
}

/// The source of a name as `initiator show` words it.
fn source_text(source: &NameSource) -> (&'static str, String) {
    match source {
        NameSource::Service => ("service", "rsiscsid".into()),
        NameSource::ServiceState(p) => ("service-state", format!("{} (rsiscsid's state)", p.display())),
        NameSource::ConfigDir(p) => ("config-dir", format!("{} ($RSISCSI_CONFIG_DIR)", p.display())),
        NameSource::System(p, false) => ("system", format!("{} (system-wide)", p.display())),
        NameSource::System(p, true) => ("system", format!("{} (system-wide, created now)", p.display())),
        NameSource::PerUser { path, why } => ("per-user", format!("{} (per-user, because {why})", path.display())),
    }
}

fn service_text(id: &Identity) -> String {
    match &id.service_error {
        None => "running".into(),
        Some(QueryError::NoService(p)) => format!("not running (no rsiscsid at {})", p.display()),
        Some(QueryError::PermissionDenied(p)) => format!("not reachable (permission denied on {})", p.display()),
        Some(e @ QueryError::BadAnswer(..)) => format!("not usable ({e})"),
    }
}

fn show_local(id: &Identity) -> String {
    format!("node name    {}\nsource       {}\nservice      {}\n", id.name, source_text(&id.source).1, service_text(id))
}

fn local_json(id: &Identity) -> serde_json::Value {
    let (kind, text) = source_text(&id.source);
    serde_json::json!({
        "node_name": id.name,
        "source": kind,
        "source_text": text,
        "service_running": false,
        "service": service_text(id),
    })
}

fn show(i: &api::Initiator) -> String {
    let alias = if i.alias.is_empty() { "-" } else { i.alias.as_str() };
    let secret = if i.chap_secret_set { "set" } else { "not set" };
    format!("node name    {}\nalias        {alias}\nCHAP secret  {secret}\n", i.node_name)
}
