//! `rsiscsi nbd` through the real binary, with the real NBD clients a user
//! would point at it (libnbd's nbdinfo and nbdcopy, qemu-img, qemu-io), on
//! the lab's tgt and istgt targets "nbd" (512 MiB each, this file's own):
//! sizes and flags as the LUN has them, bytes exact in and out (one and
//! four NBD connections, and many small adjacent requests combined), a qcow2 image that qemu writes and checks through
//! the export, read-only exports, TRIM and WRITE_ZEROES, a client sending
//! garbage, a target that goes away (EIO, no hang), and SIGTERM (flush,
//! logout, socket removed). A missing client tool fails the test.

mod common;

use common::{Scratch, var};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// The tests of this file share the two "nbd" LUNs and copy whole ones:
/// one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn scratch(test: &str) -> Scratch {
    common::scratch("nbd", test)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tgt_nbd() -> String {
    format!("iscsi://{}/{}/{}", var("RSISCSI_TGT_PORTAL"), var("RSISCSI_TGT_IQN_NBD"), var("RSISCSI_TGT_LUN"))
}

fn istgt_nbd() -> String {
    format!("iscsi://{}/{}/{}", var("RSISCSI_ISTGT_PORTAL"), var("RSISCSI_ISTGT_IQN_NBD"), var("RSISCSI_ISTGT_LUN"))
}

fn lun_bytes() -> u64 {
    var("RSISCSI_NBD_BYTES").parse().unwrap()
}

/// An initiator name of this run alone, to find our session on the target.
fn initiator(what: &str) -> String {
    format!("iqn.2026-12.rs.rsiscsi.test:nbd-{}-{what}", std::process::id())
}

/// Runs a client tool; a tool that is not installed fails the test.
fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{name} cannot be run ({e}): install libnbd-bin and qemu-utils (scripts/test.sh does)")
    })
}

