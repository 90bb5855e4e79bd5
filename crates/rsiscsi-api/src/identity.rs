//! One initiator node name per host (RFC 7143 §4.2.7.1: the iSCSI name
//! identifies the node, and targets key their ACLs by it), shared by
//! `rsiscsid` and the one-shot `rsiscsi` commands.
//!
//! The host's name is the service's when there is one (`GET /v1/initiator`,
//! or its `state.json` when the service is down), else the one in the
//! system-wide file `/etc/rsiscsi/initiatorname` (`InitiatorName=IQN`, the
//! shape of open-iscsi's `/etc/iscsi/initiatorname.iscsi`). `rsiscsid` takes
//! the name in that file when it first generates its own, and keeps the file
//! in step with its name, so a fresh host has one name for both.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::types::Initiator;

/// Environment variable naming the system-wide config directory (default
/// [`SYSTEM_CONFIG_DIR`]); tests point it at a temporary directory.
pub const SYSTEM_CONFIG_DIR_ENV: &str = "RSISCSI_SYSTEM_CONFIG_DIR";

/// The system-wide config directory.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/rsiscsi";

/// File name of the node name file, in the system-wide and per-user config directories.
pub const NAME_FILE: &str = "initiatorname";

/// Environment variable naming rsiscsid's state directory (after `--state-dir`).
pub const STATE_DIR_ENV: &str = "RSISCSI_STATE_DIR";

/// The service's state file inside its state directory.
pub const STATE_FILE: &str = "state.json";

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `$RSISCSI_SYSTEM_CONFIG_DIR`, else `/etc/rsiscsi`.
pub fn system_config_dir() -> PathBuf {
    env_path(SYSTEM_CONFIG_DIR_ENV).unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG_DIR))
}

/// `<system config dir>/initiatorname`.
pub fn system_name_file() -> PathBuf {
    system_config_dir().join(NAME_FILE)
}

/// rsiscsid's state directory when `--state-dir` is not given:
/// `$RSISCSI_STATE_DIR`, else `$STATE_DIRECTORY` (systemd; the first of
/// several), else `/var/lib/rsiscsi` as root, else `$XDG_STATE_HOME/rsiscsi`
/// or `~/.local/state/rsiscsi`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = env_path(STATE_DIR_ENV) {
        return d;
    }
    if let Some(d) = env_path("STATE_DIRECTORY") {
        let first = d.to_str().and_then(|s| s.split(':').next()).filter(|s| !s.is_empty()).map(PathBuf::from);
        return first.unwrap_or(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/rsiscsi");
    }
    if let Some(d) = env_path("XDG_STATE_HOME") {
        return d.join("rsiscsi");
    }
    match env_path("HOME") {
        Some(h) => h.join(".local/state/rsiscsi"),
        None => std::env::temp_dir().join(format!("rsiscsi-state-{}", nix::unistd::geteuid())),
    }
}

/// A name good enough to log in with (RFC 7143 §4.2.7: iqn., eui. or naa.
/// form, at most 223 bytes, no spaces or control characters). The CLI checks
/// the form more closely where a user types a name.
pub fn plausible_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["iqn.", "eui.", "naa."].iter().any(|p| lower.starts_with(p) && lower.len() > p.len())
        && name.len() <= 223
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A node name for a new host: `iqn.2024-01.rs.rsiscsi:HOST-RANDOM` (the
/// random part keeps two hosts of the same hostname apart).
pub fn generate_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| {
            h.to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect()
        })
        .filter(|h: &String| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "host".to_string());
    format!("iqn.2024-01.rs.rsiscsi:{host}-{:08x}", rand::random::<u32>())
}

/// The name in an `InitiatorName=IQN` file: `Ok(None)` when the file does
/// not exist or holds no plausible name; comment lines (`#`) are skipped.
pub fn read_name_file(path: &Path) -> std::io::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("InitiatorName="))
        .map(str::trim)
        .find(|n| plausible_name(n))
        .map(str::to_string))
}

/// One line, as open-iscsi's file and scripts (`cut -d= -f2`) expect.
fn file_text(name: &str) -> String {
    format!("InitiatorName={name}\n")
}

fn tmp_file(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(p)
}

