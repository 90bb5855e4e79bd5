//! Protocol behaviour against real targets beyond plain I/O: write-path
//! variants, segment limits, redirects, the CmdSN window, NOP keepalive in
//! both directions, typed SCSI errors and every CDB the SCSI layer builds.

mod common;

use std::time::{Duration, Instant};

use common::lab::*;
use iscsi_initiator::{DataDirection, Error, PortalAddr, Session};
use iscsi_proto::scsi::cdb;
use iscsi_proto::scsi::sense::ScsiError;

async fn open(lab: &Lab, target: &str, cfg: iscsi_initiator::SessionConfig) -> Session {
    Session::login(&lab.portal(), Some(&lab.iqn(target)), cfg)
        .await
        .unwrap_or_else(|e| panic!("{}: login to {target} failed: {e}", lab.name))
}

async fn roundtrip(s: &Session, lun: u64, lba: u64, len: usize, seed: u64) {
    let data = pattern(len, seed);
    s.write_blocks(lun, lba, data.clone(), 512).await.unwrap_or_else(|e| panic!("write {len} at {lba}: {e}"));
    let back = s.read_blocks(lun, lba, (len / 512) as u32, 512).await.unwrap();
    assert!(back == data, "{len} bytes at LBA {lba} differ after the round trip");
}

/// InitialR2T=No: the initiator sends unsolicited Data-Out up to
/// FirstBurstLength, split by the target's 16 KiB MaxRecvDataSegmentLength.
#[tokio::test]
async fn unsolicited_data_out_and_small_target_segments() {
    let s = open(&TGT, "unsol", config()).await;
    let p = s.params().clone();
    assert!(!p.initial_r2t && p.immediate_data, "{p:?}");
    assert_eq!((p.first_burst_length, p.max_xmit_data_segment_length), (65536, 16384), "{p:?}");
    for (i, len) in [512, 16384, 16896, 65024, 65536, 66048, 262144 * 3 + 512, 8 << 20].into_iter().enumerate() {
        roundtrip(&s, TGT.lun, 1000 + i as u64 * 12_000, len, 40 + i as u64).await;
    }
    s.logout().await.unwrap();
}

/// ImmediateData=No and 64 KiB bursts: every byte goes out on R2Ts.
#[tokio::test]
async fn writes_driven_by_many_r2ts() {
    let s = open(&TGT, "noimm", config()).await;
    let p = s.params().clone();
    assert!(!p.immediate_data && p.initial_r2t && p.max_burst_length == 65536, "{p:?}");
    for (i, len) in [512, 65536, 65536 * 3 + 512, 4 << 20].into_iter().enumerate() {
        roundtrip(&s, TGT.lun, 2000 + i as u64 * 20_000, len, 60 + i as u64).await;
    }
    s.logout().await.unwrap();
}

/// Our MaxRecvDataSegmentLength is honoured by both targets.
#[tokio::test]
async fn small_initiator_segments_are_honoured() {
    for lab in BOTH {
        let mut cfg = config();
        cfg.proposal.max_recv_data_segment_length = 4096;
        let s = open(&lab, "ram1", cfg).await;
        roundtrip(&s, lab.lun, 1_100_000, 1 << 20, 77).await;
        s.logout().await.unwrap();
    }
}

#[tokio::test]
async fn login_redirect_is_followed_and_a_loop_is_refused() {
    let s = open(&TGT, "moved", config()).await;
    assert_eq!(s.portal().to_string(), "127.0.0.2:3261", "the session should live on istgt");
    let cap = s.read_capacity(0).await.unwrap();
    assert_eq!(cap.bytes(), 64 << 20);
    s.logout().await.unwrap();
    let err = Session::login(&TGT.portal(), Some(&TGT.iqn("loop")), config()).await.unwrap_err();
    assert!(matches!(err, Error::TooManyRedirects(_)), "{err}");
}

/// More commands than istgt's CmdSN window (32) are queued, not sent early.
#[tokio::test]
async fn commands_beyond_max_cmd_sn_are_queued() {
    let s = open(&ISTGT, "ram1", config()).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..100u64 {
        let s = s.clone();
        set.spawn(async move {
            let data = pattern(8192, 900 + i);
            s.write_blocks(ISTGT.lun, 1_300_000 + i * 16, data.clone(), 512).await.unwrap();
            let back = s.read_blocks(ISTGT.lun, 1_300_000 + i * 16, 16, 512).await.unwrap();
            assert!(back == data, "region {i} differs");
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    s.logout().await.unwrap();
}

/// tgt pings "unsol" sessions every second and drops initiators that do not
/// answer three pings; an idle session must survive by answering.
#[tokio::test]
async fn target_nop_in_pings_are_answered() {
    let mut cfg = config();
    cfg.nop_interval = Duration::from_secs(60);
    let s = open(&TGT, "unsol", cfg).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(s.closed_reason(), None);
    s.test_unit_ready(TGT.lun).await.unwrap();
    s.logout().await.unwrap();
}

/// A target that goes silent is detected by our NOP-Out within the
/// configured time, and the pending command fails instead of hanging.
#[tokio::test]
async fn a_silent_target_is_detected_by_nop_out() {
    let proxy = common::proxy::Proxy::start("127.0.0.1:3260".parse().unwrap()).await;
    let portal = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
    let mut cfg = config();
    cfg.nop_interval = Duration::from_secs(1);
    cfg.nop_timeout = Duration::from_secs(2);
    // Without recovery the loss is reported at once (recovery has its own tests).
    cfg.recovery = false;
    let s = Session::login(&portal, Some(&TGT.iqn("ram1")), cfg).await.unwrap();
    s.test_unit_ready(TGT.lun).await.unwrap();
    proxy.stall(true);
    let t0 = Instant::now();
    let err = s.read_blocks(TGT.lun, 0, 8, 512).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(8), "took {:?}", t0.elapsed());
    assert!(matches!(&err, Error::ConnectionLost(m) if m.contains("NOP-Out")), "{err}");
    let err = s.test_unit_ready(TGT.lun).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionLost(_)), "{err}");
}

