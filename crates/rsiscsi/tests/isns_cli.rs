//! `rsiscsi discover --isns` through the real binary against the iSNS lab
//! (open-isns `isnsd` on 127.0.0.1:3205, `scripts/isns-lab.sh up`; the file
//! named by `RSISCSI_ISNS_ENV` lists what it registered): the targets our
//! discovery domains show, in SendTargets' line format and in JSON, a domain
//! that hides a target, and a server that is not there.

mod common;

use std::collections::BTreeSet;

use common::isns_lab;

/// `TARGET PORTAL,TPGT` pairs of a lab setting, as `PORTAL,TPGT TARGET` lines.
fn lines_of(pairs: &str) -> BTreeSet<String> {
    let words: Vec<&str> = pairs.split_whitespace().collect();
    words.chunks(2).map(|p| format!("{} {}", p[1], p[0])).collect()
}

fn discover(dir: &std::path::Path, server: &str, name: &str, json: bool) -> std::process::Output {
    let mut args = vec!["discover", "--isns", server, "--initiator-name", name];
    if json {
        args.push("--json");
    }
    common::rsiscsi(dir, &args, &[])
}

#[test]
fn discover_isns_lists_what_our_discovery_domains_show() {
    let lab = isns_lab();
    let dir = common::scratch("isns", "list");
    let server = &lab["ISNS_SERVER"];
    let name = format!("iqn.2026-12.rs.rsiscsi.test:isns-cli-{}", std::process::id());
    let out = discover(&dir, server, &name, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: BTreeSet<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(got, lines_of(&lab["ISNS_VISIBLE"]));
    // The hidden target is in a domain of its own initiator only.
    let hidden = lines_of(&lab["ISNS_HIDDEN"]);
    assert!(got.is_disjoint(&hidden), "{got:?}");
    let out = discover(&dir, server, &lab["ISNS_PRIVATE_INITIATOR"], true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!("{}:{},{} {}", r["address"].as_str().unwrap(), r["port"], r["tpgt"], r["target"].as_str().unwrap())
        })
        .collect();
    assert!(hidden.is_subset(&got), "{got:?}");
    // The default port is 3205: the server's host alone works the same.
    let host = server.rsplit_once(':').map(|(h, _)| h).unwrap_or(server);
    let out = discover(&dir, host, &name, false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn discover_isns_without_a_server_says_so() {
    let dir = common::scratch("isns", "none");
    let out = discover(&dir, "127.0.0.1:3999", "iqn.2026-12.rs.rsiscsi.test:isns-none", false);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end(), "rsiscsi: error: iSNS server 127.0.0.1:3999 refused the connection (is isnsd running?)");
    let out = common::rsiscsi(&dir, &["discover", "--isns", "no such host.invalid"], &[]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
