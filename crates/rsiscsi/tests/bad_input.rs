//! Bad input from users, run through the real `rsiscsi` binary: malformed
//! URLs, portals and iSCSI names, out-of-range numbers, unknown flags and
//! values, lengths and offsets that do not fit the LUN, files that cannot be
//! read or written, and CHAP secrets that are missing, empty, too long or
//! readable by others.
//!
//! Each case must fail with a non-zero exit code and exactly one
//! `rsiscsi: error: ...` line naming the problem, without panic text, with
//! nothing on stdout, no destination file left behind and no byte changed on
//! the LUN. With `--nocapture` the test prints each case as a row of the
//! README's "Bad input" table.
//!
//! Cases that log in use tgt's `ram1` LUN from the lab (file named by
//! `RSISCSI_LAB_ENV`, default `/tmp/rsiscsi-lab/lab.env`); they only read
//! its last MiB and fail before writing anything.

mod common;

use common::{Scratch, var};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const MIB: u64 = 1 << 20;

/// Every lab secret: none may ever be printed.
fn secrets() -> Vec<String> {
    ["RSISCSI_CHAP_SECRET", "RSISCSI_MUTUAL_SECRET", "RSISCSI_MUTUAL_TARGET_SECRET", "RSISCSI_DISCOVERY_SECRET"]
        .iter()
        .map(|n| var(n))
        .collect()
}

fn scratch(test: &str) -> Scratch {
    common::scratch("bad-input", test)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary with no secret in its environment and its config in `dir`.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::rsiscsi(dir, args, env)
}

/// One bad input: what kind it is, the arguments, extra environment, the
/// words the error line must contain, and a file that must not exist after.
struct Case<'a> {
    kind: &'a str,
    args: Vec<String>,
    env: Vec<(&'a str, String)>,
    needles: &'a [&'a str],
    not_created: Option<PathBuf>,
    /// The exit status it must end with, where the case pins it.
    status: Option<i32>,
}

fn case<'a>(kind: &'a str, args: &[&str], needles: &'a [&'a str]) -> Case<'a> {
    Case {
        kind,
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        needles,
        not_created: None,
        status: None,
    }
}

impl<'a> Case<'a> {
    fn env(mut self, k: &'a str, v: &str) -> Self {
        self.env.push((k, v.to_string()));
        self
    }
    fn creates_nothing_at(mut self, p: &Path) -> Self {
        self.not_created = Some(p.to_path_buf());
        self
    }
    fn exits(mut self, status: i32) -> Self {
        self.status = Some(status);
        self
    }
}

/// Runs one case and checks everything the module doc promises; returns the
/// error line.
fn check(dir: &Path, c: &Case) -> String {
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run(dir, &args, &env);
    let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{}: {args:?} succeeded:\n{o}", c.kind);
    if let Some(want) = c.status {
        assert_eq!(out.status.code(), Some(want), "{}: {args:?}: exit status of {e:?}", c.kind);
    }
    assert!(o.is_empty(), "{}: {args:?} wrote to stdout:\n{o}", c.kind);
    assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "{}: {args:?} panicked:\n{e}", c.kind);
    assert_eq!(e.lines().count(), 1, "{}: {args:?}: stderr is not one line:\n{e}", c.kind);
    assert!(e.starts_with("rsiscsi: error: ") && e.ends_with('\n'), "{}: {args:?}: {e:?}", c.kind);
    let lower = e.to_lowercase();
    for n in c.needles {
        assert!(lower.contains(&n.to_lowercase()), "{}: {args:?}: {e:?} does not mention {n:?}", c.kind);
    }
    for secret in secrets() {
        assert!(!e.contains(&secret), "{}: a secret was printed", c.kind);
    }
    if let Some(p) = &c.not_created {
        assert!(!p.exists(), "{}: {args:?} left {}", c.kind, p.display());
    }
    let line = e.trim_end().to_string();
    println!("| {} | `{}` | `{}` |", c.kind, args.join(" ").replace('|', "\\|"), line.replace('|', "\\|"));
    line
}

