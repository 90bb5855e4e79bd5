//! The receiving half of a connection's socket, with a low-water mark:
//! the reader is woken once for what it would otherwise be woken for
//! piece by piece.
//!
//! - A large Data-In segment reaches the socket in loopback- or MSS-sized
//!   pieces. While a segment of at least [`LOWAT_MIN`] bytes is owed,
//!   `SO_RCVLOWAT` (socket(7)) keeps the socket unreadable until that much
//!   (at most [`LOWAT_MAX`]) has arrived ([`owed_mark`]). The mark only
//!   asks for bytes the target has already announced in a header.
//! - A busy connection's small answers (4 KiB reads, write statuses) come
//!   one by one as the target finishes each command. While it has at least
//!   [`ANSWERS_AT_LEAST`] commands out, the reader sleeps until the bytes
//!   of a third of them are there ([`answers_mark`]): one `epoll_wait`,
//!   one `recv` and one wake-up for several answers, and the target, whose
//!   send then wakes nobody, saves its share too (bench/README.md, round
//!   8 and 9). The target keeps two thirds of the commands meanwhile, so it
//!   does not run short of work. These bytes are only expected, not
//!   announced (a read may fail with a short status), so such a wait is
//!   bounded ([`ANSWERS_WAIT`]) and one that ran out turns the marks off
//!   for a while ([`ANSWERS_BACKOFF`]).
//!
//! Otherwise the mark is 1, the default, set back when a read would block.

use std::io;
use std::time::Duration;

use bytes::BufMut;
use nix::libc;
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
use tokio::io::Interest;
use tokio::net::tcp::OwnedReadHalf;
use tracing::debug;

use super::state::OwedAnswers;

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

/// Answers at least this long are left to [`owed_mark`] and read into the
/// command's buffer as they come (`io::place_data_in`).
const ANSWER_MAX: usize = super::io::DIRECT_MIN;
/// Commands a connection must have out before its reader waits for
/// several answers at once.
pub(super) const ANSWERS_AT_LEAST: usize = 8;
/// The reader waits for the answers of this fraction of the commands out
/// (a third: 10 of 32 ahead of 8 of 32 on tgt and istgt, and 8 ahead of
/// 4 and of 16; bench/README.md, rounds 8 and 9).
const ANSWERS_DIVISOR: usize = 3;
/// Longest wait for expected answers before reading what came.
pub(super) const ANSWERS_WAIT: Duration = Duration::from_millis(2);
/// After a wait ran out, answers are read as they come for this long: the
/// target is slower than the mark assumed, or answers are shorter.
pub(super) const ANSWERS_BACKOFF: Duration = Duration::from_secs(1);

/// The mark while `owed` bytes of an announced data segment are to come.
pub(super) fn owed_mark(owed: usize) -> usize {
    if owed >= LOWAT_MIN { owed.min(LOWAT_MAX) } else { 1 }
}

