//! Against real targets (tgt and istgt on loopback): discovery, login with
//! and without CHAP, digests, and data written then read back byte-identical.

mod common;

use common::lab::*;
use iscsi_initiator::discovery::send_targets;
use iscsi_initiator::{Error, Session};
use iscsi_proto::negotiation::Digest;

async fn open(lab: &Lab, target: &str, cfg: iscsi_initiator::SessionConfig) -> Session {
    Session::login(&lab.portal(), Some(&lab.iqn(target)), cfg)
        .await
        .unwrap_or_else(|e| panic!("{}: login to {target} failed: {e}", lab.name))
}

/// A session to `ram1` for a busy test: commands may wait `secs` seconds
/// for their answers before they fail.
async fn open_busy(lab: &Lab, secs: u64) -> Session {
    let mut cfg = config();
    cfg.command_timeout = std::time::Duration::from_secs(secs);
    open(lab, "ram1", cfg).await
}

#[tokio::test]
async fn discovery_lists_every_target_with_all_addresses() {
    // istgt lists every portal of the group; tgt lists the address family
    // the discovery session came in on, so ask over IPv4 and IPv6.
    for lab in BOTH {
        let mut addrs: std::collections::HashMap<String, Vec<String>> = Default::default();
        for host in ["127.0.0.1", "::1"] {
            let portal = iscsi_initiator::PortalAddr { host: host.into(), port: lab.port };
            for d in send_targets(&portal, config()).await.unwrap() {
                addrs.entry(d.name).or_default().extend(d.portals.iter().map(|p| p.to_string()));
            }
        }
        for t in ["ram1", "chap", "mutual"] {
            let a = addrs.get(&lab.iqn(t)).unwrap_or_else(|| panic!("{}: {t} missing from {addrs:?}", lab.name));
            assert!(a.contains(&format!("127.0.0.1:{},1", lab.port)), "{}: {a:?}", lab.name);
            assert!(a.contains(&format!("[::1]:{},1", lab.port)), "{}: {a:?}", lab.name);
        }
    }
}

#[tokio::test]
async fn discovery_with_chap() {
    let portal = iscsi_initiator::PortalAddr { host: "127.0.0.1".into(), port: DISCOVERY_CHAP_PORT };
    let mut cfg = config();
    cfg.chap = Some(chap(DISCOVERY_CHAP_USER, DISCOVERY_CHAP_SECRET));
    let targets = send_targets(&portal, cfg).await.unwrap();
    assert!(targets.iter().any(|t| t.name == "iqn.2024-01.lab.istgt-dchap:ram1"), "{targets:?}");
    let mut cfg = config();
    cfg.chap = Some(chap(DISCOVERY_CHAP_USER, "wrongsecret12"));
    let err = send_targets(&portal, cfg).await.unwrap_err();
    assert!(matches!(&err, Error::Login { status, .. } if status.class == 2), "{err}");
}

#[tokio::test]
async fn login_without_auth_reads_inquiry_and_capacity() {
    for lab in BOTH {
        let s = open(&lab, "ram1", config()).await;
        let inq = s.inquiry(lab.lun).await.unwrap();
        assert_eq!(inq.device_type, 0, "{}: {inq:?}", lab.name);
        let cap = s.read_capacity(lab.lun).await.unwrap();
        assert_eq!(cap.bytes(), 1 << 30, "{}: {cap:?}", lab.name);
        let luns = s.report_luns().await.unwrap();
        assert!(luns.contains(&lab.lun), "{}: {luns:?}", lab.name);
        s.test_unit_ready(lab.lun).await.unwrap();
        s.logout().await.unwrap();
    }
}

#[tokio::test]
async fn one_way_chap_accepts_the_right_secret_and_refuses_a_wrong_one() {
    for lab in BOTH {
        let mut cfg = config();
        cfg.chap = Some(chap(CHAP_USER, CHAP_SECRET));
        let s = open(&lab, "chap", cfg).await;
        s.read_capacity(lab.lun).await.unwrap();
        s.logout().await.unwrap();

        let mut cfg = config();
        cfg.chap = Some(chap(CHAP_USER, "wrongsecret1"));
        let err = Session::login(&lab.portal(), Some(&lab.iqn("chap")), cfg).await.unwrap_err();
        assert!(
            matches!(&err, Error::Login { status, .. } if status.class == 2 && status.detail == 1),
            "{}: {err}",
            lab.name
        );
        assert!(err.to_string().contains("authentication failed"), "{err}");

        let err = Session::login(&lab.portal(), Some(&lab.iqn("chap")), config()).await.unwrap_err();
        assert!(matches!(err, Error::ChapRequired | Error::Login { .. }), "{}: {err}", lab.name);
    }
}

