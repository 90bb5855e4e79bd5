//! One client: the handshake driven over the socket, then the transmission phase as a reader (this
//! task), one task per request on the device, and one writer task sending replies in completion order.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes};
use nbd_proto::handshake::HandshakeLimits;
use nbd_proto::reply::{error_chunk, none_chunk, offset_data_header, simple_reply};
use nbd_proto::{
    Command, CommandKind, Errno, ExportError, HandshakeError, MAX_WRITE_PAYLOAD, Negotiated, Progress,
    REQUEST_HEADER_LEN, Request, RequestError, ServerHandshake, TransmissionFlags,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::device::BlockDevice;
use crate::exporter::Shared;
use crate::pool::PayloadPool;

/// How a client's session ended without a fault of ours or theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientEnd {
    /// `NBD_CMD_DISC`, or the client closed the socket between requests.
    Disconnected,
    /// `NBD_OPT_ABORT` during the handshake.
    Aborted,
    /// The server is shutting down.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error("client closed the connection during the handshake")]
    ClosedInHandshake,
    #[error("export description: {0}")]
    Export(#[from] ExportError),
    #[error("malformed request: {0}")]
    Request(#[from] RequestError),
    #[error("client closed the connection in the middle of a request")]
    TruncatedRequest,
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

pub(crate) async fn serve_client<D, R, W>(
    shared: Arc<Shared<D>>,
    id: u64,
    mut reader: R,
    mut writer: W,
    mut stop: watch::Receiver<bool>,
) -> Result<ClientEnd, ClientError>
where
    D: BlockDevice,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // A client gets `handshake_timeout` to finish the whole handshake, so one trickling bytes cannot
    // hold a client slot for long.
    let limit = shared.handshake_timeout;
    let negotiated = tokio::select! {
        r = tokio::time::timeout(limit, handshake(&shared, &mut reader, &mut writer)) => {
            match r.map_err(|_| ClientError::HandshakeTimeout(limit))?? {
                Some(n) => n,
                None => return Ok(ClientEnd::Aborted),
            }
        }
        () = stopped(&mut stop) => return Ok(ClientEnd::Shutdown),
    };
    tracing::debug!(
        client = id,
        structured = negotiated.params.structured_replies,
        entered_by = ?negotiated.entered_by,
        "NBD handshake done"
    );
    transmission(shared, id, negotiated, reader, writer, stop).await
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender also means the server is gone.
    let _ = stop.wait_for(|&s| s).await;
}

/// Drives the sans-IO handshake; `None` when the client aborted. The caller bounds its duration.
async fn handshake<D: BlockDevice, R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    shared: &Shared<D>,
    reader: &mut R,
    writer: &mut W,
) -> Result<Option<Negotiated>, ClientError> {
    let mut hs = ServerHandshake::new(shared.export_info(), HandshakeLimits::default())?;
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(out) = hs.poll_transmit() {
            writer.write_all(&out).await?;
        }
        let n = reader.read(&mut buf).await?;
        let input = buf.get(..n).unwrap_or_default();
        if input.is_empty() {
            return Err(ClientError::ClosedInHandshake);
        }
        let progress = hs.receive(input);
        // Whatever the outcome, queued replies go out first (an ACK to ABORT, the final export info).
        while let Some(out) = hs.poll_transmit() {
            writer.write_all(&out).await?;
        }
        match progress? {
            Progress::NeedInput => {}
            Progress::Aborted => return Ok(None),
            Progress::Ready(n) => return Ok(Some(n)),
        }
    }
}

