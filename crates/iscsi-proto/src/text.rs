//! Text keys (RFC 7143 §6.1): `key=value` pairs, each ended by a NUL, in
//! the data segment of Login and Text PDUs, possibly spread over several
//! PDUs with the C bit.

/// An ordered list of key/value pairs as they appear on the wire.
pub type TextPairs = Vec<(String, String)>;

/// Errors in text data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text pair without '=': {0:?}")]
    MissingEquals(String),
    #[error("key {0:?} is not a valid key name")]
    InvalidKey(String),
    #[error("value of {key} is {len} bytes, longer than the limit of {limit}")]
    ValueTooLong { key: String, len: usize, limit: usize },
    #[error("text is not UTF-8")]
    NotUtf8,
    #[error("text of {len} bytes exceeds the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("more than {0} keys")]
    TooManyKeys(usize),
}

/// Parses a complete text (all continuation PDUs joined).
pub fn parse(data: &[u8]) -> Result<TextPairs, TextError> {
    let _ = data;
    todo!()
}

/// Appends `key=value\0` for each pair.
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)], out: &mut Vec<u8>) {
    let _ = (pairs, out);
    todo!()
}

/// Joins the data segments of a multi-PDU text exchange (C bit), bounded.
#[derive(Debug, Default)]
pub struct TextAccumulator {
    buf: Vec<u8>,
}

impl TextAccumulator {
    /// Upper bound on one joined text (RFC 7143 leaves it to the
    /// implementation; SendTargets of many targets needs room).
    pub const LIMIT: usize = 1 << 20;

    /// Adds one PDU's data; returns the parsed pairs once a PDU without the
    /// C bit arrives.
    pub fn push(&mut self, data: &[u8], continued: bool) -> Result<Option<TextPairs>, TextError> {
        let _ = (data, continued, &self.buf);
        todo!()
    }
}
