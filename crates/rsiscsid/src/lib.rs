//! rsiscsid: the rsiscsi initiator service, shaped after the Windows iSCSI
//! initiator service. It owns every session, keeps discovery portals,
//! targets, persistent logins and secrets across restarts ([`store`]), logs
//! the persistent logins in at start ([`logins`]), follows iSNS servers
//! ([`isns`]), and serves the JSON API of
//! `openapi.yaml` on a Unix domain socket ([`api`]).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api;
pub mod config;
pub mod error;
pub mod exports;
pub mod isns;
pub mod logins;
pub mod metrics;
pub mod recovery;
pub mod registry;
pub mod store;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tracing::{error, info, warn};

pub use config::Options;

/// Everything the handlers share.
#[derive(Debug)]
pub struct App {
    pub store: store::Store,
    pub registry: registry::Registry,
    pub logins: logins::Supervisor,
    /// The tasks of the iSNS servers.
    pub isns: isns::Servers,
    pub started: Instant,
    /// The hold time and link-down time of a login that does not give them.
    pub recovery_defaults: recovery::RecoveryTimes,
    /// The host's system-wide node name file, kept in step with the
    /// service's name (`None`: left alone, as in tests that build an `App`).
    pub name_file: Option<PathBuf>,
    /// Who sets up IPsec for the logins that ask for it (charon at
    /// `--vici-socket`); `None`: nobody, and such logins fail with
    /// ISDSC_IPSEC_NOT_SUPPORTED_ON_OS.
    pub ipsec: Option<Arc<dyn iscsi_initiator::ipsec::IpsecProvider>>,
}

impl App {
    /// With Windows' recovery defaults (60 s hold time, 15 s link-down time).
    pub fn new(store: store::Store) -> Arc<Self> {
        Self::with_recovery_defaults(store, recovery::RecoveryTimes::WINDOWS)
    }

    pub fn with_recovery_defaults(store: store::Store, recovery_defaults: recovery::RecoveryTimes) -> Arc<Self> {
        Self::build(store, recovery_defaults, None, None)
    }

    pub fn build(
        store: store::Store,
        recovery_defaults: recovery::RecoveryTimes,
        name_file: Option<PathBuf>,
        ipsec: Option<Arc<dyn iscsi_initiator::ipsec::IpsecProvider>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry: registry::Registry::default(),
            logins: logins::Supervisor::default(),
            isns: isns::Servers::default(),
            started: Instant::now(),
            recovery_defaults,
            name_file,
            ipsec,
        })
    }

    /// Writes the service's node name into the system-wide name file when
    /// it is missing or says another name, so the one-shot commands of users
    /// who cannot reach the service log in under the same name. Best
    /// effort: a file that cannot be written (a service run by a user) is
    /// reported in the log.
    pub fn mirror_node_name(&self) {
        let Some(path) = &self.name_file else { return };
        let name = self.store.state().initiator.node_name;
        match rsiscsi_api::identity::read_name_file(path) {
            Ok(Some(n)) if n == name => {}
            Ok(old) => match rsiscsi_api::identity::write_name_file(path, &name) {
                Ok(()) => match old {
                    Some(old) => {
                        warn!(file = %path.display(), "replaced the host's node name {old} by the service's {name}")
                    }
                    None => info!(file = %path.display(), "wrote the service's node name {name} as the host's"),
                },
                Err(e) => warn!(
                    file = %path.display(),
                    "cannot write the host's node name file ({e}); one-shot commands that cannot reach rsiscsid may log in under another name"
                ),
            },
            Err(e) => warn!(file = %path.display(), "cannot read the host's node name file: {e}"),
        }
    }
}

