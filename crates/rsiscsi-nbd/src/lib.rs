//! An iSCSI LUN served over NBD: [`LunDevice`] maps each NBD command onto
//! the SCSI command that does the same (READ, WRITE with FUA, SYNCHRONIZE
//! CACHE, UNMAP, WRITE SAME), and [`Export`] serves one until it is stopped,
//! then flushes the LUN's cache. Logging in and out stays with the caller,
//! which owns the session (the CLI for `rsiscsi nbd`, the daemon for its
//! exports).

mod combine;
mod device;

pub use device::{LunDevice, OpenError};
pub use nbd_export::{ExportConfig, Listener, ServeStats};

use std::sync::Arc;

use nbd_export::{Exporter, ServeError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why an export ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The export ended, but the LUN's write cache could not be flushed:
    /// writes the clients were told are done may not be on the medium.
    #[error("NBD export ended, but SYNCHRONIZE CACHE of LUN {lun} failed: {source}")]
    Flush {
        lun: u64,
        #[source]
        source: iscsi_initiator::Error,
    },
    #[error("the NBD export task failed: {0}")]
    Task(String),
}

/// A LUN being served: started by [`Export::start`], ended by
/// [`Export::stop`] (or by dropping it, which stops serving without the
/// flush).
pub struct Export {
    exporter: Arc<Exporter<LunDevice>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ServeStats, ExportError>>,
}

impl Export {
    /// Serves `device` on `listener` in a task of its own.
    pub fn start(device: Arc<LunDevice>, config: ExportConfig, listener: Listener) -> Export {
        let read_only = config.read_only || device.is_read_only();
        let exporter = Arc::new(Exporter::new(device.clone(), config));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = exporter.clone();
        let task = tokio::spawn(async move {
            let served = serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
            // What the clients wrote is on the medium before the caller
            // logs out (or before the next export of the LUN starts).
            if !read_only {
                device.synchronize().await.map_err(|source| ExportError::Flush { lun: device.lun(), source })?;
            }
            Ok(served?)
        });
        Export { exporter, stop: Some(stop), task }
    }

    /// NBD clients connected now.
    pub fn clients(&self) -> usize {
        self.exporter.clients()
    }

    /// Whether the export ended by itself (its listener failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops accepting clients, lets requests in flight finish, closes the
    /// clients and flushes the LUN.
    pub async fn stop(mut self) -> Result<ServeStats, ExportError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.map_err(|e| ExportError::Task(e.to_string()))?
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}
