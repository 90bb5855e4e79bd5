//! `rsiscsi bench --verify` and the timeline against the loopback lab
//! (`RSISCSI_LAB_ENV`): what a verified write leaves on the LUN is the
//! stamp, byte for byte (read back with `cp`, checked here without the
//! bench's own code); a verified read of it finds every sector right; a
//! read with another seed, or of a sector changed behind its back, fails
//! with the LBA and what differs. The timeline has one sample a second,
//! marked by phase, with one rate per connection.
//!
//! Writes stay in [624 MiB, 656 MiB) of the `ram1` LUNs (no other suite
//! writes there), each test in its own 16 MiB.

mod common;

use common::{Scratch, var};

use std::process::Output;

use serde_json::Value;

const MIB: u64 = 1 << 20;

fn scratch(test: &str) -> Scratch {
    common::scratch("bench-verify", test)
}

fn url(target: &str) -> String {
    let (portal, iqn, lun) = match target {
        "tgt" => ("RSISCSI_TGT_PORTAL", "RSISCSI_TGT_IQN_RAM1", "RSISCSI_TGT_LUN"),
        _ => ("RSISCSI_ISTGT_PORTAL", "RSISCSI_ISTGT_IQN_RAM1", "RSISCSI_ISTGT_LUN"),
    };
    format!("iscsi://{}/{}/{}", var(portal), var(iqn), var(lun))
}

