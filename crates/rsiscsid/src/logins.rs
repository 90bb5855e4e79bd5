//! Logging in (leading connection, more connections, device probe) and the
//! persistent-login supervisor: each stored persistent login has a task that
//! logs it in, watches the session, and logs in again with capped
//! exponential back-off while the target is down. Discovery can cut a
//! back-off short: when an iSNS server tells of the target
//! ([`Supervisor::target_appeared`]), a waiting login is tried at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iscsi_initiator::ipsec::IpsecConfig;
use iscsi_initiator::model::{
    self, AuthType, DigestType, ISCSI_ANY_INITIATOR_PORT, IsdscCode, LoadBalancePolicy, LoginFlags, SecurityFlags,
    Status,
};
use iscsi_initiator::{Session, SessionConfig};
use iscsi_proto::chap::{ChapConfig, Secret};
use iscsi_proto::negotiation::Digest;
use rsiscsi_api::types as api;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::App;
use crate::recovery::RecoveryTimes;
use crate::registry::{Live, Stats};
use crate::store::{Secrets, StoredLogin};

/// First and largest wait between two login attempts of a persistent login.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often a logged-in persistent session is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The next back-off: doubled, capped at [`BACKOFF_MAX`].
pub fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

/// The API login options as the model's `ISCSI_LOGIN_OPTIONS` (each field
/// present sets its InformationSpecified bit), checked as Windows checks
/// them before a login. `ipsec`: the connection is never made without its
/// IPsec SA ([`IpsecConfig::protects`]), which relaxes the CHAP secret
/// length rule (12 to 16 bytes without IPsec, 1 to 16 with it).
pub fn to_model(o: &api::LoginOptions, ipsec: bool) -> Result<model::LoginOptions, Status> {
    let mut m = model::LoginOptions::default();
    if let Some(f) = o.login_flags {
        m = m.with_login_flags(LoginFlags(f));
    }
    if let Some(a) = o.auth_type {
        m = m.with_auth_type(match a {
            api::AuthType::None => AuthType::None,
            api::AuthType::Chap => AuthType::Chap,
            api::AuthType::MutualChap => AuthType::MutualChap,
        });
    }
    let dig = |d: api::DigestType| match d {
        api::DigestType::None => DigestType::None,
        api::DigestType::Crc32c => DigestType::Crc32c,
    };
    if let Some(d) = o.header_digest {
        m = m.with_header_digest(dig(d));
    }
    if let Some(d) = o.data_digest {
        m = m.with_data_digest(dig(d));
    }
    if let Some(n) = o.maximum_connections {
        m = m.with_maximum_connections(n);
    }
    if let Some(n) = o.default_time2wait {
        m = m.with_default_time2wait(n);
    }
    if let Some(n) = o.default_time2retain {
        m = m.with_default_time2retain(n);
    }
    if let Some(u) = &o.username {
        m = m.with_username(u.as_bytes().to_vec());
    }
    if let Some(p) = &o.password {
        m = m.with_password(Secret::new(p.expose().as_bytes().to_vec()));
    }
    m.validate(ipsec)?;
    Ok(m)
}

/// The IPsec wishes of a login or added connection (RFC 7143 §9.3, RFC
/// 3723; Windows `SecurityFlags`, `Key`, `SetIscsiTunnelModeOuterAddress`
/// and `ISCSI_LOGIN_FLAG_REQUIRE_IPSEC`) with the service's provider, checked
/// before anything connects: contradicting flags, a missing key, no
/// provider each fail with their ISDSC status. Nothing is ever connected in
/// clear text when IPsec was asked for.
pub fn ipsec_config(
    provider: Option<&Arc<dyn iscsi_initiator::ipsec::IpsecProvider>>,
    security_flags: u64,
    login_flags: Option<u32>,
    key: Option<&Secret>,
    tunnel_outer_address: Option<&str>,
) -> Result<IpsecConfig, Status> {
    let mut c = IpsecConfig::new(SecurityFlags(security_flags))
        .with_require_ipsec(LoginFlags(login_flags.unwrap_or(0)).contains(LoginFlags::REQUIRE_IPSEC));
    // Windows callers may count the key's terminating NUL in its length.
    if let Some(k) = key.map(|k| k.expose().strip_suffix(&[0]).unwrap_or(k.expose())).filter(|k| !k.is_empty()) {
        c = c.with_key(Secret::new(k));
    }
    if let Some(t) = tunnel_outer_address.map(str::trim).filter(|t| !t.is_empty()) {
        c = c.with_tunnel_outer_address(t);
    }
    if let Some(p) = provider {
        c = c.with_shared_provider(p.clone());
    }
    c.plan()?;
    Ok(c)
}

