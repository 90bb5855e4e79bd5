//! The target side of the login phase (RFC 7143 §6): security stage
//! (AuthMethod None or one-way CHAP MD5, §12.1.3), operational stage
//! (§6.2, answers per the result functions of §13) and the move to full
//! feature phase, with the login faults of [`Fault`].

use bytes::Bytes;
use iscsi_proto::pdu::{Bhs, FrameConfig, LoginRequest, LoginResponse, encode_header};
use iscsi_proto::text::{self, TextPairs};
use md5::{Digest as _, Md5};
use tracing::debug;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::conn::{Conn, End};
use crate::erl2::Retained;
use crate::{CmdSnState, Fault, Phase, SessionState};

/// Login stages (§11.12.3).
const SECURITY: u8 = 0;
const OPERATIONAL: u8 = 1;
const FULL_FEATURE: u8 = 3;

/// Largest data segment during login (§13.12: 8192 until negotiated).
const LOGIN_SEGMENT: usize = 8192;

/// Bound on login PDUs on one connection, against a looping initiator.
const MAX_LOGIN_PDUS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionKind {
    Normal,
    Discovery,
}

/// Where the CHAP exchange is (§12.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// Nothing agreed yet.
    Start,
    /// AuthMethod=CHAP agreed, waiting for CHAP_A.
    WaitAlgorithm,
    /// Challenge sent, waiting for CHAP_N/CHAP_R.
    WaitResponse {
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
}

