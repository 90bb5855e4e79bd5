//! The accept loop: one task per client, a cap on clients, and an orderly shutdown.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nbd_proto::{BlockSizes, ExportError, ExportInfo, MAX_WRITE_PAYLOAD, TransmissionFlags};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::connection::{self, ClientEnd};
use crate::device::{BlockDevice, Features};

/// What is exported and how many clients and requests it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Export name; clients may also ask for the empty (default) name.
    pub name: String,
    /// Shown by `nbdinfo` and `NBD_OPT_LIST`.
    pub description: String,
    /// Forces `NBD_FLAG_READ_ONLY` whatever the device's [`Features`] say.
    pub read_only: bool,
    /// Clients connected at once; one more is closed right after accept (with a log line). At least 1.
    pub max_clients: usize,
    /// Requests of one client running on the device at once; the client's next request is not read
    /// until one finishes. At least 1.
    pub max_in_flight: usize,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self { name: String::new(), description: String::new(), read_only: false, max_clients: 16, max_in_flight: 32 }
    }
}

/// Where clients come from.
#[derive(Debug)]
pub enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

/// Totals over one [`Exporter::serve`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServeStats {
    /// Clients accepted and handled (those refused over `max_clients` are not counted).
    pub clients_served: u64,
    /// Transmission requests received (`NBD_CMD_DISC` excluded).
    pub requests: u64,
    /// Requests answered with an error (refused by validation or failed by the device).
    pub errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the device cannot be exported over NBD: {0}")]
    Export(#[from] ExportError),
    #[error("{}: exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("{}: a server is already listening on this socket", path.display())]
    InUse { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Socket { path: PathBuf, source: io::Error },
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) clients_served: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Everything a client task needs, shared by all clients of one exporter.
pub(crate) struct Shared<D> {
    pub(crate) device: Arc<D>,
    pub(crate) config: ExportConfig,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) counters: Counters,
    /// Write payload buffers of all clients, back from finished writes.
    pub(crate) payloads: crate::pool::PayloadPool,
}

impl<D: BlockDevice> Shared<D> {
    /// The export as the device describes it now (size and features may change between clients).
    pub(crate) fn export_info(&self) -> ExportInfo {
        let features = self.device.features();
        let sizes = self.device.block_sizes();
        ExportInfo {
            name: self.config.name.clone(),
            description: self.config.description.clone(),
            size: self.device.size(),
            flags: transmission_flags(features, self.config.read_only),
            // The largest write we buffer bounds what we advertise; 2^25 is a multiple of any valid
            // minimum, so the rule "max is a multiple of min" still holds.
            block_sizes: BlockSizes { max: sizes.max.min(MAX_WRITE_PAYLOAD), ..sizes },
        }
    }
}

/// proto.md "Transmission flags": a flag per supported feature; a read-only export advertises no
/// write-side feature.
fn transmission_flags(f: Features, force_read_only: bool) -> TransmissionFlags {
    let ro = f.read_only || force_read_only;
    TransmissionFlags::HAS_FLAGS
        .with(TransmissionFlags::READ_ONLY, ro)
        .with(TransmissionFlags::SEND_FLUSH, f.flush)
        .with(TransmissionFlags::SEND_FUA, f.fua && !ro)
        .with(TransmissionFlags::SEND_TRIM, f.trim && !ro)
        .with(TransmissionFlags::SEND_WRITE_ZEROES, f.write_zeroes && !ro)
        .with(TransmissionFlags::CAN_MULTI_CONN, f.multi_conn)
}

/// Serves one device to NBD clients.
pub struct Exporter<D: BlockDevice> {
    shared: Arc<Shared<D>>,
    clients: Arc<AtomicUsize>,
}

