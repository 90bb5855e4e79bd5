//! The two tasks of each connection: a reader (framing, dispatch,
//! keepalive) and a writer (batched, vectored writes of header, data and
//! trailer, so that one syscall carries many PDUs).

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use iscsi_proto::digest::{crc32c, crc32c_append};
use iscsi_proto::pdu::{
    BHS_LEN, Bhs, FrameHeader, NopOut, PduDecoder, PduError, RESERVED_TAG, peek_lengths, task_attr,
};
use iscsi_proto::scsi::cdb::Cdb;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::debug;

use super::fault::{ConnectionFault, FaultKind};
use super::health::{Step, Watch};
use super::rx::{ANSWERS_AT_LEAST, ANSWERS_BACKOFF, ANSWERS_WAIT, RxSocket, answers_mark, owed_mark};
use super::state::{Out, Reply, ScsiTask, Task, TaskKind, conn_mut, push};
use super::{Inner, ScsiOutcome, Session};
use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::ipsec::{IpsecPlan, Protection};
use crate::model::UniqueConnectionId;
use crate::portal::PortalAddr;
use crate::wire::READ_CHUNK;

/// Connects to `addr`, from `local` when given (the address of the
/// initiator port the caller chose).
pub(super) async fn connect_from(addr: &PortalAddr, cfg: &SessionConfig, local: Option<IpAddr>) -> Result<TcpStream> {
    let s = addr.socket_string();
    let lookup = tokio::time::timeout(cfg.connect_timeout, tokio::net::lookup_host(s.clone())).await;
    let resolved = match lookup {
        Err(_) => return Err(Error::ConnectTimeout(s)),
        Ok(Err(e)) => return Err(Error::Resolve { addr: addr.host.clone(), source: e }),
        Ok(Ok(a)) => a.collect::<Vec<SocketAddr>>(),
    };
    let attempt = async {
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address");
        for remote in resolved {
            let st = match local {
                None => TcpStream::connect(remote).await,
                Some(local) if remote.is_ipv4() == local.is_ipv4() => {
                    let sock = if remote.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                    sock.bind(SocketAddr::new(local, 0))?;
                    sock.connect(remote).await
                }
                Some(_) => continue,
            };
            match st {
                Ok(st) => return Ok(st),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let stream = match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Err(_) => return Err(Error::ConnectTimeout(s)),
        Ok(Err(e)) => return Err(Error::Connect { addr: s, source: e }),
        Ok(Ok(st)) => st,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to `addr` as [`connect_from`] does, after putting IPsec in
/// place when `plan` asks for it (RFC 7143 §9.3, RFC 3723): the portal's
/// name is resolved once, the security association for that address is
/// brought up under connection `id`'s name, and only then is the TCP
/// connection made, to that same address. A failure removes what was put
/// in place; nothing is ever sent in clear text instead.
pub(super) async fn connect_protected(
    addr: &PortalAddr,
    cfg: &SessionConfig,
    local: Option<IpAddr>,
    plan: Option<&IpsecPlan>,
    id: UniqueConnectionId,
) -> Result<(TcpStream, Option<Arc<Protection>>)> {
    let Some(plan) = plan else { return Ok((connect_from(addr, cfg, local).await?, None)) };
    let remote = resolve_one(addr, cfg, local).await?;
    let protection = Protection::establish(plan, id, remote, local).await?;
    match connect_from(&pinned(remote), cfg, local).await {
        Ok(stream) => Ok((stream, Some(Arc::new(protection)))),
        Err(e) => {
            protection.release().await;
            Err(e)
        }
    }
}

/// Connects again (recovery) the way a connection first did: through its
/// IPsec protection, brought back first if its SA went away, from the same
/// local address (the initiator port).
pub(super) async fn connect_again(
    addr: &PortalAddr,
    cfg: &SessionConfig,
    local: Option<IpAddr>,
    protection: Option<&Arc<Protection>>,
) -> Result<TcpStream> {
    match protection {
        None => connect_from(addr, cfg, local).await,
        Some(p) => {
            p.ensure().await?;
            connect_from(&pinned(p.request().remote), cfg, local).await
        }
    }
}

fn pinned(remote: SocketAddr) -> PortalAddr {
    PortalAddr { host: remote.ip().to_string(), port: remote.port() }
}

/// The first address of `addr` of the local address's family.
async fn resolve_one(addr: &PortalAddr, cfg: &SessionConfig, local: Option<IpAddr>) -> Result<SocketAddr> {
    let s = addr.socket_string();
    let found = match tokio::time::timeout(cfg.connect_timeout, tokio::net::lookup_host(s.clone())).await {
        Err(_) => return Err(Error::ConnectTimeout(s)),
        Ok(Err(e)) => return Err(Error::Resolve { addr: addr.host.clone(), source: e }),
        Ok(Ok(a)) => a.into_iter().find(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4())),
    };
    found.ok_or_else(|| Error::Resolve {
        addr: addr.host.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address of the initiator port's family"),
    })
}

/// Keepalive probes (one a second) a link has to answer before it is
/// taken for dead, and as long again for data left unacknowledged: the
/// kernel answers both whatever the target process is doing, so only a
/// broken path misses two in a row, and every second of waiting is a
/// second in which the session's other links move nothing (the target
/// runs no command past the CmdSNs lost with the link). Not shorter:
/// `TCP_USER_TIMEOUT` also ends a connection whose target advertises a
/// zero window that long (stops reading for a while). With the stall time
/// alone, 2 s, a plain write to istgt over four links failed once in CI;
/// the reader's lost wake-up found later (`rx`) may have caused that
/// instead, and 2 s has not been tried again since.
pub(super) const LINK_PROBES: u32 = 2;

/// Lets the kernel notice a dead link (RFC 7143 leaves liveness to the
/// initiator, §11.18): TCP keepalive probes after `stall_time` of
/// silence, [`LINK_PROBES`] of them a second apart, and `TCP_USER_TIMEOUT`
/// for data left unacknowledged as long. A link that went down (packets
/// vanish, no RST) then ends the connection with ETIMEDOUT about
/// `stall_time` + 2 s after its last PDU, while a connection that is only
/// waiting (its target holds its commands behind a CmdSN gap) keeps
/// answering at the TCP level and is never pinged at the iSCSI level,
/// where an immediate NOP-Out would have to guess the target's ExpCmdSN
/// (istgt drops a connection whose guess is wrong).
pub(super) fn watch_link(stream: &TcpStream, stall_time: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = |d: Duration| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX);
    let probes = Duration::from_secs(u64::from(LINK_PROBES));
    let ms = u32::try_from((stall_time + probes).as_millis()).unwrap_or(u32::MAX);
    let set = setsockopt(stream, sockopt::KeepAlive, &true)
        .and_then(|()| setsockopt(stream, sockopt::TcpKeepIdle, &secs(stall_time)))
        .and_then(|()| setsockopt(stream, sockopt::TcpKeepInterval, &1))
        .and_then(|()| setsockopt(stream, sockopt::TcpKeepCount, &LINK_PROBES))
        .and_then(|()| setsockopt(stream, sockopt::TcpUserTimeout, &ms));
    if let Err(e) = set {
        debug!("TCP keepalive settings not applied: {e}");
    }
}

/// The reason a reader gives when the target closed the connection cleanly.
pub(super) const CLOSED_BY_TARGET: &str = "the target closed the connection";

fn closed() -> ConnectionFault {
    ConnectionFault::new(FaultKind::Closed, CLOSED_BY_TARGET)
}

fn malformed(e: impl std::fmt::Display) -> ConnectionFault {
    ConnectionFault::new(FaultKind::Malformed, format!("malformed PDU from the target: {e}"))
}

fn read_error(e: std::io::Error) -> ConnectionFault {
    // ETIMEDOUT: the kernel's keepalive or user timeout (`watch_link`) saw
    // the link go silent; EHOSTUNREACH, ENETUNREACH: it did so while the
    // route to the target was gone (the link down at our end).
    use std::io::ErrorKind::{HostUnreachable, NetworkUnreachable, TimedOut};
    if matches!(e.kind(), TimedOut | HostUnreachable | NetworkUnreachable) {
        return ConnectionFault::new(FaultKind::Silent, format!("the link to the target stopped answering: {e}"));
    }
    ConnectionFault::new(FaultKind::Transport, format!("read error: {e}"))
}

/// Reads, frames and dispatches PDUs; pings the target when it is quiet
/// and declares the connection dead when a ping goes unanswered. Holds the
/// session weakly so that dropping the last handle ends it.
pub(super) async fn reader(
    weak: Weak<Inner>,
    cid: u16,
    rd: OwnedReadHalf,
    mut dec: PduDecoder,
    mut buf: BytesMut,
    failed: WriteFailure,
) {
    let mut rd = RxSocket::new(rd);
    let Some(watch) = weak.upgrade().map(|i| Watch {
        stall_time: i.cfg.stall_time,
        nop_interval: i.cfg.nop_interval,
        nop_timeout: i.cfg.nop_timeout,
    }) else {
        return;
    };
    // Mid-segment the target is sending: silence there is a stall at once.
    let segment_idle = watch.stall_time + watch.nop_timeout;
    // When the last whole PDU came: a silent target went silent then.
    let mut last_pdu = Instant::now();
    let reason = async {
        // One timer for the connection's life, moved only when it fires: a
        // PDU just notes the time (re-arming a timer per PDU costs a timer
        // wheel insert and removal per command).
        let timer = tokio::time::sleep_until(last_pdu + watch.stall_time.min(watch.nop_interval));
        tokio::pin!(timer);
        // When our ping went out, until a PDU answers it.
        let mut pinged: Option<Instant> = None;
        // After a placed segment another one usually follows: read just its
        // header then, so that its data is not pulled into `buf` and copied.
        let mut header_next = false;
        let header_len = BHS_LEN + if dec.config.header_digest { 4 } else { 0 };
        // Until when answers are read as they come, after a wait for several
        // ran out (see `rx::ANSWERS_BACKOFF`).
        let mut answers_off: Option<Instant> = None;
        loop {
            loop {
                if let Some(h) = large_data_in(&dec, &buf) {
                    let h = match h {
                        Ok(h) => h,
                        Err(e) => return malformed(e),
                    };
                    if let Err(reason) = place_data_in(&weak, cid, &mut rd, &mut buf, h, segment_idle).await {
                        return reason;
                    }
                    last_pdu = Instant::now();
                    pinged = None;
                    header_next = true;
                    continue;
                }
                match dec.decode(&mut buf) {
                    Ok(Some(pdu)) => {
                        // Liveness is a whole PDU, not a byte: a target that
                        // trickles bytes is as dead as a silent one.
                        last_pdu = Instant::now();
                        pinged = None;
                        let Some(inner) = weak.upgrade() else { return closed() };
                        if let Err(e) = inner.handle_pdu(cid, pdu) {
                            return ConnectionFault::from_error(&e);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return malformed(e),
                }
            }
            // Large Data-In segments bypass this buffer (`place_data_in`), so
            // it stays small and, once the PDUs decoded from it are dropped,
            // `reserve` reclaims it in place instead of allocating anew.
            if buf.capacity() - buf.len() < READ_CHUNK {
                buf.reserve(READ_CHUNK);
            }
            let want = if header_next { header_len.saturating_sub(buf.len()).max(1) } else { usize::MAX };
            // A busy connection waits for several answers (see `rx`).
            if answers_off.is_some_and(|until| Instant::now() >= until) {
                answers_off = None;
            }
            let mark = match (header_next, answers_off) {
                (false, None) => {
                    let Some(inner) = weak.upgrade() else { return closed() };
                    let mut st = inner.lock();
                    let mark = st.owed_answers(cid, ANSWERS_AT_LEAST).map_or(1, |o| answers_mark(o, buf.len()));
                    if mark > 1
                        && let Some(c) = conn_mut(&mut st.conns, cid)
                    {
                        c.counters.answer_waits += 1;
                    }
                    mark
                }
                _ => 1,
            };
            header_next = false;
            let mut limited = (&mut buf).limit(want);
            let bounded = async {
                if mark > 1 {
                    tokio::time::sleep(ANSWERS_WAIT).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                r = rd.read(&mut limited, mark) => match r {
                    Ok(0) => return link_failure(&failed).unwrap_or_else(closed),
                    Ok(_) => {}
                    Err(e) => return link_failure(&failed).unwrap_or_else(|| read_error(e)),
                },
                () = bounded => {
                    debug!(cid, mark, "expected answers did not come in time; reading them as they come for a while");
                    answers_off = Some(Instant::now() + ANSWERS_BACKOFF);
                    let Some(inner) = weak.upgrade() else { return closed() };
                    if let Some(c) = conn_mut(&mut inner.lock().conns, cid) {
                        c.counters.answer_waits_ran_out += 1;
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    let Some(inner) = weak.upgrade() else { return closed() };
                    let oldest = inner.lock().oldest_outstanding(cid).map(Instant::from_std);
                    match watch.step(now.into_std(), last_pdu.into_std(), oldest.map(Instant::into_std), pinged.map(Instant::into_std)) {
                        Step::Sleep(at) => timer.as_mut().reset(Instant::from_std(at)),
                        Step::Dead => {
                            let what = format!("no answer to NOP-Out within {} s", watch.nop_timeout.as_secs());
                            return ConnectionFault::new(FaultKind::Silent, what);
                        }
                        Step::Ping { stalled } => {
                            let sent = if stalled { send_stall_ping(&inner, cid) } else { send_ping(&inner, cid) };
                            if sent {
                                pinged = Some(now);
                                timer.as_mut().reset(now + watch.nop_timeout);
                            } else {
                                // Looked at again; a dead link ends the read with
                                // ETIMEDOUT meanwhile (`watch_link`).
                                timer.as_mut().reset(now + watch.stall_time.min(watch.nop_interval));
                            }
                        }
                    }
                }
            }
        }
    }
    .await;
    if let Some(inner) = weak.upgrade() {
        let began = if reason.kind == FaultKind::Silent { last_pdu.into_std() } else { std::time::Instant::now() };
        inner.connection_failed(cid, reason, began);
    }
}

/// Data-In segments at least this long whose bytes are not all received
/// yet are read straight into the command's buffer.
pub(super) const DIRECT_MIN: usize = 16 * 1024;

/// The header of the next PDU when it is a Data-In whose large data segment
/// is still mostly to come (cheap opcode and length peek first, so other
/// PDUs are decoded once).
fn large_data_in(dec: &PduDecoder, buf: &BytesMut) -> Option<std::result::Result<FrameHeader, PduError>> {
    // RFC 7143 §11.7: opcode 0x25 is SCSI Data-In.
    let op = buf.first()? & 0x3f;
    let (_, data_len) = peek_lengths(buf)?;
    if op != 0x25 || (data_len as usize) < DIRECT_MIN || buf.len() >= BHS_LEN + data_len as usize {
        return None;
    }
    match dec.decode_header(buf) {
        Ok(Some(h)) if matches!(h.bhs, Bhs::DataIn(_)) && buf.len() + DIRECT_MIN <= h.total_len() => Some(Ok(h)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Reads one Data-In data segment from the socket into the command's own
/// buffer (lent by `begin_data_in`): the bytes are copied once, by the
/// kernel, instead of into the receive buffer and then again into place.
/// Returns the fault to drop the connection for on failure.
async fn place_data_in(
    weak: &Weak<Inner>,
    cid: u16,
    rd: &mut RxSocket,
    buf: &mut BytesMut,
    h: FrameHeader,
    idle: Duration,
) -> std::result::Result<(), ConnectionFault> {
    let Bhs::DataIn(din) = &h.bhs else { return Ok(()) };
    let mut dest = {
        let Some(inner) = weak.upgrade() else { return Err(closed()) };
        inner.begin_data_in(cid, din, h.data_len).map_err(|e| ConnectionFault::from_error(&e))?
    };
    buf.advance(h.header_len);
    let start = dest.len();
    let have = buf.len().min(h.data_len);
    dest.extend_from_slice(buf.get(..have).unwrap_or_default());
    buf.advance(have);
    let trailer = h.trailer_len();
    while dest.len() - start < h.data_len {
        let want = h.data_len - (dest.len() - start);
        read_some(rd, &mut (&mut dest).limit(want), want + trailer, idle).await?;
    }
    while buf.len() < trailer {
        buf.reserve(READ_CHUNK);
        let owed = trailer - buf.len();
        read_some(rd, buf, owed, idle).await?;
    }
    if h.data_digest_len > 0 {
        let data = dest.get(start..).unwrap_or_default();
        let crc = crc32c_append(crc32c(data), buf.get(..h.pad_len).unwrap_or_default());
        h.check_data_digest(crc, h.trailer_digest(buf.get(..trailer).unwrap_or_default())).map_err(malformed)?;
    }
    buf.advance(trailer);
    let Some(inner) = weak.upgrade() else { return Err(closed()) };
    inner.end_data_in(cid, &h.bhs, dest, h.data_len).map_err(|e| ConnectionFault::from_error(&e))
}

/// One read of at least a byte within `idle`; `owed` as for [`RxSocket::read`].
async fn read_some<B: BufMut>(
    rd: &mut RxSocket,
    b: &mut B,
    owed: usize,
    idle: Duration,
) -> std::result::Result<(), ConnectionFault> {
    match tokio::time::timeout(idle, rd.read(b, owed_mark(owed))).await {
        Err(_) => {
            Err(ConnectionFault::new(FaultKind::Silent, format!("no data from the target within {} s", idle.as_secs())))
        }
        Ok(Ok(0)) => Err(closed()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(read_error(e)),
    }
}

/// Returns whether a ping went out.
fn send_ping(inner: &Inner, cid: u16) -> bool {
    let mut st = inner.lock();
    // An immediate PDU carries the next CmdSN, and istgt drops a connection
    // whose immediate PDU's CmdSN is not exactly its ExpCmdSN. With several
    // connections, commands on the others could overtake the ping, so an
    // idle connection is pinged only while the session is quiet, and new
    // commands wait for the answer (at most the NOP timeout).
    let mcs = st.conns.len() > 1;
    if mcs && st.tasks.values().any(|t| t.cid.is_some() && matches!(t.kind, TaskKind::Scsi(_))) {
        return false;
    }
    let itt = st.alloc_itt();
    if mcs {
        st.ping_hold = Some(itt);
    }
    let cmd_sn = st.window.current();
    st.tasks.insert(itt, Task::new(Some(cid), 0, TaskKind::Ping, None));
    if let Some(c) = conn_mut(&mut st.conns, cid) {
        c.ping_itt = Some(itt);
        let out = NopOut { immediate: true, lun: 0, itt, ttt: RESERVED_TAG, cmd_sn, exp_stat_sn: c.exp_stat_sn };
        push(c, out, Bytes::new());
    }
    true
}

/// Takes a connection that is owed answers but has been silent for the
/// stall time out of the balancer's choice until it hears from the target
/// again (`State::heard`), and pings it (an immediate NOP-Out, RFC 7143
/// §11.18) when it is the session's only connection: its CmdSN is then our
/// next one, which the target expects once it has every command before it
/// (istgt drops a connection whose immediate PDU carries any other). With
/// other connections the target's ExpCmdSN moves with their commands, or
/// stands behind a gap a lost link left: the kernel watches the link
/// instead (`watch_link`). Returns whether a ping went out.
fn send_stall_ping(inner: &Inner, cid: u16) -> bool {
    let mut st = inner.lock();
    let others = st.conns.iter().any(|c| c.cid != cid && !c.draining);
    let in_service = st.conns.iter().filter(|c| !c.draining && !c.stalled).count();
    let Some(c) = conn_mut(&mut st.conns, cid) else { return false };
    if !c.stalled {
        c.stalled = true;
        tracing::warn!(
            cid,
            outstanding = c.outstanding,
            in_service,
            "connection stalled: no PDU from the target within the stall time"
        );
    }
    if others {
        // MC/S: the kernel watches the link (`watch_link`).
        return false;
    }
    let itt = st.alloc_itt();
    // The sole connection: every command before it reached the target.
    let cmd_sn = st.window.current();
    st.tasks.insert(itt, Task::new(Some(cid), 0, TaskKind::Ping, None));
    let Some(c) = conn_mut(&mut st.conns, cid) else { return false };
    c.ping_itt = Some(itt);
    let out = NopOut { immediate: true, lun: 0, itt, ttt: RESERVED_TAG, cmd_sn, exp_stat_sn: c.exp_stat_sn };
    push(c, out, Bytes::new());
    true
}

/// The sending side of one connection, shared by its writer task and by
/// the submitters. A submitter that finds nothing queued writes its PDU
/// itself (one non-blocking `writev` under the session lock, which orders
/// the PDUs of a connection); only when the socket is full or PDUs are
/// already queued does the writer task take over. That saves the hop to
/// the writer, two task wake-ups per command, at iodepth 1, and keeps
/// the batching when busy.
///
/// While the target already has [`HOLD_AT`] or more of this connection's
/// commands, a new SCSI Command is held back until [`HOLD_BATCH`] are
/// ready, the scheduler pass in which the first of them was held ends
/// (the writer sends them then), fewer than [`HOLD_AT`] remain at the
/// target (`State::take_task` flushes), or any other PDU is sent (it goes
/// out behind them); the session's sweeper (at most 250 ms) is the last
/// resort. The target, which has work queued, loses nothing, and one
/// `writev`, one TCP segment and one wake-up of the target carry several
/// commands instead of one each (on loopback that send path was about
/// half of the initiator's CPU per 4 KiB command). Whether a connection
/// holds back at all is measured on it (`hold::HoldTuner`): some targets
/// run grouped commands slower (istgt's 4 KiB reads, by a sixth while
/// held commands waited for the next pass; bench/README.md, round 9).
pub(super) struct Link {
    wr: OwnedWriteHalf,
    /// PDUs handed to the writer task and not yet fully written. The
    /// writer lowers it only after their last byte is out, so zero means
    /// that the socket is free for the next PDU in order.
    queued: AtomicUsize,
    /// Commands held back, in order (see above). Touched under the session
    /// lock, and by the writer at the end of a pass without it: this lock
    /// alone keeps them in order, since a submitter writes directly only
    /// when nothing is held.
    held: Mutex<Vec<Out>>,
    /// Wakes the writer when a command is held back into an empty batch,
    /// to send the batch at the end of the current scheduler pass.
    held_since_pass: Notify,
    /// Why the writer stopped, for the reader (see [`WriteFailure`]).
    failed: WriteFailure,
    /// Bytes of PDUs handed to [`Link::send`] so far, in stream order: a
    /// PDU ends at the count taken right after its send.
    pushed: AtomicU64,
    /// The socket's acknowledged bytes when the link was made (the login's),
    /// so that [`Link::acked`] counts from the first PDU sent here.
    acked_at_start: Option<u64>,
}

/// The error the writer met, shared with the reader: a link that goes
/// down at our end fails a send with "no route to host" and the reader
/// then sees only an end of stream, which alone would read as the target
/// closing the connection (and send it to the ordinary recovery instead of
/// the other links).
pub(super) type WriteFailure = Arc<std::sync::OnceLock<std::io::ErrorKind>>;

/// The fault to report for a connection whose writer met `failed`, when
/// that says the link went away (see `read_error`).
fn link_failure(failed: &WriteFailure) -> Option<ConnectionFault> {
    use std::io::ErrorKind::{HostUnreachable, NetworkUnreachable, TimedOut};
    let kind = *failed.get()?;
    matches!(kind, TimedOut | HostUnreachable | NetworkUnreachable).then(|| read_error(kind.into()))
}

/// Commands the target must already have before new ones are held back.
pub(super) const HOLD_AT: usize = 8;
/// Most commands held back at once. 4 rather than 8: the same IOPS on
/// tgt, and more on istgt, which runs commands on several threads
/// (measured in bench/README.md, round 4).
const HOLD_BATCH: usize = 4;

impl Link {
    pub(super) fn new(wr: OwnedWriteHalf) -> Self {
        let acked_at_start = Self::acked_total(&wr);
        Self {
            wr,
            queued: AtomicUsize::new(0),
            held: Mutex::new(Vec::with_capacity(HOLD_BATCH)),
            held_since_pass: Notify::new(),
            failed: WriteFailure::default(),
            pushed: AtomicU64::new(0),
            acked_at_start,
        }
    }

    fn acked_total(wr: &OwnedWriteHalf) -> Option<u64> {
        let stream: &tokio::net::TcpStream = wr.as_ref();
        tcp_info::bytes_acked(stream).unwrap_or_else(|e| {
            debug!("TCP_INFO: {e}");
            None
        })
    }

    /// Where the PDUs sent so far end in the stream (see `pushed`).
    pub(super) fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// How much of what was sent here the target's TCP acknowledged, so
    /// certainly received; still known after the link failed. `None`
    /// where the kernel does not say.
    pub(super) fn acked(&self) -> Option<u64> {
        Some(Self::acked_total(&self.wr)?.saturating_sub(self.acked_at_start?))
    }

    /// Where the writer leaves the error it stopped on.
    pub(super) fn failure(&self) -> WriteFailure {
        self.failed.clone()
    }

    /// The socket's delivery rate (`tcp_info`); `None` where the kernel
    /// reports none.
    pub(super) fn delivery_rate(&self) -> Option<tcp_info::DeliveryRate> {
        let stream: &tokio::net::TcpStream = self.wr.as_ref();
        tcp_info::delivery_rate(stream).unwrap_or_else(|e| {
            debug!("TCP_INFO: {e}");
            None
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Out>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many commands are held back.
    #[cfg(test)]
    pub(super) fn held_len(&self) -> usize {
        self.held().len()
    }

    /// Sends `out` behind anything held back. `busy`, for a SCSI Command
    /// that may wait, is how many of the connection's commands were in
    /// flight before it (held ones included): it is held back too while
    /// the target has at least [`HOLD_AT`] of them, unless the batch is
    /// full. Callers hold the session lock, which serialises them.
    pub(super) fn send(
        &self,
        tx: &mpsc::UnboundedSender<Out>,
        out: Out,
        busy: Option<usize>,
    ) -> std::result::Result<(), ()> {
        self.pushed.fetch_add(out.len() as u64, Ordering::Relaxed);
        let mut held = self.held();
        let hold = busy.is_some_and(|n| n.saturating_sub(held.len()) >= HOLD_AT);
        if held.is_empty() && !hold {
            drop(held);
            return self.send_one(tx, out).map_err(|_| ());
        }
        held.push(out);
        if hold && held.len() < HOLD_BATCH {
            if held.len() == 1 {
                self.held_since_pass.notify_one();
            }
            return Ok(());
        }
        self.send_batch(tx, &mut held)
    }

    /// Sends what is held back once the target has fewer than [`HOLD_AT`]
    /// of the connection's `in_flight` commands (held ones included).
    pub(super) fn flush_if_short(&self, tx: &mpsc::UnboundedSender<Out>, in_flight: usize) {
        self.flush_when(tx, |held| in_flight.saturating_sub(held) < HOLD_AT);
    }

    /// Sends what is held back.
    pub(super) fn flush(&self, tx: &mpsc::UnboundedSender<Out>) {
        self.flush_when(tx, |_| true);
    }

    /// Sends what is held back if `due(how many are held)`.
    fn flush_when(&self, tx: &mpsc::UnboundedSender<Out>, due: impl FnOnce(usize) -> bool) {
        let mut held = self.held();
        if held.is_empty() || !due(held.len()) {
            return;
        }
        if self.send_batch(tx, &mut held).is_err() {
            debug!("held PDUs not sent: the connection's writer is gone");
        }
    }

    /// Writes `out` now if nothing is queued ahead of it; otherwise, or
    /// for what the socket did not take, hands it to the writer task.
    fn send_one(&self, tx: &mpsc::UnboundedSender<Out>, out: Out) -> std::result::Result<(), Out> {
        let out = if self.queued.load(Ordering::Acquire) == 0 {
            let slices = out.segments().map(IoSlice::new).collect::<SmallSlices<3>>();
            match self.wr.try_write_vectored(slices.as_slice()) {
                Ok(n) if n == out.len() => return Ok(()),
                Ok(n) => out.rest(n),
                // Full socket or a failure: the writer waits for room, or
                // meets the same error and ends.
                Err(_) => out,
            }
        } else {
            out
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(out).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            e.0
        })
    }

    /// Several PDUs in order, emptying `batch` (its buffer is kept, so
    /// batching allocates nothing): one `writev` if nothing is queued, the
    /// rest (or all) to the writer task. The caller holds the held-back
    /// lock, which is seldom contended: every user but the writer's end of
    /// pass also holds the session lock.
    fn send_batch(&self, tx: &mpsc::UnboundedSender<Out>, batch: &mut Vec<Out>) -> std::result::Result<(), ()> {
        let mut written = 0;
        if self.queued.load(Ordering::Acquire) == 0 {
            // Slices past the array's end are left out: what is written is
            // then a prefix, and the rest goes to the writer below.
            let slices =
                batch.iter().flat_map(Out::segments).map(IoSlice::new).collect::<SmallSlices<{ 3 * HOLD_BATCH }>>();
            // Full socket or a failure: the writer waits for room, or meets
            // the same error and ends.
            written = self.wr.try_write_vectored(slices.as_slice()).unwrap_or(0);
        }
        for out in batch.drain(..) {
            let len = out.len();
            if written >= len {
                written -= len;
                continue;
            }
            let rest = if written > 0 { out.rest(written) } else { out };
            written = 0;
            self.queued.fetch_add(1, Ordering::AcqRel);
            if tx.send(rest).is_err() {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(());
            }
        }
        Ok(())
    }
}

/// Up to `N` slices (three per PDU: header, data, trailer), on the stack.
struct SmallSlices<'a, const N: usize> {
    s: [IoSlice<'a>; N],
    n: usize,
}

impl<'a, const N: usize> FromIterator<IoSlice<'a>> for SmallSlices<'a, N> {
    fn from_iter<I: IntoIterator<Item = IoSlice<'a>>>(it: I) -> Self {
        let mut s = SmallSlices { s: [IoSlice::new(&[]); N], n: 0 };
        for x in it {
            let Some(slot) = s.s.get_mut(s.n) else { break };
            *slot = x;
            s.n += 1;
        }
        s
    }
}

impl<'a, const N: usize> SmallSlices<'a, N> {
    fn as_slice(&self) -> &[IoSlice<'a>] {
        self.s.get(..self.n).unwrap_or_default()
    }
}

impl Out {
    /// Header, data and trailer, empty ones left out.
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let (from, to) = self.header_range;
        let header = self.header.get(usize::from(from)..usize::from(to)).unwrap_or_default();
        let trailer = self.trailer.0.get(..self.trailer.1).unwrap_or_default();
        [header, &self.data[..], trailer].into_iter().filter(|s| !s.is_empty())
    }

    fn len(&self) -> usize {
        usize::from(self.header_range.1.saturating_sub(self.header_range.0)) + self.data.len() + self.trailer.1
    }

    /// What is left after the first `n` bytes went out.
    fn rest(self, n: usize) -> Out {
        let Out { mut header, header_range: (from, to), mut data, trailer } = self;
        let h = n.min(usize::from(to - from));
        let from = from + h as u8;
        let n = n - h;
        let d = n.min(data.len());
        data.advance(d);
        if n == d {
            return Out { header, header_range: (from, to), data, trailer };
        }
        // Only part of the trailer is left: send it as the header.
        let t = trailer.0.get(n - d..trailer.1).unwrap_or_default();
        if let Some(dst) = header.get_mut(..t.len()) {
            dst.copy_from_slice(t);
        }
        Out { header, header_range: (0, t.len() as u8), data, trailer: ([0; 7], 0) }
    }
}

/// Writes what submitters queued (see [`Link`]), gathering what is ready
/// into one vectored write, and sends what they held back at the end of
/// the scheduler pass in which it was held. `tx` is the submitters'
/// sender (weak, so that the writer still ends when they are gone).
pub(super) async fn writer(link: Arc<Link>, mut rx: mpsc::UnboundedReceiver<Out>, tx: mpsc::WeakUnboundedSender<Out>) {
    const BATCH: usize = 64;
    let mut batch: Vec<Out> = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            biased;
            o = rx.recv() => match o {
                Some(o) => o,
                None => break,
            },
            () = link.held_since_pass.notified() => {
                // The answers read in one go woke several submitters: let
                // those already woken run (tokio defers a yielding task
                // until then) so that their commands join the batch.
                tokio::task::yield_now().await;
                if let Some(tx) = tx.upgrade() {
                    link.flush(&tx);
                }
                continue;
            }
        };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let segs: Vec<&[u8]> = batch.iter().flat_map(Out::segments).collect();
        if let Err(e) = write_all_vectored(&link.wr, &segs).await {
            debug!("write failed: {e}");
            let _ = link.failed.set(e.kind());
            return;
        }
        link.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.clear();
    }
    // The last holder of the write half shuts it down when dropping it.
    if let Ok(mut link) = Arc::try_unwrap(link) {
        let _ = link.wr.shutdown().await;
    }
}

async fn write_all_vectored(w: &OwnedWriteHalf, segs: &[&[u8]]) -> std::io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < segs.len() {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity((segs.len() - idx).min(64));
        for (i, s) in segs.iter().enumerate().skip(idx).take(64) {
            let s = if i == idx { s.get(off..).unwrap_or_default() } else { s };
            slices.push(IoSlice::new(s));
        }
        let mut n = loop {
            w.writable().await?;
            match w.try_write_vectored(&slices) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && idx < segs.len() {
            let left = segs.get(idx).map_or(0, |s| s.len()) - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

impl Session {
    /// Runs a command that reads up to `len` bytes into `buf` (its contents
    /// are discarded, its allocation reused), so that a caller issuing many
    /// reads can recycle one buffer (`Bytes::try_into_mut` on the returned
    /// data) instead of allocating, and faulting in, fresh memory for each.
    /// Otherwise the same as [`Session::execute`] with `DataDirection::Read`.
    pub async fn execute_read_into(&self, lun: u64, cdb: &Cdb, len: u32, mut buf: BytesMut) -> Result<ScsiOutcome> {
        let raw_lun =
            iscsi_proto::scsi::lun::encode_lun(lun).map_err(|e| Error::InvalidArgument(format!("LUN {lun}: {e}")))?;
        buf.clear();
        let task = Task::new(
            None,
            raw_lun,
            TaskKind::Scsi(ScsiTask {
                expected_len: len,
                read: true,
                buf,
                received: 0,
                next_data_sn: 0,
                write_data: Bytes::new(),
            }),
            Some((*cdb, task_attr::SIMPLE)),
        );
        match self.inner.submit_command(task).await? {
            Reply::Scsi(o) => Ok(o),
            _ => Err(Error::protocol("unexpected reply to a SCSI command")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// A send that found no route (the link down at our end) makes the
    /// reader's end of stream a silent link, not a target that closed.
    #[test]
    fn a_write_that_lost_the_route_reads_as_a_lost_link() {
        let f = WriteFailure::default();
        assert!(link_failure(&f).is_none());
        let _ = f.set(std::io::ErrorKind::HostUnreachable);
        assert_eq!(link_failure(&f).map(|x| x.kind), Some(FaultKind::Silent));
        let g = WriteFailure::default();
        let _ = g.set(std::io::ErrorKind::BrokenPipe);
        assert!(link_failure(&g).is_none(), "a reset or closed socket stays what the reader sees");
    }

    /// A PDU-sized unit whose bytes all equal `tag`.
    fn unit(tag: u8) -> Out {
        Out {
            header: [tag; super::super::state::HEADER_MAX],
            header_range: (0, 48),
            data: Bytes::from(vec![tag; 100]),
            trailer: ([0; 7], 0),
        }
    }

    /// Our link and writer task on one end of a loopback connection, the
    /// other end to read what went out.
    async fn link() -> (Arc<Link>, mpsc::UnboundedSender<Out>, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (peer, _) = l.accept().await.unwrap();
        let (_rd, wr) = c.into_split();
        let link = Arc::new(Link::new(wr));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(link.clone(), rx, tx.downgrade()));
        (link, tx, peer)
    }

    /// The tags of the units that arrive within 200 ms.
    async fn arrived(peer: &mut TcpStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), peer.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len() % 148, 0, "whole units only");
        got.chunks(148)
            .map(|u| {
                assert!(u.iter().all(|&b| b == u[0]), "a unit's bytes stay together");
                u[0]
            })
            .collect()
    }

    /// Held commands leave in order ahead of the next other PDU.
    #[tokio::test]
    async fn held_commands_go_out_in_order_ahead_of_the_next_pdu() {
        let (link, tx, mut peer) = link().await;
        for t in 1..=3 {
            link.send(&tx, unit(t), Some(HOLD_AT + usize::from(t) - 1)).unwrap();
        }
        assert_eq!(link.held_len(), 3);
        link.send(&tx, unit(4), None).unwrap();
        assert_eq!(link.held_len(), 0);
        assert_eq!(arrived(&mut peer).await, vec![1, 2, 3, 4]);
    }

    /// A batch that does not fill leaves at the end of the scheduler pass,
    /// with what the tasks that ran in that pass held too: a held command
    /// never waits for more answers or for the sweeper.
    #[tokio::test]
    async fn held_commands_leave_at_the_end_of_the_pass() {
        let (link, tx, mut peer) = link().await;
        link.send(&tx, unit(1), Some(HOLD_AT)).unwrap();
        let other = {
            let (link, tx) = (link.clone(), tx.clone());
            tokio::spawn(async move { link.send(&tx, unit(2), Some(HOLD_AT + 1)).unwrap() })
        };
        // This task and the writer yield; the spawned submitter runs first.
        tokio::task::yield_now().await;
        other.await.unwrap();
        assert_eq!(arrived(&mut peer).await, vec![1, 2]);
        assert_eq!(link.held_len(), 0);
        // And again: the writer is ready for the next pass.
        link.send(&tx, unit(3), Some(HOLD_AT)).unwrap();
        assert_eq!(link.held_len(), 1);
        assert_eq!(arrived(&mut peer).await, vec![3]);
    }

    /// A full batch leaves at once; `flush` sends a partial one.
    #[tokio::test]
    async fn a_full_batch_leaves_and_flush_sends_the_rest() {
        let (link, tx, mut peer) = link().await;
        for t in 1..=HOLD_BATCH as u8 {
            link.send(&tx, unit(t), Some(HOLD_AT + usize::from(t) - 1)).unwrap();
        }
        assert_eq!(link.held_len(), 0);
        assert_eq!(arrived(&mut peer).await, (1..=HOLD_BATCH as u8).collect::<Vec<_>>());
        link.send(&tx, unit(50), Some(HOLD_AT)).unwrap();
        link.send(&tx, unit(51), Some(HOLD_AT + 1)).unwrap();
        // The target still has HOLD_AT of them: nothing moves.
        link.flush_if_short(&tx, HOLD_AT + 2);
        assert_eq!(link.held_len(), 2);
        link.flush_if_short(&tx, HOLD_AT + 1);
        link.flush(&tx);
        assert_eq!(arrived(&mut peer).await, vec![50, 51]);
    }

    /// Batches go out of the same buffer every time: holding back
    /// allocates nothing per command.
    #[tokio::test]
    async fn batches_reuse_one_buffer() {
        let (link, tx, mut peer) = link().await;
        let buffer = link.held().as_ptr();
        for round in 0..3u8 {
            for t in 1..=HOLD_BATCH as u8 {
                link.send(&tx, unit(round * 10 + t), Some(HOLD_AT + usize::from(t) - 1)).unwrap();
            }
            assert_eq!(link.held().as_ptr(), buffer, "after a full batch");
            link.send(&tx, unit(round * 10 + 9), Some(HOLD_AT)).unwrap();
            link.flush(&tx);
            assert_eq!(link.held().as_ptr(), buffer, "after a flush");
        }
        assert_eq!(link.held().capacity(), HOLD_BATCH);
        assert_eq!(arrived(&mut peer).await.len(), 3 * (HOLD_BATCH + 1));
    }

    /// More slices than fit: the first ones, in order, so that a write of
    /// them is a prefix of the PDUs and the rest can follow.
    #[test]
    fn small_slices_keep_a_prefix() {
        let parts: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];
        let s = parts.iter().map(|p| IoSlice::new(p)).collect::<SmallSlices<3>>();
        let got: Vec<&[u8]> = s.as_slice().iter().map(|x| &**x).collect();
        assert_eq!(got, [&b"a"[..], b"b", b"c"]);
    }

    /// Fewer than `HOLD_AT` commands at the target: nothing is held.
    #[tokio::test]
    async fn a_target_short_of_work_gets_each_command_at_once() {
        let (link, tx, mut peer) = link().await;
        link.send(&tx, unit(1), Some(HOLD_AT - 1)).unwrap();
        assert_eq!(link.held_len(), 0);
        assert_eq!(arrived(&mut peer).await, vec![1]);
    }

    /// A PDU cut after any byte (a short non-blocking write) resumes with
    /// exactly the bytes that did not go out.
    #[test]
    fn rest_of_a_pdu_is_its_unsent_tail() {
        let mut header = [0u8; super::super::state::HEADER_MAX];
        for (i, b) in header.iter_mut().enumerate() {
            *b = i as u8;
        }
        let data = Bytes::from_static(&[101, 102, 103, 104, 105]);
        let out =
            || Out { header, header_range: (0, 52), data: data.clone(), trailer: ([201, 202, 203, 0, 0, 0, 0], 3) };
        let whole: Vec<u8> = out().segments().flatten().copied().collect();
        assert_eq!(whole.len(), out().len());
        assert_eq!(whole.len(), 60);
        for n in 0..whole.len() {
            let rest = out().rest(n);
            let tail: Vec<u8> = rest.segments().flatten().copied().collect();
            assert_eq!(tail, whole[n..], "cut after {n} bytes");
            assert_eq!(rest.len(), whole.len() - n);
        }
    }
}
