//! The server against a hand-written client over a Unix socket: pipelining, reply formats, errors,
//! ordering, malformed input, limits and shutdown.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{MemDevice, RawClient, TestServer, default_config};
use nbd_export::ExportConfig;
use nbd_proto::reply::ReplyType;
use nbd_proto::{CommandFlags, CommandKind, ReplyFlags, TransmissionFlags};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1 << 20;

fn device_with_pattern() -> MemDevice {
    let d = MemDevice::new(MIB);
    d.data.lock().unwrap().copy_from_slice(&common::random_bytes(MIB, 7));
    d
}

/// After a fault on one connection, a fresh client still gets a correct read.
async fn server_still_serves(srv: &TestServer) {
    let (mut c, size, _) = RawClient::handshake(&srv.socket, false).await;
    assert_eq!(size, MIB as u64);
    c.send(CommandKind::Read, CommandFlags::EMPTY, 99, 512, 512).await;
    let (err, cookie, data) = c.simple_reply(512).await;
    assert_eq!((err, cookie), (0, 99));
    assert_eq!(data, srv.device.contents()[512..1024]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_advertises_size_and_features() {
    let srv = TestServer::start(MemDevice::new(MIB), default_config());
    let (_c, size, flags) = RawClient::handshake(&srv.socket, true).await;
    assert_eq!(size, MIB as u64);
    let f = TransmissionFlags(flags);
    assert!(f.contains(
        TransmissionFlags::HAS_FLAGS
            | TransmissionFlags::SEND_FLUSH
            | TransmissionFlags::SEND_FUA
            | TransmissionFlags::SEND_TRIM
            | TransmissionFlags::SEND_WRITE_ZEROES
            | TransmissionFlags::CAN_MULTI_CONN
            | TransmissionFlags::SEND_DF
    ));
    assert!(!f.contains(TransmissionFlags::READ_ONLY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_complete_out_of_order_with_matching_cookies() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    srv.device.slow_read_offset.store(0, Ordering::SeqCst);
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    c.send(CommandKind::Read, CommandFlags::EMPTY, 1, 0, 4096).await;
    c.send(CommandKind::Read, CommandFlags::EMPTY, 2, 8192, 4096).await;
    let expected = srv.device.contents();
    let (e2, k2, d2) = c.simple_reply(4096).await;
    let (e1, k1, d1) = c.simple_reply(4096).await;
    assert_eq!((e2, k2, e1, k1), (0, 2, 0, 1), "the fast read overtakes the slow one");
    assert_eq!(d2, expected[8192..12288]);
    assert_eq!(d1, expected[..4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_round_trip() {
    let srv = TestServer::start(MemDevice::new(MIB), default_config());
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    let data = common::random_bytes(64 * 1024, 3);
    c.write(10, 4096, &data).await;
    assert_eq!(c.simple_reply(0).await, (0, 10, vec![]));
    c.send(CommandKind::Read, CommandFlags::EMPTY, 11, 4096, 64 * 1024).await;
    assert_eq!(c.simple_reply(64 * 1024).await, (0, 11, data.clone()));
    c.send(CommandKind::WriteZeroes, CommandFlags::NO_HOLE, 12, 4096, 4096).await;
    assert_eq!(c.simple_reply(0).await.0, 0);
    c.send(CommandKind::Trim, CommandFlags::FUA, 13, 8192, 4096).await;
    assert_eq!(c.simple_reply(0).await.0, 0);
    let now = srv.device.contents();
    assert!(now[4096..12288].iter().all(|&b| b == 0));
    assert_eq!(now[12288..4096 + 64 * 1024], data[8192..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_replies_carry_data_and_error_messages() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    let (mut c, _, _) = RawClient::handshake(&srv.socket, true).await;
    c.send(CommandKind::Read, CommandFlags::DF, 5, 4096, 1024).await;
    let (h, payload) = c.chunk().await;
    assert_eq!((h.ty, h.flags, h.cookie), (ReplyType::OFFSET_DATA, ReplyFlags::DONE, 5));
    assert_eq!(payload[..8], 4096u64.to_be_bytes());
    assert_eq!(payload[8..], srv.device.contents()[4096..5120]);

    srv.device.fail.store(true, Ordering::SeqCst);
    c.send(CommandKind::Read, CommandFlags::EMPTY, 6, 0, 512).await;
    let (h, payload) = c.chunk().await;
    assert_eq!((h.ty, h.flags, h.cookie), (ReplyType::ERROR, ReplyFlags::DONE, 6));
    assert_eq!(payload[..4], 5u32.to_be_bytes(), "NBD_EIO");
    assert_eq!(&payload[6..], b"injected failure");

    // A request refused by validation also gets its reason.
    c.send(CommandKind::Read, CommandFlags::EMPTY, 7, MIB as u64, 512).await;
    let (h, payload) = c.chunk().await;
    assert_eq!((h.ty, h.cookie), (ReplyType::ERROR, 7));
    assert_eq!(payload[..4], 22u32.to_be_bytes());
    assert!(String::from_utf8_lossy(&payload[6..]).contains("past the end"));

    // The connection keeps serving once the device recovers.
    srv.device.fail.store(false, Ordering::SeqCst);
    c.send(CommandKind::Read, CommandFlags::EMPTY, 8, 0, 512).await;
    let (h, _) = c.chunk().await;
    assert_eq!((h.ty, h.cookie), (ReplyType::OFFSET_DATA, 8));
    // Non-read successes may be simple replies even with structured replies negotiated.
    c.send(CommandKind::Flush, CommandFlags::EMPTY, 9, 0, 0).await;
    assert_eq!(c.simple_reply(0).await, (0, 9, vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_error_answers_that_request_and_the_connection_goes_on() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    srv.device.fail.store(true, Ordering::SeqCst);
    c.send(CommandKind::Read, CommandFlags::EMPTY, 1, 0, 512).await;
    assert_eq!(c.simple_reply(512).await, (5, 1, vec![]), "EIO without payload");
    c.write(2, 0, &[1; 512]).await;
    assert_eq!(c.simple_reply(0).await.0, 5);
    srv.device.fail.store(false, Ordering::SeqCst);
    c.send(CommandKind::Read, CommandFlags::EMPTY, 3, 0, 512).await;
    assert_eq!(c.simple_reply(512).await.0, 0);
    let stats = srv.stop().await;
    assert_eq!(stats.clients_served, 1);
    assert_eq!((stats.requests, stats.errors), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_the_specs_errno_and_payloads_are_skipped() {
    let srv = TestServer::start(MemDevice::new(MIB), default_config());
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    // Write past the end: ENOSPC, and its payload must not be taken for the next request.
    c.write(1, MIB as u64, &[0xab; 1024]).await;
    assert_eq!(c.simple_reply(0).await, (28, 1, vec![]));
    // Misaligned, too long, unknown command, unsupported command, flush with an offset.
    c.send(CommandKind::Read, CommandFlags::EMPTY, 2, 100, 512).await;
    assert_eq!(c.simple_reply(0).await.0, 22);
    c.send(CommandKind::Read, CommandFlags::EMPTY, 3, 0, (1 << 21) + 512).await;
    assert_eq!(c.simple_reply(0).await.0, 22);
    c.send(CommandKind::Unknown(77), CommandFlags::EMPTY, 4, 0, 0).await;
    assert_eq!(c.simple_reply(0).await.0, 22);
    c.send(CommandKind::BlockStatus, CommandFlags::EMPTY, 5, 0, 512).await;
    assert_eq!(c.simple_reply(0).await.0, 22);
    c.send(CommandKind::Flush, CommandFlags::EMPTY, 6, 512, 0).await;
    assert_eq!(c.simple_reply(0).await.0, 22);
    // Still in step: a good write and read.
    c.write(7, 0, &[0xcd; 512]).await;
    assert_eq!(c.simple_reply(0).await, (0, 7, vec![]));
    c.send(CommandKind::Read, CommandFlags::EMPTY, 8, 0, 512).await;
    assert_eq!(c.simple_reply(512).await, (0, 8, vec![0xcd; 512]));
    assert!(srv.device.contents()[512..].iter().all(|&b| b == 0), "the refused payload was not written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_export_refuses_writes_with_eperm() {
    let srv = TestServer::start(MemDevice::new(MIB), ExportConfig { read_only: true, ..default_config() });
    let (mut c, _, flags) = RawClient::handshake(&srv.socket, false).await;
    let f = TransmissionFlags(flags);
    assert!(f.contains(TransmissionFlags::READ_ONLY));
    assert!(!f.intersects(TransmissionFlags::SEND_TRIM | TransmissionFlags::SEND_WRITE_ZEROES));
    c.write(1, 0, &[1; 512]).await;
    assert_eq!(c.simple_reply(0).await, (1, 1, vec![]));
    assert!(srv.device.contents().iter().all(|&b| b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_earlier_writes() {
    let srv = TestServer::start(MemDevice::new(MIB), default_config());
    srv.device.write_delay_ms.store(300, Ordering::SeqCst);
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    c.write(1, 0, &[1; 512]).await;
    c.write(2, 512, &[2; 512]).await;
    c.send(CommandKind::Flush, CommandFlags::EMPTY, 3, 0, 0).await;
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let (err, cookie, _) = c.simple_reply(0).await;
        assert_eq!(err, 0);
        cookies.push(cookie);
    }
    assert_eq!(cookies[2], 3, "the flush is answered after both writes");
    let log = srv.device.log.lock().unwrap().clone();
    assert_eq!(log.last().map(String::as_str), Some("flush"), "{log:?}");
    assert_eq!(log.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disc_finishes_requests_in_flight_then_closes() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    srv.device.slow_read_offset.store(0, Ordering::SeqCst);
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    c.send(CommandKind::Read, CommandFlags::EMPTY, 1, 0, 512).await;
    c.send(CommandKind::Disc, CommandFlags::EMPTY, 2, 0, 0).await;
    let (err, cookie, data) = c.simple_reply(512).await;
    assert_eq!((err, cookie), (0, 1));
    assert_eq!(data, srv.device.contents()[..512]);
    assert!(c.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_magic_ends_only_that_client() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    let (mut other, _, _) = RawClient::handshake(&srv.socket, false).await;
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    c.stream.write_all(&[0x42; 28]).await.unwrap();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // The client that was already connected is unaffected, and new ones are served.
    other.send(CommandKind::Read, CommandFlags::EMPTY, 1, 0, 512).await;
    assert_eq!(other.simple_reply(512).await.0, 0);
    server_still_serves(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_handshake_closes_that_client() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    let mut c = RawClient::connect(&srv.socket).await;
    c.stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // Valid flags, then an option header without IHAVEOPT.
    let mut c = RawClient::connect(&srv.socket).await;
    c.stream.write_all(&1u32.to_be_bytes()).await.unwrap();
    c.stream.write_all(&[0xff; 16]).await.unwrap();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    server_still_serves(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_option_closes_without_waiting_for_its_data() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    let mut c = RawClient::connect(&srv.socket).await;
    c.stream.write_all(&1u32.to_be_bytes()).await.unwrap();
    let mut header = b"IHAVEOPT".to_vec();
    header.extend_from_slice(&7u32.to_be_bytes());
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    c.stream.write_all(&header).await.unwrap();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    server_still_serves(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_request_and_oversize_write_end_that_client() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    // Half a header, then the client goes away.
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    let r =
        nbd_proto::Request { flags: CommandFlags::EMPTY, kind: CommandKind::Read, cookie: 1, offset: 0, length: 512 };
    c.stream.write_all(&r.encode()[..13]).await.unwrap();
    c.stream.shutdown().await.unwrap();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // A write header announcing a 1 GiB payload: a denial of service, the connection is cut at once.
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    c.send(CommandKind::Write, CommandFlags::EMPTY, 2, 0, 1 << 30).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // A write whose payload stops short.
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    c.send(CommandKind::Write, CommandFlags::EMPTY, 3, 0, 4096).await;
    c.stream.write_all(&[1; 100]).await.unwrap();
    c.stream.shutdown().await.unwrap();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    assert!(srv.device.contents()[..4096] != [1; 4096][..]);
    server_still_serves(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_is_cut_during_the_handshake() {
    let srv = TestServer::start_with(device_with_pattern(), default_config(), |e| {
        e.with_handshake_timeout(Duration::from_millis(300))
    });
    let mut c = RawClient::connect(&srv.socket).await;
    let started = Instant::now();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A client that keeps haggling (a valid NBD_OPT_LIST every 100 ms) is cut all the same.
    let mut trickle = RawClient::connect(&srv.socket).await;
    trickle.stream.write_all(&1u32.to_be_bytes()).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(3) {
        let mut list = bytes::BytesMut::new();
        nbd_proto::option::encode_option(&mut list, nbd_proto::OptionCode::LIST, b"").unwrap();
        if trickle.stream.write_all(&list).await.is_err() || trickle.closed_within(Duration::from_millis(100)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "a client still haggling after the handshake timeout is cut");
    // A client in transmission may idle as long as it likes.
    let (mut t, _, _) = RawClient::handshake(&srv.socket, false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    t.send(CommandKind::Read, CommandFlags::EMPTY, 1, 0, 512).await;
    assert_eq!(t.simple_reply(512).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_the_limit_are_closed() {
    let srv = TestServer::start(device_with_pattern(), ExportConfig { max_clients: 1, ..default_config() });
    let (mut first, _, _) = RawClient::handshake(&srv.socket, false).await;
    assert_eq!(srv.exporter.clients(), 1);
    let mut second = RawClient::connect(&srv.socket).await;
    assert!(second.closed_within(Duration::from_secs(5)).await);
    first.send(CommandKind::Disc, CommandFlags::EMPTY, 1, 0, 0).await;
    assert!(first.closed_within(Duration::from_secs(5)).await);
    // The slot is free again.
    for _ in 0..50 {
        if srv.exporter.clients() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server_still_serves(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish_and_closes_clients() {
    let srv = TestServer::start(device_with_pattern(), default_config());
    srv.device.slow_read_offset.store(0, Ordering::SeqCst);
    let (mut c, _, _) = RawClient::handshake(&srv.socket, false).await;
    let mut idle = RawClient::connect(&srv.socket).await; // still in the handshake
    c.send(CommandKind::Read, CommandFlags::EMPTY, 1, 0, 512).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let expected = srv.device.contents()[..512].to_vec();
    let reader = tokio::spawn(async move {
        let reply = c.simple_reply(512).await;
        let closed = c.closed_within(Duration::from_secs(10)).await;
        (reply, closed)
    });
    let stats = srv.stop().await;
    let ((err, cookie, data), closed) = reader.await.unwrap();
    assert_eq!((err, cookie), (0, 1), "the read in flight was answered");
    assert_eq!(data, expected);
    assert!(closed);
    assert!(idle.closed_within(Duration::from_secs(5)).await);
    assert_eq!(stats.clients_served, 2);
    assert_eq!(stats.requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_maximum_size_writes_all_land() {
    let size = 64 * MIB;
    let srv = TestServer::start(MemDevice::new(size), ExportConfig { max_in_flight: 4, ..default_config() });
    let (c, _, _) = RawClient::handshake(&srv.socket, false).await;
    let (mut rd, mut wr) = c.stream.into_split();
    let chunk = 2 * MIB; // the device's maximum block size
    let data = common::random_bytes(size, 11);
    let sent = data.clone();
    // Send every write without waiting for a reply; replies are read concurrently.
    let sender = tokio::spawn(async move {
        for (i, piece) in sent.chunks(chunk).enumerate() {
            let r = nbd_proto::Request {
                flags: CommandFlags::EMPTY,
                kind: CommandKind::Write,
                cookie: i as u64,
                offset: (i * chunk) as u64,
                length: chunk as u32,
            };
            wr.write_all(&r.encode()).await.unwrap();
            wr.write_all(piece).await.unwrap();
        }
        wr
    });
    let mut seen = vec![false; size / chunk];
    for _ in 0..size / chunk {
        use tokio::io::AsyncReadExt;
        let mut h = [0u8; 16];
        rd.read_exact(&mut h).await.unwrap();
        assert_eq!(h[4..8], [0; 4], "write failed");
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap()) as usize;
        assert!(!std::mem::replace(&mut seen[cookie], true), "cookie {cookie} answered twice");
    }
    sender.await.unwrap();
    assert!(seen.iter().all(|&s| s));
    assert!(srv.device.contents() == data);
}
