//! ErrorRecoveryLevel 2 end to end: the initiator against the simulated
//! target as an ERL 2 peer. A connection of a multi-connection session is
//! cut in the middle of large transfers; the initiator logs it out for
//! recovery (Logout reason 2) and moves its tasks with TASK REASSIGN
//! (RFC 7143 §6.2.2, §7.2, §11.5.1, §11.14). Every case checks the bytes,
//! what the target saw (no command re-issued under a new CmdSN, no CmdSN
//! gap) and that it ends within a bound.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use iscsi_initiator::session::ConnectionLogin;
use iscsi_initiator::{Error, PortalAddr, Session, SessionConfig};
use iscsi_proto::pdu::logout_reason;
use iscsi_target_sim::{Fault, SimConfig, SimStats, SimTarget};

/// Upper bound on any one case.
const CASE_LIMIT: Duration = Duration::from_secs(30);

const BS: u32 = 512;

/// Size of each transfer: 4 Data-In PDUs at the initiator's 256 KiB
/// MaxRecvDataSegmentLength, 16 Data-Out PDUs at the sim's 64 KiB.
const CHUNK: usize = 1 << 20;

/// Transfers in flight at once.
const JOBS: u64 = 6;

fn portal(t: &SimTarget) -> PortalAddr {
    PortalAddr { host: "127.0.0.1".into(), port: t.addr().port() }
}

/// The initiator offering ERL 2, with no Time2Wait so recovery is quick.
fn cfg(erl: u8) -> SessionConfig {
    let mut c = SessionConfig::new("iqn.2026-11.rs.rsiscsi:erl2");
    c.connect_timeout = Duration::from_secs(3);
    c.login_timeout = Duration::from_secs(3);
    c.command_timeout = Duration::from_secs(20);
    c.proposal.error_recovery_level = erl;
    c.proposal.default_time2wait = 0;
    // Each 1 MiB read then arrives as four Data-In PDUs, so the faults
    // can fall between two of them.
    c.proposal.max_recv_data_segment_length = 256 * 1024;
    c
}

fn sim_cfg(connections: u16, fault: Fault) -> SimConfig {
    SimConfig {
        max_connections: connections,
        error_recovery_level: 2,
        default_time2wait: 0,
        fault,
        ..SimConfig::default()
    }
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    let t0 = std::time::Instant::now();
    match tokio::time::timeout(CASE_LIMIT, f).await {
        Ok(v) => {
            // Shown with --nocapture.
            eprintln!("case took {:?}", t0.elapsed());
            v
        }
        Err(_) => panic!("case did not end within {CASE_LIMIT:?}"),
    }
}

fn random(len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rand::Rng::fill(&mut rand::thread_rng(), &mut v[..]);
    Bytes::from(v)
}

/// Logs in a session of `n` connections.
async fn session(t: &SimTarget, c: SessionConfig, n: usize) -> Session {
    let s = Session::login(&portal(t), Some(t.target_name()), c).await.expect("login");
    for _ in 1..n {
        s.connect_more(&portal(t), &ConnectionLogin::default()).await.expect("add connection");
    }
    assert_eq!(s.connections().len(), n);
    s
}

fn lba(i: u64) -> u64 {
    i * (CHUNK as u64 / u64::from(BS))
}

/// `JOBS` writes of random data at once, each checked on the LUN.
async fn write_all(s: &Session, t: &SimTarget) -> Vec<Bytes> {
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        let s = s.clone();
        jobs.push(tokio::spawn(async move {
            let data = random(CHUNK);
            s.write_blocks(0, lba(i), data.clone(), BS).await.map(|()| data)
        }));
    }
    let mut written = Vec::new();
    for (i, j) in jobs.into_iter().enumerate() {
        let data = j.await.expect("join").expect("write");
        assert_eq!(t.lun_bytes(lba(i as u64) * u64::from(BS), CHUNK), data.to_vec(), "write {i} on the LUN");
        written.push(data);
    }
    written
}

