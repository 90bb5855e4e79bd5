//! One function per subcommand, and the exit status of each failure.

use std::fmt;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iscsi_initiator::discovery::{DiscoveredTarget, send_targets};
use iscsi_initiator::ipsec::{IpsecConfig, IpsecError, StrongSwan};
use iscsi_initiator::model::Status;
use iscsi_initiator::model::options::{ISCSI_ANY_INITIATOR_PORT, LoginOptions, Portal};
use iscsi_initiator::scsi::Capacity;
use iscsi_initiator::session::ConnectionLogin;
use iscsi_initiator::{Error as InitError, ErrorClass, PortalAddr, RecoveryBudget, Session, SessionConfig};
use iscsi_proto::negotiation::Digest;
use iscsi_proto::scsi::data::{StandardInquiry, parse_vpd_device_identification, parse_vpd_unit_serial};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cli::{Cli, Command, Common, DigestArg, IpsecArgs, McsArgs, ProgressMode, SessionArgs};
use crate::url::{IscsiUrl, redact};
use crate::{config, creds};

pub type CmdResult<T = ()> = Result<T, CmdError>;

/// Exit status of a failure not told apart below: a SCSI error, a local
/// file that cannot be read or written, a check made here.
pub const EXIT_FAILED: u8 = 1;
/// Exit status when authentication failed (CHAP, or not authorized).
pub const EXIT_AUTHENTICATION: u8 = 4;
/// Exit status when the target refused what was asked or broke the protocol.
pub const EXIT_REFUSED: u8 = 5;
/// Exit status when the target could not be reached, went away or did not
/// answer in time, recovery included.
pub const EXIT_UNREACHABLE: u8 = 6;

/// The exit status for a failure of `class` (the table in `rsiscsi --help`;
/// 2 and 3 are the usage error and the service's absence).
pub fn exit_status(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Authentication => EXIT_AUTHENTICATION,
        ErrorClass::Refused => EXIT_REFUSED,
        ErrorClass::Unreachable => EXIT_UNREACHABLE,
        ErrorClass::Other => EXIT_FAILED,
    }
}

/// Why a one-shot command failed: the initiator's error kept whole (its
/// class picks the exit status), or a line with its class.
#[derive(Debug)]
pub enum CmdError {
    Init(InitError),
    Failed {
        message: String,
        class: ErrorClass,
    },
    /// A signal stopped the command; `status` is 128 + its number, as a
    /// shell reports a process the signal killed.
    Interrupted {
        message: String,
        status: u8,
    },
}

impl CmdError {
    pub fn class(&self) -> ErrorClass {
        match self {
            CmdError::Init(e) => e.class(),
            CmdError::Failed { class, .. } => *class,
            CmdError::Interrupted { .. } => ErrorClass::Other,
        }
    }

    pub fn exit_status(&self) -> u8 {
        match self {
            CmdError::Interrupted { status, .. } => *status,
            _ => exit_status(self.class()),
        }
    }

    /// The same failure, its line prefixed with what was being done.
    pub fn context(self, what: &str) -> CmdError {
        CmdError::Failed { message: format!("{what}: {self}"), class: self.class() }
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Init(e) => e.fmt(f),
            CmdError::Failed { message, .. } | CmdError::Interrupted { message, .. } => f.write_str(message),
        }
    }
}

impl From<InitError> for CmdError {
    fn from(e: InitError) -> Self {
        CmdError::Init(e)
    }
}

/// A management-model status: growing a session (`add_connection`).
impl From<Status> for CmdError {
    /// The words first, the code at the end, as the service's errors show it.
    fn from(st: Status) -> Self {
        let message = format!("{} ({}, 0x{:08X})", st.message, st.code.name(), st.code.as_u32());
        CmdError::Failed { class: st.code.class(), message }
    }
}

impl From<String> for CmdError {
    fn from(message: String) -> Self {
        CmdError::Failed { message, class: ErrorClass::Other }
    }
}

impl From<&str> for CmdError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// NOP-Out keepalive of the one-shot commands (RFC 7143 §11.18): a target
/// that goes silent is noticed within interval + timeout, ~10 s. The hold
/// time counts from when the silence began, and a silence that comes back
/// on the reinstated connection within it continues it (the library's
/// `Silences`), so a silent target ends a command within about 10 s plus
/// the time to notice the silence again (~22 s by default). Shorter pings
/// were tried (4 s): a busy loopback host then missed a ping's answer.
const NOP_INTERVAL: Duration = Duration::from_secs(5);
const NOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes per SCSI command in `cp`, and how many are in flight at once.
const CHUNK: u64 = 1 << 20;
const DEPTH: usize = 8;

pub async fn run(cli: Cli) -> CmdResult {
    let ipsec = ipsec_of(&cli.command).map(|v| v.map(std::path::Path::to_path_buf));
    if let Some(vici) = &ipsec {
        remove_stale(vici.as_deref()).await;
    }
    let r = run_command(cli).await;
    if ipsec.is_some() && !iscsi_initiator::ipsec::finish_cleanups(IPSEC_CLEANUP_LIMIT) {
        tracing::warn!(
            "some IPsec connections were still being removed from charon at exit; the next run removes them"
        );
    }
    r
}

/// How long a one-shot command waits at its end for the removal of IPsec
/// protections its dropped connections started.
const IPSEC_CLEANUP_LIMIT: Duration = Duration::from_secs(5);

/// The `--vici-socket` of a one-shot command that asked for IPsec
/// (`Some(None)`: the default socket); `None` without `--ipsec`.
fn ipsec_of(command: &Command) -> Option<Option<&std::path::Path>> {
    let s = match command {
        Command::Discover { session, .. }
        | Command::Ls { session, .. }
        | Command::Inquiry { session, .. }
        | Command::Capacity { session, .. }
        | Command::Cp { session, .. } => session,
        Command::Bench(b) => &b.session,
        Command::Nbd(n) => &n.session,
        _ => return None,
    };
    s.ipsec.ipsec.map(|_| s.vici_socket.as_deref())
}

/// Removes from charon what earlier runs that died left under our names
/// (their SAs, connections and keys), before this one adds its own; a
/// charon that does not answer is left to the login to report.
async fn remove_stale(vici: Option<&std::path::Path>) {
    match strongswan(vici).remove_stale().await {
        Ok(names) if !names.is_empty() => tracing::info!("removed what dead processes left in charon: {names:?}"),
        Ok(_) => {}
        Err(e) => tracing::debug!("could not look for leftovers in charon: {e}"),
    }
}

/// charon at `--vici-socket`, else at RSISCSI_VICI_SOCKET, else at its default.
fn strongswan(vici: Option<&std::path::Path>) -> StrongSwan {
    match vici {
        Some(p) => StrongSwan::new(p),
        None => StrongSwan::from_env(),
    }
}

/// The IPsec of a one-shot command's connections (RFC 7143 §9.3, RFC 3723;
/// Windows' SecurityFlags, Key and SetIscsiTunnelModeOuterAddress): from
/// `--ipsec`, the key from `--ipsec-psk-file` or RSISCSI_IPSEC_PSK, charon
/// as the provider. Checked before anything connects, so that a missing
/// key or a key file others can read is said before any packet is sent.
pub(crate) fn ipsec_config(args: &IpsecArgs, vici: Option<&std::path::Path>) -> CmdResult<IpsecConfig> {
    if args.ipsec.is_none() {
        return Ok(IpsecConfig::default());
    }
    args.check()?;
    let mut c = IpsecConfig::new(args.security_flags()).with_provider(strongswan(vici));
    if let Some(k) = creds::ipsec_psk(args.ipsec_psk_file.as_deref())? {
        c = c.with_key(k);
    }
    if let Some(p) = &args.ipsec_tunnel_peer {
        c = c.with_tunnel_outer_address(p.clone());
    }
    c.plan().map_err(|e| ipsec_failed(&e))?;
    Ok(c)
}

/// An IPsec failure in the user's terms: what to look at, then the
/// Windows status (ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE,
/// ISDSC_FAILED_TO_CONFIGURE_IPSEC, ...) with its code. Exit status 1:
/// nothing was sent to the target in clear text.
pub(crate) fn ipsec_failed(e: &IpsecError) -> CmdError {
    let hint = match e {
        IpsecError::NoKey => format!(
            ": give the pre-shared key in a private file with --ipsec-psk-file FILE, or in {}",
            creds::IPSEC_PSK_ENV
        ),
        IpsecError::NoProvider | IpsecError::Unreachable { .. } => format!(
            "; is charon running with its vici plugin? Give its socket with --vici-socket PATH or {} \
             (default {})",
            iscsi_initiator::ipsec::VICI_SOCKET_ENV,
            iscsi_initiator::ipsec::DEFAULT_VICI_SOCKET
        ),
        IpsecError::NotEstablished { .. } | IpsecError::Refused { .. } | IpsecError::Timeout(_) => {
            "; check the pre-shared key (--ipsec-psk-file or RSISCSI_IPSEC_PSK), the mode and the tunnel peer \
             (--ipsec-tunnel-peer): the IKE peer must accept them"
                .to_string()
        }
        _ => String::new(),
    };
    let code = e.code();
    CmdError::Failed {
        message: format!(
            "IPsec failed: {e}{hint}; nothing was sent in clear text ({}, 0x{:08X})",
            code.name(),
            code.as_u32()
        ),
        class: ErrorClass::Other,
    }
}

