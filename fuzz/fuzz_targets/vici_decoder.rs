//! The VICI decoder (strongSwan's control protocol) on arbitrary bytes from
//! charon's socket: frames, packets and messages must never panic, and a
//! decoded packet must encode back to bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vici_proto::{FrameDecoder, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let mut out = Vec::new();
        if p.encode(&mut out).is_ok() {
            assert_eq!(Packet::decode(&out).ok(), Some(p));
        }
    }
    let mut buf = BytesMut::from(data);
    let mut dec = FrameDecoder::new();
    while let Ok(Some(_)) = dec.decode(&mut buf) {}
});
