//! Prometheus text exposition (format 0.0.4) of the session counters, served
//! on the optional loopback `--metrics` listener.

use std::fmt::Write;
use std::sync::Arc;

use iscsi_initiator::session::{ConnectionInfo, ConnectionState};
use rsiscsi_api::types as api;

use crate::registry::{Live, recovery_counters};

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics text for these sessions.
pub fn render(lives: &[Arc<Live>]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# HELP rsiscsi_sessions Sessions logged in.\n# TYPE rsiscsi_sessions gauge");
    let _ = writeln!(o, "rsiscsi_sessions {}", lives.len());
    let _ = writeln!(
        o,
        "# HELP rsiscsi_commands_total SCSI commands sent, per connection.\n# TYPE rsiscsi_commands_total counter"
    );
    for l in lives {
        let sid = l.session.id().to_string();
        for c in l.session.connections() {
            let _ = writeln!(
                o,
                "rsiscsi_commands_total{{session=\"{sid}\",connection=\"{}\",target=\"{}\"}} {}",
                c.id,
                esc(l.session.target_name().unwrap_or("")),
                c.counters.commands
            );
        }
    }
    let conns: Vec<(String, String, Vec<ConnectionInfo>)> = lives
        .iter()
        .map(|l| {
            (l.session.id().to_string(), l.session.target_name().unwrap_or("").to_string(), l.session.connections())
        })
        .collect();
    render_connections(&mut o, &conns);
    let _ = writeln!(o, "# HELP rsiscsi_bytes_total Data bytes moved.\n# TYPE rsiscsi_bytes_total counter");
    for l in lives {
        let sid = l.session.id().to_string();
        let (mut rd, mut wr) = (0u64, 0u64);
        for c in l.session.connections() {
            rd += c.counters.bytes_in;
            wr += c.counters.bytes_out;
        }
        let _ = writeln!(o, "rsiscsi_bytes_total{{session=\"{sid}\",direction=\"read\"}} {rd}");
        let _ = writeln!(o, "rsiscsi_bytes_total{{session=\"{sid}\",direction=\"write\"}} {wr}");
    }
    let _ = writeln!(
        o,
        "# HELP rsiscsi_errors_total Commands issued through the service that failed.\n# TYPE rsiscsi_errors_total counter"
    );
    for l in lives {
        let c = l.stats.counters();
        let _ = writeln!(o, "rsiscsi_errors_total{{session=\"{}\"}} {}", l.session.id(), c.errors);
    }
    let _ = writeln!(
        o,
        "# HELP rsiscsi_reconnects_total Times the service logged a persistent session in again.\n# TYPE rsiscsi_reconnects_total counter"
    );
    for l in lives {
        let c = l.stats.counters();
        let _ = writeln!(o, "rsiscsi_reconnects_total{{session=\"{}\"}} {}", l.session.id(), c.reconnects);
    }
    let counts: Vec<(String, api::RecoveryCounters)> =
        lives.iter().map(|l| (l.session.id().to_string(), recovery_counters(&l.session))).collect();
    render_recovery(&mut o, &counts);
    let _ = writeln!(
        o,
        "# HELP rsiscsi_command_latency_seconds Latency of commands issued through the service.\n# TYPE rsiscsi_command_latency_seconds histogram"
    );
    for l in lives {
        let sid = l.session.id();
        let (buckets, sum, count) = l.stats.latency.lock().unwrap_or_else(|p| p.into_inner()).histogram();
        for (le, n) in buckets {
            let _ = writeln!(o, "rsiscsi_command_latency_seconds_bucket{{session=\"{sid}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(o, "rsiscsi_command_latency_seconds_bucket{{session=\"{sid}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "rsiscsi_command_latency_seconds_sum{{session=\"{sid}\"}} {sum}");
        let _ = writeln!(o, "rsiscsi_command_latency_seconds_count{{session=\"{sid}\"}} {count}");
    }
    o
}

/// The states a connection is shown in, one gauge series each.
const STATES: [ConnectionState; 3] =
    [ConnectionState::FullFeature, ConnectionState::Stalled, ConnectionState::Recovering];

/// Each connection's state (a 0/1 gauge per state, so that a dashboard
/// sees a link go down and come back), its path settings and how often it
/// was lost and taken over by recovery, labelled with the session, the
/// connection, its CID and its local and remote addresses (a connection
/// reinstated from the same initiator port keeps them: RFC 7143 §6.3.4).
fn render_connections(o: &mut String, sessions: &[(String, String, Vec<ConnectionInfo>)]) {
    let labels = |sid: &str, target: &str, c: &ConnectionInfo| {
        let local = c.local_address.map(|a| a.to_string()).unwrap_or_default();
        let remote = c.remote_address.map_or_else(|| c.portal.to_string(), |a| a.to_string());
        format!(
            "session=\"{}\",connection=\"{}\",cid=\"{}\",target=\"{}\",local=\"{}\",remote=\"{}\"",
            esc(sid),
            c.id,
            c.cid,
            esc(target),
            esc(&local),
            esc(&remote)
        )
    };
    let _ = writeln!(
        o,
        "# HELP rsiscsi_connection_state Connection state: 1 for the state it is in (full-feature, stalled, recovering), 0 for the others.\n# TYPE rsiscsi_connection_state gauge"
    );
    for (sid, target, conns) in sessions {
        for c in conns {
            let l = labels(sid, target, c);
            for st in STATES {
                let _ = writeln!(
                    o,
                    "rsiscsi_connection_state{{{l},state=\"{}\"}} {}",
                    st.as_str(),
                    u8::from(c.state == st)
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP rsiscsi_connection_weight Weight of the connection under the weighted policy (0: not used).\n# TYPE rsiscsi_connection_weight gauge"
    );
    for (sid, target, conns) in sessions {
        for c in conns {
            let _ = writeln!(o, "rsiscsi_connection_weight{{{}}} {}", labels(sid, target, c), c.weight);
        }
    }
    let _ = writeln!(
        o,
        "# HELP rsiscsi_connection_link_rate_bytes_per_second The connection's link rate (the socket's measured delivery rate), which least-queue-depth weighs it by and every spreading policy bounds its queue by; only connections measured.\n# TYPE rsiscsi_connection_link_rate_bytes_per_second gauge"
    );
    for (sid, target, conns) in sessions {
        for c in conns {
            if let Some(r) = c.link_rate {
                let _ = writeln!(o, "rsiscsi_connection_link_rate_bytes_per_second{{{}}} {r}", labels(sid, target, c));
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP rsiscsi_connection_primary 1 for a primary path, 0 for a standby one.\n# TYPE rsiscsi_connection_primary gauge"
    );
    for (sid, target, conns) in sessions {
        for c in conns {
            let _ = writeln!(o, "rsiscsi_connection_primary{{{}}} {}", labels(sid, target, c), u8::from(c.primary));
        }
    }
    let _ = writeln!(
        o,
        "# HELP rsiscsi_connection_reconnects_total Times the connection failed and recovery took it over (reinstated it or moved its tasks).\n# TYPE rsiscsi_connection_reconnects_total counter"
    );
    for (sid, target, conns) in sessions {
        for c in conns {
            let _ = writeln!(
                o,
                "rsiscsi_connection_reconnects_total{{{}}} {}",
                labels(sid, target, c),
                c.counters.reconnects
            );
        }
    }
}

/// A counter family of the recovery counts: name, help, and its value.
type RecoveryFamily = (&'static str, &'static str, fn(&api::RecoveryCounters) -> u64);

/// The families of what the initiator's recovery did in each session (its
/// own counts, RFC 7143 §6.2, §7), one family per kind, by session id.
fn render_recovery(o: &mut String, counts: &[(String, api::RecoveryCounters)]) {
    let families: [RecoveryFamily; 4] = [
        ("rsiscsi_recoveries_total", "Connections that failed and were taken over by recovery.", |r| r.recoveries),
        (
            "rsiscsi_connections_reinstated_total",
            "Connections logged in again with the failed one's CID (RFC 7143 6.3.4).",
            |r| r.connections_reinstated,
        ),
        ("rsiscsi_sessions_reinstated_total", "Sessions logged in again with the same ISID (RFC 7143 6.3.5).", |r| {
            r.sessions_reinstated
        }),
        (
            "rsiscsi_recovery_give_ups_total",
            "Commands failed because recovery gave up on them (hold time or link-down time spent, or the same fault again).",
            |r| r.give_ups,
        ),
    ];
    for (name, help, get) in families {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (sid, r) in counts {
            let _ = writeln!(o, "{name}{{session=\"{}\"}} {}", esc(sid), get(r));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn no_sessions_still_lists_the_families() {
        let t = render(&[]);
        assert!(t.contains("# TYPE rsiscsi_sessions gauge\nrsiscsi_sessions 0\n"), "{t}");
        for fam in [
            "rsiscsi_commands_total",
            "rsiscsi_bytes_total",
            "rsiscsi_errors_total",
            "rsiscsi_reconnects_total",
            "rsiscsi_recoveries_total",
            "rsiscsi_connections_reinstated_total",
            "rsiscsi_sessions_reinstated_total",
            "rsiscsi_recovery_give_ups_total",
            "rsiscsi_connection_reconnects_total",
        ] {
            assert!(t.contains(&format!("# TYPE {fam} counter")), "{fam}");
        }
        for fam in [
            "rsiscsi_connection_state",
            "rsiscsi_connection_weight",
            "rsiscsi_connection_primary",
            "rsiscsi_connection_link_rate_bytes_per_second",
        ] {
            assert!(t.contains(&format!("# TYPE {fam} gauge")), "{fam}");
        }
        assert!(t.contains("# TYPE rsiscsi_command_latency_seconds histogram"));
    }

    #[test]
    fn recovery_counts_are_one_family_per_kind() {
        let mut o = String::new();
        let r = api::RecoveryCounters { recoveries: 3, connections_reinstated: 2, sessions_reinstated: 1, give_ups: 4 };
        render_recovery(&mut o, &[("ab-4000000000000001".into(), r)]);
        for line in [
            "# TYPE rsiscsi_recoveries_total counter\nrsiscsi_recoveries_total{session=\"ab-4000000000000001\"} 3\n",
            "rsiscsi_connections_reinstated_total{session=\"ab-4000000000000001\"} 2\n",
            "rsiscsi_sessions_reinstated_total{session=\"ab-4000000000000001\"} 1\n",
            "# TYPE rsiscsi_recovery_give_ups_total counter\nrsiscsi_recovery_give_ups_total{session=\"ab-4000000000000001\"} 4\n",
        ] {
            assert!(o.contains(line), "{line} not in\n{o}");
        }
        assert_eq!(o.lines().filter(|l| l.starts_with("# HELP ")).count(), 4);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
    }
}
