//! Prometheus text exposition (format 0.0.4) of the session counters, served
//! on the optional loopback `--metrics` listener.

use std::fmt::Write;
use std::sync::Arc;

use crate::registry::Live;

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn no_sessions_still_lists_the_families() {
        let t = render(&[]);
        assert!(t.contains("# TYPE rsiscsi_sessions gauge\nrsiscsi_sessions 0\n"), "{t}");
        for fam in ["rsiscsi_commands_total", "rsiscsi_bytes_total", "rsiscsi_errors_total", "rsiscsi_reconnects_total"]
        {
            assert!(t.contains(&format!("# TYPE {fam} counter")), "{fam}");
        }
        assert!(t.contains("# TYPE rsiscsi_command_latency_seconds histogram"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
    }
}
