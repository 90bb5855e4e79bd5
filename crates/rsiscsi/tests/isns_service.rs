//! `rsiscsi isns add|remove|list` through a real `rsiscsid` against the iSNS
//! lab (open-isns `isnsd` on 127.0.0.1:3205, `scripts/isns-lab.sh up`; the
//! file named by `RSISCSI_ISNS_ENV` lists what it registered): the targets
//! the server shows the service's node name join `target list`, targets
//! registered later with `isnsadm` appear and leave by State Change
//! Notification (no refresh run), the server is kept across a restart and
//! deregistered from on remove and on shutdown, and a persistent login of a
//! target that registers is tried at once instead of after its back-off.
//!
//! Targets this file registers sit in a discovery domain of their own with
//! the test's node name, so that the lab's default domain (which other tests
//! check exactly) never shows them. Run `cargo build -p rsiscsid` first (or
//! set `RSISCSID_BIN`); the tests fail, never skip, without the lab.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use serde_json::Value;

/// The iSNS lab's settings, in order.
fn isns_lab() -> BTreeMap<String, String> {
    common::isns_lab().into_iter().collect()
}

/// `TARGET PORTAL,TPGT` pairs of a lab setting, as (target, `PORTAL,TPGT`).
fn pairs_of(pairs: &str) -> BTreeSet<(String, String)> {
    let words: Vec<&str> = pairs.split_whitespace().collect();
    words.chunks(2).map(|p| (p[0].to_string(), p[1].to_string())).collect()
}

