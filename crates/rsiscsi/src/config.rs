//! The initiator's node name: one per host, shared with rsiscsid
//! (RFC 7143 §4.2.7.1: targets key their ACLs by it), so a one-shot command
//! and a service session look like the same initiator to a target.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rsiscsi_api::identity;

/// The per-user config directory: `RSISCSI_CONFIG_DIR`, else the XDG config
/// directory, else `~/.config/rsiscsi`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RSISCSI_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("rsiscsi");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".config").join("rsiscsi"),
        None => PathBuf::from("/etc/rsiscsi"),
    }
}

/// Checks an iSCSI name (RFC 7143 §4.2.7): at most 223 bytes, made of
/// letters, digits, `.`, `-`, `:` (and `_`, which some targets use), in one
/// of the three forms of §4.2.7.2: `iqn.YYYY-MM.reversed.domain[:suffix]`,
/// `eui.` and 16 hex digits, `naa.` and 16 or 32 hex digits.
pub fn validate_name(name: &str) -> Result<(), String> {
    let chars_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    let form_ok = |name: &str| {
        let hex = |s: &str, lens: &[usize]| lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(rest) = name.strip_prefix("iqn.") {
            // YYYY-MM, then a dot and a non-empty naming authority.
            let (date, authority) = match rest.split_once('.') {
                Some(parts) => parts,
                None => return false,
            };
            let date_ok = date.len() == 7
                && date.bytes().enumerate().all(|(i, b)| if i == 4 { b == b'-' } else { b.is_ascii_digit() })
                && matches!(date.get(5..).and_then(|m| m.parse::<u8>().ok()), Some(1..=12));
            let domain = authority.split(':').next().unwrap_or_default();
            let domain_ok = !domain.is_empty() && domain.split('.').all(|label| !label.is_empty());
            date_ok && domain_ok
        } else if let Some(rest) = name.strip_prefix("eui.") {
            hex(rest, &[16])
        } else if let Some(rest) = name.strip_prefix("naa.") {
            hex(rest, &[16, 32])
        } else {
            false
        }
    };
    if !chars_ok || name.len() > 223 || !form_ok(name) {
        return Err(format!(
            "invalid iSCSI name {name:?}: expected iqn.YYYY-MM.reversed.domain[:suffix], eui. and 16 hex digits, or naa. and 16 or 32 hex digits (at most 223 characters)"
        ));
    }
    Ok(())
}

/// `--socket` of this run, recorded before any command runs (the one-shot
/// commands ask the service at that socket for the host's name).
static SOCKET: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Records `--socket` for [`initiator_name`].
pub fn set_socket(socket: Option<PathBuf>) {
    let _ = SOCKET.set(socket);
}

fn socket() -> PathBuf {
    rsiscsi_api::resolve_socket_path(SOCKET.get().cloned().flatten())
}

/// Where the node name came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSource {
    /// The running service answered `GET /v1/initiator`.
    Service,
    /// The service's state file (the service did not answer).
    ServiceState(PathBuf),
    /// `$RSISCSI_CONFIG_DIR/initiatorname`: a config directory named
    /// explicitly keeps its own name.
    ConfigDir(PathBuf),
    /// The system-wide file (`/etc/rsiscsi/initiatorname`); `true` when
    /// this run created it.
    System(PathBuf, bool),
    /// The per-user file, because the system-wide one could not be used.
    PerUser { path: PathBuf, why: String },
}

/// The host's node name as a one-shot command sees it.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub source: NameSource,
    /// Why the service was not asked, or `None` when it answered.
    pub service_error: Option<identity::QueryError>,
}

/// How long the one-shot commands wait for the service's answer.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(2);

/// The stable initiator name of the one-shot commands (see [`identity`]).
pub fn initiator_name() -> String {
    resolve(&socket()).name
}

