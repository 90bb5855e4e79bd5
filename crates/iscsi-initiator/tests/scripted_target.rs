//! Cases no real target can be made to produce on cue (Async Messages,
//! Reject, NOP-In with ping data), played by a minimal scripted target on
//! loopback built from the protocol core.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iscsi_initiator::{Error, PortalAddr, Session, SessionConfig};
use iscsi_proto::pdu::*;
use iscsi_proto::text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Peer {
    stream: TcpStream,
    buf: BytesMut,
    dec: PduDecoder,
    stat_sn: u32,
    exp_cmd_sn: u32,
}

impl Peer {
    async fn recv(&mut self) -> Option<Pdu> {
        loop {
            if let Some(p) = self.dec.decode(&mut self.buf).unwrap() {
                return Some(p);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    async fn send(&mut self, bhs: impl Into<Bhs>, data: Bytes) {
        let mut out = BytesMut::new();
        encode_pdu(&Pdu::new(bhs, data), &FrameConfig::default(), &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    fn next_stat_sn(&mut self) -> u32 {
        self.stat_sn += 1;
        self.stat_sn - 1
    }

    /// Answers a login: AuthMethod=None, then every operational key with
    /// the value offered (always acceptable under the result functions).
    async fn login(listener: &TcpListener) -> Peer {
        let (stream, _) = listener.accept().await.unwrap();
        let mut p = Peer { stream, buf: BytesMut::new(), dec: PduDecoder::default(), stat_sn: 1, exp_cmd_sn: 1 };
        loop {
            let pdu = p.recv().await.expect("login request");
            let Bhs::LoginRequest(req) = pdu.bhs else { panic!("expected a login request") };
            let keys = text::parse(&pdu.data).unwrap();
            let mut answer = Vec::new();
            for (k, v) in &keys {
                let v = v.split(',').next().unwrap_or_default().to_string();
                match k.as_str() {
                    "AuthMethod" => answer.push((k.clone(), "None".to_string())),
                    "InitiatorName" | "TargetName" | "SessionType" | "InitiatorAlias" => {}
                    "MaxRecvDataSegmentLength" => answer.push((k.clone(), "65536".to_string())),
                    _ => answer.push((k.clone(), v)),
                }
            }
            let mut data = Vec::new();
            text::encode(&answer, &mut data);
            p.exp_cmd_sn = req.cmd_sn;
            let rsp = LoginResponse {
                transit: req.transit,
                csg: req.csg,
                nsg: req.nsg,
                isid: req.isid,
                tsih: if req.nsg == 3 { 7 } else { 0 },
                itt: req.itt,
                stat_sn: p.next_stat_sn(),
                exp_cmd_sn: p.exp_cmd_sn,
                max_cmd_sn: p.exp_cmd_sn + 16,
                ..Default::default()
            };
            p.send(rsp, Bytes::from(data)).await;
            if req.transit && req.nsg == 3 {
                p.dec.config.max_recv_data_segment_length = 262_144;
                return p;
            }
        }
    }
}

async fn setup() -> (TcpListener, PortalAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, PortalAddr { host: "127.0.0.1".into(), port })
}

fn cfg() -> SessionConfig {
    let mut c = SessionConfig::new("iqn.2026-11.rs.rsiscsi:scripted");
    c.command_timeout = Duration::from_secs(5);
    // These cases are about the errors themselves; recovery (which would
    // log in again) has its own tests against real targets.
    c.recovery = false;
    c
}

#[tokio::test]
async fn async_logout_request_makes_the_initiator_log_out() {
    let (l, portal) = setup().await;
    let target = tokio::spawn(async move {
        let mut p = Peer::login(&l).await;
        let m = AsyncMessage {
            async_event: 1,
            parameter3: 2,
            stat_sn: p.next_stat_sn(),
            exp_cmd_sn: 1,
            max_cmd_sn: 17,
            ..Default::default()
        };
        p.send(m, Bytes::new()).await;
        let pdu = p.recv().await.expect("a logout request");
        let Bhs::LogoutRequest(req) = pdu.bhs else { panic!("expected Logout, got {:?}", pdu.bhs) };
        assert_eq!(req.reason, logout_reason::CLOSE_SESSION);
        let rsp = LogoutResponse {
            itt: req.itt,
            stat_sn: p.next_stat_sn(),
            exp_cmd_sn: 1,
            max_cmd_sn: 17,
            ..Default::default()
        };
        p.send(rsp, Bytes::new()).await;
        // The initiator then closes the connection.
        assert!(p.recv().await.is_none());
    });
    let s = Session::login(&portal, Some("iqn.x:scripted"), cfg()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), target).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.closed_reason().is_some());
    assert!(s.test_unit_ready(0).await.is_err());
}

#[tokio::test]
async fn async_connection_drop_fails_pending_commands() {
    let (l, portal) = setup().await;
    let target = tokio::spawn(async move {
        let mut p = Peer::login(&l).await;
        let _cmd = p.recv().await.expect("a command");
        let m = AsyncMessage {
            async_event: 2,
            stat_sn: p.next_stat_sn(),
            exp_cmd_sn: 2,
            max_cmd_sn: 18,
            ..Default::default()
        };
        p.send(m, Bytes::new()).await;
        let _ = p.recv().await;
    });
    let s = Session::login(&portal, Some("iqn.x:scripted"), cfg()).await.unwrap();
    let err = s.test_unit_ready(0).await.unwrap_err();
    assert!(matches!(&err, Error::ConnectionLost(m) if m.contains("dropping")), "{err}");
    target.abort();
}

#[tokio::test]
async fn a_rejected_command_fails_with_the_reason() {
    let (l, portal) = setup().await;
    let target = tokio::spawn(async move {
        let mut p = Peer::login(&l).await;
        let cmd = p.recv().await.expect("a command");
        let Bhs::ScsiCommand(c) = cmd.bhs else { panic!("expected a SCSI command") };
        let header = Bytes::copy_from_slice(&cmd.bhs.encode(0, 0));
        let r = Reject {
            reason: 0x04,
            stat_sn: p.next_stat_sn(),
            exp_cmd_sn: c.cmd_sn + 1,
            max_cmd_sn: c.cmd_sn + 17,
            ..Default::default()
        };
        p.send(r, header).await;
        let _ = p.recv().await;
    });
    let s = Session::login(&portal, Some("iqn.x:scripted"), cfg()).await.unwrap();
    let err = s.test_unit_ready(0).await.unwrap_err();
    assert!(matches!(&err, Error::Rejected(m) if m.contains("protocol error")), "{err}");
    target.abort();
}

#[tokio::test]
async fn nop_in_with_a_ttt_is_echoed() {
    let (l, portal) = setup().await;
    let target = tokio::spawn(async move {
        let mut p = Peer::login(&l).await;
        let n = NopIn {
            itt: RESERVED_TAG,
            ttt: 0x1234,
            stat_sn: p.stat_sn,
            exp_cmd_sn: 1,
            max_cmd_sn: 17,
            ..Default::default()
        };
        p.send(n, Bytes::from_static(b"ping")).await;
        let pdu = p.recv().await.expect("a NOP-Out");
        let Bhs::NopOut(o) = pdu.bhs else { panic!("expected NOP-Out, got {:?}", pdu.bhs) };
        assert_eq!((o.ttt, o.itt, o.immediate), (0x1234, RESERVED_TAG, true));
        assert_eq!(&pdu.data[..], b"ping");
        // An unsolicited NOP-In does not advance StatSN (RFC 7143 §11.19).
        assert_eq!(o.exp_stat_sn, p.stat_sn);
    });
    let _s = Session::login(&portal, Some("iqn.x:scripted"), cfg()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), target).await.unwrap().unwrap();
}

#[tokio::test]
async fn data_in_beyond_the_expected_length_is_refused() {
    let (l, portal) = setup().await;
    let target = tokio::spawn(async move {
        let mut p = Peer::login(&l).await;
        let cmd = p.recv().await.expect("a command");
        let Bhs::ScsiCommand(c) = cmd.bhs else { panic!("expected a SCSI command") };
        let d = DataIn {
            final_bit: true,
            status_present: true,
            itt: c.itt,
            stat_sn: p.next_stat_sn(),
            exp_cmd_sn: c.cmd_sn + 1,
            max_cmd_sn: c.cmd_sn + 17,
            ..Default::default()
        };
        p.send(d, Bytes::from(vec![0u8; 1024])).await;
        let _ = p.recv().await;
    });
    let s = Session::login(&portal, Some("iqn.x:scripted"), cfg()).await.unwrap();
    let err = s.read_blocks(0, 0, 1, 512).await.unwrap_err();
    assert!(matches!(&err, Error::ConnectionLost(m) if m.contains("beyond")), "{err}");
    target.abort();
}

/// A target that starts on nothing until it has twelve commands: the ones
/// the initiator holds back while the target is busy (session::io::Link)
/// must still reach it, within a sweep of the session (≤ 250 ms).
#[tokio::test]
async fn held_back_commands_reach_a_target_that_waits_for_them() {
    const N: usize = 12;
    let (l, portal) = setup().await;
    let target = tokio::spawn(async move {
        let mut p = Peer::login(&l).await;
        let mut cmds = Vec::new();
        while cmds.len() < N {
            let pdu = p.recv().await.expect("all twelve commands arrive");
            if let Bhs::ScsiCommand(c) = pdu.bhs {
                cmds.push(c);
            }
        }
        for c in cmds {
            let rsp = ScsiResponse {
                itt: c.itt,
                stat_sn: p.next_stat_sn(),
                exp_cmd_sn: c.cmd_sn + 1,
                max_cmd_sn: c.cmd_sn + 17,
                ..Default::default()
            };
            p.send(rsp, Bytes::new()).await;
        }
        let _ = p.recv().await;
    });
    let s = Session::login(&portal, Some("iqn.x:scripted"), cfg()).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..N {
        let s = s.clone();
        set.spawn(async move { s.test_unit_ready(0).await });
    }
    let all = tokio::time::timeout(Duration::from_secs(3), set.join_all()).await.expect("no command stays held back");
    assert!(all.iter().all(|r| r.is_ok()), "{all:?}");
    target.abort();
}