/// A discovery portal's SendTargets runs in clear text: the service holds
/// no pre-shared key for portals (Windows takes it from the IKE cache of
/// `SetIscsiIKEInfo`, which rsiscsid does not have), so a portal that asks
/// for IPsec is refused rather than used without it.
pub fn check_discovery_security(flags: u64, login_flags: Option<u32>) -> Result<(), Status> {
    let ipsec = SecurityFlags(flags).validate()?;
    if ipsec.required || LoginFlags(login_flags.unwrap_or(0)).contains(LoginFlags::REQUIRE_IPSEC) {
        return Err(Status::new(
            IsdscCode::RequestNotSupported,
            "IPsec on a discovery portal is not supported (no pre-shared key is kept for portals); \
             log in with IPsec instead (security_flags and key on the login), not connecting in clear text",
        ));
    }
    Ok(())
}

/// The session settings of a login: our identity, CHAP, offered keys.
pub fn session_config(
    initiator: &crate::store::InitiatorState,
    secrets: &Secrets,
    mo: &model::LoginOptions,
    target_name: &str,
    isid: Option<[u8; 6]>,
) -> Result<SessionConfig, Status> {
    let mut cfg = SessionConfig::new(initiator.node_name.clone());
    if !initiator.alias.is_empty() {
        cfg.initiator_alias = Some(initiator.alias.clone());
    }
    if let Some(isid) = isid {
        cfg.isid = isid;
    }
    let dig = |d: DigestType| match d {
        DigestType::None => vec![Digest::None],
        DigestType::Crc32c => vec![Digest::Crc32c],
    };
    if let Some(d) = mo.header_digest() {
        cfg.proposal.header_digest = dig(d);
    }
    if let Some(d) = mo.data_digest() {
        cfg.proposal.data_digest = dig(d);
    }
    if let Some(n) = mo.maximum_connections().filter(|n| *n > 0) {
        cfg.proposal.max_connections = u16::try_from(n).unwrap_or(u16::MAX);
    }
    if let Some(n) = mo.default_time2wait() {
        cfg.proposal.default_time2wait = u16::try_from(n).unwrap_or(u16::MAX);
    }
    if let Some(n) = mo.default_time2retain() {
        cfg.proposal.default_time2retain = u16::try_from(n).unwrap_or(u16::MAX);
    }
    match mo.auth_type() {
        None | Some(AuthType::None) => {}
        Some(a) => {
            let secret = mo
                .password()
                .cloned()
                .ok_or_else(|| Status::new(IsdscCode::InvalidChapSecret, "CHAP asked for without a password"))?;
            let mut c = ChapConfig::new(mo.chap_name(&initiator.node_name), secret);
            if a == AuthType::MutualChap {
                let mine = secrets.initiator_chap_secret.as_ref().ok_or_else(|| {
                    Status::new(
                        IsdscCode::InvalidInitiatorChapSecret,
                        "mutual CHAP needs the initiator's CHAP secret: set it first (PUT /v1/initiator/chap-secret)",
                    )
                })?;
                c.target = Some((target_name.to_string(), Secret::new(mine.expose().as_bytes().to_vec())));
            }
            cfg.chap = Some(c);
        }
    }
    Ok(cfg)
}