/// Without recovery, a connection cut under load fails every pending
/// command promptly instead of leaving it hanging.
#[tokio::test]
async fn a_cut_connection_fails_pending_commands_without_recovery() {
    let proxy = common::proxy::Proxy::start("127.0.0.1:3261".parse().unwrap()).await;
    let portal = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
    let mut cfg = config();
    cfg.recovery = false;
    let s = Session::login(&portal, Some(&ISTGT.iqn("ram1")), cfg).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16u64 {
        let s = s.clone();
        set.spawn(async move { s.read_blocks(ISTGT.lun, i * 2048, 2048, 512).await });
    }
    proxy.cut_all();
    let t0 = Instant::now();
    while let Some(r) = set.join_next().await {
        // Commands that completed before the cut are fine; none may hang.
        if let Err(e) = r.unwrap() {
            assert!(matches!(e, Error::ConnectionLost(_)), "{e}");
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(s.test_unit_ready(ISTGT.lun).await.is_err());
}

#[tokio::test]
async fn reading_past_the_end_is_a_typed_scsi_error() {
    for lab in BOTH {
        let s = open(&lab, "ram1", config()).await;
        let err = s.read_blocks(lab.lun, (1 << 30) / 512, 1, 512).await.unwrap_err();
        match (&err, lab.name) {
            (Error::Scsi(ScsiError::CheckCondition(sense)), "tgt") => {
                assert_eq!((sense.asc, sense.ascq), (0x21, 0x00), "{}: {err}", lab.name);
                assert!(err.to_string().contains("out of range"), "{err}");
            }
            // istgt answers CHECK CONDITION with no sense data at all (and
            // REQUEST SENSE then reports NO SENSE): the error must say so.
            (Error::Scsi(ScsiError::NoSense), "istgt") => {
                assert!(err.to_string().contains("without sense data"), "{err}");
            }
            (other, name) => panic!("{name}: expected a CHECK CONDITION, got {other}"),
        }
        s.logout().await.unwrap();
    }
}

/// Every CDB of the SCSI layer is accepted by both targets.
#[tokio::test]
async fn every_cdb_form_works() {
    for lab in BOTH {
        let s = open(&lab, "ram1", config()).await;
        let data = pattern(4096, 5);
        let lba = 1_400_000u64;
        s.command(lab.lun, &cdb::write16(lba, 8), DataDirection::Write(data.clone())).await.unwrap();
        let r = s.command(lab.lun, &cdb::read16(lba, 8), DataDirection::Read(4096)).await.unwrap();
        assert!(r.data == data, "{}: READ(16) after WRITE(16)", lab.name);
        s.command(lab.lun, &cdb::write10(lba as u32 + 8, 8), DataDirection::Write(data.clone())).await.unwrap();
        let r = s.command(lab.lun, &cdb::read10(lba as u32 + 8, 8), DataDirection::Read(4096)).await.unwrap();
        assert!(r.data == data, "{}: READ(10) after WRITE(10)", lab.name);
        s.command(lab.lun, &cdb::synchronize_cache10(0, 0), DataDirection::None).await.unwrap();
        s.command(lab.lun, &cdb::synchronize_cache16(0, 0), DataDirection::None).await.unwrap();
        let r = s.command(lab.lun, &cdb::read_capacity16(32), DataDirection::Read(32)).await.unwrap();
        let rc = iscsi_proto::scsi::data::ReadCapacity16::parse(&r.data).unwrap();
        assert_eq!(rc.last_lba + 1, (1 << 30) / 512, "{}", lab.name);
        let pages = iscsi_proto::scsi::data::parse_vpd_supported_pages(&s.vpd(lab.lun, 0x00).await.unwrap()).unwrap();
        assert!(pages.contains(&0x80) && pages.contains(&0x83), "{}: {pages:?}", lab.name);
        let serial = iscsi_proto::scsi::data::parse_vpd_unit_serial(&s.vpd(lab.lun, 0x80).await.unwrap()).unwrap();
        assert!(!serial.is_empty(), "{}", lab.name);
        let ids =
            iscsi_proto::scsi::data::parse_vpd_device_identification(&s.vpd(lab.lun, 0x83).await.unwrap()).unwrap();
        assert!(!ids.is_empty(), "{}", lab.name);
        s.logout().await.unwrap();
    }
}