/// Input that is refused before any connection is made.
#[test]
fn malformed_command_lines_are_refused_with_one_clear_line() {
    let dir = scratch("syntax");
    let d: &Path = &dir;
    let iqn = var("RSISCSI_TGT_IQN_RAM1");
    let url = |host: &str, target: &str, lun: &str| format!("iscsi://{host}/{target}/{lun}");
    let good = url("127.0.0.1:3260", &iqn, "1");
    let out = d.join("out.bin");
    let cases = [
        case("URL without scheme", &["capacity", &format!("127.0.0.1:3260/{iqn}/1")], &["not an iSCSI URL"]),
        case("URL with wrong scheme", &["capacity", &format!("http://127.0.0.1/{iqn}/1")], &["not an iSCSI URL"]),
        case("URL with empty host", &["capacity", &url("", &iqn, "1")], &["invalid portal"]),
        case("port 0", &["capacity", &url("127.0.0.1:0", &iqn, "1")], &["port 0 out of range"]),
        case("port 65536", &["capacity", &url("127.0.0.1:65536", &iqn, "1")], &["port 65536 out of range"]),
        case("port not a number", &["capacity", &url("127.0.0.1:abc", &iqn, "1")], &["invalid portal", "abc"]),
        case("portal port 0", &["discover", "127.0.0.1:0"], &["port 0 out of range"]),
        case("portal port 99999", &["discover", "127.0.0.1:99999"], &["port 99999 out of range"]),
        case("empty portal", &["discover", ""], &["invalid portal"]),
        case("unclosed IPv6 bracket", &["discover", "[::1"], &["invalid portal"]),
        case("IPv6 without brackets (URL)", &["capacity", &url("::1:3260", &iqn, "1")], &["in brackets", "[::1:3260]"]),
        case("IPv6 without brackets (portal)", &["discover", "::1"], &["in brackets", "[::1]"]),
        case(
            "IQN without date",
            &["capacity", &url("127.0.0.1", "iqn.x", "1")],
            &["invalid target name", "iqn.YYYY-MM"],
        ),
        case("IQN with month 13", &["capacity", &url("127.0.0.1", "iqn.2024-13.lab:x", "1")], &["invalid target name"]),
        case(
            "IQN with a space",
            &["capacity", &url("127.0.0.1", "iqn.2024-01.lab:a%20b", "1")],
            &["invalid target name"],
        ),
        case(
            "EUI name too short",
            &["capacity", &url("127.0.0.1", "eui.12345", "1")],
            &["invalid target name", "eui."],
        ),
        case("NAA name not hex", &["capacity", &url("127.0.0.1", "naa.xyz", "1")], &["invalid target name", "naa."]),
        case("name of no known form", &["capacity", &url("127.0.0.1", "foo.bar", "1")], &["invalid target name"]),
        case("bad initiator name", &["--initiator-name", "iqn.x", "capacity", &good], &["invalid iSCSI name"]),
        case("LUN above 16383", &["capacity", &url("127.0.0.1", &iqn, "16384")], &["invalid LUN", "16383"]),
        case("negative LUN", &["capacity", &url("127.0.0.1", &iqn, "-1")], &["invalid LUN"]),
        case("URL without LUN", &["capacity", &format!("iscsi://127.0.0.1/{iqn}")], &["does not name a LUN"]),
        case("unknown URL parameter", &["capacity", &format!("{good}?bogus=1")], &["unknown URL parameter", "bogus"]),
        case("unknown flag", &["capacity", &good, "--frobnicate"], &["unexpected argument", "--frobnicate"]).exits(2),
        case("unknown subcommand", &["format", &good], &["unrecognized subcommand", "format"]),
        case("missing argument", &["cp", "only-one"], &["<DST>"]),
        case("unknown digest", &["--header-digest", "md5", "capacity", &good], &["md5", "crc32c"]),
        case("unknown policy", &["cp", "--policy", "fastest", &good, s(&out)], &["unknown load balance policy"])
            .creates_nothing_at(&out),
        case("--connections 0", &["cp", "--connections", "0", &good, s(&out)], &["--connections", "1..=65535"])
            .creates_nothing_at(&out),
        case("--connections 70000", &["cp", "--connections", "70000", &good, s(&out)], &["70000", "1..=65535"])
            .creates_nothing_at(&out),
        case(
            "--add-portal not HOST[:PORT]",
            &["cp", "--connections", "2", "--add-portal", "127.0.0.1:x", &good, s(&out)],
            &["--add-portal", "127.0.0.1:x", "HOST[:PORT]"],
        )
        .creates_nothing_at(&out),
        case(
            "--add-portal without --connections",
            &["cp", "--add-portal", "[::1]", &good, s(&out)],
            &["rsiscsi: error: --add-portal names portals for the added connections: give --connections 2 or more\n"],
        )
        .creates_nothing_at(&out)
        .exits(1),
        case(
            "--add-portal nobody listens on",
            &["cp", "--connections", "2", "--add-portal", "127.0.0.1:9", &good, s(&out)],
            &["rsiscsi: error: connection 2 of 2 (to 127.0.0.1:9) could not be added: cannot connect to 127.0.0.1:9: \
               Connection refused (os error 111) (ISDSC_CONNECTION_FAILED, 0xEFFF0003)\n"],
        )
        .creates_nothing_at(&out)
        .exits(6),
        case("--hold-time 0", &["cp", "--hold-time", "0", &good, s(&out)], &["--hold-time", "1..=3600"])
            .creates_nothing_at(&out)
            .exits(2),
        case("--hold-time 3601", &["capacity", "--hold-time", "3601", &good], &["--hold-time", "1..=3600"]).exits(2),
        case(
            "--max-recv-data-segment-length 511",
            &["cp", "--max-recv-data-segment-length", "511", &good, s(&out)],
            &["--max-recv-data-segment-length", "512..=16777215"],
        )
        .creates_nothing_at(&out)
        .exits(2),
        case("negative length", &["cp", "--length=-5", &good, s(&out)], &["--length", "-5"]).creates_nothing_at(&out),
        case("length not a number", &["cp", "--length", "1G", &good, s(&out)], &["--length", "1G"])
            .creates_nothing_at(&out),
        case("offset too big for u64", &["cp", "--offset", "18446744073709551616", &good, s(&out)], &["--offset"])
            .creates_nothing_at(&out),
        case("bench: zero block size", &["bench", "--bs", "0", &good], &["--bs", "greater than 0"]),
        case("bench: unknown size unit", &["bench", "--bs", "1x", &good], &["--bs", "unknown unit"]),
        case("bench: zero queue depth", &["bench", "--iodepth", "0", &good], &["--iodepth", "1..=4096"]),
        case("bench: zero size", &["bench", "--size", "0", &good], &["--size", "greater than 0"]),
        case("mutual CHAP without CHAP", &["--target-chap-user", "t", "capacity", &good], &["also needs --chap-user"]),
        case(
            "CHAP user without secret",
            &["--chap-user", "u", "capacity", &good],
            &["no secret", "RSISCSI_CHAP_SECRET"],
        ),
    ];
    for c in &cases {
        check(d, c);
    }
}

