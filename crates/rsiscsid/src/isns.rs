//! iSNS servers (RFC 4171; Windows' AddiSNSServer, RemoveiSNSServer,
//! ReportiSNSServerList): one task per stored server registers the
//! service's node name with it, asks which targets its discovery domains
//! show us, and then follows its State Change Notifications (§6.4.4,
//! received as [`iscsi_initiator::isns`] describes) without polling:
//! a target that registers or changes joins the target list, and the
//! persistent logins waiting for it are tried at once
//! ([`crate::logins::Supervisor::target_appeared`]); a target that leaves
//! loses this server from its sources (and the list, when no other
//! discovery mechanism shows it). The registration is refreshed before the
//! server's Registration Period ends (§6.2.6). A server that cannot be
//! reached is retried with capped exponential back-off; removing a server,
//! or stopping the service, deregisters from it within [`CLOSE_TIMEOUT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iscsi_initiator::isns::{IsnsClient, IsnsError, IsnsTarget, ScnEvent, ScnKind};
use rsiscsi_api::types as api;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::App;
use crate::store::{StoreError, StoredIsnsServer};

/// Bounds each request to a server (connect, registration, query).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds deregistering from a server when it is removed or the service stops.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// First and largest wait before registering again with a server that failed.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The next back-off: doubled, capped at [`BACKOFF_MAX`].
pub fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

/// When to register again: at two thirds of the Registration Period, so a
/// slow answer still lands before the server expires us (RFC 4171 §6.2.6).
pub fn refresh_interval(period: Duration) -> Duration {
    (period * 2 / 3).max(Duration::from_millis(500))
}

/// What the task of one server reports.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub state: api::IsnsServerState,
    pub last_error: Option<String>,
    pub registration_period: Option<Duration>,
    pub scn_portal: Option<String>,
}

impl Default for LinkStatus {
    fn default() -> Self {
        Self { state: api::IsnsServerState::Connecting, last_error: None, registration_period: None, scn_portal: None }
    }
}

#[derive(Debug)]
struct Entry {
    status: LinkStatus,
    /// Dropping or firing it makes the task deregister and end.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The tasks of the iSNS servers, by server.
#[derive(Debug, Default)]
pub struct Servers {
    entries: Mutex<HashMap<String, Entry>>,
}

fn key(s: &StoredIsnsServer) -> String {
    format!("{}|{}", s.address.to_ascii_lowercase(), s.port)
}

impl Servers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the task of `server` last reported.
    pub fn status(&self, server: &StoredIsnsServer) -> LinkStatus {
        self.lock().get(&key(server)).map(|e| e.status.clone()).unwrap_or_default()
    }

    fn update(&self, server: &StoredIsnsServer, f: impl FnOnce(&mut LinkStatus)) {
        if let Some(e) = self.lock().get_mut(&key(server)) {
            f(&mut e.status);
        }
    }

    /// Starts the task of `server`. `client`: a registration the API just
    /// made (its targets already recorded); without one the task registers
    /// itself. `error`: why that first registration failed, shown until the
    /// task does better.
    pub fn spawn(&self, app: &Arc<App>, server: StoredIsnsServer, client: Option<IsnsClient>, error: Option<String>) {
        let mut status = LinkStatus::default();
        if let Some(c) = &client {
            status = registered(c);
        } else if let Some(e) = error {
            status.state = api::IsnsServerState::Unreachable;
            status.last_error = Some(e);
        }
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(run(app.clone(), server.clone(), client, rx));
        let old = self.lock().insert(key(&server), Entry { status, stop: Some(tx), task: Some(task) });
        if let Some(Entry { task: Some(t), .. }) = old {
            t.abort();
        }
    }

    /// Stops the task of `server`: it deregisters (within [`CLOSE_TIMEOUT`])
    /// and ends; waited for.
    pub async fn stop(&self, server: &StoredIsnsServer) {
        let entry = self.lock().remove(&key(server));
        if let Some(e) = entry {
            finish(e).await;
        }
    }

    /// Stops every task, all at once (service shutdown).
    pub async fn stop_all(&self) {
        let entries: Vec<Entry> = self.lock().drain().map(|(_, e)| e).collect();
        let mut set = tokio::task::JoinSet::new();
        for e in entries {
            set.spawn(finish(e));
        }
        while set.join_next().await.is_some() {}
    }

    /// Registers again with every server under the node name the state
    /// holds now (after the node name changed).
    pub async fn restart_all(&self, app: &Arc<App>) {
        self.stop_all().await;
        for s in app.store.state().isns_servers {
            self.spawn(app, s, None, None);
        }
    }
}

/// Tells the task of `e` to stop and waits for it; one that does not end
/// in time (deregistration plus a margin) is aborted.
async fn finish(mut e: Entry) {
    if let Some(tx) = e.stop.take() {
        let _ = tx.send(());
    }
    if let Some(mut t) = e.task.take()
        && tokio::time::timeout(CLOSE_TIMEOUT + Duration::from_secs(1), &mut t).await.is_err()
    {
        t.abort();
    }
}

