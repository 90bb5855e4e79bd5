//! The real initiator against a misbehaving target: every case must end in
//! a clear error of the expected kind, within a bounded time, without a
//! panic. Plus a happy path proving the simulated target sound.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use iscsi_initiator::discovery::send_targets;
use iscsi_initiator::session::ConnectionLogin;
use iscsi_initiator::{DataDirection, Error, PortalAddr, Session, SessionConfig};
use iscsi_proto::chap::{ChapAlgorithm, ChapConfig, ChapError, Secret};
use iscsi_proto::negotiation::Digest;
use iscsi_proto::scsi::cdb;
use iscsi_target_sim::{Fault, Phase, SimConfig, SimTarget};

/// Upper bound on any one case.
const CASE_LIMIT: Duration = Duration::from_secs(20);

const BS: u32 = 512;

fn portal(t: &SimTarget) -> PortalAddr {
    PortalAddr { host: "127.0.0.1".into(), port: t.addr().port() }
}

/// Short timeouts so every failure shows within seconds; no recovery, so
/// the errors themselves are seen.
fn cfg() -> SessionConfig {
    let mut c = SessionConfig::new("iqn.2026-11.rs.rsiscsi:hostile");
    c.connect_timeout = Duration::from_secs(3);
    c.login_timeout = Duration::from_secs(3);
    c.nop_interval = Duration::from_secs(2);
    c.nop_timeout = Duration::from_secs(2);
    c.command_timeout = Duration::from_secs(5);
    c.recovery = false;
    // A 1 MiB read then comes as four Data-In PDUs, so the faults that
    // strike after the first one strike mid-transfer.
    c.proposal.max_recv_data_segment_length = 256 * 1024;
    c
}

fn with_digests(mut c: SessionConfig) -> SessionConfig {
    c.proposal.header_digest = vec![Digest::Crc32c, Digest::None];
    c.proposal.data_digest = vec![Digest::Crc32c, Digest::None];
    c
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(CASE_LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("case did not end within {CASE_LIMIT:?}"),
    }
}

async fn sim(fault: Fault) -> SimTarget {
    sim_with(SimConfig::with_fault(fault)).await
}

async fn sim_with(c: SimConfig) -> SimTarget {
    SimTarget::start(c).await.expect("bind loopback")
}

async fn login(t: &SimTarget, c: SessionConfig) -> Result<Session, Error> {
    Session::login(&portal(t), Some(t.target_name()), c).await
}

fn random(len: usize) -> Bytes {
    Bytes::from((0..len).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

/// The error of `r`, which must be a failure.
fn fails<T: std::fmt::Debug>(r: Result<T, Error>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            // Shown with --nocapture: what a user would read.
            eprintln!("error: {e}");
            e
        }
    }
}

fn lost(e: &Error, needle: &str) {
    assert!(
        matches!(e, Error::ConnectionLost(m) if m.contains(needle)),
        "expected ConnectionLost({needle:?}), got {e:?}"
    );
}

// ---------------------------------------------------------------- happy path

