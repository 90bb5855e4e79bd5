//! Session and connection identifiers shaped like Windows'
//! `ISCSI_UNIQUE_SESSION_ID` / `ISCSI_UNIQUE_CONNECTION_ID`.
//!
//! These are management handles, not protocol fields: they are unrelated to
//! the ISID, TSIH or CID of RFC 7143 §4.4.3 / §11.12.5, and they stay stable
//! until the session is logged out.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::status::{IsdscCode, Status};

/// Which kind of identifier a parse error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Session,
    Connection,
}

impl IdKind {
    fn noun(self) -> &'static str {
        match self {
            Self::Session => "session id",
            Self::Connection => "connection id",
        }
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// Why a `hex-hex` identifier string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// Windows prints ids as `<AdapterUnique hex>-<AdapterSpecific hex>`.
    #[error("{kind} {text:?}: expected two hex numbers joined by '-', e.g. fffffa800d008430-4000013700000001")]
    MissingDash { kind: IdKind, text: String },
    #[error("{kind} {text:?}: the {half} half is empty")]
    EmptyHalf { kind: IdKind, text: String, half: &'static str },
    #[error("{kind} {text:?}: the {half} half is not hexadecimal")]
    NotHex { kind: IdKind, text: String, half: &'static str },
    #[error("{kind} {text:?}: the {half} half does not fit in 64 bits")]
    TooLong { kind: IdKind, text: String, half: &'static str },
}

impl IdParseError {
    pub fn kind(&self) -> IdKind {
        match self {
            Self::MissingDash { kind, .. }
            | Self::EmptyHalf { kind, .. }
            | Self::NotHex { kind, .. }
            | Self::TooLong { kind, .. } => *kind,
        }
    }
}

impl From<IdParseError> for Status {
    /// A malformed session id is `ISDSC_INVALID_SESSION_ID`, a malformed
    /// connection id `ISDSC_INVALID_CONNECTION_ID`, as Windows reports for ids
    /// it does not know.
    fn from(e: IdParseError) -> Self {
        let code = match e.kind() {
            IdKind::Session => IsdscCode::InvalidSessionId,
            IdKind::Connection => IsdscCode::InvalidConnectionId,
        };
        Status::new(code, e.to_string())
    }
}

fn parse_half(kind: IdKind, text: &str, half: &'static str, s: &str) -> Result<u64, IdParseError> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if digits.is_empty() {
        return Err(IdParseError::EmptyHalf { kind, text: text.to_string(), half });
    }
    // `from_str_radix` would also take a leading '+': check the digits first.
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdParseError::NotHex { kind, text: text.to_string(), half });
    }
    u64::from_str_radix(digits, 16).map_err(|_| IdParseError::TooLong { kind, text: text.to_string(), half })
}

fn parse_pair(kind: IdKind, text: &str) -> Result<(u64, u64), IdParseError> {
    let s = text.trim();
    let (hi, lo) = s.split_once('-').ok_or_else(|| IdParseError::MissingDash { kind, text: text.to_string() })?;
    Ok((parse_half(kind, text, "first", hi)?, parse_half(kind, text, "second", lo)?))
}

macro_rules! unique_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            /// Windows `AdapterUnique` (high 64 bits): identifies the initiator
            /// instance that owns the id.
            pub adapter_unique: u64,
            /// Windows `AdapterSpecific` (low 64 bits): the instance's own
            /// counter.
            pub adapter_specific: u64,
        }

        impl $name {
            pub const fn new(adapter_unique: u64, adapter_specific: u64) -> Self {
                Self { adapter_unique, adapter_specific }
            }

            /// The id as one 128-bit number, `adapter_unique` high.
            pub const fn as_u128(self) -> u128 {
                ((self.adapter_unique as u128) << 64) | self.adapter_specific as u128
            }

            pub const fn from_u128(v: u128) -> Self {
                Self { adapter_unique: (v >> 64) as u64, adapter_specific: v as u64 }
            }
        }

        impl fmt::Display for $name {
            /// `hex-hex`, lower case, no padding, as PowerShell and WMI print it.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:x}-{:x}", self.adapter_unique, self.adapter_specific)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            /// Accepts `hex-hex` in any case, each half optionally `0x`-prefixed
            /// (iscsicli splits on '-'); surrounding whitespace is ignored.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let (hi, lo) = parse_pair($kind, s)?;
                Ok(Self::new(hi, lo))
            }
        }
    };
}