/// The last MiB of tgt's ram1 LUN, read through the CLI.
fn last_mib(dir: &Path, url: &str, name: &str) -> Vec<u8> {
    let p = dir.join(name);
    let offset = (var("RSISCSI_RAM1_BYTES").parse::<u64>().unwrap() - MIB).to_string();
    let out = run(dir, &["cp", "--offset", &offset, "--length", &MIB.to_string(), url, s(&p)], &[]);
    assert!(out.status.success(), "reading the last MiB failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&p).unwrap()
}

/// A path this process cannot open for reading: a mode-000 file, or for
/// root (who reads any file) `/proc/1/mem`, which needs ptrace rights.
fn unreadable(dir: &Path) -> Option<PathBuf> {
    let f = dir.join("mode000.bin");
    std::fs::write(&f, b"x").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
    [f, PathBuf::from("/proc/1/mem")].into_iter().find(|p| std::fs::File::open(p).is_err())
}

/// A directory this process cannot create files in: mode 555, or for root
/// sysfs.
fn unwritable_dir(dir: &Path) -> Option<PathBuf> {
    let d = dir.join("readonly");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
    [d, PathBuf::from("/sys")].into_iter().find(|p| std::fs::File::create(p.join("probe")).is_err())
}

/// Input that needs a look at the LUN or the file system: refused before a
/// byte is written.
#[test]
fn bad_ranges_files_and_secrets_are_refused_and_nothing_is_written() {
    let dir = scratch("ranges");
    let d: &Path = &dir;
    let lun_url =
        format!("iscsi://{}/{}/{}", var("RSISCSI_TGT_PORTAL"), var("RSISCSI_TGT_IQN_RAM1"), var("RSISCSI_TGT_LUN"));
    let chap_url =
        format!("iscsi://{}/{}/{}", var("RSISCSI_TGT_PORTAL"), var("RSISCSI_TGT_IQN_CHAP"), var("RSISCSI_TGT_LUN"));
    let size: u64 = var("RSISCSI_RAM1_BYTES").parse().unwrap();
    let before = last_mib(d, &lun_url, "before.bin");

    let small = d.join("small.bin");
    std::fs::write(&small, vec![0xa5u8; 1024]).unwrap();
    let empty = d.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let out = d.join("out.bin");
    let missing_dir = d.join("no-such-dir").join("out.bin");
    let lun7 = format!("iscsi://{}/{}/7", var("RSISCSI_TGT_PORTAL"), var("RSISCSI_TGT_IQN_RAM1"));
    let last_block = (size - 512).to_string();
    let misaligned = (size - MIB + 100).to_string();
    let chap_user = var("RSISCSI_CHAP_USER");

    // Secret files.
    let secret = |name: &str, content: &[u8], mode: u32| {
        let p = d.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let right = var("RSISCSI_CHAP_SECRET");
    let shared = secret("shared.secret", right.as_bytes(), 0o644);
    let group = secret("group.secret", right.as_bytes(), 0o640);
    let empty_secret = secret("empty.secret", b"\n", 0o600);
    let long_secret = secret("long.secret", &[b'k'; 300], 0o600);
    let secret_dir = d.join("secret.dir");
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let no_secret = d.join("missing.secret");
    let long_env = "s".repeat(300);
    let empty_in_url = chap_url.replacen("iscsi://", &format!("iscsi://{chap_user}%@"), 1);

    let tgt_iqn = var("RSISCSI_TGT_IQN_RAM1");
    let lun0 = format!("iscsi://{}/{tgt_iqn}/0", var("RSISCSI_TGT_PORTAL"));
    let not_a_disk =
        format!("rsiscsi: error: LUN 0 of {tgt_iqn} is a storage array controller, not a disk; its disks are LUN 1\n");
    let istgt_lun3 = format!("iscsi://{}/{}/3", var("RSISCSI_ISTGT_PORTAL"), var("RSISCSI_ISTGT_IQN_RAM1"));
    let chap_iqn = var("RSISCSI_TGT_IQN_CHAP");
    let wrong_secret = format!(
        "rsiscsi: error: login to {chap_iqn} failed: authentication failed: check the CHAP user and secret \
         (--chap-user, RSISCSI_CHAP_SECRET or --chap-secret-file) (status class 0x02, detail 0x01)\n"
    );
    let no_chap_user = format!(
        "rsiscsi: error: login to {chap_iqn} failed: authentication failed: the target requires CHAP: give \
         --chap-user, and the secret in RSISCSI_CHAP_SECRET or --chap-secret-file (status class 0x02, detail 0x01)\n"
    );
    let fifo = d.join("pipe");
    let mkfifo = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(mkfifo.success(), "mkfifo failed");
    let pipe = format!(
        "rsiscsi: error: cannot copy to {}: it is a pipe, and cp reads and writes at offsets: give a file or a block \
         device\n",
        s(&fifo)
    );
    let wrong_case = format!(
        "rsiscsi: error: login to {} failed: target not found; the portal has {tgt_iqn} (iSCSI names are written in \
         lowercase) (status class 0x02, detail 0x03)\n",
        tgt_iqn.replace("ram1", "RAM1")
    );
    let (pipe, wrong_case) = ([pipe.as_str()], [wrong_case.as_str()]);
    let (not_a_disk, wrong_secret, no_chap_user) =
        ([not_a_disk.as_str()], [wrong_secret.as_str()], [no_chap_user.as_str()]);

    let mut cases = vec![
        case("LUN not on the target", &["capacity", &lun7], &["LUN 7 does not exist", "0, 1"]),
        case(
            "LUN not on a target of one LUN",
            &["capacity", &istgt_lun3],
            &["rsiscsi: error: LUN 3 does not exist (the target reports LUN 0)\n"],
        )
        .exits(1),
        case(
            "bench: LUN not on the target",
            &["bench", &lun7],
            &["LUN 7 does not exist (the target reports LUNs 0, 1)"],
        )
        .exits(1),
        case("LUN that is not a disk (cp to it)", &["cp", s(&small), &lun0], &not_a_disk).exits(1),
        case("LUN that is not a disk (cp from it)", &["cp", &lun0, s(&out)], &not_a_disk)
            .creates_nothing_at(&out)
            .exits(1),
        case("LUN that is not a disk (capacity)", &["capacity", &lun0], &not_a_disk).exits(1),
        case("LUN that is not a disk (bench)", &["bench", "--rw", "write", &lun0], &not_a_disk).exits(1),
        case("CHAP target without a CHAP user (tgt)", &["capacity", &chap_url], &no_chap_user).exits(4),
        case(
            "CHAP target without a CHAP user (istgt)",
            &[
                "capacity",
                &format!(
                    "iscsi://{}/{}/{}",
                    var("RSISCSI_ISTGT_PORTAL"),
                    var("RSISCSI_ISTGT_IQN_CHAP"),
                    var("RSISCSI_ISTGT_LUN")
                ),
            ],
            &["rsiscsi: error: authentication failed: the target requires CHAP but no CHAP user was given: give \
               --chap-user, and the secret in RSISCSI_CHAP_SECRET or --chap-secret-file\n"],
        )
        .exits(4),
        case("LUN not on the target (cp)", &["cp", &lun7, s(&out)], &["LUN 7 does not exist"]).creates_nothing_at(&out),
        case(
            "target not on the portal",
            &["capacity", &lun_url.replace("ram1", "nosuch")],
            &["target not found; the portal has", "targets (`rsiscsi discover 127.0.0.1:3260` lists them)"],
        )
        .exits(5),
        case(
            "target that redirects the login in a loop",
            &["capacity", &format!("iscsi://{}/{}/1", var("RSISCSI_TGT_PORTAL"), var("RSISCSI_TGT_IQN_LOOP"))],
            &["rsiscsi: error: the target redirected the login more than 4 times (a redirect loop?)\n"],
        )
        .exits(5),
        case("target name in the wrong case", &["capacity", &lun_url.replace("ram1", "RAM1")], &wrong_case).exits(5),
        case("neither side a LUN", &["cp", s(&small), s(&out)], &["neither", "is a LUN", "cp copies to or from a LUN"])
            .creates_nothing_at(&out)
            .exits(1),
        case(
            "mistyped URL scheme in cp",
            &["cp", s(&small), &lun_url.replacen("iscsi://", "iscsi:/", 1)],
            &["not an iSCSI URL (expected iscsi://HOST[:PORT]/IQN/LUN): iscsi:/127.0.0.1"],
        )
        .exits(1),
        case("destination is a pipe", &["cp", "--length", "512", &lun_url, s(&fifo)], &pipe).exits(1),
        case(
            "source of no size without --length",
            &["cp", "/dev/zero", &lun_url],
            &["cannot tell the size of /dev/zero: give --length"],
        )
        .exits(1),
        case("zero length", &["cp", "--length", "0", &lun_url, s(&out)], &["--length 0", "nothing to copy"])
            .creates_nothing_at(&out),
        case(
            "offset at the end of the LUN",
            &["cp", "--offset", &size.to_string(), &lun_url, s(&out)],
            &["end of the source LUN", "nothing to copy"],
        )
        .creates_nothing_at(&out),
        case(
            "offset past the LUN",
            &["cp", "--offset", &(2 * size).to_string(), s(&small), &lun_url],
            &["past the end"],
        ),
        case(
            "length past the LUN",
            &["cp", "--offset", &last_block, "--length", "1024", &lun_url, s(&out)],
            &["--length 1024", "512 bytes"],
        )
        .creates_nothing_at(&out),
        case("huge length", &["cp", "--length", "18446744073709551615", &lun_url, s(&out)], &["is more than the"])
            .creates_nothing_at(&out),
        case(
            "file does not fit at the offset",
            &["cp", "--offset", &last_block, s(&small), &lun_url],
            &["does not fit in the LUN (1073741824 bytes): 512 bytes fit from there"],
        ),
        case(
            "offset not block-aligned",
            &["cp", "--offset", &misaligned, s(&small), &lun_url],
            &["not a multiple of", "512"],
        ),
        case(
            "bench: block size not a multiple of the LUN's",
            &["bench", "--bs", "3", &lun_url],
            &["--bs 3", "block size 512"],
        ),
        case(
            "bench: block size too large for one command",
            &["bench", "--bs", "99999999G", &lun_url],
            &["too large for one command"],
        ),
        case(
            "bench: region smaller than one block",
            &["bench", "--size", "100", &lun_url],
            &["region (100 bytes)", "smaller than --bs"],
        ),
        case("bench: zero measuring time", &["bench", "--time", "0", &lun_url], &["--time", "greater than 0"]),
        case(
            "empty source file",
            &["cp", "--offset", &last_block, s(&empty), &lun_url],
            &["is empty", "nothing to copy"],
        ),
        case("source file missing", &["cp", s(&d.join("nosuch.bin")), &lun_url], &["cannot open", "No such file"]),
        case("source is a directory", &["cp", "--offset", &last_block, s(d), &lun_url], &["is a directory"]),
        case(
            "destination directory missing",
            &["cp", "--length", "512", &lun_url, s(&missing_dir)],
            &["cannot open", "No such file"],
        )
        .creates_nothing_at(&missing_dir),
        case("destination is a directory", &["cp", "--length", "512", &lun_url, s(d)], &["is a directory"]),
        case(
            "secret file readable by others",
            &["--chap-user", &chap_user, "--chap-secret-file", s(&shared), "capacity", &chap_url],
            &["accessible by others", "0644", "chmod 600"],
        ),
        case(
            "secret file readable by group",
            &["--chap-user", &chap_user, "--chap-secret-file", s(&group), "capacity", &chap_url],
            &["accessible by others", "0640"],
        ),
        case(
            "secret file missing",
            &["--chap-user", &chap_user, "--chap-secret-file", s(&no_secret), "capacity", &chap_url],
            &["cannot read secret file", "No such file"],
        ),
        case(
            "secret file is a directory",
            &["--chap-user", &chap_user, "--chap-secret-file", s(&secret_dir), "capacity", &chap_url],
            &["not a regular file"],
        ),
        case(
            "empty secret file",
            &["--chap-user", &chap_user, "--chap-secret-file", s(&empty_secret), "capacity", &chap_url],
            &["is empty"],
        ),
        case(
            "secret file too long",
            &["--chap-user", &chap_user, "--chap-secret-file", s(&long_secret), "capacity", &chap_url],
            &["more than the 255"],
        ),
        case(
            "secret in environment too long",
            &["--chap-user", &chap_user, "capacity", &chap_url],
            &["RSISCSI_CHAP_SECRET", "300 bytes", "255"],
        )
        .env("RSISCSI_CHAP_SECRET", &long_env),
        case("empty secret in URL", &["capacity", &empty_in_url], &["secret from the URL is empty"]),
        case("wrong secret", &["--chap-user", &chap_user, "capacity", &chap_url], &wrong_secret)
            .env("RSISCSI_CHAP_SECRET", "wrongsecret99")
            .exits(4),
    ];
    match unreadable(d) {
        Some(p) => {
            cases.push(case("source file unreadable", &["cp", s(&p), &lun_url], &["cannot open", "Permission denied"]))
        }
        None => eprintln!("no unreadable file available here: case skipped"),
    }
    let ro_out = unwritable_dir(d).map(|p| p.join("out.bin"));
    match &ro_out {
        Some(p) => cases.push(
            case(
                "destination in a read-only directory",
                &["cp", "--length", "512", &lun_url, s(p)],
                &["cannot open", "Permission denied"],
            )
            .creates_nothing_at(p),
        ),
        None => eprintln!("no read-only directory available here: case skipped"),
    }
    for c in &cases {
        check(d, c);
    }
    let after = last_mib(d, &lun_url, "after.bin");
    assert!(before == after, "a refused command changed the last MiB of the LUN");
}

/// A one-connection stand-in for a target on a free loopback port: reads
/// the first Login Request and answers `reply` (closes the connection when
/// it is empty); returns the port.
fn fake_target(reply: Vec<u8>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else { return };
        let mut bhs = [0u8; 48];
        if conn.read_exact(&mut bhs).is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize;
        let mut data = vec![0u8; len.div_ceil(4) * 4];
        if conn.read_exact(&mut data).is_err() {
            return;
        }
        if reply.is_empty() {
            // Closed at once, unanswered.
            return;
        }
        let _ = conn.write_all(&reply);
        // Until the initiator closes.
        let _ = conn.read_to_end(&mut Vec::new());
    });
    port
}

