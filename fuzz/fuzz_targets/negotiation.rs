//! Drives the operational-stage `Negotiator` with arbitrary target answers.
//!
//! Input layout: byte 0 bit 0 = leading connection, bit 1 = discovery
//! session; the rest is split on 0xff (a byte that never occurs in UTF-8
//! text) into successive login response data segments, each parsed with
//! `text::parse` and handed to `Negotiator::handle`. Errors are expected;
//! panics are bugs.
#![no_main]

use iscsi_proto::negotiation::{Negotiator, Proposal, SessionType};
use iscsi_proto::text;
use libfuzzer_sys::fuzz_target;

const SEPARATOR: u8 = 0xff;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let leading = sel & 1 != 0;
    let session_type = if sel & 2 != 0 { SessionType::Discovery } else { SessionType::Normal };
    let mut negotiator = Negotiator::new(Proposal::default(), leading, session_type);
    let _offer = negotiator.offer();
    for response in rest.split(|&b| b == SEPARATOR) {
        let Ok(pairs) = text::parse(response) else {
            continue;
        };
        // An error ends a real login; carrying on checks that misuse after
        // an error cannot panic either.
        let _ = negotiator.handle(&pairs);
        let _ = negotiator.is_complete();
    }
    let _ = negotiator.result();
});
