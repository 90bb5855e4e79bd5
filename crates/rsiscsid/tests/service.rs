//! The real `rsiscsid` binary against the lab's tgt target reserved for
//! the service (`$RSISCSI_TGT_IQN_SVC` at 127.0.0.1:3260, LUN 1, 256 MiB,
//! MaxConnections 8): persistent MC/S login, data written through the API
//! while a connection is added and read back, restart after SIGTERM and
//! after kill -9 with the session back, exact error codes for bad
//! requests, the socket's permissions, secrets never shown, and the
//! recovery times of a session (shown, kept, checked). One test needs no
//! lab: a connection cut mid-read by `iscsi_target_sim`, recovered and
//! counted in the session view and the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::Method;
use rsiscsi_api::Client;
use rsiscsi_api::types::*;

const SECRET: &str = "Sv3cTestSecr3t!";

/// A lab setting: the environment, else the lab's env file
/// (`$RSISCSI_LAB_ENV`, lines `export NAME='value'`), else `default`.
fn lab(name: &str, default: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    let file = std::env::var("RSISCSI_LAB_ENV").unwrap_or_else(|_| "/tmp/rsiscsi-lab/lab.env".into());
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('\'').to_string())
        .unwrap_or_else(|| default.to_string())
}

fn target() -> String {
    lab("RSISCSI_TGT_IQN_SVC", "iqn.2024-01.lab.tgt:svc")
}

fn portal() -> Portal {
    Portal::new("127.0.0.1", 3260)
}

const LUN: u64 = 1;
const BLOCK: usize = 512;

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    client: Client,
    logs: u32,
    /// More `rsiscsid` arguments, for the next start.
    args: Vec<String>,
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rsiscsid-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    // Traversable by anyone, so that a refusal comes from the socket's mode.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

