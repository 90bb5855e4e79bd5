//! Feeds `text::parse` and the `TextAccumulator` with arbitrary text split
//! over several PDUs (RFC 7143 §6.1, C bit of §11.10 / §11.12).
//!
//! Input layout: byte 0 = number of segment cuts (mod 8); the rest is the
//! text; the following bytes pick the cut points. Checks beyond "no panic":
//! * the accumulator gives the same answer as `parse` on the joined bytes,
//!   however the text is cut, and is idle afterwards;
//! * parsed pairs re-encode and parse back to the same pairs;
//! * the limits hold (key length, value length, number of pairs).
#![no_main]

use iscsi_proto::text::{self, MAX_KEY_LEN, MAX_PAIRS, MAX_VALUE_LEN, TextAccumulator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(sel % 8);
    let (cut_bytes, text_bytes) = rest.split_at(cuts.min(rest.len()));

    if text_bytes.len() > TextAccumulator::LIMIT {
        return; // both refuse it, with lengths counted at different points
    }
    let whole = text::parse(text_bytes);
    if let Ok(pairs) = &whole {
        assert!(pairs.len() <= MAX_PAIRS);
        for (k, v) in pairs {
            assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN && !k.contains('='));
            assert!(v.len() <= MAX_VALUE_LEN && !v.contains('\0'));
        }
        let mut encoded = Vec::new();
        text::encode(pairs, &mut encoded);
        assert_eq!(text::parse(&encoded).as_ref(), Ok(pairs), "round trip");
    }

    // Cut the text at the chosen offsets, in increasing order.
    let mut points: Vec<usize> = cut_bytes.iter().map(|&b| usize::from(b) * text_bytes.len() / 256).collect();
    points.sort_unstable();
    points.push(text_bytes.len());
    let mut acc = TextAccumulator::default();
    let mut start = 0;
    let mut answer = None;
    for (i, &p) in points.iter().enumerate() {
        let last = i + 1 == points.len();
        let segment = text_bytes.get(start..p).unwrap_or_default();
        start = p;
        match acc.push(segment, !last) {
            Ok(Some(pairs)) => {
                assert!(last, "pairs only after the final segment");
                answer = Some(Ok(pairs));
            }
            Ok(None) => assert!(!last, "the final segment yields an answer"),
            Err(e) => {
                answer = Some(Err(e));
                break;
            }
        }
    }
    assert!(!acc.is_pending(), "accumulator idle after the final segment");
    assert_eq!(answer, Some(whole), "accumulator agrees with parse");
});
