//! `/v1/targets`: discovered targets (MSIscsiInitiator_TargetClass),
//! SendTargets refresh and login (TargetClass.Login).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use iscsi_initiator::discovery::{DiscoveredTarget, send_targets};
use iscsi_initiator::model::{IsdscCode, LoadBalancePolicy, LoginFlags, Status};
use rsiscsi_api::types as api;
use tracing::{info, warn};

use super::{body, policy};
use crate::App;
use crate::error::{ApiErr, ApiResult};
use crate::logins::{self, LoginSpec, ipsec_config, parse_isid, session_config, to_model};
use crate::store::{StoredLogin, login_key, portal_key};

pub async fn list(State(app): State<Arc<App>>) -> Json<api::TargetList> {
    Json(api::TargetList { targets: app.store.state().targets })
}

/// Records what SendTargets on `from` found: `from` is dropped from every
/// target's `discovered_from`, then added back to the targets it reported.
/// An iSNS server at the same address and port is another source.
pub fn merge(targets: &mut Vec<api::Target>, from: &api::Portal, found: &[DiscoveredTarget]) {
    let from = api::Portal { symbolic_name: String::new(), ..from.clone() };
    for t in targets.iter_mut() {
        t.discovered_from.retain(|d| d.is_isns_source() || !d.same_place(&from));
    }
    for f in found {
        let portals: Vec<api::TargetPortal> = f
            .portals
            .iter()
            .map(|p| api::TargetPortal { address: p.addr.host.clone(), port: p.addr.port, tpgt: p.tpgt })
            .collect();
        match targets.iter_mut().find(|t| t.name == f.name) {
            Some(t) => {
                t.portals = portals;
                t.discovered_from.push(from.clone());
            }
            None => targets.push(api::Target { name: f.name.clone(), portals, discovered_from: vec![from.clone()] }),
        }
    }
    targets.retain(|t| !t.discovered_from.is_empty());
}

/// SendTargets on one portal with its CHAP settings (`password`: the
/// portal's CHAP password, if any). Records nothing.
pub async fn discover(
    app: &App,
    p: &api::SendTargetPortal,
    password: Option<api::SecretString>,
) -> Result<Vec<DiscoveredTarget>, Status> {
    let mut opts = p.login_options.clone();
    opts.password = password;
    opts.password_set = false;
    let mo = to_model(&opts, false)?;
    let st = app.store.state();
    let cfg = session_config(&st.initiator, &app.store.secrets(), &mo, "", None)?;
    let addr = iscsi_initiator::model::Portal::new(p.address.clone(), p.port).to_portal_addr()?;
    tokio::time::timeout(Duration::from_secs(30), send_targets(&addr, cfg))
        .await
        .map_err(|_| Status::new(IsdscCode::ConnectionFailed, format!("SendTargets on {} timed out", p.portal())))?
        .map_err(Status::from)
}

/// SendTargets on one stored portal (with its stored CHAP password),
/// recorded in the store.
pub async fn refresh_portal(app: &App, p: &api::SendTargetPortal) -> Result<usize, Status> {
    let password = app.store.secrets().passwords.get(&portal_key(&p.address, p.port)).cloned();
    let found = discover(app, p, password).await?;
    let n = found.len();
    let from = p.portal();
    app.store
        .update(|st, _| {
            merge(&mut st.targets, &from, &found);
            Ok::<(), crate::store::StoreError>(())
        })
        .map_err(|e| Status::new(IsdscCode::CouldNotSavePersistentLoginData, e.to_string()))?;
    info!(portal = %from, targets = n, "SendTargets done");
    Ok(n)
}

pub async fn refresh(State(app): State<Arc<App>>) -> Json<api::RefreshResult> {
    let mut errors = Vec::new();
    for p in app.store.state().portals {
        if let Err(e) = refresh_portal(&app, &p).await {
            warn!(portal = %p.portal(), "SendTargets failed: {}", e.message);
            errors.push(api::PortalError { portal: p.portal(), error: crate::error::body_of(&e) });
        }
    }
    Json(api::RefreshResult { targets: app.store.state().targets, errors })
}