#[tokio::test]
async fn happy_path_write_then_read_back() {
    // A data segment smaller than FirstBurstLength, so a large write uses
    // immediate data, unsolicited Data-Out and R2T.
    let t = sim_with(SimConfig {
        max_recv_data_segment_length: 16_384,
        first_burst_length: 65_536,
        ..SimConfig::default()
    })
    .await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        s.test_unit_ready(0).await.unwrap();
        let inq = s.inquiry(0).await.unwrap();
        assert_eq!(inq.vendor.trim(), "RSISCSI");
        let cap = s.read_capacity(0).await.unwrap();
        assert_eq!((cap.blocks, cap.block_size), (16 * 1024 * 1024 / 512, 512));
        assert_eq!(s.report_luns().await.unwrap(), vec![0]);
        // 1 MiB: immediate data, unsolicited Data-Out, then R2Ts; read back
        // over several Data-In PDUs.
        let big = random(1 << 20);
        s.write_blocks(0, 100, big.clone(), BS).await.unwrap();
        assert_eq!(s.read_blocks(0, 100, (1 << 20) / BS, BS).await.unwrap(), big);
        // The 16-byte CDBs: READ/WRITE(16) and READ CAPACITY(16).
        let w16 = random(2048);
        let out = s.command(0, &cdb::write16(40, 4), DataDirection::Write(w16.clone())).await.unwrap();
        assert_eq!(out.residual, 0);
        let out = s.command(0, &cdb::read16(40, 4), DataDirection::Read(2048)).await.unwrap();
        assert_eq!(out.data, w16);
        let out = s.command(0, &cdb::read_capacity16(32), DataDirection::Read(32)).await.unwrap();
        assert_eq!(out.data.get(..8), Some(&(32_767u64).to_be_bytes()[..]));
        // Reading past the end is a CHECK CONDITION, not a crash.
        let e = fails(s.read_blocks(0, 32_767, 2, BS).await);
        assert!(matches!(e, Error::Scsi(_)), "{e:?}");
        // A small write fits in immediate data.
        let small = random(4096);
        s.write_blocks(0, 7, small.clone(), BS).await.unwrap();
        assert_eq!(s.read_blocks(0, 7, 8, BS).await.unwrap(), small);
        assert_eq!(t.lun_bytes(7 * 512, 4096), small.to_vec());
        s.logout().await.unwrap();
        let st = t.stats();
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        assert!(st.immediate_bytes >= 16_384 + 4096, "{st:?}");
        assert_eq!(st.unsolicited_data_outs, 3, "{st:?}");
        assert!(st.r2ts >= 4 && st.solicited_data_outs >= 60, "{st:?}");
        // 1 MiB read at the initiator's 256 KiB MaxRecvDataSegmentLength.
        assert!(st.data_ins >= 4, "{st:?}");
    })
    .await;
}

#[tokio::test]
async fn happy_path_with_digests_chap_and_initial_r2t() {
    let t = sim_with(SimConfig {
        chap: Some(("alice".into(), b"secret-of-alice".to_vec())),
        digests: true,
        initial_r2t: true,
        immediate_data: false,
        max_burst_length: 65_536,
        ..SimConfig::default()
    })
    .await;
    bounded(async {
        let mut c = with_digests(cfg());
        c.chap = Some(ChapConfig::new("alice", Secret::new(b"secret-of-alice".to_vec())));
        let s = login(&t, c).await.unwrap();
        assert_eq!(s.params().header_digest, Digest::Crc32c);
        assert_eq!(s.params().data_digest, Digest::Crc32c);
        let data = random(300 * 1024);
        s.write_blocks(0, 0, data.clone(), BS).await.unwrap();
        assert_eq!(s.read_blocks(0, 0, 600, BS).await.unwrap(), data);
        s.logout().await.unwrap();
        let st = t.stats();
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        assert_eq!((st.immediate_bytes, st.unsolicited_data_outs), (0, 0), "{st:?}");
        assert_eq!(st.r2ts, 5, "{st:?}");
    })
    .await;
}