fn registered(c: &IsnsClient) -> LinkStatus {
    LinkStatus {
        state: api::IsnsServerState::Registered,
        last_error: None,
        registration_period: c.registration_period(),
        scn_portal: c.scn_portal().map(|(ip, port)| std::net::SocketAddr::new(ip, port).to_string()),
    }
}

/// Registers the service's node name with `server` for State Change
/// Notifications and asks for the targets it may see.
pub async fn open(app: &App, server: &StoredIsnsServer) -> Result<(IsnsClient, Vec<IsnsTarget>), IsnsError> {
    let name = app.store.state().initiator.node_name;
    let mut c = IsnsClient::open_with_scn(&server.server(), &name, REQUEST_TIMEOUT).await?;
    match c.targets().await {
        Ok(t) => Ok((c, t)),
        Err(e) => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, c.close()).await;
            Err(e)
        }
    }
}

fn portals(t: &IsnsTarget) -> Vec<api::TargetPortal> {
    t.portals
        .iter()
        .map(|p| api::TargetPortal { address: p.addr.host.clone(), port: p.addr.port, tpgt: p.tpgt })
        .collect()
}

/// Records that `from` (an iSNS server) lists exactly `found`: `from` is
/// dropped from every target's sources, then added back to the targets it
/// lists (their portals as it gives them); a target no mechanism shows any
/// more leaves the list.
pub fn merge_all(targets: &mut Vec<api::Target>, from: &api::Portal, found: &[IsnsTarget]) {
    for t in targets.iter_mut() {
        t.discovered_from.retain(|d| !is_source(d, from));
    }
    for f in found {
        merge_one(targets, from, f);
    }
    targets.retain(|t| !t.discovered_from.is_empty());
}

/// Records that `from` lists `found` now (an Added or Changed SCN).
pub fn merge_one(targets: &mut Vec<api::Target>, from: &api::Portal, found: &IsnsTarget) {
    match targets.iter_mut().find(|t| t.name == found.name) {
        Some(t) => {
            t.portals = portals(found);
            if !t.discovered_from.iter().any(|d| is_source(d, from)) {
                t.discovered_from.push(from.clone());
            }
        }
        None => targets.push(api::Target {
            name: found.name.clone(),
            portals: portals(found),
            discovered_from: vec![from.clone()],
        }),
    }
}

/// Records that `from` no longer lists `name` (a Removed SCN), or any
/// target (`name` None: the server was removed).
pub fn drop_source(targets: &mut Vec<api::Target>, from: &api::Portal, name: Option<&str>) {
    for t in targets.iter_mut().filter(|t| name.is_none_or(|n| n == t.name)) {
        t.discovered_from.retain(|d| !is_source(d, from));
    }
    targets.retain(|t| !t.discovered_from.is_empty());
}

fn is_source(d: &api::Portal, from: &api::Portal) -> bool {
    d.is_isns_source() && d.same_place(from)
}

/// Writes what the server lists into the target list (unless the server
/// was removed meanwhile) and wakes the persistent logins of those targets.
fn record_all(app: &App, server: &StoredIsnsServer, found: &[IsnsTarget]) -> Result<(), StoreError> {
    let from = server.source();
    app.store.update(|st, _| {
        if st.isns_servers.contains(server) {
            merge_all(&mut st.targets, &from, found);
        }
        Ok::<(), StoreError>(())
    })?;
    for t in found {
        app.logins.target_appeared(app, &t.name);
    }
    Ok(())
}

/// Applies one State Change Notification to the target list.
fn record_event(app: &App, server: &StoredIsnsServer, ev: &ScnEvent) -> Result<(), StoreError> {
    let from = server.source();
    let name = ev.target.name.as_str();
    app.store.update(|st, _| {
        if st.isns_servers.contains(server) {
            match ev.kind {
                ScnKind::Added | ScnKind::Changed => merge_one(&mut st.targets, &from, &ev.target),
                ScnKind::Removed => drop_source(&mut st.targets, &from, Some(name)),
            }
        }
        Ok::<(), StoreError>(())
    })?;
    info!(server = %server.server(), target = name, kind = ?ev.kind, bitmap = ?ev.bitmap, "iSNS state change");
    if ev.kind != ScnKind::Removed {
        app.logins.target_appeared(app, name);
    }
    Ok(())
}

/// Waits `d`, or returns `true` at once when told to stop.
async fn wait_or_stop(d: Duration, stop: &mut oneshot::Receiver<()>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop => true,
    }
}

/// Shows the server unreachable with `error`, waits out `backoff` and
/// doubles it; `true` when told to stop meanwhile.
async fn unreachable_then_wait(
    app: &App,
    server: &StoredIsnsServer,
    error: String,
    backoff: &mut Duration,
    stop: &mut oneshot::Receiver<()>,
) -> bool {
    app.isns.update(server, |s| {
        s.state = api::IsnsServerState::Unreachable;
        s.last_error = Some(error);
    });
    if wait_or_stop(*backoff, stop).await {
        return true;
    }
    *backoff = next_backoff(*backoff);
    false
}

