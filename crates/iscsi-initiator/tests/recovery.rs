//! Fault injection: a TCP proxy between the initiator and a real target
//! cuts connections (one after another, then all at once) under a mixed
//! read/write load that verifies every byte. Nothing may be lost, doubled
//! or left hanging.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::lab::*;
use iscsi_initiator::session::ConnectionLogin;
use iscsi_initiator::{PortalAddr, Session};

/// Workers that write a fresh pattern to their own region and read it
/// back until stopped, counting verified round trips.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    set: tokio::task::JoinSet<u64>,
}

impl Load {
    fn start(s: &Session, lab: Lab, base: u64, workers: u64) -> Load {
        let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let set = start_load(s, lab, base, workers, stop.clone(), done.clone());
        Load { stop, done, set }
    }

    /// Waits for `more` round trips, failing after `limit` without them.
    async fn progress(&self, more: u64, limit: Duration) {
        wait_progress(&self.done, more, limit).await;
    }

    /// Stops the workers; each must have finished round trips.
    async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(r) = self.set.join_next().await {
            assert!(r.unwrap() > 0);
        }
    }
}

fn start_load(
    s: &Session,
    lab: Lab,
    base: u64,
    workers: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinSet<u64> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (s, stop, done) = (s.clone(), stop.clone(), done.clone());
        set.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lba = base + w * 2048 + (n % 4) * 512;
                let len = [4096usize, 65536, 262144][(n % 3) as usize];
                let data = pattern(len, (w << 32) | n);
                s.write_blocks(lab.lun, lba, data.clone(), 512)
                    .await
                    .unwrap_or_else(|e| panic!("{}: worker {w} write {n}: {e}", lab.name));
                let back = s
                    .read_blocks(lab.lun, lba, (len / 512) as u32, 512)
                    .await
                    .unwrap_or_else(|e| panic!("{}: worker {w} read {n}: {e}", lab.name));
                assert!(back == data, "{}: worker {w} round trip {n} read back other data", lab.name);
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            n
        });
    }
    set
}

