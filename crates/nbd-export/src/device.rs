//! What an export is backed by: anything that can read and write byte ranges asynchronously.

use std::future::Future;

use bytes::Bytes;
use nbd_proto::Errno;

/// Block size constraints the device wants clients to honour (proto.md "Block size constraints"):
/// `min` a power of two up to 64 KiB, `preferred` a power of two at least `max(min, 512)`, `max` a
/// multiple of `min` (or `u32::MAX`). The server caps `max` at 32 MiB, the largest write payload it
/// will buffer.
pub use nbd_proto::BlockSizes;

/// Optional operations the device supports; each becomes a transmission flag (proto.md
/// "Transmission flags"). A read-only device gets no write-side flags (FUA, trim, zeroes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Writes, trims and write-zeroes are refused with `NBD_EPERM`.
    pub read_only: bool,
    /// [`BlockDevice::flush`] makes completed writes durable (`NBD_FLAG_SEND_FLUSH`).
    pub flush: bool,
    /// [`BlockDevice::write`] honours its `fua` argument (`NBD_FLAG_SEND_FUA`).
    pub fua: bool,
    /// [`BlockDevice::trim`] is meaningful (`NBD_FLAG_SEND_TRIM`).
    pub trim: bool,
    /// [`BlockDevice::write_zeroes`] is available (`NBD_FLAG_SEND_WRITE_ZEROES`).
    pub write_zeroes: bool,
    /// Flush and FUA on one connection cover writes made on every other (`NBD_FLAG_CAN_MULTI_CONN`),
    /// so clients may open several connections.
    pub multi_conn: bool,
}

/// A failed device operation: the client gets `errno`; with structured replies it also sees `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeviceError {
    pub errno: Errno,
    pub message: String,
}

impl DeviceError {
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        Self { errno, message: message.into() }
    }

    /// The common case: an I/O error with an explanation.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Errno::Eio, message)
    }
}

/// A device the server exports. Requests reach it already validated: aligned to `block_sizes().min`,
/// inside `size()`, no longer than the advertised maximum (trim excepted), and only for operations
/// [`Features`] advertises. Calls for one client run concurrently (up to
/// [`crate::ExportConfig::max_in_flight`]); a future may be dropped unfinished when the server shuts
/// down after its grace period.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes, read once per client at its handshake.
    fn size(&self) -> u64;
    /// Read once per client at its handshake.
    fn block_sizes(&self) -> BlockSizes;
    /// Read once per client at its handshake.
    fn features(&self) -> Features;
    /// Exactly `len` bytes at `offset`; a shorter or longer buffer is answered as `NBD_EIO`.
    fn read(&self, offset: u64, len: u32) -> impl Future<Output = Result<Bytes, DeviceError>> + Send;
    /// `fua`: the data must be durable before this returns.
    fn write(&self, offset: u64, data: Bytes, fua: bool) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// Makes every completed write durable. The server issues it only once the client's earlier
    /// writes have completed.
    fn flush(&self) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// A hint that the range is no longer needed.
    fn trim(&self, offset: u64, len: u32) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// Zeroes the range. `may_trim`: the client did not set NO_HOLE, so a hole that reads back as
    /// zeroes is acceptable.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        may_trim: bool,
    ) -> impl Future<Output = Result<(), DeviceError>> + Send;

    /// The data of a read once its reply is written, for the device to
    /// reuse its buffer (large buffers allocated afresh for every read cost
    /// page faults); the default drops it.
    fn recycle(&self, data: Bytes) {
        drop(data);
    }
}
