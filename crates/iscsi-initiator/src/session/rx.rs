//! The receiving half of a connection's socket, with a low-water mark that
//! follows what the reader is owed.
//!
//! A large Data-In segment reaches the socket in loopback- or MSS-sized
//! pieces; woken for each, the reader would pay an `epoll_wait`, a `recv`
//! and a task wake-up per piece. While a segment of at least
//! [`LOWAT_MIN`] bytes is owed, `SO_RCVLOWAT` (socket(7)) keeps the socket
//! unreadable until that much (at most [`LOWAT_MAX`]) has arrived, so one
//! wake-up and one `recv` carry it. The mark only ever asks for bytes the
//! target has already announced in a header, so it cannot stall a
//! connection. For anything else it is 1, the default, set back only when
//! a read would block.

use std::io;

use bytes::BufMut;
use nix::libc;
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
use tokio::io::Interest;
use tokio::net::tcp::OwnedReadHalf;
use tracing::debug;

/// Owed bytes below this are read as they come.
pub(super) const LOWAT_MIN: usize = 64 * 1024;
/// The highest mark set, one whole segment of the size we declare
/// (`SessionConfig`'s MaxRecvDataSegmentLength): Linux grows the receive
/// buffer to hold twice the mark and caps the mark at half of the largest
/// buffer (`tcp_set_rcvlowat`), so the sender can always send that much.
const LOWAT_MAX: usize = 1024 * 1024;

sockopt_impl!(
    /// `SO_RCVLOWAT`: least bytes queued before the socket reads as ready.
    RcvLowat,
    Both,
    libc::SOL_SOCKET,
    libc::SO_RCVLOWAT,
    i32
);

pub(super) struct RxSocket {
    rd: OwnedReadHalf,
    /// The mark as last set (1 = the kernel's default).
    lowat: usize,
    /// Cleared when the kernel refuses the option: not asked again.
    supported: bool,
}

impl RxSocket {
    pub(super) fn new(rd: OwnedReadHalf) -> Self {
        Self { rd, lowat: 1, supported: true }
    }

    /// Reads at least a byte into `b`; `owed` is how many bytes the reader
    /// knows are on their way (0 when it does not know). Returns 0 at end
    /// of stream.
    ///
    /// When at least [`LOWAT_MIN`] bytes are owed it first waits for the
    /// mark: the readiness tokio remembers is cleared, since it may date
    /// from a piece already read, and setting the mark makes Linux signal
    /// at once if that much is queued already (`tcp_set_rcvlowat` calls
    /// `tcp_data_ready`), so the wait cannot miss bytes that are there.
    pub(super) async fn read<B: BufMut>(&mut self, b: &mut B, owed: usize) -> io::Result<usize> {
        let mark = if owed >= LOWAT_MIN && self.supported { owed.min(LOWAT_MAX) } else { 1 };
        if mark > 1 {
            self.forget_readiness();
            self.set_lowat(mark);
            self.rd.readable().await?;
        }
        loop {
            let offered = b.chunk_mut().len();
            match self.rd.try_read_buf(b) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(n) if n > 0 && n < offered => {
                    // A short read emptied the receive queue (tcp_recvmsg
                    // copies while data is queued): forget the readiness
                    // now rather than learn it from one more `recv` that
                    // fails. Bytes arriving since raise a new event.
                    self.forget_readiness();
                    return Ok(n);
                }
                r => return r,
            }
            if mark != self.lowat && self.supported {
                self.set_lowat(mark);
            }
            self.rd.readable().await?;
        }
    }

    /// Clears tokio's notion that the socket is readable; the next event
    /// from the kernel sets it again.
    fn forget_readiness(&self) {
        let _ = self.rd.as_ref().try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
    }

    fn set_lowat(&mut self, n: usize) {
        let v = i32::try_from(n).unwrap_or(i32::MAX);
        match nix::sys::socket::setsockopt(self.rd.as_ref(), RcvLowat, &v) {
            Ok(()) => self.lowat = n,
            // Only a cost: reads still complete, a piece at a time.
            Err(e) => {
                debug!("SO_RCVLOWAT {n}: {e}");
                self.supported = false;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;
    use tokio::net::tcp::OwnedWriteHalf;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Our receiving half, its write half (kept open) and the sender.
    async fn pair() -> (RxSocket, OwnedWriteHalf, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let (rd, wr) = c.into_split();
        (RxSocket::new(rd), wr, s)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// Bytes already queued when the mark is set are reported at once
    /// (Linux re-checks readiness on `SO_RCVLOWAT`): no wait for more.
    #[tokio::test]
    async fn a_mark_over_bytes_already_queued_does_not_wait() {
        let (mut rx, _wr, mut tx) = pair().await;
        let data = pattern(200 * 1024);
        tx.write_all(&data).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = BytesMut::with_capacity(data.len());
        while got.len() < data.len() {
            let owed = data.len() - got.len();
            let n = tokio::time::timeout(Duration::from_secs(2), rx.read(&mut got, owed)).await.unwrap().unwrap();
            assert!(n > 0);
        }
        assert_eq!(&got[..], &data[..]);
        assert!(rx.supported && rx.lowat > 1, "the mark was set");
    }

    /// A segment that trickles in is read whole once the mark is reached,
    /// and a small read afterwards (mark back at 1) still returns.
    #[tokio::test]
    async fn trickled_bytes_then_a_small_read() {
        let (mut rx, _wr, mut tx) = pair().await;
        // More than one mark's worth, then a rest read at mark 1.
        let data = pattern(LOWAT_MAX + 40 * 1024);
        let sent = data.clone();
        let w = tokio::spawn(async move {
            for piece in sent.chunks(7 * 1024 + 13) {
                tx.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tx.write_all(b"tail").await.unwrap();
            tx
        });
        let mut got = BytesMut::with_capacity(data.len());
        while got.len() < data.len() {
            let owed = data.len() - got.len();
            let mut lim = (&mut got).limit(owed);
            tokio::time::timeout(Duration::from_secs(5), rx.read(&mut lim, owed)).await.unwrap().unwrap();
        }
        assert_eq!(&got[..], &data[..]);
        let mut tail = BytesMut::with_capacity(16);
        while tail.len() < 4 {
            tokio::time::timeout(Duration::from_secs(2), rx.read(&mut tail, 0)).await.unwrap().unwrap();
        }
        assert_eq!(&tail[..], b"tail");
        assert_eq!(rx.lowat, 1);
        drop(w.await.unwrap());
    }
}