/// Runs isnsadm as the lab's administrator; it must succeed.
fn isnsadm(lab: &BTreeMap<String, String>, args: &[&str]) -> String {
    let out = Command::new("isnsadm")
        .arg("-c")
        .arg(&lab["ISNS_ADM_CONF"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("isnsadm runs (is open-isns-utils installed?)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "isnsadm {args:?} failed: {text}");
    text
}

/// Whether isnsd has a storage node of that name.
fn registered(lab: &BTreeMap<String, String>, name: &str) -> bool {
    isnsadm(lab, &["--query", &format!("iscsi-name={name}")]).contains(&format!("\"{name}\""))
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100_000)
        .unwrap_or(0);
    format!("{what}-{}-{nanos}", std::process::id())
}

/// What a test registered in isnsd, removed again on drop (also when the
/// test fails): a discovery domain of its own and the entities it made.
struct Registrations {
    lab: BTreeMap<String, String>,
    dd_id: Option<String>,
    entities: Vec<String>,
}

impl Registrations {
    /// A discovery domain holding exactly `members` (node names).
    fn domain(lab: &BTreeMap<String, String>, members: &[&str]) -> Self {
        let mut args = vec!["--dd-register".to_string(), format!("dd-name={}", unique("rsiscsid-test"))];
        args.extend(members.iter().map(|m| format!("dd-member-name={m}")));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = isnsadm(lab, &argv);
        let dd_id = out
            .lines()
            .find_map(|l| l.split_once("DD ID = ").map(|(_, id)| id.trim().to_string()))
            .unwrap_or_else(|| panic!("no DD ID in {out}"));
        Self { lab: lab.clone(), dd_id: Some(dd_id), entities: Vec::new() }
    }

    /// Registers `target` behind `portal` with portal group tag `tpgt` in a
    /// new entity; returns the entity's name.
    fn target(&mut self, target: &str, portal: &str, tpgt: u16) -> String {
        let entity = unique("rsiscsid-test-entity");
        isnsadm(
            &self.lab,
            &[
                "--register",
                &format!("entity={entity}"),
                &format!("target={target}"),
                &format!("portal={portal}"),
                &format!("pg,pgt={tpgt}"),
            ],
        );
        self.entities.push(entity.clone());
        entity
    }

    fn deregister(&mut self, entity: &str) {
        isnsadm(&self.lab, &["--deregister", &format!("entity-id={entity}")]);
        self.entities.retain(|e| e != entity);
    }
}

impl Drop for Registrations {
    fn drop(&mut self) {
        let adm = |args: &[&str]| {
            let _ = Command::new("isnsadm").arg("-c").arg(&self.lab["ISNS_ADM_CONF"]).args(args).output();
        };
        for e in &self.entities {
            adm(&["--deregister", &format!("entity-id={e}")]);
        }
        if let Some(id) = &self.dd_id {
            adm(&["--dd-deregister", id]);
        }
    }
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
    /// A daemon whose node name is `node_name`.
    fn start(name: &str, node_name: &str) -> Service {
        let s = Service(Daemon::start("isns-svc", name));
        s.ok(&["initiator", "set", "--name", node_name]);
        s
    }

    /// The targets of `target list --json` that `server` is a source of:
    /// name → sorted `HOST:PORT,TPGT` portals.
    fn isns_targets(&self, server: &str) -> BTreeMap<String, Vec<String>> {
        let (host, port) = server.rsplit_once(':').unwrap();
        let port: u64 = port.parse().unwrap();
        self.json(&["target", "list"])["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["discovered_from"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["symbolic_name"] == "iSNS" && d["address"] == host && d["port"].as_u64() == Some(port))
            })
            .map(|t| {
                let mut portals: Vec<String> = t["portals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| format!("{}:{},{}", p["address"].as_str().unwrap(), p["port"], p["tpgt"]))
                    .collect();
                portals.sort();
                (t["name"].as_str().unwrap().to_string(), portals)
            })
            .collect()
    }

    /// Waits (bounded) until `check` holds for the iSNS targets of `server`;
    /// returns how long that took.
    fn until(
        &self,
        server: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&BTreeMap<String, Vec<String>>) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            let now = self.isns_targets(server);
            if check(&now) {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < within, "{what}: not within {within:?}; the targets from {server}: {now:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn node_name(what: &str) -> String {
    format!("iqn.2026-12.rs.rsiscsi.test:{}", unique(what))
}

/// `isns add` lists exactly what the lab's default domain shows, in the
/// same target list as SendTargets targets; `isns list` in text and JSON;
/// a second add of the same server is refused; the server is kept across a
/// restart; a new node name is registered instead of the old; `isns remove`
/// deregisters and drops the targets; SIGTERM deregisters too.
#[test]
fn isns_add_list_restart_remove() {
    let lab = isns_lab();
    let server = lab["ISNS_SERVER"].clone();
    let me = node_name("isns-svc");
    let mut svc = Service::start("add", &me);
    assert_eq!(svc.ok(&["isns", "list"]), "no iSNS servers (add one with `rsiscsi isns add HOST[:PORT]`)\n");

    // Port 3205 when left out.
    let visible = pairs_of(&lab["ISNS_VISIBLE"]);
    let names: BTreeSet<&str> = visible.iter().map(|(t, _)| t.as_str()).collect();
    let out = svc.ok(&["isns", "add", "127.0.0.1"]);
    assert_eq!(
        out,
        format!(
            "iSNS server {server} added\n{} target(s) listed for this initiator (`rsiscsi target list`); changes follow by notification\n",
            names.len()
        )
    );
    assert!(registered(&lab, &me), "{me} is not registered with isnsd");
    let got = svc.isns_targets(&server);
    let flat: BTreeSet<(String, String)> =
        got.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), p.clone()))).collect();
    assert_eq!(flat, visible);
    let hidden = pairs_of(&lab["ISNS_HIDDEN"]);
    assert!(hidden.iter().all(|(t, _)| !got.contains_key(t)), "{got:?}");
    // The text list marks the source as an iSNS server.
    let text = svc.ok(&["target", "list"]);
    let (disk1, portal1) = visible.iter().find(|(t, _)| t.ends_with(":disk1")).unwrap();
    let row = text.lines().find(|l| l.starts_with(&format!("{disk1} "))).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [disk1.as_str(), portal1.as_str(), &format!("isns:{server}")]
    );

    // isns list: text and JSON.
    let j = svc.json(&["isns", "list"]);
    let s = &j["isns_servers"][0];
    assert_eq!((s["address"].as_str(), s["port"].as_u64()), (Some("127.0.0.1"), Some(3205)));
    assert_eq!(s["state"], "registered", "{j}");
    assert_eq!(s["targets"].as_u64(), Some(names.len() as u64));
    let scn = s["scn_portal"].as_str().unwrap().to_string();
    assert!(scn.starts_with("127.0.0.1:"), "{scn}");
    assert!(s.get("last_error").is_none(), "{j}");
    assert_eq!(
        svc.ok(&["isns", "list"]),
        format!(
            "ISNS-SERVER     STATE       TARGETS  SCN-PORTAL{}  LAST-ERROR\n{server}  registered  {}        {scn}  -\n",
            " ".repeat(scn.len() - "SCN-PORTAL".len()),
            names.len()
        )
    );

    // The same server again: refused, nothing changes.
    let o = svc.rsiscsi(&["isns", "add", &server]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!("rsiscsi: error: iSNS server {server} is already in the list (ERROR_ALREADY_EXISTS, 0x000000B7)\n")
    );
    assert_eq!(svc.json(&["isns", "list"])["isns_servers"].as_array().unwrap().len(), 1);

    // Kept across a restart: registered again, the same targets.
    svc.restart();
    let t0 = Instant::now();
    while svc.json(&["isns", "list"])["isns_servers"][0]["state"] != "registered" {
        assert!(t0.elapsed() < Duration::from_secs(10), "not registered again within 10 s of the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(registered(&lab, &me));
    assert_eq!(svc.isns_targets(&server), got);

    // A new node name: registered again under it, the old one deregistered.
    let old = me;
    let me = node_name("isns-svc-renamed");
    svc.ok(&["initiator", "set", "--name", &me]);
    let t0 = Instant::now();
    while !registered(&lab, &me) || registered(&lab, &old) {
        assert!(t0.elapsed() < Duration::from_secs(10), "not registered as {me} (instead of {old}) within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    svc.until(&server, Duration::from_secs(5), "the targets under the new name", |t| t == &got);

    // Remove: deregistered, its targets gone, the server no longer listed.
    assert_eq!(svc.ok(&["isns", "remove", &server]), format!("iSNS server {server} removed\n"));
    assert!(!registered(&lab, &me), "{me} is still registered after isns remove");
    assert_eq!(svc.json(&["target", "list"])["targets"], Value::Array(Vec::new()));
    assert_eq!(svc.ok(&["isns", "list"]), "no iSNS servers (add one with `rsiscsi isns add HOST[:PORT]`)\n");
    let o = svc.rsiscsi(&["isns", "remove", &server, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["name"], "ISDSC_ISNS_SERVER_NOT_FOUND", "{v}");

    // SIGTERM deregisters.
    svc.ok(&["isns", "add", &server]);
    assert!(registered(&lab, &me));
    svc.stop();
    assert!(!registered(&lab, &me), "{me} is still registered after the service stopped");
}

/// A server nothing answers on: `isns add` fails with exit 1 and stores
/// nothing (as `portal add`); with --keep it is stored, still exit 1, and
/// `isns list` shows it unreachable with the reason.
#[test]
fn isns_add_of_an_unreachable_server_fails_unless_kept() {
    let svc = Service::start("unreachable", &node_name("isns-down"));
    let dead = "127.0.0.1:3999";
    let cause = "iSNS server 127.0.0.1:3999 refused the connection (is isnsd running?)";
    let o = svc.rsiscsi(&["isns", "add", dead]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert_eq!(
        stderr(&o),
        format!(
            "rsiscsi: error: {cause}; the iSNS server was not added (ISDSC_ISNS_SERVER_NOT_FOUND, 0xEFFF003A); with --keep it is added anyway and the service keeps trying\n"
        )
    );
    assert_eq!(svc.ok(&["isns", "list"]), "no iSNS servers (add one with `rsiscsi isns add HOST[:PORT]`)\n");
    let o = svc.rsiscsi(&["isns", "add", dead, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["name"], "ISDSC_ISNS_SERVER_NOT_FOUND");

    let o = svc.rsiscsi(&["isns", "add", dead, "--keep"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("iSNS server {dead} added\n"));
    assert_eq!(
        stderr(&o),
        format!(
            "rsiscsi: error: {cause} (ISDSC_ISNS_SERVER_NOT_FOUND, 0xEFFF003A); the iSNS server {dead} was kept (--keep) and the service keeps trying (`rsiscsi isns list` shows how it fares)\n"
        )
    );
    let j = svc.json(&["isns", "list"]);
    let s = &j["isns_servers"][0];
    assert_eq!(s["state"], "unreachable", "{j}");
    assert_eq!(s["last_error"], cause, "{j}");
    assert_eq!(s["targets"], 0);
    let text = svc.ok(&["isns", "list"]);
    assert!(
        text.lines().nth(1).unwrap().starts_with(&format!("{dead}  unreachable  0        -           {cause}")),
        "{text}"
    );
    let t0 = Instant::now();
    assert_eq!(svc.ok(&["isns", "remove", dead]), format!("iSNS server {dead} removed\n"));
    assert!(t0.elapsed() < Duration::from_secs(3), "removing an unreachable server took {:?}", t0.elapsed());
}

/// A target registered with isnsadm while the service follows the server
/// appears in `target list` by State Change Notification (no refresh), a
/// new portal of it shows up, and it leaves when it deregisters.
#[test]
fn targets_follow_state_change_notifications() {
    let lab = isns_lab();
    let server = lab["ISNS_SERVER"].clone();
    let me = node_name("isns-scn");
    let late = format!("iqn.2026-12.lab.isns:{}", unique("late"));
    let mut reg = Registrations::domain(&lab, &[&me, &late]);
    let svc = Service::start("scn", &me);
    let out = svc.ok(&["isns", "add", &server]);
    assert!(out.contains("\n0 target(s) listed"), "our domain has no registered target yet: {out}");

    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let portal = format!("127.0.0.1:{port}");
    let entity = reg.target(&late, &portal, 3);
    let took = svc.until(&server, Duration::from_secs(5), "the registered target", |t| {
        t.get(&late) == Some(&vec![format!("{portal},3")])
    });
    eprintln!("target appeared {took:?} after its registration");
    assert_eq!(svc.json(&["isns", "list"])["isns_servers"][0]["targets"], 1);

    // A second portal group: the target's portals follow.
    let portal2 = format!("127.0.0.1:{}", port + 1);
    isnsadm(
        &lab,
        &[
            "--register",
            &format!("entity={entity}"),
            &format!("target={late}"),
            &format!("portal={portal2}"),
            "pg,pgt=4",
        ],
    );
    svc.until(&server, Duration::from_secs(5), "the second portal", |t| {
        t.get(&late) == Some(&vec![format!("{portal},3"), format!("{portal2},4")])
    });

    reg.deregister(&entity);
    let took = svc.until(&server, Duration::from_secs(5), "the deregistered target gone", |t| !t.contains_key(&late));
    eprintln!("target left {took:?} after its deregistration");
    assert_eq!(svc.json(&["target", "list"])["targets"], Value::Array(Vec::new()));
}

/// A TCP relay from a port of its own to `to`, until dropped: the portal of
/// a target that "comes up" when the test says so.
struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(listener: TcpListener, to: &'static str) -> Relay {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if let Ok(upstream) = TcpStream::connect(to) {
                            pipe(client, upstream);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => return,
                }
            }
        });
        Relay { stop, thread: Some(thread) }
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b2, &mut a2);
        let _ = a2.shutdown(std::net::Shutdown::Both);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A persistent login whose portal is down waits out a growing back-off;
/// when its target registers with the iSNS server (here: the lab's tgt svc
/// target behind a relay that starts listening at that moment), the SCN
/// makes the service try it at once, long before the back-off would end.
#[test]
fn persistent_login_of_a_target_that_registers_is_tried_at_once() {
    let lab = isns_lab();
    let server = lab["ISNS_SERVER"].clone();
    let iqn = common::var("RSISCSI_TGT_IQN_SVC");
    let me = node_name("isns-login");
    let mut reg = Registrations::domain(&lab, &[&me, &iqn]);
    let svc = Service::start("login", &me);
    svc.ok(&["isns", "add", &server]);

    // A port nothing listens on yet.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let portal = listener.local_addr().unwrap().to_string();
    drop(listener);
    let o = svc.rsiscsi(&["target", "login", &iqn, "--portal", &portal, "--persistent"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the persistent login stays stored and is retried every 1 s, doubling to 30 s"),
        "{}",
        stderr(&o)
    );
    let stored = Instant::now();
    // Attempts at about 1, 3, 7 and 15 s; the next one would be at 31 s.
    std::thread::sleep(Duration::from_secs(17));
    let l = svc.json(&["persistent", "list"]);
    assert_eq!(l["persistent_logins"][0]["state"], "retrying", "{l}");

    let listener = TcpListener::bind(&portal).unwrap();
    let _relay = Relay::start(listener, "127.0.0.1:3260");
    let up = Instant::now();
    let entity = reg.target(&iqn, &portal, 1);
    let sid = loop {
        let s = svc.json(&["session", "list"])["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["target_name"] == iqn.as_str())
            .map(|s| s["session_id"].as_str().unwrap().to_string());
        if let Some(s) = s {
            break s;
        }
        assert!(
            up.elapsed() < Duration::from_secs(8),
            "no session within 8 s of the target's registration ({:?} after the login was stored)",
            stored.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("logged in {:?} after the target registered", up.elapsed());
    assert!(
        stored.elapsed() < Duration::from_secs(30),
        "the back-off ran out before the login: {:?}",
        stored.elapsed()
    );
    assert!(svc.isns_targets(&server).contains_key(&iqn));
    let l = svc.json(&["persistent", "list"]);
    assert_eq!(l["persistent_logins"][0]["state"], "logged-in", "{l}");

    assert_eq!(svc.ok(&["session", "logout", &sid]), format!("session {sid} logged out\n"));
    svc.ok(&["persistent", "remove", &iqn, "--portal", &portal]);
    reg.deregister(&entity);
}

/// An isnsd of this test alone on a free port, with a short Registration
/// Period; killed on drop.
struct PrivateIsnsd {
    dir: PathBuf,
    child: Child,
    lab: BTreeMap<String, String>,
}

impl PrivateIsnsd {
    fn start(port: u16, period: &str) -> PrivateIsnsd {
        let dir = std::env::temp_dir().join(format!("rsiscsi-isns-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = format!("127.0.0.1:{port}");
        let conf = dir.join("isnsd.conf");
        std::fs::write(
            &conf,
            format!(
                "SourceName = iqn.2026-12.rs.rsiscsi:isnsd-private\nBindAddress = {server}\n\
                 ControlSocket = {d}/isnsctl\nPIDFile = {d}/isnsd.pid\nRegistrationPeriod = {period}\n\
                 DefaultDiscoveryDomain = 1\nSLPRegister = 0\nSecurity = 0\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let adm = dir.join("isnsadm.conf");
        std::fs::write(
            &adm,
            format!("SourceName = iqn.2026-12.rs.rsiscsi:isns-admin-private\nServerAddress = {server}\nSecurity = 0\n"),
        )
        .unwrap();
        let child = Command::new("isnsd")
            .args(["-f", "-4", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("isnsd.log")).unwrap())
            .spawn()
            .expect("isnsd runs (is open-isns-server installed?)");
        let t0 = Instant::now();
        while TcpStream::connect(&server).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "the private isnsd does not listen on {server}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut lab = BTreeMap::new();
        lab.insert("ISNS_ADM_CONF".to_string(), adm.display().to_string());
        PrivateIsnsd { dir, child, lab }
    }
}

impl Drop for PrivateIsnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A server kept with --keep while nothing listens is registered with as
/// soon as it comes up (back-off, no command run); the service refreshes
/// its registration before the server's 6 s Registration Period ends (it
/// is still registered long after), while a target that nobody refreshes
/// expires and leaves the target list (by SCN, or at the latest when the
/// service refreshes and checks the list).
#[test]
fn kept_server_is_registered_when_it_comes_up_and_the_registration_is_refreshed() {
    let _ = isns_lab(); // the lab installed isnsd and isnsadm
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("127.0.0.1:{port}");
    let me = node_name("isns-keep");
    let svc = Service::start("keep", &me);
    let o = svc.rsiscsi(&["isns", "add", &server, "--keep"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(svc.json(&["isns", "list"])["isns_servers"][0]["state"], "unreachable");

    let isnsd = PrivateIsnsd::start(port, "6s");
    let up = Instant::now();
    let state = loop {
        let j = svc.json(&["isns", "list"]);
        if j["isns_servers"][0]["state"] == "registered" {
            break j;
        }
        assert!(up.elapsed() < Duration::from_secs(10), "not registered within 10 s of the server coming up: {j}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("registered {:?} after the server came up", up.elapsed());
    assert_eq!(state["isns_servers"][0]["registration_period_s"], 6, "{state}");
    assert!(state["isns_servers"][0].get("last_error").is_none(), "{state}");
    assert!(registered(&isnsd.lab, &me));

    // A target registered once by isnsadm (never refreshed) comes by SCN...
    let t = format!("iqn.2026-12.lab.isns:{}", unique("expiring"));
    isnsadm(
        &isnsd.lab,
        &["--register", "entity=expiring", &format!("target={t}"), "portal=127.0.0.1:3999", "pg,pgt=1"],
    );
    svc.until(&server, Duration::from_secs(5), "the registered target", |x| x.contains_key(&t));
    // ...and goes when the server expires it; we are refreshed and stay.
    svc.until(&server, Duration::from_secs(15), "the expired target gone", |x| !x.contains_key(&t));
    std::thread::sleep(Duration::from_secs(7));
    assert!(registered(&isnsd.lab, &me), "{me} expired: the service did not refresh its registration");
    assert_eq!(svc.json(&["isns", "list"])["isns_servers"][0]["state"], "registered");

    svc.ok(&["isns", "remove", &server]);
    assert!(!registered(&isnsd.lab, &me), "{me} is still registered after isns remove");
}
