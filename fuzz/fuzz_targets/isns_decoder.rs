//! Feeds the iSNSP decoder (RFC 4171) with arbitrary bytes: PDU framing,
//! multi-PDU reassembly, message layout, then the initiator's readers of a
//! query answer and of an SCN.
//!
//! Checks beyond "no panic": a decoded message encodes and decodes back to
//! itself (same function, transaction, status, source and attributes), a
//! reassembled message never exceeds the cap, and every target read from a
//! query answer has a non-empty name.
#![no_main]

use iscsi_proto::isns::{Message, Pdu, Reassembler, client, pdu::Assembled};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    let mut r = Reassembler::new();
    loop {
        let Ok(Some((pdu, used))) = Pdu::decode(buf) else {
            return;
        };
        assert!(used >= 12 && used <= buf.len());
        buf = &buf[used..];
        let assembled: Assembled = match r.push(pdu) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(_) => return,
        };
        assert!(assembled.payload.len() <= iscsi_proto::isns::MAX_MESSAGE_LEN);
        let Ok(msg) = Message::decode(&assembled) else {
            continue;
        };
        let again = Message::decode_bytes(&msg.encode()).expect("re-encoded message decodes").expect("whole message");
        assert_eq!(again.function, msg.function);
        assert_eq!(again.transaction_id, msg.transaction_id);
        assert_eq!(again.status, msg.status);
        assert_eq!(again.source, msg.source);
        assert_eq!(again.keys, msg.keys);
        if let Ok(targets) = client::targets_from_query(&msg) {
            assert!(targets.iter().all(|t| !t.name.is_empty()));
        }
        let _ = client::parse_scn(&msg);
    }
});
