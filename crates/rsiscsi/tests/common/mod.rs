//! Shared by the CLI's integration tests: the settings of the loopback lab
//! that `scripts/lab-up.sh` writes (tests fail, never skip, without it), a
//! scratch directory per test and the binary run with a clean environment.
// Each test crate uses part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod daemon;

/// The `export NAME='value'` settings a lab script wrote to the file named
/// by `var` (else `default`); without it the test fails, saying to run
/// `script` (never skips).
pub fn env_file(var: &str, default: &str, script: &str) -> HashMap<String, String> {
    let path = std::env::var(var).unwrap_or_else(|_| default.into());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the lab is not running ({path}: {e}): run scripts/test.sh, or {script} first"));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// The lab's `export NAME='value'` settings.
pub fn lab() -> &'static HashMap<String, String> {
    static LAB: OnceLock<HashMap<String, String>> = OnceLock::new();
    LAB.get_or_init(|| env_file("RSISCSI_LAB_ENV", "/tmp/rsiscsi-lab/lab.env", "scripts/lab-up.sh"))
}

/// The iSNS lab's settings (`scripts/isns-lab.sh up`).
pub fn isns_lab() -> HashMap<String, String> {
    env_file("RSISCSI_ISNS_ENV", "/tmp/rsiscsi-isns/isns.env", "scripts/isns-lab.sh up")
}

/// The links lab's settings (`bench/links.sh up`: N rate-limited veth links
/// from the root namespace to tgt and istgt; `RSISCSI_LINK_<K>_...` per link).
pub fn links_lab() -> HashMap<String, String> {
    env_file("RSISCSI_LINKS_ENV", "/tmp/rsiscsi-links/links.env", "bench/links.sh up")
}

/// `target/debug/rsiscsid` next to this test's own `target/debug/deps/`:
/// another package's binary, which Cargo does not build for these tests.
pub fn rsiscsid_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RSISCSID_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("rsiscsid");
    assert!(
        bin.is_file(),
        "rsiscsid is not built at {}: run `cargo build -p rsiscsid` first (or set RSISCSID_BIN)",
        bin.display()
    );
    bin
}

/// One lab setting, e.g. `var("RSISCSI_TGT_IQN_SVC")`.
pub fn var(name: &str) -> String {
    lab().get(name).unwrap_or_else(|| panic!("{name} missing from the lab settings")).clone()
}

/// A scratch directory of its own for each test; removed when the test
/// passes, kept for a look when it fails.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // A test may have left a directory unwritable on purpose.
            let ro = self.0.join("readonly");
            if ro.exists() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(ro, std::fs::Permissions::from_mode(0o700));
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh `rsiscsi-SUITE-PID-TEST` directory under the temporary directory.
pub fn scratch(suite: &str, test: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("rsiscsi-{suite}-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// The `rsiscsi` binary with `args`, its config in `dir/config`, no secret
/// or log setting from the caller's environment, and no stdin.
#[allow(dead_code)] // not every test binary that includes this module spawns
pub fn command<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rsiscsi"));
    c.args(args)
        .env("RSISCSI_CONFIG_DIR", dir.join("config"))
        .env_remove("RSISCSI_CHAP_SECRET")
        .env_remove("RSISCSI_TARGET_CHAP_SECRET")
        .env_remove("RSISCSI_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::null());
    // RSISCSI_TEST_LOG=debug hands a log filter to the CLI, to see why a
    // run failed (tests that check stderr line by line then fail too).
    if let Some(f) = std::env::var_os("RSISCSI_TEST_LOG") {
        c.env("RSISCSI_LOG", f);
    }
    c
}

/// Runs [`command`] (with `env` added) to its end.
#[allow(dead_code)]
pub fn rsiscsi(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command(dir, args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}