/// Everything one login needs.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    pub target_name: String,
    pub portal: api::Portal,
    pub initiator_port: Option<u32>,
    pub security_flags: u64,
    /// With the password, if any.
    pub login_options: api::LoginOptions,
    /// The IKE pre-shared key (redacted in `Debug`, zeroized on drop).
    pub key: Option<Secret>,
    /// Tunnel mode: the target side's tunnel end.
    pub tunnel_outer_address: Option<String>,
    pub connections: u32,
    pub policy: LoadBalancePolicy,
    pub isid: Option<[u8; 6]>,
    pub persistent_key: Option<String>,
    /// Log the session out again when a further connection fails (API
    /// logins); a persistent re-login keeps what it got.
    pub all_or_nothing: bool,
    /// Hold time and link-down time of the session (checked).
    pub recovery: RecoveryTimes,
    /// Path settings of its connections, leading first (a persistent
    /// login's, as `session path` left them).
    pub paths: Vec<crate::store::PathSetting>,
}

/// Parses 12 hex digits.
pub fn parse_isid(s: &str) -> Option<[u8; 6]> {
    hex::decode(s).ok().and_then(|v| <[u8; 6]>::try_from(v.as_slice()).ok())
}

/// Logs in: leading connection, then `connections - 1` more (MC/S), sets
/// the policy, probes the devices, and registers the session.
pub async fn login(app: &App, spec: &LoginSpec) -> Result<Arc<Live>, Status> {
    if spec.portal.address.is_empty() {
        return Err(Status::invalid_parameter("the portal address is empty"));
    }
    if spec.connections == 0 {
        return Err(Status::invalid_parameter("connections must be at least 1"));
    }
    let ipsec = ipsec_config(
        app.ipsec.as_ref(),
        spec.security_flags,
        spec.login_options.login_flags,
        spec.key.as_ref(),
        spec.tunnel_outer_address.as_deref(),
    )?;
    let mo = to_model(&spec.login_options, ipsec.protects())?;
    let state = app.store.state();
    let secrets = app.store.secrets();
    let mut cfg = session_config(&state.initiator, &secrets, &mo, &spec.target_name, spec.isid)?;
    cfg.recovery_budget = spec.recovery.budget();
    // The leading connection, its recoveries and the connections added
    // below get the same protection, each with an SA of its own.
    cfg.ipsec = ipsec;
    let mportal = model::Portal::new(spec.portal.address.clone(), spec.portal.port);
    let addr = mportal.to_portal_addr()?;
    // The initiator port binds the leading connection too (LoginIScsiTarget).
    if let Some(port) = spec.initiator_port {
        cfg.local_address = iscsi_initiator::session::initiator_port_address(port, addr.host.contains(':'))?;
    }
    let session = Session::login(&addr, Some(&spec.target_name), cfg).await.map_err(Status::from)?;
    session.set_load_balance_policy(spec.policy);
    let port = spec.initiator_port.unwrap_or(ISCSI_ANY_INITIATOR_PORT);
    let key = spec.key.as_ref().map(|k| k.expose()).unwrap_or_default();
    for n in 1..spec.connections {
        let added = session
            .add_connection_with(
                port,
                &mportal,
                SecurityFlags(spec.security_flags),
                &mo,
                key,
                spec.tunnel_outer_address.as_deref(),
            )
            .await;
        if let Err(e) = added {
            if spec.all_or_nothing {
                let _ = session.logout().await;
                return Err(Status::new(
                    e.code,
                    format!("connection {} of {}: {}", n + 1, spec.connections, e.message),
                ));
            }
            warn!(target = %spec.target_name, "persistent login: connection {} of {} failed: {}", n + 1, spec.connections, e.message);
            break;
        }
    }
    for (c, p) in session.connections().into_iter().zip(&spec.paths) {
        if let Err(e) = session.set_path(c.id, p.primary, p.weight) {
            warn!(target = %spec.target_name, "path settings of connection {} not restored: {e}", c.id);
        }
    }
    let devices = probe_devices(&session).await;
    let live = Arc::new(Live {
        session,
        persistent_key: spec.persistent_key.clone(),
        stats: Arc::new(Stats::default()),
        devices,
        started: Instant::now(),
        recovery: spec.recovery,
        exports: Default::default(),
    });
    app.registry.insert(live.clone());
    info!(
        session = %live.session.id(), target = %spec.target_name, portal = %spec.portal,
        isid = %hex::encode(live.session.isid()), tsih = live.session.tsih(),
        connections = live.session.connections().len(), "session logged in"
    );
    Ok(live)
}

