//! The `rsiscsi` binary against the loopback lab (tgt on :3260, istgt on
//! :3261, istgt with discovery CHAP on :3262), as scripts use it: exact
//! output formats, byte-exact copies, and one-line errors that name the cause
//! and never show a secret.
//!
//! Lab settings come from the file named by `RSISCSI_LAB_ENV` (default
//! `/tmp/rsiscsi-lab/lab.env`); the tests fail, never skip, without it.
//! Writes stay at byte offsets >= 700 MiB on the `ram1` LUNs (other suites
//! write below 600 MiB) or on the `chap` and `mutual` LUNs; each test has its
//! own region because tests run in parallel.

mod common;

use common::{Scratch, var};

use std::path::Path;
use std::process::Output;

use rand::RngCore;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// One target daemon of the lab, by its prefix in lab.env.
#[derive(Clone, Copy)]
struct Daemon {
    name: &'static str,
    prefix: &'static str,
}

const TGT: Daemon = Daemon { name: "tgt", prefix: "RSISCSI_TGT" };
const ISTGT: Daemon = Daemon { name: "istgt", prefix: "RSISCSI_ISTGT" };
const BOTH: [Daemon; 2] = [TGT, ISTGT];

impl Daemon {
    fn port(&self) -> String {
        var(&format!("{}_PORT", self.prefix))
    }
    fn portal(&self) -> String {
        var(&format!("{}_PORTAL", self.prefix))
    }
    fn lun(&self) -> String {
        var(&format!("{}_LUN", self.prefix))
    }
    fn iqn(&self, t: &str) -> String {
        var(&format!("{}_IQN_{}", self.prefix, t.to_ascii_uppercase()))
    }
    /// `iscsi://127.0.0.1:PORT/IQN/LUN` of one of the lab's targets.
    fn url(&self, t: &str) -> String {
        format!("iscsi://{}/{}/{}", self.portal(), self.iqn(t), self.lun())
    }
}

/// Every secret the tests use, right or wrong: none may ever be printed.
fn secrets() -> Vec<String> {
    let mut s: Vec<String> = ["RSISCSI_CHAP_SECRET", "RSISCSI_MUTUAL_SECRET", "RSISCSI_MUTUAL_TARGET_SECRET"]
        .iter()
        .map(|n| var(n))
        .collect();
    s.push(var("RSISCSI_DISCOVERY_SECRET"));
    s.extend([WRONG_SECRET.to_string()]);
    s
}

const WRONG_SECRET: &str = "wrongsecret99";

fn scratch(test: &str) -> Scratch {
    common::scratch("cli-test", test)
}

/// Runs the binary with a clean environment for secrets and the config in
/// `dir`; no secret may show in what it prints.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = common::rsiscsi(dir, args, env);
    no_secret_in(&out, args);
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// No secret in stdout or stderr, except one the command line itself carries
/// in a libiscsi URL, which must still not be echoed.
fn no_secret_in(out: &Output, args: &[&str]) {
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    for s in secrets() {
        assert!(!o.contains(&s) && !e.contains(&s), "a secret was printed by {args:?}:\n{o}\n{e}");
    }
    assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "{args:?} panicked:\n{e}");
}

/// Runs a command that must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(dir, args, env);
    assert!(out.status.success(), "{args:?} failed ({}):\n{}", out.status, text(&out.stderr));
    text(&out.stdout)
}

