//! The two tasks of each connection: a reader (framing, dispatch,
//! keepalive) and a writer (batched, vectored writes of header, data and
//! trailer, so that one syscall carries many PDUs).

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::Weak;

use bytes::{Bytes, BytesMut};
use iscsi_proto::pdu::{NopOut, PduDecoder, RESERVED_TAG};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::Inner;
use super::state::{Out, Task, TaskKind, conn_mut, push};
use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::portal::PortalAddr;
use crate::wire::READ_CHUNK;

pub(super) async fn connect(addr: &PortalAddr, cfg: &SessionConfig) -> Result<TcpStream> {
    connect_from(addr, cfg, None).await
}

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

/// The reason a reader gives when the target closed the connection cleanly.
pub(super) const CLOSED_BY_TARGET: &str = "the target closed the connection";

/// Reads, frames and dispatches PDUs; pings the target when it is quiet
/// and declares the connection dead when a ping goes unanswered. Holds the
/// session weakly so that dropping the last handle ends it.
pub(super) async fn reader(weak: Weak<Inner>, cid: u16, mut rd: OwnedReadHalf, mut dec: PduDecoder, mut buf: BytesMut) {
    let Some((nop_interval, nop_timeout)) = weak.upgrade().map(|i| (i.cfg.nop_interval, i.cfg.nop_timeout)) else {
        return;
    };
    let reason = async {
        let mut deadline = Instant::now() + nop_interval;
        let mut pinging = false;
        loop {
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(pdu)) => {
                        // Liveness is a whole PDU, not a byte: a target that
                        // trickles bytes is as dead as a silent one.
                        deadline = Instant::now() + nop_interval;
                        pinging = false;
                        let Some(inner) = weak.upgrade() else { return String::new() };
                        if let Err(e) = inner.handle_pdu(cid, pdu) {
                            return e.to_string();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return format!("malformed PDU from the target: {e}"),
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK {
                buf.reserve(READ_CHUNK.max(dec.config.max_recv_data_segment_length as usize + 1024));
            }
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => return CLOSED_BY_TARGET.to_string(),
                    Ok(_) => {}
                    Err(e) => return format!("read error: {e}"),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if pinging {
                        return format!("no answer to NOP-Out within {} s", nop_timeout.as_secs());
                    }
                    let Some(inner) = weak.upgrade() else { return String::new() };
                    if send_ping(&inner, cid) {
                        pinging = true;
                        deadline = Instant::now() + nop_timeout;
                    } else {
                        deadline = Instant::now() + nop_interval;
                    }
                }
            }
        }
    }
    .await;
    if let Some(inner) = weak.upgrade() {
        inner.connection_failed(cid, &reason);
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

/// Writes queued PDUs, gathering what is ready into one vectored write.
pub(super) async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Out>) {
    const BATCH: usize = 64;
    let mut batch: Vec<Out> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut segs: Vec<&[u8]> = Vec::with_capacity(batch.len() * 3);
        for o in &batch {
            segs.push(&o.header);
            if !o.data.is_empty() {
                segs.push(&o.data);
            }
            if let Some(t) = o.trailer.0.get(..o.trailer.1)
                && !t.is_empty()
            {
                segs.push(t);
            }
        }
        if let Err(e) = write_all_vectored(&mut wr, &segs).await {
            debug!("write failed: {e}");
            return;
        }
        batch.clear();
    }
    let _ = wr.shutdown().await;
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, segs: &[&[u8]]) -> std::io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < segs.len() {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity((segs.len() - idx).min(64));
        for (i, s) in segs.iter().enumerate().skip(idx).take(64) {
            let s = if i == idx { s.get(off..).unwrap_or_default() } else { s };
            slices.push(IoSlice::new(s));
        }
        let mut n = w.write_vectored(&slices).await?;
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
    w.flush().await
}
