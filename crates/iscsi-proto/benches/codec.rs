//! Codec micro-benchmarks: framing a stream of received PDUs, encoding
//! headers and trailers, and the CRC32C digests (RFC 7143 §12.1) that cover
//! them. `cargo bench -p iscsi-proto --bench codec`; throughput is given in
//! bytes of wire data so that runs compare with the loopback ceiling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iscsi_proto::digest::crc32c;
use iscsi_proto::pdu::{
    Bhs, DataIn, FrameConfig, Pdu, PduDecoder, RESERVED_TAG, ScsiResponse, data_trailer, encode_header, encode_pdu,
};

const SEGMENT: usize = 256 * 1024;

fn cfg(digests: bool) -> FrameConfig {
    FrameConfig { header_digest: digests, data_digest: digests, max_recv_data_segment_length: SEGMENT as u32 }
}

fn data_in(len: usize, data_sn: u32) -> Pdu {
    let bhs = DataIn { itt: 1, ttt: RESERVED_TAG, data_sn, buffer_offset: data_sn * len as u32, ..Default::default() };
    Pdu::new(bhs, Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>()))
}

/// The wire bytes of `n` PDUs in a row.
fn stream(pdus: &[Pdu], c: &FrameConfig) -> Bytes {
    let mut out = BytesMut::new();
    for p in pdus {
        encode_pdu(p, c, &mut out);
    }
    out.freeze()
}

fn decode_all(wire: &Bytes, c: FrameConfig) -> usize {
    let mut buf = BytesMut::from(&wire[..]);
    let mut dec = PduDecoder::new(c);
    let mut n = 0;
    while let Some(p) = dec.decode(&mut buf).unwrap() {
        n += p.data.len();
    }
    n
}

fn decode(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("decode");
    for digests in [false, true] {
        let c = cfg(digests);
        let tag = if digests { "crc32c" } else { "plain" };
        // 1 MiB read: four 256 KiB Data-In segments.
        let wire = stream(&(0..4).map(|sn| data_in(SEGMENT, sn)).collect::<Vec<_>>(), &c);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("data_in_1MiB_{tag}"), |b| b.iter(|| decode_all(black_box(&wire), c)));
        // 4 KiB reads: a Data-In and a SCSI Response each, 32 of them.
        let mut pdus = Vec::new();
        for i in 0..32 {
            pdus.push(data_in(4096, 0));
            pdus.push(Pdu::new(ScsiResponse { itt: i, stat_sn: i, ..Default::default() }, Bytes::new()));
        }
        let wire = stream(&pdus, &c);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("read_4k_x32_{tag}"), |b| b.iter(|| decode_all(black_box(&wire), c)));
    }
    g.finish();
}

fn encode(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("encode");
    let bhs: Bhs = DataIn { itt: 1, ttt: RESERVED_TAG, ..Default::default() }.into();
    let data = vec![0xa5u8; SEGMENT];
    for digests in [false, true] {
        let c = cfg(digests);
        let tag = if digests { "crc32c" } else { "plain" };
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("header_{tag}"), |b| {
            let mut out = BytesMut::with_capacity(64);
            b.iter(|| {
                out.clear();
                encode_header(black_box(&bhs), &[], SEGMENT as u32, &c, &mut out);
            })
        });
        g.throughput(Throughput::Bytes(SEGMENT as u64));
        g.bench_function(format!("trailer_256KiB_{tag}"), |b| b.iter(|| data_trailer(black_box(&data), &c)));
    }
    g.finish();
}

fn digest(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("crc32c");
    for len in [48usize, 4096, SEGMENT] {
        let data = vec![0x5au8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}"), |b| b.iter(|| crc32c(black_box(&data))));
    }
    g.finish();
}

criterion_group!(benches, decode, encode, digest);
criterion_main!(benches);