/// The result of one request, as the writer turns it into a simple or structured reply.
enum Outcome {
    Done,
    Data { offset: u64, data: Bytes },
    Failed { errno: Errno, message: Cow<'static, str> },
}

struct Reply {
    cookie: u64,
    outcome: Outcome,
    /// The request's share of [`BYTES_IN_FLIGHT`], returned once the reply is written.
    _reserved: OwnedSemaphorePermit,
}

/// Why the reader stopped reading requests.
enum ReaderEnd {
    Disconnect,
    Eof,
    Shutdown,
    WriterGone,
    Fault(ClientError),
}

/// Memory one client's reads and writes may hold at once (payloads being received, data waiting to
/// be sent). Twice the largest request, so any single valid request fits.
const BYTES_IN_FLIGHT: u32 = 2 * MAX_WRITE_PAYLOAD;

/// The reader's buffer: room for many request headers (28 bytes each) per `read`, yet small, since
/// whatever part of a write's payload it takes in is copied once more on its way to the payload
/// buffer (the rest is read straight into it).
const REQUEST_BUFFER: usize = 4 * 1024;

async fn transmission<D, R, W>(
    shared: Arc<Shared<D>>,
    id: u64,
    negotiated: Negotiated,
    reader: R,
    writer: W,
    mut stop: watch::Receiver<bool>,
) -> Result<ClientEnd, ClientError>
where
    D: BlockDevice,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let params = negotiated.params;
    let max_in_flight = shared.config.max_in_flight;
    let mut reader =
        BufReader::with_capacity(REQUEST_BUFFER, AsyncReadExt::chain(io::Cursor::new(negotiated.leftover), reader));
    let (reply_tx, reply_rx) = mpsc::channel::<Reply>(max_in_flight);
    let device = Arc::clone(&shared.device);
    let mut writer_task = tokio::spawn(write_replies(writer, reply_rx, params.structured_replies, device));
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    let mut barrier = WriteBarrier::new();

    let budget = Arc::new(Semaphore::new(BYTES_IN_FLIGHT as usize));

    let end = loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break ReaderEnd::WriterGone,
            },
            () = stopped(&mut stop) => break ReaderEnd::Shutdown,
            () = reply_tx.closed() => break ReaderEnd::WriterGone,
        };
        let header = tokio::select! {
            r = read_header(&mut reader) => r,
            () = stopped(&mut stop) => break ReaderEnd::Shutdown,
            () = reply_tx.closed() => break ReaderEnd::WriterGone,
        };
        let req = match header {
            Ok(Some(req)) => req,
            Ok(None) => break ReaderEnd::Eof,
            Err(e) => break ReaderEnd::Fault(e),
        };
        let payload_len = match req.payload_len(MAX_WRITE_PAYLOAD) {
            Ok(n) => n,
            Err(e) => break ReaderEnd::Fault(e.into()),
        };
        let verdict = req.validate(&params);
        // Memory for the data this request carries in or out, reserved before any is read.
        let bytes = match verdict {
            Ok(Command::Read { length, .. } | Command::Write { length, .. }) => length,
            _ => 0,
        };
        let reserved = tokio::select! {
            r = Arc::clone(&budget).acquire_many_owned(bytes) => match r {
                Ok(r) => r,
                Err(_) => break ReaderEnd::WriterGone,
            },
            () = stopped(&mut stop) => break ReaderEnd::Shutdown,
            () = reply_tx.closed() => break ReaderEnd::WriterGone,
        };
        let payload = tokio::select! {
            r = read_payload(&mut reader, payload_len, verdict.is_ok(), &shared.payloads) => r,
            () = stopped(&mut stop) => break ReaderEnd::Shutdown,
            () = reply_tx.closed() => break ReaderEnd::WriterGone,
        };
        let payload = match payload {
            Ok(p) => p,
            Err(e) => break ReaderEnd::Fault(e),
        };
        let command = match verdict {
            Ok(Command::Disconnect) => break ReaderEnd::Disconnect,
            Ok(c) => c,
            Err(rejection) => {
                shared.counters.requests.fetch_add(1, Ordering::Relaxed);
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = id, command = req.kind.name(), errno = %rejection.errno, reason = rejection.reason, "NBD request refused");
                let outcome = Outcome::Failed { errno: rejection.errno, message: Cow::Borrowed(rejection.reason) };
                if reply_tx.send(Reply { cookie: req.cookie, outcome, _reserved: reserved }).await.is_err() {
                    break ReaderEnd::WriterGone;
                }
                continue;
            }
        };
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        let sequencing = match command {
            Command::Flush => Sequencing::AfterWrites(barrier.flush_point()),
            Command::Write { .. } | Command::Trim { .. } | Command::WriteZeroes { .. } => {
                Sequencing::IsWrite(barrier.write_token())
            }
            _ => Sequencing::Free,
        };
        let job = Job {
            shared: Arc::clone(&shared),
            id,
            cookie: req.cookie,
            kind: req.kind,
            command,
            payload,
            sequencing,
            reserved,
            flush_for_fua: params.flags.contains(TransmissionFlags::SEND_FLUSH),
        };
        tasks.spawn(job.run(reply_tx.clone(), permit));
    };
    drop(barrier);

    let grace = shared.shutdown_grace;
    let end = match end {
        ReaderEnd::Disconnect => Ok(ClientEnd::Disconnected),
        ReaderEnd::Eof => Ok(ClientEnd::Disconnected),
        ReaderEnd::Shutdown => Ok(ClientEnd::Shutdown),
        ReaderEnd::WriterGone => Ok(ClientEnd::Disconnected),
        ReaderEnd::Fault(e) => Err(e),
    };
    // proto.md `NBD_CMD_DISC` and "Terminating the transmission phase": requests in flight are
    // finished and answered before the connection closes, within the grace period.
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(client = id, left = tasks.len(), "NBD requests still running after {grace:?}; dropping them");
        tasks.shutdown().await;
    }
    drop(reply_tx);
    match tokio::time::timeout(grace, &mut writer_task).await {
        Ok(Ok(Err(e))) if end.is_ok() => tracing::debug!(client = id, error = %e, "writing NBD replies failed"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(client = id, "NBD client not reading its replies; closing");
            writer_task.abort();
        }
    }
    end
}

