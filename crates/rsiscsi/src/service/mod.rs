//! The service commands (`portal`, `isns`, `target`, `session`, `persistent`): each
//! one is a request to a running `rsiscsid` over its Unix socket, shaped
//! like the Windows `iscsicli` commands of the same name.

mod format;
mod initiator;
mod isns;
mod persistent;
mod portal;
mod session;
mod target;

use std::io::Write as _;
use std::path::PathBuf;

use rsiscsi_api::types::{self as api, ApiErrorBody};
use rsiscsi_api::{Client, ClientError};
use serde::Serialize;

use crate::cli::{Command, Common, DigestArg};
use crate::creds;

/// Exit status of a service command that the service refused or that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a command line the CLI itself refused (as clap does).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when no service answers on the socket.
pub const EXIT_NO_SERVICE: u8 = 3;

/// What a service command can fail with; each variant maps to one exit
/// status ([`Error::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing listens on the socket.
    #[error("no rsiscsid at {} (start it with `rsiscsid` or pass --socket)", path.display())]
    NoService { path: PathBuf },
    /// The socket is there but its mode or group keeps us out.
    #[error("permission denied on {} (the rsiscsid socket is for its owner and --socket-group only)", path.display())]
    PermissionDenied { path: PathBuf },
    /// The service answered with an ISDSC/Win32 error.
    #[error("{} ({}, {})", body.message, body.name, body.code_hex)]
    Api { body: ApiErrorBody },
    /// The service answered something that is not the API (or the HTTP exchange broke).
    #[error("{0}")]
    Transport(String),
    /// A value on the command line the service would not understand.
    #[error("{0} (see rsiscsi --help)")]
    Usage(String),
    /// A local file (secret, Data-Out) could not be used.
    #[error("{0}")]
    Local(String),
    /// `portal add` without `--keep`: SendTargets failed, the portal was not added.
    #[error("{} ({}, {}); with --keep it is added anyway and tried again at each `rsiscsi target refresh`", body.message, body.name, body.code_hex)]
    PortalNotAdded { body: ApiErrorBody },
    /// `portal add --keep`: SendTargets failed, the portal was kept.
    #[error("SendTargets on {portal} failed: {} ({}, {}); the portal was kept (--keep) and is tried again at each `rsiscsi target refresh`", body.message, body.name, body.code_hex)]
    PortalKept { portal: String, body: ApiErrorBody },
    /// `isns add` without `--keep`: the server could not be reached, it was not added.
    #[error("{} ({}, {}); with --keep it is added anyway and the service keeps trying", body.message, body.name, body.code_hex)]
    IsnsServerNotAdded { body: ApiErrorBody },
    /// `isns add --keep`: the server could not be reached, it was kept.
    #[error("{} ({}, {}); the iSNS server {server} was kept (--keep) and the service keeps trying (`rsiscsi isns list` shows how it fares)", body.message, body.name, body.code_hex)]
    IsnsServerKept { server: String, body: ApiErrorBody },
    /// A persistent login whose first login failed; `note` says whether it
    /// is stored, and how to remove it.
    #[error("{} ({}, {}); {note}", body.message, body.name, body.code_hex)]
    PersistentLoginFailed { body: ApiErrorBody, note: String },
    /// SendTargets failed on some portals (the targets of the others are shown).
    #[error("SendTargets failed on {0}")]
    RefreshFailed(String),
    /// `persistent remove` of a target that has no stored login.
    #[error("no persistent login for {target} (`rsiscsi persistent list` shows them)")]
    NoPersistentLogin { target: String },
    /// The SCSI command reached the target but did not complete with GOOD.
    #[error("the target answered SCSI status {0}")]
    ScsiStatus(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NoService { .. } => EXIT_NO_SERVICE,
            Error::Usage(_) => EXIT_USAGE,
            Error::PermissionDenied { .. }
            | Error::Api { .. }
            | Error::Transport(_)
            | Error::Local(_)
            | Error::RefreshFailed(_)
            | Error::PortalNotAdded { .. }
            | Error::PortalKept { .. }
            | Error::IsnsServerNotAdded { .. }
            | Error::IsnsServerKept { .. }
            | Error::PersistentLoginFailed { .. }
            | Error::NoPersistentLogin { .. }
            | Error::ScsiStatus(_) => EXIT_FAILED,
        }
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NoService { path, .. } => Error::NoService { path },
            ClientError::PermissionDenied { path } => Error::PermissionDenied { path },
            ClientError::Api { body, .. } => Error::Api { body },
            other => Error::Transport(other.to_string()),
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, Error>;