/// REPORT LUNS, INQUIRY and READ CAPACITY of each LUN, best effort.
async fn probe_devices(session: &Session) -> Vec<api::Device> {
    let t = Duration::from_secs(10);
    let luns = match tokio::time::timeout(t, session.report_luns()).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            warn!("REPORT LUNS failed: {e}");
            return Vec::new();
        }
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for lun in luns {
        let Ok(Ok(inq)) = tokio::time::timeout(t, session.inquiry(lun)).await else { continue };
        let cap = if inq.device_type == 0 {
            tokio::time::timeout(t, session.read_capacity(lun)).await.ok().and_then(|r| r.ok())
        } else {
            None
        };
        out.push(api::Device {
            lun,
            peripheral_type: inq.device_type,
            vendor: inq.vendor.trim().to_string(),
            product: inq.product.trim().to_string(),
            revision: inq.revision.trim().to_string(),
            block_size: cap.as_ref().map(|c| c.block_size).unwrap_or(0),
            blocks: cap.as_ref().map(|c| c.blocks).unwrap_or(0),
        });
    }
    out
}

/// The spec of a stored persistent login; `defaults` fill the recovery
/// times it does not give.
pub fn spec_of(stored: &StoredLogin, secrets: &Secrets, defaults: RecoveryTimes) -> Result<LoginSpec, Status> {
    let mut login_options = stored.login_options.clone();
    login_options.password_set = false;
    login_options.password = secrets.passwords.get(&stored.key()).cloned();
    Ok(LoginSpec {
        target_name: stored.target_name.clone(),
        portal: stored.portal.clone(),
        initiator_port: stored.initiator_port,
        security_flags: stored.security_flags,
        login_options,
        key: secrets.ipsec_keys.get(&stored.key()).map(|k| Secret::new(k.expose().as_bytes())),
        tunnel_outer_address: stored.tunnel_outer_address.clone(),
        connections: stored.connections.max(1),
        policy: stored.load_balance_policy.parse()?,
        isid: parse_isid(&stored.isid),
        persistent_key: Some(stored.key()),
        all_or_nothing: false,
        recovery: defaults.with(stored.max_request_hold_time_s, stored.link_down_time_s)?,
        paths: stored.paths.clone(),
    })
}

/// What the supervisor reports of one persistent login.
#[derive(Debug, Clone)]
pub struct LoginState {
    pub state: api::PersistentLoginState,
    pub last_error: Option<String>,
    pub session_id: Option<String>,
}

#[derive(Debug)]
struct Entry {
    status: LoginState,
    task: Option<JoinHandle<()>>,
    reconnects: u64,
    /// Ends the task's back-off early (the target was just discovered).
    wake: Arc<Notify>,
}

/// The persistent-login tasks, by login key.
#[derive(Debug, Default)]
pub struct Supervisor {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Errors a retry cannot fix: the login stays `failed` until changed.
fn is_permanent(code: IsdscCode) -> bool {
    matches!(
        code,
        IsdscCode::AuthenticationFailure
            | IsdscCode::AuthorizationFailure
            | IsdscCode::InvalidParameter
            | IsdscCode::InvalidChapSecret
            | IsdscCode::InvalidInitiatorChapSecret
            | IsdscCode::InvalidLoadBalancePolicy
            | IsdscCode::IpsecNotSupportedOnOs
            | IsdscCode::TargetPresharedkeyUnavailable
            | IsdscCode::TargetRemoved
    )
}

impl Supervisor {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, key: &str, status: LoginState) {
        if let Some(e) = self.lock().get_mut(key) {
            e.status = status;
        }
    }

    pub fn status(&self, key: &str) -> Option<LoginState> {
        self.lock().get(key).map(|e| e.status.clone())
    }

