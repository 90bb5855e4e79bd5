//! CHAP credentials from options, environment, files and URLs. Secrets are
//! read into zeroizing buffers and never printed.

use std::path::Path;

use iscsi_proto::chap::{ChapConfig, Secret};

use crate::cli::Common;
use crate::url::IscsiUrl;

pub const SECRET_ENV: &str = "RSISCSI_CHAP_SECRET";
pub const TARGET_SECRET_ENV: &str = "RSISCSI_TARGET_CHAP_SECRET";

/// Reads a secret file. Like ssh with private keys, a file that others may
/// read (any group or other permission bit) is refused.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret file {} is accessible by others (mode {mode:04o}); make it private with chmod 600",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let bytes = zeroize::Zeroizing::new(bytes);
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(Secret::new(trimmed.to_vec()))
}

fn env_secret(var: &str) -> Option<Secret> {
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| Secret::new(zeroize::Zeroizing::new(s).as_bytes().to_vec()))
}

/// Builds the CHAP configuration, or `None` for AuthMethod=None.
pub fn chap_config(common: &Common, url: Option<&IscsiUrl>) -> Result<Option<ChapConfig>, String> {
    let user = common.chap_user.clone().or_else(|| url.and_then(|u| u.user.clone()));
    let target_user = common.target_chap_user.clone().or_else(|| url.and_then(|u| u.target_user.clone()));
    let Some(user) = user else {
        if target_user.is_some() {
            return Err("mutual CHAP (--target-chap-user) also needs --chap-user".into());
        }
        return Ok(None);
    };
    let secret = match &common.chap_secret_file {
        Some(f) => read_secret_file(f)?,
        None => match url.and_then(|u| u.secret.clone()) {
            Some(s) => Secret::new(s.as_bytes().to_vec()),
            None => env_secret(SECRET_ENV).ok_or_else(|| {
                format!("CHAP user {user:?} given but no secret: set {SECRET_ENV} or --chap-secret-file")
            })?,
        },
    };
    let target = match target_user {
        None => None,
        Some(tu) => {
            let ts = match &common.target_chap_secret_file {
                Some(f) => read_secret_file(f)?,
                None => match url.and_then(|u| u.target_secret.clone()) {
                    Some(s) => Secret::new(s.as_bytes().to_vec()),
                    None => env_secret(TARGET_SECRET_ENV).ok_or_else(|| {
                        format!("target CHAP user {tu:?} given but no secret: set {TARGET_SECRET_ENV} or --target-chap-secret-file")
                    })?,
                },
            };
            Some((tu, ts))
        }
    };
    let mut cfg = ChapConfig::new(user, secret);
    cfg.target = target;
    Ok(Some(cfg))
}
