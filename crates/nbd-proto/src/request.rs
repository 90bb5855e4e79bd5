//! Transmission requests (proto.md "Request message", "Request types") and their validation against
//! the negotiated export (proto.md "Block size constraints", "Error values").
//!
//! Decoding only frames: magic, flags, type, cookie, offset, length. Whether the server should act on
//! a request is [`Request::validate`]'s answer, a [`Command`] or a [`Rejection`] carrying the errno the
//! spec asks for; a connection-ending problem is a [`RequestError`].

use crate::errno::Errno;
use crate::export::TransmissionParams;
use crate::flags::{CommandFlags, TransmissionFlags};
use crate::magic::REQUEST_MAGIC;
use crate::wire::Reader;

/// Length of a (compact, non-extended) request header.
pub const REQUEST_HEADER_LEN: usize = 28;

/// Largest `NBD_CMD_WRITE` payload a server reads before deciding the client is attacking it. The spec
/// says lengths under 2^25 SHOULD NOT be considered denial of service, so this is exactly 2^25.
pub const MAX_WRITE_PAYLOAD: u32 = 1 << 25;

/// The request type (16 bits); unknown values are kept so they can be answered `NBD_EINVAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
    Unknown(u16),
}

impl CommandKind {
    pub const fn from_u16(v: u16) -> Self {
        match v {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Disc,
            3 => Self::Flush,
            4 => Self::Trim,
            5 => Self::Cache,
            6 => Self::WriteZeroes,
            7 => Self::BlockStatus,
            other => Self::Unknown(other),
        }
    }

    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::Disc => 2,
            Self::Flush => 3,
            Self::Trim => 4,
            Self::Cache => 5,
            Self::WriteZeroes => 6,
            Self::BlockStatus => 7,
            Self::Unknown(v) => v,
        }
    }

    /// The spec's name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Read => "NBD_CMD_READ",
            Self::Write => "NBD_CMD_WRITE",
            Self::Disc => "NBD_CMD_DISC",
            Self::Flush => "NBD_CMD_FLUSH",
            Self::Trim => "NBD_CMD_TRIM",
            Self::Cache => "NBD_CMD_CACHE",
            Self::WriteZeroes => "NBD_CMD_WRITE_ZEROES",
            Self::BlockStatus => "NBD_CMD_BLOCK_STATUS",
            Self::Unknown(_) => "unknown command",
        }
    }
}

/// One request header as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    pub flags: CommandFlags,
    pub kind: CommandKind,
    /// Opaque value echoed in the reply (the spec's "handle").
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// A request the connection cannot continue after (proto.md allows a hard disconnect on a violated
/// MUST, and on a write payload large enough to be a denial of service).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request magic {0:#010x} is not NBD_REQUEST_MAGIC")]
    BadMagic(u32),
    #[error("request header needs {REQUEST_HEADER_LEN} bytes, got {0}")]
    Truncated(usize),
    #[error("NBD_CMD_WRITE payload of {length} bytes is over the limit of {limit}")]
    PayloadTooLarge { length: u32, limit: u32 },
}

/// What the server does for a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Read {
        offset: u64,
        length: u32,
    },
    Write {
        offset: u64,
        length: u32,
        fua: bool,
    },
    /// `NBD_CMD_DISC`: finish what is in flight, then close; no reply.
    Disconnect,
    Flush,
    Trim {
        offset: u64,
        length: u32,
        fua: bool,
    },
    /// `may_trim` is true unless the client set `NBD_CMD_FLAG_NO_HOLE`.
    WriteZeroes {
        offset: u64,
        length: u32,
        fua: bool,
        may_trim: bool,
    },
}

/// Why a request is answered with an error instead of being carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub errno: Errno,
    /// For a structured error chunk's message and for logs.
    pub reason: &'static str,
}

fn reject<T>(errno: Errno, reason: &'static str) -> Result<T, Rejection> {
    Err(Rejection { errno, reason })
}

