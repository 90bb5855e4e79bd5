//! A real `rsiscsid` for the CLI's service tests: its own socket, state
//! directory and system-wide config (never the host's), killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One daemon on its own socket and state directory, killed on drop (its
/// directory kept when the test failed, for the logs).
pub struct Daemon {
    pub dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Where its Prometheus metrics listen, when asked for.
    metrics: Option<SocketAddr>,
}

impl Daemon {
    /// A fresh `rsiscsi-SUITE-NAME-PID` directory under the temporary directory.
    pub fn start(suite: &str, name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("rsiscsi-{suite}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Daemon::start_in(dir)
    }

    /// [`Daemon::start`] with its metrics on a free loopback port
    /// (`--metrics`), read with [`Daemon::metrics`].
    pub fn start_with_metrics(suite: &str, name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("rsiscsi-{suite}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut d = Daemon { dir, child: None, starts: 0, metrics: Some(metrics) };
        d.spawn();
        d
    }

    /// A daemon on `dir` as it is: state in `dir/state`, the host's
    /// system-wide config in `dir/etc` (never the real /etc/rsiscsi).
    pub fn start_in(dir: PathBuf) -> Daemon {
        let mut d = Daemon { dir, child: None, starts: 0, metrics: None };
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("rsiscsid.sock")
    }

    /// Starts the daemon (its log in `dir/rsiscsidN.log`) and waits until
    /// `portal list` gets an answer.
    pub fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("rsiscsid{}.log", self.starts))).unwrap();
        let mut cmd = Command::new(super::rsiscsid_bin());
        cmd.env("RSISCSI_SYSTEM_CONFIG_DIR", self.dir.join("etc"))
            // RSISCSI_TEST_LOG: a finer level to look into a failure.
            .env("RUST_LOG", std::env::var("RSISCSI_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.join("state"));
        if let Some(m) = self.metrics {
            cmd.arg("--metrics").arg(m.to_string());
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while !self.rsiscsi(&["portal", "list"]).status.success() {
            assert!(t0.elapsed() < Duration::from_secs(10), "rsiscsid did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (the service logs every session out), and wait (20 s at
    /// most) for exit status 0.
    pub fn stop(&mut self) {
        let mut c = self.child.take().unwrap();
        assert!(Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap().success());
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "rsiscsid did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0));
    }

    /// [`Daemon::stop`], then start again on the same state.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `rsiscsi --socket SOCKET ARGS...`.
    pub fn rsiscsi(&self, args: &[&str]) -> Output {
        cli(Some(&self.socket()), args, &[])
    }

    /// Runs it and expects success and a quiet stderr; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.rsiscsi(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "rsiscsi {args:?} failed ({:?}): {err}", o.status.code());
        assert!(o.stderr.is_empty(), "stderr of {args:?}: {err}");
        String::from_utf8(o.stdout).unwrap()
    }

    /// [`Daemon::ok`] with `--json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// The connections of session `sid` (the first session: `None`), from
    /// `session list --json`.
    pub fn connections(&self, sid: Option<&str>) -> Vec<Value> {
        let l = self.json(&["session", "list"]);
        let sessions = l["sessions"].as_array().cloned().unwrap_or_default();
        let s = match sid {
            Some(id) => sessions.into_iter().find(|s| s["session_id"] == id),
            None => sessions.into_iter().next(),
        };
        s.and_then(|s| s["connections"].as_array().cloned()).unwrap_or_default()
    }

    /// `GET /metrics` of a daemon started with [`Daemon::start_with_metrics`].
    pub fn metrics(&self) -> String {
        let addr = self.metrics.expect("a daemon started with start_with_metrics");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.") && body.contains(" 200 "), "metrics answer: {body}");
        body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `rsiscsi [--socket S] ARGS` with `env` added: never the real
/// /etc/rsiscsi, service state or ~/.config (a test that looks at them
/// gives its own through `env`), no socket or secret from the caller.
pub fn cli(socket: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsiscsi"));
    if let Some(s) = socket {
        cmd.arg("--socket").arg(s);
    }
    cmd.args(args).env_remove("RSISCSI_SOCKET").env_remove("RSISCSI_CHAP_SECRET");
    let home = std::env::temp_dir().join(format!("rsiscsi-cli-home-{}", std::process::id()));
    cmd.env("RSISCSI_SYSTEM_CONFIG_DIR", home.join("etc"))
        .env("RSISCSI_STATE_DIR", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("RSISCSI_CONFIG_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}