#[tokio::test]
async fn mutual_chap_verifies_the_target_both_ways() {
    for lab in BOTH {
        let mut cfg = config();
        cfg.chap = Some(mutual(MUTUAL_TARGET_SECRET));
        let s = open(&lab, "mutual", cfg).await;
        s.read_capacity(lab.lun).await.unwrap();
        s.logout().await.unwrap();

        // The target proves itself with the secret we expect; a different
        // expectation must make us refuse it.
        let mut cfg = config();
        cfg.chap = Some(mutual("notthetargets1"));
        let err = Session::login(&lab.portal(), Some(&lab.iqn("mutual")), cfg).await.unwrap_err();
        assert!(matches!(err, Error::Chap(_)), "{}: {err}", lab.name);

        // A wrong initiator secret is refused by the target.
        let mut cfg = config();
        let mut c = mutual(MUTUAL_TARGET_SECRET);
        c.secret = iscsi_proto::chap::Secret::new(b"wrongsecret1".to_vec());
        cfg.chap = Some(c);
        let err = Session::login(&lab.portal(), Some(&lab.iqn("mutual")), cfg).await.unwrap_err();
        assert!(matches!(&err, Error::Login { status, .. } if status.class == 2), "{}: {err}", lab.name);
    }
}

async fn roundtrip(s: &Session, lab: &Lab, lba: u64, len: usize, seed: u64) {
    let data = pattern(len, seed);
    s.write_blocks(lab.lun, lba, data.clone(), 512)
        .await
        .unwrap_or_else(|e| panic!("{}: write of {len} bytes at {lba}: {e}", lab.name));
    let back = s
        .read_blocks(lab.lun, lba, (len / 512) as u32, 512)
        .await
        .unwrap_or_else(|e| panic!("{}: read of {len} bytes at {lba}: {e}", lab.name));
    assert!(back == data, "{}: {len} bytes at LBA {lba} differ after the round trip", lab.name);
}

#[tokio::test]
async fn digests_on_both_directions() {
    for lab in BOTH {
        let mut cfg = config();
        cfg.proposal.header_digest = vec![Digest::Crc32c];
        cfg.proposal.data_digest = vec![Digest::Crc32c];
        let s = open(&lab, "ram1", cfg).await;
        assert_eq!(s.params().header_digest, Digest::Crc32c, "{}", lab.name);
        assert_eq!(s.params().data_digest, Digest::Crc32c, "{}", lab.name);
        roundtrip(&s, &lab, 1_000_000, 3 << 20, 11).await;
        s.logout().await.unwrap();
    }
}

#[tokio::test]
async fn data_round_trips_across_every_negotiated_length() {
    for lab in BOTH {
        let s = open(&lab, "ram1", config()).await;
        let p = s.params().clone();
        let fb = p.first_burst_length as usize;
        let mb = p.max_burst_length as usize;
        if lab.name == "istgt" {
            // istgt grants 16 outstanding R2Ts: the MaxBurstLength×3 write runs
            // on several R2Ts at once.
            assert_eq!(p.max_outstanding_r2t, 16, "{p:?}");
        }
        let sizes = [512, fb - 512, fb, fb + 512, mb * 3 + 512, 64 << 20];
        let mut lba = 8192;
        for (i, len) in sizes.into_iter().enumerate() {
            roundtrip(&s, &lab, lba, len, 100 + i as u64).await;
            lba += (len / 512) as u64 + 8;
        }
        s.logout().await.unwrap();
    }
}