/// `JOBS` reads at once, each compared with what was written.
async fn read_all(s: &Session, written: &[Bytes]) {
    let mut jobs = Vec::new();
    for i in 0..JOBS {
        let s = s.clone();
        jobs.push(tokio::spawn(async move { s.read_blocks(0, lba(i), CHUNK as u32 / BS, BS).await }));
    }
    for (i, j) in jobs.into_iter().enumerate() {
        let got = j.await.expect("join").expect("read");
        assert!(got == written[i], "read {i} differs from what was written");
    }
}

/// Each SCSI command reached the target once, under CmdSNs without a gap.
fn one_command_per_cmd_sn(st: &SimStats) {
    assert!(st.commands_by_cmd_sn.values().all(|n| *n == 1), "a CmdSN was used twice: {:?}", st.commands_by_cmd_sn);
    let sns: Vec<u32> = st.commands_by_cmd_sn.keys().copied().collect();
    if let (Some(first), Some(last)) = (sns.first(), sns.last()) {
        assert_eq!(sns, (*first..=*last).collect::<Vec<_>>(), "CmdSN gap");
    }
    assert!(st.violations.is_empty(), "{:?}", st.violations);
}

/// Waits until the session is back to `n` connections (recovery replaces
/// the removed one in the background).
async fn until_connections(s: &Session, n: usize) {
    while s.connections().len() != n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With `reset`, a TCP reset may lose Data-In or a status still queued at
/// the target: the read then resumes earlier, and a finished task whose
/// status was lost is reassigned too (the target keeps a status until
/// ExpStatSN acknowledges it); without, the close delivers all that was sent.
async fn cut_mid_read(connections: usize, reset: bool) {
    let t = SimTarget::start(sim_cfg(connections as u16, Fault::CutMidRead { after: 2, reset })).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), connections).await;
        assert_eq!(s.params().error_recovery_level, 2);
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), Some(&1), "{st:?}");
        assert!(st.tasks_retained >= 1 && st.reassigned >= 1, "{st:?}");
        assert_eq!(st.reassign_refused, 0, "{st:?}");
        if reset {
            let r = &st.resumed_from_data_sn;
            assert!(!r.is_empty() && r.iter().all(|sn| *sn <= 4), "{st:?}");
        } else {
            // The read went on from the third Data-In: the first two stayed.
            assert_eq!(st.resumed_from_data_sn, vec![2], "{st:?}");
        }
        // 2 * JOBS commands, none sent again as a new command.
        assert_eq!(st.commands, 2 * JOBS as u32, "{st:?}");
        one_command_per_cmd_sn(&st);
        until_connections(&s, connections).await;
        read_all(&s, &written).await;
        s.logout().await.expect("logout");
    })
    .await;
}

#[tokio::test]
async fn cut_mid_read_two_connections_reassigns_the_read() {
    cut_mid_read(2, false).await;
}

#[tokio::test]
async fn reset_mid_read_three_connections_reassigns_the_read() {
    cut_mid_read(3, true).await;
}

async fn cut_mid_write(connections: usize, reset: bool) {
    let t = SimTarget::start(sim_cfg(connections as u16, Fault::CutMidWrite { after: 6, reset })).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), connections).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), Some(&1), "{st:?}");
        assert!(st.reassigned >= 1 && st.recovery_r2ts >= 1, "{st:?}");
        assert_eq!(st.reassign_refused, 0, "{st:?}");
        assert_eq!(st.commands, 2 * JOBS as u32, "{st:?}");
        one_command_per_cmd_sn(&st);
        s.logout().await.expect("logout");
    })
    .await;
}

#[tokio::test]
async fn cut_mid_write_two_connections_gets_recovery_r2ts() {
    cut_mid_write(2, false).await;
}

#[tokio::test]
async fn reset_mid_write_three_connections_gets_recovery_r2ts() {
    cut_mid_write(3, true).await;
}

/// A write done at the target whose status never arrived: reassigned, the
/// target sends the status it kept (unacknowledged by ExpStatSN) and the
/// write is not run again.
#[tokio::test]
async fn write_whose_status_was_lost_gets_it_again() {
    let t = SimTarget::start(sim_cfg(2, Fault::WriteStatusLost { after: 1 })).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 2).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.statuses_resent, 1, "{st:?}");
        assert_eq!(st.reassign_refused, 0, "{st:?}");
        assert_eq!(st.commands, 2 * JOBS as u32, "{st:?}");
        one_command_per_cmd_sn(&st);
        s.logout().await.expect("logout");
    })
    .await;
}

