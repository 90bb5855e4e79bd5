//! Framing tests: partial input, several PDUs in one buffer, limits checked
//! early, digests verified, padding stripped, and round trips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::encode_to_bytes;
use crate::digest::{crc32c, to_wire};
use crate::pdu::bhs::strategies::{arb_bhs, arb_pdu};
use crate::pdu::*;

fn cfg(header_digest: bool, data_digest: bool) -> FrameConfig {
    FrameConfig { header_digest, data_digest, max_recv_data_segment_length: 8192 }
}

fn data_in(data_len: usize) -> Pdu {
    let bhs =
        DataIn { final_bit: true, status_present: true, itt: 7, ttt: RESERVED_TAG, data_sn: 1, ..Default::default() };
    Pdu::new(bhs, (0..data_len).map(|i| i as u8 ^ 0x5a).collect::<Vec<u8>>().into())
}

fn all_configs() -> [FrameConfig; 4] {
    [cfg(false, false), cfg(true, false), cfg(false, true), cfg(true, true)]
}

#[test]
fn peek_lengths_needs_eight_bytes() {
    assert_eq!(peek_lengths(&[0; 7]), None);
    assert_eq!(peek_lengths(&[0, 0, 0, 0, 3, 0x01, 0x02, 0x03]), Some((12, 0x01_0203)));
}

#[test]
fn wire_layout_with_digests_and_padding() {
    let pdu = data_in(5);
    let wire = encode_to_bytes(&pdu, &cfg(true, true));
    // BHS, header digest, 5 data bytes, 3 padding, data digest.
    assert_eq!(wire.len(), 48 + 4 + 8 + 4);
    assert_eq!(&wire[48..52], &to_wire(crc32c(&wire[..48])));
    assert_eq!(&wire[52..57], &pdu.data[..]);
    assert_eq!(&wire[57..60], &[0, 0, 0]);
    assert_eq!(&wire[60..64], &to_wire(crc32c(&wire[52..60])));
    // No digests: BHS and padded data only.
    assert_eq!(encode_to_bytes(&pdu, &cfg(false, false)).len(), 48 + 8);
}

#[test]
fn empty_data_has_no_data_digest() {
    // RFC 7143 §12.1: no data digest when DataSegmentLength is 0.
    let pdu = data_in(0);
    let wire = encode_to_bytes(&pdu, &cfg(true, true));
    assert_eq!(wire.len(), 48 + 4);
    assert_eq!(data_trailer(&[], &cfg(true, true)).1, 0);
    let mut buf = BytesMut::from(&wire[..]);
    let got = PduDecoder::new(cfg(true, true)).decode(&mut buf).unwrap().unwrap();
    assert_eq!(got, pdu);
    assert!(buf.is_empty());
}

#[test]
fn data_trailer_pads_and_digests() {
    for len in 0..9usize {
        let data = vec![0xa5u8; len];
        let pad = (4 - len % 4) % 4;
        let (t, n) = data_trailer(&data, &cfg(false, false));
        assert_eq!(n, pad);
        assert!(t.iter().all(|&b| b == 0));
        let (t, n) = data_trailer(&data, &cfg(false, true));
        if len == 0 {
            assert_eq!(n, 0);
        } else {
            assert_eq!(n, pad + 4);
            let mut covered = data.clone();
            covered.resize(len + pad, 0);
            assert_eq!(&t[pad..pad + 4], &to_wire(crc32c(&covered)));
        }
    }
}

#[test]
fn fed_one_byte_at_a_time() {
    for c in all_configs() {
        let pdu = Pdu { ahs: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]), ..data_in(13) };
        let wire = encode_to_bytes(&pdu, &c);
        let mut dec = PduDecoder::new(c);
        let mut buf = BytesMut::new();
        for (i, &b) in wire.iter().enumerate() {
            assert_eq!(dec.decode(&mut buf).unwrap(), None, "{c:?} at {i}");
            assert_eq!(buf.len(), i, "incomplete input must stay in the buffer");
            buf.extend_from_slice(&[b]);
        }
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(pdu));
        assert!(buf.is_empty());
    }
}

#[test]
fn two_pdus_in_one_buffer() {
    for c in all_configs() {
        let a = data_in(3);
        let b = Pdu::new(NopIn { itt: RESERVED_TAG, ttt: 9, ..Default::default() }, Bytes::new());
        let mut buf = BytesMut::new();
        encode_pdu(&a, &c, &mut buf);
        encode_pdu(&b, &c, &mut buf);
        buf.extend_from_slice(&[0x20, 0x80]); // the start of a third one
        let mut dec = PduDecoder::new(c);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(a));
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(b));
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &[0x20, 0x80]);
    }
}