async fn wait_progress(done: &AtomicU64, more: u64, limit: Duration) {
    let start = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    while done.load(Ordering::Relaxed) < start + more {
        assert!(
            t0.elapsed() < limit,
            "no progress for {limit:?} ({} round trips so far)",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cut_one_after_another_then_all(lab: Lab, base: u64) {
    // The recovery steps at debug level, captured and shown only when the
    // test fails (about 40 lines a run): a rare failure explains itself.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("iscsi_initiator=debug"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    let t0 = Instant::now();
    let proxy = common::proxy::Proxy::start(format!("127.0.0.1:{}", lab.port).parse().unwrap()).await;
    let portal = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
    let s = Session::login(&portal, Some(&lab.iqn("ram1")), config()).await.unwrap();
    for _ in 1..4 {
        s.connect_more(&portal, &ConnectionLogin::default()).await.unwrap();
    }
    let load = Load::start(&s, lab, base, 8);
    load.progress(20, Duration::from_secs(20)).await;
    // Each connection in turn, the leading one included.
    for i in 0..4 {
        proxy.cut(i);
        load.progress(30, Duration::from_secs(30)).await;
    }
    // Recovery waits DefaultTime2Wait before it logs in again.
    let t = Instant::now();
    while s.connections().len() < 4 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{}: cut connections did not come back: {}",
            lab.name,
            s.connections().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // All of them at once.
    proxy.cut_all();
    load.progress(30, Duration::from_secs(40)).await;
    let t = Instant::now();
    while s.connections().len() < 4 {
        assert!(t.elapsed() < Duration::from_secs(40), "{}: connections did not come back after losing all", lab.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.finish().await;
    assert!(s.closed_reason().is_none());
    s.logout().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(150), "took {:?}", t0.elapsed());
}

#[tokio::test]
async fn tgt_cut_connections_lose_nothing() {
    cut_one_after_another_then_all(TGT, 700_000).await;
}

#[tokio::test]
async fn istgt_cut_connections_lose_nothing() {
    cut_one_after_another_then_all(ISTGT, 700_000).await;
}

/// The local addresses of the session's connections, leading first.
fn local_ips(s: &Session) -> Vec<std::net::IpAddr> {
    s.connections().iter().filter_map(|c| c.local_address.map(|a| a.ip())).collect()
}

async fn wait_connections(s: &Session, n: usize, limit: Duration) {
    let t = Instant::now();
    while s.connections().len() < n {
        assert!(t.elapsed() < limit, "connections did not come back: {:?}", s.connections().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection added from a chosen initiator port (here 127.0.0.2) comes
/// back from that port, whether it alone is reinstated or the whole
/// session is (tgt ends the session with its last connection).
#[tokio::test]
async fn a_recovered_connection_keeps_its_initiator_port() {
    let lab = TGT;
    let proxy = common::proxy::Proxy::start(format!("127.0.0.1:{}", lab.port).parse().unwrap()).await;
    let portal = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
    let s = Session::login(&portal, Some(&lab.iqn("ram1")), config()).await.unwrap();
    let port2: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let how = ConnectionLogin { local_address: Some(port2), ..ConnectionLogin::default() };
    s.connect_more(&portal, &how).await.unwrap();
    assert_eq!(local_ips(&s)[1], port2);
    let load = Load::start(&s, lab, 780_000, 4);
    load.progress(10, Duration::from_secs(20)).await;
    proxy.cut(1);
    load.progress(20, Duration::from_secs(30)).await;
    wait_connections(&s, 2, Duration::from_secs(30)).await;
    assert!(local_ips(&s).contains(&port2), "after reinstating the connection: {:?}", local_ips(&s));
    proxy.cut_all();
    load.progress(20, Duration::from_secs(40)).await;
    wait_connections(&s, 2, Duration::from_secs(40)).await;
    let ips = local_ips(&s);
    assert!(
        ips.contains(&port2) && ips.iter().filter(|ip| **ip == port2).count() == 1,
        "after reinstating the session: {ips:?}"
    );
    load.finish().await;
    s.logout().await.unwrap();
}

/// A single-connection session survives the loss of its only connection.
#[tokio::test]
async fn the_last_connection_is_reinstated() {
    for lab in BOTH {
        let proxy = common::proxy::Proxy::start(format!("127.0.0.1:{}", lab.port).parse().unwrap()).await;
        let portal = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
        let s = Session::login(&portal, Some(&lab.iqn("ram1")), config()).await.unwrap();
        let load = Load::start(&s, lab, 760_000, 4);
        load.progress(10, Duration::from_secs(20)).await;
        proxy.cut(0);
        load.progress(20, Duration::from_secs(40)).await;
        load.finish().await;
        s.logout().await.unwrap();
    }
}

/// When the target cannot be reached again, every pending command fails
/// with a clear error within DefaultTime2Wait + DefaultTime2Retain.
#[tokio::test]
async fn an_unreachable_target_fails_pending_commands_in_bounded_time() {
    let proxy = common::proxy::Proxy::start("127.0.0.1:3260".parse().unwrap()).await;
    let portal = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
    let mut cfg = config();
    cfg.nop_interval = Duration::from_secs(1);
    cfg.nop_timeout = Duration::from_secs(1);
    cfg.login_timeout = Duration::from_secs(2);
    cfg.proposal.default_time2retain = 5;
    let s = Session::login(&portal, Some(&TGT.iqn("ram1")), cfg).await.unwrap();
    s.test_unit_ready(TGT.lun).await.unwrap();
    proxy.stall(true);
    let t0 = Instant::now();
    let err = s.read_blocks(TGT.lun, 0, 8, 512).await.unwrap_err();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(err.to_string().contains("not re-established"), "{err}");
}
