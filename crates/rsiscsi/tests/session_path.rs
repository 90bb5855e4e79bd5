//! The service side of issue 19 against a real rsiscsid and tgt's `svc`
//! target (`RSISCSI_LAB_ENV`): each connection's initiator port
//! (`--initiator-port` as an index, an interface name or an address), its
//! state, `rsiscsi session path` (weight, primary/standby) in the API,
//! `session list` and the daemon's metrics.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;

fn target() -> String {
    common::var("RSISCSI_TGT_IQN_SVC")
}

fn portal() -> String {
    common::var("RSISCSI_TGT_PORTAL")
}

/// The value of the metrics line of `family` whose labels contain every
/// one of `labels`.
fn metric(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn initiator_ports_states_and_path_settings_through_the_service() {
    let svc = Daemon::start_with_metrics("session-path", "paths");
    let iqn = target();
    svc.ok(&["portal", "add", &portal()]);
    let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap().trim().to_string();
    // The leading connection from interface `lo` (by name), the second from
    // lo's index, the third from an address of lo: all 127.0.0.1, the first
    // IPv4 address of lo, which is what an initiator port stands for.
    let out =
        svc.ok(&["target", "login", &iqn, "--portal", &portal(), "--initiator-port", "lo", "--policy", "weighted"]);
    let sid = out.lines().next().unwrap().strip_prefix("session ").unwrap().to_string();
    let second = svc.ok(&["session", "add-connection", &sid, "--portal", &portal(), "--initiator-port", &lo]);
    let third = svc.ok(&["session", "add-connection", &sid, "--portal", &portal(), "--initiator-port", "127.0.0.1"]);
    let (second, third) = (second.trim().to_string(), third.trim().to_string());
    let conns = svc.connections(Some(&sid));
    assert_eq!(conns.len(), 3);
    for c in &conns {
        assert_eq!(c["initiator_address"], "127.0.0.1", "{c}");
        assert_eq!(c["state"], "full-feature", "{c}");
        assert_eq!((c["primary"].as_bool(), c["weight"].as_u64()), (Some(true), Some(1)), "{c}");
    }

    // session path: weight and standby; the answer is the connection.
    let out = svc.ok(&["session", "path", &sid, &second, "--weight", "5", "--standby"]);
    assert!(out.starts_with(&format!("connection {second} of session {sid}: standby, weight 5 (127.0.0.1:")), "{out}");
    assert!(out.ends_with(", full-feature)\n"), "{out}");
    let c = svc.json(&["session", "path", &sid, &third, "--weight", "0"]);
    assert_eq!(
        (c["connection_id"].as_str(), c["weight"].as_u64(), c["primary"].as_bool()),
        (Some(third.as_str()), Some(0), Some(true))
    );
    let c = svc.json(&["session", "path", &sid, &second, "--primary"]);
    assert_eq!((c["weight"].as_u64(), c["primary"].as_bool()), (Some(5), Some(true)), "what is left out stays: {c}");
    svc.ok(&["session", "path", &sid, &second, "--standby"]);
    let by_id = |id: &str| svc.connections(Some(&sid)).into_iter().find(|c| c["connection_id"] == id).unwrap();
    assert_eq!((by_id(&second)["weight"].as_u64(), by_id(&second)["primary"].as_bool()), (Some(5), Some(false)));
    assert_eq!(by_id(&third)["weight"].as_u64(), Some(0));
    // In the text list: PATH and WEIGHT at the end of each connection's row.
    let text = svc.ok(&["session", "list"]);
    assert!(text.contains("  CONNECTION "), "{text}");
    let row = |id: &str| -> Vec<String> {
        let r =
            text.lines().find(|l| l.trim_start().starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{text}"));
        r.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(row(&second)[row(&second).len() - 2..], ["standby", "5"], "{text}");
    assert_eq!(row(&third)[row(&third).len() - 2..], ["primary", "0"], "{text}");
    assert_eq!(row(&second)[4], "full-feature", "{text}");

    // The weighted policy now sends everything to the leading connection
    // and the second (5:1... the third has weight 0): SCSI commands through
    // the service count on the connections that carry them.
    for _ in 0..12 {
        svc.ok(&["session", "scsi", &sid, &common::var("RSISCSI_TGT_LUN"), "00 00 00 00 00 00"]);
    }
    let third_cmds = by_id(&third)["counters"]["commands"].as_u64().unwrap();
    let second_cmds = by_id(&second)["counters"]["commands"].as_u64().unwrap();
    assert_eq!(third_cmds, 0, "weight 0 carries nothing");
    assert!(second_cmds >= 8, "weight 5 of 6 carries most: {second_cmds}");

    // Metrics: each connection's state, weight and primary, labelled.
    let m = svc.metrics();
    for (id, weight, primary) in [(&second, 5.0, 0.0), (&third, 0.0, 1.0)] {
        let labels = [format!("session=\"{sid}\""), format!("connection=\"{id}\""), "local=\"127.0.0.1:".to_string()];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let state =
            |s: &str| metric(&m, "rsiscsi_connection_state", &[&labels[..], &[&format!("state=\"{s}\"")]].concat());
        assert_eq!(state("full-feature"), Some(1.0), "{m}");
        assert_eq!(state("stalled"), Some(0.0), "{m}");
        assert_eq!(state("recovering"), Some(0.0), "{m}");
        assert_eq!(metric(&m, "rsiscsi_connection_weight", &labels), Some(weight), "{m}");
        assert_eq!(metric(&m, "rsiscsi_connection_primary", &labels), Some(primary), "{m}");
        assert_eq!(metric(&m, "rsiscsi_connection_reconnects_total", &labels), Some(0.0), "{m}");
        assert!(m.contains(&format!("remote=\"{}\"", portal())), "{m}");
    }

    // Refusals: nothing to change (usage), an unknown connection (404), a
    // malformed one (400), a port that is no interface.
    let o = svc.rsiscsi(&["session", "path", &sid, &second]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = svc.rsiscsi(&["session", "path", &sid, &second, "--primary", "--standby"]);
    assert_eq!(o.status.code(), Some(2));
    let unknown = format!("{}-7777", sid.split('-').next().unwrap());
    let o = svc.rsiscsi(&["session", "path", &sid, &unknown, "--weight", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains(&format!("has no connection {unknown}"))
            && err.contains("ISDSC_INVALID_CONNECTION_ID"),
        "{err}"
    );
    let o = svc.rsiscsi(&["session", "path", &sid, "nonsense", "--weight", "1"]);
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = svc.rsiscsi(&["session", "add-connection", &sid, "--portal", &portal(), "--initiator-port", "rsnosuch0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--initiator-port rsnosuch0: no network interface is named"));

    svc.ok(&["session", "logout", &sid]);
}

/// A persistent login's path settings come back with its session after a
/// restart of the service, as its policy does.
#[test]
fn path_settings_of_a_persistent_login_survive_a_restart() {
    let mut svc = Daemon::start_with_metrics("session-path", "persistent");
    let iqn = target();
    svc.ok(&["portal", "add", &portal()]);
    let out = svc.ok(&[
        "target",
        "login",
        &iqn,
        "--portal",
        &portal(),
        "--persistent",
        "--connections",
        "2",
        "--policy",
        "weighted",
    ]);
    let mut lines = out.lines();
    let sid = lines.next().unwrap().strip_prefix("session ").unwrap().to_string();
    let _lead = lines.next().unwrap().strip_prefix("connection ").unwrap().to_string();
    let second = lines.next().unwrap().strip_prefix("connection ").unwrap().to_string();
    svc.ok(&["session", "path", &sid, &second, "--weight", "7", "--standby"]);
    svc.restart();
    // The session is back (a new id), its second connection with weight 7, standby.
    let t0 = Instant::now();
    let conns = loop {
        let l = svc.json(&["session", "list"]);
        if let Some(s) = l["sessions"].as_array().unwrap().iter().find(|s| s["target_name"] == iqn.as_str()) {
            let c = s["connections"].as_array().unwrap().clone();
            if c.len() == 2 {
                assert_eq!(s["load_balance_policy"], "weighted");
                break c;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the persistent login did not come back: {l}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let paths: Vec<(Option<bool>, Option<u64>)> =
        conns.iter().map(|c| (c["primary"].as_bool(), c["weight"].as_u64())).collect();
    assert_eq!(paths, [(Some(true), Some(1)), (Some(false), Some(7))]);
    let new_sid = svc.json(&["session", "list"])["sessions"][0]["session_id"].as_str().unwrap().to_string();
    svc.ok(&["persistent", "remove", &iqn]);
    svc.ok(&["session", "logout", &new_sid]);
}
