//! `rsiscsi session list|add-connection|remove-connection|logout|policy|scsi|export|unexport`
//! (Windows `SessionList`, `AddConnection`, `RemoveConnection`,
//! `LogoutTarget`, `SetLoadBalancePolicy`, `ScsiInquiry`-like pass-through).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsiscsi_api::Client;
use rsiscsi_api::types as api;

use super::format::{Table, hexdump, host_port, scsi_status, sense};
use super::{Error, Result, emit, emit_json, ipsec_request, login_options, portal_arg};
use crate::cli::{Common, SessionCmd};

/// SAM-5 / RFC 7143 §11.3: a CDB is at most 16 bytes in the BHS (longer ones
/// need an AHS, which the service does not take).
const MAX_CDB: usize = 16;

pub async fn run(client: &Client, common: &Common, json: bool, cmd: &SessionCmd) -> Result {
    match cmd {
        SessionCmd::List => {
            let l = client.sessions().await?;
            if json {
                return emit_json(&l);
            }
            emit(&session_text(&l.sessions))
        }
        SessionCmd::AddConnection { session, portal, path, ipsec } => {
            let (security_flags, tunnel_outer_address, key) = ipsec_request(path.security_flags, ipsec)?;
            let req = api::AddConnectionRequest {
                portal: portal_arg(portal)?,
                initiator_port: path.port().map_err(Error::Usage)?,
                security_flags,
                login_options: login_options(common)?,
                key,
                tunnel_outer_address,
            };
            let r = client.add_connection(session, &req).await?;
            if json {
                return emit_json(&r);
            }
            // The id alone, so that `C=$(rsiscsi session add-connection ...)` works.
            emit(&format!("{}\n", r.connection_id))
        }
        SessionCmd::RemoveConnection { session, connection } => {
            client.remove_connection(session, connection).await?;
            done(json, &format!("connection {connection} logged out of session {session}\n"))
        }
        SessionCmd::Path { session, connection, weight, primary, standby } => {
            let req = api::PathRequest {
                weight: *weight,
                primary: match (primary, standby) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            };
            let c = client.set_path(session, connection, &req).await?;
            if json {
                return emit_json(&c);
            }
            emit(&format!(
                "connection {} of session {session}: {}, weight {} ({}, {})\n",
                c.connection_id,
                if c.primary { "primary" } else { "standby" },
                c.weight,
                host_port(&c.initiator_address, c.initiator_port),
                c.state
            ))
        }
        SessionCmd::Logout { session } => {
            client.logout(session).await?;
            done(json, &format!("session {session} logged out\n"))
        }
        SessionCmd::Policy { session, policy } => {
            client.set_policy(session, policy.as_str()).await?;
            done(json, &format!("session {session} now spreads commands with {}\n", policy.as_str()))
        }
        SessionCmd::Scsi { session, lun, cdb, data_in, data_out } => {
            let cdb = parse_cdb(cdb)?;
            let data_out =
                match data_out {
                    Some(f) => Some(B64.encode(
                        std::fs::read(f).map_err(|e| Error::Local(format!("cannot read {}: {e}", f.display())))?,
                    )),
                    None => None,
                };
            let req = api::ScsiRequest { lun: *lun, cdb: hex::encode(&cdb), data_in_length: *data_in, data_out };
            let r = client.scsi(session, &req).await?;
            if json {
                emit_json(&r)?;
            } else {
                emit(&scsi_text(&r)?)?;
            }
            // GOOD and CONDITION MET are success (SAM-5 §5.3.1); anything
            // else is shown in full and then fails the command.
            match iscsi_proto::scsi::sense::ScsiStatus::from_u8(r.scsi_status).is_success() {
                true => Ok(()),
                false => Err(Error::ScsiStatus(scsi_status(r.scsi_status))),
            }
        }
        SessionCmd::Export { session, lun, nbd_socket, read_only, export_name } => {
            // The service creates the socket: a relative path is made
            // absolute here, where the user's working directory is known.
            let path = std::path::absolute(nbd_socket)
                .map_err(|e| Error::Local(format!("cannot resolve {}: {e}", nbd_socket.display())))?;
            let req = api::ExportRequest {
                lun: *lun,
                nbd_socket: path.to_string_lossy().into_owned(),
                read_only: *read_only,
                export_name: export_name.clone(),
            };
            let r = client.export(session, &req).await?;
            if json {
                return emit_json(&r);
            }
            emit(&format!(
                "LUN {} of session {session} served{} at nbd+unix:///?socket={} (export {})\n",
                r.lun,
                if r.read_only { " read-only" } else { "" },
                r.nbd_socket,
                r.export_name
            ))
        }
        SessionCmd::Unexport { session, lun } => {
            client.unexport(session, *lun).await?;
            done(json, &format!("LUN {lun} of session {session} no longer served over NBD\n"))
        }
    }
}

