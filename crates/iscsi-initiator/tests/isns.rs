//! iSNS discovery (RFC 4171) against the open-isns server of
//! `scripts/isns-lab.sh`, and against a hostile test server.
//!
//! The lab tests read the file named by `RSISCSI_ISNS_ENV` (written by
//! `scripts/isns-lab.sh up`) and fail, never skip, when it is unset or the
//! server does not answer.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iscsi_initiator::isns::{self, IsnsClient, IsnsError, ScnKind};
use iscsi_proto::isns::{Error as ProtoError, Flags, Header, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of the iSNS lab.
struct Lab {
    server: String,
    /// `(target, HOST:PORT,TPGT)` seen by an initiator in the default domain.
    visible: BTreeSet<(String, String)>,
    tgt_own: String,
    hidden: (String, String),
    private_initiator: String,
    adm_conf: String,
}

fn lab() -> Lab {
    let path = std::env::var("RSISCSI_ISNS_ENV").unwrap_or_else(|_| {
        panic!(
            "RSISCSI_ISNS_ENV is not set: run `scripts/isns-lab.sh up` (as root) and \
             `export RSISCSI_ISNS_ENV=/tmp/rsiscsi-isns/isns.env`"
        )
    });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read RSISCSI_ISNS_ENV={path}: {e} (is scripts/isns-lab.sh up?)"));
    let get = |key: &str| -> String {
        text.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("{path} has no {key}"))
    };
    let pairs = |s: String| -> Vec<(String, String)> {
        let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        words.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect()
    };
    Lab {
        server: get("ISNS_SERVER"),
        visible: pairs(get("ISNS_VISIBLE")).into_iter().collect(),
        tgt_own: get("ISNS_TGT_OWN"),
        hidden: pairs(get("ISNS_HIDDEN")).remove(0),
        private_initiator: get("ISNS_PRIVATE_INITIATOR"),
        adm_conf: get("ISNS_ADM_CONF"),
    }
}

fn flat(targets: &[isns::IsnsTarget]) -> BTreeSet<(String, String)> {
    targets.iter().flat_map(|t| t.portals.iter().map(|p| (t.name.clone(), p.to_string()))).collect()
}

