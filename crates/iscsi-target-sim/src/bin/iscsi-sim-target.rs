//! A well-behaved simulated target as a process, for outside tools such as
//! libiscsi's `iscsi-test-cu`:
//!
//! `iscsi-sim-target --listen 127.0.0.1:3270 --target IQN --lun-size 64M [--erl N]`
//!
//! or, to see how an initiator copes with a target that breaks RFC 7143 the
//! same way on every connection (or on the first only):
//!
//! `iscsi-sim-target --listen 127.0.0.1:3270 --fault data-sn-gap [--faulty-connections 1] [--digests]`
//!
//! It accepts any initiator name and runs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use iscsi_target_sim::{Fault, Phase, SimConfig, SimTarget};

const USAGE: &str = "usage: iscsi-sim-target --listen ADDR:PORT [--target IQN] [--lun-size BYTES[K|M|G]] [--erl 0|1|2]
       [--fault NAME] [--faulty-connections N] [--digests]
faults (each on every connection, or on the first N with --faulty-connections):
  data-in-wrong-itt, data-sn-gap, data-overrun, buffer-offset-outside, response-for-unsent-command,
  stat-sn-jump, window-closed (never opens), r2t-outside, bad-header-digest, bad-data-digest
  (with --digests), unknown-opcode, reset-mid-data-in, stop-answering";

/// The faults a user can pick by name: the protocol and transport faults
/// of a target that keeps misbehaving (see `Fault` for each).
const FAULTS: &[(&str, Fault)] = &[
    ("data-in-wrong-itt", Fault::DataInWrongItt),
    ("data-sn-gap", Fault::DataSnGap),
    ("data-overrun", Fault::DataOverrun),
    ("buffer-offset-outside", Fault::BufferOffsetOutside),
    ("response-for-unsent-command", Fault::ResponseForUnsentCommand),
    ("stat-sn-jump", Fault::StatSnJump),
    // A year: for a one-shot initiator, never.
    ("window-closed", Fault::WindowClosed { secs: 365 * 24 * 3600 }),
    ("r2t-outside", Fault::R2tOutside),
    ("bad-header-digest", Fault::BadHeaderDigest),
    ("bad-data-digest", Fault::BadDataDigest),
    ("unknown-opcode", Fault::UnknownOpcode),
    ("reset-mid-data-in", Fault::Reset(Phase::DataIn)),
    ("stop-answering", Fault::StopAnswering),
];

/// Parses `64M`, `1G`, `4096`: a size in bytes with an optional binary suffix.
fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (s.get(..i)?, 10),
        (i, 'm' | 'M') => (s.get(..i)?, 20),
        (i, 'g' | 'G') => (s.get(..i)?, 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

fn parse(args: &[String]) -> Result<(SocketAddr, SimConfig), String> {
    let mut listen = None;
    let mut cfg = SimConfig::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse().map_err(|e| format!("--listen: {e}"))?),
            "--target" => cfg.target_name = value()?.clone(),
            "--lun-size" => {
                let v = value()?;
                let size = parse_size(v).ok_or_else(|| format!("--lun-size: not a size: {v}"))?;
                if size < u64::from(cfg.block_size) || size % u64::from(cfg.block_size) != 0 {
                    return Err(format!("--lun-size must be a multiple of {} bytes", cfg.block_size));
                }
                cfg.lun_size = size;
            }
            "--erl" => {
                cfg.error_recovery_level = match value()?.as_str() {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    v => return Err(format!("--erl: 0, 1 or 2, not {v}")),
                };
            }
            "--fault" => {
                let v = value()?;
                cfg.fault = FAULTS
                    .iter()
                    .find(|(name, _)| name == v)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| format!("--fault: no fault named {v}"))?;
            }
            "--faulty-connections" => {
                let v = value()?;
                let n: u32 = v.parse().map_err(|_| format!("--faulty-connections: not a number: {v}"))?;
                cfg.faulty_connections = Some(n);
            }
            "--digests" => cfg.digests = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    Ok((listen, cfg))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, cfg) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("iscsi-sim-target: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sim = match SimTarget::start_on(listen, cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iscsi-sim-target: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("iscsi-sim-target: serving {} on {}", sim.target_name(), sim.addr());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("iscsi-sim-target: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn arguments() {
        let a: Vec<String> = ["--listen", "127.0.0.1:3270", "--target", "iqn.x:y", "--lun-size", "1M", "--erl", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (addr, cfg) = parse(&a).unwrap();
        assert_eq!(addr, "127.0.0.1:3270".parse().unwrap());
        assert_eq!((cfg.target_name.as_str(), cfg.lun_size, cfg.error_recovery_level), ("iqn.x:y", 1 << 20, 2));
        assert!(parse(&["--lun-size".to_string(), "100".to_string()]).is_err());
        assert!(parse(&["--erl".to_string(), "3".to_string()]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn faults_by_name() {
        let a = |v: &[&str]| parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (_, cfg) = a(&["--listen", "127.0.0.1:1", "--fault", "data-sn-gap", "--faulty-connections", "1"]).unwrap();
        assert_eq!((cfg.fault, cfg.faulty_connections), (Fault::DataSnGap, Some(1)));
        let (_, cfg) = a(&["--listen", "127.0.0.1:1", "--fault", "bad-data-digest", "--digests"]).unwrap();
        assert!(cfg.digests && cfg.fault == Fault::BadDataDigest && cfg.faulty_connections.is_none());
        assert_eq!(a(&["--listen", "127.0.0.1:1", "--fault", "nope"]).unwrap_err(), "--fault: no fault named nope");
        assert!(a(&["--listen", "127.0.0.1:1", "--faulty-connections", "x"]).is_err());
        for (name, _) in FAULTS {
            assert!(USAGE.contains(name), "{name} missing from the usage text");
        }
    }
}