#[tokio::test]
async fn thirty_two_commands_in_flight() {
    for lab in BOTH {
        let s = open(&lab, "ram1", config()).await;
        let len = 128 * 1024;
        let base = 600_000u64;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..32u64 {
            let s = s.clone();
            set.spawn(
                async move { s.write_blocks(lab.lun, base + i * 256, pattern(len, 7000 + i), 512).await.map(|_| i) },
            );
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        let mut set = tokio::task::JoinSet::new();
        for i in 0..32u64 {
            let s = s.clone();
            set.spawn(async move { (i, s.read_blocks(lab.lun, base + i * 256, (len / 512) as u32, 512).await) });
        }
        while let Some(r) = set.join_next().await {
            let (i, data) = r.unwrap();
            assert!(data.unwrap() == pattern(len, 7000 + i), "{}: region {i} differs", lab.name);
        }
        s.logout().await.unwrap();
    }
}

/// A deep, sustained queue on one connection: past 8 commands at the
/// target, new commands are held back and sent in batches (`io::Link`).
/// Every worker writes and reads back its own blocks many times; nothing
/// may stall, be lost or land in the wrong place.
#[tokio::test]
async fn a_deep_sustained_queue_keeps_every_byte() {
    for lab in BOTH {
        // No keepalive ping during the test: a ping flushes held commands
        // and would hide one left behind.
        let mut cfg = config();
        cfg.nop_interval = std::time::Duration::from_secs(600);
        cfg.command_timeout = std::time::Duration::from_secs(20);
        let s = open(&lab, "ram1", cfg).await;
        let mut set = tokio::task::JoinSet::new();
        for w in 0..48u64 {
            let s = s.clone();
            set.spawn(async move {
                let lba = 1_800_000 + w * 64;
                for round in 0..25u64 {
                    let data = pattern(4096 * (1 + (round % 4) as usize), w * 1000 + round);
                    s.write_blocks(lab.lun, lba, data.clone(), 512).await.unwrap();
                    let back = s.read_blocks(lab.lun, lba, (data.len() / 512) as u32, 512).await.unwrap();
                    assert!(back == data, "worker {w} round {round}: blocks differ");
                }
            });
        }
        join_within(set, 60, &format!("{}: the deep queue stalled", lab.name)).await;
        s.logout().await.unwrap();
    }
}

/// A busy connection tries holding commands back and sending them at once
/// in turns until it has chosen (`session::hold`): every switch between the
/// two modes must lose, reorder or stall nothing, on either daemon.
#[tokio::test]
async fn the_hold_back_trial_keeps_every_byte_and_chooses() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    for lab in BOTH {
        let s = open_busy(&lab, 20).await;
        assert_eq!(s.connections()[0].holds_back, None, "{}: a new connection starts measuring", lab.name);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        // 32 workers keep the target at 32 commands, well past the 8 at
        // which holding back applies.
        for w in 0..32u64 {
            let (s, stop, done) = (s.clone(), stop.clone(), done.clone());
            set.spawn(async move {
                let lba = 1_900_000 + w * 8;
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let data = pattern(4096, w * 1_000_000 + round);
                    s.write_blocks(lab.lun, lba, data.clone(), 512).await.unwrap();
                    let back = s.read_blocks(lab.lun, lba, 8, 512).await.unwrap();
                    assert!(back == data, "worker {w} round {round}: blocks differ");
                    done.fetch_add(2, Ordering::Relaxed);
                    round += 1;
                }
            });
        }
        let chosen = async {
            loop {
                if let Some(h) = s.connections()[0].holds_back {
                    return h;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        // About 35 s per daemon while the other lab tests run (debug build);
        // the limit leaves room for a slower runner.
        let choice = tokio::time::timeout(std::time::Duration::from_secs(300), chosen).await;
        stop.store(true, Ordering::Relaxed);
        join_within(set, 30, &format!("{}: the workers stalled", lab.name)).await;
        let choice = choice.unwrap_or_else(|_| {
            panic!("{}: no hold-back choice after {} commands", lab.name, done.load(Ordering::Relaxed))
        });
        // The trial needs at least 21 windows of 1,024 busy answers.
        assert!(done.load(Ordering::Relaxed) >= 21 * 1024, "{}: chose too early", lab.name);
        eprintln!("{}: holds back: {choice} after {} commands", lab.name, done.load(Ordering::Relaxed));
        s.logout().await.unwrap();
    }
}

/// Waits for every worker (a worker's panic fails the test), failing with
/// `stalled` after `secs` seconds.
async fn join_within(mut set: tokio::task::JoinSet<()>, secs: u64, stalled: &str) {
    let all = async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(secs), all).await.unwrap_or_else(|_| panic!("{stalled}"));
}

#[tokio::test]
async fn ipv6_portal() {
    for lab in BOTH {
        let portal = iscsi_initiator::PortalAddr { host: "::1".into(), port: lab.port };
        let s = Session::login(&portal, Some(&lab.iqn("ram1")), config()).await.unwrap();
        s.read_capacity(lab.lun).await.unwrap();
        s.logout().await.unwrap();
    }
}

#[tokio::test]
async fn unknown_target_and_refused_connection_are_clear_errors() {
    let err = Session::login(&TGT.portal(), Some("iqn.2024-01.lab.tgt:nosuch"), config()).await.unwrap_err();
    assert!(matches!(&err, Error::Login { status, .. } if status.class == 2 && status.detail == 3), "{err}");
    let portal = iscsi_initiator::PortalAddr { host: "127.0.0.1".into(), port: 1 };
    let err = Session::login(&portal, Some("iqn.x:y"), config()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

/// `read_blocks_into` reuses a caller's buffer (stale contents, any
/// capacity) and still returns exactly the blocks written; the result can be
/// recycled again for the next read.
#[tokio::test]
async fn read_into_a_recycled_buffer_returns_the_written_blocks() {
    for lab in BOTH {
        let s = open(&lab, "ram1", config()).await;
        let (lba, len) = (1_700_000u64, 3 << 20);
        let data = pattern(len, 77);
        s.write_blocks(lab.lun, lba, data.clone(), 512).await.unwrap();
        let mut spare = bytes::BytesMut::from(&vec![0xffu8; 5 << 20][..]);
        for (blocks, cap_before) in [(len / 512, 5 << 20), (len / 1024, len)] {
            let back = s.read_blocks_into(lab.lun, lba, blocks as u32, 512, spare).await.unwrap();
            assert!(back == data.slice(..blocks * 512), "{}: {blocks} blocks differ", lab.name);
            spare = back.try_into_mut().expect("the read result is not shared");
            assert!(spare.capacity() >= cap_before.min(len), "{}: the buffer was not reused", lab.name);
        }
        s.logout().await.unwrap();
    }
}

/// A busy connection's reader sleeps until several answers are there
/// (`rx::answers_mark`): 32 workers keep 32 verified 4 KiB reads at the
/// target; every byte must come back right and the reader must have
/// waited for answers in groups, and been woken by them, at least once
/// (without the mark it never does: the counter stays at 0).
#[tokio::test]
async fn busy_reads_are_answered_in_groups_and_stay_exact() {
    for lab in BOTH {
        let s = open_busy(&lab, 20).await;
        let base = 1_950_000u64;
        for w in 0..32u64 {
            s.write_blocks(lab.lun, base + w * 8, pattern(4096, 31_000 + w), 512).await.unwrap();
        }
        // How many waits a batch sees depends on the load: a reader slowed
        // down (debug build, the other lab tests on the same daemons) finds
        // many answers at each read anyway and then has fewer than 8
        // commands out. Alone it waits 660-780 times per batch here; with
        // the whole suite, 1 (which ran out) was seen. A wait may also run
        // out when the target stalls (one per second at most, then a
        // back-off). So batches go on until one wait was met by the answers
        // themselves, at most 8 of them.
        let mut batches = 0;
        loop {
            batches += 1;
            let mut set = tokio::task::JoinSet::new();
            for w in 0..32u64 {
                let s = s.clone();
                set.spawn(async move {
                    let want = pattern(4096, 31_000 + w);
                    for round in 0..300 {
                        let back = s.read_blocks(lab.lun, base + w * 8, 8, 512).await.unwrap();
                        assert!(back == want, "worker {w} round {round}: blocks differ");
                    }
                });
            }
            join_within(set, 120, &format!("{}: the busy reads stalled", lab.name)).await;
            let c = s.connections()[0].counters;
            eprintln!(
                "{}: after {batches} batches {} waits for several answers, {} ran out",
                lab.name, c.answer_waits, c.answer_waits_ran_out
            );
            if c.answer_waits > c.answer_waits_ran_out {
                break;
            }
            assert!(batches < 8, "{}: no wait for several answers was met", lab.name);
        }
        s.logout().await.unwrap();
    }
}

/// Answers shorter than the reader expects (reads past the end of the LUN
/// fail with a few bytes of sense data instead of 4 KiB) must not leave it
/// waiting for bytes that never come: the wait runs out after a moment and
/// every command completes, failed, long before its timeout.
#[tokio::test]
async fn short_answers_to_busy_reads_do_not_stall() {
    for lab in BOTH {
        let s = open_busy(&lab, 60).await;
        let end = s.read_capacity(lab.lun).await.unwrap().blocks;
        // A reader slowed down by other load may find every answer there
        // already and never wait: rounds go on for up to 30 s.
        let started = std::time::Instant::now();
        let mut last_start = started;
        while s.connections()[0].counters.answer_waits_ran_out == 0 {
            let waited = started.elapsed() < std::time::Duration::from_secs(30);
            assert!(waited, "{}: the reader never waited for answers that fell short", lab.name);
            last_start = std::time::Instant::now();
            failing_reads(&s, lab, end).await;
        }
        // For a second after a wait ran out, answers are read one by one:
        // another round started within it sets no mark. (Checked only when
        // the two rounds took less than that second together.)
        let before = s.connections()[0].counters;
        failing_reads(&s, lab, end).await;
        let after = s.connections()[0].counters;
        if last_start.elapsed() < std::time::Duration::from_millis(900) {
            assert_eq!(after.answer_waits, before.answer_waits, "{}: a mark during the back-off", lab.name);
        } else {
            eprintln!("{}: rounds too slow to check the back-off ({:?})", lab.name, last_start.elapsed());
        }
        // The connection goes on: a verified write and read.
        roundtrip(&s, &lab, 1_960_000, 4096, 77).await;
        s.logout().await.unwrap();
    }
}

/// 32 reads past the end of the LUN at once: every one must fail, and all
/// within 5 s (their timeout is a minute).
async fn failing_reads(s: &Session, lab: Lab, end: u64) {
    let started = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..32u64 {
        let s = s.clone();
        set.spawn(async move { s.read_blocks(lab.lun, end + i * 8, 8, 512).await });
    }
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap().is_err(), "{}: a read past the end succeeded", lab.name);
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{}: 32 failing reads took {took:?}", lab.name);
}