/// The answer of a command without a body: `{}` with `--json`, else `text`.
fn done(json: bool, text: &str) -> Result {
    if json { emit_json(&serde_json::json!({})) } else { emit(text) }
}

/// A CDB given as hex, in one argument or several, spaces or colons
/// between bytes allowed: `12 00 00 00 60 00`, `120000006000`, `12:00:...`.
fn parse_cdb(parts: &[String]) -> Result<Vec<u8>> {
    let joined: String = parts.concat().chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    let bytes = hex::decode(&joined).map_err(|e| {
        Error::Usage(format!("CDB {:?} is not hexadecimal bytes ({e}); e.g. \"12 00 00 00 60 00\"", parts.join(" ")))
    })?;
    if bytes.is_empty() || bytes.len() > MAX_CDB {
        return Err(Error::Usage(format!("a CDB of {} byte(s): 1 to {MAX_CDB} are supported", bytes.len())));
    }
    Ok(bytes)
}

fn scsi_text(r: &api::ScsiResponse) -> Result<String> {
    let sense_bytes = hex::decode(&r.sense)
        .map_err(|e| Error::Transport(format!("the service sent sense data that is not hex: {e}")))?;
    let data =
        B64.decode(&r.data).map_err(|e| Error::Transport(format!("the service sent data that is not base64: {e}")))?;
    let mut t = format!("status: {}\n", scsi_status(r.scsi_status));
    if !sense_bytes.is_empty() {
        t.push_str(&format!("sense: {}\n", sense(&sense_bytes)));
    }
    t.push_str(&format!("data: {} byte(s), residual {}\n", data.len(), r.residual));
    t.push_str(&hexdump(&data));
    Ok(t)
}

fn digests(c: &api::Connection) -> String {
    let d = |d: api::DigestType| match d {
        api::DigestType::None => "none",
        api::DigestType::Crc32c => "crc32c",
    };
    format!("{}/{}", d(c.header_digest), d(c.data_digest))
}