/// Runs a command that must fail with exactly one `rsiscsi: error:` line on
/// stderr containing every one of `needles`; returns that line.
fn fails(dir: &Path, args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> String {
    fails_with(dir, args, env, needles, None)
}

/// [`fails`], and with the exit status `status` (the table of `rsiscsi --help`).
fn fails_with(dir: &Path, args: &[&str], env: &[(&str, &str)], needles: &[&str], status: Option<i32>) -> String {
    let out = run(dir, args, env);
    if let Some(want) = status {
        assert_eq!(out.status.code(), Some(want), "{args:?}: exit status of {:?}", text(&out.stderr));
    }
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded but should have failed:\n{}", text(&out.stdout));
    assert_eq!(err.lines().count(), 1, "{args:?}: stderr is not one line:\n{err}");
    assert!(err.ends_with('\n'), "{args:?}: {err:?}");
    assert!(err.starts_with("rsiscsi: error: "), "{args:?}: {err}");
    let lower = err.to_lowercase();
    for n in needles {
        assert!(lower.contains(&n.to_lowercase()), "{args:?}: {err:?} does not mention {n:?}");
    }
    err
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Checks one `HOST:PORT,TPGT IQN` discovery line; returns (portal, tpgt, iqn).
fn portal_line(line: &str) -> (String, u16, String) {
    let (portal, iqn) = line.split_once(' ').unwrap_or_else(|| panic!("no space in {line:?}"));
    assert!(iqn.starts_with("iqn.") && !iqn.contains(' '), "{line:?}");
    let (addr, tpgt) = portal.rsplit_once(',').unwrap_or_else(|| panic!("no ,TPGT in {line:?}"));
    let tpgt: u16 = tpgt.parse().unwrap_or_else(|_| panic!("bad TPGT in {line:?}"));
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("no :PORT in {line:?}"));
    port.parse::<u16>().unwrap_or_else(|_| panic!("bad port in {line:?}"));
    if host.contains(':') {
        assert!(host.starts_with('[') && host.ends_with(']'), "IPv6 host not bracketed: {line:?}");
    }
    (addr.to_string(), tpgt, iqn.to_string())
}

#[test]
fn discover_prints_one_portal_per_line_on_both_daemons() {
    let dir = scratch("discover");
    for d in BOTH {
        let out = ok(&dir, &["discover", &d.portal()], &[]);
        let lines: Vec<_> = out.lines().map(portal_line).collect();
        for t in ["ram1", "chap", "mutual"] {
            let want = (format!("127.0.0.1:{}", d.port()), 1, d.iqn(t));
            assert!(lines.contains(&want), "{}: {want:?} missing from\n{out}", d.name);
        }
    }
    // The default port is 3260.
    let out = ok(&dir, &["discover", "127.0.0.1"], &[]);
    assert!(out.lines().any(|l| l == format!("127.0.0.1:3260,1 {}", TGT.iqn("ram1"))), "{out}");
}

#[test]
fn discover_over_ipv6() {
    let dir = scratch("discover6");
    for (d, portal) in [(TGT, var("RSISCSI_TGT_PORTAL6")), (ISTGT, var("RSISCSI_ISTGT_PORTAL6"))] {
        let out = ok(&dir, &["discover", &portal], &[]);
        let lines: Vec<_> = out.lines().map(portal_line).collect();
        let want = (format!("[::1]:{}", d.port()), 1, d.iqn("ram1"));
        assert!(lines.contains(&want), "{}: {want:?} missing from\n{out}", d.name);
    }
}

#[test]
fn discover_json_is_an_array_of_portals() {
    let dir = scratch("discoverjson");
    for d in BOTH {
        let out = ok(&dir, &["discover", "--json", &d.portal()], &[]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{out}", d.name));
        let rows = v.as_array().unwrap_or_else(|| panic!("not an array: {out}"));
        assert!(!rows.is_empty());
        for r in rows {
            let o = r.as_object().unwrap();
            let mut keys: Vec<_> = o.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["address", "port", "target", "tpgt"], "{r}");
            assert!(o["address"].is_string() && o["port"].is_u64() && o["tpgt"].is_u64() && o["target"].is_string());
        }
        let port: u64 = d.port().parse().unwrap();
        assert!(
            rows.iter().any(|r| r["address"] == "127.0.0.1"
                && r["port"] == port
                && r["tpgt"] == 1
                && r["target"] == d.iqn("ram1").as_str()),
            "{}: {out}",
            d.name
        );
        // The JSON form lists exactly the portals the text form does.
        let lines = ok(&dir, &["discover", &d.portal()], &[]).lines().count();
        assert_eq!(lines, rows.len(), "{}", d.name);
    }
}

#[test]
fn discover_with_discovery_chap() {
    let dir = scratch("discoverchap");
    let portal = var("RSISCSI_DCHAP_PORTAL");
    let user = var("RSISCSI_DISCOVERY_USER");
    let secret = var("RSISCSI_DISCOVERY_SECRET");
    let out = ok(&dir, &["discover", "--chap-user", &user, &portal], &[("RSISCSI_CHAP_SECRET", &secret)]);
    let lines: Vec<_> = out.lines().map(portal_line).collect();
    let want = (portal.clone(), 1, var("RSISCSI_DCHAP_IQN_RAM1"));
    assert!(lines.contains(&want), "{want:?} missing from\n{out}");
    // The same with -vv: the debug log must not show the secret either (run() checks).
    let out = run(&dir, &["-vv", "discover", "--chap-user", &user, &portal], &[("RSISCSI_CHAP_SECRET", &secret)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    fails(
        &dir,
        &["discover", "--chap-user", &user, &portal],
        &[("RSISCSI_CHAP_SECRET", WRONG_SECRET)],
        &["authentication failed"],
    );
    fails(&dir, &["discover", &portal], &[], &["authentication failed", "CHAP"]);
}

#[test]
fn ls_lists_targets_and_luns_with_size_vendor_and_product() {
    let dir = scratch("ls");
    // istgt: every target of the portal; CHAP targets are shown, not listed.
    let out = ok(&dir, &["ls", &format!("iscsi://{}/", ISTGT.portal())], &[]);
    let mut lines = out.lines();
    let head = format!("Target: {} (", ISTGT.iqn("ram1"));
    assert!(lines.any(|l| l.starts_with(&head) && l.ends_with(')')), "{out}");
    assert_eq!(
        lines.next(),
        Some("  Lun 0: disk, FreeBSD iSCSI DISK 0001, 1073741824 bytes (2097152 blocks of 512)"),
        "{out}"
    );
    assert!(out.contains(&format!("Target: {} (", ISTGT.iqn("chap"))), "{out}");
    assert!(out.contains("not listed: authentication failed"), "{out}");

    // tgt, one target: LUN 0 is the controller, LUN 1 the disk.
    let out = ok(&dir, &["ls", &format!("iscsi://{}/{}/", TGT.portal(), TGT.iqn("ram1"))], &[]);
    assert_eq!(
        out,
        format!(
            "Target: {} (127.0.0.1:3260,1)\n  Lun 0: storage array controller, IET Controller 0001, -\n  \
             Lun 1: disk, IET VIRTUAL-DISK 0001, 1073741824 bytes (2097152 blocks of 512)\n",
            TGT.iqn("ram1")
        )
    );

    // With credentials the CHAP target is listed too.
    let url = format!("iscsi://{}/{}/", TGT.portal(), TGT.iqn("chap"));
    let out = ok(
        &dir,
        &["ls", "--chap-user", &var("RSISCSI_CHAP_USER"), &url],
        &[("RSISCSI_CHAP_SECRET", &var("RSISCSI_CHAP_SECRET"))],
    );
    assert!(out.contains("  Lun 1: disk, IET VIRTUAL-DISK 0001, 268435456 bytes (524288 blocks of 512)"), "{out}");

    // The whole tgt portal: the lab's redirect-loop target cannot be listed,
    // which is reported (named) and makes the exit status non-zero, after the
    // others are printed.
    let all = run(&dir, &["ls", &format!("iscsi://{}/", TGT.portal())], &[]);
    assert!(!all.status.success());
    let (o, e) = (text(&all.stdout), text(&all.stderr));
    assert!(o.contains("Lun 1: disk, IET VIRTUAL-DISK 0001, 1073741824 bytes"), "{o}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("rsiscsi: error: ") && e.contains(&TGT.iqn("loop")), "{e}");
}

#[test]
fn ls_json() {
    let dir = scratch("lsjson");
    let out = ok(&dir, &["ls", "--json", &format!("iscsi://{}/", ISTGT.portal())], &[]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let t = v.as_array().unwrap().iter().find(|t| t["target"] == ISTGT.iqn("ram1").as_str()).unwrap();
    assert!(t["error"].is_null(), "{t}");
    assert!(t["portals"].as_array().unwrap().iter().any(|p| p == "127.0.0.1:3261,1"), "{t}");
    let lun = &t["luns"][0];
    assert_eq!(lun["lun"], 0);
    assert_eq!(lun["device_type"], "disk");
    assert_eq!(lun["vendor"], "FreeBSD");
    assert_eq!(lun["product"], "iSCSI DISK");
    assert_eq!(lun["size_bytes"], 1u64 << 30);
    assert_eq!(lun["block_size"], 512);
    let c = v.as_array().unwrap().iter().find(|t| t["target"] == ISTGT.iqn("chap").as_str()).unwrap();
    assert!(c["error"].as_str().unwrap().contains("authentication failed"), "{c}");
}

#[test]
fn inquiry_on_both_daemons() {
    let dir = scratch("inquiry");
    for (d, vendor, product) in [(TGT, "IET", "VIRTUAL-DISK"), (ISTGT, "FreeBSD", "iSCSI DISK")] {
        let out = ok(&dir, &["inquiry", &d.url("ram1")], &[]);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(
            lines.get(..6).unwrap_or_default(),
            [
                format!("Vendor:      {vendor}").as_str(),
                &format!("Product:     {product}"),
                "Revision:    0001",
                "Device type: disk (0x00)",
                "Removable:   no",
                "Version:     0x05",
            ]
        );
        assert!(lines.iter().any(|l| l.starts_with("Unit serial: ")), "{}: {out}", d.name);
        assert!(lines.iter().any(|l| l.starts_with("Identifier:  NAA: 0x")), "{}: {out}", d.name);

        let j: Value = serde_json::from_str(&ok(&dir, &["inquiry", "--json", &d.url("ram1")], &[])).unwrap();
        assert_eq!(j["lun"], d.lun().parse::<u64>().unwrap());
        assert_eq!(j["device_type"], 0);
        assert_eq!(j["device_type_name"], "disk");
        assert_eq!(j["vendor"], vendor);
        assert_eq!(j["product"], product);
        assert!(j["unit_serial"].is_string() && !j["identifiers"].as_array().unwrap().is_empty(), "{j}");
    }
}

#[test]
fn capacity_on_both_daemons() {
    let dir = scratch("capacity");
    for d in BOTH {
        let out = ok(&dir, &["capacity", &d.url("ram1")], &[]);
        assert_eq!(out, "Blocks:     2097152\nBlock size: 512\nBytes:      1073741824\n", "{}", d.name);
        let j: Value = serde_json::from_str(&ok(&dir, &["capacity", "--json", &d.url("ram1")], &[])).unwrap();
        assert_eq!(j, serde_json::json!({"blocks": 2097152, "block_size": 512, "bytes": 1073741824u64}));
        // IPv6 portal in the URL.
        let url6 = format!("iscsi://[::1]:{}/{}/{}", d.port(), d.iqn("ram1"), d.lun());
        assert_eq!(ok(&dir, &["capacity", &url6], &[]), out, "{}", d.name);
    }
}

/// Writes `data` to `url` at `offset`, reads `data.len() + extra` back and
/// returns what came back.
fn write_then_read(
    dir: &Path,
    url: &str,
    offset: u64,
    data: &[u8],
    extra: u64,
    opts: &[&str],
    env: &[(&str, &str)],
) -> Vec<u8> {
    let src = dir.join("src.bin");
    let back = dir.join("back.bin");
    std::fs::write(&src, data).unwrap();
    let off = offset.to_string();
    let mut args: Vec<&str> = opts.to_vec();
    args.extend(["cp", "--offset", &off, s(&src), url]);
    let out = ok(dir, &args, env);
    assert_eq!(out, "", "cp prints nothing on stdout");
    let len = (data.len() as u64 + extra).to_string();
    let mut args: Vec<&str> = opts.to_vec();
    args.extend(["cp", "--offset", &off, "--length", &len, url, s(&back)]);
    ok(dir, &args, env);
    std::fs::read(&back).unwrap()
}

/// 8 MiB + 1000 bytes at 700 MiB: the last block is partial, so it is
/// read, merged and rewritten; the bytes after the range must not change.
fn round_trip_large(d: Daemon) {
    let dir = scratch(&format!("large-{}", d.name));
    let url = d.url("ram1");
    let offset = 700 * MIB;
    let len = 8 * MIB as usize + 1000;
    // A known pattern first, reaching 4 KiB past the range.
    let pattern: Vec<u8> = (0..len + 4096).map(|i| (i % 251) as u8).collect();
    let back = write_then_read(&dir, &url, offset, &pattern, 0, &[], &[]);
    assert!(back == pattern, "{}: pattern did not read back", d.name);
    let data = random(len);
    let back = write_then_read(&dir, &url, offset, &data, 4096, &[], &[]);
    assert_eq!(back.len(), len + 4096);
    let (head, tail) = back.split_at(len);
    assert!(head == data.as_slice(), "{}: data read back differs", d.name);
    assert!(tail == &pattern[len..], "{}: bytes after the written range changed", d.name);
}

#[test]
fn cp_round_trip_tgt() {
    round_trip_large(TGT);
}

#[test]
fn cp_round_trip_istgt() {
    round_trip_large(ISTGT);
}

#[test]
fn cp_offset_and_length_select_a_range() {
    for d in BOTH {
        let dir = scratch(&format!("range-{}", d.name));
        let url = d.url("ram1");
        let base = 720 * MIB;
        let file = dir.join("file.bin");
        let data = random(MIB as usize);
        std::fs::write(&file, &data).unwrap();
        // Only the first 300000 bytes of the file go to the LUN.
        ok(&dir, &["cp", "--offset", &base.to_string(), "--length", "300000", s(&file), &url], &[]);
        let got = dir.join("got.bin");
        ok(&dir, &["cp", "--offset", &base.to_string(), "--length", "301000", &url, s(&got)], &[]);
        let got_bytes = std::fs::read(&got).unwrap();
        assert_eq!(got_bytes.len(), 301000);
        assert!(got_bytes[..300000] == data[..300000], "{}", d.name);
        // A sub-range starting one block in, of an odd length.
        ok(&dir, &["cp", "--offset", &(base + 512).to_string(), "--length", "1001", &url, s(&got)], &[]);
        assert!(std::fs::read(&got).unwrap() == data[512..1513], "{}", d.name);
        // Overwriting a longer existing file leaves exactly the copied bytes.
        ok(&dir, &["cp", "--offset", &base.to_string(), "--length", "512", &url, s(&file)], &[]);
        assert!(std::fs::read(&file).unwrap() == data[..512], "{}", d.name);
    }
}

#[test]
fn cp_with_crc32c_digests() {
    for d in BOTH {
        let dir = scratch(&format!("digest-{}", d.name));
        let data = random(MIB as usize + 77);
        let opts = ["--header-digest", "crc32c", "--data-digest", "crc32c"];
        let back = write_then_read(&dir, &d.url("ram1"), 730 * MIB, &data, 0, &opts, &[]);
        assert!(back == data, "{}", d.name);
    }
}

#[test]
fn cp_lun_to_lun_between_daemons() {
    let dir = scratch("lun2lun");
    let off = (740 * MIB).to_string();
    let data = random(MIB as usize);
    let src = dir.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    ok(&dir, &["cp", "--offset", &off, s(&src), &TGT.url("ram1")], &[]);
    ok(&dir, &["cp", "--offset", &off, "--length", &MIB.to_string(), &TGT.url("ram1"), &ISTGT.url("ram1")], &[]);
    let back = dir.join("back.bin");
    ok(&dir, &["cp", "--offset", &off, "--length", &MIB.to_string(), &ISTGT.url("ram1"), s(&back)], &[]);
    assert!(std::fs::read(&back).unwrap() == data);
}

#[test]
fn chap_via_libiscsi_url() {
    for d in BOTH {
        let dir = scratch(&format!("chapurl-{}", d.name));
        let url = format!(
            "iscsi://{}%{}@{}/{}/{}",
            var("RSISCSI_CHAP_USER"),
            var("RSISCSI_CHAP_SECRET"),
            d.portal(),
            d.iqn("chap"),
            d.lun()
        );
        let data = random(64 * 1024 + 3);
        assert!(write_then_read(&dir, &url, 0, &data, 0, &[], &[]) == data, "{}", d.name);
        assert_eq!(
            ok(&dir, &["capacity", &url], &[]),
            "Blocks:     524288\nBlock size: 512\nBytes:      268435456\n",
            "{}",
            d.name
        );
        let wrong = url.replace(&var("RSISCSI_CHAP_SECRET"), WRONG_SECRET);
        fails(&dir, &["capacity", &wrong], &[], &["authentication failed"]);
    }
}

#[test]
fn chap_via_option_and_environment() {
    for d in BOTH {
        let dir = scratch(&format!("chapenv-{}", d.name));
        let env = [("RSISCSI_CHAP_SECRET", var("RSISCSI_CHAP_SECRET"))];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let user = var("RSISCSI_CHAP_USER");
        let data = random(200 * 1024);
        let back = write_then_read(&dir, &d.url("chap"), 16 * MIB, &data, 0, &["--chap-user", &user], &env);
        assert!(back == data, "{}", d.name);
        // -vv logs at debug level; the secret must not be in it.
        let out = run(&dir, &["-vv", "--chap-user", &user, "capacity", &d.url("chap")], &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains('\u{1b}'), "colour codes in a log that is not a terminal");
        fails(
            &dir,
            &["--chap-user", &user, "capacity", &d.url("chap")],
            &[("RSISCSI_CHAP_SECRET", WRONG_SECRET)],
            &["authentication failed"],
        );
    }
}

#[test]
fn chap_via_secret_file() {
    for d in BOTH {
        let dir = scratch(&format!("chapfile-{}", d.name));
        let file = dir.join("secret");
        std::fs::write(&file, format!("{}\n", var("RSISCSI_CHAP_SECRET"))).unwrap();
        let user = var("RSISCSI_CHAP_USER");
        // Readable by others: refused, as ssh refuses such private keys.
        private(&file, 0o644);
        fails(
            &dir,
            &["--chap-user", &user, "--chap-secret-file", s(&file), "capacity", &d.url("chap")],
            &[],
            &["secret file", "accessible by others", "chmod 600"],
        );
        private(&file, 0o600);
        let opts = ["--chap-user", &user, "--chap-secret-file", s(&file)];
        let data = random(100 * 1024 + 1);
        assert!(write_then_read(&dir, &d.url("chap"), 32 * MIB, &data, 0, &opts, &[]) == data, "{}", d.name);
        let missing = dir.join("no-such-secret");
        fails(
            &dir,
            &["--chap-user", &user, "--chap-secret-file", s(&missing), "capacity", &d.url("chap")],
            &[],
            &["secret file", "no-such-secret"],
        );
    }
}

#[test]
fn mutual_chap() {
    for d in BOTH {
        let dir = scratch(&format!("mutual-{}", d.name));
        let (user, tuser) = (var("RSISCSI_MUTUAL_USER"), var("RSISCSI_MUTUAL_TARGET_USER"));
        let (secret, tsecret) = (var("RSISCSI_MUTUAL_SECRET"), var("RSISCSI_MUTUAL_TARGET_SECRET"));
        let env = [("RSISCSI_CHAP_SECRET", secret.as_str()), ("RSISCSI_TARGET_CHAP_SECRET", tsecret.as_str())];
        let opts = ["--chap-user", &user, "--target-chap-user", &tuser];
        let data = random(128 * 1024);
        assert!(write_then_read(&dir, &d.url("mutual"), 0, &data, 0, &opts, &env) == data, "{}", d.name);
        // The target's secret from a file.
        let tfile = dir.join("tsecret");
        std::fs::write(&tfile, &tsecret).unwrap();
        private(&tfile, 0o600);
        let env1 = [("RSISCSI_CHAP_SECRET", secret.as_str())];
        let args = ["--chap-user", &user, "--target-chap-user", &tuser, "--target-chap-secret-file", s(&tfile)];
        let murl = d.url("mutual");
        let mut a = args.to_vec();
        a.extend(["capacity", murl.as_str()]);
        ok(&dir, &a, &env1);
        // The libiscsi URL form with target_user/target_password.
        let url = format!(
            "iscsi://{user}%{secret}@{}/{}/{}?target_user={tuser}&target_password={tsecret}",
            d.portal(),
            d.iqn("mutual"),
            d.lun()
        );
        ok(&dir, &["capacity", &url], &[]);
        // A wrong target secret: the target fails our check.
        fails(
            &dir,
            &["--chap-user", &user, "--target-chap-user", &tuser, "capacity", &d.url("mutual")],
            &[("RSISCSI_CHAP_SECRET", secret.as_str()), ("RSISCSI_TARGET_CHAP_SECRET", WRONG_SECRET)],
            &["authentication failed", "mutual"],
        );
    }
}

#[test]
fn errors_are_one_clear_line() {
    let dir = scratch("errors");
    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Exit statuses: 6 unreachable, 4 authentication, 5 refused, 1 the rest.
    let (unreachable, auth, refused, other) = (Some(6), Some(4), Some(5), Some(1));
    fails_with(&dir, &["discover", &format!("127.0.0.1:{closed}")], &[], &["connection refused"], unreachable);
    fails_with(
        &dir,
        &["capacity", &format!("iscsi://127.0.0.1:{closed}/{}/1", TGT.iqn("ram1"))],
        &[],
        &["connection refused"],
        unreachable,
    );
    for d in BOTH {
        // Authentication: no credentials, and a wrong secret.
        fails_with(&dir, &["capacity", &d.url("chap")], &[], &["authentication failed"], auth);
        fails_with(
            &dir,
            &["--chap-user", &var("RSISCSI_CHAP_USER"), "capacity", &d.url("chap")],
            &[("RSISCSI_CHAP_SECRET", WRONG_SECRET)],
            &["authentication failed"],
            auth,
        );
        // Target not found.
        let nosuch = format!("iscsi://{}/{}/{}", d.portal(), d.iqn("ram1").replace("ram1", "nosuch"), d.lun());
        fails_with(&dir, &["capacity", &nosuch], &[], &["target not found"], refused);
        // LUN out of range.
        let lun7 = format!("iscsi://{}/{}/7", d.portal(), d.iqn("ram1"));
        fails_with(&dir, &["capacity", &lun7], &[], &["LUN 7 does not exist"], other);
        fails(&dir, &["inquiry", &lun7], &[], &["LUN 7 does not exist"]);
        let into = dir.join("lun7.bin");
        fails(&dir, &["cp", &lun7, s(&into)], &[], &["LUN 7 does not exist"]);
        assert!(!into.exists(), "a failed cp left {}", into.display());
        // Past the end of the LUN (1 GiB): nothing is written.
        let small = dir.join("small.bin");
        std::fs::write(&small, random(1024)).unwrap();
        let last = ((1u64 << 30) - 512).to_string();
        fails(
            &dir,
            &["cp", "--offset", &last, s(&small), &d.url("ram1")],
            &[],
            &["does not fit", "bytes fit from there"],
        );
        let out = dir.join("past.bin");
        fails(&dir, &["cp", "--offset", &last, "--length", "1024", &d.url("ram1"), s(&out)], &[], &["--length 1024"]);
        assert!(!out.exists(), "a failed cp left {}", out.display());
        fails(&dir, &["cp", "--offset", &(2u64 << 30).to_string(), s(&small), &d.url("ram1")], &[], &["past the end"]);
        // An offset that is not a multiple of the block size.
        let odd = (700 * MIB + 100).to_string();
        fails(&dir, &["cp", "--offset", &odd, s(&small), &d.url("ram1")], &[], &["not a multiple of", "512"]);
    }
    // Malformed URLs and portals.
    let r = TGT.iqn("ram1");
    fails(&dir, &["capacity", &format!("iscsi//127.0.0.1/{r}/1")], &[], &["not an iSCSI URL"]);
    fails(&dir, &["capacity", &format!("iscsi://127.0.0.1/{r}/abc")], &[], &["invalid LUN"]);
    fails(&dir, &["capacity", &format!("iscsi://127.0.0.1/{r}")], &[], &["does not name a LUN"]);
    fails(&dir, &["capacity", &format!("iscsi://127.0.0.1/{r}/1?bogus=1")], &[], &["unknown URL parameter"]);
    fails(&dir, &["capacity", &format!("iscsi://127.0.0.1:70000/{r}/1")], &[], &["port 70000 out of range"]);
    fails(&dir, &["discover", "127.0.0.1:70000"], &[], &["port 70000 out of range"]);
    fails(&dir, &["discover", "[::1"], &[], &["invalid portal"]);
    // The credentials part of a malformed URL is not echoed.
    let e = fails(
        &dir,
        &["capacity", &format!("iscsx://labuser%{WRONG_SECRET}@127.0.0.1/{r}/1")],
        &[],
        &["not an iSCSI URL"],
    );
    assert!(!e.contains(WRONG_SECRET));
    // CHAP user without a secret.
    fails(
        &dir,
        &["--chap-user", "labuser", "capacity", &TGT.url("chap")],
        &[],
        &["no secret", "RSISCSI_CHAP_SECRET", "--chap-secret-file"],
    );
    fails(
        &dir,
        &["--chap-user", "muser", "--target-chap-user", "mtarget", "capacity", &TGT.url("mutual")],
        &[("RSISCSI_CHAP_SECRET", "x")],
        &["no secret", "RSISCSI_TARGET_CHAP_SECRET"],
    );
    // Unreadable source files: missing, and a directory.
    let missing = dir.join("missing.bin");
    fails(&dir, &["cp", s(&missing), &TGT.url("ram1")], &[], &["cannot open", "No such file"]);
    fails(&dir, &["cp", "--offset", &(750 * MIB).to_string(), s(&dir), &TGT.url("ram1")], &[], &["directory"]);
    // A bad initiator name, a bad option value, a missing argument.
    fails(&dir, &["--initiator-name", "bad name", "capacity", &TGT.url("ram1")], &[], &["invalid iSCSI name"]);
    fails(&dir, &["--header-digest", "md5", "capacity", &TGT.url("ram1")], &[], &["md5"]);
    fails(&dir, &["cp", "only-one"], &[], &["<DST>"]);
}

#[test]
fn initiator_name_is_generated_once_and_kept() {
    let dir = scratch("initiatorname");
    let file = dir.join("config").join("initiatorname");
    assert!(!file.exists());
    ok(&dir, &["capacity", &ISTGT.url("ram1")], &[]);
    let first = std::fs::read_to_string(&file).unwrap();
    // `InitiatorName=...`, after comment lines (open-iscsi's format).
    let name =
        first.lines().find_map(|l| l.trim().strip_prefix("InitiatorName=")).unwrap_or_else(|| panic!("{first:?}"));
    assert!(name.starts_with("iqn.") && name.len() <= 223, "{name}");
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c)), "{name}");
    ok(&dir, &["discover", &ISTGT.portal()], &[]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first, "the initiator name changed between runs");
    // --initiator-name overrides it for one run and does not replace it.
    ok(&dir, &["--initiator-name", "iqn.2026-11.rs.rsiscsi:cli-test", "capacity", &TGT.url("ram1")], &[]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
}

/// `cp` over one session of several connections (MC/S), with each policy,
/// on both daemons: byte-identical round trips.
#[test]
fn cp_over_several_connections_with_each_policy() {
    for (i, d) in BOTH.into_iter().enumerate() {
        let dir = scratch(&format!("mcs-{}", d.name));
        let url = d.url("ram1");
        for (j, policy) in
            ["failover-only", "round-robin", "round-robin-subset", "least-queue-depth", "weighted"].iter().enumerate()
        {
            let data = random(4 * MIB as usize + 512);
            let src = &dir.join("src.bin");
            let back = &dir.join("back.bin");
            std::fs::write(src, &data).unwrap();
            let off = (760 * MIB + (i as u64 * 5 + j as u64) * 8 * MIB).to_string();
            let len = data.len().to_string();
            ok(&dir, &["cp", "--connections", "4", "--policy", policy, "--offset", &off, s(src), &url], &[]);
            ok(
                &dir,
                &["cp", "--connections", "3", "--policy", policy, "--offset", &off, "--length", &len, &url, s(back)],
                &[],
            );
            assert!(std::fs::read(back).unwrap() == data, "{} {policy}: data differs", d.name);
        }
    }
}

/// `--add-portal`: the added connections log in through another portal of the
/// same target (its IPv6 one here), so one session spans two paths; bytes
/// written that way read back the same. A portal nobody listens on fails the
/// command, which shows the added connections really go there.
#[test]
fn cp_adds_connections_through_other_portals() {
    for (i, (d, portal6)) in
        [(TGT, var("RSISCSI_TGT_PORTAL6")), (ISTGT, var("RSISCSI_ISTGT_PORTAL6"))].into_iter().enumerate()
    {
        let dir = scratch(&format!("add-portal-{}", d.name));
        let url = d.url("ram1");
        let data = random(3 * MIB as usize + 4096);
        let src = &dir.join("src.bin");
        let back = &dir.join("back.bin");
        std::fs::write(src, &data).unwrap();
        let off = (850 * MIB + i as u64 * 8 * MIB).to_string();
        let len = data.len().to_string();
        let two = ["cp", "--connections", "2", "--add-portal", &portal6];
        ok(&dir, &[&two[..], &["--offset", &off, s(src), &url]].concat(), &[]);
        let three = ["cp", "--connections", "3", "--add-portal", &portal6, "--add-portal", &d.portal()];
        ok(&dir, &[&three[..], &["--offset", &off, "--length", &len, &url, s(back)]].concat(), &[]);
        assert!(std::fs::read(back).unwrap() == data, "{}: data differs", d.name);

        fails(&dir, &["inquiry", "--connections", "2", "--add-portal", "127.0.0.1:9", &url], &[], &["127.0.0.1:9"]);
        fails(&dir, &["inquiry", "--add-portal", &portal6, &url], &[], &["--add-portal", "--connections 2"]);
        fails(&dir, &["inquiry", "--connections", "2", "--add-portal", "host:port:x:", &url], &[], &["host:port:x:"]);
    }
}

/// `bench --json` against both daemons: every field the issue names, figures
/// that agree with each other, no errors, and a measured time that is exactly
/// the window asked for (commands are counted by when they complete inside
/// it, as fio does, not waited for past its end). Reads only: the LUN keeps
/// its bytes. Over two connections, the second through the IPv6 portal.
#[test]
fn bench_reports_the_measured_window() {
    for (d, portal6) in [(TGT, var("RSISCSI_TGT_PORTAL6")), (ISTGT, var("RSISCSI_ISTGT_PORTAL6"))] {
        let dir = scratch(&format!("bench-{}", d.name));
        let url = d.url("ram1");
        let common =
            ["bench", "--rw", "read", "--bs", "1M", "--time", "1", "--warmup", "0.3", "--size", "256M", "--json"];
        for (conns, extra) in
            [(1, vec!["--iodepth", "16"]), (2, vec!["--iodepth", "16", "--connections", "2", "--add-portal", &portal6])]
        {
            let out = ok(&dir, &[&common[..], &extra[..], &[&url]].concat(), &[]);
            let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{out}", d.name));
            let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{}: no {k} in {out}", d.name));
            assert_eq!(num("seconds"), 1.0, "{}: the window, not the time until the last command: {out}", d.name);
            assert_eq!(v["connections"], conns, "{out}");
            assert_eq!(v["errors"], 0, "{out}");
            let (bw, iops) = (num("bw_mib_s"), num("iops"));
            assert!(iops >= 10.0, "{}: {out}", d.name);
            assert!((bw - iops).abs() < 1e-6 * bw.max(1.0), "1 MiB per command: {out}");
            assert!(num("cpu_s_per_gib") > 0.0 && num("cpu_user_s_per_gib") <= num("cpu_s_per_gib"), "{out}");
            let lat = |k: &str| v["lat_us"][k].as_f64().unwrap_or_else(|| panic!("no lat_us.{k} in {out}"));
            assert!(0.0 < lat("p50") && lat("p50") <= lat("p99") && lat("p99") <= lat("p999"), "{out}");
        }
    }
}

/// More connections than the target's MaxConnections: the ISDSC status and
/// the limit the target gave; a target of one connection per session: its
/// own status.
#[test]
fn too_many_connections_names_the_status_and_the_limit() {
    let dir = scratch("mcs-limit");
    let err = fails(
        &dir,
        &["inquiry", "--connections", "9", &ISTGT.url("ram1")],
        &[],
        &["ISDSC_TOO_MANY_CONNECTIONS", "0xEFFF000E", "8"],
    );
    assert!(err.contains("allows 8"), "{err}");
    fails(
        &dir,
        &["inquiry", "--connections", "2", &TGT.url("noimm")],
        &[],
        &["ISDSC_REQUEST_NOT_SUPPORTED", "0xEFFF0037"],
    );
    let out = ok(&dir, &["inquiry", "--connections", "8", "--policy", "least-queue-depth", &ISTGT.url("ram1")], &[]);
    assert!(out.contains("FreeBSD"), "{out}");
    let out = ok(&dir, &["ls", "--connections", "2", &format!("iscsi://{}/{}", TGT.portal(), TGT.iqn("ram1"))], &[]);
    assert!(out.contains("1073741824 bytes"), "{out}");
    fails(&dir, &["cp", "--policy", "least-busy", "a", "b"], &[], &["failover-only", "round-robin", "weighted"]);
    fails(&dir, &["cp", "--connections", "0", "a", "b"], &[], &["connections"]);
}

fn private(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Devices as cp ends: /dev/null takes a read of the LUN (it has no length
/// to set), /dev/zero gives --length bytes; a loop device (where losetup
/// works, as root) is sized by seeking and copied both ways byte for byte.
/// Writes go to [1012 MiB, 1013 MiB) of tgt's ram1 (tests/interrupt.rs has [870 MiB, 1010 MiB)).
#[test]
fn cp_to_and_from_devices() {
    let dir = scratch("devices");
    let url = TGT.url("ram1");
    let off = (1012 * MIB).to_string();
    ok(&dir, &["cp", "--offset", &off, "--length", &MIB.to_string(), &url, "/dev/null"], &[]);
    ok(&dir, &["cp", "--offset", &off, "--length", "8192", "/dev/zero", &url], &[]);
    let back = dir.join("zeros.bin");
    ok(&dir, &["cp", "--offset", &off, "--length", "8192", &url, s(&back)], &[]);
    assert!(std::fs::read(&back).unwrap() == vec![0u8; 8192]);

    let img = dir.join("loop.img");
    let data = random(MIB as usize);
    std::fs::write(&img, &data).unwrap();
    let attach = std::process::Command::new("losetup").args(["-f", "--show", s(&img)]).output();
    let Some(dev) = attach.ok().filter(|o| o.status.success()).map(|o| text(&o.stdout).trim().to_string()) else {
        eprintln!("no loop device here: the block device part is skipped");
        return;
    };
    let r = std::panic::catch_unwind(|| {
        ok(&dir, &["cp", "--offset", &off, &dev, &url], &[]);
        let got = dir.join("got.bin");
        ok(&dir, &["cp", "--offset", &off, "--length", &MIB.to_string(), &url, s(&got)], &[]);
        assert!(std::fs::read(&got).unwrap() == data, "the LUN does not hold the loop device's bytes");
        std::fs::write(&img, vec![0u8; MIB as usize]).unwrap();
        ok(&dir, &["cp", "--offset", &off, "--length", &MIB.to_string(), &url, &dev], &[]);
    });
    let _ = std::process::Command::new("losetup").args(["-d", &dev]).status();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
    assert!(std::fs::read(&img).unwrap() == data, "the loop device does not hold the LUN's bytes");
}

/// `ls` of a CHAP target: without a CHAP user it is shown as not listed
/// (saying what to give); with a wrong secret it is a failure, exit 4.
#[test]
fn ls_of_a_chap_target_says_what_to_give_and_fails_on_a_wrong_secret() {
    let dir = scratch("ls-chap");
    let url = format!("iscsi://{}/{}/", TGT.portal(), TGT.iqn("chap"));
    let out = ok(&dir, &["ls", &url], &[]);
    assert!(out.contains("  not listed: login to "), "{out}");
    assert!(out.contains("authentication failed: the target requires CHAP: give --chap-user"), "{out}");
    let user = var("RSISCSI_CHAP_USER");
    let err = fails_with(
        &dir,
        &["ls", "--chap-user", &user, &url],
        &[("RSISCSI_CHAP_SECRET", WRONG_SECRET)],
        &["1 target(s) could not be listed", &TGT.iqn("chap")],
        Some(4),
    );
    assert!(!err.contains(WRONG_SECRET));
    let out = run(&dir, &["ls", "--chap-user", &user, &url], &[("RSISCSI_CHAP_SECRET", WRONG_SECRET)]);
    let listed = text(&out.stdout);
    assert!(listed.contains("check the CHAP user and secret (--chap-user, RSISCSI_CHAP_SECRET"), "{listed}");
}