async fn run_command(cli: Cli) -> CmdResult {
    match &cli.command {
        Command::Discover { portal: Some(portal), json, session, .. } => {
            discover(&cli.common, portal, *json, session).await
        }
        Command::Discover { isns: Some(server), json, session, .. } => {
            discover_isns(&cli.common, server, *json, session).await
        }
        Command::Discover { .. } => Err("discover needs a portal or --isns SERVER".into()),
        Command::Ls { url, json, mcs, session } => ls(&cli.common, url, *json, mcs, session).await,
        Command::Inquiry { url, json, mcs, session } => inquiry(&cli.common, url, *json, mcs, session).await,
        Command::Capacity { url, json, session } => capacity(&cli.common, url, *json, session).await,
        Command::Cp { src, dst, offset, length, progress, mcs, session } => {
            let mode = progress.mode(std::io::stderr().is_terminal());
            cp(&cli.common, src, dst, *offset, *length, mode, mcs, session).await
        }
        Command::Bench(args) => crate::bench::run(&cli.common, args).await,
        Command::Nbd(args) => crate::nbd::run(&cli.common, args).await,
        // main.rs sends these to crate::service before getting here.
        Command::Portal { .. }
        | Command::Isns { .. }
        | Command::Target { .. }
        | Command::Session { .. }
        | Command::Persistent { .. }
        | Command::Initiator { .. } => Err("a service command reached the one-shot runner".into()),
        // main.rs prints these without a session.
        Command::Completions { .. } => Err("a completions command reached the one-shot runner".into()),
    }
}

fn digest(d: DigestArg) -> Vec<Digest> {
    match d {
        DigestArg::None => vec![Digest::None],
        DigestArg::Crc32c => vec![Digest::Crc32c],
    }
}

/// The settings of a one-shot command's session: who we are, CHAP and
/// digests from the options, a recovery budget of `--hold-time`, the
/// MaxRecvDataSegmentLength asked for.
pub(crate) fn session_config(
    common: &Common,
    url: Option<&IscsiUrl>,
    session: &SessionArgs,
) -> CmdResult<SessionConfig> {
    let name = match &common.initiator_name {
        Some(n) => {
            config::validate_name(n)?;
            n.clone()
        }
        None => config::initiator_name(),
    };
    let mut cfg = SessionConfig::new(name);
    cfg.chap = creds::chap_config(common, url)?;
    cfg.proposal.header_digest = digest(common.header_digest);
    cfg.proposal.data_digest = digest(common.data_digest);
    cfg.recovery_budget = RecoveryBudget::hold(Duration::from_secs(session.hold_time));
    if let Some(n) = session.max_recv_data_segment_length {
        cfg.proposal.max_recv_data_segment_length = n;
    }
    cfg.nop_interval = NOP_INTERVAL;
    cfg.nop_timeout = NOP_TIMEOUT;
    cfg.ipsec = ipsec_config(&session.ipsec, session.vici_socket.as_deref())?;
    Ok(cfg)
}

/// How long a one-shot command waits for its logout (RFC 7143 §11.14): it
/// is the last step and its answer changes nothing, so a target that does
/// not answer must not hold the command's result back.
const LOGOUT_LIMIT: Duration = Duration::from_secs(5);

/// The same once recovery gave up on a command: the target has shown it
/// cannot be relied on, and the user is waiting for the error.
const LOGOUT_LIMIT_AFTER_GIVE_UP: Duration = Duration::from_secs(1);

/// Logs `s` out, waiting at most [`LOGOUT_LIMIT`]. With every connection
/// still being recovered the library closes the session without a Logout
/// (the target ends it with its last connection, §6.3).
pub(crate) async fn logout(s: &Session) {
    let limit = if s.recovery_stats().give_ups > 0 { LOGOUT_LIMIT_AFTER_GIVE_UP } else { LOGOUT_LIMIT };
    if tokio::time::timeout(limit, s.logout()).await.is_err() {
        tracing::info!("no answer to the logout within {} s; leaving", limit.as_secs());
    }
}

/// Writes a command's whole output to stdout. A closed pipe (`| head`) ends
/// the output quietly instead of panicking as `println!` would.
fn emit(text: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(format!("cannot write to stdout: {err}").into()),
    }
}

fn to_json<T: Serialize>(v: &T) -> CmdResult<String> {
    serde_json::to_string_pretty(v)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|err| format!("cannot encode JSON: {err}").into())
}

fn e(err: InitError) -> CmdError {
    err.into()
}

fn parse_url(s: &str) -> CmdResult<IscsiUrl> {
    IscsiUrl::parse(s).map_err(|e| e.to_string().into())
}

/// Whether a `cp` side is meant as a LUN: anything starting `iscsi:` in any
/// case, so that a mistyped URL is refused as one instead of becoming a
/// file of that name.
fn is_lun_spec(spec: &str) -> bool {
    spec.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("iscsi:"))
}

/// The size of a local file or block device (whose metadata says 0);
/// `None` for a character device, which has none.
fn file_size(f: &std::fs::File) -> std::io::Result<Option<u64>> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileTypeExt;
    let m = f.metadata()?;
    if m.file_type().is_block_device() {
        let mut f = f;
        return f.seek(SeekFrom::End(0)).map(Some);
    }
    if m.file_type().is_char_device() {
        return Ok(None);
    }
    Ok(Some(m.len()))
}

/// `cannot write NAME: ...`; a terminal or other device without offsets is
/// named as such.
fn io_failed(what: &str, name: &str, err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::NotSeekable {
        return format!("cannot {what} {name}: it has no offsets (a terminal?): give a file or a block device");
    }
    format!("cannot {what} {name}: {err}")
}

/// A URL that must name a target and a LUN.
pub(crate) fn lun_url(s: &str) -> CmdResult<(IscsiUrl, String, u64)> {
    let u = parse_url(s)?;
    match (u.target.clone(), u.lun) {
        (Some(t), Some(l)) => Ok((u, t, l)),
        _ => Err(format!("{} does not name a LUN: expected iscsi://HOST[:PORT]/IQN/LUN", redact(s)).into()),
    }
}

#[derive(Serialize)]
struct PortalJson {
    address: String,
    port: u16,
    tpgt: u16,
    target: String,
}

async fn discover(common: &Common, portal: &str, json: bool, session: &SessionArgs) -> CmdResult {
    let addr: PortalAddr = crate::url::parse_portal(portal).map_err(|err| err.to_string())?;
    let cfg = session_config(common, None, session)?;
    let who = LoginWho::new(&addr, &cfg);
    let targets = send_targets(&addr, cfg).await.map_err(|err| who.explain(err))?;
    let rows: Vec<PortalJson> = targets
        .iter()
        .flat_map(|t| {
            t.portals.iter().map(|p| PortalJson {
                address: p.addr.host.clone(),
                port: p.addr.port,
                tpgt: p.tpgt,
                target: t.name.clone(),
            })
        })
        .collect();
    if json {
        return emit(&to_json(&rows)?);
    }
    let mut text = String::new();
    for t in &targets {
        for p in &t.portals {
            let _ = writeln!(text, "{p} {}", t.name);
        }
    }
    emit(&text)
}

/// How long each exchange with an iSNS server may take.
const ISNS_TIMEOUT: Duration = Duration::from_secs(10);

/// `discover --isns`: register with the iSNS server, list the targets its
/// discovery domains show us, deregister (RFC 4171 §5.6.5.1, §5.6.5.2,
/// §5.6.5.4); the same lines as SendTargets discovery.
async fn discover_isns(common: &Common, server: &str, json: bool, session: &SessionArgs) -> CmdResult {
    let name = session_config(common, None, session)?.initiator_name;
    let targets = iscsi_initiator::isns::discover(server, &name, ISNS_TIMEOUT)
        .await
        .map_err(|err| CmdError::Failed { message: err.to_string(), class: err.class() })?;
    let mut rows = Vec::new();
    let mut text = String::new();
    for t in &targets {
        for p in &t.portals {
            rows.push(PortalJson {
                address: p.addr.host.clone(),
                port: p.addr.port,
                tpgt: p.tpgt,
                target: t.name.clone(),
            });
            let _ = writeln!(text, "{p} {}", t.name);
        }
    }
    if json {
        return emit(&to_json(&rows)?);
    }
    emit(&text)
}

pub(crate) async fn login(url: &IscsiUrl, target: &str, mut cfg: SessionConfig, mcs: &McsArgs) -> CmdResult<Session> {
    check_mcs(mcs)?;
    apply_from(&mut cfg, &url.portal, mcs)?;
    let ipsec = cfg.ipsec.clone();
    let s = open_session(&url.portal, Some(target), cfg).await?;
    grow(&s, url, mcs, &ipsec).await?;
    Ok(s)
}

/// What a failed login is explained with: who we were and whether CHAP
/// was given.
pub(crate) struct LoginWho {
    initiator: String,
    chap: bool,
    portal: String,
}

impl LoginWho {
    pub(crate) fn new(portal: &PortalAddr, cfg: &SessionConfig) -> Self {
        LoginWho { initiator: cfg.initiator_name.clone(), chap: cfg.chap.is_some(), portal: portal.to_string() }
    }

