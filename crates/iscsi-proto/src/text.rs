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

/// RFC 7143 §6.1: a key name is at most 63 bytes.
pub const MAX_KEY_LEN: usize = 63;

/// RFC 7143 §6.1 allows values up to 255 bytes, and up to 8192 for a few
/// keys (e.g. the SendTargets TargetAddress list and CHAP binary values).
/// One bound for all keys keeps the parser context-free.
pub const MAX_VALUE_LEN: usize = 8192;

/// Bound on the number of pairs in one joined text, so a hostile peer
/// cannot make us build an unbounded list of tiny pairs.
pub const MAX_PAIRS: usize = 1024;

/// How much of an offending pair is echoed in an error message.
const ERROR_ECHO: usize = 64;

/// RFC 7143 §6.1: key names are made of letters, digits, `.`, `-`, `+`,
/// `@`, `_` and `:` (standard keys, `X-` vendor keys and `X#` IANA keys all
/// fit).
fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_' | b':'))
}

/// A prefix of `s` for error messages, cut on a character boundary.
fn echo(s: &str) -> String {
    let mut end = s.len().min(ERROR_ECHO);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// Parses a complete text (all continuation PDUs joined).
///
/// RFC 7143 §6.1: every pair ends with a NUL; the last one may lack it only
/// because the data ends there. NULs after the last pair (padding some
/// targets leave in the data segment) are ignored; an empty pair between
/// two pairs is an error.
pub fn parse(data: &[u8]) -> Result<TextPairs, TextError> {
    if data.len() > TextAccumulator::LIMIT {
        return Err(TextError::TooLong { len: data.len(), limit: TextAccumulator::LIMIT });
    }
    // Trailing NULs are either the terminator of the last pair or padding.
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let body = data.get(..end).unwrap_or_default();
    let mut pairs = TextPairs::new();
    if body.is_empty() {
        return Ok(pairs);
    }
    for raw in body.split(|&b| b == 0) {
        if pairs.len() == MAX_PAIRS {
            return Err(TextError::TooManyKeys(MAX_PAIRS));
        }
        let pair = std::str::from_utf8(raw).map_err(|_| TextError::NotUtf8)?;
        let (key, value) = pair.split_once('=').ok_or_else(|| TextError::MissingEquals(echo(pair)))?;
        if !is_valid_key(key) {
            return Err(TextError::InvalidKey(echo(key)));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(TextError::ValueTooLong { key: key.to_owned(), len: value.len(), limit: MAX_VALUE_LEN });
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Appends `key=value\0` for each pair.
///
/// The caller supplies well-formed keys and values (they come from this
/// crate's negotiators, not from the network).
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)], out: &mut Vec<u8>) {
    for (key, value) in pairs {
        out.extend_from_slice(key.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_ref().as_bytes());
        out.push(0);
    }
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
    ///
    /// RFC 7143 §11.10.2 / §11.12.2: with the C bit set, the text (even a
    /// single pair) continues in the next PDU, so the raw bytes are joined
    /// before parsing. On any error the partial text is dropped and the
    /// accumulator starts afresh.
    pub fn push(&mut self, data: &[u8], continued: bool) -> Result<Option<TextPairs>, TextError> {
        let len = self.buf.len().saturating_add(data.len());
        if len > Self::LIMIT {
            self.buf = Vec::new();
            return Err(TextError::TooLong { len, limit: Self::LIMIT });
        }
        self.buf.extend_from_slice(data);
        if continued {
            return Ok(None);
        }
        let joined = std::mem::take(&mut self.buf);
        parse(&joined).map(Some)
    }

    /// Whether part of a text is waiting for its continuation.
    pub fn is_pending(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> TextPairs {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_terminated_pairs() {
        let got = parse(b"HeaderDigest=CRC32C,None\0MaxConnections=8\0").unwrap();
        assert_eq!(got, pairs(&[("HeaderDigest", "CRC32C,None"), ("MaxConnections", "8")]));
    }

    #[test]
    fn last_pair_may_lack_nul() {
        assert_eq!(parse(b"A=1\0B=2").unwrap(), pairs(&[("A", "1"), ("B", "2")]));
    }

    #[test]
    fn trailing_padding_nuls_ignored() {
        assert_eq!(parse(b"A=1\0\0\0\0").unwrap(), pairs(&[("A", "1")]));
        assert_eq!(parse(b"").unwrap(), TextPairs::new());
        assert_eq!(parse(b"\0\0").unwrap(), TextPairs::new());
    }

    #[test]
    fn empty_pair_in_the_middle_refused() {
        assert_eq!(parse(b"A=1\0\0B=2\0"), Err(TextError::MissingEquals(String::new())));
    }

    #[test]
    fn empty_value_and_equals_in_value() {
        assert_eq!(parse(b"A=\0B=x=y\0").unwrap(), pairs(&[("A", ""), ("B", "x=y")]));
    }

    #[test]
    fn missing_equals_refused() {
        assert_eq!(parse(b"A=1\0Bogus\0"), Err(TextError::MissingEquals("Bogus".into())));
    }

    #[test]
    fn key_rules() {
        assert!(parse(b"X-com.example:vendor_key+1@a=1\0").is_ok());
        assert_eq!(parse(b"=1\0"), Err(TextError::InvalidKey(String::new())));
        assert_eq!(parse(b"Bad Key=1\0"), Err(TextError::InvalidKey("Bad Key".into())));
        assert_eq!(parse(b"K\xc3\xa9=1\0"), Err(TextError::InvalidKey("K\u{e9}".into())));
        let long = format!("{}=1", "K".repeat(64));
        assert!(matches!(parse(long.as_bytes()), Err(TextError::InvalidKey(_))));
        let ok = format!("{}=1", "K".repeat(63));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn value_length_limit() {
        let ok = format!("TargetAddress={}", "a".repeat(MAX_VALUE_LEN));
        assert!(parse(ok.as_bytes()).is_ok());
        let long = format!("TargetAddress={}", "a".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(
            parse(long.as_bytes()),
            Err(TextError::ValueTooLong { key: "TargetAddress".into(), len: MAX_VALUE_LEN + 1, limit: MAX_VALUE_LEN })
        );
    }

    #[test]
    fn utf8_required() {
        assert_eq!(parse(b"TargetAlias=\xff\xfe\0"), Err(TextError::NotUtf8));
        assert_eq!(parse("TargetAlias=disque \u{e9}t\u{e9}\0".as_bytes()).unwrap()[0].1, "disque \u{e9}t\u{e9}");
    }

    #[test]
    fn pair_count_limit() {
        let mut ok = Vec::new();
        for _ in 0..MAX_PAIRS {
            ok.extend_from_slice(b"A=1\0");
        }
        assert_eq!(parse(&ok).unwrap().len(), MAX_PAIRS);
        ok.extend_from_slice(b"A=1\0");
        assert_eq!(parse(&ok), Err(TextError::TooManyKeys(MAX_PAIRS)));
    }

    #[test]
    fn whole_text_limit() {
        let big = vec![b'a'; TextAccumulator::LIMIT + 1];
        assert!(matches!(parse(&big), Err(TextError::TooLong { .. })));
    }

    #[test]
    fn encode_writes_nul_terminated_pairs() {
        let mut out = Vec::new();
        encode(&[("A", "1"), ("B", "x")], &mut out);
        assert_eq!(out, b"A=1\0B=x\0");
        let mut out = Vec::new();
        encode(&pairs(&[("C", "")]), &mut out);
        assert_eq!(out, b"C=\0");
    }

    #[test]
    fn accumulator_single_pdu() {
        let mut acc = TextAccumulator::default();
        assert_eq!(acc.push(b"A=1\0", false).unwrap(), Some(pairs(&[("A", "1")])));
        assert!(!acc.is_pending());
    }

    #[test]
    fn accumulator_joins_pair_split_across_pdus() {
        let mut acc = TextAccumulator::default();
        assert_eq!(acc.push(b"TargetName=iqn.2024-01.lab", true).unwrap(), None);
        assert!(acc.is_pending());
        assert_eq!(acc.push(b".tgt:ram1\0TargetAdd", true).unwrap(), None);
        // Split exactly between a key's end and the '='.
        assert_eq!(acc.push(b"ress", true).unwrap(), None);
        let got = acc.push(b"=127.0.0.1:3260,1\0", false).unwrap().unwrap();
        assert_eq!(got, pairs(&[("TargetName", "iqn.2024-01.lab.tgt:ram1"), ("TargetAddress", "127.0.0.1:3260,1")]));
        assert!(!acc.is_pending());
        // Ready for the next exchange.
        assert_eq!(acc.push(b"B=2\0", false).unwrap(), Some(pairs(&[("B", "2")])));
    }

    #[test]
    fn accumulator_split_on_the_nul() {
        let mut acc = TextAccumulator::default();
        assert_eq!(acc.push(b"A=1", true).unwrap(), None);
        assert_eq!(acc.push(b"\0B=2\0", false).unwrap(), Some(pairs(&[("A", "1"), ("B", "2")])));
    }

    #[test]
    fn accumulator_refuses_more_than_limit_and_resets() {
        let mut acc = TextAccumulator::default();
        let chunk = vec![b'a'; TextAccumulator::LIMIT / 2];
        acc.push(b"K=", true).unwrap();
        acc.push(&chunk, true).unwrap();
        let err = acc.push(&chunk, true).unwrap_err();
        assert_eq!(err, TextError::TooLong { len: TextAccumulator::LIMIT + 2, limit: TextAccumulator::LIMIT });
        assert!(!acc.is_pending());
        assert_eq!(acc.push(b"A=1\0", false).unwrap(), Some(pairs(&[("A", "1")])));
    }

    #[test]
    fn accumulator_reset_after_parse_error() {
        let mut acc = TextAccumulator::default();
        assert!(acc.push(b"nope\0", false).is_err());
        assert!(!acc.is_pending());
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&data);
        }

        #[test]
        fn parse_never_panics_on_textlike(data in "[A-Za-z=\\x00\u{e9}]{0,256}") {
            let _ = parse(data.as_bytes());
        }

        #[test]
        fn encode_parse_round_trip(
            list in proptest::collection::vec(
                ("[A-Za-z0-9.+@_:-]{1,63}", "[^\\x00]{0,64}"),
                0..32,
            )
        ) {
            let mut out = Vec::new();
            encode(&list, &mut out);
            prop_assert_eq!(parse(&out).unwrap(), list.clone());
            // Split anywhere across two PDUs, the accumulator gives the same.
            let cut = out.len() / 2;
            let mut acc = TextAccumulator::default();
            prop_assert_eq!(acc.push(&out[..cut], true).unwrap(), None);
            prop_assert_eq!(acc.push(&out[cut..], false).unwrap(), Some(list));
        }
    }
}