unique_id!(
    /// Windows `ISCSI_UNIQUE_SESSION_ID`: names a session until logout.
    UniqueSessionId,
    IdKind::Session
);
unique_id!(
    /// Windows `ISCSI_UNIQUE_CONNECTION_ID`: names one connection of a session
    /// (what `AddIScsiConnection` returns and `RemoveIScsiConnection` takes).
    UniqueConnectionId,
    IdKind::Connection
);

/// First `adapter_specific` handed to a session. Windows' software initiator
/// shows session ids like `4000013700000001`; we keep the high `0x4000` tag so
/// session and connection ids are easy to tell apart, then count up from 1.
pub const FIRST_SESSION_SPECIFIC: u64 = 0x4000_0000_0000_0001;

/// First `adapter_specific` handed to a connection (Windows shows small
/// counters such as `fffffa8005313020-2`).
pub const FIRST_CONNECTION_SPECIFIC: u64 = 1;

/// The random `adapter_unique` of this process, drawn once.
fn process_adapter_unique() -> u64 {
    static UNIQUE: OnceLock<u64> = OnceLock::new();
    // Zero would read like "no id"; avoid it.
    *UNIQUE.get_or_init(|| rand::random::<u64>().max(1))
}

/// Hands out session and connection ids that are unique within the process:
/// every allocator shares one random per-process `adapter_unique`, and
/// `adapter_specific` only increases (sessions from
/// [`FIRST_SESSION_SPECIFIC`], connections from [`FIRST_CONNECTION_SPECIFIC`]).
/// Use [`IdAllocator::global`] unless a test needs its own counters.
#[derive(Debug)]
pub struct IdAllocator {
    adapter_unique: u64,
    next_session: AtomicU64,
    next_connection: AtomicU64,
}

impl IdAllocator {
    /// An allocator with the process-wide `adapter_unique`. Two allocators
    /// made this way repeat each other's counters, so share one
    /// ([`IdAllocator::global`]) for ids that must be unique in the process.
    pub fn new() -> Self {
        Self::with_adapter_unique(process_adapter_unique())
    }

    /// An allocator with a chosen `adapter_unique` (tests, or an instance that
    /// persists its identity).
    pub const fn with_adapter_unique(adapter_unique: u64) -> Self {
        Self {
            adapter_unique,
            next_session: AtomicU64::new(FIRST_SESSION_SPECIFIC),
            next_connection: AtomicU64::new(FIRST_CONNECTION_SPECIFIC),
        }
    }

