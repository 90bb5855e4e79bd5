//! The login phase on one connection (RFC 7143 §6): security stage
//! (AuthMethod None or CHAP), operational stage (the negotiator of the
//! protocol core) and the move to full feature phase.

use bytes::{Bytes, BytesMut};
use iscsi_proto::chap::ChapInitiator;
use iscsi_proto::negotiation::{Negotiated, Negotiator, SessionType};
use iscsi_proto::pdu::{Bhs, FrameConfig, LoginRequest, LoginResponse, Pdu, PduDecoder};
use iscsi_proto::text::{self, TextAccumulator, TextPairs};
use tokio::net::TcpStream;

use crate::config::SessionConfig;
use crate::error::{Error, LoginStatus, Result};
use crate::portal::PortalAddr;
use crate::wire::{recv_pdu, send_pdu};

/// Login stages (RFC 7143 §11.12.3).
const SECURITY: u8 = 0;
const OPERATIONAL: u8 = 1;
const FULL_FEATURE: u8 = 3;

/// More rounds than any real target needs; a target that keeps the login
/// going longer is refused rather than followed forever.
const MAX_ROUNDS: usize = 16;

/// Identity of the connection being logged in.
pub(crate) struct LoginParams<'a> {
    pub cfg: &'a SessionConfig,
    /// `None` for a discovery session.
    pub target_name: Option<&'a str>,
    /// 0 for a leading login; the session's TSIH to add a connection.
    pub tsih: u16,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// A connection that reached full feature phase.
pub(crate) struct LoggedIn {
    pub negotiated: Negotiated,
    pub tsih: u16,
    pub exp_stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// Bytes already read past the last login response.
    pub leftover: BytesMut,
}

pub(crate) enum LoginOutcome {
    LoggedIn(Box<LoggedIn>),
    /// Status class 1: log in at this address instead (RFC 7143 §11.13.5).
    Redirect(PortalAddr),
}

struct Exchange<'a> {
    stream: &'a mut TcpStream,
    rbuf: BytesMut,
    decoder: PduDecoder,
    p: &'a LoginParams<'a>,
    exp_stat_sn: u32,
    last: LoginResponse,
}

impl Exchange<'_> {
    /// Sends one Login Request and collects the whole response text
    /// (following C-bit continuations, RFC 7143 §6.1).
    async fn round(&mut self, csg: u8, transit: bool, keys: &TextPairs) -> Result<(LoginResponse, TextPairs)> {
        let mut data = Vec::new();
        text::encode(keys, &mut data);
        let nsg = if transit { if csg == SECURITY { OPERATIONAL } else { FULL_FEATURE } } else { 0 };
        let mut acc = TextAccumulator::default();
        let mut payload = Bytes::from(data);
        let mut transit = transit;
        loop {
            let req = LoginRequest {
                transit,
                continue_: false,
                csg,
                nsg: if transit { nsg } else { 0 },
                version_max: 0,
                version_min: 0,
                isid: self.p.cfg.isid,
                tsih: self.p.tsih,
                itt: 0,
                cid: self.p.cid,
                cmd_sn: self.p.cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
            };
            let pdu = Pdu::new(req, std::mem::take(&mut payload));
            send_pdu(self.stream, &pdu, &FrameConfig::default()).await?;
            let resp = recv_pdu(
                self.stream,
                &mut self.rbuf,
                &mut self.decoder,
                self.p.cfg.login_timeout,
                "the login response",
            )
            .await?;
            let Bhs::LoginResponse(h) = resp.bhs else {
                return Err(Error::protocol(format!(
                    "expected a Login Response, got a PDU of opcode 0x{:02x}",
                    resp.bhs.opcode() as u8
                )));
            };
            if h.itt != 0 {
                return Err(Error::protocol("Login Response carries another initiator task tag"));
            }
            self.exp_stat_sn = h.stat_sn.wrapping_add(1);
            self.last = h;
            let done = acc.push(&resp.data, h.continue_)?;
            if h.status_class == 1 {
                let pairs = text::parse(&resp.data).unwrap_or_default();
                let addr = pairs.iter().find(|(k, _)| k == "TargetAddress").map(|(_, v)| v.clone());
                let addr = addr.ok_or_else(|| Error::protocol("login redirected without a TargetAddress"))?;
                return Err(Error::Redirected(redirect_address(&addr)?));
            }
            if h.status_class != 0 {
                return Err(Error::Login {
                    target: self.p.target_name.unwrap_or("discovery session").to_string(),
                    status: LoginStatus { class: h.status_class, detail: h.status_detail },
                });
            }
            if let Some(pairs) = done {
                return Ok((h, pairs));
            }
            // The target has more text: ask for it with an empty request.
            transit = false;
        }
    }
}

/// Logs in on `stream` and returns the parameters in force.
pub(crate) async fn login(stream: &mut TcpStream, p: &LoginParams<'_>) -> Result<LoginOutcome> {
    match login_inner(stream, p).await {
        Ok(l) => Ok(LoginOutcome::LoggedIn(Box::new(l))),
        Err(Error::Redirected(to)) => Ok(LoginOutcome::Redirect(to)),
        Err(e) => Err(e),
    }
}

