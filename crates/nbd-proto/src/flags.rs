//! Flag fields (proto.md "Values" / "Flag fields"). Each is a newtype over its wire width so an unknown
//! bit survives decoding and can be refused by the rule that concerns it.

use std::ops::{BitAnd, BitOr, BitOrAssign};

macro_rules! flag_set {
    ($(#[$doc:meta])* $name:ident: $ty:ty { $($(#[$fdoc:meta])* $flag:ident = $bit:expr;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $ty);

        impl $name {
            $($(#[$fdoc])* pub const $flag: Self = Self(1 << $bit);)*
            /// Every bit this crate knows a meaning for.
            pub const KNOWN: Self = Self(0 $(| (1 << $bit))*);
            pub const EMPTY: Self = Self(0);

            pub const fn bits(self) -> $ty {
                self.0
            }

            /// All bits of `other` are set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            #[must_use]
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            #[must_use]
            pub const fn without(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }

            /// `self` with `other` set when `on`, cleared otherwise.
            #[must_use]
            pub const fn with(self, other: Self, on: bool) -> Self {
                if on { self.union(other) } else { self.without(other) }
            }
        }

        impl BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                self.union(rhs)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                *self = self.union(rhs);
            }
        }

        impl BitAnd for $name {
            type Output = Self;
            fn bitand(self, rhs: Self) -> Self {
                Self(self.0 & rhs.0)
            }
        }
    };
}

flag_set! {
    /// Handshake flags, 16 bits, sent by the server after `IHAVEOPT` (proto.md "Handshake flags").
    HandshakeFlags: u16 {
        /// The server speaks fixed newstyle negotiation.
        FIXED_NEWSTYLE = 0;
        /// The server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
        NO_ZEROES = 1;
    }
}

flag_set! {
    /// Client flags, 32 bits, the client's answer to the handshake flags (proto.md "Client flags").
    ClientFlags: u32 {
        /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
        FIXED_NEWSTYLE = 0;
        /// `NBD_FLAG_C_NO_ZEROES`.
        NO_ZEROES = 1;
    }
}

flag_set! {
    /// Transmission flags, 16 bits, describing the export (proto.md "Transmission flags").
    TransmissionFlags: u16 {
        /// MUST always be set.
        HAS_FLAGS = 0;
        /// Writes, trims and write-zeroes fail with `NBD_EPERM`.
        READ_ONLY = 1;
        /// `NBD_CMD_FLUSH` is supported.
        SEND_FLUSH = 2;
        /// `NBD_CMD_FLAG_FUA` is supported.
        SEND_FUA = 3;
        /// The medium is rotational (a scheduling hint).
        ROTATIONAL = 4;
        /// `NBD_CMD_TRIM` is supported.
        SEND_TRIM = 5;
        /// `NBD_CMD_WRITE_ZEROES` and `NBD_CMD_FLAG_NO_HOLE` are supported.
        SEND_WRITE_ZEROES = 6;
        /// `NBD_CMD_FLAG_DF` is supported; only with structured replies.
        SEND_DF = 7;
        /// Flush and FUA are visible across connections: clients may use several.
        CAN_MULTI_CONN = 8;
        /// `NBD_CMD_RESIZE` (experimental extension).
        SEND_RESIZE = 9;
        /// `NBD_CMD_CACHE` is understood.
        SEND_CACHE = 10;
        /// `NBD_CMD_FLAG_FAST_ZERO` is supported.
        SEND_FAST_ZERO = 11;
    }
}

flag_set! {
    /// Command flags, 16 bits, in each request (proto.md "Command flags").
    CommandFlags: u16 {
        /// Force unit access: reply only once the data is on stable storage.
        FUA = 0;
        /// `NBD_CMD_WRITE_ZEROES` must not punch a hole.
        NO_HOLE = 1;
        /// `NBD_CMD_READ` must be answered with at most one content chunk.
        DF = 2;
        /// `NBD_CMD_BLOCK_STATUS` wants one extent only.
        REQ_ONE = 3;
        /// `NBD_CMD_WRITE_ZEROES` must fail with `NBD_ENOTSUP` unless it is fast.
        FAST_ZERO = 4;
    }
}

flag_set! {
    /// Structured reply chunk flags, 16 bits (proto.md "Structured reply flags").
    ReplyFlags: u16 {
        /// The last chunk of the reply to this request.
        DONE = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_the_specs() {
        assert_eq!(HandshakeFlags::KNOWN.bits(), 0b11);
        assert_eq!(ClientFlags::KNOWN.bits(), 0b11);
        assert_eq!(TransmissionFlags::SEND_WRITE_ZEROES.bits(), 0x40);
        assert_eq!(TransmissionFlags::CAN_MULTI_CONN.bits(), 0x100);
        assert_eq!(TransmissionFlags::SEND_FAST_ZERO.bits(), 0x800);
        assert_eq!(CommandFlags::FAST_ZERO.bits(), 0x10);
        assert_eq!(ReplyFlags::DONE.bits(), 1);
    }

    #[test]
    fn set_operations() {
        let f = TransmissionFlags::HAS_FLAGS | TransmissionFlags::READ_ONLY;
        assert!(f.contains(TransmissionFlags::READ_ONLY));
        assert!(!f.contains(TransmissionFlags::READ_ONLY | TransmissionFlags::SEND_TRIM));
        assert!(f.intersects(TransmissionFlags::READ_ONLY | TransmissionFlags::SEND_TRIM));
        assert_eq!(f.without(TransmissionFlags::READ_ONLY), TransmissionFlags::HAS_FLAGS);
        assert_eq!(f.with(TransmissionFlags::SEND_DF, true).bits(), 0x83);
        assert_eq!(f.with(TransmissionFlags::HAS_FLAGS, false), TransmissionFlags::READ_ONLY);
    }
}