/// Each session: a line with its id, target and settings, its connections
/// as a table, then its LUNs as `ls` shows them.
fn session_text(sessions: &[api::Session]) -> String {
    if sessions.is_empty() {
        return "no sessions (log in with `rsiscsi target login IQN`)\n".into();
    }
    let mut out = String::new();
    for s in sessions {
        out.push_str(&format!(
            "Session {} {} ({}, policy {}, ISID {}, TSIH {}, {} connection(s))\n",
            s.session_id,
            s.target_name,
            if s.persistent { "persistent" } else { "not persistent" },
            s.load_balance_policy,
            s.isid,
            s.tsih,
            s.connections.len()
        ));
        out.push_str(&recovery_text(s));
        let mut t = Table::new(&[
            "CONNECTION",
            "CID",
            "LOCAL",
            "TARGET",
            "STATE",
            "DIGESTS",
            "COMMANDS",
            "ERRORS",
            "RECONNECTS",
            "P50/P99-US",
            "PATH",
            "WEIGHT",
        ])
        .indented("  ");
        for c in &s.connections {
            t.row(vec![
                c.connection_id.clone(),
                c.cid.to_string(),
                host_port(&c.initiator_address, c.initiator_port),
                host_port(&c.target_address, c.target_port),
                c.state.clone(),
                digests(c),
                c.counters.commands.to_string(),
                c.counters.errors.to_string(),
                c.counters.reconnects.to_string(),
                format!("{}/{}", c.counters.latency_us.p50, c.counters.latency_us.p99),
                (if c.primary { "primary" } else { "standby" }).to_string(),
                c.weight.to_string(),
            ]);
        }
        out.push_str(&t.render());
        for c in &s.connections {
            if let Some(name) = &c.ipsec {
                out.push_str(&format!("  Connection {} protected by IPsec (charon: {name})\n", c.connection_id));
            }
            if let Some(r) = c.link_rate_bytes_per_sec {
                out.push_str(&format!(
                    "  Connection {} link rate {:.1} MB/s (measured, weighs it under least-queue-depth)\n",
                    c.connection_id,
                    r as f64 / 1e6
                ));
            }
        }
        for d in &s.devices {
            out.push_str(&format!("  Lun {}: {}\n", d.lun, device_text(d)));
        }
        for x in &s.exports {
            out.push_str(&format!(
                "  Lun {} served over NBD{} at nbd+unix:///?socket={} (export {}, {} client(s))\n",
                x.lun,
                if x.read_only { " read-only" } else { "" },
                x.nbd_socket,
                x.export_name,
                x.clients
            ));
        }
    }
    out
}

/// The session's recovery budget (Windows' MaxRequestHoldTime and
/// LinkDownTime) and what recovery did in it so far.
fn recovery_text(s: &api::Session) -> String {
    let r = &s.recovery_counters;
    format!(
        "  Recovery: hold time {} s, link-down time {} s; {} recovered, {} connection(s) reinstated, \
         {} session(s) reinstated, {} given up\n",
        s.max_request_hold_time_s,
        s.link_down_time_s,
        r.recoveries,
        r.connections_reinstated,
        r.sessions_reinstated,
        r.give_ups
    )
}

