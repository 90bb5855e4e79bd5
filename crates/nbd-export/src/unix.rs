//! The Unix socket an export listens on: created private (mode 0600) before any client can connect,
//! never replacing something that is not a socket, and removed again by its owner.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixSocket};

use crate::exporter::ServeError;

fn socket_err(path: &Path) -> impl FnOnce(io::Error) -> ServeError + '_ {
    move |source| ServeError::Socket { path: path.to_owned(), source }
}

/// Binds a listening Unix socket at `path`, mode 0600. An existing socket nobody listens on (left by
/// a crashed server) is replaced; a live one is [`ServeError::InUse`]; anything else is
/// [`ServeError::NotASocket`]. The mode is set between `bind` and `listen`, so no client can connect
/// while it is wider. Must be called within a tokio runtime. The caller removes the path when done
/// ([`bind_unix_guarded`] does it on drop).
pub fn bind_unix(path: impl AsRef<Path>) -> Result<UnixListener, ServeError> {
    let path = path.as_ref();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(ServeError::NotASocket { path: path.to_owned() }),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::InUse { path: path.to_owned() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale NBD socket");
                std::fs::remove_file(path).map_err(socket_err(path))?;
            }
            Err(e) => return Err(socket_err(path)(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_err(path)(e)),
    }
    let socket = UnixSocket::new_stream().map_err(socket_err(path))?;
    socket.bind(path).map_err(socket_err(path))?;
    let listen =
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).and_then(|()| socket.listen(1024));
    listen.map_err(|e| {
        let _ = std::fs::remove_file(path);
        socket_err(path)(e)
    })
}

/// [`bind_unix`] plus a guard that removes the socket when dropped.
pub fn bind_unix_guarded(path: impl AsRef<Path>) -> Result<(UnixListener, UnixSocketGuard), ServeError> {
    let listener = bind_unix(path.as_ref())?;
    Ok((listener, UnixSocketGuard::new(path.as_ref())))
}

/// Removes a socket path; `Ok(false)` when nothing was there, [`ServeError::NotASocket`] rather than
/// deleting some other file.
pub fn remove_unix_socket(path: impl AsRef<Path>) -> Result<bool, ServeError> {
    let path = path.as_ref();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(socket_err(path))?;
            Ok(true)
        }
        Ok(_) => Err(ServeError::NotASocket { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(socket_err(path)(e)),
    }
}

/// Removes the socket at its path when dropped, but only if it is still the socket that was there
/// when the guard was made (same device, inode and change time: inode numbers get reused), so a newer
/// server's socket survives.
#[derive(Debug)]
pub struct UnixSocketGuard {
    path: PathBuf,
    identity: Option<(u64, u64, i64, i64)>,
}

impl UnixSocketGuard {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let identity = std::fs::symlink_metadata(&path).ok().map(|m| identity(&m));
        Self { path, identity }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn identity(m: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

impl Drop for UnixSocketGuard {
    fn drop(&mut self) {
        let Ok(meta) = std::fs::symlink_metadata(&self.path) else { return };
        if meta.file_type().is_socket()
            && self.identity == Some(identity(&meta))
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the NBD socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("nbd-export-unix-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn socket_is_private_and_guard_removes_it() {
        let dir = temp_dir("mode");
        let path = dir.join("s.sock");
        let (listener, guard) = bind_unix_guarded(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        drop(listener);
        drop(guard);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn refuses_a_regular_file_and_a_live_socket_replaces_a_stale_one() {
        let dir = temp_dir("replace");
        let file = dir.join("file");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(matches!(bind_unix(&file), Err(ServeError::NotASocket { .. })));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        assert!(matches!(remove_unix_socket(&file), Err(ServeError::NotASocket { .. })));

        let path = dir.join("s.sock");
        let live = bind_unix(&path).unwrap();
        assert!(matches!(bind_unix(&path), Err(ServeError::InUse { .. })));
        drop(live); // the path stays behind, as after a crash
        assert!(path.exists());
        let again = bind_unix(&path).unwrap();
        drop(again);
        assert!(remove_unix_socket(&path).unwrap());
        assert!(!remove_unix_socket(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn guard_spares_a_replaced_socket() {
        let dir = temp_dir("spare");
        let path = dir.join("s.sock");
        let (first, guard) = bind_unix_guarded(&path).unwrap();
        drop(first);
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let _second = bind_unix(&path).unwrap();
        drop(guard);
        assert!(path.exists(), "the newer socket is not the guard's");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
