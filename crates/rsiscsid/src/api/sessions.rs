//! `/v1/sessions`: live sessions (MSIscsiInitiator_SessionClass) and their
//! methods AddConnection, RemoveConnection, Logout, the MC/S load-balance
//! policy and a pass-through SCSI command.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use iscsi_initiator::model::{self, ISCSI_ANY_INITIATOR_PORT, SecurityFlags};
use iscsi_initiator::session::ScsiData;
use rsiscsi_api::types as api;
use tracing::{info, warn};

use super::{body, connection_id, path, policy, session_of};
use crate::App;
use crate::error::{ApiErr, ApiResult};
use crate::logins::{ipsec_config, to_model};
use crate::registry::Live;

/// Whether the session's persistent login is still stored.
fn still_persistent(app: &App, live: &Live) -> bool {
    live.persistent_key.as_ref().is_some_and(|k| app.store.state().persistent_logins.iter().any(|l| &l.key() == k))
}

pub async fn list(State(app): State<Arc<App>>) -> Json<api::SessionList> {
    let sessions = app.registry.all().iter().map(|l| l.view(still_persistent(&app, l))).collect();
    Json(api::SessionList { sessions })
}

pub async fn get_one(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<api::Session>> {
    let id = path(p)?;
    let live = session_of(&app, &id)?;
    Ok(Json(live.view(still_persistent(&app, &live))))
}

/// Keeps a persistent login's connection count in step with its session,
/// so that a restart brings the session back as it was.
fn persist_connection_count(app: &App, live: &Live) {
    let Some(key) = &live.persistent_key else { return };
    let n = u32::try_from(live.session.connections().len()).unwrap_or(u32::MAX);
    let r = app.store.update(|st, _| {
        if let Some(l) = st.persistent_logins.iter_mut().find(|l| &l.key() == key) {
            l.connections = n;
        }
        Ok::<(), crate::store::StoreError>(())
    });
    if let Err(e) = r {
        warn!("cannot record the connection count of {key}: {e}");
    }
}

pub async fn add_connection(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    b: super::JsonBody<api::AddConnectionRequest>,
) -> ApiResult<(StatusCode, Json<api::ConnectionAdded>)> {
    let id = path(p)?;
    let live = session_of(&app, &id)?;
    let r = body(b)?;
    if r.portal.address.trim().is_empty() {
        return Err(ApiErr::bad_request("the portal address is empty"));
    }
    let opts = r.login_options.clone().unwrap_or_default();
    let psk = r.key.as_ref().map(|k| iscsi_proto::chap::Secret::new(k.expose().as_bytes()));
    // Checked here for the CHAP length rule; the session applies the same
    // flags and key with the service's provider (AddConnection).
    let ipsec = ipsec_config(
        app.ipsec.as_ref(),
        r.security_flags.unwrap_or(0),
        opts.login_flags,
        psk.as_ref(),
        r.tunnel_outer_address.as_deref(),
    )?;
    let mo = to_model(&opts, ipsec.protects())?;
    let port = if r.portal.port == 0 { api::DEFAULT_PORT } else { r.portal.port };
    let portal = model::Portal::new(r.portal.address.clone(), port);
    let key = psk.as_ref().map(|k| k.expose()).unwrap_or_default();
    let cid = live
        .session
        .add_connection_with(
            r.initiator_port.unwrap_or(ISCSI_ANY_INITIATOR_PORT),
            &portal,
            SecurityFlags(r.security_flags.unwrap_or(0)),
            &mo,
            key,
            r.tunnel_outer_address.as_deref(),
        )
        .await?;
    info!(session = %live.session.id(), connection = %cid, portal = %r.portal, "connection added");
    persist_connection_count(&app, &live);
    Ok((StatusCode::CREATED, Json(api::ConnectionAdded { connection_id: cid.to_string() })))
}

/// Keeps a persistent login's path settings in step with its session's
/// connections (leading first), so that a restart brings them back.
fn persist_paths(app: &App, live: &Live) -> ApiResult<()> {
    let Some(key) = &live.persistent_key else { return Ok(()) };
    let paths: Vec<crate::store::PathSetting> = live
        .session
        .connections()
        .iter()
        .map(|c| crate::store::PathSetting { primary: c.primary, weight: c.weight })
        .collect();
    app.store.update(|st, _| {
        if let Some(l) = st.persistent_logins.iter_mut().find(|l| &l.key() == key) {
            l.paths = paths;
        }
        Ok::<(), ApiErr>(())
    })
}

pub async fn remove_connection(
    State(app): State<Arc<App>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (sid, cid) = path(p)?;
    let live = session_of(&app, &sid)?;
    let cid = connection_id(&cid)?;
    live.session.remove_connection(cid).await?;
    info!(session = %live.session.id(), connection = %cid, "connection removed");
    persist_connection_count(&app, &live);
    Ok(StatusCode::NO_CONTENT)
}

/// A connection's path settings (primary or standby, weight), applied at
/// once to the live session; the answer is the connection as it now is.
pub async fn set_path(
    State(app): State<Arc<App>>,
    p: Result<Path<(String, String)>, PathRejection>,
    b: super::JsonBody<api::PathRequest>,
) -> ApiResult<Json<api::Connection>> {
    let (sid, cid) = path(p)?;
    let live = session_of(&app, &sid)?;
    let id = connection_id(&cid)?;
    let r = body(b)?;
    if r.weight.is_none() && r.primary.is_none() {
        return Err(ApiErr::bad_request("nothing to change: give weight, primary or both"));
    }
    let c = live.session.connections().into_iter().find(|c| c.id == id).ok_or_else(|| no_connection(&sid, &cid))?;
    let (primary, weight) = (r.primary.unwrap_or(c.primary), r.weight.unwrap_or(c.weight));
    live.session.set_path(id, primary, weight).map_err(|_| no_connection(&sid, &cid))?;
    persist_paths(&app, &live)?;
    info!(session = %live.session.id(), connection = %id, primary, weight, "path settings changed");
    let view = live.view(still_persistent(&app, &live));
    view.connections
        .into_iter()
        .find(|v| v.connection_id == id.to_string())
        .map(Json)
        .ok_or_else(|| no_connection(&sid, &cid))
}

/// 404 `ISDSC_INVALID_CONNECTION_ID`: the session has no such connection.
fn no_connection(sid: &str, cid: &str) -> ApiErr {
    model::Status::new(model::IsdscCode::InvalidConnectionId, format!("session {sid} has no connection {cid}")).into()
}

pub async fn logout(State(app): State<Arc<App>>, p: Result<Path<String>, PathRejection>) -> ApiResult<StatusCode> {
    let id = path(p)?;
    let live = session_of(&app, &id)?;
    if let Some(k) = &live.persistent_key {
        app.logins.logged_out(k);
    }
    app.registry.remove(live.session.id());
    // NBD clients are cut and the LUNs flushed before the session goes.
    live.exports.stop_all().await;
    let r = live.session.logout().await;
    info!(session = %live.session.id(), "session logged out");
    if let Err(e) = r {
        // The session is gone either way; say that the target did not agree.
        warn!(session = %live.session.id(), "logout was not clean: {e}");
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_policy(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    b: super::JsonBody<api::PolicyRequest>,
) -> ApiResult<StatusCode> {
    let id = path(p)?;
    let live = session_of(&app, &id)?;
    let pol = policy(&body(b)?.load_balance_policy)?;
    live.session.set_load_balance_policy(pol);
    if let Some(key) = &live.persistent_key {
        app.store.update(|st, _| {
            if let Some(l) = st.persistent_logins.iter_mut().find(|l| &l.key() == key) {
                l.load_balance_policy = pol.as_str().to_string();
            }
            Ok::<(), ApiErr>(())
        })?;
    }
    info!(session = %live.session.id(), policy = %pol, "load balance policy set");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn scsi(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    b: super::JsonBody<api::ScsiRequest>,
) -> ApiResult<Json<api::ScsiResponse>> {
    let id = path(p)?;
    let live = session_of(&app, &id)?;
    let r = body(b)?;
    let cdb = hex::decode(r.cdb.trim())
        .map_err(|e| ApiErr::bad_request(format!("cdb {:?} is not hexadecimal: {e}", r.cdb)))?;
    if cdb.is_empty() || cdb.len() > 16 {
        return Err(ApiErr::bad_request(format!("a CDB of {} bytes: 1 to 16 are supported", cdb.len())));
    }
    let data = match (r.data_in_length, &r.data_out) {
        (Some(_), Some(_)) => {
            return Err(ApiErr::bad_request("give data_in_length or data_out, not both (no bidirectional commands)"));
        }
        (Some(n), None) => ScsiData::In(n),
        (None, Some(b)) => ScsiData::Out(
            B64.decode(b).map_err(|e| ApiErr::bad_request(format!("data_out is not base64: {e}")))?.into(),
        ),
        (None, None) => ScsiData::None,
    };
    let written = match &data {
        ScsiData::Out(b) => b.len() as u64,
        _ => 0,
    };
    let t0 = Instant::now();
    let out = live.session.send_scsi_command(r.lun, &cdb, data).await;
    let elapsed = t0.elapsed();
    match out {
        Ok(res) => {
            live.stats.record(
                elapsed,
                res.data.len() as u64,
                if res.status == 0 { written } else { 0 },
                res.status == 0,
            );
            Ok(Json(api::ScsiResponse {
                scsi_status: res.status,
                sense: hex::encode(&res.sense),
                residual: r
                    .data_in_length
                    .map(|n| n.saturating_sub(u32::try_from(res.data.len()).unwrap_or(n)))
                    .unwrap_or(0),
                data: B64.encode(&res.data),
            }))
        }
        Err(e) => {
            live.stats.record(elapsed, 0, 0, false);
            Err(e.into())
        }
    }
}

/// `POST /v1/sessions/{id}/exports`: serve a LUN of the session over NBD on
/// a Unix socket; a persistent login keeps it for its later sessions.
pub async fn export(
    State(app): State<Arc<App>>,
    p: Result<Path<String>, PathRejection>,
    b: super::JsonBody<api::ExportRequest>,
) -> ApiResult<(StatusCode, Json<api::NbdExport>)> {
    let id = path(p)?;
    let live = session_of(&app, &id)?;
    let r = body(b)?;
    let view = crate::exports::start(&live, &r).await?;
    crate::exports::persist(&app, &live, r.lun, Some(&r));
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /v1/sessions/{id}/exports/{lun}`: stop serving it, after the
/// requests in flight and a flush of the LUN.
pub async fn unexport(
    State(app): State<Arc<App>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (sid, lun) = path(p)?;
    let live = session_of(&app, &sid)?;
    let lun: u64 = lun.parse().map_err(|_| ApiErr::bad_request(format!("LUN {lun:?} is not a number")))?;
    crate::exports::persist(&app, &live, lun, None);
    crate::exports::stop(&live, lun).await?;
    Ok(StatusCode::NO_CONTENT)
}
