//! SIGINT and SIGTERM during `rsiscsi cp`, through the real binary against
//! the lab: the copy stops, the session logs out (tgt keeps no I_T nexus of
//! ours), a destination file that `cp` created is removed (one that existed
//! is kept), the exit status is 128 + the signal's number, and a LUN being
//! written is reported written up to a byte below which every byte is the
//! source's, with the command that resumes the copy.
//!
//! Writes stay in [870 MiB, 1010 MiB) of the `ram1` LUNs: `tests/cli.rs`
//! writes from 700 MiB to below 870 MiB, other suites below 600 MiB, and
//! `tests/bad_input.rs` reads the last MiB, `tests/cli.rs` writes at 1012 MiB.

mod common;

use common::{Scratch, var};

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Where this suite writes on the `ram1` LUNs, and how much.
const REGION: u64 = 870 * MIB;
const REGION_LEN: u64 = 140 * MIB;

fn scratch(test: &str) -> Scratch {
    common::scratch("interrupt", test)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tgt_ram1() -> String {
    format!("iscsi://{}/{}/{}", var("RSISCSI_TGT_PORTAL"), var("RSISCSI_TGT_IQN_RAM1"), var("RSISCSI_TGT_LUN"))
}

fn istgt_ram1() -> String {
    format!("iscsi://{}/{}/{}", var("RSISCSI_ISTGT_PORTAL"), var("RSISCSI_ISTGT_IQN_RAM1"), var("RSISCSI_ISTGT_LUN"))
}

/// An initiator name of this run alone, to find our session on the target.
fn initiator(what: &str) -> String {
    format!("iqn.2026-12.rs.rsiscsi.test:interrupt-{}-{what}", std::process::id())
}

/// Starts the binary as `common::rsiscsi` would run it, without waiting.
fn spawn(dir: &Path, args: &[&str]) -> Child {
    common::command(dir, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn ok(dir: &Path, args: &[&str]) {
    let out = common::rsiscsi(dir, args, &[]);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends `signal` (`INT` or `TERM`) to the child.
fn kill(child: &Child, signal: &str) {
    let st = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(st.success(), "kill -{signal} failed");
}

/// Waits until `ready` holds, or panics with the child's output if it ended
/// first or 60 s went by.
fn wait_until(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("rsiscsi ended ({st}) before {what}: {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no {what} within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The process's exit status and the last line of its stderr.
fn finish(child: Child) -> (Option<i32>, String) {
    let out: Output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "stderr is not one line: {err}");
    (out.status.code(), err.trim_end().to_string())
}

/// tgt's I_T nexus list names our initiator while a session of ours is
/// open: it must be gone soon after the command ends. Skipped where
/// tgtadm cannot be run.
fn assert_no_session_left(name: &str) {
    let port = var("RSISCSI_TGT_CONTROL_PORT");
    let show = || {
        Command::new("tgtadm")
            .args(["-C", &port, "--lld", "iscsi", "--op", "show", "--mode", "target"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    let Some(mut text) = show() else {
        eprintln!("tgtadm is not available here: the session check is skipped");
        return;
    };
    let start = Instant::now();
    while text.contains(name) {
        assert!(start.elapsed() < Duration::from_secs(5), "tgt still has a session of {name}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
        text = show().unwrap_or_default();
    }
}

fn len_of(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A copy from the LUN to a new file, interrupted once the file has grown:
/// the file is gone, the exit status is 130 (SIGINT) or 143 (SIGTERM), and
/// tgt has no session of ours left.
#[test]
fn an_interrupted_copy_to_a_new_file_removes_it_and_logs_out() {
    let dir = scratch("new-file");
    for (signal, status) in [("INT", 130), ("TERM", 143)] {
        let name = initiator(&format!("file-{signal}"));
        let partial = dir.join(format!("partial-{signal}.img"));
        let len = (400 * MIB).to_string();
        let mut child = spawn(&dir, &["--initiator-name", &name, "cp", "--length", &len, &tgt_ram1(), s(&partial)]);
        wait_until(&mut child, "the file grew", || len_of(&partial) >= 4 * MIB);
        kill(&child, signal);
        let (code, line) = finish(child);
        assert_eq!(code, Some(status), "SIG{signal}: {line}");
        assert_eq!(line, format!("rsiscsi: error: interrupted: the partial copy {} was removed", s(&partial)));
        assert!(!partial.exists(), "SIG{signal} left {}", partial.display());
        assert_no_session_left(&name);
    }
}

/// A destination file that existed before the copy is not removed: it is
/// reported written up to a byte.
#[test]
fn an_interrupted_copy_to_an_existing_file_keeps_it() {
    let dir = scratch("old-file");
    let name = initiator("old-file");
    let old = dir.join("old.img");
    std::fs::write(&old, b"kept").unwrap();
    let len = (400 * MIB).to_string();
    let mut child = spawn(&dir, &["--initiator-name", &name, "cp", "--length", &len, &tgt_ram1(), s(&old)]);
    wait_until(&mut child, "the file grew", || len_of(&old) >= 4 * MIB);
    kill(&child, "INT");
    let (code, line) = finish(child);
    assert_eq!(code, Some(130), "{line}");
    let prefix = format!("rsiscsi: error: interrupted: {} was written up to byte ", s(&old));
    let byte: u64 = line.strip_prefix(&prefix).and_then(|b| b.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    assert!(byte.is_multiple_of(MIB) && byte < 400 * MIB, "{line}");
    assert!(old.exists());
    assert_no_session_left(&name);
}

/// A copy from istgt's LUN to tgt's, interrupted once tgt has its first
/// bytes: the message names a byte below which tgt's LUN holds the
/// source's bytes, and the command it suggests finishes the copy.
#[test]
fn an_interrupted_copy_to_a_lun_says_how_far_it_was_written() {
    let dir = scratch("lun");
    let name = initiator("lun");
    let data: Vec<u8> = {
        // Different on every run, so that an earlier run's bytes cannot pass.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let mut x = seed | 1;
        (0..REGION_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let src = dir.join("src.img");
    std::fs::write(&src, &data).unwrap();
    let (offset, len) = (REGION.to_string(), REGION_LEN.to_string());
    ok(&dir, &["cp", "--offset", &offset, s(&src), &istgt_ram1()]);

    // 512-byte Data-In PDUs from istgt make the copy last long enough
    // (about a second) to be interrupted in the middle.
    let mut child = spawn(
        &dir,
        &[
            "--initiator-name",
            &name,
            "cp",
            "--max-recv-data-segment-length",
            "512",
            "--offset",
            &offset,
            "--length",
            &len,
            &istgt_ram1(),
            &tgt_ram1(),
        ],
    );
    let probe = dir.join("probe.img");
    let head = &data[..64 * 1024];
    wait_until(&mut child, "tgt had the first bytes", || {
        let out = common::rsiscsi(&dir, &["cp", "--offset", &offset, "--length", "65536", &tgt_ram1(), s(&probe)], &[]);
        out.status.success() && std::fs::read(&probe).is_ok_and(|b| b == head)
    });
    kill(&child, "INT");
    let (code, line) = finish(child);
    println!("{line}");
    assert_eq!(code, Some(130), "{line}");
    let prefix = "rsiscsi: error: interrupted: the LUN was written up to byte ";
    let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line}"));
    let (byte, hint) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
    let byte: u64 = byte.parse().unwrap_or_else(|_| panic!("{line}"));
    assert!((REGION..REGION + REGION_LEN).contains(&byte), "{line}");
    let written = byte - REGION;
    assert!(written.is_multiple_of(MIB), "{line}");
    let remaining = REGION_LEN - written;
    assert_eq!(hint, format!("(resume with --offset {byte} --length {remaining})"), "{line}");
    assert_no_session_left(&name);

    // Every byte below the one named is the source's.
    if written > 0 {
        let back = dir.join("back.img");
        ok(&dir, &["cp", "--offset", &offset, "--length", &written.to_string(), &tgt_ram1(), s(&back)]);
        assert!(std::fs::read(&back).unwrap() == data[..written as usize], "bytes below {byte} differ");
    }
    // The suggested command finishes the copy.
    let (at, rest) = (byte.to_string(), remaining.to_string());
    ok(&dir, &["cp", "--offset", &at, "--length", &rest, &istgt_ram1(), &tgt_ram1()]);
    let all = dir.join("all.img");
    ok(&dir, &["cp", "--offset", &offset, "--length", &len, &tgt_ram1(), s(&all)]);
    assert!(std::fs::read(&all).unwrap() == data, "the resumed copy differs from the source");
}
