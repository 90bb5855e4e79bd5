//! The rsiscsid service API: the JSON types of the contract ([`types`]),
//! an async client over the service's Unix domain socket ([`client`]) and
//! where that socket lives by default ([`default_socket_path`]).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod client;
pub mod identity;
pub mod types;

use std::path::PathBuf;

pub use client::{Client, ClientError};

/// Environment variable naming the socket (after `--socket`).
pub const SOCKET_ENV: &str = "RSISCSI_SOCKET";

/// File name of the socket inside the runtime directory.
pub const SOCKET_NAME: &str = "rsiscsid.sock";

/// The socket path to use: `explicit` (from `--socket`), else
/// `$RSISCSI_SOCKET`, else [`default_socket_path`].
pub fn resolve_socket_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os(SOCKET_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(default_socket_path)
}

/// The runtime-directory default: `$RUNTIME_DIRECTORY` (set by systemd's
/// `RuntimeDirectory=`) if set, else `/run/rsiscsi` as root, else
/// `$XDG_RUNTIME_DIR/rsiscsi`; the socket is `rsiscsid.sock` in it.
pub fn default_socket_path() -> PathBuf {
    runtime_dir(
        std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from),
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        nix::unistd::geteuid().is_root(),
    )
    .join(SOCKET_NAME)
}

/// The pure rule behind [`default_socket_path`]. `$RUNTIME_DIRECTORY` may
/// hold several colon-separated directories (systemd): the first is used.
fn runtime_dir(runtime_directory: Option<PathBuf>, xdg: Option<PathBuf>, root: bool) -> PathBuf {
    if let Some(first) =
        runtime_directory.as_ref().and_then(|d| d.to_str()).and_then(|d| d.split(':').next()).filter(|d| !d.is_empty())
    {
        return PathBuf::from(first);
    }
    if root {
        return PathBuf::from("/run/rsiscsi");
    }
    match xdg.filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.join("rsiscsi"),
        // No runtime dir for this user: a per-user directory under /tmp.
        None => std::env::temp_dir().join(format!("rsiscsi-{}", nix::unistd::geteuid())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn runtime_directory_wins() {
        let d = runtime_dir(Some("/run/x:/run/y".into()), Some("/run/user/1000".into()), false);
        assert_eq!(d, PathBuf::from("/run/x"));
    }

    #[test]
    fn root_uses_run() {
        assert_eq!(runtime_dir(None, Some("/run/user/0".into()), true), PathBuf::from("/run/rsiscsi"));
    }

    #[test]
    fn user_uses_xdg_runtime_dir() {
        assert_eq!(runtime_dir(None, Some("/run/user/1000".into()), false), PathBuf::from("/run/user/1000/rsiscsi"));
    }

    #[test]
    fn explicit_path_wins() {
        assert_eq!(resolve_socket_path(Some("/tmp/a.sock".into())), PathBuf::from("/tmp/a.sock"));
    }
}
