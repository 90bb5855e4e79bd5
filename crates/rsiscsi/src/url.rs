//! `iscsi://[user%secret@]HOST[:PORT]/IQN/LUN` URLs (the libiscsi form),
//! with `?target_user=..&target_password=..` for mutual CHAP.

use iscsi_initiator::PortalAddr;
use percent_encoding::percent_decode_str;
use zeroize::Zeroizing;

/// A parsed iSCSI URL. The secrets it may carry never reach `Debug`.
#[derive(Clone)]
pub struct IscsiUrl {
    pub portal: PortalAddr,
    pub target: Option<String>,
    pub lun: Option<u64>,
    pub user: Option<String>,
    pub secret: Option<Zeroizing<String>>,
    pub target_user: Option<String>,
    pub target_secret: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiUrl")
            .field("portal", &self.portal)
            .field("target", &self.target)
            .field("lun", &self.lun)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("not an iSCSI URL (expected iscsi://HOST[:PORT]/IQN/LUN): {0}")]
    Scheme(String),
    #[error("invalid portal {0:?}: expected HOST[:PORT] or [IPv6][:PORT]")]
    Portal(String),
    /// RFC 7143 §13.3 portals are TCP ports: 1 to 65535.
    #[error("port {0} out of range: expected 1 to 65535")]
    Port(String),
    #[error("invalid LUN {0:?} in URL: expected a number from 0 to 16383")]
    Lun(String),
    #[error("invalid target name in URL: {0}")]
    Target(String),
    /// RFC 3986 §3.2.2: an IPv6 literal in a URL is written in brackets;
    /// without them `::1:3260` is itself an IPv6 address and the port is lost.
    #[error("IPv6 address {0:?} must be written in brackets: [{0}] or [{0}]:PORT (is the last part a port?)")]
    Ipv6Brackets(String),
    #[error("unknown URL parameter {0:?} (known: target_user, target_password)")]
    Param(String),
    #[error("URL is not valid UTF-8 after percent-decoding")]
    Encoding,
}

fn decode(s: &str) -> Result<String, UrlError> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| UrlError::Encoding)
}

impl IscsiUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        // What is shown back to the user in an error never includes the
        // credentials part.
        let rest = s.strip_prefix("iscsi://").ok_or_else(|| UrlError::Scheme(redact(s)))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let portal = parse_portal(hostport)?;
        let (mut user, mut secret) = (None, None);
        if let Some(u) = userinfo {
            let (n, p) = match u.split_once('%') {
                Some((n, p)) => (n, Some(p)),
                None => (u, None),
            };
            user = Some(decode(n)?);
            secret = p.map(decode).transpose()?.map(Zeroizing::new);
        }
        let path = path.trim_end_matches('/');
        let (target, lun) = if path.is_empty() {
            (None, None)
        } else {
            let (t, l) = match path.rsplit_once('/') {
                Some((t, l)) => (t, Some(l)),
                None => (path, None),
            };
            let t = decode(t)?;
            crate::config::validate_name(&t).map_err(UrlError::Target)?;
            let lun = match l {
                None => None,
                Some(l) => match l.parse::<u64>() {
                    Ok(n) if n < 16384 => Some(n),
                    _ => return Err(UrlError::Lun(l.to_string())),
                },
            };
            (Some(t), lun)
        };
        let (mut target_user, mut target_secret) = (None, None);
        if let Some(q) = query {
            for kv in q.split('&').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                match k {
                    "target_user" => target_user = Some(decode(v)?),
                    "target_password" => target_secret = Some(Zeroizing::new(decode(v)?)),
                    // libiscsi knobs that do not change what we do.
                    "header_digest" => {}
                    other => return Err(UrlError::Param(other.to_string())),
                }
            }
        }
        Ok(Self { portal, target, lun, user, secret, target_user, target_secret })
    }
}