impl Daemon {
    fn socket(dir: &Path) -> PathBuf {
        dir.join("rsiscsid.sock")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn spawn(dir: &Path, n: u32) -> Child {
        Self::spawn_with(dir, n, &[])
    }

    fn spawn_with(dir: &Path, n: u32, args: &[String]) -> Child {
        let log = std::fs::File::create(dir.join(format!("log{n}.txt"))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_rsiscsid"))
            .env("RSISCSI_SYSTEM_CONFIG_DIR", dir.join("etc"))
            .arg("--socket")
            .arg(Self::socket(dir))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--log-level", "debug"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    async fn start(name: &str) -> Daemon {
        Self::start_with(name, Vec::new()).await
    }

    /// Started with more `rsiscsid` arguments (kept for its restarts).
    async fn start_with(name: &str, args: Vec<String>) -> Daemon {
        let dir = tempdir(name);
        let mut d = Daemon { child: None, client: Client::new(Self::socket(&dir)), dir, logs: 0, args };
        d.restart().await;
        d
    }

    async fn restart(&mut self) {
        self.logs += 1;
        self.child = Some(Self::spawn_with(&self.dir, self.logs, &self.args));
        let t0 = Instant::now();
        while self.client.health().await.is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "rsiscsid did not answer within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM; the service logs out and exits 0.
    async fn terminate(&mut self) {
        let mut c = self.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "rsiscsid did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
        assert!(!Self::socket(&self.dir).exists(), "socket file left behind after SIGTERM");
    }

    fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn all_logs(&self) -> String {
        (1..=self.logs).map(|n| std::fs::read_to_string(self.dir.join(format!("log{n}.txt"))).unwrap()).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rw10(op: u8, lba: u32, blocks: u16) -> String {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    hex::encode([op, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0])
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn write(c: &Client, sid: &str, lba: u32, data: &[u8]) {
    let r = c
        .scsi(
            sid,
            &ScsiRequest {
                lun: LUN,
                cdb: rw10(0x2a, lba, (data.len() / BLOCK) as u16),
                data_in_length: None,
                data_out: Some(B64.encode(data)),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.scsi_status, 0, "WRITE(10) at {lba}: sense {}", r.sense);
}

async fn read(c: &Client, sid: &str, lba: u32, len: usize) -> Vec<u8> {
    let r = c
        .scsi(
            sid,
            &ScsiRequest {
                lun: LUN,
                cdb: rw10(0x28, lba, (len / BLOCK) as u16),
                data_in_length: Some(len as u32),
                data_out: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.scsi_status, 0, "READ(10) at {lba}: sense {}", r.sense);
    assert_eq!(r.residual, 0);
    B64.decode(r.data).unwrap()
}

/// How many sessions (I_T nexuses) tgt holds for `initiator` on the svc
/// target, read with `tgtadm ... --op show` (read-only); `None` when tgtadm
/// cannot be asked.
fn tgt_sessions_of(initiator: &str) -> Option<usize> {
    let port = lab("RSISCSI_TGT_CONTROL_PORT", "3260");
    let out = Command::new("tgtadm")
        .args(["-C", &port, "--lld", "iscsi", "--mode", "target", "--op", "show"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!(": {}", target());
    let mut in_svc = false;
    let mut n = 0;
    for line in text.lines() {
        if line.starts_with("Target ") {
            in_svc = line.ends_with(&header);
        } else if in_svc && line.trim_start().starts_with(&format!("Initiator: {initiator} ")) {
            n += 1;
        }
    }
    Some(n)
}

/// Waits until the service shows one session to the target with `conns`
/// connections and the persistent login logged in to it.
async fn wait_for_session(c: &Client, conns: usize, within: Duration) -> Session {
    let t0 = Instant::now();
    loop {
        let sessions = c.sessions().await.unwrap().sessions;
        let pl = c.persistent_logins().await.unwrap().persistent_logins;
        if let (Some(s), Some(l)) =
            (sessions.iter().find(|s| s.target_name == target()), pl.iter().find(|l| l.target_name == target()))
            && s.connections.len() == conns
            && l.state == PersistentLoginState::LoggedIn
            && l.session_id.as_deref() == Some(s.session_id.as_str())
        {
            return s.clone();
        }
        assert!(t0.elapsed() < within, "session not back within {within:?}: {sessions:?} {pl:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_mcs_session_survives_sigterm_and_kill9() {
    tokio::time::timeout(Duration::from_secs(180), persistent_flow()).await.expect("test timed out");
}

async fn persistent_flow() {
    let mut d = Daemon::start("persist").await;
    let c = d.client.clone();
    let mut answers = String::new();

    c.set_chap_secret(&SecretString::new(SECRET)).await.unwrap();
    let ini = c.initiator().await.unwrap();
    assert!(ini.chap_secret_set);
    answers += &serde_json::to_string(&ini).unwrap();

    let stp = SendTargetPortal {
        address: "127.0.0.1".into(),
        port: 3260,
        symbolic_name: "lab".into(),
        initiator_port: None,
        security_flags: 0,
        login_options: LoginOptions::default(),
    };
    let added = c.add_portal(&stp, false).await.unwrap();
    assert!(added.refresh_error.is_none(), "{:?}", added.refresh_error);
    let refreshed = c.refresh_targets().await.unwrap();
    assert!(refreshed.errors.is_empty(), "{:?}", refreshed.errors);
    let t = refreshed.targets.iter().find(|t| t.name == target()).expect("svc target discovered");
    assert!(t.portals.iter().any(|p| p.port == 3260));
    assert_eq!(t.discovered_from, vec![Portal { symbolic_name: String::new(), ..portal() }]);

    let mut req = LoginRequest::new(target());
    req.portal = Some(portal());
    req.persistent = true;
    req.connections = 2;
    req.load_balance_policy = Some("round-robin".into());
    let login = c.login(&req).await.unwrap();
    assert_eq!(login.connection_ids.len(), 2);
    let sid = login.session_id.clone();
    let s = c.session(&sid).await.unwrap();
    assert_eq!(s.target_name, target());
    assert!(s.persistent);
    assert!(
        s.devices.iter().any(|dv| dv.lun == LUN && dv.block_size == 512 && dv.blocks == 524_288),
        "{:?}",
        s.devices
    );
    let isid = s.isid.clone();

    // Writes run while a third connection is added over the API.
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: u32 = 48;
    let base: u32 = 4096;
    let lba = move |i: u32| base + i * (CHUNK / BLOCK) as u32;
    let writer = {
        let c = c.clone();
        let sid = sid.clone();
        tokio::spawn(async move {
            for i in 0..CHUNKS {
                write(&c, &sid, lba(i), &pattern(i, CHUNK)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let third = c
        .add_connection(
            &sid,
            &AddConnectionRequest {
                portal: portal(),
                initiator_port: None,
                security_flags: None,
                login_options: None,
                key: None,
                tunnel_outer_address: None,
            },
        )
        .await
        .unwrap();
    writer.await.unwrap();
    for i in 0..CHUNKS {
        assert_eq!(read(&c, &sid, lba(i), CHUNK).await, pattern(i, CHUNK), "chunk {i} read back differs");
    }
    let s = c.session(&sid).await.unwrap();
    assert_eq!(s.connections.len(), 3);
    assert!(s.connections.iter().any(|x| x.connection_id == third.connection_id));
    assert_eq!(s.counters.commands, u64::from(CHUNKS) * 2);
    assert_eq!(s.counters.bytes_written, u64::from(CHUNKS) * CHUNK as u64);
    assert_eq!(s.counters.bytes_read, u64::from(CHUNKS) * CHUNK as u64);
    assert_eq!(s.counters.errors, 0);
    assert!(s.counters.latency_us.p50 > 0 && s.counters.latency_us.max >= s.counters.latency_us.p99);
    // Commands went over more than one connection (round robin).
    assert!(s.connections.iter().filter(|x| x.counters.commands > 0).count() >= 2, "{:?}", s.connections);
    // Per connection too: latency of what each answered, no errors, no reconnects.
    for x in s.connections.iter().filter(|x| x.counters.commands > 0) {
        let l = &x.counters.latency_us;
        assert!(l.p50 > 0 && l.p50 <= l.p99 && l.p99 <= l.max, "{x:?}");
        assert_eq!((x.counters.errors, x.counters.reconnects), (0, 0), "{x:?}");
    }
    let pl = c.persistent_logins().await.unwrap().persistent_logins;
    assert_eq!(pl.len(), 1);
    assert_eq!(pl[0].connections, 3);
    answers += &serde_json::to_string(&s).unwrap();
    answers += &serde_json::to_string(&pl).unwrap();

    // Restart after SIGTERM: the session logs out and comes back.
    d.terminate().await;
    let t0 = Instant::now();
    d.restart().await;
    let s2 = wait_for_session(&c, 3, Duration::from_secs(10)).await;
    eprintln!("back after SIGTERM restart in {:?}", t0.elapsed());
    assert_eq!(s2.isid, isid, "the persistent login keeps its ISID");
    assert_ne!(s2.session_id, sid);
    assert_eq!(read(&c, &s2.session_id, lba(7), CHUNK).await, pattern(7, CHUNK));

    // kill -9: nothing is logged out; the new login reinstates the old
    // session on the target (same ISID, TSIH 0; RFC 7143 §6.3.5).
    d.kill9();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state().join("state.json")).unwrap()).expect("state.json is JSON");
    assert_eq!(state["persistent_logins"][0]["isid"], isid);
    let secrets_text = std::fs::read_to_string(d.state().join("secrets.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&secrets_text).expect("secrets.json is JSON");
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.state().join("secrets.json")), 0o600);
    assert_eq!(mode(d.state()), 0o700);
    assert!(!std::fs::read_to_string(d.state().join("state.json")).unwrap().contains(SECRET));
    let t0 = Instant::now();
    d.restart().await;
    let s3 = wait_for_session(&c, 3, Duration::from_secs(10)).await;
    eprintln!("back after kill -9 restart in {:?}", t0.elapsed());
    assert_eq!(s3.isid, isid);
    // No stale session of ours is left on the target.
    match tgt_sessions_of(&s3.initiator_name) {
        Some(n) => assert_eq!(n, 1, "tgt holds {n} sessions of ours after the kill -9 restart"),
        None => eprintln!("tgtadm not available: reinstatement not checked on the target side"),
    }
    assert_eq!(read(&c, &s3.session_id, lba(11), CHUNK).await, pattern(11, CHUNK));
    answers += &serde_json::to_string(&c.initiator().await.unwrap()).unwrap();
    answers += &serde_json::to_string(&c.sessions().await.unwrap()).unwrap();
    answers += &serde_json::to_string(&c.persistent_logins().await.unwrap()).unwrap();

    // Forget the persistent login; the live session stays until logged out.
    c.remove_persistent_login(&target(), "127.0.0.1", 3260).await.unwrap();
    assert!(c.persistent_logins().await.unwrap().persistent_logins.is_empty());
    let left = c.sessions().await.unwrap().sessions;
    assert_eq!(left.len(), 1);
    assert!(!left[0].persistent, "no longer persistent once its login is removed");
    c.logout(&s3.session_id).await.unwrap();
    assert!(c.sessions().await.unwrap().sessions.is_empty());
    d.terminate().await;

    assert!(!answers.contains(SECRET), "an API answer shows the secret");
    let logs = d.all_logs();
    assert!(logs.contains("session logged in"), "logs are written");
    assert!(!logs.contains(SECRET), "a log line shows the secret");
}

async fn expect_err(r: Result<impl std::fmt::Debug, rsiscsi_api::ClientError>, http: u16, name: &str, code: u32) {
    match r {
        Err(rsiscsi_api::ClientError::Api { status, body }) => {
            assert_eq!((status, body.name.as_str(), body.code), (http, name, code), "{body:?}");
            assert_eq!(body.code_hex, format!("0x{code:08X}"));
            assert!(!body.message.is_empty());
        }
        other => panic!("expected {http} {name}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_exact_codes_and_the_service_lives_on() {
    tokio::time::timeout(Duration::from_secs(120), bad_requests()).await.expect("test timed out");
}

async fn bad_requests() {
    let mut d = Daemon::start("bad").await;
    let c = d.client.clone();

    // Malformed JSON.
    let (status, body) = c.request_raw(Method::POST, "/v1/targets/login", Some(b"{not json".to_vec())).await.unwrap();
    assert_eq!(status, 400);
    let e: ApiError = serde_json::from_slice(&body).unwrap();
    assert_eq!((e.error.code, e.error.name.as_str()), (87, "ERROR_INVALID_PARAMETER"));
    // A field of the wrong type and an unknown field.
    let (status, _) =
        c.request_raw(Method::POST, "/v1/targets/login", Some(br#"{"target_name":5}"#.to_vec())).await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = c
        .request_raw(Method::POST, "/v1/targets/login", Some(br#"{"target_name":"x","bogus":1}"#.to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 400);

    // Unknown and malformed session ids.
    expect_err(c.session("1-2").await, 404, "ISDSC_INVALID_SESSION_ID", 0xEFFF001C).await;
    expect_err(c.session("not-an-id").await, 400, "ISDSC_INVALID_SESSION_ID", 0xEFFF001C).await;
    expect_err(c.logout("ffff-1").await, 404, "ISDSC_INVALID_SESSION_ID", 0xEFFF001C).await;

    // A CHAP secret of 5 bytes, for the initiator and for a login.
    expect_err(
        c.set_chap_secret(&SecretString::new("abcde")).await,
        400,
        "ISDSC_INVALID_INITIATOR_CHAP_SECRET",
        0xEFFF004C,
    )
    .await;
    let mut req = LoginRequest::new(target());
    req.portal = Some(portal());
    req.login_options = Some(LoginOptions {
        auth_type: Some(AuthType::Chap),
        username: Some("u".into()),
        password: Some(SecretString::new("abcde")),
        ..Default::default()
    });
    expect_err(c.login(&req).await, 400, "ISDSC_INVALID_CHAP_SECRET", 0xEFFF004A).await;

    // Unknown policy name at login.
    let mut req = LoginRequest::new(target());
    req.portal = Some(portal());
    req.load_balance_policy = Some("fastest".into());
    expect_err(c.login(&req).await, 400, "ISDSC_INVALID_LOAD_BALANCE_POLICY", 0xEFFF0055).await;

    // An undiscovered target without a portal.
    expect_err(
        c.login(&LoginRequest::new("iqn.2024-01.nowhere:x")).await,
        404,
        "ISDSC_NO_PORTAL_SPECIFIED",
        0xEFFF003C,
    )
    .await;
    // A target the portal does not have: login status 0x0203 (RFC 7143
    // §11.13.5), which the model maps to ISDSC_NOT_FOUND.
    let mut req = LoginRequest::new("iqn.2024-01.nowhere:x");
    req.portal = Some(portal());
    expect_err(c.login(&req).await, 404, "ISDSC_NOT_FOUND", 0xEFFF000B).await;

    // The initiator port (an interface index) binds every connection, the
    // leading one included; an index no interface has is refused.
    let mut req = LoginRequest::new(target());
    req.portal = Some(portal());
    req.initiator_port = Some(4_000_000);
    expect_err(c.login(&req).await, 400, "ISDSC_INVALID_PORT_NUMBER", 0xEFFF002D).await;
    let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap().trim().parse().unwrap();
    req.initiator_port = Some(lo);
    req.connections = 2;
    req.login_options = Some(LoginOptions { login_flags: Some(0x2), ..Default::default() });
    let bound = c.login(&req).await.unwrap();
    let s = c.session(&bound.session_id).await.unwrap();
    assert_eq!(s.connections.len(), 2);
    assert!(s.connections.iter().all(|x| x.initiator_address == "127.0.0.1"), "{:?}", s.connections);
    c.logout(&bound.session_id).await.unwrap();

    // A live session (not persistent) with two connections.
    let mut req = LoginRequest::new(target());
    req.portal = Some(portal());
    req.connections = 2;
    req.login_options = Some(LoginOptions { login_flags: Some(0x2), ..Default::default() });
    let login = c.login(&req).await.unwrap();
    let sid = login.session_id.clone();
    expect_err(c.set_policy(&sid, "fastest").await, 400, "ISDSC_INVALID_LOAD_BALANCE_POLICY", 0xEFFF0055).await;
    c.set_policy(&sid, "least-queue-depth").await.unwrap();
    assert_eq!(c.session(&sid).await.unwrap().load_balance_policy, "least-queue-depth");
    let bad_cdb = ScsiRequest { lun: LUN, cdb: "zz12".into(), data_in_length: Some(8), data_out: None };
    expect_err(c.scsi(&sid, &bad_cdb).await, 400, "ERROR_INVALID_PARAMETER", 87).await;
    let long_cdb = ScsiRequest { lun: LUN, cdb: "00".repeat(17), data_in_length: None, data_out: None };
    expect_err(c.scsi(&sid, &long_cdb).await, 400, "ERROR_INVALID_PARAMETER", 87).await;
    let bad_b64 = ScsiRequest { lun: LUN, cdb: rw10(0x2a, 0, 1), data_in_length: None, data_out: Some("!!".into()) };
    expect_err(c.scsi(&sid, &bad_b64).await, 400, "ERROR_INVALID_PARAMETER", 87).await;
    // TEST UNIT READY on a LUN that does not exist: the target answers
    // CHECK CONDITION, which the endpoint reports, not as an error.
    let tur = ScsiRequest { lun: 77, cdb: "000000000000".into(), data_in_length: None, data_out: None };
    let r = c.scsi(&sid, &tur).await.unwrap();
    assert_eq!(r.scsi_status, 2, "{r:?}");
    assert!(!r.sense.is_empty());
    let leading = login.connection_ids[0].clone();
    expect_err(c.remove_connection(&sid, &leading).await, 409, "ISDSC_CANNOT_REMOVE_LEADING_CONNECTION", 0xEFFF0064)
        .await;
    expect_err(c.remove_connection(&sid, "zz").await, 400, "ISDSC_INVALID_CONNECTION_ID", 0xEFFF0063).await;
    expect_err(c.remove_connection(&sid, "1-99").await, 404, "ISDSC_INVALID_CONNECTION_ID", 0xEFFF0063).await;
    // The second connection can go; then the last one cannot.
    c.remove_connection(&sid, &login.connection_ids[1]).await.unwrap();
    assert_eq!(c.session(&sid).await.unwrap().connections.len(), 1);

    // Portals: duplicates and unknown ones.
    let p = SendTargetPortal {
        address: "127.0.0.1".into(),
        port: 3260,
        symbolic_name: String::new(),
        initiator_port: None,
        security_flags: 0,
        login_options: LoginOptions::default(),
    };
    c.add_portal(&p, false).await.unwrap();
    expect_err(c.add_portal(&p, false).await, 409, "ISDSC_TARGET_PORTAL_ALREADY_EXISTS", 0xEFFF0032).await;
    expect_err(c.remove_portal("10.9.9.9", 3260).await, 404, "ISDSC_PORTAL_NOT_FOUND", 0xEFFF0043).await;
    let (status, _) = c.request_raw(Method::DELETE, "/v1/portals?port=notaport", None).await.unwrap();
    assert_eq!(status, 400);
    // A portal SendTargets fails on is not added, and the call fails
    // (Windows' AddTargetPortal)...
    let mut dead = p.clone();
    dead.port = 1;
    let e = c.add_portal(&dead, false).await.unwrap_err();
    let body = e.api_error().unwrap();
    assert_eq!(body.name, "ISDSC_CONNECTION_FAILED");
    assert!(body.message.starts_with("SendTargets on 127.0.0.1:1 failed: "), "{}", body.message);
    assert!(body.message.ends_with("; the portal was not added"), "{}", body.message);
    assert!(!c.portals().await.unwrap().portals.iter().any(|x| x.port == 1));
    // ... unless it is to be kept: then it is added, with the reason.
    let r = c.add_portal(&dead, true).await.unwrap();
    assert_eq!(r.refresh_error.as_ref().map(|e| e.name.as_str()), Some("ISDSC_CONNECTION_FAILED"));
    assert!(c.portals().await.unwrap().portals.iter().any(|x| x.port == 1));
    c.remove_portal("127.0.0.1", 1).await.unwrap();

    // A portal with a CHAP password: stored in the secrets file only, never
    // shown by the API (password_set instead) nor logged, even at debug level.
    const SECRET2: &str = "P0rtalSecret42";
    let mut chap = p.clone();
    chap.address = "localhost".into();
    chap.login_options = LoginOptions {
        auth_type: Some(AuthType::Chap),
        username: Some("someone".into()),
        password: Some(SecretString::new(SECRET2)),
        ..Default::default()
    };
    let added = c.add_portal(&chap, true).await.unwrap();
    let listed = c.portals().await.unwrap();
    let shown = serde_json::to_string(&(&added, &listed)).unwrap();
    assert!(!shown.contains(SECRET2), "{shown}");
    let l = listed.portals.iter().find(|x| x.address == "localhost").unwrap();
    assert!(l.login_options.password_set && l.login_options.password.is_none());
    let state_dir = d.state();
    assert!(std::fs::read_to_string(state_dir.join("secrets.json")).unwrap().contains(SECRET2));
    assert!(!std::fs::read_to_string(state_dir.join("state.json")).unwrap().contains(SECRET2));
    let _ = c.refresh_targets().await.unwrap();

    // A second daemon on the same socket refuses to start; the first lives on.
    let mut second = Daemon::spawn(&d.dir, 99);
    let status = tokio::task::spawn_blocking(move || second.wait().unwrap()).await.unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(d.dir.join("log99.txt")).unwrap();
    assert!(log.contains("already listening"), "{log}");

    // Still alive after all that.
    assert_eq!(c.health().await.unwrap().sessions, 1);
    d.terminate().await;
    let logs = d.all_logs();
    assert!(!logs.contains(SECRET2), "a log line shows the portal's CHAP password");
    // Each request is logged with who sent it (SO_PEERCRED).
    let me = nix::unistd::geteuid().as_raw();
    let line = logs
        .lines()
        .find(|l| l.contains("api request") && l.contains("/v1/initiator/chap-secret"))
        .expect("the chap-secret request is logged");
    assert!(line.contains(&format!("uid=Some({me})")) && line.contains("status=400"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_for_its_owner_only() {
    // Never skipped: CI runs as root and scripts/test.sh installs python3.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs a child as uid 65534: run it as root (scripts/test.sh does)"
    );
    assert!(Path::new("/usr/bin/python3").exists(), "/usr/bin/python3 is missing: scripts/test.sh installs it");
    let mut d = Daemon::start("perm").await;
    let sock = Daemon::socket(&d.dir);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let script = "import socket,sys\n\
s=socket.socket(socket.AF_UNIX)\n\
try:\n    s.connect(sys.argv[1]); print('connected')\n\
except PermissionError: print('refused')\n";
    let run = |uid: Option<u32>| {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-c", script]).arg(&sock);
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        String::from_utf8(cmd.output().unwrap().stdout).unwrap().trim().to_string()
    };
    assert_eq!(run(Some(65534)), "refused", "uid 65534 must not reach the API");
    assert_eq!(run(None), "connected", "control: the owner can connect");
    assert!(d.client.health().await.is_ok());
    d.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_group_gives_0660_and_metrics_stay_on_loopback() {
    let dir = tempdir("group");
    let sock = Daemon::socket(&dir);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsiscsid"))
        .env("RSISCSI_SYSTEM_CONFIG_DIR", dir.join("etc"))
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--socket-group", "nogroup", "--metrics", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = Client::new(&sock);
    let t0 = Instant::now();
    while c.health().await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&m), 65534);
    // Prometheus text on the loopback listener.
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("# TYPE rsiscsi_sessions gauge\nrsiscsi_sessions 0\n"), "{body}");
    child.kill().unwrap();
    child.wait().unwrap();

    // A non-loopback metrics address is refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_rsiscsid"))
        .env("RSISCSI_SYSTEM_CONFIG_DIR", dir.join("etc"))
        .arg("--socket")
        .arg(dir.join("other.sock"))
        .arg("--state-dir")
        .arg(dir.join("state2"))
        .args(["--metrics", "0.0.0.0:9465"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

/// A TCP relay to tgt that can be switched on later: the target is "down"
/// (connection refused) until then.
async fn relay_later(port: u16, after: Duration) {
    tokio::time::sleep(after).await;
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect("127.0.0.1:3260").await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_login_to_a_down_target_is_retried_until_it_is_up() {
    tokio::time::timeout(Duration::from_secs(90), down_then_up()).await.expect("test timed out");
}

async fn down_then_up() {
    let mut d = Daemon::start("retry").await;
    let c = d.client.clone();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut req = LoginRequest::new(target());
    req.portal = Some(Portal::new("127.0.0.1", port));
    req.persistent = true;
    req.connections = 2;
    req.login_options = Some(LoginOptions { login_flags: Some(0x2), ..Default::default() });
    // Down: the login fails, but stays stored and is retried.
    expect_err(c.login(&req).await, 502, "ISDSC_CONNECTION_FAILED", 0xEFFF0003).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pl = c.persistent_logins().await.unwrap().persistent_logins;
    assert_eq!(pl.len(), 1);
    assert_eq!(pl[0].state, PersistentLoginState::Retrying);
    assert!(pl[0].last_error.as_deref().unwrap_or("").contains("ISDSC_CONNECTION_FAILED"), "{pl:?}");
    assert!(c.sessions().await.unwrap().sessions.is_empty());
    // Up after 4 s: back-off 1, 2, 4 s means the next try comes within ~4 s.
    relay_later(port, Duration::from_secs(4)).await;
    let t0 = Instant::now();
    let s = loop {
        let pl = c.persistent_logins().await.unwrap().persistent_logins;
        if pl[0].state == PersistentLoginState::LoggedIn {
            let sid = pl[0].session_id.clone().unwrap();
            break c.session(&sid).await.unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "not logged in 20 s after the target came up: {pl:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s.connections.len(), 2);
    assert_eq!(s.target_name, target());
    let logs = d.all_logs();
    assert!(logs.contains("retrying in"), "back-off is logged");
    c.remove_persistent_login(&target(), "127.0.0.1", port).await.unwrap();
    d.terminate().await;
}

/// A relay to tgt that keeps the target side of a connection open after the
/// initiator side goes away, as a peer that never saw the FIN would: the
/// session of a killed service then stays alive on the target.
async fn sticky_relay() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((a, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(b) = tokio::net::TcpStream::connect("127.0.0.1:3260").await else { return };
                let (mut ra, mut wa) = a.into_split();
                let (mut rb, mut wb) = b.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut rb, &mut wa).await;
                    std::future::pending::<()>().await;
                    drop((rb, wa));
                });
                let _ = tokio::io::copy(&mut ra, &mut wb).await;
                // Dropping wb would send a FIN: hold it.
                std::future::pending::<()>().await;
                drop(wb);
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill9_the_new_login_reinstates_the_old_session() {
    tokio::time::timeout(Duration::from_secs(60), reinstatement()).await.expect("test timed out");
}

async fn reinstatement() {
    let mut d = Daemon::start("reinstate").await;
    let c = d.client.clone();
    let port = sticky_relay().await;
    let initiator = c.initiator().await.unwrap().node_name;
    assert_eq!(tgt_sessions_of(&initiator), Some(0), "tgtadm must show the target's sessions (none of ours yet)");
    let mut req = LoginRequest::new(target());
    req.portal = Some(Portal::new("127.0.0.1", port));
    req.persistent = true;
    req.login_options = Some(LoginOptions { login_flags: Some(0x2), ..Default::default() });
    let first = c.login(&req).await.unwrap();
    let isid = c.session(&first.session_id).await.unwrap().isid;
    assert_eq!(tgt_sessions_of(&initiator), Some(1));
    d.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Precondition: the dead service's session is still there.
    assert_eq!(tgt_sessions_of(&initiator), Some(1), "the old session should outlive the killed service");
    d.restart().await;
    let t0 = Instant::now();
    loop {
        let pl = c.persistent_logins().await.unwrap().persistent_logins;
        if pl.first().map(|l| l.state) == Some(PersistentLoginState::LoggedIn) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not logged in again: {pl:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = &c.sessions().await.unwrap().sessions[0];
    assert_eq!(s.isid, isid);
    // Same ISID, TSIH 0: tgt closed the old session (RFC 7143 §6.3.5); with a
    // new ISID it would hold two.
    let t0 = Instant::now();
    loop {
        let n = tgt_sessions_of(&initiator).unwrap();
        if n == 1 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "tgt holds {n} sessions of ours: old one not reinstated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.remove_persistent_login(&target(), "127.0.0.1", port).await.unwrap();
    c.logout(&s.session_id).await.unwrap();
    d.terminate().await;
}

/// kill -9 while the state is being rewritten as fast as the API allows:
/// every time, both files are whole JSON and the state the last answer
/// confirmed (or a later one) is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_writes_never_leaves_a_torn_state() {
    let mut d = Daemon::start("torn").await;
    for round in 0..6u64 {
        let c = d.client.clone();
        let writer = tokio::spawn(async move {
            let mut confirmed = None;
            for i in 0u64.. {
                let alias = format!("alias-{i}");
                let secret = SecretString::new(format!("secret-{i:08}"));
                if c.set_initiator(&InitiatorUpdate { node_name: None, alias: Some(alias) }).await.is_err() {
                    break;
                }
                confirmed = Some(i);
                if c.set_chap_secret(&secret).await.is_err() {
                    break;
                }
            }
            confirmed
        });
        tokio::time::sleep(Duration::from_millis(40 + 37 * round)).await;
        d.kill9();
        let confirmed = writer.await.unwrap().expect("some writes were confirmed");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.state().join("state.json")).unwrap()).expect("state.json whole");
        let _: serde_json::Value = serde_json::from_slice(&std::fs::read(d.state().join("secrets.json")).unwrap())
            .expect("secrets.json whole");
        let alias = state["initiator"]["alias"].as_str().unwrap();
        let n: u64 = alias.strip_prefix("alias-").unwrap().parse().unwrap();
        assert!(n >= confirmed, "round {round}: confirmed alias-{confirmed} but found {alias}");
        d.restart().await;
        assert_eq!(d.client.initiator().await.unwrap().alias, alias);
    }
    d.terminate().await;
}

/// A loopback TCP port nobody listens on (for `--metrics`).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The Prometheus text of `--metrics 127.0.0.1:PORT`.
async fn metrics(port: u16) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    })
    .await
    .unwrap()
}

/// The value of metric `name` for session `sid`.
fn metric(text: &str, name: &str, sid: &str) -> Option<u64> {
    let prefix = format!("{name}{{session=\"{sid}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.parse().unwrap())
}

const RECOVERY_METRICS: [&str; 4] = [
    "rsiscsi_recoveries_total",
    "rsiscsi_connections_reinstated_total",
    "rsiscsi_sessions_reinstated_total",
    "rsiscsi_recovery_give_ups_total",
];

/// Hold time and link-down time (Windows' MaxRequestHoldTime and
/// LinkDownTime): checked, shown in the session view with the recovery
/// counters, kept with a persistent login across a restart, the service's
/// own defaults (Windows', or `--max-request-hold-time` / `--link-down-time`)
/// for a login that does not give them; the counters also in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_times_are_checked_shown_and_kept_across_a_restart() {
    tokio::time::timeout(Duration::from_secs(120), recovery_times()).await.expect("test timed out");
}

async fn recovery_times() {
    let port = free_port();
    let mut d = Daemon::start_with("recovery", vec!["--metrics".into(), format!("127.0.0.1:{port}")]).await;
    let c = d.client.clone();

    // Out of 1..=3600: ISDSC_INVALID_PARAMETER, and a persistent login with
    // such a value is not stored.
    for (hold, link) in [(Some(0), None), (None, Some(0)), (Some(3601), Some(15)), (Some(60), Some(u32::MAX))] {
        let mut req = LoginRequest::new(target());
        req.portal = Some(portal());
        req.persistent = true;
        req.max_request_hold_time_s = hold;
        req.link_down_time_s = link;
        expect_err(c.login(&req).await, 400, "ISDSC_INVALID_PARAMETER", 0xEFFF0056).await;
    }
    let (status, body) = c
        .request_raw(
            Method::POST,
            "/v1/targets/login",
            Some(format!(r#"{{"target_name":"{}","max_request_hold_time_s":"60"}}"#, target()).into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let e: ApiError = serde_json::from_slice(&body).unwrap();
    assert_eq!(e.error.code, 87, "{e:?}");
    assert!(c.persistent_logins().await.unwrap().persistent_logins.is_empty());
    assert!(c.sessions().await.unwrap().sessions.is_empty());

    // Without them: Windows' 60 s and 15 s; nothing recovered yet.
    let mut req = LoginRequest::new(target());
    req.portal = Some(portal());
    let plain = c.login(&req).await.unwrap();
    let s = c.session(&plain.session_id).await.unwrap();
    assert_eq!((s.max_request_hold_time_s, s.link_down_time_s), (60, 15));
    assert_eq!(s.recovery_counters, RecoveryCounters::default());
    c.logout(&plain.session_id).await.unwrap();

    // Persistent, with its own: shown by the session and the stored login.
    req.persistent = true;
    req.max_request_hold_time_s = Some(45);
    req.link_down_time_s = Some(7);
    let login = c.login(&req).await.unwrap();
    let s = c.session(&login.session_id).await.unwrap();
    assert_eq!((s.max_request_hold_time_s, s.link_down_time_s), (45, 7));
    let pl = c.persistent_logins().await.unwrap().persistent_logins;
    assert_eq!((pl[0].max_request_hold_time_s, pl[0].link_down_time_s), (45, 7));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["persistent_logins"][0]["max_request_hold_time_s"], 45);
    assert_eq!(state["persistent_logins"][0]["link_down_time_s"], 7);
    // The recovery counters of the session, in the metrics.
    let text = metrics(port).await;
    for name in RECOVERY_METRICS {
        assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}: {text}");
        assert_eq!(metric(&text, name, &login.session_id), Some(0), "{name}: {text}");
    }

    // Restarted with other defaults: the persistent login keeps its own
    // times; a login without them gets the new defaults.
    d.terminate().await;
    d.args.extend(["--max-request-hold-time", "90", "--link-down-time", "20"].map(String::from));
    d.restart().await;
    let back = wait_for_session(&c, 1, Duration::from_secs(10)).await;
    assert_ne!(back.session_id, login.session_id);
    assert_eq!((back.max_request_hold_time_s, back.link_down_time_s), (45, 7));
    let mut other = LoginRequest::new(target());
    other.portal = Some(portal());
    other.login_options = Some(LoginOptions { login_flags: Some(0x2), ..Default::default() });
    let second = c.login(&other).await.unwrap();
    let s = c.session(&second.session_id).await.unwrap();
    assert_eq!((s.max_request_hold_time_s, s.link_down_time_s), (90, 20));
    let text = metrics(port).await;
    for sid in [&back.session_id, &second.session_id] {
        assert_eq!(metric(&text, "rsiscsi_recoveries_total", sid), Some(0), "{text}");
    }

    c.remove_persistent_login(&target(), "127.0.0.1", 3260).await.unwrap();
    c.logout(&back.session_id).await.unwrap();
    c.logout(&second.session_id).await.unwrap();
    d.terminate().await;
}

/// A real recovery through the service: the simulated target cuts (TCP
/// reset) the connection in the middle of a 2 MiB read; the initiator
/// recovers it, the read completes with the bytes written before, and the
/// session view and the metrics count the recovery. Needs no lab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_read_is_recovered_and_counted() {
    tokio::time::timeout(Duration::from_secs(90), cut_mid_read()).await.expect("test timed out");
}

async fn cut_mid_read() {
    use iscsi_target_sim::{Fault, SimConfig, SimTarget};
    let sim = SimTarget::start(SimConfig {
        faulty_connections: Some(1),
        ..SimConfig::with_fault(Fault::CutMidRead { after: 1, reset: true })
    })
    .await
    .unwrap();
    let port = free_port();
    let mut d = Daemon::start_with("cut", vec!["--metrics".into(), format!("127.0.0.1:{port}")]).await;
    let c = d.client.clone();
    let mut req = LoginRequest::new(sim.target_name());
    req.portal = Some(Portal::new("127.0.0.1", sim.addr().port()));
    req.max_request_hold_time_s = Some(30);
    req.link_down_time_s = Some(10);
    let sid = c.login(&req).await.unwrap().session_id;

    const LEN: usize = 2 << 20;
    let data = pattern(7, LEN);
    let blocks = (LEN / BLOCK) as u16;
    let w = c
        .scsi(
            &sid,
            &ScsiRequest {
                lun: 0,
                cdb: rw10(0x2a, 0, blocks),
                data_in_length: None,
                data_out: Some(B64.encode(&data)),
            },
        )
        .await
        .unwrap();
    assert_eq!(w.scsi_status, 0, "WRITE(10): sense {}", w.sense);
    let r = c
        .scsi(
            &sid,
            &ScsiRequest { lun: 0, cdb: rw10(0x28, 0, blocks), data_in_length: Some(LEN as u32), data_out: None },
        )
        .await
        .unwrap();
    assert_eq!(r.scsi_status, 0, "READ(10): sense {}", r.sense);
    assert!(B64.decode(&r.data).unwrap() == data, "the recovered read returned other bytes than written");
    assert!(sim.stats().logins >= 2, "the connection was not cut and logged in again: {:?}", sim.stats());

    let s = c.session(&sid).await.unwrap();
    eprintln!("recovery counters after the cut: {:?}", s.recovery_counters);
    assert_eq!((s.max_request_hold_time_s, s.link_down_time_s), (30, 10));
    assert!(s.recovery_counters.recoveries >= 1, "{:?}", s.recovery_counters);
    assert_eq!(s.recovery_counters.give_ups, 0, "{:?}", s.recovery_counters);
    let text = metrics(port).await;
    let m = |name| metric(&text, name, &sid).unwrap_or_else(|| panic!("{name} of {sid} missing: {text}"));
    assert_eq!(m("rsiscsi_recoveries_total"), s.recovery_counters.recoveries);
    assert_eq!(m("rsiscsi_connections_reinstated_total"), s.recovery_counters.connections_reinstated);
    assert_eq!(m("rsiscsi_sessions_reinstated_total"), s.recovery_counters.sessions_reinstated);
    assert_eq!(m("rsiscsi_recovery_give_ups_total"), 0);
    c.logout(&sid).await.unwrap();
    d.terminate().await;
}
