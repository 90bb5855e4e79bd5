//! Feeds arbitrary bytes to `PduDecoder::decode`, in chunks, the way a
//! socket reader would.
//!
//! Input layout: byte 0 selects the framing (bit 0 HeaderDigest, bit 1
//! DataDigest, bits 2-4 MaxRecvDataSegmentLength from a small table, bits
//! 5-7 the chunk size the rest is fed in); the rest is the byte stream.
//!
//! Besides "never panic", it checks the decoder's contract: incomplete
//! input leaves the buffer alone, a decoded PDU respects the limit and
//! consumed bytes, and re-encoding a decoded PDU decodes to the same PDU.
#![no_main]

use bytes::BytesMut;
use iscsi_proto::pdu::{FrameConfig, PduDecoder, encode_pdu};
use libfuzzer_sys::fuzz_target;

const LIMITS: [u32; 8] = [0, 1, 4, 16, 48, 255, 1024, 8192];
const CHUNKS: [usize; 8] = [1, 2, 3, 5, 48, 53, 512, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from((sel >> 2) & 7)];
    let chunk = CHUNKS[usize::from(sel >> 5)];
    let cfg =
        FrameConfig { header_digest: sel & 1 != 0, data_digest: sel & 2 != 0, max_recv_data_segment_length: limit };
    let mut decoder = PduDecoder::new(cfg);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk.min(stream.len().max(1))) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(pdu)) => {
                    assert!(buf.len() < before.len(), "a PDU was decoded from nothing");
                    assert!(pdu.data.len() <= limit as usize, "data segment over the limit");
                    assert_eq!(pdu.ahs.len() % 4, 0, "AHS not in 4-byte words");
                    let mut again = BytesMut::new();
                    encode_pdu(&pdu, &cfg, &mut again);
                    let re = PduDecoder::new(cfg).decode(&mut again);
                    assert_eq!(re, Ok(Some(pdu)), "re-encoded PDU decodes differently");
                    assert!(again.is_empty(), "re-encoded PDU left bytes behind");
                }
                Ok(None) => {
                    assert_eq!(buf, before, "incomplete input was consumed");
                    break;
                }
                Err(_) => {
                    assert_eq!(buf, before, "the buffer changed on error");
                    return;
                }
            }
        }
    }
});
