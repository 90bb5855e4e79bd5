//! Feeds the SendTargets answer parser (RFC 7143 §12.3, Appendix C) with
//! arbitrary text data: `text::parse`, then `discovery::parse_send_targets`.
//!
//! Input: one SendTargets Text Response data segment (all continuation PDUs
//! joined). Checks beyond "no panic": every accepted address has a host
//! without brackets, whitespace or '/', a non-zero port, and prints back (as
//! `HOST:PORT,TPGT`, IPv6 in brackets) to a value that parses to the same
//! address; the number of targets equals the number of `TargetName` keys.
#![no_main]

use iscsi_proto::discovery::{TargetAddress, parse_send_targets};
use iscsi_proto::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = text::parse(data) else {
        return;
    };
    let Ok(targets) = parse_send_targets(&pairs) else {
        return;
    };
    let names = pairs.iter().filter(|(k, _)| k == "TargetName").count();
    assert_eq!(targets.len(), names);
    for t in &targets {
        assert!(!t.name.is_empty());
        for a in &t.addresses {
            assert!(a.port != 0);
            assert!(!a.host.is_empty());
            assert!(!a.host.chars().any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '[' | ']')));
            let printed = if a.host.contains(':') {
                format!("[{}]:{},{}", a.host, a.port, a.tpgt)
            } else {
                format!("{}:{},{}", a.host, a.port, a.tpgt)
            };
            assert_eq!(TargetAddress::parse(&printed).as_ref(), Ok(a), "{printed:?}");
        }
    }
});
