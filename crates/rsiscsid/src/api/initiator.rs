//! `/v1/initiator`: the node name, alias and the initiator's CHAP secret
//! (MSIscsiInitiator_MethodClass SetIscsiInitiatorNodeName and
//! SetIscsiInitiatorCHAPSharedSecret).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use iscsi_initiator::model::{IsdscCode, Status};
use rsiscsi_api::types as api;
use tracing::info;

use super::body;
use crate::App;
use crate::error::{ApiErr, ApiResult};
use crate::store::StoreError;

/// RFC 7143 §4.2.7.1: at most 223 bytes; the iqn./eui./naa. formats.
pub fn check_node_name(name: &str) -> Result<(), Status> {
    let ok_prefix = ["iqn.", "eui.", "naa."].iter().any(|p| name.to_ascii_lowercase().starts_with(p));
    if !ok_prefix || name.len() > 223 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Status::new(
            IsdscCode::InvalidIscsiName,
            format!("{name:?} is not an iSCSI name (iqn., eui. or naa. form, at most 223 bytes, no spaces)"),
        ));
    }
    Ok(())
}

fn view(app: &App) -> api::Initiator {
    let st = app.store.state();
    api::Initiator {
        node_name: st.initiator.node_name,
        alias: st.initiator.alias,
        chap_secret_set: app.store.secrets().initiator_chap_secret.is_some(),
    }
}

pub async fn get_initiator(State(app): State<Arc<App>>) -> Json<api::Initiator> {
    Json(view(&app))
}

pub async fn put_initiator(
    State(app): State<Arc<App>>,
    b: super::JsonBody<api::InitiatorUpdate>,
) -> ApiResult<Json<api::Initiator>> {
    let u = body(b)?;
    if let Some(n) = &u.node_name {
        check_node_name(n)?;
    }
    if u.alias.as_ref().is_some_and(|a| a.len() > 255) {
        return Err(ApiErr::bad_request("the alias is longer than 255 bytes"));
    }
    app.store.update(|st, _| {
        if let Some(n) = &u.node_name {
            st.initiator.node_name = n.clone();
        }
        if let Some(a) = &u.alias {
            st.initiator.alias = a.clone();
        }
        Ok::<(), ApiErr>(())
    })?;
    info!(node_name = ?u.node_name, alias = ?u.alias, "initiator identity changed");
    if u.node_name.is_some() {
        app.mirror_node_name();
        // The iSNS servers know us by name: register again under the new one.
        let a = app.clone();
        tokio::spawn(async move { a.isns.restart_all(&a).await });
    }
    Ok(Json(view(&app)))
}

/// Windows checks 12 to 16 bytes (96 to 128 bits) without IPsec.
pub async fn put_chap_secret(
    State(app): State<Arc<App>>,
    b: super::JsonBody<api::ChapSecretRequest>,
) -> ApiResult<StatusCode> {
    let r = body(b)?;
    let len = r.secret.expose().len();
    if !(12..=16).contains(&len) {
        return Err(Status::new(
            IsdscCode::InvalidInitiatorChapSecret,
            format!("the initiator CHAP secret is {len} bytes long; it must be 12 to 16 bytes"),
        )
        .into());
    }
    app.store.update(|_, sec| {
        sec.initiator_chap_secret = Some(r.secret.clone());
        Ok::<(), ApiErr>(())
    })?;
    info!("initiator CHAP secret set");
    Ok(StatusCode::NO_CONTENT)
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        Status::new(IsdscCode::CouldNotSavePersistentLoginData, format!("cannot save the service state: {e}")).into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!(check_node_name("iqn.2024-01.lab:host").is_ok());
        assert!(check_node_name("eui.02004567A425678D").is_ok());
        assert_eq!(check_node_name("host").unwrap_err().code, IsdscCode::InvalidIscsiName);
        assert!(check_node_name("iqn.a b").is_err());
    }
}
