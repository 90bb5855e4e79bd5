//! Initiator ports and weights of a one-shot session (issue 19): `--from`
//! and `--add-portal HOST[:PORT]@LOCAL` make each connection connect from
//! the local address named (an address, an interface name or index), as
//! the socket itself reports it; `--weights` steers the weighted policy;
//! what cannot work is refused before any login, with the option named.
//!
//! Against the loopback lab (`RSISCSI_LAB_ENV`): 127.0.0.0/8 and ::1 on
//! `lo` give several local addresses. Only reads the `ram1` LUNs (from
//! 620 MiB, where no suite writes: `bench_verify.rs` writes [624 MiB,
//! 656 MiB) with stamps, which reads do not care about).

mod common;

use common::{Scratch, var};

use std::process::Output;

use serde_json::Value;

fn scratch(test: &str) -> Scratch {
    common::scratch("mcs-local", test)
}

fn url(target: &str) -> String {
    let (portal, iqn, lun) = match target {
        "tgt" => ("RSISCSI_TGT_PORTAL", "RSISCSI_TGT_IQN_RAM1", "RSISCSI_TGT_LUN"),
        _ => ("RSISCSI_ISTGT_PORTAL", "RSISCSI_ISTGT_IQN_RAM1", "RSISCSI_ISTGT_LUN"),
    };
    format!("iscsi://{}/{}/{}", var(portal), var(iqn), var(lun))
}

fn url6(target: &str) -> String {
    let (portal, iqn, lun) = match target {
        "tgt" => ("RSISCSI_TGT_PORTAL6", "RSISCSI_TGT_IQN_RAM1", "RSISCSI_TGT_LUN"),
        _ => ("RSISCSI_ISTGT_PORTAL6", "RSISCSI_ISTGT_IQN_RAM1", "RSISCSI_ISTGT_LUN"),
    };
    format!("iscsi://{}/{}/{}", var(portal), var(iqn), var(lun))
}

/// A short read bench on 16 MiB from 620 MiB, its JSON report.
fn bench(dir: &Scratch, target_url: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        target_url,
        "--rw",
        "read",
        "--bs",
        "64k",
        "--iodepth",
        "8",
        "--offset",
        "620M",
        "--size",
        "16M",
        "--time",
        "1",
        "--warmup",
        "0",
        "--json",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    let out = common::rsiscsi(dir, &args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every bench here runs without a lost command; on a failure the log
    // (stderr) says which connection or command went wrong.
    assert_eq!(r["errors"], 0, "{args:?}: {r}\n{err}");
    r
}

fn ip_of(v: &Value) -> String {
    let a: std::net::SocketAddr = v.as_str().unwrap().parse().unwrap();
    a.ip().to_string()
}

/// The local and remote IP of each connection, leading first.
fn locals(report: &Value) -> Vec<(String, String)> {
    report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (ip_of(&p["local_address"]), ip_of(&p["remote_address"])))
        .collect()
}

#[test]
fn each_connection_connects_from_its_initiator_port() {
    let dir = scratch("ports");
    for target in ["tgt", "istgt"] {
        let host = var(if target == "tgt" { "RSISCSI_TGT_HOST" } else { "RSISCSI_ISTGT_HOST" });
        let port = var(if target == "tgt" { "RSISCSI_TGT_PORT" } else { "RSISCSI_ISTGT_PORT" });
        let r = bench(
            &dir,
            &url(target),
            &[
                "--connections",
                "4",
                "--from",
                "127.0.0.2",
                "--add-portal",
                &format!("{host}:{port}@127.0.0.3"),
                "--add-portal",
                &format!("{host}:{port}@lo"),
                "--add-portal",
                &format!("{host}:{port}"),
            ],
        );
        assert_eq!(r["errors"], 0, "{target}: {r}");
        let l = locals(&r);
        assert_eq!(l.len(), 4, "{target}: {r}");
        assert_eq!(l[0].0, "127.0.0.2", "{target}: --from");
        assert_eq!(l[1].0, "127.0.0.3", "{target}: @ADDRESS");
        assert_eq!(l[2].0, "127.0.0.1", "{target}: @lo, its first IPv4 address");
        assert_eq!(l[3].0, "127.0.0.1", "{target}: no @: the route's choice");
        assert!(l.iter().all(|(_, remote)| *remote == host), "{target}: {l:?}");
        // Every connection carried data.
        let per: Vec<f64> = (0..4)
            .map(|i| {
                r["timeline"].as_array().unwrap().iter().map(|p| p["per_connection_mib_s"][i].as_f64().unwrap()).sum()
            })
            .collect();
        assert!(per.iter().all(|v| *v > 0.0), "{target}: {per:?}");
    }
}