/// Reads one request header; `None` on a clean end of stream between requests.
async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Request>, ClientError> {
    let mut header = [0u8; REQUEST_HEADER_LEN];
    let first = reader.read(&mut header).await?;
    if first == 0 {
        return Ok(None);
    }
    if let Some(rest) = header.get_mut(first..) {
        reader.read_exact(rest).await.map_err(truncated)?;
    }
    Ok(Some(Request::decode(&header)?))
}

/// Reads a write's payload (already bounded by [`Request::payload_len`]), or skips it when the request
/// is refused anyway, to stay in step with the client.
/// A kept payload goes into a buffer of `pool`, read straight into its spare capacity (no zeroing
/// first; the reader's buffer is bypassed for reads larger than it).
async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: u32,
    keep: bool,
    pool: &PayloadPool,
) -> Result<Bytes, ClientError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if keep {
        let want = usize::try_from(len).unwrap_or(0);
        let mut data = pool.take(want);
        let mut rest = reader.take(u64::from(len));
        while data.len() < want {
            if rest.read_buf(&mut data).await? == 0 {
                return Err(ClientError::TruncatedRequest);
            }
        }
        return Ok(data.freeze());
    }
    let skipped = tokio::io::copy(&mut reader.take(u64::from(len)), &mut tokio::io::sink()).await?;
    if skipped != u64::from(len) {
        return Err(ClientError::TruncatedRequest);
    }
    Ok(Bytes::new())
}

fn truncated(e: io::Error) -> ClientError {
    if e.kind() == io::ErrorKind::UnexpectedEof { ClientError::TruncatedRequest } else { ClientError::Io(e) }
}

/// proto.md "Ordering of messages and writes": a flush must cover the writes completed before it. We
/// go further and make a flush wait for every write-type request of this client that arrived before
/// it. Each such request holds a sender of the current epoch; a flush closes the epoch and waits until
/// all of its senders are gone. Later writes run freely in the next epoch.
struct WriteBarrier {
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

impl WriteBarrier {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self { tx, rx }
    }

    fn write_token(&self) -> mpsc::Sender<()> {
        self.tx.clone()
    }

    fn flush_point(&mut self) -> mpsc::Receiver<()> {
        let next = Self::new();
        let old = std::mem::replace(self, next);
        // Dropping the old sender here leaves only the writes' tokens keeping the epoch open.
        old.rx
    }
}

enum Sequencing {
    Free,
    IsWrite(mpsc::Sender<()>),
    AfterWrites(mpsc::Receiver<()>),
}

struct Job<D> {
    shared: Arc<Shared<D>>,
    id: u64,
    cookie: u64,
    kind: CommandKind,
    command: Command,
    payload: Bytes,
    sequencing: Sequencing,
    reserved: OwnedSemaphorePermit,
    flush_for_fua: bool,
}