/// The node name of a new service state: the host's, from the system-wide
/// file, else a generated one (written there too when possible).
fn host_node_name(path: &Path) -> String {
    use rsiscsi_api::identity;
    match identity::read_name_file(path) {
        Ok(Some(n)) => {
            info!(file = %path.display(), "new state: taking the host's node name {n}");
            return n;
        }
        Ok(None) => {}
        Err(e) => warn!(file = %path.display(), "cannot read the host's node name file: {e}"),
    }
    let generated = identity::generate_name();
    match identity::create_name_file(path, &generated) {
        Ok(n) => n,
        Err(e) => {
            warn!(file = %path.display(), "cannot write the host's node name file: {e}");
            generated
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("another rsiscsid is already listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error("{0} exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    #[error("cannot prepare the socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("no group named {0:?}")]
    UnknownGroup(String),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Binds the API socket: a stale socket file is removed only when nobody
/// answers on it (so two daemons never share one socket); the file is
/// created under umask 0177 (never readable by others, even briefly) and
/// then given mode 0600, or 0660 and group `group`.
pub fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, ServiceError> {
    let serr = |source| ServiceError::Socket { path: path.to_path_buf(), source };
    let gid = match group {
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| ServiceError::UnknownGroup(g.to_string()))?
                .gid,
        ),
        None => None,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).map_err(serr)?;
        let mode = if gid.is_some() { 0o750 } else { 0o755 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(serr)?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(dir, None, Some(gid.as_raw())).map_err(serr)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServiceError::AlreadyRunning(path.to_path_buf())),
            Err(_) => {
                info!(socket = %path.display(), "removing a stale socket file");
                std::fs::remove_file(path).map_err(serr)?;
            }
        },
        Ok(_) => return Err(ServiceError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(serr(e)),
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(serr)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid.as_raw())).map_err(serr)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(serr)?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(serr)?;
    }
    Ok(listener)
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<&'static str, ServiceError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Logs every session out, in parallel, each within `limit`.
pub async fn logout_all(app: &App, limit: Duration) {
    let mut set = tokio::task::JoinSet::new();
    for live in app.registry.drain() {
        set.spawn(async move {
            let id = live.session.id();
            // Each export's clients are cut and its LUN flushed first.
            let _ = tokio::time::timeout(limit, live.exports.stop_all()).await;
            match tokio::time::timeout(limit, live.session.logout()).await {
                Ok(Ok(())) => info!(session = %id, "logged out"),
                Ok(Err(e)) => warn!(session = %id, "logout failed: {e}"),
                Err(_) => warn!(session = %id, "logout timed out"),
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Runs the service until SIGTERM/SIGINT; then logs every session out.
pub async fn run(opts: Options) -> Result<(), ServiceError> {
    let state_dir = opts.state_path();
    let socket = opts.socket_path();
    let name_file = rsiscsi_api::identity::system_name_file();
    let store = store::Store::open_with(&state_dir, || host_node_name(&name_file))?;
    let listener = bind_socket(&socket, opts.socket_group.as_deref())?;
    let charon = iscsi_initiator::ipsec::StrongSwan::new(&opts.vici_socket);
    // What an rsiscsid (or a one-shot command) that died left in charon
    // under our names goes before any login adds its own.
    match charon.remove_stale().await {
        Ok(names) if !names.is_empty() => info!("removed what dead processes left in charon: {names:?}"),
        Ok(_) => {}
        Err(e) => {
            info!(vici = %opts.vici_socket.display(), "charon not reachable ({e}); logins asking for IPsec fail until it is")
        }
    }
    let app = App::build(store, opts.recovery_defaults(), Some(name_file.clone()), Some(Arc::new(charon)));
    app.mirror_node_name();
    info!(
        socket = %socket.display(), state_dir = %state_dir.display(), name_file = %name_file.display(),
        initiator = %app.store.state().initiator.node_name,
        max_request_hold_time_s = app.recovery_defaults.max_request_hold_time_s,
        link_down_time_s = app.recovery_defaults.link_down_time_s, "rsiscsid started"
    );
    if let Some(addr) = opts.metrics {
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServiceError::Metrics { addr, source })?;
        let a = app.clone();
        let r = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let a = a.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics::render(&a.registry.all()),
                    )
                }
            }),
        );
        info!(%addr, "metrics on http://{addr}/metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, r).await {
                error!("metrics listener failed: {e}");
            }
        });
    }
    let state = app.store.state();
    for l in state.persistent_logins {
        app.logins.spawn(&app, l.key(), None);
    }
    for s in state.isns_servers {
        app.isns.spawn(&app, s, None, None);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = api::router(app.clone()).into_make_service_with_connect_info::<api::Peer>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move { server.await });
    let why = shutdown_signal().await?;
    info!("{why}: logging out every session, deregistering from the iSNS servers");
    app.logins.stop_all();
    let _ = stop_tx.send(());
    // Each iSNS deregistration is bounded by isns::CLOSE_TIMEOUT.
    tokio::join!(app.isns.stop_all(), logout_all(&app, Duration::from_secs(10)));
    // Requests still in flight get a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    // The IPsec removals of sessions dropped without a logout.
    if !iscsi_initiator::ipsec::finish_cleanups(Duration::from_secs(5)) {
        warn!("some IPsec connections were still being removed from charon; the next start removes them");
    }
    let _ = std::fs::remove_file(&socket);
    info!("rsiscsid stopped");
    Ok(())
}
