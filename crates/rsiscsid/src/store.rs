//! Persistence: one JSON state file and one JSON secrets file in a 0700
//! state directory, each replaced atomically (write a temporary file, fsync
//! it, rename it over the old one, fsync the directory), so a `kill -9` at
//! any moment leaves either the old or the new file, never a torn one.
//! Why not SQLite: see the crate README (small data written rarely, no C
//! dependency to build).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rsiscsi_api::types::{LoginOptions, Portal, SecretString, SendTargetPortal, Target};
use serde::{Deserialize, Serialize};

/// Where the state lives and what went wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid state JSON: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the state: {0}")]
    Encode(serde_json::Error),
}

/// The initiator's identity (MSIscsiInitiator_MethodClass.IscsiNodeName).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiatorState {
    pub node_name: String,
    #[serde(default)]
    pub alias: String,
}

/// A persistent login as stored (MSIscsiInitiator_PersistentLoginClass),
/// with the ISID its sessions use so that a new login after a crash
/// reinstates the old session (RFC 7143 §6.3.5: same ISID, TSIH 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    pub target_name: String,
    pub portal: Portal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_port: Option<u32>,
    #[serde(default)]
    pub security_flags: u64,
    /// Tunnel mode: the target side's tunnel end (the IPsec pre-shared key
    /// is in the secrets file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_outer_address: Option<String>,
    /// Without the password (that is in the secrets file).
    #[serde(default)]
    pub login_options: LoginOptions,
    pub connections: u32,
    pub load_balance_policy: String,
    /// 12 hex digits.
    pub isid: String,
    /// The hold time and link-down time given at login, in seconds; absent:
    /// the service's defaults at the time of each login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_hold_time_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_down_time_s: Option<u32>,
    /// NBD exports served again with each of its sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<rsiscsi_api::types::ExportRequest>,
    /// The path settings of its connections, leading first, as `session
    /// path` last left them: applied again to each of its sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathSetting>,
}

/// One connection's path settings (primary or standby, weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSetting {
    pub primary: bool,
    pub weight: u32,
}

impl StoredLogin {
    /// The identity of a persistent login: target name and portal.
    pub fn key(&self) -> String {
        login_key(&self.target_name, &self.portal.address, self.portal.port)
    }
}

/// Key of a persistent login (also its key in the secrets file).
pub fn login_key(target_name: &str, address: &str, port: u16) -> String {
    format!("login|{target_name}|{}|{port}", address.to_ascii_lowercase())
}

/// Key of a discovery portal in the secrets file.
pub fn portal_key(address: &str, port: u16) -> String {
    format!("portal|{}|{port}", address.to_ascii_lowercase())
}

/// Everything but secrets. `version` lets a later format migrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub initiator: InitiatorState,
    #[serde(default)]
    pub portals: Vec<SendTargetPortal>,
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub persistent_logins: Vec<StoredLogin>,
    /// iSNS servers (MSIscsiInitiator_IsnsServerClass); absent in the
    /// state files of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isns_servers: Vec<StoredIsnsServer>,
}

/// An iSNS server as stored: where it is. Its state lives in memory
/// ([`crate::isns`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIsnsServer {
    pub address: String,
    pub port: u16,
}

impl StoredIsnsServer {
    /// `HOST:PORT` (`[V6]:PORT`), as [`iscsi_initiator::isns`] takes it.
    pub fn server(&self) -> String {
        rsiscsi_api::types::Portal::new(self.address.clone(), self.port).to_string()
    }

    /// The server as a discovery source of targets.
    pub fn source(&self) -> Portal {
        Portal::isns_source(self.address.clone(), self.port)
    }

    pub fn same_place(&self, address: &str, port: u16) -> bool {
        self.address.eq_ignore_ascii_case(address) && self.port == port
    }
}

impl State {
    fn fresh(node_name: String) -> Self {
        Self {
            version: 1,
            initiator: InitiatorState { node_name, alias: String::new() },
            portals: Vec::new(),
            targets: Vec::new(),
            persistent_logins: Vec::new(),
            isns_servers: Vec::new(),
        }
    }
}

/// The secrets: the initiator's own CHAP secret, the CHAP passwords of
/// portals and persistent logins and the IPsec pre-shared keys of
/// persistent logins (Windows `Key`), by key. Never returned, printed or
/// logged.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Secrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_chap_secret: Option<SecretString>,
    #[serde(default)]
    pub passwords: BTreeMap<String, SecretString>,
    /// IKE pre-shared keys of persistent logins, by login key; absent in
    /// the secrets files of older versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipsec_keys: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("initiator_chap_secret_set", &self.initiator_chap_secret.is_some())
            .field("passwords", &self.passwords.len())
            .field("ipsec_keys", &self.ipsec_keys.len())
            .finish()
    }
}

/// The state and secrets in memory, written through on every change.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    inner: Mutex<(State, Secrets)>,
}

pub const STATE_FILE: &str = "state.json";
pub const SECRETS_FILE: &str = "secrets.json";