/// Runs one service command. Returns `None` for a command that is not a
/// service command (the one-shot commands run without the service).
pub async fn run(common: &Common, command: &Command) -> Option<Result> {
    // The one-shot commands ask the service at this socket for the host's name.
    crate::config::set_socket(common.socket.clone());
    let client = Client::new(rsiscsi_api::resolve_socket_path(common.socket.clone()));
    let is_service = matches!(
        command,
        Command::Portal { .. }
            | Command::Isns { .. }
            | Command::Target { .. }
            | Command::Session { .. }
            | Command::Persistent { .. }
            | Command::Initiator { .. }
    );
    if is_service && common.initiator_name.is_some() {
        // The service logs in under its own node name (GET /v1/initiator),
        // the same for every session: silently ignoring the option would mislead.
        return Some(Err(Error::Usage(
            "the service logs in with its own initiator name; --initiator-name is for the one-shot commands".into(),
        )));
    }
    let (json, out) = match command {
        Command::Portal { out, cmd } => (out.json, portal::run(&client, common, out.json, cmd).await),
        Command::Isns { out, cmd } => (out.json, isns::run(&client, out.json, cmd).await),
        Command::Target { out, cmd } => (out.json, target::run(&client, common, out.json, cmd).await),
        Command::Session { out, cmd } => (out.json, session::run(&client, common, out.json, cmd).await),
        Command::Persistent { out, cmd } => (out.json, persistent::run(&client, out.json, cmd).await),
        Command::Initiator { out, cmd } => (out.json, initiator::run(&client, out.json, cmd).await),
        _ => return None,
    };
    // With --json a script also gets the service's error object on stdout
    // (the one-line message still goes to stderr).
    if let (
        true,
        Err(
            Error::Api { body }
            | Error::PortalNotAdded { body }
            | Error::IsnsServerNotAdded { body }
            | Error::PersistentLoginFailed { body, .. },
        ),
    ) = (json, &out)
        && let Err(e) = emit_json(&api::ApiError { error: body.clone() })
    {
        return Some(Err(e));
    }
    Some(out)
}

/// Writes the whole output to stdout; a closed pipe ends it quietly.
pub(crate) fn emit(text: &str) -> Result {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(Error::Local(format!("cannot write to stdout: {err}"))),
    }
}

/// Prints a value as pretty JSON (the API object as the service sent it).
pub(crate) fn emit_json<T: Serialize>(v: &T) -> Result {
    let mut s = serde_json::to_string_pretty(v).map_err(|e| Error::Local(format!("cannot encode JSON: {e}")))?;
    s.push('\n');
    emit(&s)
}

/// `HOST[:PORT]` or `[IPv6][:PORT]` as an API portal (port 3260 by default).
pub(crate) fn portal_arg(s: &str) -> Result<api::Portal> {
    let addr = crate::url::parse_portal(s).map_err(|e| Error::Usage(e.to_string()))?;
    Ok(api::Portal::new(addr.host, addr.port))
}

fn digest(d: DigestArg) -> api::DigestType {
    match d {
        DigestArg::None => api::DigestType::None,
        DigestArg::Crc32c => api::DigestType::Crc32c,
    }
}

/// The login options the global options ask for (RFC 7143 §12: digests;
/// §12.1.3: CHAP), or `None` when nothing was asked. The CHAP secret is read
/// as the one-shot commands read it (environment or a private file) and sent
/// to the service, never printed.
pub(crate) fn login_options(common: &Common) -> Result<Option<api::LoginOptions>> {
    let mut o = api::LoginOptions::default();
    // A digest left at its default is not sent: the service's default applies.
    if common.given.header_digest {
        o.header_digest = Some(digest(common.header_digest));
    }
    if common.given.data_digest {
        o.data_digest = Some(digest(common.data_digest));
    }
    if common.target_chap_user.is_some() {
        return Err(Error::Usage(
            "mutual CHAP through the service uses the initiator's own secret: leave out --target-chap-user".into(),
        ));
    }
    if let Some(chap) = creds::chap_config(common, None).map_err(Error::Local)? {
        let secret = std::str::from_utf8(chap.secret.expose())
            .map_err(|_| Error::Local("the CHAP secret must be UTF-8 text to be sent to the service".into()))?;
        o.auth_type = Some(api::AuthType::Chap);
        o.username = Some(chap.user.clone());
        o.password = Some(api::SecretString::new(secret));
    }
    Ok((o != api::LoginOptions::default()).then_some(o))
}