    /// A login failure in the user's terms: which option to look at for a
    /// refused CHAP login, which initiator name a target does not allow,
    /// and a port that does not speak iSCSI. The status codes stay at the
    /// end; the class (the exit status) is the initiator error's.
    pub(crate) fn explain(&self, err: InitError) -> CmdError {
        let class = err.class();
        let message = match &err {
            InitError::Login { target, status } if (status.class, status.detail) == (2, 1) => {
                let what = if self.chap {
                    "check the CHAP user and secret (--chap-user, RSISCSI_CHAP_SECRET or --chap-secret-file)"
                } else {
                    "the target requires CHAP: give --chap-user, and the secret in RSISCSI_CHAP_SECRET or \
                     --chap-secret-file"
                };
                format!("login to {target} failed: authentication failed: {what} (status class 0x02, detail 0x01)")
            }
            InitError::ChapRequired => {
                format!("{err}: give --chap-user, and the secret in RSISCSI_CHAP_SECRET or --chap-secret-file")
            }
            InitError::Login { target, status } if (status.class, status.detail) == (2, 2) => format!(
                "login to {target} failed: authorization failed: the target does not allow initiator {}; allow it \
                 on the target or log in as another with --initiator-name (status class 0x02, detail 0x02)",
                self.initiator
            ),
            InitError::Pdu(_) | InitError::Timeout(_) => format!(
                "{} did not answer the login as an iSCSI target does (is it the target's iSCSI port?): {err}",
                self.portal
            ),
            InitError::Io(_) | InitError::ConnectionLost(_) => format!(
                "{} closed the connection during the login (is it the target's iSCSI port?): {err}",
                self.portal
            ),
            InitError::Ipsec(e) => return ipsec_failed(e),
            _ => return CmdError::Init(err),
        };
        CmdError::Failed { message, class }
    }
}

/// `Session::login`, a failure explained by [`LoginWho::explain`]; a
/// target name the portal does not have is followed by the names it has.
pub(crate) async fn open_session(portal: &PortalAddr, target: Option<&str>, cfg: SessionConfig) -> CmdResult<Session> {
    let who = LoginWho::new(portal, &cfg);
    let discovery = cfg.clone();
    match Session::login(portal, target, cfg).await {
        Ok(s) => Ok(s),
        Err(InitError::Login { target: name, status }) if (status.class, status.detail) == (2, 3) => {
            let known = match send_targets(portal, discovery).await {
                Ok(targets) => targets.into_iter().map(|t| t.name).collect(),
                Err(_) => Vec::new(),
            };
            let message = format!("login to {name} failed: {}", not_found(&name, &known, portal));
            Err(CmdError::Failed { message, class: ErrorClass::Refused })
        }
        Err(err) => Err(who.explain(err)),
    }
}

/// `target not found; ... (status class 0x02, detail 0x03)`: the name that
/// differs only in case (iSCSI names are compared after lowercasing, RFC
/// 3722, but not every target does), or the few names the portal has.
fn not_found(name: &str, known: &[String], portal: &PortalAddr) -> String {
    let hint = if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        format!("; the portal has {k} (iSCSI names are written in lowercase)")
    } else if known.is_empty() {
        format!("; `rsiscsi discover {portal}` lists the portal's targets")
    } else if known.len() <= 4 {
        format!("; the portal has {}", known.join(", "))
    } else {
        format!("; the portal has {} targets (`rsiscsi discover {portal}` lists them)", known.len())
    };
    format!("target not found{hint} (status class 0x02, detail 0x03)")
}

/// `--add-portal` is for the added connections and `--weights` gives one
/// weight per connection: both refused before any login when they do not
/// fit; every `@LOCAL` must name an initiator port of this host that has
/// an address of its portal's family.
pub(crate) fn check_mcs(mcs: &McsArgs) -> CmdResult {
    if mcs.connections < 2 && !mcs.add_portals.is_empty() {
        return Err("--add-portal names portals for the added connections: give --connections 2 or more".into());
    }
    if !mcs.weights.is_empty() {
        let (n, want) = (mcs.weights.len(), usize::from(mcs.connections));
        if n != want {
            return Err(format!(
                "--weights gives {n} weight{} for {want} connection{}: give one per connection, the leading one first",
                if n == 1 { "" } else { "s" },
                if want == 1 { "" } else { "s" }
            )
            .into());
        }
        if mcs.weights.iter().all(|w| *w == 0) {
            return Err("--weights are all 0: no connection would carry commands (0 keeps one out of use)".into());
        }
    }
    for a in &mcs.add_portals {
        if let Some(l) = &a.local {
            crate::local::resolve(l, &a.portal).map_err(|m| format!("--add-portal {}@{l}: {m}", a.portal))?;
        }
    }
    Ok(())
}

/// `--from`: the local address the leading connection (and its
/// reinstatement) connects from, of the family of `portal`.
pub(crate) fn apply_from(cfg: &mut SessionConfig, portal: &PortalAddr, mcs: &McsArgs) -> CmdResult {
    if let Some(l) = &mcs.from {
        cfg.local_address = Some(crate::local::resolve(l, portal).map_err(|m| format!("--from {l}: {m}"))?);
    }
    Ok(())
}

/// Grows a fresh session to `mcs.connections` connections with
/// add_connection (the session's own login settings, the IPsec of the
/// leading connection: same flags, key and tunnel peer, each connection
/// with an SA of its own), sets its load-balance policy and the weights of
/// `--weights`; logs out on failure. The added connections go to
/// `mcs.add_portals` in turn, or to the URL's portal, each from its
/// `@LOCAL` initiator port (any without one). The caller has checked `mcs`
/// with [`check_mcs`] before logging in.
pub(crate) async fn grow(s: &Session, url: &IscsiUrl, mcs: &McsArgs, ipsec: &IpsecConfig) -> CmdResult {
    s.set_load_balance_policy(mcs.policy);
    let own = [crate::local::AddPortal { portal: url.portal.clone(), local: None }];
    let portals = if mcs.add_portals.is_empty() { &own[..] } else { &mcs.add_portals[..] };
    let wanted = usize::from(mcs.connections);
    for (i, add) in portals.iter().cycle().take(wanted.saturating_sub(1)).enumerate() {
        let addr = &add.portal;
        let added = match &add.local {
            None => {
                let portal = Portal::new(addr.host.clone(), addr.port);
                let key = ipsec.key.as_ref().map(|k| k.expose()).unwrap_or_default();
                s.add_connection_with(
                    ISCSI_ANY_INITIATOR_PORT,
                    &portal,
                    ipsec.security_flags,
                    &LoginOptions::default(),
                    key,
                    ipsec.tunnel_outer_address.as_deref(),
                )
                .await
                .map_err(CmdError::from)
            }
            // The session's login settings and IPsec (the leading
            // connection's), from this address; kept for its reinstatement.
            Some(l) => match crate::local::resolve(l, addr) {
                Ok(ip) => {
                    let how = ConnectionLogin { local_address: Some(ip), ..ConnectionLogin::default() };
                    s.connect_more(addr, &how).await.map_err(CmdError::from)
                }
                Err(m) => Err(CmdError::from(format!("@{l}: {m}"))),
            },
        };
        if let Err(err) = added {
            logout(s).await;
            let at = add.local.as_ref().map(|l| format!(" from {l}")).unwrap_or_default();
            return Err(err.context(&format!("connection {} of {wanted} (to {addr}{at}) could not be added", i + 2)));
        }
    }
    if !mcs.weights.is_empty() {
        for (c, w) in s.connections().into_iter().zip(&mcs.weights) {
            if let Err(err) = s.set_path(c.id, c.primary, *w) {
                logout(s).await;
                return Err(CmdError::from(err).context("--weights"));
            }
        }
    }
    Ok(())
}

/// Checks that the LUN exists before using it, for a clear message;
/// returns the target's LUNs.
async fn check_lun(s: &Session, lun: u64) -> CmdResult<Vec<u64>> {
    let luns = s.report_luns().await.map_err(e)?;
    if luns.contains(&lun) {
        return Ok(luns);
    }
    Err(InitError::LunNotFound { lun, available: lun_list(&luns) }.into())
}

/// `LUN 1`, `LUNs 0, 1`, `no LUNs`.
fn lun_list(luns: &[u64]) -> String {
    let list: Vec<String> = luns.iter().map(u64::to_string).collect();
    match luns.len() {
        0 => "no LUNs".to_string(),
        1 => format!("LUN {}", list.join("")),
        _ => format!("LUNs {}", list.join(", ")),
    }
}

/// A direct-access block device (SBC): peripheral qualifier 0 (connected)
/// and device type 0x00 (SPC-4 §6.6.2).
fn is_disk(inq: &StandardInquiry) -> bool {
    inq.peripheral_qualifier == 0 && inq.device_type == 0x00
}

/// Checks, before any READ CAPACITY, READ or WRITE, that the LUN exists and
/// is a disk: another device (tgt's LUN 0 is its controller) would answer
/// them with "invalid command operation code". The message names what the
/// LUN is and which LUNs of the target are disks. A disk costs one INQUIRY,
/// as many commands as the REPORT LUNS it replaces; REPORT LUNS is asked
/// only to explain a failure (a LUN that is not there answers INQUIRY with
/// peripheral qualifier 3, SPC-4 §6.6.2, or an error).
pub(crate) async fn check_disk(s: &Session, target: &str, lun: u64) -> CmdResult {
    let inq = match s.inquiry(lun).await {
        Ok(i) if is_disk(&i) => return Ok(()),
        Ok(i) => Ok(i),
        // Only a SCSI answer (CHECK CONDITION) may mean a missing LUN; a
        // session that failed or gave up fails here, not after another
        // command's hold time.
        Err(err @ InitError::Scsi(_)) => Err(err),
        Err(err) => return Err(err.into()),
    };
    let luns = check_lun(s, lun).await?;
    let inq = inq.map_err(|err| CmdError::from(err).context(&format!("INQUIRY of LUN {lun}")))?;
    let mut disks = Vec::new();
    for other in luns.into_iter().filter(|l| *l != lun) {
        if s.inquiry(other).await.is_ok_and(|i| is_disk(&i)) {
            disks.push(other);
        }
    }
    Err(not_a_disk(target, lun, &inq, &disks).into())
}

