//! `/v1/portals`: SendTargets discovery portals
//! (MSIscsiInitiator_SendTargetPortalClass). Adding one also runs
//! SendTargets on it, as Windows does.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use iscsi_initiator::model::{IsdscCode, Status};
use rsiscsi_api::types as api;
use serde::Deserialize;
use tracing::info;

use super::{body, query};
use crate::App;
use crate::error::{ApiErr, ApiResult};
use crate::logins::{check_discovery_security, to_model};
use crate::store::portal_key;

pub async fn list(State(app): State<Arc<App>>) -> Json<api::PortalList> {
    let portals = app
        .store
        .state()
        .portals
        .into_iter()
        .map(|mut p| {
            p.login_options = p.login_options.redacted();
            p
        })
        .collect();
    Json(api::PortalList { portals })
}

/// AddIScsiSendTargetPortal: SendTargets runs first, and a portal it fails
/// on is not added and the call fails, as on Windows; with `keep` it is
/// added all the same (201 with `refresh_error`) and tried at each refresh.
pub async fn add(
    State(app): State<Arc<App>>,
    b: super::JsonBody<api::PortalAddRequest>,
) -> ApiResult<(StatusCode, Json<api::PortalAdded>)> {
    let api::PortalAddRequest { portal: mut p, keep } = body(b)?;
    if p.address.trim().is_empty() {
        return Err(ApiErr::bad_request("the portal address is empty"));
    }
    if p.port == 0 {
        p.port = api::DEFAULT_PORT;
    }
    if p.address.len() > 255 || p.symbolic_name.len() > 255 {
        return Err(ApiErr::bad_request("portal address and symbolic name are at most 255 bytes"));
    }
    check_discovery_security(p.security_flags, p.login_options.login_flags)?;
    to_model(&p.login_options, false)?;
    iscsi_initiator::model::Portal::new(p.address.clone(), p.port).to_portal_addr()?;
    let password = p.login_options.password.take();
    p.login_options.password_set = password.is_some();
    let exists = |st: &crate::store::State, q: &api::SendTargetPortal| {
        if st.portals.iter().any(|x| x.portal().same_place(&q.portal())) {
            return Err(ApiErr::from(Status::new(
                IsdscCode::TargetPortalAlreadyExists,
                format!("portal {} is already in the list", q.portal()),
            )));
        }
        Ok(())
    };
    exists(&app.store.state(), &p)?;
    let found = super::targets::discover(&app, &p, password.clone()).await;
    if let (Err(e), false) = (&found, keep) {
        info!(portal = %p.portal(), "SendTargets failed: {}; portal not added", e.message);
        return Err(Status::new(
            e.code,
            format!("SendTargets on {} failed: {}; {}", p.portal(), e.message, api::PORTAL_NOT_ADDED),
        )
        .into());
    }
    let stored = p.clone();
    app.store.update(|st, sec| {
        exists(st, &stored)?;
        st.portals.push(stored.clone());
        if let Ok(found) = &found {
            super::targets::merge(&mut st.targets, &stored.portal(), found);
        }
        let k = portal_key(&stored.address, stored.port);
        match &password {
            Some(pw) => {
                sec.passwords.insert(k, pw.clone());
            }
            None => {
                sec.passwords.remove(&k);
            }
        }
        Ok::<(), ApiErr>(())
    })?;
    let refresh_error = match &found {
        Ok(t) => {
            info!(portal = %p.portal(), targets = t.len(), "discovery portal added");
            None
        }
        Err(e) => {
            info!(portal = %p.portal(), "discovery portal kept although SendTargets failed: {}", e.message);
            Some(crate::error::body_of(e))
        }
    };
    p.login_options = p.login_options.redacted();
    Ok((StatusCode::CREATED, Json(api::PortalAdded { portal: p, refresh_error })))
}

#[derive(Debug, Deserialize)]
pub struct PortalQuery {
    pub address: String,
    pub port: Option<u16>,
}

pub async fn remove(
    State(app): State<Arc<App>>,
    q: Result<Query<PortalQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    let place = api::Portal::new(q.address.clone(), q.port.unwrap_or(api::DEFAULT_PORT));
    app.store.update(|st, sec| {
        let before = st.portals.len();
        st.portals.retain(|p| !p.portal().same_place(&place));
        if st.portals.len() == before {
            return Err(ApiErr::from(Status::new(IsdscCode::PortalNotFound, format!("no portal {place}"))));
        }
        sec.passwords.remove(&portal_key(&place.address, place.port));
        for t in &mut st.targets {
            t.discovered_from.retain(|d| d.is_isns_source() || !d.same_place(&place));
        }
        st.targets.retain(|t| !t.discovered_from.is_empty());
        Ok(())
    })?;
    info!(portal = %place, "discovery portal removed");
    Ok(StatusCode::NO_CONTENT)
}
