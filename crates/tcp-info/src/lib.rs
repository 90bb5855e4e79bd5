//! What the kernel knows of a TCP connection's path (Linux `TCP_INFO`,
//! tcp(7)): the delivery rate, i.e. how fast the data we sent was
//! acknowledged over the last round trip, which the initiator's
//! least-queue-depth balancer weighs connections by, and by which every
//! spreading policy keeps a connection's queue short (issue 19: several
//! links of unequal speed). Nothing at the iSCSI level measures the link:
//! a target that runs a session's commands in CmdSN order answers every
//! connection at the pace of its queue.
//!
//! The one `unsafe` call is `getsockopt(2)` into a zeroed byte buffer;
//! the fields are then read from the buffer at their UAPI offsets
//! (`include/uapi/linux/tcp.h`, stable since each field was added), only
//! as far as the kernel filled it. The libc crate's `tcp_info` for glibc
//! stops before `tcpi_delivery_rate` (Linux 4.9), hence the bytes.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io;
use std::os::fd::AsFd;

/// A delivery rate sample of the socket (`tcpi_delivery_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRate {
    /// Bytes per second acknowledged over the most recent sample.
    pub bytes_per_sec: u64,
    /// The sample was limited by what we had to send, not by the path
    /// (`tcpi_delivery_rate_app_limited`): it says little of the link.
    pub app_limited: bool,
    /// Bytes acknowledged since the connection began (`tcpi_bytes_acked`,
    /// Linux 4.1): what moved between two samples.
    pub bytes_acked: u64,
}

/// Offset of `tcpi_delivery_rate` (u64) in `struct tcp_info`: 8 one-byte
/// fields, 24 u32 (`tcpi_rto` .. `tcpi_total_retrans`), 4 u64
/// (`tcpi_pacing_rate` .. `tcpi_bytes_received`), 6 u32 (`tcpi_segs_out`
/// .. `tcpi_data_segs_out`).
const DELIVERY_RATE_AT: usize = 8 + 24 * 4 + 4 * 8 + 6 * 4;
/// Offset of `tcpi_bytes_acked` (u64): after `tcpi_pacing_rate` and
/// `tcpi_max_pacing_rate`.
const BYTES_ACKED_AT: usize = 8 + 24 * 4 + 2 * 8;
/// Byte 7 holds `tcpi_delivery_rate_app_limited` in its lowest bit.
const APP_LIMITED_AT: usize = 7;
/// Room for the fields read (the kernel copies at most what we ask).
const BUF: usize = DELIVERY_RATE_AT + 8;

/// The delivery rate of connected TCP socket `fd`; `Ok(None)` where the
/// kernel does not report it (before Linux 4.9, or not Linux).
pub fn delivery_rate(fd: &impl AsFd) -> io::Result<Option<DeliveryRate>> {
    let (buf, len) = get(fd)?;
    Ok(parse(&buf, len))
}

/// Bytes of connected TCP socket `fd`'s stream the peer acknowledged
/// since the connection began (`tcpi_bytes_acked`); `Ok(None)` where the
/// kernel does not report it (before Linux 4.1, or not Linux). Still
/// readable once the connection failed: what reached the peer before.
pub fn bytes_acked(fd: &impl AsFd) -> io::Result<Option<u64>> {
    let (buf, len) = get(fd)?;
    Ok(parse_acked(&buf, len))
}

fn parse_acked(buf: &[u8; BUF], len: usize) -> Option<u64> {
    let acked = buf.get(BYTES_ACKED_AT..BYTES_ACKED_AT + 8).filter(|_| len >= BYTES_ACKED_AT + 8)?;
    Some(u64::from_ne_bytes(acked.try_into().ok()?))
}

/// The fields read from the first `len` bytes of a `struct tcp_info`.
fn parse(buf: &[u8; BUF], len: usize) -> Option<DeliveryRate> {
    let rate = buf.get(DELIVERY_RATE_AT..DELIVERY_RATE_AT + 8).filter(|_| len >= DELIVERY_RATE_AT + 8)?;
    let bytes_per_sec = u64::from_ne_bytes(rate.try_into().ok()?);
    let app_limited = buf.get(APP_LIMITED_AT).is_some_and(|b| b & 1 == 1);
    let acked = buf.get(BYTES_ACKED_AT..BYTES_ACKED_AT + 8)?;
    let bytes_acked = u64::from_ne_bytes(acked.try_into().ok()?);
    Some(DeliveryRate { bytes_per_sec, app_limited, bytes_acked })
}

#[cfg(target_os = "linux")]
fn get(fd: &impl AsFd) -> io::Result<([u8; BUF], usize)> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; BUF];
    let mut len = BUF as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `len` bytes and outlives the
    // call; the kernel writes at most `len` bytes and stores the length
    // it wrote in `len`. The descriptor is borrowed, hence open.
    let r = unsafe {
        libc::getsockopt(fd.as_fd().as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((buf, usize::try_from(len).unwrap_or(0).min(BUF)))
}

#[cfg(not(target_os = "linux"))]
fn get(_fd: &impl AsFd) -> io::Result<([u8; BUF], usize)> {
    Ok(([0u8; BUF], 0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_short_struct_reports_nothing() {
        let mut buf = [0u8; BUF];
        buf[DELIVERY_RATE_AT..DELIVERY_RATE_AT + 8].copy_from_slice(&5u64.to_ne_bytes());
        buf[BYTES_ACKED_AT..BYTES_ACKED_AT + 8].copy_from_slice(&9u64.to_ne_bytes());
        assert_eq!(parse(&buf, DELIVERY_RATE_AT + 7), None);
        assert_eq!(parse_acked(&buf, DELIVERY_RATE_AT + 7), Some(9));
        assert_eq!(parse_acked(&buf, BYTES_ACKED_AT + 7), None);
        assert_eq!(parse(&buf, BUF), Some(DeliveryRate { bytes_per_sec: 5, app_limited: false, bytes_acked: 9 }));
        buf[APP_LIMITED_AT] = 0b101;
        assert_eq!(parse(&buf, BUF), Some(DeliveryRate { bytes_per_sec: 5, app_limited: true, bytes_acked: 9 }));
    }

    /// On a loopback connection that moved a few megabytes the kernel
    /// reports a rate; a socket that is not TCP is an error, not a panic.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_loopback_connection_has_a_delivery_rate() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let reader = std::thread::spawn(move || {
            let mut sink = vec![0u8; 1 << 16];
            let mut n = 0;
            while n < 4 << 20 {
                n += s.read(&mut sink).unwrap();
            }
        });
        c.write_all(&vec![7u8; 4 << 20]).unwrap();
        reader.join().unwrap();
        let r = delivery_rate(&c).unwrap().unwrap();
        assert!(r.bytes_per_sec > 0, "{r:?}");
        assert!(r.bytes_acked >= 4 << 20, "{r:?}");
        assert_eq!(bytes_acked(&c).unwrap(), Some(r.bytes_acked));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(delivery_rate(&udp).is_err());
    }
}