/// `LUN 0 of IQN is a storage array controller, not a disk; its disks are LUN 1`.
fn not_a_disk(target: &str, lun: u64, inq: &StandardInquiry, disks: &[u64]) -> String {
    let name = inq.device_type_name();
    let what = match (inq.peripheral_qualifier, inq.device_type) {
        (0, 0x1f) => "has no device behind it, not a disk".to_string(),
        (0, _) if name == "reserved" => format!("is a device of type 0x{:02x}, not a disk", inq.device_type),
        (0, _) => {
            let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
            format!("is {article} {name}, not a disk")
        }
        (q, _) => format!("has no device connected (peripheral qualifier {q}), not a disk"),
    };
    let others = if disks.is_empty() {
        "the target has no disk".to_string()
    } else {
        format!("its disks are {}", lun_list(disks))
    };
    format!("LUN {lun} of {target} {what}; {others}")
}

#[derive(Serialize)]
struct LunJson {
    lun: u64,
    device_type: String,
    vendor: String,
    product: String,
    revision: String,
    size_bytes: Option<u64>,
    block_size: Option<u32>,
}

#[derive(Serialize)]
struct TargetJson {
    target: String,
    portals: Vec<String>,
    luns: Vec<LunJson>,
    error: Option<String>,
}

async fn describe_target(
    common: &Common,
    url: &IscsiUrl,
    t: &DiscoveredTarget,
    mcs: &McsArgs,
    session: &SessionArgs,
) -> CmdResult<Vec<LunJson>> {
    let mut cfg = session_config(common, Some(url), session)?;
    apply_from(&mut cfg, &url.portal, mcs)?;
    let who = LoginWho::new(&url.portal, &cfg);
    let ipsec = cfg.ipsec.clone();
    let s = match Session::login(&url.portal, Some(&t.name), cfg).await {
        Ok(s) => s,
        // Without a CHAP user a CHAP target is shown as not listed (ls).
        Err(err) if !who.chap && is_auth(&err) => return Err(err.into()),
        Err(err) => return Err(who.explain(err)),
    };
    grow(&s, url, mcs, &ipsec).await?;
    let r = async {
        let mut out = Vec::new();
        for lun in s.report_luns().await? {
            let inq = s.inquiry(lun).await?;
            let cap = if inq.device_type == 0 { Some(s.read_capacity(lun).await?) } else { None };
            out.push(LunJson {
                lun,
                device_type: inq.device_type_name().to_string(),
                vendor: inq.vendor.clone(),
                product: inq.product.clone(),
                revision: inq.revision.clone(),
                size_bytes: cap.map(|c| c.bytes()),
                block_size: cap.map(|c| c.block_size),
            });
        }
        Ok::<_, InitError>(out)
    }
    .await;
    logout(&s).await;
    Ok(r?)
}

async fn ls(common: &Common, url: &str, json: bool, mcs: &McsArgs, session: &SessionArgs) -> CmdResult {
    let u = parse_url(url)?;
    check_mcs(mcs)?;
    let cfg = session_config(common, Some(&u), session)?;
    let who = LoginWho::new(&u.portal, &cfg);
    let targets = send_targets(&u.portal, cfg).await.map_err(|err| who.explain(err))?;
    let mut out = Vec::new();
    let mut failed = Vec::new();
    // The first failure's class is the exit status.
    let mut class = ErrorClass::Other;
    for t in targets.iter().filter(|t| u.target.as_ref().is_none_or(|n| *n == t.name)) {
        let portals = t.portals.iter().map(ToString::to_string).collect();
        let (luns, error) = match describe_target(common, &u, t, mcs, session).await {
            Ok(l) => (l, None),
            // Only without a CHAP user (describe_target).
            Err(CmdError::Init(err)) if is_auth(&err) => {
                let line = match err {
                    InitError::ChapRequired => format!("not listed: {err} (give --chap-user)"),
                    err => format!("not listed: {}", who.explain(err)),
                };
                (Vec::new(), Some(line))
            }
            Err(err) => {
                if failed.is_empty() {
                    class = err.class();
                }
                failed.push(t.name.clone());
                (Vec::new(), Some(err.to_string()))
            }
        };
        out.push(TargetJson { target: t.name.clone(), portals, luns, error });
    }
    if let Some(name) = &u.target
        && out.is_empty()
    {
        return Err(InitError::TargetNotFound(name.clone()).into());
    }
    let text = if json {
        to_json(&out)?
    } else {
        let mut text = String::new();
        for t in &out {
            let _ = writeln!(text, "Target: {} ({})", t.target, t.portals.join(" "));
            if let Some(err) = &t.error {
                let _ = writeln!(text, "  {err}");
            }
            for l in &t.luns {
                let size = match (l.size_bytes, l.block_size) {
                    (Some(b), Some(bs)) => format!("{b} bytes ({} blocks of {bs})", b / u64::from(bs.max(1))),
                    _ => "-".to_string(),
                };
                let _ = writeln!(
                    text,
                    "  Lun {}: {}, {} {} {}, {size}",
                    l.lun, l.device_type, l.vendor, l.product, l.revision
                );
            }
        }
        text
    };
    emit(&text)?;
    if !failed.is_empty() {
        let message = format!("{} target(s) could not be listed: {}", failed.len(), failed.join(", "));
        return Err(CmdError::Failed { message, class });
    }
    Ok(())
}

fn is_auth(err: &InitError) -> bool {
    match err {
        InitError::ChapRequired => true,
        InitError::Login { status, .. } => status.class == 2 && status.detail == 1,
        _ => false,
    }
}

#[derive(Serialize)]
struct InquiryJson {
    lun: u64,
    peripheral_qualifier: u8,
    device_type: u8,
    device_type_name: String,
    removable: bool,
    version: u8,
    vendor: String,
    product: String,
    revision: String,
    unit_serial: Option<String>,
    identifiers: Vec<String>,
}

