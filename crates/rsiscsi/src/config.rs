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