async fn login_inner(stream: &mut TcpStream, p: &LoginParams<'_>) -> Result<LoggedIn> {
    let cfg = p.cfg;
    let mut ex = Exchange {
        stream,
        rbuf: BytesMut::with_capacity(16 * 1024),
        decoder: PduDecoder::new(FrameConfig::default()),
        p,
        exp_stat_sn: p.exp_stat_sn,
        last: LoginResponse::default(),
    };
    let session_type = if p.target_name.is_some() { SessionType::Normal } else { SessionType::Discovery };

    // ---- Security stage (RFC 7143 §6.3.1) ----
    let mut keys: TextPairs = vec![("InitiatorName".into(), cfg.initiator_name.clone())];
    if let Some(alias) = &cfg.initiator_alias {
        keys.push(("InitiatorAlias".into(), alias.clone()));
    }
    match p.target_name {
        Some(t) => {
            keys.push(("SessionType".into(), "Normal".into()));
            keys.push(("TargetName".into(), t.to_string()));
        }
        None => keys.push(("SessionType".into(), "Discovery".into())),
    }
    let mut declared: TextPairs = Vec::new();
    let mut chap = cfg.chap.clone().map(ChapInitiator::new);
    let auth_offer = match &chap {
        None => "None",
        Some(c) if c.is_mutual() => "CHAP",
        Some(_) => "CHAP,None",
    };
    keys.push(("AuthMethod".into(), auth_offer.into()));

    let (mut resp, pairs) = ex.round(SECURITY, chap.is_none(), &keys).await?;
    let chosen = value_of(&pairs, "AuthMethod");
    keep_declared(&pairs, &mut declared);
    match (chosen.as_deref(), &mut chap) {
        (Some("CHAP"), Some(c)) => {
            let (_, pairs) = ex.round(SECURITY, false, &c.algorithm_offer()).await?;
            keep_declared(&pairs, &mut declared);
            let answer = c.respond(&pairs)?;
            let (r, pairs) = ex.round(SECURITY, true, &answer).await?;
            keep_declared(&pairs, &mut declared);
            c.verify_target(&pairs)?;
            resp = r;
        }
        (Some("CHAP"), None) => return Err(Error::ChapRequired),
        // istgt answers Reject when it requires CHAP and we offered None.
        (Some("Reject"), None) => return Err(Error::ChapRequired),
        (Some("Reject"), Some(_)) => return Err(Error::ChapRefused),
        (Some(other), _) if other != "None" => {
            return Err(Error::protocol(format!("target chose AuthMethod={other}, which was not offered")));
        }
        (_, Some(c)) if c.is_mutual() => return Err(Error::ChapRefused),
        _ => {
            if !resp.transit {
                let (r, pairs) = ex.round(SECURITY, true, &Vec::new()).await?;
                keep_declared(&pairs, &mut declared);
                resp = r;
            }
        }
    }
    let mut rounds = 0;
    while !(resp.transit && resp.csg == SECURITY) {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(Error::protocol("security stage did not end"));
        }
        let (r, pairs) = ex.round(SECURITY, true, &Vec::new()).await?;
        keep_declared(&pairs, &mut declared);
        resp = r;
    }

    // ---- Operational stage (RFC 7143 §6.3.2) ----
    let mut negotiated = if resp.nsg == FULL_FEATURE {
        // The target skipped the operational stage: every key keeps its default.
        let n = Negotiator::new(cfg.proposal.clone(), p.tsih == 0, session_type);
        n.result().clone()
    } else {
        let mut neg = Negotiator::new(cfg.proposal.clone(), p.tsih == 0, session_type);
        let mut keys = neg.offer();
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(Error::protocol("operational negotiation did not end"));
            }
            let (r, pairs) = ex.round(OPERATIONAL, true, &keys).await?;
            keys = neg.handle(&pairs)?;
            resp = r;
            if resp.transit && resp.nsg == FULL_FEATURE {
                break;
            }
        }
        if !neg.is_complete() {
            return Err(Error::protocol("target entered full feature phase with offered keys unanswered"));
        }
        neg.result().clone()
    };
    for (k, v) in declared {
        match k.as_str() {
            "TargetAlias" if negotiated.target_alias.is_none() => negotiated.target_alias = Some(v),
            "TargetPortalGroupTag" if negotiated.target_portal_group_tag.is_none() => {
                negotiated.target_portal_group_tag = v.parse().ok();
            }
            _ => {}
        }
    }
    if p.tsih != 0 && resp.tsih != p.tsih {
        return Err(Error::protocol("target answered a connection login with another TSIH"));
    }
    if p.tsih == 0 && resp.tsih == 0 && session_type == SessionType::Normal {
        return Err(Error::protocol("target completed the leading login without assigning a TSIH"));
    }
    Ok(LoggedIn {
        negotiated,
        tsih: resp.tsih,
        exp_stat_sn: ex.exp_stat_sn,
        exp_cmd_sn: resp.exp_cmd_sn,
        max_cmd_sn: resp.max_cmd_sn,
        leftover: ex.rbuf,
    })
}

fn value_of(pairs: &TextPairs, key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// Declarative keys a target may state in the security stage.
fn keep_declared(pairs: &TextPairs, out: &mut TextPairs) {
    for (k, v) in pairs {
        if k == "TargetAlias" || k == "TargetPortalGroupTag" {
            out.push((k.clone(), v.clone()));
        }
    }
}

/// The address of a redirect: `HOST[:PORT][,TPGT]` (RFC 7143 §13.8; the
/// tag is optional here and tgt leaves it out).
fn redirect_address(v: &str) -> Result<PortalAddr> {
    let addr = v.rsplit_once(',').map_or(v, |(a, _)| a);
    PortalAddr::parse(addr).map_err(|_| Error::protocol(format!("login redirected to an invalid TargetAddress {v:?}")))
}