async fn inquiry(common: &Common, url: &str, json: bool, mcs: &McsArgs, session: &SessionArgs) -> CmdResult {
    let (u, target, lun) = lun_url(url)?;
    let s = login(&u, &target, session_config(common, Some(&u), session)?, mcs).await?;
    let r = async {
        check_lun(&s, lun).await?;
        let inq: StandardInquiry = s.inquiry(lun).await.map_err(e)?;
        let serial = match s.vpd(lun, 0x80).await {
            Ok(d) => parse_vpd_unit_serial(&d).ok(),
            Err(_) => None,
        };
        let ids = match s.vpd(lun, 0x83).await {
            Ok(d) => parse_vpd_device_identification(&d)
                .map(|v| v.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        Ok::<_, CmdError>(InquiryJson {
            lun,
            peripheral_qualifier: inq.peripheral_qualifier,
            device_type: inq.device_type,
            device_type_name: inq.device_type_name().to_string(),
            removable: inq.removable,
            version: inq.version,
            vendor: inq.vendor.clone(),
            product: inq.product.clone(),
            revision: inq.revision.clone(),
            unit_serial: serial,
            identifiers: ids,
        })
    }
    .await;
    logout(&s).await;
    let j = r?;
    if json {
        return emit(&to_json(&j)?);
    }
    let mut text = String::new();
    let _ = writeln!(text, "Vendor:      {}", j.vendor);
    let _ = writeln!(text, "Product:     {}", j.product);
    let _ = writeln!(text, "Revision:    {}", j.revision);
    let _ = writeln!(text, "Device type: {} (0x{:02x})", j.device_type_name, j.device_type);
    let _ = writeln!(text, "Removable:   {}", if j.removable { "yes" } else { "no" });
    let _ = writeln!(text, "Version:     0x{:02x}", j.version);
    if let Some(sn) = &j.unit_serial {
        let _ = writeln!(text, "Unit serial: {sn}");
    }
    for id in &j.identifiers {
        let _ = writeln!(text, "Identifier:  {id}");
    }
    emit(&text)
}

#[derive(Serialize)]
struct CapacityJson {
    blocks: u64,
    block_size: u32,
    bytes: u64,
}

async fn capacity(common: &Common, url: &str, json: bool, session: &SessionArgs) -> CmdResult {
    let (u, target, lun) = lun_url(url)?;
    let s = login(&u, &target, session_config(common, Some(&u), session)?, &McsArgs::default()).await?;
    let r = async {
        check_disk(&s, &target, lun).await?;
        s.read_capacity(lun).await.map_err(e)
    }
    .await;
    logout(&s).await;
    let c = r?;
    if json {
        let j = CapacityJson { blocks: c.blocks, block_size: c.block_size, bytes: c.bytes() };
        return emit(&to_json(&j)?);
    }
    emit(&format!("Blocks:     {}\nBlock size: {}\nBytes:      {}\n", c.blocks, c.block_size, c.bytes()))
}

/// One side of a copy.
#[derive(Clone)]
enum End {
    File(Arc<std::fs::File>, String),
    Lun { s: Session, lun: u64, cap: Capacity },
}

impl End {
    async fn open(common: &Common, spec: &str, write: bool, mcs: &McsArgs, session: &SessionArgs) -> CmdResult<End> {
        if is_lun_spec(spec) {
            let (u, target, lun) = lun_url(spec)?;
            let s = login(&u, &target, session_config(common, Some(&u), session)?, mcs).await?;
            if let Err(err) = check_disk(&s, &target, lun).await {
                logout(&s).await;
                return Err(err);
            }
            let cap = match s.read_capacity(lun).await {
                Ok(c) => c,
                Err(err) => {
                    logout(&s).await;
                    return Err(e(err));
                }
            };
            return Ok(End::Lun { s, lun, cap });
        }
        let dir = if write { "to" } else { "from" };
        // A pipe or socket cannot be read or written at offsets, and opening
        // a FIFO to write would wait for a reader: refused before opening.
        if let Ok(m) = std::fs::metadata(spec) {
            use std::os::unix::fs::FileTypeExt;
            let t = m.file_type();
            if t.is_fifo() || t.is_socket() {
                let what = if t.is_fifo() { "a pipe" } else { "a socket" };
                return Err(format!(
                    "cannot copy {dir} {spec}: it is {what}, and cp reads and writes at offsets: give a file or a \
                     block device"
                )
                .into());
            }
        }
        let f = if write {
            std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(spec)
        } else {
            std::fs::File::open(spec)
        };
        let f = f.map_err(|err| format!("cannot open {spec}: {err}"))?;
        if f.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(format!("cannot copy {dir} {spec}: it is a directory").into());
        }
        Ok(End::File(Arc::new(f), spec.to_string()))
    }

    async fn close(&self) {
        if let End::Lun { s, .. } = self {
            logout(s).await;
        }
    }

    /// Reads `len` bytes at `pos` (relative to the file start or the LUN start).
    async fn read(&self, pos: u64, len: u64) -> CmdResult<Bytes> {
        match self {
            End::File(f, name) => {
                let f = f.clone();
                let name = name.clone();
                let mut buf = vec![0u8; len as usize];
                tokio::task::spawn_blocking(move || {
                    f.read_exact_at(&mut buf, pos)
                        .map(|_| Bytes::from(buf))
                        .map_err(|err| CmdError::from(io_failed("read", &name, &err)))
                })
                .await
                .map_err(|err| CmdError::from(err.to_string()))?
            }
            End::Lun { s, lun, cap } => {
                let bs = u64::from(cap.block_size);
                let first = pos / bs;
                let last = (pos + len).div_ceil(bs);
                let blocks = u32::try_from(last - first).map_err(|_| CmdError::from("read chunk too large"))?;
                let data = s.read_blocks(*lun, first, blocks, cap.block_size).await.map_err(e)?;
                let skip = usize::try_from(pos - first * bs).map_err(|err| err.to_string())?;
                let end = usize::try_from(len).ok().and_then(|l| l.checked_add(skip));
                match end {
                    Some(end) if end <= data.len() => Ok(data.slice(skip..end)),
                    _ => Err(format!(
                        "short read from LUN {lun}: asked for {len} bytes at byte {pos}, got {} bytes",
                        data.len()
                    )
                    .into()),
                }
            }
        }
    }

    /// Writes `data` at `pos`; a LUN's partial last block is read, merged and rewritten.
    async fn write(&self, pos: u64, data: Bytes) -> CmdResult {
        match self {
            End::File(f, name) => {
                let f = f.clone();
                let name = name.clone();
                tokio::task::spawn_blocking(move || {
                    f.write_all_at(&data, pos).map_err(|err| CmdError::from(io_failed("write", &name, &err)))
                })
                .await
                .map_err(|err| CmdError::from(err.to_string()))?
            }
            End::Lun { s, lun, cap } => {
                let bs = u64::from(cap.block_size);
                if !pos.is_multiple_of(bs) {
                    return Err(format!("offset {pos} is not a multiple of the block size {bs}").into());
                }
                let whole = (data.len() as u64 / bs) * bs;
                if whole > 0 {
                    s.write_blocks(*lun, pos / bs, data.slice(..whole as usize), cap.block_size).await.map_err(e)?;
                }
                if whole < data.len() as u64 {
                    let lba = (pos + whole) / bs;
                    let old = s.read_blocks(*lun, lba, 1, cap.block_size).await.map_err(e)?;
                    let mut merged = BytesMut::from(&old[..]);
                    let tail = data.slice(whole as usize..);
                    let Some(head) = merged.get_mut(..tail.len()) else {
                        return Err(format!(
                            "short read from LUN {lun}: block {lba} came back with {} bytes",
                            old.len()
                        )
                        .into());
                    };
                    head.copy_from_slice(&tail);
                    s.write_blocks(*lun, lba, merged.freeze(), cap.block_size).await.map_err(e)?;
                }
                Ok(())
            }
        }
    }
}

/// SIGINT or SIGTERM, as `cp` listens for them (tokio::signal): the copy
/// stops, the sessions log out, a destination file `cp` created is removed,
/// and the exit status is 128 + the signal's number, as a shell shows for a
/// process the signal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Int,
    Term,
}

impl Stop {
    pub(crate) fn status(self) -> u8 {
        match self {
            Stop::Int => 130,
            Stop::Term => 143,
        }
    }
}

pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn listen() -> CmdResult<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).map_err(|err| format!("cannot listen for SIGINT: {err}"))?;
        let term = signal(SignalKind::terminate()).map_err(|err| format!("cannot listen for SIGTERM: {err}"))?;
        Ok(Signals { int, term })
    }

    pub(crate) async fn recv(&mut self) -> Stop {
        tokio::select! {
            _ = self.int.recv() => Stop::Int,
            _ = self.term.recv() => Stop::Term,
        }
    }
}

/// How long an interrupted copy to a LUN waits for SYNCHRONIZE CACHE of
/// what it wrote, before it logs out.
const SYNC_AFTER_STOP: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)] // one per option of the command
async fn cp(
    common: &Common,
    src: &str,
    dst: &str,
    offset: u64,
    length: Option<u64>,
    progress: ProgressMode,
    mcs: &McsArgs,
    session: &SessionArgs,
) -> CmdResult {
    if !is_lun_spec(src) && !is_lun_spec(dst) {
        return Err(format!(
            "neither {src} nor {dst} is a LUN (iscsi://HOST[:PORT]/IQN/LUN): cp copies to or from a LUN"
        )
        .into());
    }
    let mut signals = Signals::listen()?;
    let before = |stop: Stop| CmdError::Interrupted {
        message: "interrupted before anything was copied".to_string(),
        status: stop.status(),
    };
    // A login cut short here is dropped: its connections close, and the
    // target ends a session with its last connection.
    let from = tokio::select! {
        r = End::open(common, src, false, mcs, session) => r?,
        stop = signals.recv() => return Err(before(stop)),
    };
    // A destination file this command creates is removed again if the copy
    // fails or is interrupted, so that no partial copy is left looking like
    // a finished one.
    let created = !is_lun_spec(dst) && !std::path::Path::new(dst).exists();
    let to = tokio::select! {
        r = End::open(common, dst, true, mcs, session) => r,
        stop = signals.recv() => Err(before(stop)),
    };
    let to = match to {
        Ok(t) => t,
        Err(err) => {
            from.close().await;
            return Err(err);
        }
    };
    let r = copy(&from, &to, offset, length, progress, &mut signals).await;
    if let (Err(CopyError::Stopped { .. }), End::Lun { s, lun, .. }) = (&r, &to) {
        let _ = tokio::time::timeout(SYNC_AFTER_STOP, s.synchronize_cache(*lun)).await;
    }
    // A second signal gives up the logouts.
    tokio::select! {
        () = async {
            from.close().await;
            to.close().await;
        } => {}
        _ = signals.recv() => {}
    }
    if r.is_err() && created {
        let _ = std::fs::remove_file(dst);
    }
    let n = match r {
        Ok(n) => n,
        Err(CopyError::Failed(err)) => return Err(err),
        Err(CopyError::Stopped { stop, written, len }) => {
            let message = match &to {
                End::Lun { .. } if written == 0 => "interrupted before any byte was written to the LUN".to_string(),
                End::Lun { .. } => {
                    let at = offset + written;
                    match &from {
                        End::Lun { .. } => {
                            let rest =
                                if length.is_some() { format!(" --length {}", len - written) } else { String::new() };
                            format!(
                                "interrupted: the LUN was written up to byte {at} (resume with --offset {at}{rest})"
                            )
                        }
                        End::File(_, name) => {
                            format!(
                                "interrupted: the LUN was written up to byte {at}, with the first {written} bytes of {name}"
                            )
                        }
                    }
                }
                End::File(_, name) if created => format!("interrupted: the partial copy {name} was removed"),
                End::File(_, name) => format!("interrupted: {name} was written up to byte {written}"),
            };
            return Err(CmdError::Interrupted { message, status: stop.status() });
        }
    };
    // The bar was cleared: this line stays in its place. A log already
    // has its last progress line, at 100 %.
    if progress == ProgressMode::Bar {
        eprintln!("copied {n} bytes");
    }
    Ok(())
}

/// Why a copy ended early.
enum CopyError {
    Failed(CmdError),
    /// A signal: every byte below `written` (from the start of the range)
    /// is known to be written; `len` is the range's length.
    Stopped {
        stop: Stop,
        written: u64,
        len: u64,
    },
}