impl Request {
    /// Decodes the first [`REQUEST_HEADER_LEN`] bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Request, RequestError> {
        let mut r = Reader::new(buf);
        let (Some(magic), Some(flags), Some(kind), Some(cookie), Some(offset), Some(length)) =
            (r.u32(), r.u16(), r.u16(), r.u64(), r.u64(), r.u32())
        else {
            return Err(RequestError::Truncated(buf.len()));
        };
        if magic != REQUEST_MAGIC {
            return Err(RequestError::BadMagic(magic));
        }
        Ok(Request { flags: CommandFlags(flags), kind: CommandKind::from_u16(kind), cookie, offset, length })
    }

    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut out = [0u8; REQUEST_HEADER_LEN];
        let fields = REQUEST_MAGIC
            .to_be_bytes()
            .into_iter()
            .chain(self.flags.bits().to_be_bytes())
            .chain(self.kind.to_u16().to_be_bytes())
            .chain(self.cookie.to_be_bytes())
            .chain(self.offset.to_be_bytes())
            .chain(self.length.to_be_bytes());
        for (slot, byte) in out.iter_mut().zip(fields) {
            *slot = byte;
        }
        out
    }

    /// Bytes of payload that follow this header on the wire (only `NBD_CMD_WRITE` has any), refused
    /// when over `limit` so nothing is allocated or read for it. The payload must be read (or skipped)
    /// even when [`Self::validate`] rejects the request, to stay in step with the client.
    pub fn payload_len(&self, limit: u32) -> Result<u32, RequestError> {
        if self.kind != CommandKind::Write {
            return Ok(0);
        }
        if self.length > limit {
            return Err(RequestError::PayloadTooLarge { length: self.length, limit });
        }
        Ok(self.length)
    }

    /// Checks the request against the export, in the order: command known, flags allowed, feature
    /// advertised, export writable, range inside the export, alignment, maximum block size.
    pub fn validate(&self, params: &TransmissionParams) -> Result<Command, Rejection> {
        let tf = params.flags;
        let fua = self.flags.contains(CommandFlags::FUA);
        let mut allowed = CommandFlags::EMPTY.with(CommandFlags::FUA, tf.contains(TransmissionFlags::SEND_FUA));
        match self.kind {
            // No reply exists for DISC, so there is nothing to reject.
            CommandKind::Disc => return Ok(Command::Disconnect),
            CommandKind::Read => allowed = allowed.with(CommandFlags::DF, tf.contains(TransmissionFlags::SEND_DF)),
            CommandKind::WriteZeroes => {
                allowed = allowed
                    .union(CommandFlags::NO_HOLE)
                    .with(CommandFlags::FAST_ZERO, tf.contains(TransmissionFlags::SEND_FAST_ZERO))
            }
            CommandKind::Write | CommandKind::Flush | CommandKind::Trim => {}
            // proto.md "Error values": EINVAL for an unknown command; CACHE and BLOCK_STATUS are never
            // advertised (no SEND_CACHE, no metadata contexts).
            CommandKind::Cache | CommandKind::BlockStatus | CommandKind::Unknown(_) => {
                return reject(Errno::Einval, "command not supported by this server");
            }
        }
        if !allowed.contains(self.flags) {
            return reject(Errno::Einval, "command flag not valid for this command or not advertised");
        }
        let writes = matches!(self.kind, CommandKind::Write | CommandKind::Trim | CommandKind::WriteZeroes);
        let advertised = match self.kind {
            CommandKind::Flush => tf.contains(TransmissionFlags::SEND_FLUSH),
            CommandKind::Trim => tf.contains(TransmissionFlags::SEND_TRIM),
            CommandKind::WriteZeroes => tf.contains(TransmissionFlags::SEND_WRITE_ZEROES),
            _ => true,
        };
        if writes && tf.contains(TransmissionFlags::READ_ONLY) {
            return reject(Errno::Eperm, "the export is read-only");
        }
        if !advertised {
            return reject(Errno::Einval, "command not advertised in the transmission flags");
        }
        if self.kind == CommandKind::Flush {
            // proto.md `NBD_CMD_FLUSH`: offset and length are reserved and MUST be zero.
            if self.offset != 0 || self.length != 0 {
                return reject(Errno::Einval, "NBD_CMD_FLUSH with nonzero offset or length");
            }
            return Ok(Command::Flush);
        }
        let Some(end) = self.offset.checked_add(u64::from(self.length)) else {
            return reject(Errno::Einval, "offset + length overflows");
        };
        if end > params.size {
            // proto.md "Error values": ENOSPC for writes past the end, EINVAL for reads and trims.
            return if writes && self.kind != CommandKind::Trim {
                reject(Errno::Enospc, "write past the end of the export")
            } else {
                reject(Errno::Einval, "request past the end of the export")
            };
        }
        let sizes = params.block_sizes;
        let min = u64::from(sizes.min.max(1));
        if !self.offset.is_multiple_of(min) || !u64::from(self.length).is_multiple_of(min) {
            return reject(Errno::Einval, "request not aligned to the minimum block size");
        }
        let fast_zero = self.flags.contains(CommandFlags::FAST_ZERO);
        // proto.md "Block size constraints": READ, WRITE and WRITE_ZEROES (without FAST_ZERO) are
        // bounded by the maximum block size; TRIM is not.
        let bounded = matches!(self.kind, CommandKind::Read | CommandKind::Write)
            || (self.kind == CommandKind::WriteZeroes && !fast_zero);
        if bounded && self.length > sizes.max {
            return reject(Errno::Einval, "request longer than the maximum block size");
        }
        let (offset, length) = (self.offset, self.length);
        match self.kind {
            CommandKind::Read => Ok(Command::Read { offset, length }),
            CommandKind::Write => Ok(Command::Write { offset, length, fua }),
            CommandKind::Trim => Ok(Command::Trim { offset, length, fua }),
            CommandKind::WriteZeroes if fast_zero => {
                // We cannot promise a zeroing faster than writing; the spec allows failing every fast
                // request quickly with ENOTSUP, leaving the export untouched.
                reject(Errno::Enotsup, "fast zeroing is not available")
            }
            CommandKind::WriteZeroes => {
                Ok(Command::WriteZeroes { offset, length, fua, may_trim: !self.flags.contains(CommandFlags::NO_HOLE) })
            }
            _ => reject(Errno::Einval, "command not supported by this server"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::BlockSizes;
    use proptest::prelude::*;

    fn params(flags: TransmissionFlags) -> TransmissionParams {
        TransmissionParams {
            size: 1 << 20,
            flags: flags | TransmissionFlags::HAS_FLAGS,
            block_sizes: BlockSizes { min: 512, preferred: 4096, max: 65536 },
            structured_replies: false,
        }
    }

    fn all_features() -> TransmissionParams {
        params(
            TransmissionFlags::SEND_FLUSH
                | TransmissionFlags::SEND_FUA
                | TransmissionFlags::SEND_TRIM
                | TransmissionFlags::SEND_WRITE_ZEROES,
        )
    }

    fn req(kind: CommandKind, flags: CommandFlags, offset: u64, length: u32) -> Request {
        Request { flags, kind, cookie: 7, offset, length }
    }

    fn errno(r: Result<Command, Rejection>) -> Errno {
        r.unwrap_err().errno
    }

    #[test]
    fn decode_checks_magic_and_length() {
        let r = req(CommandKind::Write, CommandFlags::FUA, 4096, 512);
        let bytes = r.encode();
        assert_eq!(&bytes[..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(Request::decode(&bytes), Ok(r));
        assert_eq!(Request::decode(&bytes[..27]), Err(RequestError::Truncated(27)));
        let mut bad = bytes;
        bad[0] = 0;
        assert_eq!(Request::decode(&bad), Err(RequestError::BadMagic(0x0060_9513)));
    }

    #[test]
    fn unknown_kinds_are_kept() {
        let r = req(CommandKind::Unknown(42), CommandFlags::EMPTY, 0, 0);
        assert_eq!(Request::decode(&r.encode()).unwrap().kind, CommandKind::Unknown(42));
        assert_eq!(errno(r.validate(&all_features())), Errno::Einval);
        assert_eq!(
            errno(req(CommandKind::Cache, CommandFlags::EMPTY, 0, 512).validate(&all_features())),
            Errno::Einval
        );
        assert_eq!(
            errno(req(CommandKind::BlockStatus, CommandFlags::EMPTY, 0, 512).validate(&all_features())),
            Errno::Einval
        );
    }

    #[test]
    fn payload_only_for_writes_and_bounded() {
        let w = req(CommandKind::Write, CommandFlags::EMPTY, 0, 4096);
        assert_eq!(w.payload_len(MAX_WRITE_PAYLOAD), Ok(4096));
        assert_eq!(req(CommandKind::Read, CommandFlags::EMPTY, 0, u32::MAX).payload_len(16), Ok(0));
        let big = req(CommandKind::Write, CommandFlags::EMPTY, 0, MAX_WRITE_PAYLOAD + 1);
        assert_eq!(
            big.payload_len(MAX_WRITE_PAYLOAD),
            Err(RequestError::PayloadTooLarge { length: MAX_WRITE_PAYLOAD + 1, limit: MAX_WRITE_PAYLOAD })
        );
    }

    #[test]
    fn valid_commands() {
        let p = all_features();
        assert_eq!(
            req(CommandKind::Read, CommandFlags::EMPTY, 512, 1024).validate(&p),
            Ok(Command::Read { offset: 512, length: 1024 })
        );
        assert_eq!(
            req(CommandKind::Write, CommandFlags::FUA, 0, 512).validate(&p),
            Ok(Command::Write { offset: 0, length: 512, fua: true })
        );
        assert_eq!(req(CommandKind::Flush, CommandFlags::EMPTY, 0, 0).validate(&p), Ok(Command::Flush));
        assert_eq!(
            req(CommandKind::Trim, CommandFlags::EMPTY, 0, 1 << 20).validate(&p),
            Ok(Command::Trim { offset: 0, length: 1 << 20, fua: false }),
            "trim is not bounded by the maximum block size"
        );
        assert_eq!(
            req(CommandKind::WriteZeroes, CommandFlags::NO_HOLE, 0, 512).validate(&p),
            Ok(Command::WriteZeroes { offset: 0, length: 512, fua: false, may_trim: false })
        );
        assert_eq!(
            req(CommandKind::WriteZeroes, CommandFlags::EMPTY, 0, 512).validate(&p),
            Ok(Command::WriteZeroes { offset: 0, length: 512, fua: false, may_trim: true })
        );
        assert_eq!(req(CommandKind::Disc, CommandFlags(0xffff), 9, 9).validate(&p), Ok(Command::Disconnect));
    }

    #[test]
    fn range_overflow_and_end() {
        let p = all_features();
        assert_eq!(
            errno(req(CommandKind::Read, CommandFlags::EMPTY, u64::MAX - 511, 1024).validate(&p)),
            Errno::Einval
        );
        assert_eq!(errno(req(CommandKind::Read, CommandFlags::EMPTY, 1 << 20, 512).validate(&p)), Errno::Einval);
        assert_eq!(
            errno(req(CommandKind::Write, CommandFlags::EMPTY, (1 << 20) - 512, 1024).validate(&p)),
            Errno::Enospc
        );
        assert_eq!(errno(req(CommandKind::WriteZeroes, CommandFlags::EMPTY, 1 << 20, 512).validate(&p)), Errno::Enospc);
        assert_eq!(errno(req(CommandKind::Trim, CommandFlags::EMPTY, 1 << 20, 512).validate(&p)), Errno::Einval);
        // The last block is fine.
        assert!(req(CommandKind::Write, CommandFlags::EMPTY, (1 << 20) - 512, 512).validate(&p).is_ok());
    }

    #[test]
    fn alignment_and_max_block_size() {
        let p = all_features();
        assert_eq!(errno(req(CommandKind::Read, CommandFlags::EMPTY, 100, 512).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Write, CommandFlags::EMPTY, 0, 100).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Read, CommandFlags::EMPTY, 0, 65536 + 512).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Write, CommandFlags::EMPTY, 0, 65536 + 512).validate(&p)), Errno::Einval);
        assert_eq!(
            errno(req(CommandKind::WriteZeroes, CommandFlags::EMPTY, 0, 65536 + 512).validate(&p)),
            Errno::Einval
        );
        assert!(req(CommandKind::Read, CommandFlags::EMPTY, 0, 65536).validate(&p).is_ok());
    }

    #[test]
    fn read_only_export_refuses_writes_with_eperm() {
        let p =
            params(TransmissionFlags::READ_ONLY | TransmissionFlags::SEND_TRIM | TransmissionFlags::SEND_WRITE_ZEROES);
        for kind in [CommandKind::Write, CommandKind::Trim, CommandKind::WriteZeroes] {
            assert_eq!(errno(req(kind, CommandFlags::EMPTY, 0, 512).validate(&p)), Errno::Eperm, "{kind:?}");
        }
        assert!(req(CommandKind::Read, CommandFlags::EMPTY, 0, 512).validate(&p).is_ok());
    }

    #[test]
    fn unadvertised_features_and_flags_are_einval() {
        let p = params(TransmissionFlags::EMPTY);
        assert_eq!(errno(req(CommandKind::Flush, CommandFlags::EMPTY, 0, 0).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Trim, CommandFlags::EMPTY, 0, 512).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::WriteZeroes, CommandFlags::EMPTY, 0, 512).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Write, CommandFlags::FUA, 0, 512).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Read, CommandFlags::DF, 0, 512).validate(&p)), Errno::Einval);
        let p = all_features();
        assert_eq!(errno(req(CommandKind::Write, CommandFlags::NO_HOLE, 0, 512).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Read, CommandFlags(1 << 9), 0, 512).validate(&p)), Errno::Einval);
        assert_eq!(errno(req(CommandKind::Flush, CommandFlags::EMPTY, 0, 512).validate(&p)), Errno::Einval);
        assert_eq!(
            errno(req(CommandKind::WriteZeroes, CommandFlags::FAST_ZERO, 0, 512).validate(&p)),
            Errno::Einval,
            "FAST_ZERO without SEND_FAST_ZERO"
        );
    }

    #[test]
    fn df_with_structured_replies_and_fast_zero_enotsup() {
        let mut p = all_features();
        p.flags |= TransmissionFlags::SEND_DF | TransmissionFlags::SEND_FAST_ZERO;
        p.structured_replies = true;
        assert!(req(CommandKind::Read, CommandFlags::DF, 0, 512).validate(&p).is_ok());
        assert_eq!(
            errno(req(CommandKind::WriteZeroes, CommandFlags::FAST_ZERO, 0, 1 << 20).validate(&p)),
            Errno::Enotsup
        );
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(flags in any::<u16>(), kind in any::<u16>(), cookie in any::<u64>(),
                                    offset in any::<u64>(), length in any::<u32>()) {
            let r = Request { flags: CommandFlags(flags), kind: CommandKind::from_u16(kind), cookie, offset, length };
            prop_assert_eq!(r.kind.to_u16(), kind);
            prop_assert_eq!(Request::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn decode_and_validate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), size in any::<u64>()) {
            if let Ok(r) = Request::decode(&bytes) {
                let mut p = all_features();
                p.size = size;
                if let Ok(Command::Read { offset, length } | Command::Write { offset, length, .. }) = r.validate(&p) {
                    prop_assert!(offset.checked_add(u64::from(length)).is_some_and(|end| end <= size));
                    prop_assert!(length <= p.block_sizes.max);
                }
            }
        }
    }
}