#[tokio::test]
async fn happy_path_mutual_chap() {
    let t = sim_with(SimConfig {
        chap: Some(("alice".into(), b"secret-of-alice".to_vec())),
        mutual_chap: Some(("target-bob".into(), b"secret-of-target".to_vec())),
        ..SimConfig::default()
    })
    .await;
    bounded(async {
        let mut c = cfg();
        c.chap = Some(
            ChapConfig::new("alice", Secret::new(b"secret-of-alice".to_vec()))
                .with_target("target-bob", Secret::new(b"secret-of-target".to_vec())),
        );
        let s = login(&t, c).await.unwrap();
        s.test_unit_ready(0).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn happy_path_two_connections_in_one_session() {
    let t = sim_with(SimConfig { max_connections: 2, ..SimConfig::default() }).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        assert_eq!(s.params().max_connections, 2);
        s.connect_more(&portal(&t), &ConnectionLogin::default()).await.unwrap();
        assert_eq!(s.connections().len(), 2);
        // Commands spread over both connections share one CmdSN window.
        let mut jobs = Vec::new();
        for i in 0..16u64 {
            let s = s.clone();
            jobs.push(tokio::spawn(async move {
                let data = random(64 * 1024);
                s.write_blocks(0, i * 128, data.clone(), BS).await.unwrap();
                assert_eq!(s.read_blocks(0, i * 128, 128, BS).await.unwrap(), data);
            }));
        }
        for j in jobs {
            j.await.unwrap();
        }
        for c in s.connections() {
            assert!(c.counters.commands > 0, "connection {} carried nothing: {:?}", c.cid, c.counters);
        }
        // The target's MaxConnections holds.
        let e = fails(s.connect_more(&portal(&t), &ConnectionLogin::default()).await);
        assert!(matches!(e, Error::TooManyConnections { limit: 2 }), "{e:?}");
        s.logout().await.unwrap();
        let st = t.stats();
        assert_eq!(st.logins, 2, "{st:?}");
        assert!(st.violations.is_empty(), "{:?}", st.violations);
    })
    .await;
}

#[tokio::test]
async fn wrong_chap_secret_is_refused() {
    let t =
        sim_with(SimConfig { chap: Some(("alice".into(), b"secret-of-alice".to_vec())), ..SimConfig::default() }).await;
    bounded(async {
        let mut c = cfg();
        c.chap = Some(ChapConfig::new("alice", Secret::new(b"not-the-secret".to_vec())));
        let e = fails(login(&t, c).await);
        assert!(matches!(&e, Error::Login { status, .. } if status.class == 2 && status.detail == 1), "{e:?}");
        assert!(e.to_string().contains("authentication failed"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn discovery_lists_the_target() {
    let t = sim(Fault::None).await;
    bounded(async {
        let found = send_targets(&portal(&t), cfg()).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, t.target_name());
        assert_eq!(found[0].portals[0].addr.port, t.addr().port());
    })
    .await;
}

// ------------------------------------------------------------------ framing

#[tokio::test]
async fn data_segment_length_beyond_the_limit() {
    let t = sim(Fault::DataSegmentTooLong).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        // Refused from the header alone: nothing is buffered for it.
        lost(&e, "data segment of 16777215 bytes exceeds the negotiated limit");
    })
    .await;
}

#[tokio::test]
async fn total_ahs_length_at_its_maximum() {
    let t = sim(Fault::AhsTooLong).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        // 1020 bytes is all TotalAHSLength can say, so the length is bounded
        // by the field itself (RFC 7143 §11.2.1.4). A SCSI Response defines
        // no AHS (§11.4): the initiator skips it and the session goes on.
        s.test_unit_ready(0).await.unwrap();
        s.test_unit_ready(0).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn truncated_pdu_then_close() {
    let t = sim(Fault::TruncatedPdu).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        lost(&e, "closed the connection");
    })
    .await;
}

#[tokio::test]
async fn bad_header_digest() {
    let t = sim_with(SimConfig { digests: true, fault: Fault::BadHeaderDigest, ..SimConfig::default() }).await;
    bounded(async {
        let s = login(&t, with_digests(cfg())).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        lost(&e, "header digest mismatch");
    })
    .await;
}

#[tokio::test]
async fn bad_data_digest() {
    let t = sim_with(SimConfig { digests: true, fault: Fault::BadDataDigest, ..SimConfig::default() }).await;
    bounded(async {
        let s = login(&t, with_digests(cfg())).await.unwrap();
        let e = fails(s.read_blocks(0, 0, 8, BS).await);
        lost(&e, "data digest mismatch");
    })
    .await;
}

#[tokio::test]
async fn garbage_after_login() {
    let t = sim(Fault::GarbageAfterLogin).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        assert!(
            matches!(&e, Error::ConnectionLost(m) if m.contains("malformed PDU")),
            "expected the garbage to be named a malformed PDU, got {e:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_opcode() {
    let t = sim(Fault::UnknownOpcode).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        lost(&e, "unknown opcode 0x1c");
    })
    .await;
}

#[tokio::test]
async fn reject_of_our_command() {
    let t = sim(Fault::RejectCommand).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        assert!(matches!(&e, Error::Rejected(m) if m.contains("protocol error")), "{e:?}");
        // The session goes on after a Reject of one command.
        s.test_unit_ready(0).await.unwrap();
    })
    .await;
}