impl From<CmdError> for CopyError {
    fn from(e: CmdError) -> Self {
        CopyError::Failed(e)
    }
}

impl From<String> for CopyError {
    fn from(message: String) -> Self {
        CopyError::Failed(message.into())
    }
}

impl From<&str> for CopyError {
    fn from(message: &str) -> Self {
        CopyError::Failed(message.into())
    }
}

/// Copies with [`DEPTH`] chunks in flight. They complete in any order, so
/// what is known to be written is everything below the lowest chunk not
/// yet complete; a signal stops the copy there.
async fn copy(
    from: &End,
    to: &End,
    offset: u64,
    length: Option<u64>,
    progress: ProgressMode,
    signals: &mut Signals,
) -> Result<u64, CopyError> {
    for end in [from, to] {
        if let End::Lun { cap, .. } = end {
            if !offset.is_multiple_of(u64::from(cap.block_size)) {
                return Err(
                    format!("--offset {offset} is not a multiple of the LUN's block size {}", cap.block_size).into()
                );
            }
            if offset > cap.bytes() {
                return Err(format!("--offset {offset} is past the end of the LUN ({} bytes)", cap.bytes()).into());
            }
        }
    }
    let (src_base, dst_base) = (
        if matches!(from, End::Lun { .. }) { offset } else { 0 },
        if matches!(to, End::Lun { .. }) { offset } else { 0 },
    );
    let available = match from {
        End::File(f, name) => match (file_size(f).map_err(|err| format!("cannot stat {name}: {err}"))?, length) {
            (Some(n), _) => n,
            // A character device (/dev/zero): as much as asked for.
            (None, Some(l)) => l,
            (None, None) => return Err(format!("cannot tell the size of {name}: give --length").into()),
        },
        End::Lun { cap, .. } => cap.bytes() - offset,
    };
    let len = match length {
        Some(l) if l > available => {
            return Err(format!("--length {l} is more than the {available} bytes the source has from there").into());
        }
        Some(0) => return Err("--length 0: nothing to copy".into()),
        Some(l) => l,
        None if available == 0 => {
            return Err(match from {
                End::Lun { .. } => format!("--offset {offset} is the end of the source LUN: nothing to copy"),
                End::File(_, name) => format!("{name} is empty: nothing to copy"),
            }
            .into());
        }
        None => available,
    };
    if let End::Lun { cap, .. } = to
        && dst_base + len > cap.bytes()
    {
        return Err(format!(
            "copy of {len} bytes at offset {dst_base} does not fit in the LUN ({} bytes): {} bytes fit from there",
            cap.bytes(),
            cap.bytes().saturating_sub(dst_base)
        )
        .into());
    }
    // Cleared when it is dropped (an error, a failed task); left in place on a signal.
    let mut bar = progress::Bytes::new(progress, len, "copied");
    let mut set: JoinSet<CmdResult<(u64, u64)>> = JoinSet::new();
    // Starts of the chunks in flight (relative to the range).
    let mut pending = std::collections::BTreeSet::new();
    let mut pos = 0;
    let mut done = 0u64;
    while pos < len || !set.is_empty() {
        while pos < len && set.len() < DEPTH {
            let n = CHUNK.min(len - pos);
            let (from, to) = (from.clone(), to.clone());
            let (at, sp, dp) = (pos, src_base + pos, dst_base + pos);
            set.spawn(async move {
                let data = from.read(sp, n).await?;
                to.write(dp, data).await?;
                Ok((at, n))
            });
            pending.insert(pos);
            pos += n;
        }
        let next = tokio::select! {
            next = set.join_next() => next,
            stop = signals.recv() => {
                set.abort_all();
                bar.leave();
                let written = pending.first().copied().unwrap_or(pos);
                return Err(CopyError::Stopped { stop, written, len });
            }
        };
        match next {
            Some(Ok(Ok((at, n)))) => {
                pending.remove(&at);
                done += n;
                bar.inc(n);
            }
            Some(Ok(Err(err))) => {
                set.abort_all();
                return Err(err.into());
            }
            Some(Err(err)) => {
                set.abort_all();
                return Err(format!("copy task failed: {err}").into());
            }
            None => break,
        }
    }
    // A flush can take seconds (a page cache full of a file's data): it is
    // said, not left to look like a bar stuck at 99 %.
    if let End::File(f, name) = to {
        // A regular file ends where the copy does; a block device keeps its
        // size, and a character device (/dev/null) has neither.
        let t = f.metadata().map_err(|err| format!("cannot stat {name}: {err}"))?.file_type();
        if t.is_file() {
            f.set_len(len).map_err(|err| format!("cannot set the length of {name}: {err}"))?;
        }
        if t.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(&t) {
            bar.flushing(name);
            f.sync_all().map_err(|err| format!("cannot flush {name}: {err}"))?;
        }
    }
    if let End::Lun { s, lun, .. } = to {
        bar.flushing("the LUN");
        s.synchronize_cache(*lun).await.map_err(e)?;
    }
    if done != len {
        return Err(format!("copied {done} of {len} bytes").into());
    }
    // Only now, with the data flushed, is the copy done.
    bar.finish();
    Ok(done)
}

/// Progress of a long command on stderr: indicatif's bars on a terminal, one
/// plain line a second for a log (`--progress` without a terminal), or
/// nothing. A bar is cleared when its value is dropped, so that no early
/// return leaves one above the error line, except on a signal ([`leave`]).
pub(crate) mod progress {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

    pub use crate::cli::ProgressMode;

    /// How often a plain line is written.
    pub const LINE_EVERY: Duration = Duration::from_secs(1);

    const KIB: f64 = 1024.0;
    const MIB: f64 = KIB * 1024.0;
    const GIB: f64 = MIB * 1024.0;

    /// A byte count for people: `900 B`, `512 KiB`, `410 MiB`, `1.0 GiB`.
    pub fn size(b: f64) -> String {
        match b {
            b if b >= GIB => format!("{:.1} GiB", b / GIB),
            b if b >= MIB => format!("{:.0} MiB", b / MIB),
            b if b >= KIB => format!("{:.0} KiB", b / KIB),
            b => format!("{b:.0} B"),
        }
    }

    /// A duration for people: `0.04s`, `2.4s`, `12s`, `3m05s`, `1h02m`.
    pub fn duration(d: Duration) -> String {
        let s = d.as_secs();
        match s {
            0 => format!("{:.2}s", d.as_secs_f64()),
            1..10 => format!("{:.1}s", d.as_secs_f64()),
            10..60 => format!("{s}s"),
            60..3600 => format!("{}m{:02}s", s / 60, s % 60),
            _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        }
    }

    /// Templates have fixed widths that fit in 80 columns (a bar line that
    /// wraps is redrawn badly); indicatif pads the line to the right edge.
    fn bar(mode: ProgressMode, template: &str) -> ProgressBar {
        if mode != ProgressMode::Bar {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::no_length();
        if let Ok(st) = ProgressStyle::with_template(template) {
            b.set_style(st);
        }
        b
    }

    /// On a signal a bar is left as it was drawn, never cleared or drawn again.
    /// indicatif ends its line at the terminal's right edge, so the `^C` the
    /// terminal echoes starts a new line: clearing "the bar's line" would
    /// clear that one and leave the bar; this way the bar shows how far the
    /// command got and the message comes on a line of its own.
    fn leave(bar: &ProgressBar) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }

    /// Bytes moved out of a known total (`cp`).
    pub struct Bytes {
        mode: ProgressMode,
        bar: ProgressBar,
        verb: &'static str,
        len: u64,
        done: u64,
        started: Instant,
        /// When the last plain line was written, and how far the copy was.
        last: (Instant, u64),
    }

    impl Bytes {
        /// `verb` opens each plain line: `copied 512 MiB of 1.0 GiB …`.
        pub fn new(mode: ProgressMode, len: u64, verb: &'static str) -> Bytes {
            let bar = bar(mode, "{bar:24} {bytes}/{total_bytes} ({percent}%) {bytes_per_sec} eta {eta}");
            bar.set_length(len);
            let now = Instant::now();
            Bytes { mode, bar, verb, len, done: 0, started: now, last: (now, 0) }
        }

        pub fn inc(&mut self, n: u64) {
            self.done += n;
            self.bar.inc(n);
            let now = Instant::now();
            if self.mode == ProgressMode::Lines && now.duration_since(self.last.0) >= LINE_EVERY {
                eprintln!("{}", self.line(now));
                self.last = (now, self.done);
            }
        }

        /// `copied 512 MiB of 1.0 GiB (50%), 410 MiB/s, eta 1.2s`: the rate
        /// over the last line's interval, the time left at the average rate.
        fn line(&self, now: Instant) -> String {
            let (since, was) = self.last;
            let rate = (self.done - was) as f64 / now.duration_since(since).as_secs_f64().max(1e-3);
            let avg = self.done as f64 / now.duration_since(self.started).as_secs_f64().max(1e-3);
            let left = self.len.saturating_sub(self.done) as f64;
            let eta = if avg > 0.0 { duration(Duration::from_secs_f64(left / avg)) } else { "?".into() };
            format!(
                "{} {} of {} ({}%), {}/s, eta {eta}",
                self.verb,
                size(self.done as f64),
                size(self.len as f64),
                self.percent(),
                size(rate)
            )
        }

        fn percent(&self) -> u64 {
            (u128::from(self.done) * 100 / u128::from(self.len.max(1))) as u64
        }

        /// A signal: see [`leave`].
        pub fn leave(&mut self) {
            leave(&self.bar);
        }

