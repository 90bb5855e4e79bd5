//! `/v1/persistent-logins` (MSIscsiInitiator_PersistentLoginClass): the
//! stored logins, with the state the supervisor reports for each.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use iscsi_initiator::model::{IsdscCode, Status};
use rsiscsi_api::types as api;
use serde::Deserialize;
use tracing::info;

use super::query;
use crate::App;
use crate::error::{ApiErr, ApiResult};
use crate::store::login_key;

pub async fn list(State(app): State<Arc<App>>) -> Json<api::PersistentLoginList> {
    // Only whether a key is stored is shown, never the key.
    let keys = app.store.secrets().ipsec_keys;
    let persistent_logins = app
        .store
        .state()
        .persistent_logins
        .into_iter()
        .map(|l| {
            let s = app.logins.status(&l.key());
            let d = app.recovery_defaults;
            api::PersistentLogin {
                target_name: l.target_name.clone(),
                portal: l.portal.clone(),
                initiator_port: l.initiator_port,
                security_flags: l.security_flags,
                tunnel_outer_address: l.tunnel_outer_address.clone(),
                key_set: keys.contains_key(&l.key()),
                login_options: l.login_options.redacted(),
                connections: l.connections,
                load_balance_policy: l.load_balance_policy.clone(),
                max_request_hold_time_s: l.max_request_hold_time_s.unwrap_or(d.max_request_hold_time_s),
                link_down_time_s: l.link_down_time_s.unwrap_or(d.link_down_time_s),
                state: s.as_ref().map(|s| s.state).unwrap_or(api::PersistentLoginState::Retrying),
                last_error: s.as_ref().and_then(|s| s.last_error.clone()),
                session_id: s.and_then(|s| s.session_id),
                exports: l.exports.clone(),
            }
        })
        .collect();
    Json(api::PersistentLoginList { persistent_logins })
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    pub target_name: String,
    pub address: String,
    pub port: Option<u16>,
}

/// Forgets the login; a live session stays logged in (as on Windows).
pub async fn remove(
    State(app): State<Arc<App>>,
    q: Result<Query<LoginQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    let key = login_key(&q.target_name, &q.address, q.port.unwrap_or(api::DEFAULT_PORT));
    app.store.update(|st, sec| {
        let before = st.persistent_logins.len();
        st.persistent_logins.retain(|l| l.key() != key);
        if st.persistent_logins.len() == before {
            return Err(ApiErr::from(Status::new(
                IsdscCode::NotFound,
                format!("no persistent login to {} at {}:{}", q.target_name, q.address, q.port.unwrap_or(3260)),
            )));
        }
        sec.passwords.remove(&key);
        sec.ipsec_keys.remove(&key);
        Ok(())
    })?;
    app.logins.forget(&key);
    info!(target = %q.target_name, "persistent login removed");
    Ok(StatusCode::NO_CONTENT)
}