    /// Starts (or restarts) the task of persistent login `key`; `live` is
    /// the session the API just logged in, if any.
    pub fn spawn(&self, app: &Arc<App>, key: String, live: Option<Arc<Live>>) {
        let status = LoginState {
            state: api::PersistentLoginState::Retrying,
            last_error: None,
            session_id: live.as_ref().map(|l| l.session.id().to_string()),
        };
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(supervise(app.clone(), key.clone(), live, false, wake.clone()));
        let mut m = self.lock();
        let reconnects = m.get(&key).map(|e| e.reconnects).unwrap_or(0);
        if let Some(Entry { task: Some(t), .. }) = m.insert(key, Entry { status, task: Some(task), reconnects, wake }) {
            t.abort();
        }
    }

    /// The first login of persistent login `key`, just stored, failed with
    /// `e`: its state says so at once, and it is retried after the first
    /// back-off, or not at all for an error a retry cannot fix (until the
    /// service restarts). Returns what happens next, for the error message.
    pub fn first_login_failed(&self, app: &Arc<App>, key: String, e: &Status) -> &'static str {
        let permanent = is_permanent(e.code);
        let status = LoginState {
            state: if permanent { api::PersistentLoginState::Failed } else { api::PersistentLoginState::Retrying },
            last_error: Some(format!("{} ({})", e.message, e.code.name())),
            session_id: None,
        };
        let wake = Arc::new(Notify::new());
        let task = (!permanent).then(|| tokio::spawn(supervise(app.clone(), key.clone(), None, true, wake.clone())));
        let mut m = self.lock();
        let reconnects = m.get(&key).map(|e| e.reconnects).unwrap_or(0);
        if let Some(Entry { task: Some(t), .. }) = m.insert(key, Entry { status, task, reconnects, wake }) {
            t.abort();
        }
        if permanent {
            "the persistent login stays stored, not retried until rsiscsid restarts"
        } else {
            "the persistent login stays stored and is retried every 1 s, doubling to 30 s"
        }
    }

    /// Stops watching `key` (its session, if any, stays logged in).
    pub fn forget(&self, key: &str) {
        if let Some(Entry { task: Some(t), .. }) = self.lock().remove(key) {
            t.abort();
        }
    }

    /// The user logged the session out: no automatic re-login until the
    /// service restarts (Windows logs persistent targets in at boot).
    pub fn logged_out(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            if let Some(t) = e.task.take() {
                t.abort();
            }
            e.status = LoginState { state: api::PersistentLoginState::LoggedOut, last_error: None, session_id: None };
        }
    }

    /// A discovery mechanism (an iSNS State Change Notification, or the
    /// first query of a server) shows `target_name` (again, or with new
    /// portals): each persistent login of it that waits out a back-off is
    /// tried at once, and its back-off starts again from [`BACKOFF_MIN`]. A
    /// login that is in, logged out by the user, or failed for good is left
    /// alone. Returns how many were woken.
    pub fn target_appeared(&self, app: &App, target_name: &str) -> usize {
        let keys: Vec<String> = app
            .store
            .state()
            .persistent_logins
            .iter()
            .filter(|l| l.target_name == target_name)
            .map(StoredLogin::key)
            .collect();
        let m = self.lock();
        let mut woken = 0;
        for key in keys {
            if let Some(e) = m.get(&key)
                && e.task.is_some()
                && e.status.state == api::PersistentLoginState::Retrying
            {
                // A permit is kept when the task is busy logging in: its
                // next back-off then ends at once.
                e.wake.notify_one();
                info!(login = %key, "target discovered: trying the persistent login now");
                woken += 1;
            }
        }
        woken
    }

    /// Stops every task (shutdown).
    pub fn stop_all(&self) {
        for e in self.lock().values_mut() {
            if let Some(t) = e.task.take() {
                t.abort();
            }
        }
    }

    fn bump_reconnects(&self, key: &str) -> u64 {
        let mut m = self.lock();
        match m.get_mut(key) {
            Some(e) => {
                e.reconnects += 1;
                e.reconnects
            }
            None => 0,
        }
    }
}