        /// Every byte is copied and `what` is being flushed.
        pub fn flushing(&mut self, what: &str) {
            match self.mode {
                ProgressMode::Bar => {
                    if let Ok(st) =
                        ProgressStyle::with_template("{bar:24} {bytes}/{total_bytes}, flushing {msg} {spinner}")
                    {
                        self.bar.set_style(st);
                    }
                    self.bar.set_message(what.to_string());
                    self.bar.enable_steady_tick(Duration::from_millis(100));
                }
                ProgressMode::Lines => {
                    eprintln!("{} {} of {}, flushing {what}", self.verb, size(self.done as f64), size(self.len as f64))
                }
                ProgressMode::Off => {}
            }
        }

        /// Done: the bar goes; a log gets its last line, `copied 1.0 GiB of
        /// 1.0 GiB (100%) in 2.6s, 393 MiB/s`.
        pub fn finish(&mut self) {
            self.bar.finish_and_clear();
            if self.mode == ProgressMode::Lines {
                let took = self.started.elapsed();
                eprintln!(
                    "{} {} of {} ({}%) in {}, {}/s",
                    self.verb,
                    size(self.done as f64),
                    size(self.len as f64),
                    self.percent(),
                    duration(took),
                    size(self.done as f64 / took.as_secs_f64().max(1e-3))
                );
                // Written once, even if dropped later.
                self.mode = ProgressMode::Off;
            }
        }
    }

    impl Drop for Bytes {
        fn drop(&mut self) {
            self.bar.finish_and_clear();
        }
    }

    /// How a command with several phases shows them, and the bar of the one
    /// on the terminal now, which a signal leaves in place.
    #[derive(Clone)]
    pub struct Screen {
        pub mode: ProgressMode,
        on_screen: Arc<Mutex<Option<ProgressBar>>>,
    }

    impl Screen {
        pub fn new(mode: ProgressMode) -> Screen {
            Screen { mode, on_screen: Arc::default() }
        }

        fn show(&self, bar: &ProgressBar) {
            if let Ok(mut b) = self.on_screen.lock() {
                *b = Some(bar.clone());
            }
        }

        /// A signal: see [`leave`].
        pub fn leave(&self) {
            if let Some(bar) = self.on_screen.lock().ok().and_then(|mut b| b.take()) {
                leave(&bar);
            }
        }
    }

    /// One phase of a command that has several (`bench`: login, warm-up,
    /// the workload, logout): a spinner or a bar that fills with time on a
    /// terminal; in a log, a line when it starts, one a second while it
    /// runs if it has a length, and one when it ends.
    pub struct Phase {
        mode: ProgressMode,
        bar: ProgressBar,
        name: String,
        length: Option<Duration>,
        started: Instant,
        last_line: Instant,
    }

    impl Phase {
        /// A phase of unknown length: `login to iscsi://…`.
        pub fn spinner(screen: &Screen, name: String) -> Phase {
            let bar = bar(screen.mode, "{spinner} {prefix} {elapsed}");
            bar.set_prefix(name.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            Phase::start(screen, bar, name, None)
        }

        /// A phase that lasts `length`; [`Phase::tick`] tells it how it goes.
        /// `label` names it on the bar, which has less room than a log line.
        pub fn timed(screen: &Screen, name: String, label: &str, length: Duration) -> Phase {
            let bar = bar(screen.mode, "{prefix} {bar:20} {msg}");
            bar.set_prefix(label.to_string());
            bar.set_length(length.as_millis().try_into().unwrap_or(u64::MAX).max(1));
            Phase::start(screen, bar, name, Some(length))
        }

        fn start(screen: &Screen, bar: ProgressBar, name: String, length: Option<Duration>) -> Phase {
            let mode = screen.mode;
            screen.show(&bar);
            if mode == ProgressMode::Lines {
                match length {
                    Some(l) => eprintln!("{name}: {}", duration(l)),
                    None => eprintln!("{name}"),
                }
            }
            let now = Instant::now();
            Phase { mode, bar, name, length, started: now, last_line: now }
        }

        /// The time gone and `status` (a running rate): on the bar, and
        /// in a log once a second.
        pub fn tick(&mut self, status: &str) {
            let now = Instant::now();
            let gone = now.duration_since(self.started);
            let of = self.length.map(|l| format!(" of {}", duration(l))).unwrap_or_default();
            match self.mode {
                ProgressMode::Bar => {
                    self.bar.set_position(gone.as_millis().try_into().unwrap_or(u64::MAX));
                    self.bar.set_message(format!("{}{of} {status}", duration(gone)));
                }
                ProgressMode::Lines if now.duration_since(self.last_line) >= LINE_EVERY => {
                    eprintln!("{}: {}{of}, {status}", self.name, duration(gone));
                    self.last_line = now;
                }
                ProgressMode::Lines | ProgressMode::Off => {}
            }
        }

        /// Ended as planned: the bar goes; a log gets `NAME: done in 0.1s`.
        pub fn finish(mut self, status: &str) {
            self.bar.finish_and_clear();
            if self.mode == ProgressMode::Lines {
                let sep = if status.is_empty() { "" } else { ", " };
                eprintln!("{}: done in {}{sep}{status}", self.name, duration(self.started.elapsed()));
            }
            self.mode = ProgressMode::Off;
        }
    }