/// The mark while a connection waits for its next PDU with `owed`
/// answers to come, `have` bytes of which are already buffered: the
/// fewest bytes a third of them bring when they succeed.
pub(super) fn answers_mark(owed: OwedAnswers, have: usize) -> usize {
    if owed.count < ANSWERS_AT_LEAST || owed.least_bytes >= ANSWER_MAX {
        return 1;
    }
    (owed.count / ANSWERS_DIVISOR).saturating_mul(owed.least_bytes).saturating_sub(have).clamp(1, LOWAT_MAX)
}

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

    /// Reads at least a byte into `b`, first waiting until `mark` bytes
    /// are queued (1: any; see [`owed_mark`] and [`answers_mark`]). Returns
    /// 0 at end of stream.
    ///
    /// Before a wait for a mark, the readiness tokio remembers is cleared,
    /// since it may date from a piece already read, and setting the mark
    /// makes Linux signal at once if that much is queued already
    /// (`tcp_set_rcvlowat` calls `tcp_data_ready`), so the wait cannot miss
    /// bytes that are there. Cancel-safe: nothing is read until the end.
    pub(super) async fn read<B: BufMut>(&mut self, b: &mut B, mark: usize) -> io::Result<usize> {
        let mark = if self.supported { mark.max(1) } else { 1 };
        if mark > 1 {
            self.forget_readiness();
            self.set_lowat(mark);
            self.rd.readable().await?;
        }
        loop {
            let offered = b.chunk_mut().len();
            // A short read emptied the receive queue (tcp_recvmsg copies
            // while data is queued): the readiness is forgotten then rather
            // than learnt from one more `recv` that fails. The `recv` runs
            // inside `try_io`, which clears the readiness only if no event
            // came since it looked, i.e. since before the `recv`: clearing
            // after it would also erase the event of bytes that arrived in
            // between, and when those filled the window the target could
            // send nothing more to raise another (a connection hung with a
            // whole Data-In unread until the command timed out).
            let mut short = 0;
            let r = self.rd.as_ref().try_io(Interest::READABLE, || match self.rd.try_read_buf(b) {
                Ok(n) if n > 0 && n < offered => {
                    short = n;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                r => r,
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => return Ok(short),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
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
            let n = tokio::time::timeout(Duration::from_secs(2), rx.read(&mut got, owed_mark(owed)))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
        }
        assert_eq!(&got[..], &data[..]);
        assert!(rx.supported && rx.lowat > 1, "the mark was set");
    }

    #[test]
    fn answers_mark_asks_for_a_third_of_the_owed_answers() {
        let owed = |count, least_bytes| OwedAnswers { count, least_bytes };
        assert_eq!(answers_mark(owed(32, 4144), 0), 10 * 4144);
        assert_eq!(answers_mark(owed(32, 4144), 5000), 10 * 4144 - 5000);
        assert_eq!(answers_mark(owed(9, 48), 0), 3 * 48);
        assert_eq!(answers_mark(owed(7, 4144), 0), 1, "too few out");
        assert_eq!(answers_mark(owed(32, ANSWER_MAX), 0), 1, "large answers are read as announced");
        assert_eq!(answers_mark(owed(32, 48), 1000), 1, "buffered already");
        assert_eq!(answers_mark(owed(usize::MAX, ANSWER_MAX - 1), 0), LOWAT_MAX);
    }

    /// Below the mark the socket does not read as ready; the bytes that
    /// reach it are read at once, in one piece.
    #[tokio::test]
    async fn a_read_waits_for_the_mark_then_takes_everything() {
        let (mut rx, _wr, mut tx) = pair().await;
        let data = pattern(3 * 4144);
        tx.write_all(&data[..2 * 4144]).await.unwrap();
        let mut got = BytesMut::with_capacity(64 * 1024);
        let early = tokio::time::timeout(Duration::from_millis(100), rx.read(&mut got, data.len())).await;
        assert!(early.is_err(), "woke below the mark");
        assert!(got.is_empty());
        tx.write_all(&data[2 * 4144..]).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), rx.read(&mut got, data.len())).await.unwrap().unwrap();
        assert_eq!(n, data.len());
        assert_eq!(&got[..], &data[..]);
        // Back to any byte: a read with mark 1 returns a lone byte.
        tx.write_all(b"x").await.unwrap();
        let mut one = BytesMut::with_capacity(16);
        tokio::time::timeout(Duration::from_secs(2), rx.read(&mut one, 1)).await.unwrap().unwrap();
        assert_eq!(&one[..], b"x");
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
            tokio::time::timeout(Duration::from_secs(5), rx.read(&mut lim, owed_mark(owed))).await.unwrap().unwrap();
        }
        assert_eq!(&got[..], &data[..]);
        let mut tail = BytesMut::with_capacity(16);
        while tail.len() < 4 {
            tokio::time::timeout(Duration::from_secs(2), rx.read(&mut tail, 1)).await.unwrap().unwrap();
        }
        assert_eq!(&tail[..], b"tail");
        assert_eq!(rx.lowat, 1);
        drop(w.await.unwrap());
    }
}