/// The task of one server: register, follow, and register again after a
/// failure, until told to stop.
async fn run(app: Arc<App>, server: StoredIsnsServer, mut client: Option<IsnsClient>, mut stop: oneshot::Receiver<()>) {
    let name = server.server();
    let mut backoff = BACKOFF_MIN;
    loop {
        let c = match client.take() {
            Some(c) => c,
            None => {
                let mut opening = std::pin::pin!(open(&app, &server));
                let opened = tokio::select! {
                    r = &mut opening => r,
                    _ = &mut stop => {
                        // A registration under way is finished and taken
                        // back (RFC 4171 §5.6.5.4 DevDereg), not left at the
                        // server under a name the service no longer uses.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                            if let Ok((c, _)) = opening.await {
                                let _ = c.close().await;
                            }
                        })
                        .await;
                        return;
                    }
                };
                match opened.map_err(|e| e.to_string()).and_then(|(c, found)| {
                    record_all(&app, &server, &found).map_err(|e| e.to_string())?;
                    info!(server = %name, targets = found.len(), "registered with the iSNS server");
                    Ok(c)
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(server = %name, "iSNS: {e}; trying again in {backoff:?}");
                        if unreachable_then_wait(&app, &server, e, &mut backoff, &mut stop).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        app.isns.update(&server, |s| *s = registered(&c));
        backoff = BACKOFF_MIN;
        match follow(&app, &server, c, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                warn!(server = %name, "iSNS: lost the server ({e}); registering again in {backoff:?}");
                if unreachable_then_wait(&app, &server, e, &mut backoff, &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Follows one registration: each SCN is applied as it comes; before the
/// Registration Period ends the registration is refreshed and the list
/// checked against the server's, so that neither an SCN lost with a broken
/// connection nor one whose lookup the refresh interrupted (`next_event` is
/// dropped then) leaves it wrong for longer. `Ok` once stopped and
/// deregistered.
async fn follow(
    app: &App,
    server: &StoredIsnsServer,
    mut c: IsnsClient,
    stop: &mut oneshot::Receiver<()>,
) -> Result<(), String> {
    let every = c.registration_period().map(refresh_interval);
    let mut next = every.map(|d| Instant::now() + d);
    loop {
        let refresh_due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut *stop => {
                match tokio::time::timeout(CLOSE_TIMEOUT, c.close()).await {
                    Ok(Ok(())) => info!(server = %server.server(), "deregistered from the iSNS server"),
                    Ok(Err(e)) => warn!(server = %server.server(), "iSNS: deregistering failed: {e}"),
                    Err(_) => warn!(server = %server.server(), "iSNS: deregistering timed out after {CLOSE_TIMEOUT:?}"),
                }
                return Ok(());
            }
            ev = c.next_event() => {
                let ev = ev.map_err(|e| e.to_string())?;
                record_event(app, server, &ev).map_err(|e| e.to_string())?;
            }
            _ = refresh_due => {
                c.refresh().await.map_err(|e| e.to_string())?;
                let found = c.targets().await.map_err(|e| e.to_string())?;
                record_all(app, server, &found).map_err(|e| e.to_string())?;
                next = every.map(|d| Instant::now() + d);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use iscsi_initiator::{PortalAddr, TargetPortal};

    fn found(name: &str, port: u16) -> IsnsTarget {
        IsnsTarget {
            name: name.into(),
            alias: None,
            portals: vec![TargetPortal { addr: PortalAddr { host: "127.0.0.1".into(), port }, tpgt: 1 }],
        }
    }

    /// An iSNS server and a SendTargets portal at the same address and port
    /// are different sources: each comes and goes on its own.
    #[test]
    fn isns_sources_are_kept_apart_from_send_targets_portals() {
        let isns = api::Portal::isns_source("127.0.0.1", 3205);
        let st = api::Portal::new("127.0.0.1", 3205);
        let mut t = vec![api::Target { name: "iqn.a".into(), portals: Vec::new(), discovered_from: vec![st.clone()] }];
        merge_all(&mut t, &isns, &[found("iqn.a", 3260), found("iqn.b", 3261)]);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].discovered_from, vec![st.clone(), isns.clone()]);
        assert_eq!(t[1].portals[0].port, 3261);
        // Changed: portals replaced, the source not doubled.
        merge_one(&mut t, &isns, &found("iqn.b", 3262));
        assert_eq!(t[1].portals[0].port, 3262);
        assert_eq!(t[1].discovered_from, vec![isns.clone()]);
        // Removed: b has no other source and goes; a keeps its portal.
        drop_source(&mut t, &isns, Some("iqn.b"));
        assert_eq!(t.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["iqn.a"]);
        merge_one(&mut t, &isns, &found("iqn.c", 3260));
        drop_source(&mut t, &isns, None);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].discovered_from, vec![st]);
    }

    #[test]
    fn refresh_comes_before_the_period_ends() {
        assert_eq!(refresh_interval(Duration::from_secs(900)), Duration::from_secs(600));
        assert_eq!(refresh_interval(Duration::from_millis(300)), Duration::from_millis(500));
        let mut d = BACKOFF_MIN;
        for _ in 0..10 {
            d = next_backoff(d);
        }
        assert_eq!(d, BACKOFF_MAX);
    }
}