fn run(dir: &Scratch, args: &[&str]) -> Output {
    common::rsiscsi(dir, args, &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `bench` on [offset, offset + 4 MiB) with 64 KiB commands and the JSON
/// report; `extra` last.
fn bench(dir: &Scratch, target: &str, offset: u64, extra: &[&str]) -> (Output, Value) {
    let off = offset.to_string();
    let u = url(target);
    let mut args = vec![
        "bench",
        &u,
        "--bs",
        "64k",
        "--iodepth",
        "8",
        "--offset",
        &off,
        "--size",
        "4M",
        "--warmup",
        "0",
        "--time",
        "1",
        "--json",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    let out = run(dir, &args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

/// The stamp of 512-byte sector `sector`'s first 24 bytes: magic, seed,
/// sector number (what `bench --verify` documents it writes).
fn header(seed: u64, sector: u64) -> Vec<u8> {
    [&b"RSISCSIv"[..], &seed.to_le_bytes(), &sector.to_le_bytes()].concat()
}

/// A seed of its own per run, so that an earlier run's data never passes.
fn fresh_seed() -> u64 {
    use rand::RngCore;
    rand::thread_rng().next_u64() >> 1
}

#[test]
fn verified_write_then_read_back_exact_on_tgt_and_istgt() {
    let dir = scratch("write-read");
    for (target, offset) in [("tgt", 624 * MIB), ("istgt", 624 * MIB)] {
        let seed = fresh_seed().to_string();
        // Sequential 64 KiB writes over 4 MiB for a second: every slot is
        // written several times, then all are read back and checked.
        let (out, w) =
            bench(&dir, target, offset, &["--rw", "write", "--verify", "--seed", &seed, "--connections", "2"]);
        assert!(out.status.success(), "{target}: {}", stderr(&out));
        assert_eq!((w["errors"].as_u64(), w["verify_errors"].as_u64()), (Some(0), Some(0)), "{target}: {w}");
        assert_eq!(w["verified_bytes"].as_u64(), Some(4 * MIB), "{target}: the whole region was read back: {w}");
        let seed_n: u64 = seed.parse().unwrap();
        assert_eq!(w["seed"].as_u64(), Some(seed_n));
        // What is on the LUN, read by `cp`: the documented stamp in
        // every sector of the first and the last 64 KiB.
        for at in [offset, offset + 4 * MIB - 65536] {
            let f = dir.join(format!("{target}-{at}"));
            let (o, l) = (at.to_string(), "65536".to_string());
            let out =
                run(&dir, &["cp", "--offset", &o, "--length", &l, &url(target), f.to_str().unwrap(), "--no-progress"]);
            assert!(out.status.success(), "{target}: {}", stderr(&out));
            let data = std::fs::read(&f).unwrap();
            assert_eq!(data.len(), 65536);
            for (i, s) in data.chunks(512).enumerate() {
                let sector = at / 512 + i as u64;
                assert_eq!(s[..24], header(seed_n, sector)[..], "{target}: sector {sector}");
            }
            // Sector bodies differ from one another (derived from the sector number).
            assert_ne!(data[24..512], data[512 + 24..1024]);
        }
        // A verified read with the same seed: every sector checked, none differs.
        for rw in ["read", "randread"] {
            let (out, r) = bench(&dir, target, offset, &["--rw", rw, "--verify", "--seed", &seed]);
            assert!(out.status.success(), "{target} {rw}: {}", stderr(&out));
            assert_eq!((r["errors"].as_u64(), r["verify_errors"].as_u64()), (Some(0), Some(0)), "{target} {rw}: {r}");
            assert!(r["verified_bytes"].as_u64().unwrap() >= 4 * MIB, "{target} {rw}: {r}");
        }
    }
}

#[test]
fn another_seed_or_a_changed_byte_is_reported_with_its_lba() {
    let dir = scratch("mismatch");
    for (target, offset) in [("tgt", 632 * MIB), ("istgt", 632 * MIB)] {
        let seed = fresh_seed();
        let s = seed.to_string();
        // --prefill writes the region first, then the read checks it.
        let (out, r) = bench(&dir, target, offset, &["--rw", "read", "--verify", "--prefill", "--seed", &s]);
        assert!(out.status.success(), "{target}: {}", stderr(&out));
        assert_eq!(r["verify_errors"].as_u64(), Some(0), "{target}: {r}");
        // No difference with a seed never used before: the prefill wrote the
        // stamps (its sample is there when it took 0.1 s or more).
        let first = r["timeline"][0]["phase"].as_str().unwrap();
        assert!(first == "prefill" || first == "run", "{target}: {r}");
        // Read with another seed: every sector differs, the exit status is 1,
        // and stderr names the LBAs and both seeds.
        let other = (seed + 1).to_string();
        let (out, r) = bench(&dir, target, offset, &["--rw", "read", "--verify", "--seed", &other]);
        assert_eq!(out.status.code(), Some(1), "{target}: {}", stderr(&out));
        let bad = r["verify_errors"].as_u64().unwrap();
        assert!(bad > 0 && bad.is_multiple_of(128), "{target}: whole 64 KiB commands differ: {r}");
        assert!(r["errors"].as_u64().unwrap() >= bad, "{target}: {r}");
        let err = stderr(&out);
        let first_lba = offset / 512;
        // Each line names an LBA of the region and both seeds.
        for line in err.lines().filter(|l| l.starts_with("rsiscsi: verify: ")) {
            let rest = line.strip_prefix("rsiscsi: verify: LBA ").unwrap();
            let (lba, what) = rest.split_once(": ").unwrap();
            let lba: u64 = lba.parse().unwrap();
            assert!((first_lba..first_lba + 4 * MIB / 512).contains(&lba), "{target}: {line}");
            assert_eq!(what, format!("written with --seed {seed}, expected --seed {other}"), "{target}");
        }
        assert!(
            err.lines().last().unwrap().starts_with(&format!("rsiscsi: error: --verify: {bad} sector(s) differ")),
            "{target}: {err}"
        );
        // Change one byte of one sector behind the bench's back (with cp):
        // the read names that LBA and the byte.
        let sector = offset / 512 + 77;
        let at = (sector * 512).to_string();
        let f = dir.join(format!("{target}-sector"));
        let got =
            run(&dir, &["cp", "--offset", &at, "--length", "512", &url(target), f.to_str().unwrap(), "--no-progress"]);
        assert!(got.status.success(), "{}", stderr(&got));
        let mut data = std::fs::read(&f).unwrap();
        data[300] ^= 0x5a;
        std::fs::write(&f, &data).unwrap();
        let put = run(&dir, &["cp", "--offset", &at, f.to_str().unwrap(), &url(target), "--no-progress"]);
        assert!(put.status.success(), "{}", stderr(&put));
        let (out, r) = bench(&dir, target, offset, &["--rw", "read", "--verify", "--seed", &s]);
        assert_eq!(out.status.code(), Some(1), "{target}: {}", stderr(&out));
        // Read once or more within the second; always that one sector.
        assert!(r["verify_errors"].as_u64().unwrap() >= 1, "{target}: {r}");
        let err = stderr(&out);
        let want = format!(
            "rsiscsi: verify: LBA {sector}: byte 300 of the sector is 0x{:02x}, expected 0x{:02x}",
            data[300],
            data[300] ^ 0x5a
        );
        assert!(
            err.lines().all(|l| l == want || l.starts_with("rsiscsi: error: --verify:")),
            "{target}: {err}\nwant {want}"
        );
    }
}

/// One sample a second from the start, warm-up marked, rates per
/// connection in the order of `paths`; `--timeline` prints the same on
/// stderr.
#[test]
fn timeline_has_a_sample_a_second_per_phase_and_connection() {
    let dir = scratch("timeline");
    let u = url("tgt");
    let offset = (640 * MIB).to_string();
    let out = run(
        &dir,
        &[
            "bench",
            &u,
            "--rw",
            "write",
            "--verify",
            "--bs",
            "64k",
            "--offset",
            &offset,
            "--size",
            "16M",
            "--warmup",
            "1",
            "--time",
            "2",
            "--connections",
            "3",
            "--timeline",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths = r["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    assert!(paths.iter().all(|p| p["connection_id"].is_string() && p["local_address"].is_string()), "{r}");
    assert_eq!(paths.iter().filter(|p| p["leading"] == true).count(), 1);
    let tl = r["timeline"].as_array().unwrap();
    let phases: Vec<&str> = tl.iter().map(|p| p["phase"].as_str().unwrap()).collect();
    // warm-up (1 s), run (2 s), then the read-back, in that order (a
    // read-back shorter than a tenth of a second has no sample of its own).
    let mut order = phases.clone();
    order.dedup();
    assert!(order == ["warmup", "run", "verify"] || order == ["warmup", "run"], "{phases:?}");
    assert!(phases.iter().filter(|p| **p == "run").count() >= 2, "{phases:?}");
    let mut last = 0.0;
    for p in tl {
        let t = p["t"].as_f64().unwrap();
        assert!(t > last && t - last <= 1.2, "{tl:?}");
        last = t;
        let per = p["per_connection_mib_s"].as_array().unwrap();
        assert_eq!(per.len(), 3, "{p}");
        assert!(p["mib_s"].as_f64().unwrap() >= 0.0 && p["iops"].as_f64().unwrap() >= 0.0);
        assert_eq!(p["errors"], 0, "{p}\n{}", stderr(&out));
    }
    // The run's samples moved data, on every connection.
    for p in tl.iter().filter(|p| p["phase"] == "run") {
        assert!(p["mib_s"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["per_connection_mib_s"].as_array().unwrap().iter().all(|v| v.as_f64().unwrap() > 0.0), "{p}");
    }
    // The warm-up sample ends at about 1 s, where the run begins.
    let w = tl.iter().rfind(|p| p["phase"] == "warmup").unwrap()["t"].as_f64().unwrap();
    assert!((0.9..=1.3).contains(&w), "{tl:?}");
    // --timeline: the same samples, one line each, on stderr.
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("t=")).collect();
    assert_eq!(lines.len(), tl.len(), "{err}");
    assert!(
        lines[0].contains(" warmup ") && lines[0].contains("MiB/s") && lines[0].contains("per-connection MiB/s ["),
        "{err}"
    );
    assert!(err.lines().all(|l| l.starts_with("t=")), "nothing else on stderr: {err}");
}
