//! Live sessions and their counters. Commands issued through the service
//! are timed here, around `Session::execute`; per-connection command and
//! byte counts come from the initiator library.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iscsi_initiator::Session;
use iscsi_initiator::model::UniqueSessionId;
use iscsi_proto::negotiation::Digest;
use rsiscsi_api::types as api;

/// How many recent latencies the percentiles are taken over.
const LATENCY_WINDOW: usize = 4096;

/// Upper bounds (seconds) of the Prometheus latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

/// Latency samples: a window for percentiles, a histogram for Prometheus.
#[derive(Debug, Default)]
pub struct Latencies {
    recent: VecDeque<u64>,
    max_us: u64,
    sum_us: u64,
    count: u64,
    buckets: [u64; LATENCY_BUCKETS.len()],
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if self.recent.len() == LATENCY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(us);
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
        let secs = d.as_secs_f64();
        for (b, le) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
    }

    /// p50, p99 (nearest rank over the recent window) and the all-time max.
    pub fn summary(&self) -> api::Latency {
        let mut v: Vec<u64> = self.recent.iter().copied().collect();
        v.sort_unstable();
        let rank = |p: usize| -> u64 {
            if v.is_empty() {
                return 0;
            }
            let i = (v.len() * p).div_ceil(100).saturating_sub(1);
            v.get(i.min(v.len() - 1)).copied().unwrap_or(0)
        };
        api::Latency { p50: rank(50), p99: rank(99), max: self.max_us }
    }

    /// (cumulative bucket counts, sum in seconds, count).
    pub fn histogram(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let b = LATENCY_BUCKETS.iter().copied().zip(self.buckets.iter().copied()).collect();
        (b, self.sum_us as f64 / 1e6, self.count)
    }
}

/// Counters of one session, kept by the service.
#[derive(Debug, Default)]
pub struct Stats {
    pub commands: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub latency: Mutex<Latencies>,
}

impl Stats {
    pub fn record(&self, d: Duration, read: u64, written: u64, ok: bool) {
        self.commands.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.bytes_written.fetch_add(written, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).record(d);
    }

    pub fn counters(&self) -> api::Counters {
        api::Counters {
            commands: self.commands.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            latency_us: self.latency.lock().unwrap_or_else(|p| p.into_inner()).summary(),
        }
    }
}

/// One logged-in session owned by the service.
#[derive(Debug)]
pub struct Live {
    pub session: Session,
    /// Key of the persistent login it belongs to, if any.
    pub persistent_key: Option<String>,
    pub stats: Arc<Stats>,
    pub devices: Vec<api::Device>,
    pub started: Instant,
    /// The hold time and link-down time it was logged in with.
    pub recovery: crate::recovery::RecoveryTimes,
    /// Its LUNs served over NBD.
    pub exports: crate::exports::SessionExports,
}

impl Live {
    /// The API view of the session; `persistent` says whether its
    /// persistent login is still stored (it may have been removed while the
    /// session lives on).
    pub fn view(&self, persistent: bool) -> api::Session {
        let s = &self.session;
        let p = s.params();
        let connections: Vec<api::Connection> = s
            .connections()
            .into_iter()
            .map(|c| api::Connection {
                connection_id: c.id.to_string(),
                cid: c.cid,
                initiator_address: c.local_address.map(|a| a.ip().to_string()).unwrap_or_default(),
                initiator_port: c.local_address.map(|a| a.port()).unwrap_or(0),
                target_address: c.remote_address.map(|a| a.ip().to_string()).unwrap_or_else(|| c.portal.host.clone()),
                target_port: c.remote_address.map(|a| a.port()).unwrap_or(c.portal.port),
                state: c.state.as_str().to_string(),
                primary: c.primary,
                weight: c.weight,
                header_digest: digest(c.header_digest),
                data_digest: digest(c.data_digest),
                max_recv_data_segment_length: c.max_recv_data_segment_length,
                ipsec: c.ipsec.clone(),
                link_rate_bytes_per_sec: c.link_rate,
                counters: api::Counters {
                    commands: c.counters.commands,
                    bytes_read: c.counters.bytes_in,
                    bytes_written: c.counters.bytes_out,
                    errors: c.counters.errors,
                    reconnects: c.counters.reconnects,
                    latency_us: api::Latency {
                        p50: c.counters.latency.quantile_us(0.50).unwrap_or(0),
                        p99: c.counters.latency.quantile_us(0.99).unwrap_or(0),
                        max: c.counters.latency.max_us(),
                    },
                },
            })
            .collect();
        api::Session {
            session_id: s.id().to_string(),
            initiator_name: s.initiator_name().to_string(),
            target_name: s.target_name().unwrap_or_default().to_string(),
            isid: hex::encode(s.isid()),
            tsih: s.tsih(),
            persistent: persistent && self.persistent_key.is_some(),
            load_balance_policy: s.load_balance_policy().as_str().to_string(),
            parameters: api::SessionParameters {
                initial_r2t: p.initial_r2t,
                immediate_data: p.immediate_data,
                max_burst_length: p.max_burst_length,
                first_burst_length: p.first_burst_length,
                max_connections: p.max_connections,
                error_recovery_level: p.error_recovery_level,
                default_time2wait: p.default_time2wait,
                default_time2retain: p.default_time2retain,
                max_outstanding_r2t: p.max_outstanding_r2t,
                data_pdu_in_order: p.data_pdu_in_order,
                data_sequence_in_order: p.data_sequence_in_order,
            },
            counters: {
                // The session's reconnects: its re-logins by the service plus
                // the connection recoveries the initiator made inside it.
                let mut c = self.stats.counters();
                c.reconnects += connections.iter().map(|k| k.counters.reconnects).sum::<u64>();
                c
            },
            connections,
            devices: self.devices.clone(),
            max_request_hold_time_s: self.recovery.max_request_hold_time_s,
            link_down_time_s: self.recovery.link_down_time_s,
            recovery_counters: recovery_counters(s),
            exports: self.exports.views(),
        }
    }
}