/// A Login Response with status `class`/`detail` (RFC 7143 §11.13.5).
fn login_response(class: u8, detail: u8) -> Vec<u8> {
    use iscsi_proto::pdu::{FrameConfig, LoginResponse, Pdu, encode_pdu};
    let rsp = LoginResponse { status_class: class, status_detail: detail, ..LoginResponse::default() };
    let mut out = bytes::BytesMut::new();
    encode_pdu(&Pdu::new(rsp, bytes::Bytes::new()), &FrameConfig::default(), &mut out);
    out.to_vec()
}

/// What a target outside the lab can answer: a refusal of our initiator
/// name (login status 0x0202, which the lab's targets, open to all, never
/// give), something that is not iSCSI on the port, and a port that closes
/// the connection without an answer.
#[test]
fn a_refused_initiator_and_a_port_that_is_not_iscsi_are_named() {
    let dir = scratch("refused");
    let d: &Path = &dir;
    let name = "iqn.2026-12.rs.rsiscsi.test:not-allowed";
    let acl = format!("iscsi://127.0.0.1:{}/iqn.2024-01.lab.tgt:acl/1", fake_target(login_response(2, 2)));
    let http = format!(
        "iscsi://127.0.0.1:{}/iqn.2024-01.lab.tgt:ram1/1",
        fake_target(
            b"HTTP/1.0 400 Bad Request\r\nServer: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        )
    );
    let closing = format!("iscsi://127.0.0.1:{}/iqn.2024-01.lab.tgt:ram1/1", fake_target(Vec::new()));
    let closing_portal = closing.trim_start_matches("iscsi://").split('/').next().unwrap().to_string();
    let http_portal = http.trim_start_matches("iscsi://").split('/').next().unwrap().to_string();
    let refused = format!(
        "rsiscsi: error: login to iqn.2024-01.lab.tgt:acl failed: authorization failed: the target does not allow \
         initiator {name}; allow it on the target or log in as another with --initiator-name (status class 0x02, \
         detail 0x02)\n"
    );
    let not_iscsi = format!(
        "rsiscsi: error: {http_portal} did not answer the login as an iSCSI target does (is it the target's iSCSI \
         port?): malformed PDU from the target:"
    );
    let closed = format!(
        "rsiscsi: error: {closing_portal} closed the connection during the login (is it the target's iSCSI port?): "
    );
    let (refused, not_iscsi, closed) = ([refused.as_str()], [not_iscsi.as_str()], [closed.as_str()]);
    let cases = [
        case("initiator the target does not allow", &["--initiator-name", name, "capacity", &acl], &refused).exits(4),
        case("a port that does not speak iSCSI", &["capacity", &http], &not_iscsi).exits(5),
        case("a port that closes the connection unanswered", &["capacity", &closing], &closed).exits(6),
    ];
    for c in &cases {
        check(d, c);
    }
}
