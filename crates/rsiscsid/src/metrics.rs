//! Prometheus text exposition (format 0.0.4) of the session counters, served
//! on the optional loopback `--metrics` listener.

use std::fmt::Write;
use std::sync::Arc;

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
        ] {
            assert!(t.contains(&format!("# TYPE {fam} counter")), "{fam}");
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