/// IPv6 portals with `[::1]:PORT@LOCAL`: an interface gives its IPv6 address.
#[test]
fn ipv6_portals_take_local_addresses_too() {
    let dir = scratch("ipv6");
    let index = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap().trim().to_string();
    for target in ["tgt", "istgt"] {
        let portal6 = var(if target == "tgt" { "RSISCSI_TGT_PORTAL6" } else { "RSISCSI_ISTGT_PORTAL6" });
        let r = bench(
            &dir,
            &url6(target),
            &[
                "--connections",
                "3",
                "--from",
                "lo",
                "--add-portal",
                &format!("{portal6}@::1"),
                "--add-portal",
                &format!("{portal6}@{index}"),
            ],
        );
        assert_eq!(r["errors"], 0, "{target}: {r}");
        let l = locals(&r);
        assert_eq!(l, vec![("::1".to_string(), "::1".to_string()); 3], "{target}");
    }
}

/// `--weights 1,0` keeps the second connection out of use; `3,1` gives
/// the first three times the commands of the second.
#[test]
fn weights_steer_the_weighted_policy() {
    let dir = scratch("weights");
    let sums = |r: &Value| -> Vec<f64> {
        (0..2)
            .map(|i| {
                r["timeline"].as_array().unwrap().iter().map(|p| p["per_connection_mib_s"][i].as_f64().unwrap()).sum()
            })
            .collect()
    };
    for target in ["tgt", "istgt"] {
        let r = bench(&dir, &url(target), &["--connections", "2", "--policy", "weighted", "--weights", "1,0"]);
        let w: Vec<u64> = r["paths"].as_array().unwrap().iter().map(|p| p["weight"].as_u64().unwrap()).collect();
        assert_eq!(w, vec![1, 0], "{target}");
        let s = sums(&r);
        assert!(s[0] > 0.0 && s[1] == 0.0, "{target}: weights 1,0 moved {s:?}");
        let r = bench(&dir, &url(target), &["--connections", "2", "--policy", "weighted", "--weights", "3,1"]);
        let s = sums(&r);
        let ratio = s[0] / s[1];
        assert!((2.0..=4.5).contains(&ratio), "{target}: weights 3,1 moved {s:?} (ratio {ratio})");
        assert_eq!(r["errors"], 0, "{target}: {r}");
    }
}

fn fails(dir: &Scratch, args: &[&str], needle: &str) {
    let out: Output = common::rsiscsi(dir, args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(lines[0].starts_with("rsiscsi: error: ") && lines[0].contains(needle), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

/// Refused before any login (a port that speaks no iSCSI would otherwise
/// say so): the option, the value and what is wrong with it.
#[test]
fn initiator_ports_that_cannot_work_are_refused_first() {
    let dir = scratch("refused");
    let nobody = "iscsi://127.0.0.1:9/iqn.2024-01.x:y/0";
    fn b<'a>(nobody: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        [&["bench", nobody, "--time", "1"][..], extra].concat()
    }
    fails(
        &dir,
        &b(nobody, &["--connections", "2", "--add-portal", "127.0.0.1@rsnosuch0"]),
        "--add-portal 127.0.0.1:3260@rsnosuch0: no network interface is named \"rsnosuch0\"",
    );
    fails(
        &dir,
        &b(nobody, &["--connections", "2", "--add-portal", "127.0.0.1@198.18.255.254"]),
        "local address 198.18.255.254 is not an address of this host",
    );
    fails(
        &dir,
        &b(nobody, &["--from", "::1"]),
        "--from ::1: local address ::1 is not IPv4, the family of portal 127.0.0.1:9",
    );
    fails(&dir, &b(nobody, &["--from", "999999"]), "--from 999999: no network interface has index 999999");
    fails(&dir, &b(nobody, &["--connections", "3", "--weights", "1,2"]), "--weights gives 2 weights for 3 connections");
    fails(&dir, &b(nobody, &["--connections", "2", "--weights", "0,0"]), "--weights are all 0");
    let cp = ["cp", "--connections", "2", "--add-portal", "[::1]@lo", nobody, "/dev/null"];
    // lo has ::1, so this one is fine until the login, which fails on port 9.
    let out = common::rsiscsi(&dir, &cp, &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("@lo"), "{}", String::from_utf8_lossy(&out.stderr));
    fails(&dir, &b(nobody, &["--rw", "write", "--verify", "--prefill"]), "--prefill is for the read modes");
    // A malformed LOCAL is a usage error.
    let out = common::rsiscsi(&dir, &["bench", nobody, "--from", "10.0.0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither an IP address nor an interface name"));
}