fn write_tmp(path: &Path, name: &str) -> std::io::Result<PathBuf> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let tmp = tmp_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
    let written = f.write_all(file_text(name).as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Creates the file with `name` unless it exists (mode 0644, its directory
/// 0755 if new). Returns the name the file holds afterwards: `name`, or the
/// one another process wrote first (the file appears whole: written
/// aside, then linked into place, which fails if it is already there).
pub fn create_name_file(path: &Path, name: &str) -> std::io::Result<String> {
    if let Some(existing) = read_name_file(path)? {
        return Ok(existing);
    }
    let tmp = write_tmp(path, name)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(name.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(read_name_file(path)?.unwrap_or_else(|| name.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Replaces the file's content with `name` (atomically: written aside, then
/// renamed over it).
pub fn write_name_file(path: &Path, name: &str) -> std::io::Result<()> {
    let tmp = write_tmp(path, name)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The node name in rsiscsid's `state.json` in `state_dir`, if the file is
/// there and readable.
pub fn state_file_name(state_dir: &Path) -> std::io::Result<Option<String>> {
    let bytes = match std::fs::read(state_dir.join(STATE_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(v.pointer("/initiator/node_name").and_then(|n| n.as_str()).filter(|n| plausible_name(n)).map(str::to_string))
}

/// Why [`query_service`] got no name.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Nothing listens on the socket, or it does not exist.
    #[error("no rsiscsid at {}", .0.display())]
    NoService(PathBuf),
    /// The socket's mode or group keeps us out.
    #[error("permission denied on {}", .0.display())]
    PermissionDenied(PathBuf),
    /// Something answered, but not with an initiator.
    #[error("rsiscsid at {path} did not answer GET /v1/initiator: {1}", path = .0.display())]
    BadAnswer(PathBuf, String),
}

/// `GET /v1/initiator` on the service's socket, blocking, each step within
/// `timeout`: for code that runs outside (or must not wait on) an async
/// runtime, such as the one-shot commands choosing their name.
pub fn query_service(socket: &Path, timeout: Duration) -> Result<Initiator, QueryError> {
    let no = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            QueryError::PermissionDenied(socket.to_path_buf())
        } else {
            QueryError::NoService(socket.to_path_buf())
        }
    };
    let bad = |m: String| QueryError::BadAnswer(socket.to_path_buf(), m);
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(no)?;
    s.set_read_timeout(Some(timeout)).map_err(|e| bad(e.to_string()))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| bad(e.to_string()))?;
    s.write_all(b"GET /v1/initiator HTTP/1.1\r\nHost: rsiscsid\r\nConnection: close\r\n\r\n")
        .map_err(|e| bad(e.to_string()))?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| bad("no HTTP answer".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(bad(head.lines().next().unwrap_or_default().to_string()));
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_string() };
    serde_json::from_str(&body).map_err(|e| bad(e.to_string()))
}

/// The payload of an HTTP/1.1 chunked body (RFC 9112 §7.1).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or_default());
        body = rest.get(n..).unwrap_or_default().trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rsiscsi-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn name_file_is_created_once_and_read_back() {
        let d = tempdir("create");
        let f = d.join("etc").join(NAME_FILE);
        assert_eq!(read_name_file(&f).unwrap(), None);
        assert_eq!(create_name_file(&f, "iqn.2024-01.rs.rsiscsi:a-1").unwrap(), "iqn.2024-01.rs.rsiscsi:a-1");
        // A second creator gets the first one's name.
        assert_eq!(create_name_file(&f, "iqn.2024-01.rs.rsiscsi:b-2").unwrap(), "iqn.2024-01.rs.rsiscsi:a-1");
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o644);
        write_name_file(&f, "iqn.2024-01.rs.rsiscsi:c-3").unwrap();
        assert_eq!(read_name_file(&f).unwrap().as_deref(), Some("iqn.2024-01.rs.rsiscsi:c-3"));
        assert_eq!(std::fs::read_dir(f.parent().unwrap()).unwrap().count(), 1, "a temporary file was left");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn open_iscsi_style_file_with_comments() {
        let d = tempdir("read");
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(NAME_FILE);
        std::fs::write(&f, "# comment\nInitiatorName=bad name\nInitiatorName= iqn.1993-08.org.debian:01:abc \n")
            .unwrap();
        assert_eq!(read_name_file(&f).unwrap().as_deref(), Some("iqn.1993-08.org.debian:01:abc"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn generated_names_are_plausible_and_differ() {
        let (a, b) = (generate_name(), generate_name());
        assert!(plausible_name(&a) && a.starts_with("iqn.2024-01.rs.rsiscsi:"), "{a}");
        assert_ne!(a, b);
        assert!(!plausible_name("iqn."));
        assert!(!plausible_name("host"));
    }

    #[test]
    fn state_file_gives_the_service_name() {
        let d = tempdir("state");
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(state_file_name(&d).unwrap(), None);
        std::fs::write(d.join(STATE_FILE), br#"{"version":1,"initiator":{"node_name":"iqn.2024-01.x:y","alias":""}}"#)
            .unwrap();
        assert_eq!(state_file_name(&d).unwrap().as_deref(), Some("iqn.2024-01.x:y"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn chunked_body() {
        assert_eq!(dechunk("5\r\n{\"a\":\r\n3\r\n1}\n\r\n0\r\n\r\n"), "{\"a\":1}\n");
    }

    #[test]
    fn no_service_on_a_missing_socket() {
        let e = query_service(Path::new("/nonexistent/rsiscsid.sock"), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, QueryError::NoService(_)), "{e}");
    }
}
