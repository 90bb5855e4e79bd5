//! The real `rsiscsi` binary driving the real `rsiscsid` over a temporary
//! socket, against the lab's tgt target reserved for the service
//! (`iqn.2024-01.lab.tgt:svc` at 127.0.0.1:3260, LUN 1, 256 MiB,
//! MaxConnections 8): INQUIRY, READ CAPACITY, and one WRITE(10)/READ(10)
//! round trip in the LUN's last MiB (LBA 522240 on; rsiscsid's own tests
//! write at LBA 4096..10240).
//!
//! `rsiscsid` is another package's binary, so Cargo does not build it for
//! these tests: run `cargo build -p rsiscsid` first (or point `RSISCSID_BIN`
//! at it). The tests fail with that advice when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::daemon::Daemon;
use serde_json::Value;

const LUN: &str = "1";
/// 256 MiB in 512-byte blocks.
const SVC_BLOCKS: u64 = 256 * 1024 * 1024 / 512;
const PORTAL: &str = "127.0.0.1:3260";
/// First block of the last MiB of the svc LUN: this file's own region.
const WRITE_LBA: u32 = 522_240;

/// A 32-bit number as four hex bytes, `00 07 f8 00`.
fn hex_be(v: u32) -> String {
    v.to_be_bytes().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn target() -> String {
    std::env::var("RSISCSI_TGT_IQN_SVC").unwrap_or_else(|_| "iqn.2024-01.lab.tgt:svc".into())
}

/// The daemon of these tests, with what they ask of it.
struct Service(Daemon);

impl std::ops::Deref for Service {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}

impl Service {
    fn start(name: &str) -> Service {
        Service(Daemon::start("cli", name))
    }

    /// A daemon on `dir` as it is (see [`Daemon::start_in`]).
    fn start_in(dir: PathBuf) -> Service {
        Service(Daemon::start_in(dir))
    }

    /// The session of the svc target, from `session list --json`.
    fn svc_session(&self) -> Option<Value> {
        self.json(&["session", "list"])["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["target_name"] == target().as_str())
            .cloned()
    }
}

fn run_cli(socket: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::daemon::cli(socket, args, env)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn conn_ids(session: &Value) -> Vec<String> {
    session["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap().to_string())
        .collect()
}

/// A unique id in the model's `hex-hex` form.
fn is_id(s: &str) -> bool {
    s.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
    })
}

/// A new user's whole session: portal, discovery, a persistent MC/S login,
/// one more connection, SCSI pass-through, policy, a restart of the service
/// (the session comes back), removal of a connection, logout.
#[test]
fn whole_user_session() {
    let mut svc = Service::start("session");
    let iqn = target();

    // portal add: SendTargets runs at once.
    let out = svc.ok(&["portal", "add", PORTAL]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("portal 127.0.0.1:3260 added"));
    let found = lines.next().unwrap();
    assert!(found.ends_with(" target(s) discovered through it (`rsiscsi target list`)"), "{found}");
    let n: usize = found.split(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1, "{found}");
    let list = svc.ok(&["portal", "list"]);
    assert_eq!(
        list,
        "PORTAL          INITIATOR-PORT  SECURITY-FLAGS  AUTH  CHAP-USER\n\
         127.0.0.1:3260  any             -               none  -\n"
    );

    // target refresh / list: the svc target at its portal with TPGT 1.
    for cmd in ["refresh", "list"] {
        let out = svc.ok(&["target", cmd]);
        assert!(out.starts_with("TARGET "), "{out}");
        let row = out.lines().find(|l| l.starts_with(&format!("{iqn} "))).unwrap_or_else(|| panic!("{out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, [iqn.as_str(), "127.0.0.1:3260,1", "127.0.0.1:3260"], "{row}");
    }

    // target login --persistent --connections 2, with its own recovery times.
    let out = svc.ok(&[
        "target",
        "login",
        &iqn,
        "--persistent",
        "--connections",
        "2",
        "--hold-time",
        "45",
        "--link-down-time",
        "7",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let sid = lines[0].strip_prefix("session ").unwrap().to_string();
    let logged: Vec<String> = lines[1..].iter().map(|l| l.strip_prefix("connection ").unwrap().to_string()).collect();
    assert!(is_id(&sid) && logged.iter().all(|c| is_id(c)), "{out}");

    // session list: 2 connections, in text and in JSON.
    let text = svc.ok(&["session", "list"]);
    let head = format!("Session {sid} {iqn} (persistent, policy round-robin, ISID ");
    assert!(text.lines().any(|l| l.starts_with(&head) && l.ends_with(", 2 connection(s))")), "{text}");
    assert!(
        text.contains(
            "\n  Recovery: hold time 45 s, link-down time 7 s; 0 recovered, 0 connection(s) reinstated, \
             0 session(s) reinstated, 0 given up\n"
        ),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.contains(" full-feature ")).count(), 2, "{text}");
    assert!(text.contains("  Lun 1: disk, IET VIRTUAL-DISK 0001, 268435456 bytes (524288 blocks of 512)\n"), "{text}");
    let s = svc.svc_session().unwrap();
    assert_eq!(s["session_id"], sid.as_str());
    assert_eq!(conn_ids(&s), logged);
    assert_eq!((&s["max_request_hold_time_s"], &s["link_down_time_s"]), (&Value::from(45), &Value::from(7)));
    assert_eq!(s["recovery_counters"]["give_ups"], 0);

    // add-connection prints the new id alone; session list then shows 3.
    let added = svc.ok(&["session", "add-connection", &sid, "--portal", "[::1]:3260"]);
    let added = added.strip_suffix('\n').unwrap().to_string();
    assert!(is_id(&added) && !logged.contains(&added), "{added:?}");
    let s = svc.svc_session().unwrap();
    let ids = conn_ids(&s);
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&added));
    let text = svc.ok(&["session", "list"]);
    assert!(text.contains(", 3 connection(s))"), "{text}");
    // The third connection goes over IPv6 to the same target (tgt listens on both).
    let row =
        text.lines().find(|l| l.trim_start().starts_with(&format!("{added} "))).unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "2", "{row}");
    assert!(cells[2].starts_with("[::1]:"), "{row}");
    assert_eq!(&cells[3..6], ["[::1]:3260", "full-feature", "none/none"], "{row}");

    // INQUIRY (standard data, 96 bytes asked for): text with status and hex dump.
    let out = svc.ok(&["session", "scsi", &sid, LUN, "12 00 00 00 60 00", "--data-in", "96"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "status: GOOD (0x00)");
    let (got, residual) = lines[1].strip_prefix("data: ").unwrap().split_once(" byte(s), residual ").unwrap();
    let got: u32 = got.parse().unwrap();
    assert!((36..=96).contains(&got), "{out}");
    assert_eq!(residual.parse::<u32>().unwrap(), 96 - got);
    assert!(lines[2].starts_with("00000000  00 00 "), "{out}");
    assert!(lines[2].ends_with("IET     |"), "{out}");
    // The same as JSON: the API object, data in base64.
    let j = svc.json(&["session", "scsi", &sid, LUN, "12", "00", "00", "00", "60", "00", "--data-in", "96"]);
    assert_eq!(j["scsi_status"], 0);
    assert_eq!(j["sense"], "");
    let data = B64.decode(j["data"].as_str().unwrap()).unwrap();
    assert_eq!(data[0] & 0x1f, 0, "peripheral device type: disk");
    assert_eq!(&data[8..16], b"IET     ");
    assert_eq!(&data[16..32], b"VIRTUAL-DISK    ");

    // READ CAPACITY(10): last LBA and block size of the 256 MiB LUN.
    let j = svc.json(&["session", "scsi", &sid, LUN, "25 00 00 00 00 00 00 00 00 00", "--data-in", "8"]);
    assert_eq!(j["scsi_status"], 0);
    let data = B64.decode(j["data"].as_str().unwrap()).unwrap();
    assert_eq!(u32::from_be_bytes(data[0..4].try_into().unwrap()), u32::try_from(SVC_BLOCKS - 1).unwrap());
    assert_eq!(u32::from_be_bytes(data[4..8].try_into().unwrap()), 512);

    // WRITE(10) of a file's bytes (--data-out), READ(10) back: the same bytes.
    let block: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let file = svc.dir.join("block.bin");
    std::fs::write(&file, &block).unwrap();
    let lba = hex_be(WRITE_LBA);
    let out = svc.ok(&[
        "session",
        "scsi",
        &sid,
        LUN,
        &format!("2a 00 {lba} 00 00 08 00"),
        "--data-out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out, "status: GOOD (0x00)\ndata: 0 byte(s), residual 0\n");
    let j = svc.json(&["session", "scsi", &sid, LUN, &format!("28 00 {lba} 00 00 08 00"), "--data-in", "4096"]);
    assert_eq!(j["scsi_status"], 0);
    assert!(B64.decode(j["data"].as_str().unwrap()).unwrap() == block, "READ(10) returned other bytes than written");

    // An opcode tgt does not know: CHECK CONDITION with decoded sense, exit 1.
    let o = svc.rsiscsi(&["session", "scsi", &sid, LUN, "ff 00 00 00 00 00"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        out.starts_with("status: CHECK CONDITION (0x02)\nsense: ILLEGAL REQUEST (key 0x5), ASC 0x20 ASCQ 0x00: "),
        "{out}"
    );
    assert_eq!(stderr(&o), "rsiscsi: error: the target answered SCSI status CHECK CONDITION (0x02)\n");

    // Policy change, seen by the session and by the stored persistent login.
    assert_eq!(
        svc.ok(&["session", "policy", &sid, "least-queue-depth"]),
        format!("session {sid} now spreads commands with least-queue-depth\n")
    );
    assert_eq!(svc.svc_session().unwrap()["load_balance_policy"], "least-queue-depth");

    // remove-connection: the added one goes, the two others stay.
    assert_eq!(
        svc.ok(&["session", "remove-connection", &sid, &added]),
        format!("connection {added} logged out of session {sid}\n")
    );
    assert_eq!(conn_ids(&svc.svc_session().unwrap()), logged);

    // persistent list: the stored login, logged in, with the new policy.
    let out = svc.ok(&["persistent", "list"]);
    let row = out.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, [iqn.as_str(), PORTAL, "2", "least-queue-depth", "logged-in", sid.as_str(), "-"], "{out}");

    // Restart (SIGTERM logs out; the new service logs in again by itself).
    restart_then_logout(&mut svc, &iqn);
}

/// Second half of [`whole_user_session`]: the persistent login is back
/// after a restart, then logout and clean-up.
fn restart_then_logout(svc: &mut Service, iqn: &str) {
    svc.restart();
    let t0 = Instant::now();
    let s = loop {
        if let Some(s) = svc.svc_session().filter(|s| conn_ids(s).len() == 2) {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the persistent login was not back within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(s["persistent"], true);
    assert_eq!(s["load_balance_policy"], "least-queue-depth");
    // The stored login brought its recovery times back.
    assert_eq!((&s["max_request_hold_time_s"], &s["link_down_time_s"]), (&Value::from(45), &Value::from(7)));
    let sid = s["session_id"].as_str().unwrap().to_string();
    let p = svc.json(&["persistent", "list"]);
    assert_eq!(p["persistent_logins"][0]["state"], "logged-in");
    assert_eq!(p["persistent_logins"][0]["session_id"], sid.as_str());

    // logout; the persistent login stays until removed.
    assert_eq!(svc.ok(&["session", "logout", &sid]), format!("session {sid} logged out\n"));
    assert_eq!(svc.ok(&["session", "list"]), "no sessions (log in with `rsiscsi target login IQN`)\n");
    assert_eq!(svc.ok(&["persistent", "remove", iqn]), format!("persistent login of {iqn} at {PORTAL} removed\n"));
    assert_eq!(
        svc.ok(&["persistent", "list"]),
        "no persistent logins (`rsiscsi target login IQN --persistent` adds one)\n"
    );
    assert_eq!(svc.ok(&["portal", "remove", PORTAL]), "portal 127.0.0.1:3260 removed\n");
}

/// Without a service, every service command says where it looked and how
/// to fix it, with exit status 3; `RSISCSI_SOCKET` is the path looked at.
#[test]
fn no_service_message() {
    let path = std::env::temp_dir().join(format!("rsiscsi-cli-none-{}/rsiscsid.sock", std::process::id()));
    let want =
        format!("rsiscsi: error: no rsiscsid at {} (start it with `rsiscsid` or pass --socket)\n", path.display());
    for args in [&["session", "list"][..], &["portal", "add", PORTAL], &["target", "login", "iqn.x:y"]] {
        let o = run_cli(Some(&path), args, &[]);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        assert_eq!(stderr(&o), want, "{args:?}");
        assert!(o.stdout.is_empty());
    }
    let o = run_cli(None, &["persistent", "list"], &[("RSISCSI_SOCKET", path.to_str().unwrap())]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stderr(&o), want);
    // A socket file left behind by a killed service (nobody listening) is the same case.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let o = run_cli(Some(&path), &["session", "list"], &[]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stderr(&o), want);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// Wrong input: one clear line on stderr and a non-zero status; the
/// service's own refusals carry the ISDSC name and code.
#[test]
fn bad_input() {
    let svc = Service::start("bad");
    let check = |args: &[&str], code: i32, want: &str| {
        let o = svc.rsiscsi(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), format!("rsiscsi: error: {want}\n"), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    };
    // Unknown session (well-formed id) and a malformed one.
    check(
        &["session", "logout", "123456789abcdef-4000000000000001"],
        1,
        "no session 123456789abcdef-4000000000000001 (ISDSC_INVALID_SESSION_ID, 0xEFFF001C)",
    );
    let o = svc.rsiscsi(&["session", "policy", "not-an-id", "round-robin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).ends_with("(ISDSC_INVALID_SESSION_ID, 0xEFFF001C)\n"), "{}", stderr(&o));
    let o = svc.rsiscsi(&["session", "scsi", "123456789abcdef-4000000000000001", "1", "00 00 00 00 00 00"]);
    assert!(stderr(&o).ends_with("(ISDSC_INVALID_SESSION_ID, 0xEFFF001C)\n"), "{}", stderr(&o));
    // Malformed CDB hex, and one too long, refused before asking the service.
    check(
        &["session", "scsi", "123456789abcdef-4000000000000001", "1", "12 00 0g"],
        2,
        "CDB \"12 00 0g\" is not hexadecimal bytes (Invalid character 'g' at position 5); e.g. \"12 00 00 00 60 00\" (see rsiscsi --help)",
    );
    check(
        &["session", "scsi", "1-2", "1", &"00".repeat(17)],
        2,
        "a CDB of 17 byte(s): 1 to 16 are supported (see rsiscsi --help)",
    );
    // Unknown policy: the spellings are listed.
    check(
        &["session", "policy", "123456789abcdef-4000000000000001", "fastest"],
        2,
        "invalid value 'fastest' for '<POLICY>': unknown load balance policy \"fastest\"; expected one of: \
         failover-only, round-robin, round-robin-subset, least-queue-depth, weighted (see rsiscsi --help)",
    );
    let o = svc.rsiscsi(&["target", "login", "iqn.x:y", "--policy", "random"]);
    assert_eq!(o.status.code(), Some(2));
    // Recovery times outside 1..=3600 s.
    check(
        &["target", "login", "iqn.x:y", "--hold-time", "0"],
        2,
        "invalid value '0' for '--hold-time <SECONDS>': 0 is not in 1..=3600 (see rsiscsi --help)",
    );
    check(
        &["target", "login", "iqn.x:y", "--link-down-time", "3601"],
        2,
        "invalid value '3601' for '--link-down-time <SECONDS>': 3601 is not in 1..=3600 (see rsiscsi --help)",
    );
    // A target that was never discovered.
    let o = svc.rsiscsi(&["target", "login", "iqn.2024-01.lab.tgt:nosuch"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("(ISDSC_"), "{}", stderr(&o));
    // The service has one initiator name of its own.
    check(
        &["--initiator-name", "iqn.2020-01.example:host", "session", "list"],
        2,
        "the service logs in with its own initiator name; --initiator-name is for the one-shot commands (see rsiscsi --help)",
    );
    // Removing a persistent login that does not exist.
    check(
        &["persistent", "remove", "iqn.2024-01.lab.tgt:nosuch"],
        1,
        "no persistent login for iqn.2024-01.lab.tgt:nosuch (`rsiscsi persistent list` shows them)",
    );
    // --json: the service's error object on stdout as well, the line on stderr.
    let o = svc.rsiscsi(&["session", "logout", "123456789abcdef-4000000000000001", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["name"], "ISDSC_INVALID_SESSION_ID");
    assert_eq!(v["error"]["code"], 0xEFFF_001C_u32);
    assert_eq!(v["error"]["code_hex"], "0xEFFF001C");
    assert!(stderr(&o).ends_with("(ISDSC_INVALID_SESSION_ID, 0xEFFF001C)\n"));
}

/// A CHAP secret goes to the service and never comes back: not in any
/// output, `password_set` instead; a secret file others may read is refused.
#[test]
fn chap_secret_is_sent_never_shown() {
    let svc = Service::start("chap");
    let secret = "NeverShown-4711";
    // A portal nothing listens on, kept (--keep) although its SendTargets failed.
    let o = run_cli(
        Some(&svc.socket()),
        &[
            "portal",
            "add",
            "127.0.0.1:1",
            "--keep",
            "--chap-user",
            "someone",
            "--security-flags",
            "0x40",
            "--header-digest",
            "none",
        ],
        &[("RSISCSI_CHAP_SECRET", secret)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("the portal was kept (--keep)"), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(out, "portal 127.0.0.1:1 added\n");
    let list = svc.ok(&["portal", "list"]);
    assert_eq!(
        list,
        "PORTAL       INITIATOR-PORT  SECURITY-FLAGS  AUTH  CHAP-USER\n\
         127.0.0.1:1  any             0x40            chap  someone\n"
    );
    let j = svc.ok(&["portal", "list", "--json"]);
    let v: Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["portals"][0]["login_options"]["password_set"], true);
    assert_eq!(v["portals"][0]["security_flags"], 0x40);
    // A digest typed on the command line is sent even when it is `none`; one left at its default is not.
    assert_eq!(v["portals"][0]["login_options"]["header_digest"], "none");
    assert!(v["portals"][0]["login_options"].get("data_digest").is_none(), "{j}");
    for text in [&out, &list, &j] {
        assert!(!text.contains(secret));
    }
    // A group-readable secret file is refused before anything is sent.
    let f = svc.dir.join("secret");
    std::fs::write(&f, secret).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o =
        svc.rsiscsi(&["portal", "add", "127.0.0.1:2", "--chap-user", "u", "--chap-secret-file", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is accessible by others (mode 0640); make it private with chmod 600"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(secret));
    assert_eq!(svc.json(&["portal", "list"])["portals"].as_array().unwrap().len(), 1);
}

/// CHAP and digests given to `target login` reach the target through the
/// service: a wrong secret is the service's ISDSC_AUTHENTICATION_FAILURE, the
/// right one logs in with CRC32C on both digests. Read-only on tgt's `chap`
/// target (login, look, logout).
#[test]
fn chap_login_through_the_service() {
    let svc = Service::start("chaplogin");
    let iqn = common::var("RSISCSI_TGT_IQN_CHAP");
    let user = common::var("RSISCSI_CHAP_USER");
    let secret = common::var("RSISCSI_CHAP_SECRET");
    svc.ok(&["portal", "add", PORTAL]);
    let login = |secret: &str| {
        run_cli(
            Some(&svc.socket()),
            &[
                "target",
                "login",
                &iqn,
                "--chap-user",
                &user,
                "--header-digest",
                "crc32c",
                "--data-digest",
                "crc32c",
                "--policy",
                "failover-only",
            ],
            &[("RSISCSI_CHAP_SECRET", secret)],
        )
    };
    let o = login("WrongSecret-123");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).ends_with(" (ISDSC_AUTHENTICATION_FAILURE, 0xEFFF0009)\n"), "{}", stderr(&o));
    let o = login(&secret);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let sid = out.lines().next().unwrap().strip_prefix("session ").unwrap().to_string();
    let list = svc.ok(&["session", "list"]);
    assert!(list.starts_with(&format!("Session {sid} {iqn} (not persistent, policy failover-only, ")), "{list}");
    let row = list.lines().find(|l| l.contains(" full-feature ")).unwrap();
    assert!(row.contains("  crc32c/crc32c  "), "{list}");
    for text in [&out, &list, &svc.ok(&["session", "list", "--json"]), &svc.ok(&["persistent", "list", "--json"])] {
        assert!(!text.contains(&secret));
    }
    svc.ok(&["session", "logout", &sid]);
    assert_eq!(svc.ok(&["session", "list"]), "no sessions (log in with `rsiscsi target login IQN`)\n");
}

/// `rsiscsi initiator`: the service's identity and its own CHAP secret. A
/// secret Windows would refuse (not 12-16 bytes) is refused with the
/// service's ISDSC code; none is ever printed; a new name is checked first.
#[test]
fn initiator_identity_and_secret() {
    let svc = Service::start("initiator");
    let shown = svc.ok(&["initiator", "show"]);
    assert!(shown.starts_with("node name    iqn.") && shown.contains("CHAP secret  not set"), "{shown}");
    let set = svc.ok(&["initiator", "set", "--name", "iqn.2026-11.rs.rsiscsi:cli-test", "--alias", "rig 7"]);
    assert!(set.contains("node name    iqn.2026-11.rs.rsiscsi:cli-test\nalias        rig 7\n"), "{set}");
    let j = svc.json(&["initiator", "show"]);
    assert_eq!(j["node_name"], "iqn.2026-11.rs.rsiscsi:cli-test");
    // The host's system-wide name follows the service's.
    let file = std::fs::read_to_string(svc.dir.join("etc/initiatorname")).unwrap();
    assert!(file.contains("InitiatorName=iqn.2026-11.rs.rsiscsi:cli-test\n"), "{file}");

    let bad = svc.rsiscsi(&["initiator", "set", "--name", "iqn.x"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let none = svc.rsiscsi(&["initiator", "set"]);
    assert!(stderr(&none).contains("nothing to set"), "{}", stderr(&none));

    let short =
        run_cli(Some(&svc.socket()), &["initiator", "chap-secret"], &[("RSISCSI_INITIATOR_CHAP_SECRET", "abcde")]);
    assert_eq!(short.status.code(), Some(1), "{}", stderr(&short));
    assert!(stderr(&short).contains("0xEFFF"), "the service's ISDSC code is shown: {}", stderr(&short));
    let missing = svc.rsiscsi(&["initiator", "chap-secret"]);
    assert!(stderr(&missing).contains("RSISCSI_INITIATOR_CHAP_SECRET"), "{}", stderr(&missing));

    let secret = "initsecret1234";
    let file = svc.dir.join("initiator.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = svc.ok(&["initiator", "chap-secret", "--secret-file", file.to_str().unwrap()]);
    assert_eq!(out, "initiator CHAP secret set\n");
    let shown = svc.ok(&["initiator", "show"]);
    assert!(shown.contains("CHAP secret  set") && !shown.contains(secret), "{shown}");
    let j = svc.json(&["initiator", "show"]);
    assert_eq!(j["chap_secret_set"], true);
    assert!(!j.to_string().contains(secret));
}

/// The environment of a one-shot command on a "host" rooted at `dir`: the
/// service's socket and state there, the system-wide config in `dir/etc`,
/// the per-user config in `dir/xdg`.
fn host_env(dir: &Path) -> Vec<(String, String)> {
    let p = |sub: &str| dir.join(sub).display().to_string();
    vec![
        ("RSISCSI_SOCKET".into(), p("rsiscsid.sock")),
        ("RSISCSI_SYSTEM_CONFIG_DIR".into(), p("etc")),
        ("RSISCSI_STATE_DIR".into(), p("state")),
        ("XDG_CONFIG_HOME".into(), p("xdg")),
    ]
}

fn run_host(dir: &Path, args: &[&str]) -> Output {
    let env = host_env(dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_cli(None, args, &env)
}

/// The sessions (I_T nexuses) tgt holds on the svc target, by initiator
/// name, from `tgtadm --op show` (read-only).
fn tgt_svc_initiators() -> std::collections::BTreeMap<String, usize> {
    let port = std::env::var("RSISCSI_TGT_CONTROL_PORT").unwrap_or_else(|_| "3260".into());
    let out = Command::new("tgtadm")
        .args(["-C", &port, "--lld", "iscsi", "--op", "show", "--mode", "target"])
        .output()
        .expect("tgtadm runs");
    assert!(out.status.success(), "tgtadm: {}", String::from_utf8_lossy(&out.stderr));
    let header = format!(": {}", target());
    let mut in_svc = false;
    let mut seen = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("Target ") {
            in_svc = line.ends_with(&header);
        } else if let (true, Some(rest)) = (in_svc, line.trim_start().strip_prefix("Initiator: ")) {
            *seen.entry(rest.split_whitespace().next().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
    }
    seen
}

/// Runs a one-shot `rsiscsi bench` (3 s of reads) on the svc target from
/// the host at `dir`, watching tgt meanwhile: the most sessions seen at
/// once for each initiator name.
fn one_shot_on_svc(dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let url = format!("iscsi://{PORTAL}/{}/{LUN}", target());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsiscsi"));
    cmd.args(["bench", "--time", "3", "--warmup", "0", "--size", "1M", "--bs", "4k", "--iodepth", "1", &url])
        .env_remove("RSISCSI_CONFIG_DIR")
        .env_remove("RSISCSI_CHAP_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in host_env(dir) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut most = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "bench did not end");
        for (name, n) in tgt_svc_initiators() {
            let m = most.entry(name).or_insert(0);
            *m = (*m).max(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "bench: {}", String::from_utf8_lossy(&out.stderr));
    most
}

/// One initiator name per host: a fresh host's one-shot command creates the
/// system-wide name; the service started there takes it; with the service
/// up a one-shot command asks it (even when the system-wide file says
/// otherwise), with it down reads its state. tgt sees the same name for the
/// one-shot sessions and the service's.
#[test]
fn one_initiator_name_for_one_shot_commands_and_the_service() {
    let dir = std::env::temp_dir().join(format!("rsiscsi-cli-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("rsiscsid.sock");
    let no_service = format!("service      not running (no rsiscsid at {})\n", sock.display());

    // A fresh host, no service: the name is created in the system-wide file.
    let o = run_host(&dir, &["initiator", "show"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let file = dir.join("etc/initiatorname");
    let text = std::fs::read_to_string(&file).unwrap();
    let name = text.lines().find_map(|l| l.strip_prefix("InitiatorName=")).unwrap().to_string();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("node name    {name}\nsource       {} (system-wide, created now)\n{no_service}", file.display())
    );
    assert!(!dir.join("xdg/rsiscsi/initiatorname").exists(), "a per-user name was created too");
    let o = run_host(&dir, &["initiator", "show", "--json"]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["node_name"].as_str(), j["source"].as_str()), (Some(name.as_str()), Some("system")));
    assert_eq!(j["service_running"], false);
    assert_eq!(one_shot_on_svc(&dir).get(&name), Some(&1), "tgt did not see {name} for the one-shot command");

    // The service started on this host takes that name.
    let mut svc = Service::start_in(dir.clone());
    assert!(svc.ok(&["initiator", "show"]).starts_with(&format!("node name    {name}\n")));
    let login = svc.ok(&["target", "login", &target(), "--portal", PORTAL]);
    let sid = login.lines().next().unwrap().strip_prefix("session ").unwrap().to_string();
    assert_eq!(tgt_svc_initiators().get(&name), Some(&1), "tgt did not see {name} for the service's session");

    // With the service up, a one-shot command logs in under its name even
    // when the system-wide file says another.
    let other = format!("iqn.2024-01.lab.test:other-{}", std::process::id());
    std::fs::write(&file, format!("InitiatorName={other}\n")).unwrap();
    let seen = one_shot_on_svc(&dir);
    assert_eq!(seen.get(&name), Some(&2), "the service's session and the one-shot's under {name}: {seen:?}");
    assert!(!seen.contains_key(&other), "{seen:?}");
    svc.ok(&["session", "logout", &sid]);

    // The service down: its state file gives the name.
    svc.stop();
    let o = run_host(&dir, &["initiator", "show"]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!(
            "node name    {name}\nsource       {} (rsiscsid's state)\n{no_service}",
            dir.join("state/state.json").display()
        )
    );
    // A restarted service puts its name back in the system-wide file.
    svc.spawn();
    assert!(std::fs::read_to_string(&file).unwrap().contains(&format!("InitiatorName={name}\n")));
}

/// A system-wide file that cannot be created (here its directory is a
/// dangling symlink; for a user, /etc is not writable): the per-user file is
/// used, and `initiator show` says why; the next run keeps it.
#[test]
fn per_user_name_when_the_system_file_cannot_be_created() {
    let dir = std::env::temp_dir().join(format!("rsiscsi-cli-peruser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let etc = dir.join("etc");
    std::os::unix::fs::symlink(dir.join("nowhere"), &etc).unwrap();
    let env = [
        ("RSISCSI_SOCKET", dir.join("none.sock").display().to_string()),
        ("RSISCSI_SYSTEM_CONFIG_DIR", etc.display().to_string()),
        ("RSISCSI_STATE_DIR", dir.join("state").display().to_string()),
        ("XDG_CONFIG_HOME", dir.join("xdg").display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = run_cli(None, &["initiator", "show"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let user = dir.join("xdg/rsiscsi/initiatorname");
    let name = std::fs::read_to_string(&user)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("InitiatorName="))
        .unwrap()
        .to_string();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!(
            "node name    {name}\nsource       {} (per-user, because {}/initiatorname cannot be created: File exists (os error 17))\nservice      not running (no rsiscsid at {})\n",
            user.display(),
            etc.display(),
            dir.join("none.sock").display()
        )
    );
    let again = run_cli(None, &["initiator", "show", "--json"], &env);
    let j: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((j["node_name"].as_str(), j["source"].as_str()), (Some(name.as_str()), Some("per-user")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A failed `target login --persistent` stays stored, as on Windows (the
/// login is stored before it is tried), and the error says so, whether it
/// is retried, and the command that removes it; one refused before it was
/// stored says that. The secret is never printed.
#[test]
fn failed_persistent_login_says_it_is_stored_and_how_to_remove_it() {
    let svc = Service::start("persistfail");
    let iqn = common::var("RSISCSI_TGT_IQN_CHAP");
    let user = common::var("RSISCSI_CHAP_USER");
    let secret = common::var("RSISCSI_CHAP_SECRET");
    svc.ok(&["portal", "add", PORTAL]);
    let wrong = "WrongSecret-123";
    let o = run_cli(
        Some(&svc.socket()),
        &["target", "login", &iqn, "--persistent", "--chap-user", &user],
        &[("RSISCSI_CHAP_SECRET", wrong)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.starts_with(&format!("rsiscsi: error: login to {iqn} failed: authentication failed")), "{e}");
    assert!(
        e.ends_with(&format!(
            "; the persistent login stays stored, not retried until rsiscsid restarts (ISDSC_AUTHENTICATION_FAILURE, 0xEFFF0009); remove it with `rsiscsi persistent remove {iqn} --portal {PORTAL}`\n"
        )),
        "{e}"
    );
    assert!(!e.contains(wrong) && !e.contains(&secret));
    // Failed, and not retried: still so a few seconds later, with no session.
    std::thread::sleep(Duration::from_millis(2500));
    let l = svc.json(&["persistent", "list"]);
    assert_eq!(l["persistent_logins"][0]["state"], "failed", "{l}");
    assert!(l["persistent_logins"][0]["last_error"].as_str().unwrap().contains("authentication failed"), "{l}");
    assert_eq!(svc.json(&["session", "list"])["sessions"].as_array().unwrap().len(), 0);
    assert_eq!(
        svc.ok(&["persistent", "remove", &iqn, "--portal", PORTAL]),
        format!("persistent login of {iqn} at {PORTAL} removed\n")
    );

    // A portal nothing listens on: stored and retried.
    let nobody = "iqn.2024-01.lab.test:nobody";
    let o = svc.rsiscsi(&["target", "login", nobody, "--portal", "127.0.0.1:9", "--persistent"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).ends_with(&format!(
            "; the persistent login stays stored and is retried every 1 s, doubling to 30 s (ISDSC_CONNECTION_FAILED, 0xEFFF0003); remove it with `rsiscsi persistent remove {nobody} --portal 127.0.0.1:9`\n"
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(svc.json(&["persistent", "list"])["persistent_logins"][0]["state"], "retrying");
    svc.ok(&["persistent", "remove", nobody, "--portal", "127.0.0.1:9"]);

    // Refused before it was stored.
    let o = svc.rsiscsi(&["target", "login", "iqn.2024-01.lab.test:undiscovered", "--persistent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with("(ISDSC_NO_PORTAL_SPECIFIED, 0xEFFF003C); the persistent login was not stored\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        svc.ok(&["persistent", "list"]),
        "no persistent logins (`rsiscsi target login IQN --persistent` adds one)\n"
    );
}

/// `portal add` on a portal whose SendTargets fails: not added and exit 1
/// (Windows' AddTargetPortal); with --keep added, still exit 1, and said
/// so. A good portal is added with exit 0.
#[test]
fn portal_add_fails_when_send_targets_fails_unless_kept() {
    let svc = Service::start("portaladd");
    let dead = "127.0.0.1:9";
    let cause = "SendTargets on 127.0.0.1:9 failed: cannot connect to 127.0.0.1:9: Connection refused (os error 111)";
    let o = svc.rsiscsi(&["portal", "add", dead]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert_eq!(
        stderr(&o),
        format!(
            "rsiscsi: error: {cause}; the portal was not added (ISDSC_CONNECTION_FAILED, 0xEFFF0003); with --keep it is added anyway and tried again at each `rsiscsi target refresh`\n"
        )
    );
    assert_eq!(svc.ok(&["portal", "list"]), "no portals (add one with `rsiscsi portal add HOST[:PORT]`)\n");
    let o = svc.rsiscsi(&["portal", "add", dead, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["name"], "ISDSC_CONNECTION_FAILED");

    let o = svc.rsiscsi(&["portal", "add", dead, "--keep"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "portal 127.0.0.1:9 added\n");
    assert_eq!(
        stderr(&o),
        format!(
            "rsiscsi: error: {} (ISDSC_CONNECTION_FAILED, 0xEFFF0003); the portal was kept (--keep) and is tried again at each `rsiscsi target refresh`\n",
            cause
        )
    );
    assert!(svc.ok(&["portal", "list"]).contains("\n127.0.0.1:9  "));
    let o = svc.rsiscsi(&["target", "refresh"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("127.0.0.1:9: "), "{}", stderr(&o));
    svc.ok(&["portal", "remove", dead]);

    let out = svc.ok(&["portal", "add", PORTAL]);
    assert!(out.starts_with("portal 127.0.0.1:3260 added\n") && out.contains(" target(s) discovered"), "{out}");
    assert_eq!(svc.json(&["portal", "list"])["portals"].as_array().unwrap().len(), 1);
}

/// The session of `iqn`, from `session list --json`.
fn session_of(svc: &Service, iqn: &str) -> Option<Value> {
    svc.json(&["session", "list"])["sessions"].as_array()?.iter().find(|s| s["target_name"] == iqn).cloned()
}

/// `qemu-io -f raw -c CMD...` on the NBD socket; fails the test if qemu-io
/// cannot be run, fails or reports a pattern mismatch.
fn qemu_io(socket: &Path, cmds: &[&str]) {
    let mut args = vec!["-f".to_string(), "raw".to_string()];
    for c in cmds {
        args.push("-c".into());
        args.push((*c).into());
    }
    args.push(format!("nbd+unix:///?socket={}", socket.display()));
    let out = Command::new("qemu-io").args(&args).stdin(Stdio::null()).output().expect("qemu-io (qemu-utils)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !said.contains("failed"), "qemu-io {args:?}: {said}");
}

/// `session export` / `unexport` (issue 20): the service serves a LUN of
/// its session over NBD on a private Unix socket, shows it in `session
/// list`, refuses a second export of the LUN, brings it back with the
/// persistent login after a restart, and `unexport` ends it for good.
/// Uses the lab's tgt target "nbd" at 400 MiB on (the NBD suite's own
/// regions are below; the binaries run one after another).
#[test]
fn nbd_export_through_the_service_comes_back_after_a_restart() {
    let mut svc = Service::start("export");
    let iqn = common::var("RSISCSI_TGT_IQN_NBD");
    svc.ok(&["portal", "add", PORTAL]);
    let out = svc.ok(&["target", "login", &iqn, "--persistent"]);
    let sid = out.lines().next().unwrap().strip_prefix("session ").unwrap().to_string();
    let sock = svc.dir.join("lun1.sock");
    let out = svc.ok(&["session", "export", &sid, "--lun", LUN, "--nbd-socket", sock.to_str().unwrap()]);
    assert_eq!(
        out,
        format!("LUN 1 of session {sid} served at nbd+unix:///?socket={} (export {iqn}/1)\n", sock.display())
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    qemu_io(&sock, &["write -P 0x3c 400M 1M", "read -P 0x3c 400M 1M"]);
    let text = svc.ok(&["session", "list"]);
    assert!(
        text.contains(&format!("  Lun 1 served over NBD at nbd+unix:///?socket={} (export {iqn}/1", sock.display())),
        "{text}"
    );
    let s = session_of(&svc, &iqn).unwrap();
    assert_eq!(s["exports"][0]["lun"], 1);
    assert_eq!(s["exports"][0]["read_only"], false);
    // The LUN is served once; a LUN that is not a disk (tgt's LUN 0) is refused.
    let again = svc.rsiscsi(&["session", "export", &sid, "--lun", LUN, "--nbd-socket", "/tmp/other.sock"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already exported"), "{}", stderr(&again));
    let lun0 = svc.dir.join("lun0.sock");
    let bad = svc.rsiscsi(&["session", "export", &sid, "--lun", "0", "--nbd-socket", lun0.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not a disk"), "{}", stderr(&bad));
    assert!(!lun0.exists());
    let p = svc.json(&["persistent", "list"]);
    assert_eq!(p["persistent_logins"][0]["exports"][0]["lun"], 1, "{p}");

    // After a restart the persistent login brings the export back.
    svc.restart();
    let t0 = Instant::now();
    let sid = loop {
        if let Some(s) = session_of(&svc, &iqn).filter(|s| s["exports"].as_array().is_some_and(|e| !e.is_empty())) {
            break s["session_id"].as_str().unwrap().to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the export was not back within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    qemu_io(&sock, &["read -P 0x3c 400M 1M"]);

    // unexport: the socket goes, and stays gone after the next restart.
    assert_eq!(
        svc.ok(&["session", "unexport", &sid, "--lun", LUN]),
        format!("LUN 1 of session {sid} no longer served over NBD\n")
    );
    assert!(!sock.exists());
    let gone = svc.rsiscsi(&["session", "unexport", &sid, "--lun", LUN]);
    assert!(!gone.status.success() && stderr(&gone).contains("not exported"), "{}", stderr(&gone));
    svc.restart();
    let t0 = Instant::now();
    while session_of(&svc, &iqn).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the persistent login was not back within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!sock.exists(), "an unexported LUN came back");
    let sid = session_of(&svc, &iqn).unwrap()["session_id"].as_str().unwrap().to_string();
    svc.ok(&["session", "logout", &sid]);
    svc.ok(&["persistent", "remove", &iqn]);
    svc.ok(&["portal", "remove", PORTAL]);
    svc.stop();
}
