//! A generic NBD server on tokio: exports any [`BlockDevice`] over a Unix or TCP socket to the real
//! NBD clients (`nbd-client`, `qemu-img`, `nbdcopy`, `nbdinfo`, ...).
//!
//! The protocol itself (handshake state machine, request validation, reply encoding) is the sans-IO
//! `nbd-proto` crate; this crate only moves bytes, runs requests on the device concurrently and
//! handles connection lifetimes. We write our own because there is no solid maintained Rust crate for
//! the NBD server side (the `nbd` crate is synchronous and dated, `tokio-nbd` is young).
//!
//! ```no_run
//! # async fn demo<D: nbd_export::BlockDevice>(device: std::sync::Arc<D>) -> Result<(), nbd_export::ServeError> {
//! use nbd_export::{ExportConfig, Exporter, Listener, bind_unix_guarded};
//! let (listener, _socket) = bind_unix_guarded("/run/lun0.sock")?; // the guard removes the socket
//! let exporter = Exporter::new(device, ExportConfig { name: "lun0".into(), ..ExportConfig::default() });
//! let stats = exporter.serve(Listener::Unix(listener), async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("served {} clients, {} requests", stats.clients_served, stats.requests);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod connection;
pub mod device;
pub mod exporter;
mod pool;
pub mod unix;

pub use device::{BlockDevice, BlockSizes, DeviceError, Features};
pub use exporter::{ExportConfig, Exporter, Listener, ServeError, ServeStats};
pub use nbd_proto::Errno;
pub use unix::{UnixSocketGuard, bind_unix, bind_unix_guarded, remove_unix_socket};
