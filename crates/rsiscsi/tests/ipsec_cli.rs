//! IPsec through the real binaries (issue 22), against the lab of
//! `scripts/ipsec-lab.sh`: `rsiscsi` and `rsiscsid` run inside the
//! initiator namespace (`ip netns exec rsiscsi-ipsec-i ...`) with the lab's
//! charon at `RSISCSI_VICI_SOCKET`, and reach tgtd only through the IKEv2
//! tunnel to the target namespace. The tests run one at a time (they share
//! charon and the LUN) and fail, never skip, when the lab is not up: run
//! them with scripts/test.sh, or `scripts/ipsec-lab.sh up` first (as root).
//! `rsiscsid` is another package's binary: `cargo build -p rsiscsid` first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The tests share one charon and one LUN: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const MIB: usize = 1024 * 1024;

/// What `ipsec-lab.sh up` wrote.
struct Lab {
    env: HashMap<String, String>,
    dir: PathBuf,
}

impl Lab {
    fn load(name: &str) -> Lab {
        let path = std::env::var("RSISCSI_IPSEC_ENV").unwrap_or_else(|_| "/tmp/rsiscsi-ipsec/ipsec.env".into());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the IPsec lab is not running ({path}: {e}): run scripts/test.sh, or scripts/ipsec-lab.sh up (as root)"
            )
        });
        let env = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = std::env::temp_dir().join(format!("rsiscsi-ipsec-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab { env, dir };
        let ns = format!("/run/netns/{}", lab.get("IPSEC_NS_I"));
        assert!(Path::new(&ns).exists(), "{ns} is missing: the IPsec lab is not up (scripts/ipsec-lab.sh up)");
        lab
    }

    fn get(&self, k: &str) -> &str {
        self.env.get(k).unwrap_or_else(|| panic!("{k} missing from the IPsec lab's env file"))
    }

    fn psk(&self) -> String {
        String::from_utf8(std::fs::read(self.get("IPSEC_PSK_FILE")).unwrap()).unwrap().trim_end().to_string()
    }

    /// `iscsi://INNER/IQN/LUN`: the portal only the tunnel reaches.
    fn url(&self) -> String {
        format!("iscsi://{}/{}/{}", self.get("IPSEC_INNER_T"), self.get("IPSEC_TARGET"), self.get("IPSEC_LUN"))
    }

    /// `--ipsec tunnel --ipsec-tunnel-peer OUTER --ipsec-psk-file FILE`.
    fn tunnel_args(&self, psk_file: &str) -> Vec<String> {
        ["--ipsec", "tunnel", "--ipsec-tunnel-peer", self.get("IPSEC_OUTER_T"), "--ipsec-psk-file", psk_file]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// `COMMAND ARGS...` inside the initiator namespace, with charon's
    /// socket in RSISCSI_VICI_SOCKET and scratch config directories.
    fn in_ns(&self, program: &Path, args: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.get("IPSEC_NS_I")])
            .arg(program)
            .args(args)
            .env("RSISCSI_VICI_SOCKET", self.get("IPSEC_VICI_SOCKET"))
            .env("RSISCSI_SYSTEM_CONFIG_DIR", self.dir.join("etc"))
            .env("RSISCSI_CONFIG_DIR", self.dir.join("config"))
            .env("RSISCSI_STATE_DIR", self.dir.join("cli-state"))
            .env("XDG_CONFIG_HOME", self.dir.join("xdg"))
            .env_remove("RSISCSI_SOCKET")
            .env_remove("RSISCSI_IPSEC_PSK")
            .env_remove("RSISCSI_CHAP_SECRET");
        c
    }

    /// `rsiscsi ARGS...` in the initiator namespace.
    fn rsiscsi(&self, args: &[String]) -> Output {
        self.in_ns(Path::new(env!("CARGO_BIN_EXE_rsiscsi")), args).output().unwrap()
    }

    /// Our SAs in charon, as `swanctl --list-sas` shows them.
    fn sas(&self) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", self.get("IPSEC_NS_I"), "swanctl", "--list-sas", "--uri"])
            .arg(format!("unix://{}", self.get("IPSEC_VICI_SOCKET")))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "swanctl --list-sas failed");
        text(&o.stdout)
    }

    /// Waits (a few seconds) until charon holds nothing of ours.
    fn assert_no_sa_of_ours(&self) {
        let t0 = Instant::now();
        loop {
            let sas = self.sas();
            if !sas.contains("rsiscsi-") {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "SAs of ours left in charon:\n{sas}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

/// Neither stream of `o` shows the key.
fn assert_hidden(o: &Output, psk: &str, what: &str) {
    for stream in [&o.stdout, &o.stderr] {
        assert!(!text(stream).contains(psk), "{what} printed the pre-shared key");
    }
}

/// A file of `len` bytes that differs each run (seeded by the time).
fn pattern(path: &Path, len: usize) -> Vec<u8> {
    let mut x = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

/// `cp` of 32 MiB to the LUN behind the tunnel and back, over two
/// connections (MC/S: each with an SA of its own), exact; the key never
/// shows, and nothing of ours stays in charon.
#[test]
fn cp_through_the_tunnel_and_back() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::load("cp");
    let psk = lab.psk();
    let src = lab.dir.join("in.bin");
    let back = lab.dir.join("back.bin");
    let data = pattern(&src, 32 * MIB);
    let len = data.len().to_string();
    let mut args = s(&["-v", "cp", "--no-progress", "--connections", "2"]);
    args.extend(lab.tunnel_args(lab.get("IPSEC_PSK_FILE")));
    let mut up = args.clone();
    up.extend([src.display().to_string(), lab.url()]);
    let o = lab.rsiscsi(&up);
    assert!(o.status.success(), "cp to the LUN: {}", text(&o.stderr));
    assert_hidden(&o, &psk, "cp");
    // Both connections went through an SA of their own (the -v log).
    assert_eq!(text(&o.stderr).matches("IPsec SA up").count(), 2, "{}", text(&o.stderr));
    let mut down = args;
    down.extend(["--length".into(), len, lab.url(), back.display().to_string()]);
    let o = lab.rsiscsi(&down);
    assert!(o.status.success(), "cp from the LUN: {}", text(&o.stderr));
    assert_hidden(&o, &psk, "cp");
    assert!(std::fs::read(&back).unwrap() == data, "the data read back differs from the data written");
    lab.assert_no_sa_of_ours();
}

/// The wrong key: IKE authentication fails, the command says
/// ISDSC_FAILED_TO_CONFIGURE_IPSEC with what to check and exits non-zero,
/// and no data moves (the output file is never created).
#[test]
fn wrong_psk_fails_to_configure_ipsec() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::load("wrong");
    let out = lab.dir.join("out.bin");
    let mut args = s(&["cp", "--no-progress", "--length", "1048576"]);
    args.extend(lab.tunnel_args(lab.get("IPSEC_WRONG_PSK_FILE")));
    args.extend([lab.url(), out.display().to_string()]);
    let t0 = Instant::now();
    let o = lab.rsiscsi(&args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("ISDSC_FAILED_TO_CONFIGURE_IPSEC, 0xEFFF0053"), "{err}");
    assert!(err.contains("check the pre-shared key"), "{err}");
    assert!(err.contains("nothing was sent in clear text"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    assert!(!out.exists(), "{} was created", out.display());
    let wrong = String::from_utf8(std::fs::read(lab.get("IPSEC_WRONG_PSK_FILE")).unwrap()).unwrap();
    assert_hidden(&o, wrong.trim_end(), "cp with the wrong key");
    lab.assert_no_sa_of_ours();
}

/// `--ipsec` without a key (no file, no RSISCSI_IPSEC_PSK): Windows'
/// ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE and how to give one, before
/// anything is asked of charon (an unreachable socket is not mentioned).
#[test]
fn missing_psk_is_target_presharedkey_unavailable() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::load("missing");
    let args = s(&["capacity", "--ipsec", "tunnel", "--vici-socket", "/nonexistent/charon.vici", &lab.url()]);
    let o = lab.rsiscsi(&args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE, 0xEFFF0027"), "{err}");
    assert!(err.contains("--ipsec-psk-file") && err.contains("RSISCSI_IPSEC_PSK"), "{err}");
    assert!(!err.contains("/nonexistent"), "charon was asked: {err}");
    // The same key from the environment works.
    let mut args = s(&["capacity", "--ipsec", "tunnel", "--ipsec-tunnel-peer", lab.get("IPSEC_OUTER_T")]);
    args.push(lab.url());
    let o = lab.in_ns(Path::new(env!("CARGO_BIN_EXE_rsiscsi")), &args).env("RSISCSI_IPSEC_PSK", lab.psk()).output();
    let o = o.unwrap();
    assert!(o.status.success(), "capacity with RSISCSI_IPSEC_PSK: {}", text(&o.stderr));
    assert_hidden(&o, &lab.psk(), "capacity");
    lab.assert_no_sa_of_ours();
}

/// A key file others may read (mode 0644) is refused before anything
/// connects: not even charon is asked (its socket here does not exist).
#[test]
fn psk_file_readable_by_others_is_refused() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::load("mode");
    let f = lab.dir.join("psk-0644");
    std::fs::write(&f, lab.psk()).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = s(&["inquiry", "--vici-socket", "/nonexistent/charon.vici"]);
    args.extend(lab.tunnel_args(&f.display().to_string()));
    args.push(lab.url());
    let o = lab.rsiscsi(&args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is accessible by others (mode 0644)") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains("/nonexistent") && !err.contains("ISDSC"), "it went further: {err}");
    assert_hidden(&o, &lab.psk(), "inquiry");
    // --ipsec-tunnel-peer goes with tunnel mode only.
    let mut args = s(&["capacity", "--ipsec", "transport", "--ipsec-tunnel-peer", "198.18.8.2"]);
    args.push(lab.url());
    let o = lab.rsiscsi(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("goes with --ipsec tunnel"), "{}", text(&o.stderr));
}

/// rsiscsid in the initiator namespace, its socket and state in the
/// lab's scratch directory, charon at the lab's VICI socket.
struct Daemon<'a> {
    lab: &'a Lab,
    child: Option<Child>,
    starts: u32,
}

impl<'a> Daemon<'a> {
    fn start(lab: &'a Lab) -> Daemon<'a> {
        let mut d = Daemon { lab, child: None, starts: 0 };
        d.spawn();
        d
    }

    fn socket(&self) -> PathBuf {
        self.lab.dir.join("rsiscsid.sock")
    }

    fn state(&self) -> PathBuf {
        self.lab.dir.join("state")
    }

    fn log(&self, n: u32) -> PathBuf {
        self.lab.dir.join(format!("rsiscsid{n}.log"))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log(self.starts)).unwrap();
        let args: Vec<String> = vec![
            "--socket".into(),
            self.socket().display().to_string(),
            "--state-dir".into(),
            self.state().display().to_string(),
            "--log-level".into(),
            "debug".into(),
        ];
        let child = self.lab.in_ns(&common::rsiscsid_bin(), &args).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while !self.cli(&s(&["portal", "list"])).status.success() {
            assert!(t0.elapsed() < Duration::from_secs(10), "rsiscsid did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (every session logs out, its SAs go), and wait for the exit.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        // `ip netns exec` execs rsiscsid: the child is the daemon itself.
        assert!(Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap().success());
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "rsiscsid did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "rsiscsid's exit");
    }

    /// A service command (its Unix socket is reached from any namespace).
    fn cli(&self, args: &[String]) -> Output {
        let mut a = vec!["--socket".to_string(), self.socket().display().to_string()];
        a.extend(args.iter().cloned());
        self.lab.rsiscsi(&a)
    }

    fn ok(&self, args: &[String]) -> String {
        let o = self.cli(args);
        assert!(o.status.success(), "rsiscsi {args:?}: {}", text(&o.stderr));
        assert_hidden(&o, &self.lab.psk(), &format!("rsiscsi {args:?}"));
        text(&o.stdout)
    }

    fn sessions(&self) -> Value {
        serde_json::from_str(&self.ok(&s(&["session", "list", "--json"]))).unwrap()
    }

    /// Waits until the persistent login is logged in; returns its session.
    fn wait_session(&self) -> Value {
        let t0 = Instant::now();
        loop {
            let l = self.sessions();
            if let Some(s) = l["sessions"].as_array().and_then(|a| a.first()) {
                return s.clone();
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "the persistent login did not come back: {l}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The IPsec name of each connection of `session`.
fn ipsec_names(session: &Value) -> Vec<String> {
    session["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ipsec"].as_str().unwrap_or_else(|| panic!("a connection without IPsec: {c}")).to_string())
        .collect()
}

/// `rsiscsi target login --persistent --ipsec tunnel` through rsiscsid:
/// the session's connections are IPsec-protected (the session list names
/// their SAs, never the key); the key is kept in the secrets file (0600),
/// not in the state; an added connection gets an SA of its own; after a
/// restart of rsiscsid the persistent login comes back with its SAs.
/// Neither the CLI's output, the JSON answers nor the daemon's log show
/// the key.
#[test]
fn persistent_ipsec_login_comes_back_after_a_restart() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::load("svc");
    let psk = lab.psk();
    let mut d = Daemon::start(&lab);
    let portal = format!("{}:{}", lab.get("IPSEC_INNER_T"), lab.get("IPSEC_ISCSI_PORT"));
    let mut login = s(&["target", "login", lab.get("IPSEC_TARGET"), "--portal", &portal, "--persistent"]);
    login.extend(lab.tunnel_args(lab.get("IPSEC_PSK_FILE")));
    let out = d.ok(&login);
    assert!(out.starts_with("session "), "{out}");
    let session = d.wait_session();
    let names = ipsec_names(&session);
    assert_eq!(names.len(), 1);
    assert!(lab.sas().contains(&names[0]), "{}", lab.sas());
    let text_list = d.ok(&s(&["session", "list"]));
    assert!(text_list.contains("protected by IPsec"), "{text_list}");
    // A second connection, with its own SA (the key sent again).
    let sid = session["session_id"].as_str().unwrap().to_string();
    let mut add = s(&["session", "add-connection", &sid, "--portal", &portal]);
    add.extend(lab.tunnel_args(lab.get("IPSEC_PSK_FILE")));
    d.ok(&add);
    let names = ipsec_names(&d.sessions()["sessions"][0]);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_ne!(names[0], names[1]);
    // Stored: flags and tunnel peer with the login, the key with the secrets.
    let persistent: Value = serde_json::from_str(&d.ok(&s(&["persistent", "list", "--json"]))).unwrap();
    let p = &persistent["persistent_logins"][0];
    assert_eq!(p["security_flags"], 0x43, "{p}");
    assert_eq!(p["tunnel_outer_address"], lab.get("IPSEC_OUTER_T"), "{p}");
    assert_eq!(p["key_set"], true, "{p}");
    let state = std::fs::read_to_string(d.state().join("state.json")).unwrap();
    assert!(!state.contains(&psk), "the key is in state.json");
    let secrets = d.state().join("secrets.json");
    assert!(std::fs::read_to_string(&secrets).unwrap().contains(&psk), "the key is not in secrets.json");
    assert_eq!(std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o600);
    // Restart: the SAs go with the logout, and come back with the login.
    d.stop();
    lab.assert_no_sa_of_ours();
    d.spawn();
    let session = d.wait_session();
    let names = ipsec_names(&session);
    assert_eq!(names.len(), 2, "both connections come back: {session}");
    let t0 = Instant::now();
    while !names.iter().all(|n| lab.sas().contains(n)) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{names:?} not in charon:\n{}", lab.sas());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lab.sas().contains("ESTABLISHED"), "{}", lab.sas());
    // Data through the restored session (a SCSI READ CAPACITY(10)).
    let sid = session["session_id"].as_str().unwrap().to_string();
    let r =
        d.ok(&s(&["session", "scsi", &sid, lab.get("IPSEC_LUN"), "25 00 00 00 00 00 00 00 00 00", "--data-in", "8"]));
    assert!(r.contains("status: GOOD"), "{r}");
    // Forget it and log out: nothing of ours stays.
    d.ok(&s(&["persistent", "remove", lab.get("IPSEC_TARGET")]));
    d.ok(&s(&["session", "logout", &sid]));
    lab.assert_no_sa_of_ours();
    d.stop();
    for n in 1..=d.starts {
        let log = std::fs::read_to_string(d.log(n)).unwrap();
        assert!(!log.contains(&psk), "rsiscsid's log {n} shows the key");
        assert!(log.contains("IPsec SA up"), "log {n}:\n{log}");
    }
}