impl Store {
    /// Opens (or creates) the state directory, forces it to 0700 and the
    /// secrets file to 0600, and loads both files. A new state gets a
    /// generated node name (`iqn.2024-01.rs.rsiscsi:HOST-RANDOM`).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, rsiscsi_api::identity::generate_name)
    }

    /// As [`Store::open`]; a new state gets the node name `fresh_name`
    /// gives (the service passes the host's system-wide name).
    pub fn open_with(dir: &Path, fresh_name: impl FnOnce() -> String) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        let state_path = dir.join(STATE_FILE);
        let secrets_path = dir.join(SECRETS_FILE);
        // A temporary file left by a kill during a write is garbage.
        let _ = fs::remove_file(tmp_path(&state_path));
        let _ = fs::remove_file(tmp_path(&secrets_path));
        let mut fresh = false;
        let state = match read_json::<State>(&state_path)? {
            Some(s) => s,
            None => {
                fresh = true;
                State::fresh(fresh_name())
            }
        };
        let secrets = match read_json::<Secrets>(&secrets_path)? {
            Some(s) => {
                fs::set_permissions(&secrets_path, fs::Permissions::from_mode(0o600))
                    .map_err(|source| StoreError::Write { path: secrets_path.clone(), source })?;
                s
            }
            None => Secrets::default(),
        };
        let store = Self { dir: dir.to_path_buf(), inner: Mutex::new((state, secrets)) };
        if fresh {
            store.update(|_, _| Ok::<(), StoreError>(()))?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Secrets)> {
        // A panic while holding the lock leaves consistent data (every
        // change is written whole), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the state.
    pub fn state(&self) -> State {
        self.lock().0.clone()
    }

    /// A copy of the secrets (for a login).
    pub fn secrets(&self) -> Secrets {
        self.lock().1.clone()
    }

    /// Changes state and/or secrets and writes both files before returning;
    /// on a write failure the in-memory copy is left unchanged.
    pub fn update<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut State, &mut Secrets) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut guard = self.lock();
        let (mut state, mut secrets) = guard.clone();
        let out = f(&mut state, &mut secrets)?;
        let secrets_json = serde_json::to_vec_pretty(&secrets).map_err(StoreError::Encode)?;
        let state_json = serde_json::to_vec_pretty(&state).map_err(StoreError::Encode)?;
        if secrets_json != serde_json::to_vec_pretty(&guard.1).map_err(StoreError::Encode)? {
            write_atomic(&self.dir, &self.dir.join(SECRETS_FILE), &secrets_json)?;
        }
        write_atomic(&self.dir, &self.dir.join(STATE_FILE), &state_json)?;
        *guard = (state, secrets);
        Ok(out)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Parse { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read { path: path.to_path_buf(), source }),
    }
}

/// Replaces `path` with `data` so that a crash leaves the old or the new
/// content: temp file (mode 0600) + fsync, rename, fsync of the directory
/// (the rename is durable only once the directory entry is on disk).
pub fn write_atomic(dir: &Path, path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = tmp_path(path);
    let werr = |source| StoreError::Write { path: path.to_path_buf(), source };
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(werr)?;
    f.write_all(data).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    fs::rename(&tmp, path).map_err(werr)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(werr)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rsiscsid-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn state_survives_reopen_and_secrets_are_0600_in_0700() {
        let d = tempdir("reopen");
        let s = Store::open(&d).unwrap();
        let name = s.state().initiator.node_name;
        assert!(name.starts_with("iqn.2024-01.rs.rsiscsi:"), "{name}");
        s.update(|st, sec| {
            st.initiator.alias = "box".into();
            sec.initiator_chap_secret = Some(SecretString::new("0123456789abcd"));
            Ok::<(), StoreError>(())
        })
        .unwrap();
        drop(s);
        let s = Store::open(&d).unwrap();
        assert_eq!(s.state().initiator.node_name, name);
        assert_eq!(s.state().initiator.alias, "box");
        assert_eq!(s.secrets().initiator_chap_secret.unwrap().expose(), "0123456789abcd");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join(SECRETS_FILE)), 0o600);
        let state_text = fs::read_to_string(d.join(STATE_FILE)).unwrap();
        assert!(!state_text.contains("0123456789abcd"));
        assert!(!format!("{:?}", s.secrets()).contains("0123456789abcd"));
        let _ = fs::remove_dir_all(&d);
    }

    /// A state file written before iSNS servers existed loads, with none.
    #[test]
    fn state_without_isns_servers_loads() {
        let d = tempdir("oldstate");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(STATE_FILE),
            br#"{"version":1,"initiator":{"node_name":"iqn.2024-01.x:y"},"portals":[],"targets":[]}"#,
        )
        .unwrap();
        let s = Store::open(&d).unwrap();
        assert!(s.state().isns_servers.is_empty());
        s.update(|st, _| {
            st.isns_servers.push(StoredIsnsServer { address: "::1".into(), port: 3205 });
            Ok::<(), StoreError>(())
        })
        .unwrap();
        drop(s);
        let s = Store::open(&d).unwrap();
        assert_eq!(s.state().isns_servers[0].server(), "[::1]:3205");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn failed_update_changes_nothing() {
        let d = tempdir("fail");
        let s = Store::open(&d).unwrap();
        let before = s.state();
        let r: Result<(), StoreError> = s.update(|st, _| {
            st.initiator.alias = "changed".into();
            Err(StoreError::Encode(serde_json::from_str::<u8>("x").unwrap_err()))
        });
        assert!(r.is_err());
        assert_eq!(s.state(), before);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn leftover_temp_file_is_ignored() {
        let d = tempdir("tmp");
        let s = Store::open(&d).unwrap();
        let name = s.state().initiator.node_name;
        drop(s);
        fs::write(d.join("state.json.tmp"), b"{ torn").unwrap();
        let s = Store::open(&d).unwrap();
        assert_eq!(s.state().initiator.node_name, name);
        assert!(!d.join("state.json.tmp").exists());
        let _ = fs::remove_dir_all(&d);
    }
}
