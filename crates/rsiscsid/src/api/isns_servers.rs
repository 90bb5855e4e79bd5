//! `/v1/isns-servers`: iSNS servers (MSIscsiInitiator_IsnsServerClass;
//! AddiSNSServer, RemoveiSNSServer, ReportiSNSServerList). Adding one
//! registers with it at once, as adding a portal runs SendTargets; the
//! targets it lists join `/v1/targets` and follow its State Change
//! Notifications ([`crate::isns`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use iscsi_initiator::isns::IsnsError;
use iscsi_initiator::model::{IsdscCode, Status};
use rsiscsi_api::types::{self as api, ApiErrorBody};
use serde::Deserialize;
use tracing::info;

use super::{body, query};
use crate::App;
use crate::error::{ApiErr, ApiResult};
use crate::isns;
use crate::store::{State as Stored, StoredIsnsServer};

/// Win32 `ERROR_ALREADY_EXISTS`: the server is in the list already.
const ERROR_ALREADY_EXISTS: u32 = 183;

/// The API view of a stored server: what its task reports, and how many
/// targets of the list it is a source of.
fn view(app: &App, st: &Stored, s: &StoredIsnsServer) -> api::IsnsServer {
    let link = app.isns.status(s);
    let from = s.source();
    api::IsnsServer {
        address: s.address.clone(),
        port: s.port,
        state: link.state,
        last_error: link.last_error,
        targets: st
            .targets
            .iter()
            .filter(|t| t.discovered_from.iter().any(|d| d.is_isns_source() && d.same_place(&from)))
            .count(),
        registration_period_s: link.registration_period.map(|d| d.as_secs()),
        scn_portal: link.scn_portal,
    }
}

pub async fn list(State(app): State<Arc<App>>) -> Json<api::IsnsServerList> {
    let st = app.store.state();
    Json(api::IsnsServerList { isns_servers: st.isns_servers.iter().map(|s| view(&app, &st, s)).collect() })
}

/// `address` as stored: brackets of an IPv6 literal dropped, checked.
fn address(raw: &str) -> ApiResult<String> {
    let a = raw.trim();
    let a = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(a);
    if a.is_empty() {
        return Err(ApiErr::bad_request("the iSNS server address is empty"));
    }
    if a.len() > 255 || a.chars().any(|c| c.is_whitespace() || c.is_control() || "[]/@".contains(c)) {
        return Err(ApiErr::bad_request(format!(
            "{raw:?} is not an iSNS server address (a host name or IP address, at most 255 bytes)"
        )));
    }
    if a.contains(':') && a.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(ApiErr::bad_request(format!(
            "{raw:?} is not an iSNS server address: give the port in `port`, not in the address"
        )));
    }
    Ok(a.to_string())
}

/// An iSNS failure (its message names the server) as an ISDSC status.
fn isns_status(e: &IsnsError) -> Status {
    Status::new(IsdscCode::IsnsServerNotFound, e.to_string())
}

/// AddiSNSServer: registers with the server first; one that cannot be
/// reached is not added and the call fails (502), unless `keep` (then 201
/// with `error`, and the service keeps trying with back-off).
pub async fn add(
    State(app): State<Arc<App>>,
    b: super::JsonBody<api::IsnsServerAddRequest>,
) -> ApiResult<(StatusCode, Json<api::IsnsServerAdded>)> {
    let r = body(b)?;
    if r.port == 0 {
        return Err(ApiErr::bad_request("the iSNS server port is 0"));
    }
    let server = StoredIsnsServer { address: address(&r.address)?, port: r.port };
    let exists = |st: &Stored| {
        if st.isns_servers.iter().any(|s| s.same_place(&server.address, server.port)) {
            return Err(ApiErr {
                http: StatusCode::CONFLICT,
                body: ApiErrorBody::new(
                    ERROR_ALREADY_EXISTS,
                    "ERROR_ALREADY_EXISTS",
                    format!("iSNS server {} is already in the list", server.server()),
                ),
            });
        }
        Ok(())
    };
    exists(&app.store.state())?;
    let opened = isns::open(&app, &server).await;
    let failed = match &opened {
        Err(IsnsError::InvalidAddress(_)) => {
            return Err(ApiErr::bad_request(format!("{} is not a valid iSNS server address", server.server())));
        }
        Err(e) if !r.keep => {
            info!(server = %server.server(), "iSNS server not added: {e}");
            let s = isns_status(e);
            return Err(Status::new(s.code, format!("{}; {}", s.message, api::ISNS_SERVER_NOT_ADDED)).into());
        }
        Err(e) => Some(isns_status(e)),
        Ok(_) => None,
    };
    let stored = server.clone();
    let recorded = app.store.update(|st, _| {
        exists(st)?;
        st.isns_servers.push(stored.clone());
        if let Ok((_, found)) = &opened {
            isns::merge_all(&mut st.targets, &stored.source(), found);
        }
        Ok::<(), ApiErr>(())
    });
    let (client, found) = match opened {
        Ok((c, found)) => (Some(c), found),
        Err(_) => (None, Vec::new()),
    };
    if let Err(e) = recorded {
        // Not stored: let go of the registration just made.
        if let Some(c) = client {
            let _ = tokio::time::timeout(isns::CLOSE_TIMEOUT, c.close()).await;
        }
        return Err(e);
    }
    for t in &found {
        app.logins.target_appeared(&app, &t.name);
    }
    match &failed {
        None => info!(server = %server.server(), targets = found.len(), "iSNS server added"),
        Some(e) => info!(server = %server.server(), "iSNS server kept although it cannot be reached: {}", e.message),
    }
    app.isns.spawn(&app, server.clone(), client, failed.as_ref().map(|s| s.message.clone()));
    let st = app.store.state();
    let view = view(&app, &st, &server);
    Ok((
        StatusCode::CREATED,
        Json(api::IsnsServerAdded { isns_server: view, error: failed.as_ref().map(crate::error::body_of) }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ServerQuery {
    pub address: String,
    pub port: Option<u16>,
}

/// RemoveiSNSServer: deregisters from the server (bounded), forgets it, and
/// drops it from the sources of every target.
pub async fn remove(
    State(app): State<Arc<App>>,
    q: Result<Query<ServerQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    let address = address(&q.address)?;
    let port = q.port.unwrap_or(api::ISNS_DEFAULT_PORT);
    let not_found = || {
        let name = api::Portal::new(address.clone(), port).to_string();
        ApiErr::with_http(
            StatusCode::NOT_FOUND,
            Status::new(IsdscCode::IsnsServerNotFound, format!("no iSNS server {name} in the list")),
        )
    };
    let Some(server) = app.store.state().isns_servers.into_iter().find(|s| s.same_place(&address, port)) else {
        return Err(not_found());
    };
    // First the task, so that no late SCN puts the server back as a source.
    app.isns.stop(&server).await;
    app.store.update(|st, _| {
        let before = st.isns_servers.len();
        st.isns_servers.retain(|s| s != &server);
        if st.isns_servers.len() == before {
            return Err(not_found());
        }
        isns::drop_source(&mut st.targets, &server.source(), None);
        Ok(())
    })?;
    info!(server = %server.server(), "iSNS server removed");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lose_their_brackets_and_junk_is_refused() {
        assert_eq!(address("[::1]").unwrap(), "::1");
        assert_eq!(address(" isns.lab ").unwrap(), "isns.lab");
        assert_eq!(address("").unwrap_err().http, StatusCode::BAD_REQUEST);
        assert_eq!(address("a b").unwrap_err().body.code, 87);
        assert!(address("h/x").is_err());
        assert!(address("h:3205").is_err());
    }
}
