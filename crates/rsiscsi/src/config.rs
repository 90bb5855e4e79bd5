//! The initiator's own node name, generated once and kept in a config file
//! so that targets see the same initiator every time (RFC 7143 §4.2.7.1).

use std::path::PathBuf;

/// Where the config lives: `RSISCSI_CONFIG_DIR`, else the XDG config
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

/// Checks an iSCSI name (RFC 7143 §4.2.7): `iqn.`, `eui.` or `naa.` form,
/// at most 223 bytes, no spaces or control characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_form = name.starts_with("iqn.") || name.starts_with("eui.") || name.starts_with("naa.");
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !ok_form || !ok_chars || name.len() > 223 || name.len() < 5 {
        return Err(format!(
            "invalid iSCSI name {name:?}: expected iqn.YYYY-MM.reversed.domain[:suffix] (or eui./naa.), at most 223 characters"
        ));
    }
    Ok(())
}

/// The stable initiator name: read from `<config>/initiatorname`, or
/// generated and saved there on first use.
pub fn initiator_name() -> String {
    let path = config_dir().join("initiatorname");
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines() {
            if let Some(v) = line.trim().strip_prefix("InitiatorName=")
                && validate_name(v.trim()).is_ok()
            {
                return v.trim().to_string();
            }
        }
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| "host".into());
    let suffix: u64 = rand::random();
    let name = format!("iqn.2026-11.rs.rsiscsi:{host}-{:012x}", suffix & 0xffff_ffff_ffff);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&path, format!("InitiatorName={name}\n"));
    name
}