// --------------------------------------------------------------- sequencing

#[tokio::test]
async fn data_in_with_a_wrong_itt() {
    let t = sim(Fault::DataInWrongItt).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.read_blocks(0, 0, 8, BS).await);
        lost(&e, "Data-In for unknown task");
    })
    .await;
}

#[tokio::test]
async fn data_sn_gap() {
    let t = sim(Fault::DataSnGap).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.read_blocks(0, 0, 8, BS).await);
        lost(&e, "DataSN 1 where 0 was due");
    })
    .await;
}

#[tokio::test]
async fn data_sn_repeat() {
    let t = sim(Fault::DataSnRepeat).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        // 1 MiB comes in several Data-In PDUs; the first is sent twice.
        let e = fails(s.read_blocks(0, 0, 2048, BS).await);
        lost(&e, "DataSN 0 where 1 was due");
    })
    .await;
}

#[tokio::test]
async fn data_overrun() {
    let t = sim(Fault::DataOverrun).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.read_blocks(0, 0, 8, BS).await);
        lost(&e, "beyond the expected transfer length of 4096 bytes");
    })
    .await;
}

#[tokio::test]
async fn buffer_offset_outside_the_command() {
    let t = sim(Fault::BufferOffsetOutside).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.read_blocks(0, 0, 8, BS).await);
        lost(&e, "Data-In at offset 8192 where 0 was due");
    })
    .await;
}

#[tokio::test]
async fn stat_sn_jump() {
    let t = sim(Fault::StatSnJump).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        lost(&e, "StatSN");
    })
    .await;
}

#[tokio::test]
async fn cmd_window_moving_backwards() {
    let t = sim(Fault::CmdWindowBackwards).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        // RFC 7143 §4.2.2.1: an ExpCmdSN or MaxCmdSN older than the one in
        // hand is ignored; the session carries on.
        for _ in 0..4 {
            s.test_unit_ready(0).await.unwrap();
        }
        let data = random(8192);
        s.write_blocks(0, 3, data.clone(), BS).await.unwrap();
        assert_eq!(s.read_blocks(0, 3, 16, BS).await.unwrap(), data);
    })
    .await;
}

#[tokio::test]
async fn command_window_closed_then_opened() {
    let t = sim(Fault::WindowClosed { secs: 3 }).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let start = Instant::now();
        // The command waits for the window (NOP-Outs are immediate and
        // still answered meanwhile), then runs.
        s.test_unit_ready(0).await.unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(2500), "ran after {waited:?} with the window closed");
        let st = t.stats();
        assert!(st.violations.is_empty(), "{:?}", st.violations);
    })
    .await;
}

#[tokio::test]
async fn r2t_outside_the_transfer() {
    let t = sim(Fault::R2tOutside).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.write_blocks(0, 0, random(1 << 20), BS).await);
        lost(&e, "outside the 1048576-byte write");
    })
    .await;
}

#[tokio::test]
async fn scsi_response_for_a_command_never_sent() {
    let t = sim(Fault::ResponseForUnsentCommand).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        lost(&e, "SCSI Response for unknown task");
    })
    .await;
}

// --------------------------------------------------------------- login/auth

fn chap_sim(fault: Fault) -> SimConfig {
    SimConfig { chap: Some(("alice".into(), b"secret-of-alice".to_vec())), fault, ..SimConfig::default() }
}

