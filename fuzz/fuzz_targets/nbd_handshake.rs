//! Feeds arbitrary bytes to the NBD server handshake (in chunks, as a socket would deliver them) and
//! whatever follows a successful handshake to the request decoder and validator.
//!
//! Input layout: byte 0 picks the chunk size and whether the export is read-only; the rest is the
//! client's byte stream.
//!
//! Besides "never panic", it checks the contracts: the handshake never buffers more than one bounded
//! option, a request accepted by validation lies inside the export and within the maximum block size,
//! and a decoded request re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_proto::{
    BlockSizes, Command, ExportInfo, HandshakeLimits, Progress, REQUEST_HEADER_LEN, Request, ServerHandshake,
    TransmissionFlags,
};

const CHUNKS: [usize; 8] = [1, 2, 3, 7, 16, 29, 512, usize::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let chunk = CHUNKS[usize::from(sel & 7)].min(stream.len().max(1));
    let mut flags = TransmissionFlags::SEND_FLUSH
        | TransmissionFlags::SEND_FUA
        | TransmissionFlags::SEND_TRIM
        | TransmissionFlags::SEND_WRITE_ZEROES;
    if sel & 8 != 0 {
        flags |= TransmissionFlags::READ_ONLY;
    }
    let export = ExportInfo {
        name: "lun0".into(),
        description: "fuzz".into(),
        size: 1 << 30,
        flags,
        block_sizes: BlockSizes { min: 512, preferred: 4096, max: 1 << 20 },
    };
    let limits = HandshakeLimits { max_option_len: 4096, max_options: 16 };
    let Ok(mut hs) = ServerHandshake::new(export, limits) else {
        return;
    };
    let mut negotiated = None;
    let mut pieces = stream.chunks(chunk);
    for piece in pieces.by_ref() {
        let _ = hs.poll_transmit();
        match hs.receive(piece) {
            Ok(Progress::NeedInput) => {}
            Ok(Progress::Ready(n)) => {
                negotiated = Some(n);
                break;
            }
            Ok(Progress::Aborted) | Err(_) => return,
        }
    }
    let Some(n) = negotiated else { return };
    let mut tail = n.leftover.to_vec();
    for piece in pieces {
        tail.extend_from_slice(piece);
    }
    for header in tail.chunks(REQUEST_HEADER_LEN) {
        let Ok(req) = Request::decode(header) else { continue };
        assert_eq!(&req.encode()[..], header);
        let _ = req.payload_len(1 << 25);
        if let Ok(Command::Read { offset, length } | Command::Write { offset, length, .. }) = req.validate(&n.params) {
            assert!(offset.checked_add(u64::from(length)).is_some_and(|end| end <= n.params.size));
            assert!(length <= n.params.block_sizes.max);
            assert_eq!(offset % 512, 0);
        }
    }
});