/// Runs isnsadm as the lab's administrator.
fn isnsadm(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("isnsadm")
        .arg("-c")
        .arg(&lab.adm_conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("isnsadm runs (is open-isns-utils installed?)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "isnsadm {args:?} failed: {text}");
    text
}

fn unique(what: &str) -> String {
    format!("{what}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() % 100_000).unwrap_or(0)
}

#[tokio::test]
async fn discovery_lists_exactly_the_registered_targets() {
    let lab = lab();
    let me = "iqn.2026-12.rs.rsiscsi:isns-test-list";
    let targets = isns::discover(&lab.server, me, TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(flat(&targets), lab.visible, "{targets:#?}");
    // tgt registered its own target through its iSNS client.
    assert!(targets.iter().any(|t| t.name == lab.tgt_own));
    // isnsadm registered disk1 with an alias.
    let disk1 = targets.iter().find(|t| t.name.ends_with(":disk1")).unwrap();
    assert_eq!(disk1.alias.as_deref(), Some("disk1"));
    // Discovery deregistered us again: a second round sees the same and
    // finds no leftover registration to reuse.
    let again = isns::discover(&lab.server, me, TIMEOUT).await.unwrap();
    assert_eq!(flat(&again), lab.visible);
    let nodes = isnsadm(&lab, &["--list", "nodes"]);
    assert!(!nodes.contains(me), "{me} still registered after discovery:\n{nodes}");
}

#[tokio::test]
async fn discovery_domain_hides_a_target() {
    let lab = lab();
    let plain = isns::discover(&lab.server, "iqn.2026-12.rs.rsiscsi:isns-test-dd", TIMEOUT).await.unwrap();
    assert!(
        !plain.iter().any(|t| t.name == lab.hidden.0),
        "{} is in a discovery domain without us: {plain:#?}",
        lab.hidden.0
    );
    // The one initiator in its discovery domain sees it, and only it.
    let private = isns::discover(&lab.server, &lab.private_initiator, TIMEOUT).await.unwrap();
    assert_eq!(flat(&private), BTreeSet::from([lab.hidden.clone()]));
}

#[tokio::test]
async fn long_lived_client_queries_and_deregisters() {
    let lab = lab();
    let me = "iqn.2026-12.rs.rsiscsi:isns-test-client";
    let mut c = IsnsClient::open(&lab.server, me, TIMEOUT).await.unwrap();
    assert_eq!(flat(&c.targets().await.unwrap()), lab.visible);
    let t = c.target(&lab.tgt_own).await.unwrap().expect("tgt's target");
    assert_eq!(t.portals.len(), 1);
    assert_eq!(c.target("iqn.2026-12.lab.isns:no-such").await.unwrap(), None);
    assert_eq!(c.target(&lab.hidden.0).await.unwrap(), None, "hidden by its discovery domain");
    // While we are registered, a one-shot discovery with our name neither
    // re-registers nor removes us.
    isns::discover(&lab.server, me, TIMEOUT).await.unwrap();
    assert!(isnsadm(&lab, &["--list", "nodes"]).contains(me));
    c.refresh().await.unwrap();
    c.close().await.unwrap();
    assert!(!isnsadm(&lab, &["--list", "nodes"]).contains(me));
}

/// Waits for the next event about `name`, passing over others.
async fn event_for(c: &mut IsnsClient, name: &str, within: Duration) -> isns::ScnEvent {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, c.next_event())
            .await
            .unwrap_or_else(|_| panic!("no SCN about {name} within {within:?}"))
            .unwrap();
        if ev.target.name == name {
            return ev;
        }
    }
}

#[tokio::test]
async fn scn_reports_a_target_registered_later_and_its_removal() {
    let lab = lab();
    let me = format!("iqn.2026-12.rs.rsiscsi:{}", unique("isns-test-scn"));
    let target = format!("iqn.2026-12.lab.isns:{}", unique("late"));
    let entity = unique("scn");
    let port = 40_000 + (std::process::id() % 20_000);
    let portal = format!("127.0.0.1:{port}");
    // A discovery domain of our own keeps the late target out of the other
    // tests' default domain.
    let dd = isnsadm(
        &lab,
        &[
            "--dd-register",
            &format!("dd-name={entity}"),
            &format!("dd-member-name={me}"),
            &format!("dd-member-name={target}"),
        ],
    );
    let dd_id = dd
        .lines()
        .find_map(|l| l.split_once("DD ID = ").map(|(_, id)| id.trim().to_string()))
        .unwrap_or_else(|| panic!("no DD ID in {dd}"));
    let mut c = IsnsClient::open_with_scn(&lab.server, &me, TIMEOUT).await.unwrap();
    assert!(c.scn_portal().is_some());
    assert_eq!(c.targets().await.unwrap(), vec![], "our domain holds no registered target yet");

    let t0 = Instant::now();
    isnsadm(
        &lab,
        &[
            "--register",
            &format!("entity={entity}"),
            &format!("target={target}"),
            &format!("portal={portal}"),
            "pg,pgt=3",
        ],
    );
    let added = event_for(&mut c, &target, Duration::from_secs(5)).await;
    assert_eq!(added.kind, ScnKind::Added, "{added:?}");
    assert_eq!(added.target.portals.iter().map(|p| p.to_string()).collect::<Vec<_>>(), [format!("{portal},3")]);
    eprintln!("SCN Added after {:?}", t0.elapsed());

    // A second portal group for it: an update.
    let portal2 = format!("127.0.0.1:{}", port + 1);
    isnsadm(
        &lab,
        &[
            "--register",
            &format!("entity={entity}"),
            &format!("target={target}"),
            &format!("portal={portal2}"),
            "pg,pgt=4",
        ],
    );
    let changed = event_for(&mut c, &target, Duration::from_secs(5)).await;
    assert_eq!(changed.kind, ScnKind::Changed, "{changed:?}");
    let mut now: Vec<String> = changed.target.portals.iter().map(|p| p.to_string()).collect();
    now.sort();
    assert_eq!(now, [format!("{portal},3"), format!("{portal2},4")]);

    let t1 = Instant::now();
    isnsadm(&lab, &["--deregister", &format!("entity-id={entity}")]);
    let removed = event_for(&mut c, &target, Duration::from_secs(5)).await;
    assert_eq!(removed.kind, ScnKind::Removed, "{removed:?}");
    assert_eq!(removed.target, changed.target, "a Removed event carries the target as last listed");
    eprintln!("SCN Removed after {:?}", t1.elapsed());
    assert_eq!(c.targets().await.unwrap(), vec![]);

    c.close().await.unwrap();
    isnsadm(&lab, &["--dd-deregister", &dd_id]);
}

/// An isnsd of one test's own on a free loopback port (the lab installed
/// isnsd), killed and its directory removed on drop.
struct PrivateIsnsd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    server: String,
}

impl PrivateIsnsd {
    /// `what` names its directory; `period` is its RegistrationPeriod.
    fn start(what: &str, period: &str) -> PrivateIsnsd {
        let _ = lab();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("rsiscsi-isns-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("isnsd.conf");
        std::fs::write(
            &conf,
            format!(
                "SourceName = iqn.2026-12.rs.rsiscsi:isnsd-{what}\nBindAddress = 127.0.0.1:{port}\n\
                 ControlSocket = {d}/isnsctl\nPIDFile = {d}/isnsd.pid\nRegistrationPeriod = {period}\n\
                 DefaultDiscoveryDomain = 1\nSLPRegister = 0\nSecurity = 0\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("isnsadm.conf"),
            format!("SourceName = iqn.2026-12.rs.rsiscsi:isns-admin\nServerAddress = 127.0.0.1:{port}\nSecurity = 0\n"),
        )
        .unwrap();
        let child = Command::new("isnsd")
            .args(["-f", "-4", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("isnsd runs (is open-isns-server installed?)");
        let server = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&server).is_err() {
            assert!(Instant::now() < deadline, "the private isnsd does not listen on {server}");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateIsnsd { child, dir, server }
    }

    /// isnsadm against this server; it must succeed.
    fn isnsadm(&self, args: &[&str]) {
        let out = Command::new("isnsadm")
            .arg("-c")
            .arg(self.dir.join("isnsadm.conf"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("isnsadm runs (is open-isns-utils installed?)");
        assert!(out.status.success(), "isnsadm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateIsnsd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private isnsd on a free port, stopped halfway: the error names the
/// server and what to check.
#[tokio::test]
async fn stopped_isnsd_gives_a_clear_error() {
    let mut isnsd = PrivateIsnsd::start("stop", "10m");
    let server = isnsd.server.clone();
    let me = "iqn.2026-12.rs.rsiscsi:isns-test-stop";
    let up = isns::discover(&server, me, TIMEOUT).await;
    // This isnsd expires registrations after 10 minutes, and says so.
    let period = match IsnsClient::open(&server, me, TIMEOUT).await {
        Ok(c) => c.registration_period(),
        Err(e) => panic!("{e}"),
    };
    isnsd.stop();
    assert_eq!(up.unwrap(), vec![], "a fresh isnsd lists no targets");
    assert_eq!(period, Some(Duration::from_secs(600)));

    let err = isns::discover(&server, me, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, IsnsError::Refused { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("iSNS server {server} refused the connection (is isnsd running?)"));
}

// ---------------------------------------------------------------------------------------------
// A hostile iSNS server: it reads requests and answers each with what the test scripts.

#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// A response whose first attribute announces 4 GiB.
    OversizeTlv,
    /// An attribute length that is not a multiple of 4.
    UnalignedTlv,
    /// A PDU Length larger than what follows, then the connection closes.
    ShortPdu,
    /// A PDU Length larger than what follows, and then silence.
    ShortPduSilent,
    /// Random bytes instead of a header.
    Garbage,
    /// iSNSP version 2.
    Version,
    /// First PDU of a response, then 60 KB continuation PDUs without end.
    EndlessMultiPdu,
    /// Accepts, reads, never answers.
    Silent,
    /// One byte every 50 ms, forever.
    Drip,
    /// Every request answered with Source Unauthorized.
    Unauthorized,
    /// Responses with the authentication-block flag.
    AuthBlock,
    /// Answers with the wrong transaction ID, over and over.
    WrongXid,
}

fn response_header(req: &Header, len: usize, flags: Flags) -> Vec<u8> {
    let mut out = Vec::new();
    Header {
        version: 1,
        function: req.function.response(),
        length: u16::try_from(len).unwrap(),
        flags,
        transaction_id: req.transaction_id,
        sequence_id: 0,
    }
    .encode(&mut out);
    out
}

fn one_pdu(req: &Header, payload: &[u8], extra: Flags) -> Vec<u8> {
    let mut out =
        response_header(req, payload.len(), Flags::SERVER.with(Flags::FIRST_PDU).with(Flags::LAST_PDU).with(extra));
    out.extend_from_slice(payload);
    out
}

/// Starts the hostile server; returns its address and a counter of bytes it
/// managed to write.
async fn hostile(behaviour: Hostile) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let w = w.clone();
            tokio::spawn(async move {
                loop {
                    let mut h = [0u8; 12];
                    if s.read_exact(&mut h).await.is_err() {
                        return;
                    }
                    let req = Header::decode(&h).unwrap().unwrap();
                    let mut payload = vec![0u8; usize::from(req.length)];
                    if s.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let out = match behaviour {
                        Hostile::OversizeTlv => {
                            let mut p = vec![0, 0, 0, 0];
                            p.extend_from_slice(&[0, 0, 0, 32, 0xff, 0xff, 0xff, 0xfc, b'i', b'q', b'n', 0]);
                            one_pdu(&req, &p, Flags(0))
                        }
                        Hostile::UnalignedTlv => {
                            one_pdu(&req, &[0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 3, 1, 2, 3], Flags(0))
                        }
                        Hostile::ShortPdu | Hostile::ShortPduSilent => {
                            let mut out =
                                response_header(&req, 400, Flags::SERVER.with(Flags::FIRST_PDU).with(Flags::LAST_PDU));
                            out.extend_from_slice(&[0; 10]);
                            let _ = s.write_all(&out).await;
                            if matches!(behaviour, Hostile::ShortPduSilent) {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            return;
                        }
                        Hostile::Garbage => {
                            (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80).collect()
                        }
                        Hostile::Version => {
                            let mut out = one_pdu(&req, &[0, 0, 0, 0], Flags(0));
                            out[1] = 2;
                            out
                        }
                        Hostile::EndlessMultiPdu => {
                            let chunk = vec![0u8; 60_000];
                            let mut seq: u16 = 0;
                            loop {
                                let flags = if seq == 0 { Flags::SERVER.with(Flags::FIRST_PDU) } else { Flags::SERVER };
                                let mut out = Vec::new();
                                Header {
                                    version: 1,
                                    function: req.function.response(),
                                    length: 60_000,
                                    flags,
                                    transaction_id: req.transaction_id,
                                    sequence_id: seq,
                                }
                                .encode(&mut out);
                                out.extend_from_slice(&chunk);
                                if s.write_all(&out).await.is_err() {
                                    return;
                                }
                                w.fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
                                seq = seq.wrapping_add(1);
                            }
                        }
                        Hostile::Silent => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        Hostile::Drip => loop {
                            if s.write_all(&[0]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        },
                        Hostile::Unauthorized => one_pdu(&req, &Status::SOURCE_UNAUTHORIZED.0.to_be_bytes(), Flags(0)),
                        Hostile::AuthBlock => one_pdu(&req, &[0, 0, 0, 0], Flags::AUTH),
                        Hostile::WrongXid => {
                            let mut out = Vec::new();
                            for i in 0..100u16 {
                                let other = Header { transaction_id: req.transaction_id.wrapping_add(1000 + i), ..req };
                                out.extend_from_slice(&one_pdu(&other, &[0, 0, 0, 0], Flags(0)));
                            }
                            out
                        }
                    };
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    w.fetch_add(out.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    (addr, written)
}

/// Runs discovery against the hostile server; never more than 10 s.
async fn against(behaviour: Hostile, timeout: Duration) -> IsnsError {
    let (addr, _) = hostile(behaviour).await;
    let r =
        tokio::time::timeout(Duration::from_secs(10), isns::discover(&addr, "iqn.2026-12.rs.rsiscsi:victim", timeout))
            .await
            .unwrap_or_else(|_| panic!("{behaviour:?}: discovery hangs"));
    let e = r.expect_err("a hostile server must not give a target list");
    eprintln!("{behaviour:?}: {e}");
    assert!(e.to_string().contains(&addr), "{behaviour:?}: the error names the server: {e}");
    e
}

fn proto_error(e: &IsnsError) -> &ProtoError {
    match e {
        IsnsError::Protocol { source, .. } => source,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn hostile_oversize_tlv_is_refused() {
    let e = against(Hostile::OversizeTlv, TIMEOUT).await;
    assert!(matches!(proto_error(&e), ProtoError::AttributeOverrun { tag: 32, len: 0xffff_fffc, .. }), "{e:?}");
    assert!(e.to_string().contains("announces 4294967292 bytes"), "{e}");
}

#[tokio::test]
async fn hostile_unaligned_tlv_is_refused() {
    let e = against(Hostile::UnalignedTlv, TIMEOUT).await;
    assert!(matches!(proto_error(&e), ProtoError::AttributeAlignment { tag: 32, len: 3 }), "{e:?}");
}

#[tokio::test]
async fn hostile_short_pdu_then_close_is_refused() {
    let e = against(Hostile::ShortPdu, TIMEOUT).await;
    assert!(matches!(e, IsnsError::Closed { .. }), "{e:?}");
}

#[tokio::test]
async fn hostile_short_pdu_then_silence_times_out() {
    let t = Instant::now();
    let e = against(Hostile::ShortPduSilent, Duration::from_millis(500)).await;
    assert!(matches!(e, IsnsError::Timeout { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn hostile_garbage_is_refused() {
    let e = against(Hostile::Garbage, TIMEOUT).await;
    assert!(matches!(proto_error(&e), ProtoError::Version(_)), "{e:?}");
}

#[tokio::test]
async fn hostile_version_is_refused() {
    let e = against(Hostile::Version, TIMEOUT).await;
    assert!(matches!(proto_error(&e), ProtoError::Version(2)), "{e:?}");
    assert!(e.to_string().contains("iSNSP version 0x0002 is not supported"), "{e}");
}

#[tokio::test]
async fn hostile_endless_multi_pdu_is_cut_off() {
    let (addr, written) = hostile(Hostile::EndlessMultiPdu).await;
    let r =
        tokio::time::timeout(Duration::from_secs(10), isns::discover(&addr, "iqn.2026-12.rs.rsiscsi:victim", TIMEOUT))
            .await
            .expect("discovery hangs");
    let e = r.unwrap_err();
    assert!(matches!(proto_error(&e), ProtoError::MessageTooLarge { .. }), "{e:?}");
    // The client stopped reading at the cap (plus what sat in socket buffers).
    let w = written.load(std::sync::atomic::Ordering::Relaxed);
    assert!(w >= iscsi_proto::isns::MAX_MESSAGE_LEN / 2, "the server wrote {w} bytes");
}

#[tokio::test]
async fn hostile_silence_times_out() {
    let t = Instant::now();
    let e = against(Hostile::Silent, Duration::from_millis(300)).await;
    assert!(matches!(e, IsnsError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("did not answer DevAttrQry within 300ms"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn hostile_drip_times_out() {
    let e = against(Hostile::Drip, Duration::from_millis(400)).await;
    assert!(matches!(e, IsnsError::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn hostile_status_is_named() {
    let e = against(Hostile::Unauthorized, TIMEOUT).await;
    assert_eq!(e.status(), Some(Status::SOURCE_UNAUTHORIZED));
    assert!(e.to_string().ends_with("rejected DevAttrReg: Source Unauthorized (8)"), "{e}");
}

#[tokio::test]
async fn hostile_auth_block_is_refused() {
    let e = against(Hostile::AuthBlock, TIMEOUT).await;
    assert!(matches!(proto_error(&e), ProtoError::AuthenticationBlock), "{e:?}");
}

#[tokio::test]
async fn hostile_wrong_transactions_are_bounded() {
    let e = against(Hostile::WrongXid, TIMEOUT).await;
    assert!(matches!(proto_error(&e), ProtoError::Malformed(_)), "{e:?}");
}

#[tokio::test]
async fn refused_connection_is_clear() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = isns::discover(&format!("127.0.0.1:{port}"), "iqn.2026-12.rs.rsiscsi:x", TIMEOUT).await.unwrap_err();
    assert_eq!(e.to_string(), format!("iSNS server 127.0.0.1:{port} refused the connection (is isnsd running?)"));
}

// ---------------------------------------------------------------------------------------------
// A scripted iSNS server that speaks the protocol (through iscsi-proto) but breaks where a test
// says, and records which requests reached it.

use iscsi_proto::isns::client::ScnBitmap;
use iscsi_proto::isns::{Attribute, FunctionId, Message, Pdu, Reassembler, Tag};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Script {
    /// The target query is answered with garbage.
    GarbageTargetQuery,
    /// After SCNReg, connects to the SCN port and sends first garbage, then an
    /// endless message, then a good SCN naming `iqn.fake:t`.
    HostileScns,
}

#[derive(Default)]
struct Seen {
    functions: Vec<FunctionId>,
    scn_port: Option<u16>,
    scn_response: Option<Message>,
    /// What a peer other than the server got for its SCN.
    forged_response: Option<Option<Message>>,
}

async fn read_msg(s: &mut tokio::net::TcpStream) -> Option<Message> {
    let mut buf = Vec::new();
    let mut r = Reassembler::new();
    loop {
        while let Ok(Some((pdu, used))) = Pdu::decode(&buf) {
            buf.drain(..used);
            if let Ok(Some(m)) = r.push(pdu) {
                return Message::decode(&m).ok();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn fake_target_answer(req: &Message) -> Message {
    let mut r = Message::response(req.function, req.transaction_id, Status::SUCCESS, Flags::SERVER);
    r.operating = vec![
        Attribute::string(Tag::ENTITY_IDENTIFIER, "fake"),
        Attribute::string(Tag::ISCSI_NAME, "iqn.fake:t"),
        Attribute::u32(Tag::ISCSI_NODE_TYPE, 1),
        Attribute::string(Tag::PG_ISCSI_NAME, "iqn.fake:t"),
        Attribute::ip(Tag::PG_PORTAL_IP_ADDR, "127.0.0.1".parse().unwrap()),
        Attribute::port(Tag::PG_PORTAL_PORT, 3260, false),
        Attribute::u32(Tag::PG_TAG, 5),
    ];
    r
}

async fn scripted(script: Script) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let scn_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen2.clone();
            let scn_sent = scn_sent.clone();
            tokio::spawn(async move {
                while let Some(req) = read_msg(&mut s).await {
                    let queries = {
                        let mut g = seen.lock().unwrap();
                        g.functions.push(req.function);
                        if req.function == FunctionId::DEV_ATTR_REG
                            && let Some(a) = req.operating.iter().find(|a| a.tag == Tag::SCN_PORT)
                        {
                            g.scn_port = Some(a.as_port().unwrap().0);
                        }
                        g.functions.iter().filter(|f| **f == FunctionId::DEV_ATTR_QRY).count()
                    };
                    let name_query = req.keys.iter().any(|a| a.tag == Tag::ISCSI_NAME);
                    let bytes = match (script, req.function) {
                        // The first query asks whether we are registered: no.
                        (_, FunctionId::DEV_ATTR_QRY) if queries == 1 && name_query => {
                            Message::response(req.function, req.transaction_id, Status::NO_SUCH_ENTRY, Flags::SERVER)
                                .encode()
                        }
                        (Script::GarbageTargetQuery, FunctionId::DEV_ATTR_QRY) => {
                            [0xde, 0xad, 0xbe, 0xef].into_iter().cycle().take(64).collect()
                        }
                        (Script::HostileScns, FunctionId::DEV_ATTR_QRY) if name_query => {
                            fake_target_answer(&req).encode()
                        }
                        (Script::HostileScns, FunctionId::SCN_REG) => {
                            if !scn_sent.swap(true, std::sync::atomic::Ordering::SeqCst) {
                                let port = seen.lock().unwrap().scn_port.expect("SCN port registered");
                                tokio::spawn(hostile_scns(port, seen.clone()));
                            }
                            Message::response(req.function, req.transaction_id, Status::SUCCESS, Flags::SERVER).encode()
                        }
                        _ => {
                            Message::response(req.function, req.transaction_id, Status::SUCCESS, Flags::SERVER).encode()
                        }
                    };
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// What a hostile server does on the SCN port: garbage on one connection, an
/// endless message on another, then a good SCN whose SCNRsp it records.
async fn hostile_scns(port: u16, seen: Arc<Mutex<Seen>>) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scn_addr = format!("127.0.0.1:{port}");
    let mut garbage = tokio::net::TcpStream::connect(&scn_addr).await.unwrap();
    let _ = garbage.write_all(&[0x55; 100]).await;
    let mut endless = tokio::net::TcpStream::connect(&scn_addr).await.unwrap();
    let mut seq: u16 = 0;
    let chunk = vec![0u8; 60_000];
    // Stops when the client cuts the message off and closes.
    loop {
        let flags = if seq == 0 { Flags::SERVER.with(Flags::FIRST_PDU) } else { Flags::SERVER };
        let mut out = Vec::new();
        Header { version: 1, function: FunctionId::SCN, length: 60_000, flags, transaction_id: 1, sequence_id: seq }
            .encode(&mut out);
        out.extend_from_slice(&chunk);
        if endless.write_all(&out).await.is_err() {
            break;
        }
        seq = seq.wrapping_add(1);
        if seq > 200 {
            panic!("the client kept reading an endless SCN");
        }
    }
    // The same SCN from 127.0.0.2, which is not the server: refused.
    let forged = tokio::net::TcpSocket::new_v4().unwrap();
    forged.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut forged = forged.connect(scn_addr.parse().unwrap()).await.unwrap();
    let mut fake = Message::request(FunctionId::SCN, 41, Attribute::nil(Tag::DELIMITER));
    fake.source = None;
    fake.keys = vec![
        Attribute::string(Tag::ISCSI_NAME, "iqn.2026-12.rs.rsiscsi:scn-victim"),
        Attribute::u32(Tag::ISCSI_SCN_BITMAP, ScnBitmap::OBJECT_ADDED.0),
        Attribute::string(Tag::ISCSI_NAME, "iqn.fake:t"),
    ];
    let _ = forged.write_all(&fake.encode()).await;
    let answer = tokio::time::timeout(Duration::from_secs(2), read_msg(&mut forged)).await.ok().flatten();
    seen.lock().unwrap().forged_response = Some(answer);
    let mut good = tokio::net::TcpStream::connect(&scn_addr).await.unwrap();
    let mut scn = Message::request(FunctionId::SCN, 42, Attribute::nil(Tag::DELIMITER));
    scn.source = None;
    scn.flags = Flags::SERVER;
    scn.keys = vec![
        Attribute::string(Tag::ISCSI_NAME, "iqn.2026-12.rs.rsiscsi:scn-victim"),
        Attribute::u64(Tag::TIMESTAMP, 1),
        Attribute::u32(Tag::ISCSI_SCN_BITMAP, ScnBitmap::OBJECT_ADDED.0),
        Attribute::string(Tag::ISCSI_NAME, "iqn.fake:t"),
    ];
    good.write_all(&scn.encode()).await.unwrap();
    let rsp = read_msg(&mut good).await;
    seen.lock().unwrap().scn_response = rsp;
    // Keep the connection open like isnsd does.
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn broken_query_still_deregisters_on_a_new_connection() {
    let (addr, seen) = scripted(Script::GarbageTargetQuery).await;
    let e =
        tokio::time::timeout(Duration::from_secs(10), isns::discover(&addr, "iqn.2026-12.rs.rsiscsi:dereg", TIMEOUT))
            .await
            .expect("no hang")
            .unwrap_err();
    assert!(matches!(proto_error(&e), ProtoError::Version(0xdead)), "{e:?}");
    let f = seen.lock().unwrap().functions.clone();
    assert_eq!(
        f,
        [FunctionId::DEV_ATTR_QRY, FunctionId::DEV_ATTR_REG, FunctionId::DEV_ATTR_QRY, FunctionId::DEV_DEREG],
        "registered, queried, and deregistered after the garbage"
    );
}

#[tokio::test]
async fn hostile_scn_connections_do_not_stop_good_ones() {
    let (addr, seen) = scripted(Script::HostileScns).await;
    let me = "iqn.2026-12.rs.rsiscsi:scn-victim";
    let mut c = IsnsClient::open_with_scn(&addr, me, TIMEOUT).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), c.next_event())
        .await
        .expect("the good SCN arrives after the hostile ones")
        .unwrap();
    assert_eq!(ev.kind, ScnKind::Added);
    assert_eq!(ev.target.name, "iqn.fake:t");
    assert_eq!(ev.target.portals.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["127.0.0.1:3260,5"]);
    assert_eq!(seen.lock().unwrap().forged_response, Some(None), "an SCN from another address is not answered");
    let rsp = seen.lock().unwrap().scn_response.clone().expect("SCNRsp sent");
    assert_eq!(rsp.function, FunctionId::SCN.response());
    assert_eq!(rsp.transaction_id, 42);
    assert_eq!(rsp.status, Some(Status::SUCCESS));
    assert_eq!(rsp.keys, [Attribute::string(Tag::ISCSI_NAME, me)]);
    c.close().await.unwrap();
    let f = seen.lock().unwrap().functions.clone();
    assert!(f.ends_with(&[FunctionId::SCN_DEREG, FunctionId::DEV_DEREG]), "{f:?}");
}

/// A restarted isnsd forgets registrations (its database is in memory) and
/// closes the connection it sent SCNs on: `next_event` says so, so that the
/// caller registers again instead of waiting for SCNs that never come.
#[tokio::test]
async fn a_restarted_isnsd_is_reported_through_next_event() {
    let mut isnsd = PrivateIsnsd::start("restart", "0");
    let mut c =
        IsnsClient::open_with_scn(&isnsd.server, "iqn.2026-12.rs.rsiscsi:isns-test-restart", TIMEOUT).await.unwrap();
    let target = "iqn.2026-12.lab.isns:restart-disk";
    isnsd.isnsadm(&["--register", "entity=restart.disk", &format!("target={target}"), "portal=127.0.0.1:3260"]);
    let ev = tokio::time::timeout(Duration::from_secs(10), c.next_event()).await.expect("an SCN").unwrap();
    assert_eq!((ev.kind, ev.target.name.as_str()), (isns::ScnKind::Added, target));
    isnsd.stop();
    let err = tokio::time::timeout(Duration::from_secs(10), c.next_event()).await.expect("an answer").unwrap_err();
    assert!(matches!(err, IsnsError::ScnClosed { .. }), "{err:?}");
    assert!(err.to_string().contains("register again"), "{err}");
}