/// Decrements the connected-clients count when a client task ends, however it ends.
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<D: BlockDevice> Exporter<D> {
    pub fn new(device: Arc<D>, config: ExportConfig) -> Self {
        let config = ExportConfig {
            max_clients: config.max_clients.max(1),
            max_in_flight: config.max_in_flight.max(1),
            ..config
        };
        Self {
            shared: Arc::new(Shared {
                device,
                config,
                handshake_timeout: Duration::from_secs(30),
                shutdown_grace: Duration::from_secs(5),
                counters: Counters::default(),
                payloads: crate::pool::PayloadPool::default(),
            }),
            clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn shared_mut(&mut self) -> Option<&mut Shared<D>> {
        Arc::get_mut(&mut self.shared)
    }

    /// A client that has not finished the handshake this long after connecting is cut (default 30 s).
    /// Settings take effect only before [`Self::serve`] is first called.
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        if let Some(s) = self.shared_mut() {
            s.handshake_timeout = timeout;
        }
        self
    }

    /// How long requests in flight may take to finish once a client ends or the server shuts down
    /// (default 5 s); after it, their device futures are dropped and the connection closed.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        if let Some(s) = self.shared_mut() {
            s.shutdown_grace = grace;
        }
        self
    }

    /// Clients connected now (in the handshake or transmitting).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    /// Serves until `shutdown` completes: then stops accepting, lets requests in flight finish
    /// (bounded by the shutdown grace), closes every client, and returns the totals. Fails at once
    /// if the device's description cannot be expressed in NBD (e.g. invalid block sizes). The
    /// listener is consumed; removing a Unix socket's path is the caller's business (see
    /// [`crate::UnixSocketGuard`]).
    pub async fn serve(
        &self,
        listener: Listener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<ServeStats, ServeError> {
        self.shared.export_info().validate()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut next_id: u64 = 0;
        let start = self.stats_now();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                accepted = accept(&listener) => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually transient (out of descriptors, a client gone before accept): back off.
                    tracing::warn!(error = %e, "accepting an NBD client failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            next_id = next_id.wrapping_add(1);
            let limit = self.shared.config.max_clients;
            if self.clients.fetch_add(1, Ordering::AcqRel) >= limit {
                self.clients.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(client = next_id, %peer, limit, "too many NBD clients; closing the new one");
                drop(stream);
                continue;
            }
            let slot = ClientSlot(Arc::clone(&self.clients));
            self.shared.counters.clients_served.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::clone(&self.shared);
            let stop = stop_rx.clone();
            let id = next_id;
            tasks.spawn(async move {
                let _slot = slot;
                tracing::debug!(client = id, %peer, "NBD client connected");
                let end = match stream {
                    Stream::Unix(s) => {
                        let (r, w) = s.into_split();
                        connection::serve_client(shared, id, r, w, stop).await
                    }
                    Stream::Tcp(s) => {
                        let (r, w) = s.into_split();
                        connection::serve_client(shared, id, r, w, stop).await
                    }
                };
                match end {
                    Ok(ClientEnd::Disconnected) => tracing::debug!(client = id, "NBD client disconnected"),
                    Ok(end) => tracing::info!(client = id, ?end, "NBD client closed"),
                    Err(e) => tracing::warn!(client = id, error = %e, "NBD client dropped"),
                }
            });
        }
        drop(listener);
        let _ = stop_tx.send(true);
        // Each client bounds its own drain by the grace period; this is a backstop.
        let backstop = self.shared.shutdown_grace + self.shared.handshake_timeout.min(Duration::from_secs(2));
        if tokio::time::timeout(backstop, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!(left = tasks.len(), "NBD clients did not finish in time; aborting them");
            tasks.shutdown().await;
        }
        let end = self.stats_now();
        Ok(ServeStats {
            clients_served: end.clients_served - start.clients_served,
            requests: end.requests - start.requests,
            errors: end.errors - start.errors,
        })
    }

    fn stats_now(&self) -> ServeStats {
        let c = &self.shared.counters;
        ServeStats {
            clients_served: c.clients_served.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// Socket buffers of a client: a whole read reply (256 KiB from nbdcopy,
/// up to the 32 MiB maximum) goes out in one `writev` instead of several
/// waits on a full buffer (the default is about 208 KiB); the kernel caps it
/// at `net.core.wmem_max`/`rmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// Best effort: a socket that keeps its default buffers works, only slower.
fn grow_buffers(fd: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(fd, sockopt::SndBuf, &SOCKET_BUFFER);
    let _ = setsockopt(fd, sockopt::RcvBuf, &SOCKET_BUFFER);
}

async fn accept(listener: &Listener) -> io::Result<(Stream, String)> {
    match listener {
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            grow_buffers(&s);
            Ok((Stream::Unix(s), "unix".to_owned()))
        }
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            // proto.md "Protocol phases": TCP peers SHOULD disable Nagle.
            s.set_nodelay(true)?;
            grow_buffers(&s);
            Ok((Stream::Tcp(s), addr.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_features() {
        let all =
            Features { read_only: false, flush: true, fua: true, trim: true, write_zeroes: true, multi_conn: true };
        assert_eq!(transmission_flags(all, false).bits(), 0b1_0110_1101);
        let ro = transmission_flags(all, true);
        assert!(ro.contains(TransmissionFlags::READ_ONLY | TransmissionFlags::SEND_FLUSH));
        assert!(!ro.intersects(
            TransmissionFlags::SEND_FUA | TransmissionFlags::SEND_TRIM | TransmissionFlags::SEND_WRITE_ZEROES
        ));
        assert_eq!(transmission_flags(Features::default(), false), TransmissionFlags::HAS_FLAGS);
    }
}
