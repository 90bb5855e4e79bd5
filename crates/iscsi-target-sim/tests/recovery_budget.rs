//! Recovery that ends (the recovery budget, `RecoveryBudget`): with
//! recovery on, a target that breaks the same way on every connection makes
//! the command fail within its budget, with the fault that started the
//! recovery as its error; the same fault on the first connection only is
//! healed, with every byte exact.

use std::time::{Duration, Instant};

use bytes::Bytes;
use iscsi_initiator::session::{FaultKind, GiveUpWhy};
use iscsi_initiator::{Error, PortalAddr, RecoveryBudget, Session, SessionConfig};
use iscsi_proto::negotiation::Digest;
use iscsi_target_sim::{Fault, Phase, SimConfig, SimTarget};

const BS: u32 = 512;
/// A 1 MiB transfer: four Data-In PDUs at our 256 KiB, R2Ts for a write.
const BLOCKS: u32 = 2048;
const HOLD: Duration = Duration::from_secs(8);

fn cfg(digests: bool) -> SessionConfig {
    let mut c = SessionConfig::new("iqn.2026-12.rs.rsiscsi:budget");
    c.connect_timeout = Duration::from_secs(3);
    c.login_timeout = Duration::from_secs(3);
    c.nop_interval = Duration::from_secs(2);
    c.nop_timeout = Duration::from_secs(2);
    // Far beyond the budget: what ends a case is the budget, not this.
    c.command_timeout = Duration::from_secs(90);
    c.recovery = true;
    c.recovery_budget = RecoveryBudget { max_request_hold_time: HOLD, link_down_time: HOLD, same_fault_limit: 1 };
    c.proposal.max_recv_data_segment_length = 256 * 1024;
    if digests {
        c.proposal.header_digest = vec![Digest::Crc32c, Digest::None];
        c.proposal.data_digest = vec![Digest::Crc32c, Digest::None];
    }
    c
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// One fault class of the issue, with what its error must say.
struct Case {
    fault: Fault,
    digests: bool,
    op: Op,
    kind: FaultKind,
    needle: &'static str,
    /// Upper bound from the command's start to its error.
    within: Duration,
}

/// A deterministic violation: one reinstatement (DefaultTime2Wait 2 s)
/// shows it again.
const FAST: Duration = Duration::from_secs(7);

fn case(fault: Fault, op: Op, kind: FaultKind, needle: &'static str, within: Duration) -> Case {
    let digests = matches!(fault, Fault::BadHeaderDigest | Fault::BadDataDigest);
    Case { fault, digests, op, kind, needle, within }
}

async fn start(c: &Case, faulty: Option<u32>) -> (SimTarget, Session) {
    let sim = SimTarget::start(SimConfig {
        fault: c.fault,
        faulty_connections: faulty,
        digests: c.digests,
        ..SimConfig::default()
    })
    .await
    .expect("bind loopback");
    let portal = PortalAddr { host: "127.0.0.1".into(), port: sim.addr().port() };
    let s = Session::login(&portal, Some(sim.target_name()), cfg(c.digests)).await.expect("login");
    (sim, s)
}

fn random(len: usize) -> Bytes {
    Bytes::from((0..len).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

/// Every connection faulty: the command ends within its budget with the
/// first cause, and nothing more reaches the target after that.
async fn gives_up(c: Case) {
    let (sim, s) = start(&c, None).await;
    let t0 = Instant::now();
    let guard = c.within + Duration::from_secs(10);
    let r = match c.op {
        Op::Read => tokio::time::timeout(guard, s.read_blocks(0, 0, BLOCKS, BS)).await.map(|r| r.map(|_| ())),
        Op::Write => tokio::time::timeout(guard, s.write_blocks(0, 0, random(1 << 20), BS)).await,
    };
    let took = t0.elapsed();
    let e = match r {
        Err(_) => panic!("{:?}: still running after {guard:?}", c.fault),
        Ok(Ok(())) => panic!("{:?}: the command succeeded against a target broken on every connection", c.fault),
        Ok(Err(e)) => e,
    };
    eprintln!("{:?} after {took:.1?}: {e}", c.fault);
    let Error::GaveUp(g) = &e else { panic!("{:?}: expected a give-up, got {e:?}", c.fault) };
    assert_eq!(g.cause.kind, c.kind, "{:?}: {e}", c.fault);
    let text = e.to_string();
    assert!(text.contains(c.needle), "{:?}: {text:?} does not name the cause {:?}", c.fault, c.needle);
    assert!(text.ends_with("gave up)"), "{text}");
    if c.kind.deterministic() {
        assert!(matches!(g.why, GiveUpWhy::SameFault { reinstated: 1 }), "{:?}: {:?}", c.fault, g.why);
    }
    assert!(took <= c.within, "{:?}: ended after {took:?}, budget {:?}", c.fault, c.within);
    let stats = s.recovery_stats();
    assert!(stats.give_ups >= 1, "{stats:?}");
    if c.fault != (Fault::WindowClosed { secs: 3600 }) {
        assert!(stats.recoveries >= 1, "{stats:?}");
    }
    // Nothing is sent again once the caller has its error: no write (nor
    // read) reaches the target twice behind its back.
    let sent = sim.stats().commands;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.stats().commands, sent, "{:?}: commands reached the target after the give-up", c.fault);
    if c.op == Op::Write {
        assert!(sent <= 2, "{:?}: the write went out {sent} times (one try, one retry at most)", c.fault);
    }
    // Logging out ends promptly, whether a connection is in service again
    // or still being recovered.
    let t1 = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(6), s.logout()).await;
    assert!(out.is_ok(), "{:?}: logout after the give-up still running after 6 s", c.fault);
    eprintln!("{:?}: logout after {:.1?}: {:?}", c.fault, t1.elapsed(), out);
    assert_eq!(sim.stats().commands, sent, "{:?}: commands reached the target with the logout", c.fault);
}

/// Only the first connection faulty: recovery heals it, bytes exact.
async fn heals(c: Case) {
    let (sim, s) = start(&c, Some(1)).await;
    let data = random(1 << 20);
    let work = async {
        s.write_blocks(0, 64, data.clone(), BS).await.map_err(|e| format!("write: {e}"))?;
        let back = s.read_blocks(0, 64, BLOCKS, BS).await.map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(back)
    };
    let back = match tokio::time::timeout(Duration::from_secs(30), work).await {
        Err(_) => panic!("{:?}: not healed within 30 s", c.fault),
        Ok(Err(e)) => panic!("{:?}: a fault on the first connection only was not healed: {e}", c.fault),
        Ok(Ok(b)) => b,
    };
    assert!(back == data, "{:?}: bytes read back differ", c.fault);
    assert_eq!(sim.lun_bytes(64 * 512, 1 << 20), data.to_vec(), "{:?}: the LUN holds other bytes", c.fault);
    if c.fault != (Fault::WindowClosed { secs: 3 }) {
        let st = s.recovery_stats();
        assert!(st.recoveries >= 1 && st.connections_reinstated + st.sessions_reinstated >= 1, "{st:?}");
        assert_eq!(st.give_ups, 0, "{st:?}");
    }
    s.logout().await.expect("logout");
}

macro_rules! classes {
    ($($name:ident: $case:expr;)*) => {
        mod every_connection {
            use super::*;
            $( #[tokio::test] async fn $name() { gives_up($case).await } )*
        }
        mod first_connection_only {
            use super::*;
            $( #[tokio::test] async fn $name() {
                let mut c = $case;
                // A window that stays shut cannot heal; one that opens
                // within the budget is the transient form.
                if matches!(c.fault, Fault::WindowClosed { .. }) {
                    c.fault = Fault::WindowClosed { secs: 3 };
                }
                heals(c).await
            } )*
        }
    };
}

classes! {
    data_in_for_a_foreign_itt: case(Fault::DataInWrongItt, Op::Read, FaultKind::Violation, "Data-In for unknown task", FAST);
    data_sn_gap: case(Fault::DataSnGap, Op::Read, FaultKind::Violation, "DataSN 1 where 0 was due", FAST);
    data_overrun_without_the_flag: case(Fault::DataOverrun, Op::Read, FaultKind::Violation, "beyond the expected transfer length", FAST);
    buffer_offset_outside: case(Fault::BufferOffsetOutside, Op::Read, FaultKind::Violation, "Data-In at offset", FAST);
    response_for_a_task_never_issued: case(Fault::ResponseForUnsentCommand, Op::Read, FaultKind::Violation, "SCSI Response for unknown task", FAST);
    stat_sn_jump: case(Fault::StatSnJump, Op::Read, FaultKind::Violation, "StatSN", FAST);
    r2t_outside_the_transfer: case(Fault::R2tOutside, Op::Write, FaultKind::Violation, "outside the 1048576-byte write", FAST);
    bad_header_digest: case(Fault::BadHeaderDigest, Op::Read, FaultKind::Malformed, "header digest mismatch", FAST);
    bad_data_digest: case(Fault::BadDataDigest, Op::Read, FaultKind::Malformed, "data digest mismatch", FAST);
    unknown_opcode: case(Fault::UnknownOpcode, Op::Read, FaultKind::Malformed, "unknown opcode 0x1c", FAST);
    // Cut on every try: retried until the hold time.
    reset_mid_data_in: case(Fault::Reset(Phase::DataIn), Op::Read, FaultKind::Transport, "(still failing after", HOLD + Duration::from_secs(3));
    // Silent with the socket open: 4 s to notice (NOP-Out), then the hold time.
    silent_mid_read: case(Fault::StopAnswering, Op::Read, FaultKind::Silent, "no answer to NOP-Out", HOLD + Duration::from_secs(8));
    window_that_never_opens: case(Fault::WindowClosed { secs: 3600 }, Op::Read, FaultKind::WindowClosed, "command window closed", HOLD + Duration::from_secs(3));
}

/// ERL 2 on a session of two connections (RFC 7143 §7.2): a failed
/// connection's read is moved to the other with TASK REASSIGN. A target
/// that breaks it the same way there too ends it with the first cause; one
/// whose first connection only is broken heals it.
async fn erl2_session(faulty: Option<u32>) -> (SimTarget, Session) {
    let sim = SimTarget::start(SimConfig {
        fault: Fault::DataSnGap,
        faulty_connections: faulty,
        max_connections: 2,
        error_recovery_level: 2,
        ..SimConfig::default()
    })
    .await
    .expect("bind loopback");
    let portal = PortalAddr { host: "127.0.0.1".into(), port: sim.addr().port() };
    let mut c = cfg(false);
    c.proposal.error_recovery_level = 2;
    let s = Session::login(&portal, Some(sim.target_name()), c).await.expect("login");
    let how = iscsi_initiator::session::ConnectionLogin::default();
    s.connect_more(&portal, &how).await.expect("second connection");
    assert_eq!(s.params().error_recovery_level, 2);
    (sim, s)
}

#[tokio::test]
async fn erl2_the_same_violation_after_task_reassign_ends_the_read() {
    let (sim, s) = erl2_session(None).await;
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_blocks(0, 0, BLOCKS, BS)).await;
    let e = match r {
        Err(_) => panic!("still running after 20 s"),
        Ok(Ok(_)) => panic!("a read broken on every connection succeeded"),
        Ok(Err(e)) => e,
    };
    eprintln!("ERL 2 after {:.1?}: {e}", t0.elapsed());
    assert!(matches!(&e, Error::GaveUp(g) if g.cause.kind == FaultKind::Violation), "{e:?}");
    assert!(e.to_string().contains("DataSN 1 where 0 was due"), "{e}");
    assert!(t0.elapsed() <= FAST, "{:?}", t0.elapsed());
    let sent = sim.stats().commands;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.stats().commands, sent, "commands reached the target after the give-up");
}