#[tokio::test]
async fn refused_reassign_falls_back_to_reissue() {
    let t = SimTarget::start(SimConfig {
        task_reassign: false,
        ..sim_cfg(2, Fault::CutMidRead { after: 2, reset: false })
    })
    .await
    .expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 2).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.reassigned, 0, "{st:?}");
        assert!(st.reassign_refused >= 1, "{st:?}");
        // The read the target had ran again as a new command (a new CmdSN),
        // the commands it never got were retried with their own: no gap.
        assert!(st.tasks_retained >= 1, "{st:?}");
        assert_eq!(st.commands, 2 * JOBS as u32 + 1, "{st:?}");
        one_command_per_cmd_sn(&st);
        s.logout().await.expect("logout");
    })
    .await;
}

/// With no other connection to log out on, the initiator reinstates the
/// CID (a login with the same CID, RFC 7143 §6.3.4) and the reinstated
/// connection takes the read back with TASK REASSIGN.
#[tokio::test]
async fn one_connection_is_reinstated_and_takes_its_tasks_back() {
    let t = SimTarget::start(sim_cfg(1, Fault::CutMidRead { after: 2, reset: false })).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 1).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), None, "{st:?}");
        assert_eq!(st.logins, 2, "{st:?}");
        assert_eq!(st.reassigned, 1, "{st:?}");
        assert_eq!(st.resumed_from_data_sn, vec![2], "{st:?}");
        assert_eq!(st.commands, 2 * JOBS as u32, "{st:?}");
        one_command_per_cmd_sn(&st);
        // The management view keeps the CID's counters across the reinstatement.
        let conns = s.connections();
        let c = &conns[0].counters;
        assert_eq!((c.reconnects, c.errors), (1, 0), "{c:?}");
        assert!(c.commands >= 2 * JOBS && c.latency.count() >= 2 * JOBS, "{c:?}");
        assert!(c.bytes_in >= c.bytes_out && c.bytes_out > 0, "every byte written was read back: {c:?}");
        s.logout().await.expect("logout");
    })
    .await;
}

/// One connection, and a target that does not reassign: the ERL 0 way
/// (retry with the same CmdSN, or re-issue) still brings every byte back.
#[tokio::test]
async fn one_connection_refused_reassign_recovers_the_erl0_way() {
    let t = SimTarget::start(SimConfig {
        task_reassign: false,
        ..sim_cfg(1, Fault::CutMidRead { after: 2, reset: false })
    })
    .await
    .expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 1).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.reassigned, 0, "{st:?}");
        assert!(st.reassign_refused >= 1, "{st:?}");
        assert_eq!(st.commands, 2 * JOBS as u32 + 1, "{st:?}");
        one_command_per_cmd_sn(&st);
        s.logout().await.expect("logout");
    })
    .await;
}

/// At ERL 0 nothing is kept or reassigned: the cut connection is
/// reinstated and its commands retried or re-issued.
#[tokio::test]
async fn erl0_session_recovers_without_reassign() {
    let t = SimTarget::start(SimConfig {
        error_recovery_level: 0,
        ..sim_cfg(2, Fault::CutMidRead { after: 2, reset: false })
    })
    .await
    .expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 2).await;
        assert_eq!(s.params().error_recovery_level, 0);
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!((st.tasks_retained, st.reassigned, st.reassign_refused), (0, 0, 0), "{st:?}");
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), None, "{st:?}");
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        s.logout().await.expect("logout");
    })
    .await;
}

#[tokio::test]
async fn async_event_2_on_one_connection_keeps_the_session_serving() {
    let t = SimTarget::start(sim_cfg(2, Fault::AsyncDropConnection { cid: 1, after: 2 })).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 2).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.async_events.get(&2), Some(&1), "{st:?}");
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), Some(&1), "{st:?}");
        assert_eq!(st.commands, 4 * JOBS as u32, "{st:?}");
        one_command_per_cmd_sn(&st);
        assert!(s.closed_reason().is_none());
        until_connections(&s, 2).await;
        s.logout().await.expect("logout");
    })
    .await;
}