/// The host's node name, in this order: `$RSISCSI_CONFIG_DIR/initiatorname`
/// when that variable is set; the service's (asked on `socket`, else read
/// from its state file); the system-wide file, created with a new name if
/// missing; when that cannot be read or created (a user without the right
/// to write `/etc/rsiscsi`), the per-user file, created if missing.
pub fn resolve(socket: &Path) -> Identity {
    if std::env::var_os("RSISCSI_CONFIG_DIR").is_some_and(|d| !d.is_empty()) {
        let path = config_dir().join(identity::NAME_FILE);
        if let Ok(name) = user_name(&path) {
            let service_error = identity::query_service(socket, SERVICE_TIMEOUT).err();
            return Identity { name, source: NameSource::ConfigDir(path), service_error };
        }
    }
    let (answer, service_error) = match identity::query_service(socket, SERVICE_TIMEOUT) {
        Ok(i) => (Some(i.node_name), None),
        Err(e) => (None, Some(e)),
    };
    if let Some(name) = answer.filter(|n| validate_name(n).is_ok()) {
        return Identity { name, source: NameSource::Service, service_error };
    }
    let mut dirs = vec![identity::default_state_dir()];
    if std::env::var_os(identity::STATE_DIR_ENV).is_none() && !dirs.contains(&PathBuf::from("/var/lib/rsiscsi")) {
        dirs.push(PathBuf::from("/var/lib/rsiscsi"));
    }
    for dir in dirs {
        if let Ok(Some(name)) = identity::state_file_name(&dir) {
            return Identity { name, source: NameSource::ServiceState(dir.join(identity::STATE_FILE)), service_error };
        }
    }
    let system = identity::system_name_file();
    let user = config_dir().join(identity::NAME_FILE);
    let why = match identity::read_name_file(&system) {
        Ok(Some(name)) => return Identity { name, source: NameSource::System(system, false), service_error },
        Ok(None) => {
            // A name this user already had stays the host's (target ACLs know it).
            let new = read_user_file(&user).unwrap_or_else(identity::generate_name);
            match identity::create_name_file(&system, &new) {
                Ok(name) => return Identity { name, source: NameSource::System(system, true), service_error },
                Err(e) => format!("{} cannot be created: {e}", system.display()),
            }
        }
        Err(e) => format!("{} cannot be read: {e}", system.display()),
    };
    let name = user_name(&user).unwrap_or_else(|_| identity::generate_name());
    Identity { name, source: NameSource::PerUser { path: user, why }, service_error }
}

/// The name in a per-user file, if it holds a valid one.
fn read_user_file(path: &Path) -> Option<String> {
    identity::read_name_file(path).ok().flatten().filter(|n| validate_name(n).is_ok())
}

/// The name in a per-user file, created with a new name if missing.
fn user_name(path: &Path) -> std::io::Result<String> {
    match read_user_file(path) {
        Some(n) => Ok(n),
        None => identity::create_name_file(path, &identity::generate_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn iscsi_name_forms() {
        for ok in [
            "iqn.2024-01.lab.tgt:ram1",
            "iqn.2026-11.rs.rsiscsi:host-0123",
            "iqn.1991-05.com.microsoft:win-host",
            "iqn.2001-04.com.example",
            "eui.02004567A425678D",
            "naa.52004567BA64678D",
            "naa.62004567BA64678D0123456789ABCDEF",
        ] {
            assert!(validate_name(ok).is_ok(), "{ok:?} refused");
        }
        let long = format!("iqn.2024-01.lab:{}", "a".repeat(223));
        for bad in [
            "",
            "iqn",
            "iqn.",
            "iqn.x",
            "iqn.2024-1.lab",
            "iqn.2024-13.lab",
            "iqn.2024-01",
            "iqn.2024-01.",
            "iqn.2024-01.:x",
            "iqn.2024-01..lab",
            "eui.12345",
            "eui.02004567A425678G",
            "naa.xyz",
            "naa.52004567BA64678",
            "foo.bar",
            "bad name",
            "iqn.2024-01.lab:a b",
            &long,
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