#[test]
fn data_is_a_slice_of_the_received_buffer() {
    let pdu = data_in(100);
    let mut buf = BytesMut::from(&encode_to_bytes(&pdu, &cfg(false, false))[..]);
    let start = buf.as_ptr() as usize;
    let got = PduDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(got.data.as_ptr() as usize, start + 48, "data segment was copied");
}

#[test]
fn oversized_data_segment_refused_before_data_arrives() {
    for c in all_configs() {
        let limit = c.max_recv_data_segment_length;
        let pdu = data_in(limit as usize + 1);
        let wire = encode_to_bytes(&pdu, &c);
        // Only the header (and its digest) has arrived.
        let header = 48 + if c.header_digest { 4 } else { 0 };
        let mut buf = BytesMut::from(&wire[..header]);
        let err = PduDecoder::new(c).decode(&mut buf).unwrap_err();
        assert_eq!(err, PduError::DataSegmentTooLong { len: limit + 1, limit });
        assert_eq!(buf.len(), header);
        // Exactly at the limit is fine.
        let pdu = data_in(limit as usize);
        let mut buf = BytesMut::from(&encode_to_bytes(&pdu, &c)[..]);
        assert_eq!(PduDecoder::new(c).decode(&mut buf).unwrap(), Some(pdu));
    }
    // Without a header digest the check needs nothing but the BHS.
    let mut buf = BytesMut::from(&encode_to_bytes(&data_in(9000), &cfg(false, false))[..48]);
    assert!(matches!(
        PduDecoder::default().decode(&mut buf),
        Err(PduError::DataSegmentTooLong { len: 9000, limit: 8192 })
    ));
}

#[test]
fn bad_header_digest_detected() {
    let c = cfg(true, false);
    let wire = encode_to_bytes(&data_in(8), &c);
    for at in [0usize, 5, 20, 47, 48, 51] {
        let mut bad = BytesMut::from(&wire[..]);
        bad[at] ^= 0x01;
        let before = bad.clone();
        let err = PduDecoder::new(c).decode(&mut bad).unwrap_err();
        assert!(matches!(err, PduError::HeaderDigest { .. }), "flip at {at}: {err:?}");
        assert_eq!(bad, before, "buffer must be left alone on error");
    }
    // A corrupted DataSegmentLength is reported as a digest error, not a length error.
    let mut bad = BytesMut::from(&wire[..52]);
    bad[5] = 0xff;
    assert!(matches!(PduDecoder::new(c).decode(&mut bad), Err(PduError::HeaderDigest { .. })));
}

#[test]
fn bad_data_digest_detected() {
    let c = cfg(false, true);
    let wire = encode_to_bytes(&data_in(6), &c);
    // Data bytes, a padding byte, and the digest itself.
    for at in [48usize, 53, 54, 55, 56, 59] {
        let mut bad = BytesMut::from(&wire[..]);
        bad[at] ^= 0x80;
        let err = PduDecoder::new(c).decode(&mut bad).unwrap_err();
        assert!(matches!(err, PduError::DataDigest { .. }), "flip at {at}: {err:?}");
    }
}

#[test]
fn padding_is_stripped() {
    for len in 1..=8usize {
        let pdu = data_in(len);
        let mut buf = BytesMut::from(&encode_to_bytes(&pdu, &cfg(false, false))[..]);
        assert_eq!(buf.len(), 48 + len.div_ceil(4) * 4);
        let got = PduDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(got.data.len(), len);
        assert_eq!(got.data, pdu.data);
    }
}

#[test]
fn unknown_opcode_refused_once_the_header_is_in() {
    let mut wire = BytesMut::from(&encode_to_bytes(&data_in(0), &cfg(false, false))[..]);
    wire[0] = 0x1c;
    assert_eq!(PduDecoder::default().decode(&mut wire), Err(PduError::UnknownOpcode(0x1c)));
    // The data segment is not waited for.
    let mut wire = BytesMut::from(&encode_to_bytes(&data_in(100), &cfg(false, false))[..48]);
    wire[0] = 0x3e;
    assert_eq!(PduDecoder::default().decode(&mut wire), Err(PduError::UnknownOpcode(0x3e)));
}