/// The leading connection may go too: another one leads, the session
/// keeps serving and logs out cleanly at the end.
#[tokio::test]
async fn async_event_2_on_the_leading_connection_of_three() {
    let t = SimTarget::start(sim_cfg(3, Fault::AsyncDropConnection { cid: 0, after: 1 })).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 3).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.async_events.get(&2), Some(&1), "{st:?}");
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), Some(&1), "{st:?}");
        assert_eq!(st.commands, 4 * JOBS as u32, "{st:?}");
        one_command_per_cmd_sn(&st);
        until_connections(&s, 3).await;
        let conns = s.connections();
        assert_eq!(conns.iter().filter(|c| c.leading).count(), 1);
        assert!(conns.iter().all(|c| c.cid != 0), "{conns:?}");
        s.logout().await.expect("logout");
        assert_eq!(t.stats().logouts.get(&logout_reason::CLOSE_SESSION), Some(&1));
    })
    .await;
}

#[tokio::test]
async fn async_event_1_on_one_connection_logs_just_it_out() {
    let t = SimTarget::start(sim_cfg(2, Fault::AsyncLogoutRequest { cid: 1, after: 2 })).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 2).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let written = write_all(&s, &t).await;
        read_all(&s, &written).await;
        let st = t.stats();
        assert_eq!(st.async_events.get(&1), Some(&1), "{st:?}");
        assert_eq!(st.logouts.get(&logout_reason::CLOSE_CONNECTION), Some(&1), "{st:?}");
        assert_eq!(st.commands, 4 * JOBS as u32, "{st:?}");
        one_command_per_cmd_sn(&st);
        assert!(s.closed_reason().is_none());
        s.logout().await.expect("logout");
    })
    .await;
}

#[tokio::test]
async fn logout_for_recovery_moves_a_connection_on_request() {
    let t = SimTarget::start(sim_cfg(2, Fault::None)).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 2).await;
        let written = write_all(&s, &t).await;
        let second = s.connections().iter().find(|c| !c.leading).map(|c| c.id).expect("a second connection");
        s.logout_connection_for_recovery(second).await.expect("logout for recovery");
        read_all(&s, &written).await;
        until_connections(&s, 2).await;
        let st = t.stats();
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), Some(&1), "{st:?}");
        one_command_per_cmd_sn(&st);
        s.logout().await.expect("logout");
    })
    .await;
}

/// The connection that replaces one moved away at ERL 2 logs in the way
/// the removed one did: from the same initiator port (here 127.0.0.2).
#[tokio::test]
async fn the_replacement_connection_keeps_the_initiator_port() {
    let t = SimTarget::start(sim_cfg(2, Fault::None)).await.expect("bind");
    bounded(async {
        let s = session(&t, cfg(2), 1).await;
        let port2: std::net::IpAddr = "127.0.0.2".parse().expect("address");
        let how = ConnectionLogin { local_address: Some(port2), ..ConnectionLogin::default() };
        let second = s.connect_more(&portal(&t), &how).await.expect("add connection");
        let written = write_all(&s, &t).await;
        s.logout_connection_for_recovery(second).await.expect("logout for recovery");
        read_all(&s, &written).await;
        until_connections(&s, 2).await;
        let replaced = s.connections().into_iter().find(|c| !c.leading).expect("a second connection");
        assert_ne!(replaced.id, second);
        assert_eq!(replaced.local_address.map(|a| a.ip()), Some(port2));
        s.logout().await.expect("logout");
    })
    .await;
}