/// SPC-4 Table 53: the peripheral device types a user meets.
fn device_text(d: &api::Device) -> String {
    let kind = match d.peripheral_type {
        0x00 => "disk".to_string(),
        0x01 => "tape".to_string(),
        0x05 => "cd/dvd".to_string(),
        0x0c => "storage array controller".to_string(),
        0x0d => "enclosure".to_string(),
        other => format!("device type 0x{other:02x}"),
    };
    let ident = [d.vendor.trim(), d.product.trim(), d.revision.trim()].join(" ");
    if d.block_size > 0 && d.blocks > 0 {
        format!(
            "{kind}, {ident}, {} bytes ({} blocks of {})",
            d.blocks.saturating_mul(u64::from(d.block_size)),
            d.blocks,
            d.block_size
        )
    } else {
        format!("{kind}, {ident}, -")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdb_hex_forms() {
        let v = |s: &[&str]| parse_cdb(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(v(&["12 00 00 00 60 00"]).unwrap(), [0x12, 0, 0, 0, 0x60, 0]);
        assert_eq!(v(&["12", "00", "00", "00", "60", "00"]).unwrap(), [0x12, 0, 0, 0, 0x60, 0]);
        assert_eq!(v(&["25:00:00:00:00:00:00:00:00:00"]).unwrap().len(), 10);
        let e = v(&["12 0x 00"]).unwrap_err();
        assert_eq!(e.exit_code(), super::super::EXIT_USAGE);
        assert!(e.to_string().starts_with("CDB \"12 0x 00\" is not hexadecimal bytes"), "{e}");
        assert!(v(&["123"]).is_err());
        assert!(v(&[&"00".repeat(17)]).unwrap_err().to_string().contains("a CDB of 17 byte(s)"));
    }

    #[test]
    fn scsi_answer_text() {
        let r = api::ScsiResponse {
            scsi_status: 0,
            sense: String::new(),
            data: B64.encode([0u8, 0, 0x7f, 0xff, 0, 0, 2, 0]),
            residual: 0,
        };
        assert_eq!(
            scsi_text(&r).unwrap(),
            "status: GOOD (0x00)\ndata: 8 byte(s), residual 0\n\
             00000000  00 00 7f ff 00 00 02 00                           |........|\n"
        );
    }

    #[test]
    fn session_text_shows_the_recovery_budget_and_counts() {
        let s = api::Session {
            session_id: "ab-4000000000000001".into(),
            initiator_name: "iqn.i".into(),
            target_name: "iqn.t".into(),
            isid: "80b295b4a6ba".into(),
            tsih: 2,
            persistent: true,
            load_balance_policy: "round-robin".into(),
            parameters: api::SessionParameters::default(),
            connections: Vec::new(),
            devices: Vec::new(),
            counters: api::Counters::default(),
            max_request_hold_time_s: 30,
            link_down_time_s: 5,
            recovery_counters: api::RecoveryCounters {
                recoveries: 2,
                connections_reinstated: 1,
                sessions_reinstated: 1,
                give_ups: 0,
            },
            exports: Vec::new(),
        };
        let text = session_text(&[s]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "Session ab-4000000000000001 iqn.t (persistent, policy round-robin, ISID 80b295b4a6ba, TSIH 2, 0 connection(s))",
                "  Recovery: hold time 30 s, link-down time 5 s; 2 recovered, 1 connection(s) reinstated, \
                 1 session(s) reinstated, 0 given up",
            ]
        );
    }

    /// A protected connection is named with its SA, never with a key.
    #[test]
    fn session_text_names_the_ipsec_sa_of_each_protected_connection() {
        let conn = |id: &str, ipsec: Option<&str>| api::Connection {
            connection_id: id.into(),
            cid: 0,
            initiator_address: "198.18.9.1".into(),
            initiator_port: 40000,
            target_address: "198.18.9.2".into(),
            target_port: 3260,
            state: "full-feature".into(),
            primary: true,
            weight: 1,
            header_digest: api::DigestType::None,
            data_digest: api::DigestType::None,
            max_recv_data_segment_length: 262144,
            counters: api::Counters::default(),
            ipsec: ipsec.map(str::to_string),
            link_rate_bytes_per_sec: None,
        };
        let s = api::Session {
            session_id: "ab-4000000000000001".into(),
            initiator_name: "iqn.i".into(),
            target_name: "iqn.t".into(),
            isid: "80b295b4a6ba".into(),
            tsih: 2,
            persistent: false,
            load_balance_policy: "round-robin".into(),
            parameters: api::SessionParameters::default(),
            connections: vec![conn("ab-1", Some("rsiscsi-7-ab-1")), {
                let mut c = conn("ab-2", None);
                c.link_rate_bytes_per_sec = Some(121_453_867);
                c
            }],
            devices: Vec::new(),
            counters: api::Counters::default(),
            max_request_hold_time_s: 30,
            link_down_time_s: 5,
            recovery_counters: api::RecoveryCounters::default(),
            exports: Vec::new(),
        };
        let text = session_text(&[s]);
        assert!(text.contains("  Connection ab-1 protected by IPsec (charon: rsiscsi-7-ab-1)\n"), "{text}");
        assert!(!text.contains("Connection ab-2 protected"), "{text}");
        // A measured link rate shows where it was measured.
        assert!(
            text.contains("  Connection ab-2 link rate 121.5 MB/s (measured, weighs it under least-queue-depth)\n"),
            "{text}"
        );
        assert!(!text.contains("Connection ab-1 link rate"), "{text}");
    }

    #[test]
    fn device_lines_match_ls() {
        let d = api::Device {
            lun: 1,
            peripheral_type: 0,
            vendor: "IET     ".into(),
            product: "VIRTUAL-DISK    ".into(),
            revision: "0001".into(),
            block_size: 512,
            blocks: 524288,
        };
        assert_eq!(device_text(&d), "disk, IET VIRTUAL-DISK 0001, 268435456 bytes (524288 blocks of 512)");
    }
}