/// `wait_first`: the first login just failed, so the first attempt waits
/// one back-off.
async fn supervise(app: Arc<App>, key: String, mut current: Option<Arc<Live>>, wait_first: bool, wake: Arc<Notify>) {
    let mut backoff = BACKOFF_MIN;
    let mut logged_in_before = current.is_some();
    if wait_first {
        backoff = back_off(&wake, backoff).await;
    }
    loop {
        if let Some(live) = current.take() {
            app.logins.set(
                &key,
                LoginState {
                    state: api::PersistentLoginState::LoggedIn,
                    last_error: None,
                    session_id: Some(live.session.id().to_string()),
                },
            );
            let reason = loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                if let Some(r) = live.session.closed_reason() {
                    break r;
                }
            };
            warn!(session = %live.session.id(), login = %key, "persistent session closed ({reason}); logging in again");
            app.registry.remove(live.session.id());
            // Its sockets are freed for the exports of the next session.
            live.exports.stop_all().await;
            app.logins.set(
                &key,
                LoginState { state: api::PersistentLoginState::Retrying, last_error: Some(reason), session_id: None },
            );
            continue;
        }
        let state = app.store.state();
        let Some(stored) = state.persistent_logins.iter().find(|l| l.key() == key) else {
            return;
        };
        let result = match spec_of(stored, &app.store.secrets(), app.recovery_defaults) {
            Ok(spec) => login(&app, &spec).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(live) => {
                if logged_in_before {
                    let n = app.logins.bump_reconnects(&key);
                    live.stats.reconnects.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                logged_in_before = true;
                backoff = BACKOFF_MIN;
                crate::exports::restore(&live, &stored.exports).await;
                current = Some(live);
            }
            Err(e) => {
                let permanent = is_permanent(e.code);
                let msg = format!("{} ({})", e.message, e.code.name());
                warn!(login = %key, "persistent login failed: {msg}; {}", if permanent { "not retrying".to_string() } else { format!("retrying in {backoff:?}") });
                app.logins.set(
                    &key,
                    LoginState {
                        state: if permanent {
                            api::PersistentLoginState::Failed
                        } else {
                            api::PersistentLoginState::Retrying
                        },
                        last_error: Some(msg),
                        session_id: None,
                    },
                );
                if permanent {
                    return;
                }
                backoff = back_off(&wake, backoff).await;
            }
        }
    }
}