/// The security flags and key of a service login or added connection:
/// `--ipsec` sets the flags (Windows ISCSI_SECURITY_FLAG_*), the
/// pre-shared key is read as the one-shot commands read it (a private file
/// or RSISCSI_IPSEC_PSK) and sent to the service as the write-only `key`;
/// `--security-flags` alone is sent as typed. The service's charon sets up
/// the SA (`rsiscsid --vici-socket`).
pub(crate) fn ipsec_request(
    security_flags: Option<u64>,
    ipsec: &crate::cli::IpsecArgs,
) -> Result<(Option<u64>, Option<String>, Option<api::SecretString>)> {
    if ipsec.ipsec.is_none() {
        return Ok((security_flags, None, None));
    }
    if security_flags.is_some() {
        return Err(Error::Usage("--ipsec sets the security flags: leave out --security-flags".into()));
    }
    ipsec.check().map_err(Error::Usage)?;
    let key = match creds::ipsec_psk(ipsec.ipsec_psk_file.as_deref()).map_err(Error::Local)? {
        Some(k) => Some(api::SecretString::new(std::str::from_utf8(k.expose()).map_err(|_| {
            Error::Local("the IPsec pre-shared key must be UTF-8 text to be sent to the service".into())
        })?)),
        None => None,
    };
    Ok((Some(ipsec.security_flags().bits()), ipsec.ipsec_tunnel_peer.clone(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_service_message_names_the_socket_and_the_way_out() {
        let e = Error::from(ClientError::NoService {
            path: "/run/x.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(e.to_string(), "no rsiscsid at /run/x.sock (start it with `rsiscsid` or pass --socket)");
        assert_eq!(e.exit_code(), EXIT_NO_SERVICE);
    }

    #[test]
    fn api_errors_show_message_name_and_hex_code() {
        let body = ApiErrorBody::new(0xEFFF_001C, "ISDSC_INVALID_SESSION_ID", "no session 1-2");
        let e = Error::from(ClientError::Api { status: 404, body });
        assert_eq!(e.to_string(), "no session 1-2 (ISDSC_INVALID_SESSION_ID, 0xEFFF001C)");
        assert_eq!(e.exit_code(), EXIT_FAILED);
    }

    /// `--ipsec` sets the flags and sends the key; with `--security-flags`
    /// too it is a usage error; without it nothing changes.
    #[test]
    fn ipsec_options_become_flags_tunnel_peer_and_key() {
        use crate::cli::{IpsecArgs, IpsecModeArg};
        assert_eq!(ipsec_request(Some(0x41), &IpsecArgs::default()).unwrap(), (Some(0x41), None, None));
        let dir = std::env::temp_dir().join(format!("rsiscsi-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("psk");
        std::fs::write(&f, "lab-psk-123\n").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let a = IpsecArgs {
            ipsec: Some(IpsecModeArg::Tunnel),
            ipsec_tunnel_peer: Some("198.18.8.2".into()),
            ipsec_psk_file: Some(f.clone()),
            ipsec_pfs: true,
        };
        let (flags, peer, key) = ipsec_request(None, &a).unwrap();
        assert_eq!((flags, peer.as_deref()), (Some(0x53), Some("198.18.8.2")));
        assert_eq!(key.unwrap().expose(), "lab-psk-123");
        assert_eq!(ipsec_request(Some(0x43), &a).unwrap_err().exit_code(), EXIT_USAGE);
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let e = ipsec_request(None, &a).unwrap_err();
        assert!(e.to_string().contains("mode 0640"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn portal_arguments_default_to_3260() {
        assert_eq!(portal_arg("127.0.0.1").unwrap(), api::Portal::new("127.0.0.1", 3260));
        assert_eq!(portal_arg("[::1]:3261").unwrap(), api::Portal::new("::1", 3261));
        assert_eq!(portal_arg("h:0").unwrap_err().exit_code(), EXIT_USAGE);
    }
}