/// What the initiator's recovery did in the session, as the API shows it.
pub fn recovery_counters(s: &Session) -> api::RecoveryCounters {
    let r = s.recovery_stats();
    api::RecoveryCounters {
        recoveries: r.recoveries,
        connections_reinstated: r.connections_reinstated,
        sessions_reinstated: r.sessions_reinstated,
        give_ups: r.give_ups,
    }
}

fn digest(d: Digest) -> api::DigestType {
    match d {
        Digest::Crc32c => api::DigestType::Crc32c,
        Digest::None => api::DigestType::None,
    }
}

/// All live sessions, by id. Closed sessions are dropped when listed.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<BTreeMap<UniqueSessionId, Arc<Live>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<UniqueSessionId, Arc<Live>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, live: Arc<Live>) {
        self.lock().insert(live.session.id(), live);
    }

    pub fn remove(&self, id: UniqueSessionId) -> Option<Arc<Live>> {
        self.lock().remove(&id)
    }

    /// A live (not closed) session.
    pub fn get(&self, id: UniqueSessionId) -> Option<Arc<Live>> {
        let mut m = self.lock();
        match m.get(&id) {
            Some(l) if l.session.closed_reason().is_some() => {
                m.remove(&id);
                None
            }
            other => other.cloned(),
        }
    }

    /// Every live session; closed ones are forgotten.
    pub fn all(&self) -> Vec<Arc<Live>> {
        let mut m = self.lock();
        m.retain(|_, l| l.session.closed_reason().is_none());
        m.values().cloned().collect()
    }

    /// Removes and returns every session (for shutdown).
    pub fn drain(&self) -> Vec<Arc<Live>> {
        std::mem::take(&mut *self.lock()).into_values().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_known_samples() {
        let mut l = Latencies::default();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!((s.p50, s.p99, s.max), (50, 99, 100));
        let (b, sum, n) = l.histogram();
        assert_eq!(n, 100);
        assert!((sum - 0.00505).abs() < 1e-9);
        // 100 µs bucket holds every sample.
        assert_eq!(b[0], (0.0001, 100));
    }

    #[test]
    fn window_forgets_old_samples_but_not_max() {
        let mut l = Latencies::default();
        l.record(Duration::from_secs(2));
        for _ in 0..LATENCY_WINDOW {
            l.record(Duration::from_micros(10));
        }
        let s = l.summary();
        assert_eq!((s.p50, s.p99, s.max), (10, 10, 2_000_000));
    }

    #[test]
    fn stats_count_errors_and_bytes() {
        let s = Stats::default();
        s.record(Duration::from_micros(5), 512, 0, true);
        s.record(Duration::from_micros(7), 0, 4096, false);
        let c = s.counters();
        assert_eq!((c.commands, c.bytes_read, c.bytes_written, c.errors), (2, 512, 4096, 1));
    }
}