pub async fn login(
    State(app): State<Arc<App>>,
    b: super::JsonBody<api::LoginRequest>,
) -> ApiResult<(StatusCode, Json<api::LoginResult>)> {
    let r = body(b)?;
    if r.target_name.trim().is_empty() {
        return Err(ApiErr::bad_request("target_name is empty"));
    }
    if r.connections == 0 || r.connections > 65535 {
        return Err(ApiErr::bad_request(format!("connections {}: must be 1 to 65535", r.connections)));
    }
    let pol = match &r.load_balance_policy {
        Some(p) => policy(p)?,
        None => LoadBalancePolicy::RoundRobin,
    };
    let recovery = app.recovery_defaults.with(r.max_request_hold_time_s, r.link_down_time_s)?;
    let opts = r.login_options.clone().unwrap_or_default();
    // The key lives as a zeroizing Secret from here on.
    let psk = r.key.as_ref().map(|k| iscsi_proto::chap::Secret::new(k.expose().as_bytes()));
    let ipsec = ipsec_config(
        app.ipsec.as_ref(),
        r.security_flags.unwrap_or(0),
        opts.login_flags,
        psk.as_ref(),
        r.tunnel_outer_address.as_deref(),
    )?;
    to_model(&opts, ipsec.protects())?;
    let portal = match &r.portal {
        Some(p) if p.address.trim().is_empty() => return Err(ApiErr::bad_request("the portal address is empty")),
        Some(p) => api::Portal { port: if p.port == 0 { api::DEFAULT_PORT } else { p.port }, ..p.clone() },
        None => {
            let st = app.store.state();
            let t = st.targets.iter().find(|t| t.name == r.target_name);
            match t.and_then(|t| t.portals.first()) {
                Some(tp) => api::Portal::new(tp.address.clone(), tp.port),
                None => {
                    return Err(Status::new(
                        IsdscCode::NoPortalSpecified,
                        format!(
                            "target {} has not been discovered: give a portal, or add a discovery portal and refresh",
                            r.target_name
                        ),
                    )
                    .into());
                }
            }
        }
    };
    let multipath = LoginFlags(opts.login_flags.unwrap_or(0)).contains(LoginFlags::MULTIPATH_ENABLED);
    if !multipath && app.registry.all().iter().any(|l| l.session.target_name() == Some(r.target_name.as_str())) {
        return Err(Status::new(
            IsdscCode::TargetAlreadyLoggedIn,
            format!(
                "already logged in to {} (set login flag MULTIPATH_ENABLED 0x2 for another session)",
                r.target_name
            ),
        )
        .into());
    }
    let key = login_key(&r.target_name, &portal.address, portal.port);
    let mut isid = None;
    if r.persistent {
        // Windows stores a persistent login before trying it.
        let mut stored_opts = opts.clone();
        let password = stored_opts.password.take();
        stored_opts.password_set = password.is_some();
        let stored_isid = app.store.update(|st, sec| {
            let old = st.persistent_logins.iter().position(|l| l.key() == key);
            let isid = old
                .and_then(|i| st.persistent_logins.get(i))
                .map(|l| l.isid.clone())
                .filter(|i| parse_isid(i).is_some())
                .unwrap_or_else(|| hex::encode(iscsi_initiator::config::random_isid()));
            let entry = StoredLogin {
                target_name: r.target_name.clone(),
                portal: portal.clone(),
                initiator_port: r.initiator_port,
                security_flags: r.security_flags.unwrap_or(0),
                tunnel_outer_address: r.tunnel_outer_address.clone(),
                login_options: stored_opts.clone(),
                connections: r.connections,
                load_balance_policy: pol.as_str().to_string(),
                isid: isid.clone(),
                max_request_hold_time_s: r.max_request_hold_time_s,
                link_down_time_s: r.link_down_time_s,
                // A login stored again keeps the exports it had.
                exports: old.and_then(|i| st.persistent_logins.get(i)).map(|l| l.exports.clone()).unwrap_or_default(),
                // A new login starts with the default paths (`session path` sets them).
                paths: Vec::new(),
            };
            match old {
                Some(i) => {
                    if let Some(slot) = st.persistent_logins.get_mut(i) {
                        *slot = entry;
                    }
                }
                None => st.persistent_logins.push(entry),
            }
            match &password {
                Some(pw) => {
                    sec.passwords.insert(key.clone(), pw.clone());
                }
                None => {
                    sec.passwords.remove(&key);
                }
            }
            // The pre-shared key goes with the CHAP passwords, so that a
            // restart logs in with IPsec again.
            match &r.key {
                Some(k) if ipsec.key.is_some() => {
                    sec.ipsec_keys.insert(key.clone(), k.clone());
                }
                _ => {
                    sec.ipsec_keys.remove(&key);
                }
            }
            Ok::<String, ApiErr>(isid)
        })?;
        isid = parse_isid(&stored_isid);
        app.logins.forget(&key);
    }
    let spec = LoginSpec {
        target_name: r.target_name.clone(),
        portal: portal.clone(),
        initiator_port: r.initiator_port,
        security_flags: r.security_flags.unwrap_or(0),
        login_options: opts,
        key: psk,
        tunnel_outer_address: r.tunnel_outer_address.clone(),
        connections: r.connections,
        policy: pol,
        isid,
        persistent_key: r.persistent.then(|| key.clone()),
        all_or_nothing: true,
        recovery,
        paths: Vec::new(),
    };
    match logins::login(&app, &spec).await {
        Ok(live) => {
            if r.persistent {
                app.logins.spawn(&app, key, Some(live.clone()));
            }
            let connection_ids = live.session.connections().iter().map(|c| c.id.to_string()).collect();
            Ok((
                StatusCode::CREATED,
                Json(api::LoginResult { session_id: live.session.id().to_string(), connection_ids }),
            ))
        }
        Err(e) => {
            if r.persistent {
                // Stored all the same, as Windows does: say so, and what happens next.
                let next = app.logins.first_login_failed(&app, key, &e);
                return Err(Status::new(e.code, format!("{}; {next}", e.message)).into());
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use iscsi_initiator::{PortalAddr, TargetPortal};

    fn found(name: &str, host: &str) -> DiscoveredTarget {
        DiscoveredTarget {
            name: name.into(),
            portals: vec![TargetPortal { addr: PortalAddr { host: host.into(), port: 3260 }, tpgt: 1 }],
        }
    }

    #[test]
    fn merge_replaces_what_a_portal_reported() {
        let a = api::Portal::new("10.0.0.1", 3260);
        let b = api::Portal::new("10.0.0.2", 3260);
        let mut t = Vec::new();
        merge(&mut t, &a, &[found("iqn.x", "10.0.0.1"), found("iqn.y", "10.0.0.1")]);
        merge(&mut t, &b, &[found("iqn.x", "10.0.0.2")]);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].discovered_from, vec![a.clone(), b.clone()]);
        assert_eq!(t[0].portals[0].address, "10.0.0.2");
        // Portal a no longer reports y: y goes away.
        merge(&mut t, &a, &[found("iqn.x", "10.0.0.1")]);
        assert_eq!(t.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["iqn.x"]);
    }
}
