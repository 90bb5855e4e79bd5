//! `rsiscsi initiator show|set|chap-secret` (Windows `NodeName`,
//! `CHAPSecret`): the identity the service logs in with.

use rsiscsi_api::Client;
use rsiscsi_api::types as api;

use super::{Error, Result, emit, emit_json};
use crate::cli::InitiatorCmd;
use crate::creds;

pub async fn run(client: &Client, json: bool, cmd: &InitiatorCmd) -> Result {
    match cmd {
        InitiatorCmd::Show => {
            let i = client.initiator().await?;
            if json { emit_json(&i) } else { emit(&show(&i)) }
        }
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

fn show(i: &api::Initiator) -> String {
    let alias = if i.alias.is_empty() { "-" } else { i.alias.as_str() };
    let secret = if i.chap_secret_set { "set" } else { "not set" };
    format!("node name    {}\nalias        {alias}\nCHAP secret  {secret}\n", i.node_name)
}