/// Parses `HOST[:PORT]` or `[IPv6][:PORT]`, naming an out-of-range port
/// rather than calling the whole address invalid.
pub fn parse_portal(s: &str) -> Result<PortalAddr, UrlError> {
    let trimmed = s.trim();
    if !trimmed.starts_with('[') && trimmed.matches(':').count() > 1 {
        return Err(UrlError::Ipv6Brackets(trimmed.to_string()));
    }
    let port = match s.trim().strip_prefix('[') {
        Some(rest) => rest.split_once("]:").map(|(_, p)| p),
        None if s.matches(':').count() == 1 => s.split_once(':').map(|(_, p)| p),
        None => None,
    };
    if let Some(p) = port
        && !p.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().map_or(true, |n| n == 0)
    {
        return Err(UrlError::Port(p.to_string()));
    }
    PortalAddr::parse(s).map_err(|_| UrlError::Portal(s.to_string()))
}

/// The URL with any `user%secret@` part hidden.
pub fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}***@{}", &s[..a + 3], &s[b + 1..]),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_libiscsi_forms() {
        let u = IscsiUrl::parse("iscsi://127.0.0.1:3260/iqn.2024-01.lab.tgt:ram1/1").unwrap();
        assert_eq!(u.portal.to_string(), "127.0.0.1:3260");
        assert_eq!(u.target.as_deref(), Some("iqn.2024-01.lab.tgt:ram1"));
        assert_eq!(u.lun, Some(1));
        let u = IscsiUrl::parse("iscsi://labuser%labsecret123@[::1]:3261/iqn.2024-01.x:chap/0").unwrap();
        assert_eq!(u.user.as_deref(), Some("labuser"));
        assert_eq!(u.secret.as_deref().map(String::as_str), Some("labsecret123"));
        assert_eq!(u.portal.to_string(), "[::1]:3261");
        let u = IscsiUrl::parse("iscsi://m%s@h/iqn.2024-01.x:m/0?target_user=mt&target_password=p%40ss").unwrap();
        assert_eq!(u.target_user.as_deref(), Some("mt"));
        assert_eq!(u.target_secret.as_deref().map(String::as_str), Some("p@ss"));
        let u = IscsiUrl::parse("iscsi://127.0.0.1/").unwrap();
        assert_eq!((u.portal.port, u.target, u.lun), (3260, None, None));
    }

    #[test]
    fn refuses_malformed_urls_without_echoing_secrets() {
        assert!(matches!(IscsiUrl::parse("http://h/x/1"), Err(UrlError::Scheme(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://h:99999/x/1"), Err(UrlError::Port(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://[::1]:0/x/1"), Err(UrlError::Port(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://h:abc/x/1"), Err(UrlError::Portal(_))));
        assert!(matches!(IscsiUrl::parse("iscsi:///x/1"), Err(UrlError::Portal(_))));
        assert_eq!(parse_portal("[::1]").unwrap().to_string(), "[::1]:3260");
        assert_eq!(parse_portal("::1"), Err(UrlError::Ipv6Brackets("::1".into())));
        assert!(matches!(IscsiUrl::parse("iscsi://::1:3260/iqn.2024-01.a:b/1"), Err(UrlError::Ipv6Brackets(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://h/iqn.x/1"), Err(UrlError::Target(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://h/eui.12345/1"), Err(UrlError::Target(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://h/iqn.2024-01.x/abc"), Err(UrlError::Lun(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://h/iqn.2024-01.x/99999"), Err(UrlError::Lun(_))));
        assert!(matches!(IscsiUrl::parse("iscsi://h/iqn.2024-01.x/1?bogus=1"), Err(UrlError::Param(_))));
        let e = IscsiUrl::parse("iscsx://u%topsecret@h/x/1").unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(
            !format!("{:?}", IscsiUrl::parse("iscsi://u%topsecret@h/iqn.2024-01.x:y/1").unwrap()).contains("topsecret")
        );
    }
}