fn tool_ok(name: &str, args: &[&str]) -> String {
    let out = tool(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rsiscsi nbd` serving in the background.
struct Served {
    child: Option<Child>,
    socket: PathBuf,
}

impl Served {
    /// Starts `rsiscsi nbd URL --socket DIR/nbd.sock EXTRA...` and waits for
    /// the socket.
    fn start(dir: &Path, url: &str, name: &str, extra: &[&str]) -> Served {
        let socket = dir.join("nbd.sock");
        let mut args = vec!["nbd", url, "--socket", s(&socket), "--initiator-name", name];
        args.extend_from_slice(extra);
        let mut child = common::command(dir, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        while !socket.exists() {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!("rsiscsi nbd ended ({st}) before serving: {err}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no socket within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served { child: Some(child), socket }
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    /// `json:` options for qemu: the export, seen as raw or `fmt`, cut to
    /// `size` bytes when given.
    fn qemu(&self, fmt: &str, size: Option<u64>) -> String {
        let file = format!(r#"{{"driver":"nbd","server":{{"type":"unix","path":"{}"}}}}"#, self.socket.display());
        match size {
            Some(n) => format!(r#"json:{{"driver":"{fmt}","size":{n},"file":{file}}}"#),
            None => format!(r#"json:{{"driver":"{fmt}","file":{file}}}"#),
        }
    }

    /// Sends `signal` and waits (at most 30 s) for the end: exit code and stderr.
    fn stop(mut self, signal: &str) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(st.success());
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("rsiscsi nbd did not end within 30 s of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `len` bytes that differ with `seed` (xorshift), written to `path`.
fn random_file(path: &Path, len: u64, seed: u64) {
    let mut x = seed | 1;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..len / MIB {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

/// The first `len` bytes of both files are the same.
fn assert_same(a: &Path, b: &Path, len: u64) {
    let out = tool("cmp", &["-n", &len.to_string(), s(a), s(b)]);
    assert!(
        out.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// tgt's I_T nexus list still names `name` while a session of ours is open.
fn assert_no_session_left(name: &str) {
    let port = var("RSISCSI_TGT_CONTROL_PORT");
    let show = || {
        let o = Command::new("tgtadm")
            .args(["-C", &port, "--lld", "iscsi", "--op", "show", "--mode", "target"])
            .output()
            .expect("tgtadm (the lab's tgt) must be there");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let start = Instant::now();
    while show().contains(name) {
        assert!(start.elapsed() < Duration::from_secs(5), "tgt still has a session of {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn nbdinfo_shows_the_luns_size_block_sizes_and_flags() {
    let _one = serial();
    let dir = scratch("nbdinfo");
    let served = Served::start(&dir, &tgt_nbd(), &initiator("info"), &[]);
    let info = json(&tool_ok("nbdinfo", &["--json", &served.uri()]));
    let e = &info["exports"][0];
    let name = format!("{}/{}", var("RSISCSI_TGT_IQN_NBD"), var("RSISCSI_TGT_LUN"));
    assert_eq!(e["export-size"].as_u64(), Some(lun_bytes()), "{e}");
    assert_eq!(e["block_size_minimum"].as_u64(), Some(512), "{e}");
    assert_eq!(e["block_size_preferred"].as_u64(), Some(4096), "{e}");
    assert!(e["block_size_maximum"].as_u64().unwrap() >= MIB, "{e}");
    for (flag, want) in [
        ("is_read_only", false),
        ("can_flush", true),
        ("can_fua", true),
        ("can_multi_conn", true),
        ("can_zero", true),
        // tgt's "nbd" LUN is thin provisioned: UNMAP.
        ("can_trim", true),
    ] {
        assert_eq!(e[flag].as_bool(), Some(want), "{flag}: {e}");
    }
    assert_eq!(e["export-name"].as_str(), Some(name.as_str()), "{e}");
    let list = tool_ok("nbdinfo", &["--list", "--json", &served.uri()]);
    assert!(list.contains(&name), "{list}");
    let (code, err) = served.stop("TERM");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn nbdcopy_in_and_out_is_byte_exact_with_one_and_four_connections() {
    let _one = serial();
    let dir = scratch("nbdcopy");
    let name = initiator("copy");
    let served = Served::start(&dir, &tgt_nbd(), &name, &["--connections", "2"]);
    let len = 256 * MIB;
    for (seed, conns) in [(11, "1"), (12, "4")] {
        let src = dir.join(format!("src-{seed}.raw"));
        let back = dir.join(format!("back-{seed}.raw"));
        random_file(&src, len, seed);
        tool_ok("nbdcopy", &["--connections", conns, s(&src), &served.uri()]);
        tool_ok("nbdcopy", &["--connections", conns, &served.uri(), s(&back)]);
        assert_eq!(std::fs::metadata(&back).unwrap().len(), lun_bytes());
        assert_same(&src, &back, len);
        let _ = std::fs::remove_file(&back);
    }
    // Many small adjacent requests at once: written in 16 KiB pieces, read back so, where the export
    // takes the reads waiting for a turn into one READ (up to 1 MiB) and cuts each its own slice of
    // it; every byte must still land in its place.
    let src = dir.join("src-small.raw");
    let back = dir.join("back-small.raw");
    random_file(&src, len, 13);
    let small = ["--connections", "4", "--requests", "64", "--request-size", "16384"];
    tool_ok("nbdcopy", &[&small[..], &[s(&src), &served.uri()]].concat());
    tool_ok("nbdcopy", &[&small[..], &[&served.uri(), s(&back)]].concat());
    assert_same(&src, &back, len);
    let (code, err) = served.stop("TERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(!served_socket_left(&dir), "the socket is left behind");
    assert_no_session_left(&name);
}

fn served_socket_left(dir: &Path) -> bool {
    dir.join("nbd.sock").exists()
}

#[test]
fn qemu_converts_compares_and_writes_a_qcow2_image_through_the_export() {
    let _one = serial();
    let dir = scratch("qemu");
    let served = Served::start(&dir, &tgt_nbd(), &initiator("qemu"), &[]);
    let len = 64 * MIB;
    let src = dir.join("src.raw");
    random_file(&src, len, 21);
    tool_ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", s(&src), &served.uri()]);
    tool_ok("qemu-img", &["compare", "-f", "raw", s(&src), &served.qemu("raw", Some(len))]);
    // A qcow2 image made here, put on the LUN, then written and checked by
    // qemu through the export.
    let q = dir.join("disk.qcow2");
    tool_ok("qemu-img", &["create", "-q", "-f", "qcow2", s(&q), "128M"]);
    tool_ok("qemu-io", &["-f", "qcow2", "-c", "write -P 0x5a 0 8M", s(&q)]);
    let qlen = std::fs::metadata(&q).unwrap().len();
    tool_ok("nbdcopy", &[s(&q), &served.uri()]);
    // qcow2 over the first 256 MiB of the LUN: room for the image to grow
    // to its 128 MiB and its tables.
    assert!(qlen < 16 * MIB);
    let size = served.qemu("raw", Some(256 * MIB));
    let on_lun = format!(r#"json:{{"driver":"qcow2","file":{}}}"#, size.strip_prefix("json:").unwrap());
    tool_ok("qemu-img", &["check", &on_lun]);
    tool_ok("qemu-io", &["-c", "write -P 0x6b 16M 32M", "-c", "write -z 100M 4M", &on_lun]);
    tool_ok("qemu-img", &["check", &on_lun]);
    let out = tool_ok(
        "qemu-io",
        &["-c", "read -P 0x5a 0 8M", "-c", "read -P 0x6b 16M 32M", "-c", "read -P 0 100M 4M", &on_lun],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let (code, err) = served.stop("INT");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn zeroes_and_trims_reach_the_lun() {
    let _one = serial();
    let dir = scratch("zero");
    let served = Served::start(&dir, &tgt_nbd(), &initiator("zero"), &[]);
    let raw = served.qemu("raw", Some(64 * MIB));
    let out = tool_ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x11 0 8M",
            // WRITE_ZEROES with and without may-trim (NO_HOLE), and TRIM.
            "-c",
            "write -z 1M 1M",
            "-c",
            "write -z -u 3M 1M",
            "-c",
            "discard 5M 1M",
            "-c",
            "read -P 0x11 0 1M",
            "-c",
            "read -P 0 1M 1M",
            "-c",
            "read -P 0x11 2M 1M",
            "-c",
            "read -P 0 3M 1M",
            "-c",
            "read -P 0x11 4M 1M",
            "-c",
            "read -P 0x11 6M 2M",
            &raw,
        ],
    );
    assert!(!out.contains("Pattern verification failed") && !out.contains("error"), "{out}");
    // A trim is an UNMAP that tgt turns into a hole in its backing file
    // (thin provisioning): the file's allocated blocks go down.
    let img = Path::new(&var("RSISCSI_LAB_DIR")).join("ram/tgt-nbd.img");
    let allocated = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&img).unwrap_or_else(|e| panic!("{}: {e}", img.display())).blocks() * 512
    };
    tool_ok("qemu-io", &["-c", "write -P 0x22 16M 32M", &raw]);
    let before = allocated();
    tool_ok("qemu-io", &["-c", "discard 16M 32M", &raw]);
    let after = allocated();
    assert!(after + 31 * MIB <= before, "allocated {before} bytes before the trim, {after} after");
    let (code, err) = served.stop("TERM");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_read_only_export_refuses_writes_and_keeps_the_data() {
    let _one = serial();
    let dir = scratch("ro");
    let rw = Served::start(&dir, &tgt_nbd(), &initiator("ro1"), &[]);
    tool_ok("qemu-io", &["-c", "write -P 0x77 200M 1M", &rw.qemu("raw", None)]);
    assert_eq!(rw.stop("TERM").0, Some(0));
    let ro = Served::start(&dir, &tgt_nbd(), &initiator("ro2"), &["--read-only"]);
    let info = json(&tool_ok("nbdinfo", &["--json", &ro.uri()]));
    assert_eq!(info["exports"][0]["is_read_only"].as_bool(), Some(true), "{info}");
    let src = dir.join("src.raw");
    random_file(&src, MIB, 31);
    let out = tool("nbdcopy", &[s(&src), &ro.uri()]);
    assert!(!out.status.success(), "nbdcopy wrote to a read-only export");
    let out = tool("qemu-io", &["-f", "raw", "-c", "write -P 0x01 200M 1M", &ro.uri()]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("ermission") || said.contains("ot permitted") || said.contains("read-only"), "{said}");
    let out = tool_ok("qemu-io", &["-f", "raw", "-r", "-c", "read -P 0x77 200M 1M", &ro.uri()]);
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert_eq!(ro.stop("TERM").0, Some(0));
}

#[test]
fn a_client_sending_garbage_does_not_stop_the_export() {
    let _one = serial();
    let dir = scratch("garbage");
    let served = Served::start(&dir, &tgt_nbd(), &initiator("garbage"), &[]);
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0xffu8; 4096][..], b""] {
        let mut c = std::os::unix::net::UnixStream::connect(&served.socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(junk);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut rest);
    }
    // Another client is served as before.
    let info = json(&tool_ok("nbdinfo", &["--json", &served.uri()]));
    assert_eq!(info["exports"][0]["export-size"].as_u64(), Some(lun_bytes()));
    tool_ok("qemu-io", &["-f", "raw", "-c", "write -P 0x42 300M 1M", "-c", "read -P 0x42 300M 1M", &served.uri()]);
    assert_eq!(served.stop("TERM").0, Some(0));
}

#[test]
fn istgt_nbdcopy_in_and_out_is_byte_exact() {
    let _one = serial();
    let dir = scratch("istgt");
    let served = Served::start(&dir, &istgt_nbd(), &initiator("istgt"), &[]);
    let info = json(&tool_ok("nbdinfo", &["--json", &served.uri()]));
    let e = &info["exports"][0];
    assert_eq!(e["export-size"].as_u64(), Some(lun_bytes()), "{e}");
    // istgt has no Logical Block Provisioning page: no trim offered.
    assert_eq!(e["can_trim"].as_bool(), Some(false), "{e}");
    let len = 64 * MIB;
    let src = dir.join("src.raw");
    let back = dir.join("back.raw");
    random_file(&src, len, 41);
    tool_ok("nbdcopy", &["--connections", "4", s(&src), &served.uri()]);
    tool_ok("nbdcopy", &["--connections", "4", &served.uri(), s(&back)]);
    assert_same(&src, &back, len);
    // WRITE_ZEROES where WRITE SAME may be missing: zeroes written as data.
    let raw = served.qemu("raw", Some(len));
    let out = tool_ok("qemu-io", &["-c", "write -z 1M 2M", "-c", "read -P 0 1M 2M", &raw]);
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert_eq!(served.stop("TERM").0, Some(0));
}

#[test]
fn nbd_refuses_bad_arguments_before_logging_in() {
    let dir = scratch("args");
    let url = tgt_nbd();
    let out = common::rsiscsi(&dir, &["nbd", &url], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let sock = dir.join("s");
    let out = common::rsiscsi(&dir, &["nbd", &url, "--socket", s(&sock), "--listen", "10809"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // A file where the socket would go is never replaced.
    let file = dir.join("keep.txt");
    std::fs::write(&file, "mine").unwrap();
    let out = common::rsiscsi(&dir, &["nbd", &url, "--socket", s(&file)], &[]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keep.txt") && err.lines().count() == 1, "{err}");
    // A URL without a LUN.
    let out = common::rsiscsi(&dir, &["nbd", "iscsi://127.0.0.1/iqn.2024-01.x:y", "--socket", s(&sock)], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not name a LUN"));
}

#[test]
fn a_target_that_goes_away_fails_requests_with_eio_and_never_hangs() {
    use iscsi_target_sim::{SimConfig, SimTarget};
    let dir = scratch("gone");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sim = rt.block_on(SimTarget::start(SimConfig::default())).unwrap();
    let url = format!("iscsi://127.0.0.1:{}/{}/0", sim.addr().port(), sim.target_name());
    let served = Served::start(&dir, &url, &initiator("gone"), &["--hold-time", "2"]);
    tool_ok("qemu-io", &["-f", "raw", "-c", "write -P 0x33 0 1M", "-c", "read -P 0x33 0 1M", &served.uri()]);
    assert_eq!(sim.lun_bytes(0, 4), vec![0x33; 4]);
    // The target goes away: its port refuses, its connections are cut.
    drop(sim);
    let t0 = Instant::now();
    let out = tool("qemu-io", &["-f", "raw", "-c", "read 1M 1M", &served.uri()]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("Input/output error"), "{said}");
    assert!(t0.elapsed() < Duration::from_secs(20), "the read took {:?}", t0.elapsed());
    // The export still answers NBD clients.
    let info = json(&tool_ok("nbdinfo", &["--json", &served.uri()]));
    assert_eq!(info["exports"][0]["export-size"].as_u64(), Some(16 * MIB));
    // SIGTERM ends it promptly, saying that the LUN could not be flushed.
    let t0 = Instant::now();
    let (code, err) = served.stop("TERM");
    assert!(t0.elapsed() < Duration::from_secs(15), "stopping took {:?}", t0.elapsed());
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("SYNCHRONIZE CACHE"), "{err}");
    drop(rt);
}

#[test]
fn serves_nbd_over_tcp_on_loopback_with_listen() {
    use std::io::BufRead;
    let _one = serial();
    let dir = scratch("tcp");
    let name = initiator("tcp");
    let mut child = common::command(&dir, &["nbd", &tgt_nbd(), "--listen", "127.0.0.1:0", "--initiator-name", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The ready line names the port the system picked.
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a ready line").unwrap();
    let uri = first.split(" at ").nth(1).and_then(|r| r.split(' ').next()).unwrap().to_string();
    assert!(uri.starts_with("nbd://127.0.0.1:"), "{first}");
    let info = json(&tool_ok("nbdinfo", &["--json", &uri]));
    assert_eq!(info["exports"][0]["export-size"].as_u64(), Some(lun_bytes()));
    tool_ok("qemu-io", &["-f", "raw", "-c", "write -P 0x44 320M 1M", "-c", "read -P 0x44 320M 1M", &uri]);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert_no_session_left(&name);
}
