//! Progress on stderr, through the real binary against the lab: `cp` and
//! `bench` show nothing when stderr is not a terminal, plain lines with
//! `--progress` (ending at 100 % for `cp`), nothing with `--no-progress`, and
//! indicatif's bar on a terminal (a pseudo-terminal from util-linux
//! `script`). The report of `bench` stays alone on stdout.
//!
//! Only reads the `ram1` LUNs: other suites write there.

mod common;

use common::{Scratch, var};

use std::path::Path;
use std::process::{Command, Output, Stdio};

const MIB: u64 = 1 << 20;
/// How much each copy reads: enough for a bar, little enough to be quick.
const LEN: u64 = 64 * MIB;

fn scratch(test: &str) -> Scratch {
    common::scratch("progress", test)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tgt_ram1() -> String {
    format!("iscsi://{}/{}/{}", var("RSISCSI_TGT_PORTAL"), var("RSISCSI_TGT_IQN_RAM1"), var("RSISCSI_TGT_LUN"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the binary with stdout and stderr as pipes (not terminals).
fn run(dir: &Path, args: &[&str]) -> Output {
    let out = common::rsiscsi(dir, args, &[]);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    out
}

/// `cp` of the first [`LEN`] bytes of the LUN to a file, with `extra` options.
fn cp_args(dir: &Path, extra: &[&'static str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["cp".into(), tgt_ram1(), s(&dir.join("out")).into(), "--length".into()];
    a.push(LEN.to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs the binary under `script -qfec`, with a pseudo-terminal for its
/// stdin, stdout and stderr, and the environment [`common::command`] gives;
/// returns what the terminal showed (stdout and stderr mixed).
fn on_terminal(dir: &Path, args: &[&str]) -> String {
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let line =
        std::iter::once(env!("CARGO_BIN_EXE_rsiscsi")).chain(args.iter().copied()).map(quote).collect::<Vec<_>>();
    let out = Command::new("script")
        .args(["-qfec", &line.join(" "), "/dev/null"])
        .env("RSISCSI_CONFIG_DIR", dir.join("config"))
        .env_remove("RSISCSI_CHAP_SECRET")
        .env_remove("RSISCSI_TARGET_CHAP_SECRET")
        .env_remove("RSISCSI_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs");
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{args:?} on a terminal: {shown}{}", text(&out.stderr));
    shown
}

#[test]
fn cp_shows_nothing_when_stderr_is_not_a_terminal() {
    let dir = scratch("cp-quiet");
    for extra in [&[][..], &["--no-progress"][..]] {
        let out = run(&dir, &strs(&cp_args(&dir, extra)));
        assert_eq!(text(&out.stderr), "", "{extra:?}");
        assert_eq!(text(&out.stdout), "", "{extra:?}");
        assert_eq!(std::fs::metadata(dir.join("out")).unwrap().len(), LEN);
    }
}

#[test]
fn cp_progress_without_a_terminal_writes_plain_lines_that_end_at_100_percent() {
    let dir = scratch("cp-lines");
    let out = run(&dir, &strs(&cp_args(&dir, &["--progress"])));
    let err = text(&out.stderr);
    assert!(!err.contains('\x1b') && !err.contains('\r'), "terminal codes in a log: {err:?}");
    let lines: Vec<&str> = err.lines().collect();
    let last = lines.last().unwrap_or_else(|| panic!("no progress line: {err:?}"));
    assert!(last.starts_with("copied 64 MiB of 64 MiB (100%) in "), "{err}");
    assert!(last.ends_with("/s"), "{err}");
    // Before it, the flush of the file, which may take seconds.
    let flushing = format!("copied 64 MiB of 64 MiB, flushing {}", s(&dir.join("out")));
    assert_eq!(lines.get(lines.len().wrapping_sub(2)), Some(&flushing.as_str()), "{err}");
    // The lines before say how far, how fast and how long to go.
    for l in &lines[..lines.len() - 2] {
        assert!(l.starts_with("copied ") && l.contains(" of 64 MiB (") && l.contains(", eta "), "{l:?} in {err}");
    }
    assert_eq!(text(&out.stdout), "");
    assert_eq!(std::fs::metadata(dir.join("out")).unwrap().len(), LEN);
}

#[test]
fn cp_on_a_terminal_draws_the_bar_unless_told_not_to() {
    let dir = scratch("cp-bar");
    let shown = on_terminal(&dir, &strs(&cp_args(&dir, &[])));
    // indicatif's bar (its total, its rate), redrawn in place, then cleared
    // for the summary line.
    assert!(shown.contains("/64.00 MiB ("), "{shown:?}");
    assert!(shown.contains("\x1b[2K"), "{shown:?}");
    assert!(shown.contains(&format!("copied {LEN} bytes")), "{shown:?}");
    let shown = on_terminal(&dir, &strs(&cp_args(&dir, &["--no-progress"])));
    assert_eq!(shown, "", "--no-progress on a terminal");
}

#[test]
fn a_signal_leaves_the_bar_and_the_message_on_a_line_of_its_own() {
    use std::io::Read;
    let dir = scratch("cp-signal");
    // The shell under `script` says which PID to signal; the whole LUN to
    // /dev/null lasts long enough to be stopped once the bar is drawn.
    let cp = format!("'{}' cp '{}' /dev/null", env!("CARGO_BIN_EXE_rsiscsi"), tgt_ram1());
    let mut child = Command::new("script")
        .args(["-qfec", &format!("{cp} & echo PID=$!; wait $!; echo EXIT=$?"), "/dev/null"])
        .env("RSISCSI_CONFIG_DIR", dir.join("config"))
        .env_remove("RSISCSI_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs");
    let mut out = child.stdout.take().unwrap();
    let (mut shown, mut buf) = (Vec::new(), [0u8; 4096]);
    while !text(&shown).contains(" MiB/1.00 GiB (") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no bar: {:?}", text(&shown));
        shown.extend_from_slice(&buf[..n]);
    }
    let t = text(&shown);
    let pid = t.split("PID=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    let st = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(st.success());
    out.read_to_end(&mut shown).unwrap();
    assert!(child.wait().unwrap().success());
    let t = text(&shown);
    assert!(t.contains("EXIT=130"), "{t:?}");
    // The bar is not cleared: the message follows it (on the next line, as
    // the bar ends at the terminal's edge), not a clear-line code.
    let (before, _) = t.split_once("rsiscsi: error: interrupted").unwrap_or_else(|| panic!("{t:?}"));
    let last = before.rsplit('\r').next().unwrap_or_default();
    assert!(last.contains(" MiB/1.00 GiB (") && last.ends_with(' '), "{t:?}");
    assert!(!t.contains("copied 1073741824 bytes"), "{t:?}");
}

#[test]
fn both_flags_at_once_are_a_usage_error() {
    let dir = scratch("both");
    let out = common::rsiscsi(&dir, &strs(&cp_args(&dir, &["--progress", "--no-progress"])), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--no-progress"), "{}", text(&out.stderr));
}

fn bench_args(extra: &[&'static str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["bench".into(), tgt_ram1()];
    a.extend(["--time", "1.2", "--warmup", "0.3", "--size", "64M"].map(String::from));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn bench_shows_its_phases_only_when_asked_or_on_a_terminal() {
    let dir = scratch("bench");
    let out = run(&dir, &strs(&bench_args(&[])));
    assert_eq!(text(&out.stderr), "");
    assert!(text(&out.stdout).starts_with("workload:    read "), "{}", text(&out.stdout));

    let out = run(&dir, &strs(&bench_args(&["--progress"])));
    let (err, report) = (text(&out.stderr), text(&out.stdout));
    assert!(!err.contains('\x1b'), "{err:?}");
    // The report is alone on stdout, as without progress.
    assert!(report.starts_with("workload:    read ") && !report.contains("done in"), "{report}");
    let want = [
        format!("login to {}", tgt_ram1()),
        format!("login to {}: done in ", tgt_ram1()),
        "warm-up: 0.30s".to_string(),
        "warm-up: done in ".to_string(),
        "read bs=1048576 iodepth=16: 1.2s".to_string(),
        "read bs=1048576 iodepth=16: done in ".to_string(),
        "logout".to_string(),
        "logout: done in ".to_string(),
    ];
    let lines: Vec<&str> = err.lines().collect();
    let mut at = 0;
    for w in &want {
        let Some(i) = lines[at..].iter().position(|l| l.starts_with(w.as_str())) else {
            panic!("no line starting {w:?} after line {at} in:\n{err}");
        };
        at += i + 1;
    }
    // A line a second while it runs, with the running rate.
    assert!(
        lines.iter().any(|l| l.starts_with("read bs=1048576 iodepth=16: 1.")
            && l.contains(" of 1.2s, ")
            && l.ends_with(" IOPS")),
        "{err}"
    );

    let out = run(&dir, &strs(&bench_args(&["--no-progress"])));
    assert_eq!(text(&out.stderr), "");

    let shown = on_terminal(&dir, &strs(&bench_args(&[])));
    for w in ["login to ", "warm-up ", "read ", " IOPS", "logout", "workload:    read "] {
        assert!(shown.contains(w), "{w:?} not shown on the terminal: {shown:?}");
    }
}