#[tokio::test]
async fn erl2_a_violation_on_the_first_connection_only_heals() {
    let (sim, s) = erl2_session(Some(1)).await;
    let data = random(1 << 20);
    // Round-robin: of two reads, one goes out on the faulty first connection.
    let work = async {
        s.write_blocks(0, 64, data.clone(), BS).await?;
        let a = s.read_blocks(0, 64, BLOCKS, BS).await?;
        let b = s.read_blocks(0, 64, BLOCKS, BS).await?;
        Ok::<_, Error>((a, b))
    };
    let (a, b) =
        tokio::time::timeout(Duration::from_secs(30), work).await.expect("healed within 30 s").expect("healed");
    assert!(a == data && b == data, "bytes read back differ");
    assert_eq!(sim.lun_bytes(64 * 512, 1 << 20), data.to_vec());
    let st = s.recovery_stats();
    assert!(st.recoveries >= 1 && st.give_ups == 0, "{st:?}");
    assert!(sim.stats().reassigned >= 1, "the read was moved with TASK REASSIGN: {:?}", sim.stats());
}

/// The target goes away and its port then accepts connections but never
/// answers a login: recovery stops at the link-down time (each attempt is
/// cut off there, however long a login may take), and the command fails
/// with the fault that started it.
#[tokio::test]
async fn a_link_down_past_the_link_down_time_ends_the_command() {
    let sim = SimTarget::start(SimConfig::default()).await.expect("bind loopback");
    let addr = sim.addr();
    let portal = PortalAddr { host: "127.0.0.1".into(), port: addr.port() };
    let mut c = cfg(false);
    c.login_timeout = Duration::from_secs(60);
    c.recovery_budget.link_down_time = Duration::from_secs(4);
    let s = Session::login(&portal, Some(sim.target_name()), c).await.expect("login");
    s.read_blocks(0, 0, 8, BS).await.expect("a read before the target goes");
    drop(sim);
    // The sim's listener closes once its aborted task is dropped.
    let mut mute = None;
    for _ in 0..200 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            mute = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mute = mute.expect("the target's port again");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = mute.accept().await {
            open.push(conn);
        }
    });
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), s.read_blocks(0, 0, 8, BS)).await;
    held.abort();
    let e = match r {
        Err(_) => panic!("still running after 30 s"),
        Ok(Ok(_)) => panic!("a read succeeded with the target gone"),
        Ok(Err(e)) => e,
    };
    eprintln!("link down after {:.1?}: {e}", t0.elapsed());
    let Error::GaveUp(g) = &e else { panic!("expected a give-up, got {e:?}") };
    assert!(matches!(&g.why, GiveUpWhy::LinkDown { within, .. } if *within == Duration::from_secs(4)), "{:?}", g.why);
    assert_eq!(g.cause.kind, FaultKind::Closed, "{e}");
    assert!(e.to_string().contains("not re-established within the 4 s link-down time"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(8), "ended after {:?}", t0.elapsed());
    assert_eq!(s.recovery_stats().give_ups, 1, "{:?}", s.recovery_stats());
}