/// Waits `backoff`, or less when `wake` is notified; returns the next
/// back-off: doubled after a full wait, [`BACKOFF_MIN`] after a wake-up (the
/// target was just discovered: if it is not quite ready, try again soon).
async fn back_off(wake: &Notify, backoff: Duration) -> Duration {
    tokio::select! {
        _ = tokio::time::sleep(backoff) => next_backoff(backoff),
        _ = wake.notified() => BACKOFF_MIN,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// A wake-up ends a long back-off at once and starts it over; a permit
    /// given while nobody waits ends the next wait.
    #[tokio::test]
    async fn a_wake_up_cuts_the_back_off_short() {
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        let t0 = Instant::now();
        let waiter = tokio::spawn(async move { back_off(&w, Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        wake.notify_one();
        assert_eq!(waiter.await.unwrap(), BACKOFF_MIN);
        assert!(t0.elapsed() < Duration::from_secs(5));
        wake.notify_one();
        assert_eq!(back_off(&wake, Duration::from_secs(30)).await, BACKOFF_MIN);
        assert_eq!(back_off(&wake, Duration::from_millis(10)).await, Duration::from_millis(20));
    }

    #[test]
    fn backoff_doubles_and_caps_at_30s() {
        let mut d = BACKOFF_MIN;
        let mut seen = vec![d.as_secs()];
        for _ in 0..7 {
            d = next_backoff(d);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn five_byte_chap_secret_is_refused_with_its_code() {
        let o = api::LoginOptions {
            auth_type: Some(api::AuthType::Chap),
            password: Some(api::SecretString::new("short")),
            ..Default::default()
        };
        let e = to_model(&o, false).unwrap_err();
        assert_eq!(e.code, IsdscCode::InvalidChapSecret);
        assert!(!e.message.contains("short"), "{}", e.message);
    }

    #[test]
    fn isid_round_trips_as_hex() {
        assert_eq!(parse_isid("80a1b2c3d4e5"), Some([0x80, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5]));
        assert_eq!(parse_isid("80a1"), None);
        assert_eq!(parse_isid("zz0000000000"), None);
    }

    fn stored(hold: Option<u32>, link: Option<u32>) -> StoredLogin {
        StoredLogin {
            target_name: "iqn.t".into(),
            portal: api::Portal::new("127.0.0.1", 3260),
            initiator_port: None,
            security_flags: 0,
            tunnel_outer_address: None,
            login_options: api::LoginOptions::default(),
            connections: 1,
            load_balance_policy: "round-robin".into(),
            isid: "80a1b2c3d4e5".into(),
            max_request_hold_time_s: hold,
            link_down_time_s: link,
            exports: Vec::new(),
            paths: Vec::new(),
        }
    }

    /// A persistent login logs in with the times it stored; those it did not
    /// store come from the service's defaults of the day; a hand-edited
    /// value out of range fails the login (and the supervisor stops on it).
    #[test]
    fn stored_recovery_times_come_back_and_are_checked_again() {
        let defaults = RecoveryTimes { max_request_hold_time_s: 90, link_down_time_s: 20 };
        let sec = Secrets::default();
        let spec = spec_of(&stored(Some(45), Some(7)), &sec, defaults).unwrap();
        assert_eq!(spec.recovery, RecoveryTimes { max_request_hold_time_s: 45, link_down_time_s: 7 });
        let spec = spec_of(&stored(None, Some(7)), &sec, defaults).unwrap();
        assert_eq!(spec.recovery, RecoveryTimes { max_request_hold_time_s: 90, link_down_time_s: 7 });
        let e = spec_of(&stored(Some(0), None), &sec, defaults).unwrap_err();
        assert_eq!(e.code, IsdscCode::InvalidParameter);
        assert!(is_permanent(e.code));
    }

    /// Each IPsec mistake is refused before anything connects, with the
    /// status Windows gives it; a short CHAP secret passes only on a login
    /// that IPsec protects.
    #[test]
    fn ipsec_wishes_are_checked_before_connecting() {
        let charon: Arc<dyn iscsi_initiator::ipsec::IpsecProvider> =
            Arc::new(iscsi_initiator::ipsec::StrongSwan::new("/nonexistent/charon.vici"));
        let tunnel = 0x43;
        let key = Secret::new("lab-psk");
        let code = |p, f, lf, k| ipsec_config(p, f, lf, k, None).unwrap_err().code;
        assert_eq!(code(None, tunnel, None, Some(&key)), IsdscCode::IpsecNotSupportedOnOs);
        assert_eq!(code(Some(&charon), tunnel, None, None), IsdscCode::TargetPresharedkeyUnavailable);
        assert_eq!(code(Some(&charon), 0x63, None, Some(&key)), IsdscCode::InvalidParameter);
        assert_eq!(code(Some(&charon), 0x0b, None, Some(&key)), IsdscCode::RequestNotSupported);
        assert_eq!(code(Some(&charon), 0, Some(0x1), None), IsdscCode::FailedToConfigureIpsec);
        assert!(is_permanent(IsdscCode::TargetPresharedkeyUnavailable));
        assert!(!is_permanent(IsdscCode::FailedToConfigureIpsec), "charon may come (back) later");
        let c =
            ipsec_config(Some(&charon), tunnel, None, Some(&Secret::new(b"lab-psk\0".to_vec())), Some("h")).unwrap();
        assert!(c.protects());
        assert_eq!(
            c.key.as_ref().map(|k| k.expose().to_vec()),
            Some(b"lab-psk".to_vec()),
            "a trailing NUL is not the key"
        );
        assert!(!format!("{c:?}").contains("lab-psk"));
        assert!(!ipsec_config(Some(&charon), 0, None, Some(&key), None).unwrap().protects());
        let short = api::LoginOptions {
            auth_type: Some(api::AuthType::Chap),
            password: Some(api::SecretString::new("short")),
            ..Default::default()
        };
        assert!(to_model(&short, true).is_ok());
        assert!(check_discovery_security(tunnel, None).is_err());
        assert!(check_discovery_security(0, None).is_ok());
    }
}