fn chap_cfg() -> SessionConfig {
    let mut c = cfg();
    c.chap = Some(ChapConfig::new("alice", Secret::new(b"secret-of-alice".to_vec())));
    c
}

#[tokio::test]
async fn chap_challenge_reflected_from_an_earlier_connection() {
    let t = sim_with(SimConfig {
        mutual_chap: Some(("target-bob".into(), b"secret-of-target".to_vec())),
        ..chap_sim(Fault::ChapReflect)
    })
    .await;
    bounded(async {
        let mut c = cfg();
        c.chap = Some(
            ChapConfig::new("alice", Secret::new(b"secret-of-alice".to_vec()))
                .with_target("target-bob", Secret::new(b"secret-of-target".to_vec())),
        );
        // The first connection is redirected after our challenge; on the
        // second the target asks our own challenge and hands our answer back.
        let e = fails(login(&t, c).await);
        assert!(matches!(e, Error::Chap(ChapError::WrongTargetResponse)), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn chap_challenge_of_absurd_size() {
    let t = sim_with(chap_sim(Fault::ChapHugeChallenge)).await;
    bounded(async {
        let e = fails(login(&t, chap_cfg()).await);
        assert!(
            matches!(&e, Error::Text(_) | Error::Chap(ChapError::Malformed { .. })),
            "expected a refused length, got {e:?}"
        );
        assert!(e.to_string().contains("CHAP_C") && e.to_string().contains("longer than"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn chap_algorithm_not_offered() {
    let t = sim_with(chap_sim(Fault::ChapWrongAlgorithm)).await;
    bounded(async {
        let mut c = chap_cfg();
        if let Some(chap) = c.chap.take() {
            c.chap = Some(chap.with_algorithms(vec![ChapAlgorithm::Md5]));
        }
        let e = fails(login(&t, c).await);
        assert!(matches!(&e, Error::Chap(ChapError::AlgorithmNotOffered(a)) if a == "7"), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn operational_key_repeated() {
    let t = sim(Fault::KeyRepeated).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Negotiation(_)), "{e:?}");
        assert!(e.to_string().contains("MaxBurstLength"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn key_answered_out_of_turn() {
    let t = sim(Fault::KeyOutOfTurn).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Negotiation(_) | Error::Protocol(_)), "{e:?}");
        assert!(e.to_string().contains("AuthMethod"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn redirect_loop() {
    let t = sim(Fault::RedirectLoop).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(e, Error::TooManyRedirects(4)), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn redirect_to_a_target_address_that_is_not_an_address() {
    let t = sim(Fault::BadTargetAddress).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Protocol(m) if m.contains("invalid TargetAddress")), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn send_targets_with_a_target_address_that_is_not_an_address() {
    let t = sim(Fault::SendTargetsBadAddress).await;
    bounded(async {
        let e = fails(send_targets(&portal(&t), cfg()).await);
        assert!(matches!(&e, Error::Protocol(m) if m.contains("invalid TargetAddress \"not an address\"")), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn discovery_login_that_never_finishes() {
    let t = sim(Fault::LoginNeverFinishes).await;
    bounded(async {
        let e = fails(send_targets(&portal(&t), cfg()).await);
        assert!(matches!(&e, Error::Timeout(m) if m.contains("login response")), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn send_targets_answer_that_never_ends() {
    let t = sim(Fault::TextEndlessContinuation).await;
    bounded(async {
        let e = fails(send_targets(&portal(&t), cfg()).await);
        // The joined text is bounded (1 MiB), not the target's patience;
        // the connection is dropped over it.
        lost(&e, "malformed text from the target");
        assert!(e.to_string().contains("exceeds the limit of 1048576"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn login_that_never_moves_on() {
    let t = sim(Fault::LoginNeverTransits).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Protocol(m) if m.contains("did not end")), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn login_response_data_segment_beyond_8192() {
    let t = sim(Fault::LoginDataSegmentTooLong).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Pdu(_)), "{e:?}");
        assert!(e.to_string().contains("16777215 bytes exceeds the negotiated limit of 8192"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn login_that_never_finishes() {
    let t = sim(Fault::LoginNeverFinishes).await;
    bounded(async {
        let start = Instant::now();
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Timeout(m) if m.contains("login response")), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(6));
    })
    .await;
}

// ----------------------------------------------------------------- liveness

#[tokio::test]
async fn target_stops_answering_mid_transfer() {
    let t = sim(Fault::StopAnswering).await;
    bounded(async {
        let mut c = cfg();
        // Longer than NOP interval + timeout, so the ping is what fires.
        c.command_timeout = Duration::from_secs(15);
        let s = login(&t, c).await.unwrap();
        let start = Instant::now();
        let e = fails(s.read_blocks(0, 0, 2048, BS).await);
        lost(&e, "no answer to NOP-Out within 2 s");
        assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
    })
    .await;
}

#[tokio::test]
async fn slow_loris_target_is_ended_by_the_command_timeout() {
    let t = sim(Fault::SlowLoris).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let start = Instant::now();
        // One byte every 500 ms: a 48-byte response would take 24 s. The
        // command timeout or the NOP-Out timeout, whichever is first, ends it.
        let e = fails(s.test_unit_ready(0).await);
        assert!(
            matches!(&e, Error::Timeout(m) if m.contains("the target's answer"))
                || matches!(&e, Error::ConnectionLost(m) if m.contains("NOP-Out")),
            "{e:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(7), "{:?}", start.elapsed());
    })
    .await;
}

#[tokio::test]
async fn slow_loris_target_is_declared_dead_by_the_nop_timeout() {
    let t = sim(Fault::SlowLoris).await;
    bounded(async {
        let mut c = cfg();
        c.command_timeout = Duration::from_secs(30);
        let s = login(&t, c).await.unwrap();
        let start = Instant::now();
        let e = fails(s.test_unit_ready(0).await);
        lost(&e, "NOP-Out");
        assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
    })
    .await;
}

#[tokio::test]
async fn logout_never_answered_times_out() {
    let t = sim(Fault::LogoutNeverAnswered).await;
    bounded(async {
        let mut c = cfg();
        // Pings out of the way: the command timeout bounds the logout.
        c.nop_interval = Duration::from_secs(30);
        let s = login(&t, c).await.unwrap();
        s.test_unit_ready(0).await.unwrap();
        let start = Instant::now();
        let e = fails(s.logout().await);
        assert!(matches!(&e, Error::Timeout(m) if m.contains("the target's answer")), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(7), "{:?}", start.elapsed());
    })
    .await;
}

#[tokio::test]
async fn logout_never_answered_is_not_a_success() {
    let t = sim(Fault::LogoutNeverAnswered).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        s.test_unit_ready(0).await.unwrap();
        let e = fails(s.logout().await);
        assert!(matches!(&e, Error::Timeout(_) | Error::ConnectionLost(_)), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn reset_on_accept() {
    let t = sim(Fault::Reset(Phase::Accept)).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Io(_) | Error::ConnectionLost(_)), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn reset_during_login() {
    let t = sim(Fault::Reset(Phase::Login)).await;
    bounded(async {
        let e = fails(login(&t, cfg()).await);
        assert!(matches!(&e, Error::Io(_) | Error::ConnectionLost(_)), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn reset_in_full_feature_phase() {
    let t = sim(Fault::Reset(Phase::FullFeature)).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.test_unit_ready(0).await);
        assert!(matches!(&e, Error::ConnectionLost(m) if m.contains("reset") || m.contains("closed")), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn reset_mid_data_in() {
    let t = sim(Fault::Reset(Phase::DataIn)).await;
    bounded(async {
        let s = login(&t, cfg()).await.unwrap();
        let e = fails(s.read_blocks(0, 0, 2048, BS).await);
        assert!(matches!(&e, Error::ConnectionLost(m) if m.contains("reset") || m.contains("closed")), "{e:?}");
    })
    .await;
}