fn value<'a>(pairs: &'a TextPairs, key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let body = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if body.len() % 2 != 0 {
        return None;
    }
    body.as_bytes()
        .chunks_exact(2)
        .map(|p| std::str::from_utf8(p).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// RFC 1994 §4.1 with MD5: `H(id || secret || challenge)`.
fn chap_md5(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().to_vec()
}

/// State of one connection's login.
struct Login {
    kind: Option<SessionKind>,
    auth: Auth,
    declared_mrdsl: bool,
    /// Text still to send with the C bit (§6.1), and the response it ends with.
    pending: Option<(Bytes, LoginResponse)>,
    /// HeaderDigest and DataDigest agreed as CRC32C (§13.1).
    digests: (bool, bool),
    /// The existing session a non-leading connection joins.
    joining: Option<Arc<SessionState>>,
}

impl Conn {
    fn login_response(&mut self, req: &LoginRequest, transit: bool, status: (u8, u8)) -> LoginResponse {
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        LoginResponse {
            transit,
            continue_: false,
            csg: req.csg,
            nsg: if transit { req.nsg } else { 0 },
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn,
            max_cmd_sn,
            status_class: status.0,
            status_detail: status.1,
        }
    }

    /// Sends a response; text over 8192 bytes goes out in pieces with the
    /// C bit, the rest on the initiator's next (empty) request.
    async fn send_login(&mut self, l: &mut Login, rsp: LoginResponse, pairs: &TextPairs) -> Result<(), End> {
        let mut data = Vec::new();
        text::encode(pairs, &mut data);
        let data = Bytes::from(data);
        if data.len() <= LOGIN_SEGMENT {
            return self.send(rsp, data).await;
        }
        l.pending = Some((data.slice(LOGIN_SEGMENT..), rsp));
        let partial = LoginResponse { transit: false, continue_: true, nsg: 0, ..rsp };
        self.send(partial, data.slice(..LOGIN_SEGMENT)).await
    }

    /// Fails the login with `status` (§11.13.5) and ends the connection.
    async fn refuse(&mut self, req: &LoginRequest, status: (u8, u8), pairs: &TextPairs) -> End {
        let rsp = self.login_response(req, false, status);
        let mut data = Vec::new();
        text::encode(pairs, &mut data);
        if let Err(e) = self.send(rsp, Bytes::from(data)).await {
            return e;
        }
        End::Done("login refused")
    }
}

/// Runs the login on `c` up to the full feature phase.
pub(crate) async fn run(c: &mut Conn) -> Result<SessionKind, End> {
    let fault = c.fault();
    let mut l = Login {
        kind: None,
        auth: Auth::Start,
        declared_mrdsl: false,
        pending: None,
        digests: (false, false),
        joining: None,
    };
    for n in 0..MAX_LOGIN_PDUS {
        let Some(pdu) = c.recv().await? else { return Err(End::Closed) };
        let Bhs::LoginRequest(req) = pdu.bhs else {
            return Err(End::Done("not a Login Request during login"));
        };
        if n == 0 && fault == Fault::Reset(Phase::Login) {
            c.stream.set_zero_linger()?;
            return Err(End::Done("reset"));
        }
        if fault == Fault::LoginNeverFinishes {
            return Err(c.drain().await);
        }
        if fault == Fault::LoginDataSegmentTooLong {
            // §13.12: 8192 bytes is the most a login PDU may carry.
            let rsp = c.login_response(&req, false, (0, 0));
            let mut out = bytes::BytesMut::new();
            encode_header(&Bhs::LoginResponse(rsp), &[], 0x00ff_ffff, &c.tx, &mut out);
            out.extend_from_slice(&[0u8; 1024]);
            c.send_bytes(&out).await?;
            return Err(c.drain().await);
        }
        // §11.12: login requests are immediate; CmdSN stays the same.
        c.exp_cmd_sn = req.cmd_sn;
        c.cid = req.cid;
        if let Some((rest, last)) = l.pending.take() {
            let (exp_cmd_sn, max_cmd_sn) = c.window();
            let stat_sn = c.next_stat_sn();
            let base = LoginResponse { stat_sn, exp_cmd_sn, max_cmd_sn, ..last };
            if rest.len() > LOGIN_SEGMENT {
                l.pending = Some((rest.slice(LOGIN_SEGMENT..), last));
                let partial = LoginResponse { transit: false, continue_: true, nsg: 0, ..base };
                c.send(partial, rest.slice(..LOGIN_SEGMENT)).await?;
            } else {
                c.send(base, rest).await?;
            }
            continue;
        }
        let pairs = match text::parse(&pdu.data) {
            Ok(p) => p,
            Err(_) => return Err(c.refuse(&req, (2, 0), &Vec::new()).await),
        };
        if l.kind.is_none() {
            // §6.3.1: the first request names the initiator and the session.
            if value(&pairs, "InitiatorName").is_none() {
                return Err(c.refuse(&req, (2, 7), &Vec::new()).await);
            }
            let kind = if value(&pairs, "SessionType") == Some("Discovery") {
                SessionKind::Discovery
            } else {
                SessionKind::Normal
            };
            if kind == SessionKind::Normal && value(&pairs, "TargetName") != Some(c.shared.cfg.target_name.as_str()) {
                return Err(c.refuse(&req, (2, 3), &Vec::new()).await);
            }
            if req.tsih != 0 {
                // §5.3: a connection joins the session of its ISID and TSIH.
                let found = c.shared.sessions.lock().ok().and_then(|m| m.get(&req.tsih).cloned());
                let Some(session) = found.filter(|s| s.isid == req.isid) else {
                    return Err(c.refuse(&req, (2, 10), &Vec::new()).await);
                };
                let count = session.connections.lock().map(|n| *n).unwrap_or(u16::MAX);
                if count >= c.shared.cfg.max_connections {
                    return Err(c.refuse(&req, (2, 6), &Vec::new()).await);
                }
                l.joining = Some(session);
            }
            // §11.13.5 status class 1: log in elsewhere.
            match fault {
                Fault::RedirectLoop => {
                    let to = vec![pair("TargetAddress", format!("{},1", c.shared.addr))];
                    return Err(c.refuse(&req, (1, 1), &to).await);
                }
                Fault::BadTargetAddress => {
                    let to = vec![pair("TargetAddress", "not an address")];
                    return Err(c.refuse(&req, (1, 1), &to).await);
                }
                _ => {}
            }
            l.kind = Some(kind);
        }
        let kind = l.kind.unwrap_or(SessionKind::Normal);
        let mut answer = TextPairs::new();
        let mut ready = true;
        match req.csg {
            SECURITY => {
                if n == 0 && kind == SessionKind::Normal {
                    // §13.9: the target declares its portal group in the first response.
                    answer.push(pair("TargetPortalGroupTag", "1"));
                }
                match security(c, &mut l, &req, &pairs, &mut answer).await? {
                    Some(r) => ready = r,
                    None => return Err(End::Done("redirected for CHAP reflection")),
                }
            }
            OPERATIONAL => operational(c, &mut l, &pairs, &mut answer),
            _ => return Err(c.refuse(&req, (2, 11), &Vec::new()).await),
        }
        let transit = req.transit && ready && fault != Fault::LoginNeverTransits;
        let mut rsp = c.login_response(&req, transit, (0, 0));
        if transit && req.nsg == FULL_FEATURE {
            rsp.tsih = if req.tsih != 0 {
                req.tsih
            } else if kind == SessionKind::Discovery {
                0
            } else {
                let mut t = c.shared.next_tsih.lock().map_err(|_| End::Done("TSIH lock poisoned"))?;
                let tsih = *t;
                *t = t.wrapping_add(1).max(1);
                tsih
            };
            if kind == SessionKind::Discovery && rsp.tsih == 0 {
                rsp.tsih = 0x7fff;
            }
        }
        c.send_login(&mut l, rsp, &answer).await?;
        if transit && req.nsg == FULL_FEATURE && l.pending.is_none() {
            // §12.1, §13.12: digests and segment limits apply from the
            // first PDU after the last login response.
            let (header_digest, data_digest) = l.digests;
            let mrdsl = c.shared.cfg.max_recv_data_segment_length;
            c.dec.config = FrameConfig { header_digest, data_digest, max_recv_data_segment_length: mrdsl };
            c.tx = FrameConfig { header_digest, data_digest, max_recv_data_segment_length: c.params.peer_mrdsl };
            debug!(peer_mrdsl = c.params.peer_mrdsl, header_digest, data_digest, "login complete");
            if kind == SessionKind::Normal {
                let session = match l.joining.take() {
                    Some(s) => s,
                    None => {
                        let s = Arc::new(SessionState {
                            isid: req.isid,
                            cmd_sn: Mutex::new(CmdSnState { exp_cmd_sn: c.exp_cmd_sn, ahead: BTreeSet::new() }),
                            connections: Mutex::new(0),
                            erl: c.params.erl,
                            time2wait: c.params.time2wait,
                            time2retain: c.params.time2retain,
                            recovery: Mutex::new(Retained::default()),
                        });
                        if let Ok(mut all) = c.shared.sessions.lock() {
                            all.insert(rsp.tsih, s.clone());
                        }
                        s
                    }
                };
                if let Ok(mut n) = session.connections.lock() {
                    *n = n.saturating_add(1);
                }
                if let Ok(mut r) = session.recovery.lock() {
                    r.connection_up(req.cid);
                }
                c.session = Some(session);
            }
            return Ok(kind);
        }
    }
    Err(End::Done("login went on too long"))
}

/// Security stage keys. `Ok(Some(ready))`: whether the stage may end now;
/// `Ok(None)`: the connection was redirected and ends.
async fn security(
    c: &mut Conn,
    l: &mut Login,
    req: &LoginRequest,
    pairs: &TextPairs,
    answer: &mut TextPairs,
) -> Result<Option<bool>, End> {
    let cfg = c.shared.cfg.clone();
    let fault = c.fault();
    if let Some(offer) = value(pairs, "AuthMethod") {
        let offered: Vec<&str> = offer.split(',').collect();
        // §13.3 (list negotiation): our choice must be on the offered list.
        if cfg.chap.is_some() {
            if !offered.contains(&"CHAP") {
                answer.push(pair("AuthMethod", "Reject"));
                return Err(c.refuse(req, (2, 1), answer).await);
            }
            answer.push(pair("AuthMethod", "CHAP"));
            l.auth = Auth::WaitAlgorithm;
        } else if offered.contains(&"None") {
            answer.push(pair("AuthMethod", "None"));
            l.auth = Auth::Done;
        } else {
            answer.push(pair("AuthMethod", "Reject"));
            return Err(c.refuse(req, (2, 1), answer).await);
        }
        return Ok(Some(l.auth == Auth::Done));
    }
    match std::mem::replace(&mut l.auth, Auth::Start) {
        Auth::Start => {
            if cfg.chap.is_some() {
                return Err(c.refuse(req, (2, 1), &Vec::new()).await);
            }
            l.auth = Auth::Done;
            Ok(Some(true))
        }
        Auth::WaitAlgorithm => {
            let Some(list) = value(pairs, "CHAP_A") else {
                return Err(c.refuse(req, (2, 7), &Vec::new()).await);
            };
            if !list.split(',').any(|a| a == "5") {
                answer.push(pair("CHAP_A", "Reject"));
                return Err(c.refuse(req, (2, 1), answer).await);
            }
            let algorithm = if fault == Fault::ChapWrongAlgorithm { "7" } else { "5" };
            let captured = c.shared.captured_challenge.lock().ok().and_then(|g| g.clone());
            let (id, challenge) = match (fault, captured) {
                (Fault::ChapReflect, Some((i, ch))) => (i.parse().unwrap_or(0), unhex(&ch).unwrap_or_default()),
                (Fault::ChapHugeChallenge, _) => (1u8, vec![0x5au8; 50_000]),
                _ => (rand::random::<u8>(), rand::random::<[u8; 16]>().to_vec()),
            };
            answer.push(pair("CHAP_A", algorithm));
            answer.push(pair("CHAP_I", id.to_string()));
            answer.push(pair("CHAP_C", hex(&challenge)));
            l.auth = Auth::WaitResponse { id, challenge };
            Ok(Some(false))
        }
        Auth::WaitResponse { id, challenge } => {
            let Some((user, secret)) = cfg.chap.as_ref() else {
                return Err(c.refuse(req, (2, 1), &Vec::new()).await);
            };
            let n = value(pairs, "CHAP_N");
            let r = value(pairs, "CHAP_R").and_then(unhex);
            let ok = n == Some(user.as_str()) && r.as_deref() == Some(chap_md5(id, secret, &challenge).as_slice());
            if fault == Fault::ChapReflect
                && let (Some(i), Some(ch), Some(r)) =
                    (value(pairs, "CHAP_I"), value(pairs, "CHAP_C"), value(pairs, "CHAP_R"))
            {
                if !ok {
                    return Err(c.refuse(req, (2, 1), &Vec::new()).await);
                }
                let first_time = c
                    .shared
                    .captured_challenge
                    .lock()
                    .map(|mut g| g.replace((i.to_string(), ch.to_string())).is_none())
                    .unwrap_or(false);
                if first_time {
                    // Make the initiator come back, to be asked its own challenge.
                    let to = vec![pair("TargetAddress", format!("{},1", c.shared.addr))];
                    let _ = c.refuse(req, (1, 1), &to).await;
                    return Ok(None);
                }
                // Second time: "prove" ourselves with the initiator's own response.
                let name = cfg.mutual_chap.as_ref().map_or(user.clone(), |(n, _)| n.clone());
                answer.push(pair("CHAP_N", name));
                answer.push(pair("CHAP_R", r));
                l.auth = Auth::Done;
                return Ok(Some(true));
            }
            if !ok {
                return Err(c.refuse(req, (2, 1), &Vec::new()).await);
            }
            if let (Some(i), Some(ch)) = (value(pairs, "CHAP_I"), value(pairs, "CHAP_C")) {
                let Some((tname, tsecret)) = cfg.mutual_chap.as_ref() else {
                    return Err(c.refuse(req, (2, 1), &Vec::new()).await);
                };
                let tid: u8 = i.parse().unwrap_or(0);
                let r = chap_md5(tid, tsecret, &unhex(ch).unwrap_or_default());
                answer.push(pair("CHAP_N", tname.clone()));
                answer.push(pair("CHAP_R", hex(&r)));
            }
            l.auth = Auth::Done;
            Ok(Some(true))
        }
        Auth::Done => {
            l.auth = Auth::Done;
            Ok(Some(true))
        }
    }
}

/// Operational keys (§13), answered with the result functions: minimum
/// for the numeric limits, OR for InitialR2T, AND for ImmediateData.
fn operational(c: &mut Conn, l: &mut Login, pairs: &TextPairs, answer: &mut TextPairs) {
    let cfg = c.shared.cfg.clone();
    let yes = |b: bool| if b { "Yes" } else { "No" };
    let mut digests = (false, false);
    for (k, v) in pairs {
        let num = v.parse::<u64>().ok();
        let a = match k.as_str() {
            "HeaderDigest" | "DataDigest" => {
                let list: Vec<&str> = v.split(',').collect();
                let pick = if cfg.digests && list.contains(&"CRC32C") {
                    "CRC32C"
                } else if list.contains(&"None") {
                    "None"
                } else {
                    "Reject"
                };
                if k == "HeaderDigest" {
                    digests.0 = pick == "CRC32C";
                } else {
                    digests.1 = pick == "CRC32C";
                }
                pick.to_string()
            }
            "MaxRecvDataSegmentLength" => {
                // Declarative (§13.12): what we may send per PDU.
                c.params.peer_mrdsl = num.unwrap_or(8192).clamp(512, 0x00ff_ffff) as u32;
                continue;
            }
            "MaxConnections" => num.unwrap_or(1).min(u64::from(cfg.max_connections)).max(1).to_string(),
            "InitialR2T" => {
                let r = v == "Yes" || cfg.initial_r2t;
                c.params.initial_r2t = r;
                yes(r).to_string()
            }
            "ImmediateData" => {
                let r = v == "Yes" && cfg.immediate_data;
                c.params.immediate_data = r;
                yes(r).to_string()
            }
            "MaxBurstLength" => {
                let r = num.unwrap_or(262_144).min(u64::from(cfg.max_burst_length)).max(512) as u32;
                c.params.max_burst_length = r;
                r.to_string()
            }
            "FirstBurstLength" => {
                let r = num.unwrap_or(65_536).min(u64::from(cfg.first_burst_length)).max(512) as u32;
                c.params.first_burst_length = r;
                r.to_string()
            }
            "DefaultTime2Wait" => {
                let r = num.unwrap_or(2).max(u64::from(cfg.default_time2wait)).min(3600) as u16;
                c.params.time2wait = r;
                r.to_string()
            }
            "DefaultTime2Retain" => {
                let r = num.unwrap_or(20).min(u64::from(cfg.default_time2retain)) as u16;
                c.params.time2retain = r;
                r.to_string()
            }
            "MaxOutstandingR2T" => "1".to_string(),
            "DataPDUInOrder" | "DataSequenceInOrder" => "Yes".to_string(),
            "ErrorRecoveryLevel" => {
                let r = num.unwrap_or(0).min(u64::from(cfg.error_recovery_level)) as u8;
                c.params.erl = r;
                r.to_string()
            }
            "IFMarker" | "OFMarker" => "No".to_string(),
            // Declarations of the initiator: nothing to answer.
            "InitiatorName" | "InitiatorAlias" | "TargetName" | "SessionType" => continue,
            _ => "NotUnderstood".to_string(),
        };
        answer.push((k.clone(), a));
    }
    if !l.declared_mrdsl {
        l.declared_mrdsl = true;
        answer.push(pair("MaxRecvDataSegmentLength", cfg.max_recv_data_segment_length.to_string()));
    }
    match c.fault() {
        Fault::KeyRepeated => answer.push(pair("MaxBurstLength", "512")),
        // AuthMethod belongs to the security stage (§13.3).
        Fault::KeyOutOfTurn => answer.push(pair("AuthMethod", "None")),
        _ => {}
    }
    if pairs.iter().any(|(k, _)| k == "HeaderDigest" || k == "DataDigest") {
        l.digests = digests;
    }
}
