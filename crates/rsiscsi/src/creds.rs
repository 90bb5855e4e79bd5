//! CHAP credentials and the IPsec pre-shared key from options, environment,
//! files and URLs. Secrets are read into zeroizing buffers and never printed.

use std::path::Path;

use iscsi_proto::chap::{ChapConfig, Secret};

use crate::cli::Common;
use crate::url::IscsiUrl;

pub const SECRET_ENV: &str = "RSISCSI_CHAP_SECRET";
pub const TARGET_SECRET_ENV: &str = "RSISCSI_TARGET_CHAP_SECRET";
/// The service initiator's own secret (`rsiscsi initiator chap-secret`).
pub const INITIATOR_SECRET_ENV: &str = "RSISCSI_INITIATOR_CHAP_SECRET";
/// The IKE pre-shared key of `--ipsec` (Windows' `Key`), when no
/// `--ipsec-psk-file` is given.
pub const IPSEC_PSK_ENV: &str = "RSISCSI_IPSEC_PSK";

/// What a secret is, for the messages about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chap,
    Psk,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Chap => "CHAP secret",
            Kind::Psk => "IPsec pre-shared key",
        }
    }
}

/// Longest CHAP secret accepted. RFC 7143 §12.1.3 sets no bound, but
/// open-iscsi and the common targets keep at most 255 or 256 bytes (Windows
/// 16), so a longer one can only be a wrong file.
pub const MAX_SECRET_LEN: usize = 255;

/// Refuses an empty or overlong secret; `origin` says where it came from.
fn check_secret(kind: Kind, len: usize, origin: &str) -> Result<(), String> {
    let what = kind.name();
    if len == 0 {
        return Err(format!("the {what} from {origin} is empty"));
    }
    if len > MAX_SECRET_LEN {
        return Err(format!("the {what} from {origin} is {len} bytes, more than the {MAX_SECRET_LEN} accepted"));
    }
    Ok(())
}

/// A secret given in the URL (`user%secret@`), checked like the others.
fn url_secret(s: &zeroize::Zeroizing<String>) -> Result<Secret, String> {
    check_secret(Kind::Chap, s.len(), "the URL")?;
    Ok(Secret::new(s.as_bytes().to_vec()))
}

/// Reads a secret file. Like ssh with private keys, a file that others may
/// read (any group or other permission bit) is refused.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    read_file_of(Kind::Chap, path)
}

/// [`read_secret_file`] for a secret of `kind`.
fn read_file_of(kind: Kind, path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret file {} is accessible by others (mode {mode:04o}); make it private with chmod 600",
            path.display()
        ));
    }
    if !meta.is_file() {
        return Err(format!("secret file {} is not a regular file", path.display()));
    }
    // Read at most a little more than the longest secret plus a line end:
    // enough to tell that a file is too long without reading all of it.
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_SECRET_LEN as u64 + 3), &mut bytes))
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.len() > MAX_SECRET_LEN {
        return Err(format!(
            "the {} from file {} is more than the {MAX_SECRET_LEN} bytes accepted",
            kind.name(),
            path.display()
        ));
    }
    check_secret(kind, trimmed.len(), &format!("file {}", path.display()))?;
    Ok(Secret::new(trimmed.to_vec()))
}

/// The secret in `var`; an unset or empty variable is no secret.
fn env_secret(var: &str) -> Result<Option<Secret>, String> {
    env_secret_of(Kind::Chap, var)
}

fn env_secret_of(kind: Kind, var: &str) -> Result<Option<Secret>, String> {
    let Some(s) = std::env::var(var).ok().filter(|s| !s.is_empty()).map(zeroize::Zeroizing::new) else {
        return Ok(None);
    };
    check_secret(kind, s.len(), var)?;
    Ok(Some(Secret::new(s.as_bytes().to_vec())))
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
            Some(s) => url_secret(&s)?,
            None => env_secret(SECRET_ENV)?.ok_or_else(|| {
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
                    Some(s) => url_secret(&s)?,
                    None => env_secret(TARGET_SECRET_ENV)?.ok_or_else(|| {
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

/// A secret from a private file, else from the environment variable `var`.
pub fn secret_from(file: Option<&Path>, var: &str) -> Result<Secret, String> {
    match file {
        Some(p) => read_secret_file(p),
        None => env_secret(var)?.ok_or_else(|| format!("no secret given: set {var} or pass --secret-file FILE")),
    }
}

/// The IKE pre-shared key of `--ipsec` (RFC 3723 §2.3: IKE authenticated
/// with a pre-shared key): from a private file, else from
/// `RSISCSI_IPSEC_PSK`; `None` when neither gives one (the login then fails
/// with ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE, as on Windows).
pub fn ipsec_psk(file: Option<&Path>) -> Result<Option<Secret>, String> {
    match file {
        Some(p) => read_file_of(Kind::Psk, p).map(Some),
        None => env_secret_of(Kind::Psk, IPSEC_PSK_ENV),
    }
}