    /// The one allocator of this process.
    pub fn global() -> &'static IdAllocator {
        static GLOBAL: OnceLock<IdAllocator> = OnceLock::new();
        GLOBAL.get_or_init(IdAllocator::new)
    }

    pub fn adapter_unique(&self) -> u64 {
        self.adapter_unique
    }

    pub fn next_session(&self) -> UniqueSessionId {
        UniqueSessionId::new(self.adapter_unique, self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    pub fn next_connection(&self) -> UniqueConnectionId {
        UniqueConnectionId::new(self.adapter_unique, self.next_connection.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn displays_like_windows() {
        let s = UniqueSessionId::new(0xffff_fa80_0d00_8430, 0x4000_0137_0000_0001);
        assert_eq!(s.to_string(), "fffffa800d008430-4000013700000001");
        let c = UniqueConnectionId::new(0xffff_fa80_0531_3020, 2);
        assert_eq!(c.to_string(), "fffffa8005313020-2");
        assert_eq!(UniqueConnectionId::new(0, 0).to_string(), "0-0");
    }

    #[test]
    fn parses_and_round_trips() {
        for text in ["fffffa800d008430-4000013700000001", "1-2", "0-0", "ffffffffffffffff-ffffffffffffffff"] {
            let s: UniqueSessionId = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
            let c: UniqueConnectionId = text.parse().unwrap();
            assert_eq!(c.to_string(), text);
        }
        let s: UniqueSessionId = "FFFFFA800D008430-4000013700000001".parse().unwrap();
        assert_eq!(s, UniqueSessionId::new(0xffff_fa80_0d00_8430, 0x4000_0137_0000_0001));
        let s: UniqueSessionId = "0xAB-0X0c".parse().unwrap();
        assert_eq!(s, UniqueSessionId::new(0xab, 0xc));
        let s: UniqueSessionId = " 00000001-0002 ".parse().unwrap();
        assert_eq!(s, UniqueSessionId::new(1, 2));
        let v = UniqueSessionId::new(7, 9);
        assert_eq!(UniqueSessionId::from_u128(v.as_u128()), v);
        assert_eq!(v.as_u128(), (7u128 << 64) | 9);
    }

    #[test]
    fn rejects_malformed_ids() {
        use IdParseError::*;
        let bad = |s: &str| s.parse::<UniqueSessionId>().unwrap_err();
        assert!(matches!(bad("12345"), MissingDash { .. }));
        assert!(matches!(bad(""), MissingDash { .. }));
        assert!(matches!(bad("-1"), EmptyHalf { half: "first", .. }));
        assert!(matches!(bad("1-"), EmptyHalf { half: "second", .. }));
        assert!(matches!(bad("0x-1"), EmptyHalf { half: "first", .. }));
        assert!(matches!(bad("1-2-3"), NotHex { half: "second", .. }));
        assert!(matches!(bad("+1-2"), NotHex { half: "first", .. }));
        assert!(matches!(bad("g-2"), NotHex { .. }));
        assert!(matches!(bad("1 -2"), NotHex { .. }));
        assert!(matches!(bad("1-10000000000000000"), TooLong { half: "second", .. }));
        let msg = bad("12345").to_string();
        assert!(msg.contains("session id") && msg.contains("hex"), "{msg}");
    }

    #[test]
    fn parse_errors_map_to_isdsc_codes() {
        let e = "x".parse::<UniqueSessionId>().unwrap_err();
        assert_eq!(Status::from(e).code, IsdscCode::InvalidSessionId);
        let e = "x".parse::<UniqueConnectionId>().unwrap_err();
        assert_eq!(Status::from(e).code, IsdscCode::InvalidConnectionId);
    }

    #[test]
    fn allocator_counts_up_from_documented_starts() {
        let a = IdAllocator::with_adapter_unique(0xabc);
        assert_eq!(a.next_session(), UniqueSessionId::new(0xabc, 0x4000_0000_0000_0001));
        assert_eq!(a.next_session(), UniqueSessionId::new(0xabc, 0x4000_0000_0000_0002));
        assert_eq!(a.next_connection(), UniqueConnectionId::new(0xabc, 1));
        assert_eq!(a.next_connection(), UniqueConnectionId::new(0xabc, 2));
    }

    #[test]
    fn process_allocators_share_one_adapter_unique() {
        assert_ne!(IdAllocator::global().adapter_unique(), 0);
        assert_eq!(IdAllocator::new().adapter_unique(), IdAllocator::global().adapter_unique());
    }

    #[test]
    fn allocator_is_unique_across_threads() {
        let a = std::sync::Arc::new(IdAllocator::with_adapter_unique(1));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || (0..500).map(|_| a.next_connection()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id));
            }
        }
        assert_eq!(all.len(), 2000);
    }
}