#[test]
fn encode_header_matches_encode_pdu() {
    let pdu = Pdu { ahs: Bytes::from_static(&[9; 12]), ..data_in(10) };
    for c in all_configs() {
        let mut out = BytesMut::new();
        encode_header(&pdu.bhs, &pdu.ahs, pdu.data.len() as u32, &c, &mut out);
        out.extend_from_slice(&pdu.data);
        let (t, n) = data_trailer(&pdu.data, &c);
        out.extend_from_slice(&t[..n]);
        assert_eq!(out.freeze(), encode_to_bytes(&pdu, &c));
    }
}

#[test]
fn ahs_not_a_multiple_of_four_is_padded() {
    let mut out = BytesMut::new();
    encode_header(&Bhs::from(NopOut::default()), &[1, 2, 3, 4, 5], 0, &cfg(false, false), &mut out);
    assert_eq!(out.len(), 48 + 8);
    assert_eq!(out[4], 2);
    assert_eq!(&out[48..], &[1, 2, 3, 4, 5, 0, 0, 0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn whole_pdus_round_trip(pdu in arb_pdu(), hd in any::<bool>(), dd in any::<bool>()) {
        let c = cfg(hd, dd);
        let mut buf = BytesMut::new();
        encode_pdu(&pdu, &c, &mut buf);
        prop_assert_eq!(buf.len() % 4, 0);
        let mut dec = PduDecoder::new(c);
        prop_assert_eq!(dec.decode(&mut buf).unwrap(), Some(pdu));
        prop_assert!(buf.is_empty());
    }

    /// Split anywhere: the first part never yields a PDU, the whole always does.
    #[test]
    fn split_input_round_trips(pdu in arb_pdu(), cut in any::<prop::sample::Index>(), hd in any::<bool>(), dd in any::<bool>()) {
        let c = cfg(hd, dd);
        let wire = encode_to_bytes(&pdu, &c);
        let cut = cut.index(wire.len());
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut dec = PduDecoder::new(c);
        prop_assert_eq!(dec.decode(&mut buf).unwrap(), None);
        prop_assert_eq!(buf.len(), cut);
        buf.extend_from_slice(&wire[cut..]);
        prop_assert_eq!(dec.decode(&mut buf).unwrap(), Some(pdu));
    }

    /// Arbitrary bytes never panic the decoder and never make it take more
    /// than it was given.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), hd in any::<bool>(), dd in any::<bool>(), max in 0u32..512) {
        let mut dec = PduDecoder::new(FrameConfig { header_digest: hd, data_digest: dd, max_recv_data_segment_length: max });
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(pdu)) = dec.decode(&mut buf) {
            prop_assert!(pdu.data.len() <= max as usize);
        }
    }

    #[test]
    fn header_only_round_trip(bhs in arb_bhs()) {
        let pdu = Pdu::new(bhs, Bytes::new());
        let mut buf = BytesMut::from(&encode_to_bytes(&pdu, &FrameConfig::default())[..]);
        prop_assert_eq!(buf.len(), 48);
        prop_assert_eq!(PduDecoder::default().decode(&mut buf).unwrap(), Some(pdu));
    }
}