impl<D: BlockDevice> Job<D> {
    async fn run(self, replies: mpsc::Sender<Reply>, permit: OwnedSemaphorePermit) {
        let Job { shared, id, cookie, kind, command, payload, sequencing, reserved, flush_for_fua } = self;
        let write_token = match sequencing {
            Sequencing::AfterWrites(mut earlier) => {
                // Returns `None` once every earlier write has finished and dropped its token.
                let _ = earlier.recv().await;
                None
            }
            Sequencing::IsWrite(token) => Some(token),
            Sequencing::Free => None,
        };
        let device = &*shared.device;
        let outcome = match command {
            Command::Read { offset, length: 0 } => Ok(Outcome::Data { offset, data: Bytes::new() }),
            Command::Read { offset, length } => match device.read(offset, length).await {
                Ok(data) if data.len() == length as usize => Ok(Outcome::Data { offset, data }),
                Ok(data) => Err(crate::DeviceError::io(format!(
                    "device returned {} bytes for a read of {length} at {offset}",
                    data.len()
                ))),
                Err(e) => Err(e),
            },
            Command::Write { length: 0, .. }
            | Command::Trim { length: 0, .. }
            | Command::WriteZeroes { length: 0, .. }
            | Command::Disconnect => Ok(Outcome::Done),
            Command::Write { offset, fua, .. } => {
                let r = device.write(offset, payload.clone(), fua).await.map(|()| Outcome::Done);
                // The device is done with the data: its buffer serves a later write.
                shared.payloads.give(payload);
                r
            }
            Command::Flush => device.flush().await.map(|()| Outcome::Done),
            Command::Trim { offset, length, fua } => {
                fua_flush(device, device.trim(offset, length).await, fua && flush_for_fua).await
            }
            Command::WriteZeroes { offset, length, fua, may_trim } => {
                fua_flush(device, device.write_zeroes(offset, length, may_trim).await, fua && flush_for_fua).await
            }
        };
        // Released before the reply is queued: a flush sent after this reply finds the write finished.
        drop(write_token);
        let outcome = outcome.unwrap_or_else(|e| {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = id, command = kind.name(), errno = %e.errno, error = %e.message, "NBD request failed on the device");
            Outcome::Failed { errno: e.errno, message: Cow::Owned(e.message) }
        });
        let _ = replies.send(Reply { cookie, outcome, _reserved: reserved }).await;
        drop(permit);
    }
}

/// The device API has no FUA for trim and write-zeroes; a flush after them gives the same guarantee.
async fn fua_flush<D: BlockDevice>(
    device: &D,
    result: Result<(), crate::DeviceError>,
    fua: bool,
) -> Result<Outcome, crate::DeviceError> {
    result?;
    if fua {
        device.flush().await?;
    }
    Ok(Outcome::Done)
}

/// Sends replies in completion order; simple replies, or structured ones when negotiated (proto.md:
/// reads then MUST use a structured reply; other successes may stay simple).
async fn write_replies<W: AsyncWrite + Unpin, D: BlockDevice>(
    mut writer: W,
    mut replies: mpsc::Receiver<Reply>,
    structured: bool,
    device: Arc<D>,
) -> io::Result<()> {
    while let Some(Reply { cookie, outcome, _reserved }) = replies.recv().await {
        match outcome {
            Outcome::Done => writer.write_all(&simple_reply(cookie, None)).await?,
            Outcome::Data { offset, data } if structured => {
                if data.is_empty() {
                    writer.write_all(&none_chunk(cookie)).await?;
                } else {
                    let header = offset_data_header(cookie, offset, data.len(), true)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    // A view is sent (and used up); the data goes back whole.
                    writer.write_all_buf(&mut Buf::chain(&header[..], data.clone())).await?;
                    device.recycle(data);
                }
            }
            Outcome::Data { data, .. } => {
                let header = simple_reply(cookie, None);
                writer.write_all_buf(&mut Buf::chain(&header[..], data.clone())).await?;
                device.recycle(data);
            }
            Outcome::Failed { errno, message } if structured => {
                writer.write_all(&error_chunk(cookie, errno, &message, true)).await?;
            }
            Outcome::Failed { errno, .. } => writer.write_all(&simple_reply(cookie, Some(errno))).await?,
        }
    }
    writer.flush().await?;
    writer.shutdown().await
}