#[tokio::test]
async fn error_recovery_level_is_the_minimum_of_both_sides() {
    for (offer, target, agreed) in [(2u8, 2u8, 2u8), (0, 2, 0), (2, 1, 1), (2, 0, 0)] {
        let t = SimTarget::start(SimConfig { error_recovery_level: target, ..sim_cfg(2, Fault::None) })
            .await
            .expect("bind");
        bounded(async {
            let s = session(&t, cfg(offer), 2).await;
            assert_eq!(s.params().error_recovery_level, agreed, "offer {offer}, target {target}");
            if agreed < 2 {
                let id = s.connections()[1].id;
                let e = s.logout_connection_for_recovery(id).await.expect_err("needs ERL 2");
                assert!(matches!(e, Error::RecoveryLevelTooLow { negotiated } if negotiated == agreed), "{e:?}");
            }
            s.logout().await.expect("logout");
        })
        .await;
    }
}

/// A TCP relay in front of the sim whose connections can be cut, one or
/// all, like a failing network path.
struct CutProxy {
    addr: std::net::SocketAddr,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(to: std::net::SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut a, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        CutProxy { addr, links, accept }
    }

    /// Ends the `i`-th connection accepted (both sides see it close).
    fn cut(&self, i: usize) {
        if let Some(h) = self.links.lock().unwrap().get(i) {
            h.abort();
        }
    }

    fn cut_all(&self) {
        for h in self.links.lock().unwrap().iter() {
            h.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Verified writes and reads, each worker in its own region, until `stop`.
fn start_load(
    s: &Session,
    workers: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinSet<u64> {
    use std::sync::atomic::Ordering;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (s, stop, done) = (s.clone(), stop.clone(), done.clone());
        set.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lba = w * 2048 + (n % 4) * 512;
                let len = [4096usize, 65536, 262_144][(n % 3) as usize];
                let data = random(len);
                s.write_blocks(0, lba, data.clone(), BS).await.unwrap_or_else(|e| panic!("worker {w} write {n}: {e}"));
                let back = s
                    .read_blocks(0, lba, (len / 512) as u32, BS)
                    .await
                    .unwrap_or_else(|e| panic!("worker {w} read {n}: {e}"));
                assert!(back == data, "worker {w} round trip {n} read back other data");
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            n
        });
    }
    set
}

/// Waits until `more` further round trips are done.
async fn progress(done: &std::sync::atomic::AtomicU64, more: u64) {
    let goal = done.load(std::sync::atomic::Ordering::Relaxed) + more;
    while done.load(std::sync::atomic::Ordering::Relaxed) < goal {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Under continuous verified load, each of three connections is cut in
/// turn (each time ERL 2 recovery on the others), then all at once (no
/// survivor: reinstatement takes over). Nothing is lost or doubled.
#[tokio::test]
async fn connections_cut_in_turn_then_all_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let t = SimTarget::start(sim_cfg(3, Fault::None)).await.expect("bind");
    let proxy = CutProxy::start(t.addr()).await;
    let through = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
    tokio::time::timeout(Duration::from_secs(90), async {
        let s = Session::login(&through, Some(t.target_name()), cfg(2)).await.expect("login");
        for _ in 1..3 {
            s.connect_more(&through, &ConnectionLogin::default()).await.expect("add connection");
        }
        let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let mut load = start_load(&s, 6, stop.clone(), done.clone());
        progress(&done, 20).await;
        for i in 0..3 {
            proxy.cut(i);
            progress(&done, 20).await;
            until_connections(&s, 3).await;
        }
        // Quiet, so that every command sent has arrived.
        stop.store(true, Ordering::Relaxed);
        while let Some(r) = load.join_next().await {
            assert!(r.expect("worker") > 0);
        }
        let st = t.stats();
        assert_eq!(st.logouts.get(&logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), Some(&3), "{st:?}");
        one_command_per_cmd_sn(&st);
        stop.store(false, Ordering::Relaxed);
        let mut load = start_load(&s, 6, stop.clone(), done.clone());
        progress(&done, 20).await;
        proxy.cut_all();
        progress(&done, 20).await;
        stop.store(true, Ordering::Relaxed);
        while let Some(r) = load.join_next().await {
            assert!(r.expect("worker") > 0);
        }
        assert!(s.closed_reason().is_none());
        let st = t.stats();
        eprintln!(
            "reassigned {}, refused {}, unknown {}",
            st.reassigned, st.reassign_refused, st.reassign_no_such_task
        );
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        s.logout().await.expect("logout");
    })
    .await
    .expect("the case ends within 90 s");
}
