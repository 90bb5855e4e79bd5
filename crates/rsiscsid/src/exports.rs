//! NBD exports of the service's sessions (`POST /v1/sessions/{id}/exports`):
//! a LUN served on a Unix socket for qemu, qemu-img, nbdcopy and the like,
//! for as long as its session lives. A persistent login keeps its exports,
//! and they are served again with each of its sessions.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use iscsi_initiator::model::{IsdscCode, Status};
use rsiscsi_api::types as api;
use rsiscsi_nbd::{Export, ExportConfig, Listener, LunDevice, OpenError};
use tracing::{info, warn};

use crate::App;
use crate::error::ApiErr;
use crate::registry::Live;

/// Requests of one NBD client started before its replies are read back;
/// the session's command window limits what reaches the target.
const IN_FLIGHT_PER_CLIENT: usize = 64;
/// NBD clients served at once per export.
const MAX_CLIENTS: usize = 16;

/// One LUN being served.
struct Running {
    request: api::ExportRequest,
    name: String,
    export: Export,
    /// Removes the socket when the export ends (if it is still ours).
    socket: nbd_export::UnixSocketGuard,
}

/// The exports of one session.
#[derive(Default)]
pub struct SessionExports(Mutex<Vec<Running>>);

impl std::fmt::Debug for SessionExports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionExports({} running)", self.lock().len())
    }
}

impl SessionExports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the session view shows.
    pub fn views(&self) -> Vec<api::NbdExport> {
        self.lock()
            .iter()
            .map(|r| api::NbdExport {
                lun: r.request.lun,
                nbd_socket: r.request.nbd_socket.clone(),
                read_only: r.request.read_only,
                export_name: r.name.clone(),
                clients: u32::try_from(r.export.clients()).unwrap_or(u32::MAX),
            })
            .collect()
    }

    fn take(&self, lun: u64) -> Option<Running> {
        let mut v = self.lock();
        let i = v.iter().position(|r| r.request.lun == lun)?;
        Some(v.remove(i))
    }

    /// Stops every export of the session (before its logout): requests in
    /// flight finish and each LUN is flushed.
    pub async fn stop_all(&self) {
        let all: Vec<Running> = std::mem::take(&mut *self.lock());
        for r in all {
            stop_one(r).await;
        }
    }
}

async fn stop_one(r: Running) -> Option<ApiErr> {
    let (lun, path) = (r.request.lun, r.request.nbd_socket.clone());
    let out = r.export.stop().await;
    // The socket goes with the export, whatever the flush said.
    drop(r.socket);
    match out {
        Ok(stats) => {
            info!(lun, socket = %path, clients = stats.clients_served, requests = stats.requests, "NBD export stopped");
            None
        }
        Err(e) => {
            warn!(lun, socket = %path, "NBD export stopped: {e}");
            Some(ApiErr::with_http(StatusCode::BAD_GATEWAY, Status::new(IsdscCode::ScsiRequestFailed, e.to_string())))
        }
    }
}

fn conflict(message: String) -> ApiErr {
    ApiErr::with_http(StatusCode::CONFLICT, Status::new(IsdscCode::SessionBusy, message))
}

/// Starts serving `req.lun` of `live`'s session on `req.nbd_socket`.
pub async fn start(live: &Live, req: &api::ExportRequest) -> Result<api::NbdExport, ApiErr> {
    let path = Path::new(&req.nbd_socket);
    if !path.is_absolute() {
        return Err(ApiErr::bad_request(format!("nbd_socket {:?} is not an absolute path", req.nbd_socket)));
    }
    {
        let running = live.exports.lock();
        if let Some(r) = running.iter().find(|r| r.request.lun == req.lun) {
            return Err(conflict(format!("LUN {} is already exported on {}", req.lun, r.request.nbd_socket)));
        }
        if running.iter().any(|r| r.request.nbd_socket == req.nbd_socket) {
            return Err(conflict(format!("{} already serves another LUN of this session", req.nbd_socket)));
        }
    }
    let device = LunDevice::open(live.session.clone(), req.lun, req.read_only).await.map_err(|e| match e {
        OpenError::Scsi { .. } => {
            ApiErr::with_http(StatusCode::BAD_GATEWAY, Status::new(IsdscCode::ScsiRequestFailed, e.to_string()))
        }
        _ => ApiErr::with_http(StatusCode::BAD_REQUEST, Status::new(IsdscCode::InvalidParameter, e.to_string())),
    })?;
    let target = live.session.target_name().unwrap_or_default().to_string();
    let name = req.export_name.clone().unwrap_or_else(|| format!("{target}/{}", req.lun));
    let (listener, socket) = nbd_export::bind_unix_guarded(path)
        .map_err(|e| conflict(format!("cannot serve on {}: {e}", req.nbd_socket)))?;
    let config = ExportConfig {
        name: name.clone(),
        description: format!("LUN {} of {target}", req.lun),
        read_only: req.read_only,
        max_clients: MAX_CLIENTS,
        max_in_flight: IN_FLIGHT_PER_CLIENT,
    };
    let export = Export::start(Arc::new(device), config, Listener::Unix(listener));
    info!(session = %live.session.id(), lun = req.lun, socket = %req.nbd_socket, read_only = req.read_only, "NBD export started");
    let view = api::NbdExport {
        lun: req.lun,
        nbd_socket: req.nbd_socket.clone(),
        read_only: req.read_only,
        export_name: name.clone(),
        clients: 0,
    };
    live.exports.lock().push(Running { request: req.clone(), name, export, socket });
    Ok(view)
}

/// Stops serving `lun`; the LUN is flushed first.
pub async fn stop(live: &Live, lun: u64) -> Result<(), ApiErr> {
    let Some(r) = live.exports.take(lun) else {
        return Err(ApiErr::with_http(
            StatusCode::NOT_FOUND,
            Status::new(
                IsdscCode::DeviceNotFound,
                format!("LUN {lun} of session {} is not exported", live.session.id()),
            ),
        ));
    };
    match stop_one(r).await {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Serves again the exports a persistent login keeps, on its new session;
/// one that cannot start is logged and the others go on.
pub async fn restore(live: &Live, stored: &[api::ExportRequest]) {
    for req in stored {
        if let Err(e) = start(live, req).await {
            warn!(session = %live.session.id(), lun = req.lun, socket = %req.nbd_socket, "stored NBD export not served: {}", e.body.message);
        }
    }
}

/// Records `req` (or, with `None`, removes LUN `lun`) in the session's
/// persistent login, so that a restart serves the same exports.
pub fn persist(app: &App, live: &Live, lun: u64, req: Option<&api::ExportRequest>) {
    let Some(key) = &live.persistent_key else { return };
    let r = app.store.update(|st, _| {
        if let Some(l) = st.persistent_logins.iter_mut().find(|l| &l.key() == key) {
            l.exports.retain(|e| e.lun != lun);
            if let Some(req) = req {
                l.exports.push(req.clone());
            }
        }
        Ok::<(), crate::store::StoreError>(())
    });
    if let Err(e) = r {
        warn!("cannot record the NBD exports of {key}: {e}");
    }
}