    impl Drop for Phase {
        fn drop(&mut self) {
            self.bar.finish_and_clear();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sizes_and_durations_read_as_people_write_them() {
            assert_eq!(size(900.0), "900 B");
            assert_eq!(size(512.0 * KIB), "512 KiB");
            assert_eq!(size(410.4 * MIB), "410 MiB");
            assert_eq!(size(GIB), "1.0 GiB");
            assert_eq!(duration(Duration::from_millis(40)), "0.04s");
            assert_eq!(duration(Duration::from_millis(2400)), "2.4s");
            assert_eq!(duration(Duration::from_secs(12)), "12s");
            assert_eq!(duration(Duration::from_secs(185)), "3m05s");
            assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
        }

        #[test]
        fn a_log_gets_lines_and_the_last_one_says_100_percent() {
            let mut b = Bytes::new(ProgressMode::Lines, 4 << 20, "copied");
            b.inc(1 << 20);
            assert_eq!(b.percent(), 25);
            assert!(b.line(Instant::now()).starts_with("copied 1 MiB of 4 MiB (25%), "), "{}", b.line(Instant::now()));
            b.inc(3 << 20);
            assert_eq!(b.percent(), 100);
            b.finish();
            assert_eq!(b.mode, ProgressMode::Off);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use iscsi_initiator::error::LoginStatus;
    use iscsi_initiator::model::IsdscCode;
    use iscsi_initiator::session::{ConnectionFault, FaultKind, GiveUp, GiveUpWhy};

    fn gave_up(kind: FaultKind) -> InitError {
        let cause = ConnectionFault::new(kind, "x");
        InitError::GaveUp(Box::new(GiveUp { cause, why: GiveUpWhy::SameFault { reinstated: 1 } }))
    }

    #[test]
    fn each_class_has_its_exit_status() {
        assert_eq!(exit_status(ErrorClass::Other), 1);
        assert_eq!(exit_status(ErrorClass::Authentication), 4);
        assert_eq!(exit_status(ErrorClass::Refused), 5);
        assert_eq!(exit_status(ErrorClass::Unreachable), 6);
        // 2 and 3 belong to the usage error and the missing service.
        assert_eq!(crate::service::EXIT_USAGE, 2);
        assert_eq!(crate::service::EXIT_NO_SERVICE, 3);
    }

    #[test]
    fn initiator_errors_keep_their_class_to_the_exit_status() {
        let status = |e: InitError| CmdError::from(e).exit_status();
        assert_eq!(status(InitError::ChapRequired), 4);
        assert_eq!(status(InitError::Login { target: "t".into(), status: LoginStatus { class: 2, detail: 1 } }), 4);
        assert_eq!(status(InitError::Login { target: "t".into(), status: LoginStatus { class: 2, detail: 3 } }), 5);
        assert_eq!(status(InitError::Protocol("DataSN 1 where 0 was due".into())), 5);
        assert_eq!(status(gave_up(FaultKind::Violation)), 5);
        assert_eq!(status(gave_up(FaultKind::Malformed)), 5);
        assert_eq!(status(gave_up(FaultKind::Silent)), 6);
        assert_eq!(status(gave_up(FaultKind::Transport)), 6);
        assert_eq!(status(gave_up(FaultKind::WindowClosed)), 6);
        assert_eq!(status(InitError::ConnectTimeout("h:1".into())), 6);
        assert_eq!(status(InitError::LunNotFound { lun: 7, available: "LUNs 0".into() }), 1);
        assert_eq!(CmdError::from("cannot open x").exit_status(), 1);
        // Words put in front keep the class.
        let e = CmdError::from(gave_up(FaultKind::Silent)).context("READ CAPACITY of LUN 0");
        assert_eq!(e.exit_status(), 6);
        assert!(e.to_string().starts_with("READ CAPACITY of LUN 0: x ("), "{e}");
    }

    #[test]
    fn statuses_of_a_grown_session_keep_their_class() {
        let status = |code| CmdError::from(Status::new(code, "m")).exit_status();
        assert_eq!(status(IsdscCode::AuthenticationFailure), 4);
        assert_eq!(status(IsdscCode::AuthorizationFailure), 4);
        assert_eq!(status(IsdscCode::TooManyConnections), 5);
        assert_eq!(status(IsdscCode::TransportError), 5);
        assert_eq!(status(IsdscCode::ConnectionFailed), 6);
        assert_eq!(status(IsdscCode::DnsNameUnresolved), 6);
        assert_eq!(status(IsdscCode::InvalidParameter), 1);
    }

    fn inq(peripheral_qualifier: u8, device_type: u8) -> StandardInquiry {
        StandardInquiry {
            peripheral_qualifier,
            device_type,
            removable: false,
            version: 5,
            vendor: "IET".into(),
            product: "Controller".into(),
            revision: "0001".into(),
        }
    }

    #[test]
    fn a_lun_that_is_not_a_disk_is_named_with_the_disks_of_its_target() {
        let t = "iqn.2024-01.lab.tgt:ram1";
        assert!(is_disk(&inq(0, 0)) && !is_disk(&inq(0, 0x0c)) && !is_disk(&inq(1, 0)));
        assert_eq!(
            not_a_disk(t, 0, &inq(0, 0x0c), &[1]),
            "LUN 0 of iqn.2024-01.lab.tgt:ram1 is a storage array controller, not a disk; its disks are LUN 1"
        );
        assert_eq!(
            not_a_disk(t, 2, &inq(0, 0x0d), &[0, 1]),
            "LUN 2 of iqn.2024-01.lab.tgt:ram1 is an enclosure services, not a disk; its disks are LUNs 0, 1"
        );
        assert_eq!(
            not_a_disk(t, 0, &inq(0, 0x05), &[]),
            "LUN 0 of iqn.2024-01.lab.tgt:ram1 is a cd/dvd, not a disk; the target has no disk"
        );
        assert!(not_a_disk(t, 0, &inq(0, 0x15), &[1]).contains("is a device of type 0x15, not a disk"));
        assert!(not_a_disk(t, 0, &inq(3, 0x1f), &[1]).contains("has no device connected (peripheral qualifier 3)"));
        assert_eq!(lun_list(&[]), "no LUNs");
        assert_eq!(lun_list(&[0]), "LUN 0");
        assert_eq!(lun_list(&[0, 1, 7]), "LUNs 0, 1, 7");
    }

    #[test]
    fn login_failures_say_what_to_do_and_keep_codes_and_class() {
        let who = |chap| LoginWho { initiator: "iqn.2026-11.rs.rsiscsi:me".into(), chap, portal: "h:3260".into() };
        let login =
            |detail| InitError::Login { target: "iqn.2024-01.x:t".into(), status: LoginStatus { class: 2, detail } };
        let e = who(true).explain(login(1));
        assert_eq!(
            e.to_string(),
            "login to iqn.2024-01.x:t failed: authentication failed: check the CHAP user and secret (--chap-user, \
             RSISCSI_CHAP_SECRET or --chap-secret-file) (status class 0x02, detail 0x01)"
        );
        assert_eq!(e.exit_status(), EXIT_AUTHENTICATION);
        let e = who(false).explain(login(1));
        assert!(e.to_string().contains("the target requires CHAP: give --chap-user"), "{e}");
        let e = who(false).explain(InitError::ChapRequired);
        assert_eq!(
            e.to_string(),
            "authentication failed: the target requires CHAP but no CHAP user was given: give --chap-user, and the \
             secret in RSISCSI_CHAP_SECRET or --chap-secret-file"
        );
        assert_eq!(e.exit_status(), EXIT_AUTHENTICATION);
        let e = who(false).explain(login(2));
        assert_eq!(
            e.to_string(),
            "login to iqn.2024-01.x:t failed: authorization failed: the target does not allow initiator \
             iqn.2026-11.rs.rsiscsi:me; allow it on the target or log in as another with --initiator-name \
             (status class 0x02, detail 0x02)"
        );
        assert_eq!(e.exit_status(), EXIT_AUTHENTICATION);
        let e = who(false).explain(login(3));
        assert!(matches!(e, CmdError::Init(_)), "{e}");
        let pdu = iscsi_proto::pdu::PduError::UnknownOpcode(0x1c);
        let e = who(false).explain(InitError::Pdu(pdu));
        assert!(e.to_string().starts_with("h:3260 did not answer the login as an iSCSI target does"), "{e}");
        assert_eq!(e.exit_status(), EXIT_REFUSED);
    }

    /// An IPsec failure says what to look at, that nothing went out in
    /// clear text, and its Windows status; exit status 1.
    #[test]
    fn ipsec_failures_say_what_to_check_and_keep_their_code() {
        let e = ipsec_failed(&IpsecError::NoKey);
        assert_eq!(e.exit_status(), 1);
        assert!(e.to_string().contains("--ipsec-psk-file FILE, or in RSISCSI_IPSEC_PSK"), "{e}");
        assert!(e.to_string().ends_with("(ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE, 0xEFFF0027)"), "{e}");
        let e = ipsec_failed(&IpsecError::NotEstablished { peer: "198.18.8.2".into(), message: "AUTH".into() });
        assert!(e.to_string().contains("check the pre-shared key"), "{e}");
        assert!(
            e.to_string().ends_with("nothing was sent in clear text (ISDSC_FAILED_TO_CONFIGURE_IPSEC, 0xEFFF0053)")
        );
        let e =
            ipsec_failed(&IpsecError::Unreachable { path: "/x".into(), source: std::io::ErrorKind::NotFound.into() });
        assert!(e.to_string().contains("--vici-socket PATH or RSISCSI_VICI_SOCKET"), "{e}");
        let who = LoginWho { initiator: "iqn.2026-11.rs.rsiscsi:me".into(), chap: false, portal: "h:3260".into() };
        let e = who.explain(InitError::Ipsec(IpsecError::NoKey));
        assert_eq!(e.exit_status(), 1);
        assert!(e.to_string().contains("0xEFFF0027"), "{e}");
        // No IPsec asked: no config, no key read; asked without a key: refused here.
        assert!(ipsec_config(&IpsecArgs::default(), None).unwrap().plan().unwrap().is_none());
        let args = IpsecArgs { ipsec: Some(crate::cli::IpsecModeArg::Tunnel), ..Default::default() };
        // Only when the environment gives no key (it never does in CI).
        if std::env::var_os(creds::IPSEC_PSK_ENV).is_none() {
            let e = ipsec_config(&args, Some(std::path::Path::new("/nonexistent"))).unwrap_err();
            assert!(e.to_string().contains("0xEFFF0027"), "{e}");
        }
    }

    #[test]
    fn a_target_not_found_is_followed_by_the_names_of_the_portal() {
        let portal = PortalAddr { host: "127.0.0.1".into(), port: 3260 };
        let known: Vec<String> = (1..=5).map(|i| format!("iqn.2024-01.x:t{i}")).collect();
        assert_eq!(
            not_found("iqn.2024-01.x:T2", &known, &portal),
            "target not found; the portal has iqn.2024-01.x:t2 (iSCSI names are written in lowercase) \
             (status class 0x02, detail 0x03)"
        );
        assert_eq!(
            not_found("iqn.2024-01.x:t9", &known[..2], &portal),
            "target not found; the portal has iqn.2024-01.x:t1, iqn.2024-01.x:t2 (status class 0x02, detail 0x03)"
        );
        assert!(
            not_found("iqn.2024-01.x:t9", &known, &portal)
                .contains("the portal has 5 targets (`rsiscsi discover 127.0.0.1:3260`")
        );
        assert!(not_found("iqn.2024-01.x:t9", &[], &portal).contains("`rsiscsi discover 127.0.0.1:3260` lists"));
    }

    #[test]
    fn an_interruption_exits_with_128_plus_the_signal() {
        assert_eq!(Stop::Int.status(), 130);
        assert_eq!(Stop::Term.status(), 143);
        let e = CmdError::Interrupted { message: "interrupted".into(), status: Stop::Term.status() };
        assert_eq!(e.exit_status(), 143);
    }

    #[test]
    fn the_help_lists_every_exit_status() {
        for class in [ErrorClass::Other, ErrorClass::Authentication, ErrorClass::Refused, ErrorClass::Unreachable] {
            let code = exit_status(class);
            assert!(crate::cli::EXIT_STATUS_HELP.contains(&format!("\n  {code}  ")), "{code}");
        }
    }

    #[test]
    fn one_shot_sessions_get_the_hold_time_and_quick_pings() {
        let mut cli = Cli::try_parse_from(["rsiscsi", "cp", "--hold-time", "20", "a", "b"]).unwrap();
        // Named here, so that no name file of the host is read or written.
        cli.common.initiator_name = Some("iqn.2026-11.rs.rsiscsi:test".into());
        let Command::Cp { session, .. } = &cli.command else { panic!("{:?}", cli.command) };
        let cfg = session_config(&cli.common, None, session).unwrap();
        assert_eq!(cfg.recovery_budget, RecoveryBudget::hold(Duration::from_secs(20)));
        assert_eq!((cfg.nop_interval, cfg.nop_timeout), (NOP_INTERVAL, NOP_TIMEOUT));
        assert_eq!(cfg.proposal.max_recv_data_segment_length, 1 << 20);
        let session = SessionArgs { max_recv_data_segment_length: Some(262_144), ..SessionArgs::default() };
        let cfg = session_config(&cli.common, None, &session).unwrap();
        assert_eq!(cfg.recovery_budget.max_request_hold_time, Duration::from_secs(15));
        assert_eq!(cfg.proposal.max_recv_data_segment_length, 262_144);
    }
}