/// Writes the seed corpora of the fuzz targets (see fuzz/README.md):
/// `FUZZ_SEED_DIR=fuzz/corpus cargo test -p iscsi-proto write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files; run by hand to seed fuzz/corpus"]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("FUZZ_SEED_DIR") else {
        panic!("set FUZZ_SEED_DIR to the fuzz corpus directory");
    };
    let dir = std::path::PathBuf::from(dir);
    let login_text = b"TargetPortalGroupTag=1\0HeaderDigest=None\0DataDigest=None\0".to_vec();
    let login = Pdu::new(
        LoginResponse {
            transit: true,
            csg: 1,
            nsg: 3,
            isid: [0x80, 0, 0, 0x01, 0x02, 0x03],
            tsih: 1,
            itt: 1,
            stat_sn: 1,
            exp_cmd_sn: 1,
            max_cmd_sn: 32,
            ..Default::default()
        },
        login_text.into(),
    );
    let sense = Bytes::from_static(&[0, 18, 0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0]);
    let response = Pdu::new(
        ScsiResponse { status: 2, itt: 5, stat_sn: 3, exp_cmd_sn: 4, max_cmd_sn: 40, ..Default::default() },
        sense,
    );
    let r2t = Pdu::new(
        R2t { itt: 6, ttt: 0x100, max_cmd_sn: 40, desired_data_transfer_length: 4096, ..Default::default() },
        Bytes::new(),
    );
    let nop = Pdu::new(NopIn { itt: RESERVED_TAG, ttt: 7, ..Default::default() }, Bytes::new());
    let rejected = Bhs::from(NopOut::default()).encode(0, 0);
    let reject = Pdu::new(Reject { reason: 9, ..Default::default() }, Bytes::copy_from_slice(&rejected));
    let with_ahs = Pdu { ahs: Bytes::from_static(&[0, 5, 2, 0, 0, 0, 0x10, 0]), ..data_in(0) };
    let sets: [(&str, Vec<Pdu>); 4] = [
        ("login", vec![login]),
        ("data_in", vec![data_in(37), data_in(0)]),
        ("target_mix", vec![response, r2t, nop, with_ahs]),
        ("reject", vec![reject]),
    ];
    let out = dir.join("pdu_decoder");
    std::fs::create_dir_all(&out).unwrap();
    for (name, pdus) in &sets {
        // Selector: digests in bits 0-1, limit 8192 (index 7) in bits 2-4,
        // whole input at once (index 7) in bits 5-7, as the fuzz target reads it.
        for digests in 0u8..4 {
            let sel = digests | (7 << 2) | (7 << 5);
            let c = cfg(digests & 1 != 0, digests & 2 != 0);
            let mut bytes = vec![sel];
            for pdu in pdus {
                bytes.extend_from_slice(&encode_to_bytes(pdu, &c));
            }
            std::fs::write(out.join(format!("{name}-{digests}")), bytes).unwrap();
        }
    }
    let out = dir.join("negotiation");
    std::fs::create_dir_all(&out).unwrap();
    let answers: [&[u8]; 3] = [
        b"\x01HeaderDigest=None\0DataDigest=None\0MaxRecvDataSegmentLength=262144\0\xffInitialR2T=Yes\0ImmediateData=Yes\0MaxBurstLength=262144\0FirstBurstLength=65536\0\xffDefaultTime2Wait=2\0DefaultTime2Retain=0\0MaxOutstandingR2T=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0ErrorRecoveryLevel=0\0MaxConnections=8\0",
        b"\x03HeaderDigest=None\0DataDigest=None\0MaxRecvDataSegmentLength=8192\0TargetAlias=lab\0",
        b"\x00HeaderDigest=CRC32C\0DataDigest=CRC32C\0MaxRecvDataSegmentLength=65536\0X-vendor=1\0\xffMaxConnections=Reject\0",
    ];
    for (i, a) in answers.iter().enumerate() {
        std::fs::write(out.join(format!("answers-{i}")), a).unwrap();
    }
}

#[test]
fn decode_header_gives_the_layout_before_the_data_arrives() {
    for c in all_configs() {
        let pdu = data_in(5);
        let wire = encode_to_bytes(&pdu, &c);
        let dec = PduDecoder::new(c);
        let hd = if c.header_digest { 4 } else { 0 };
        // Not all of the header: nothing yet.
        assert_eq!(dec.decode_header(&wire[..48 + hd - 1]).unwrap(), None);
        let h = dec.decode_header(&wire[..48 + hd]).unwrap().unwrap();
        assert_eq!(h.bhs, pdu.bhs);
        assert_eq!((h.ahs_end, h.header_len, h.data_len, h.pad_len), (48, 48 + hd, 5, 3));
        assert_eq!(h.data_digest_len, if c.data_digest { 4 } else { 0 });
        assert_eq!(h.total_len(), wire.len());
        // The data digest as a caller computes it over data and padding.
        let trailer = &wire[h.header_len + 5..];
        assert_eq!(trailer.len(), h.trailer_len());
        if c.data_digest {
            let crc = crc32c(&wire[h.header_len..h.header_len + 8]);
            assert_eq!(h.check_data_digest(crc, h.trailer_digest(trailer)), Ok(()));
            assert!(matches!(
                h.check_data_digest(crc ^ 1, h.trailer_digest(trailer)),
                Err(PduError::DataDigest { .. })
            ));
        }
    }
}

#[test]
fn decode_header_checks_the_header_digest_and_length_limit() {
    let mut wire = BytesMut::from(&encode_to_bytes(&data_in(16), &cfg(true, false))[..]);
    wire[20] ^= 1;
    let dec = PduDecoder::new(cfg(true, false));
    assert!(matches!(dec.decode_header(&wire), Err(PduError::HeaderDigest { .. })));
    let big =
        encode_to_bytes(&data_in(8193), &FrameConfig { max_recv_data_segment_length: 16384, ..cfg(false, false) });
    assert!(matches!(
        PduDecoder::new(cfg(false, false)).decode_header(&big[..48]),
        Err(PduError::DataSegmentTooLong { len: 8193, limit: 8192 })
    ));
}
