//! LUN encoding in the 8-byte iSCSI LUN field (SAM-5 §4.7).
//!
//! RFC 7143 §11.2.1.5 carries the LUN in the format of SAM: the first level
//! of the 8-byte structure holds the address, the other three levels are
//! zero for a single-level LUN. Byte 0 bits 7..6 choose the address method:
//! 00b peripheral device addressing (`00 LL`, LUN 0..=255) and 01b flat space
//! addressing (`0x40 | LUN >> 8, LUN & 0xff`, LUN 0..=16383).

/// Errors from encoding a LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LunError {
    /// SAM-5 §4.7.7: flat space addressing carries 14 bits; larger LUNs
    /// need extended addressing, which this initiator does not send.
    #[error("LUN {0} is above 16383, the largest LUN flat space addressing can carry")]
    TooLarge(u64),
}

/// Largest LUN with peripheral device addressing (SAM-5 §4.7.6).
pub const MAX_PERIPHERAL_LUN: u64 = 0xff;
/// Largest LUN with flat space addressing (SAM-5 §4.7.7).
pub const MAX_FLAT_LUN: u64 = 0x3fff;

/// SAM-5 §4.7.6/§4.7.7: the 8-byte LUN field for a single-level `lun`, as a
/// big-endian u64 (`lun.to_be_bytes()` are the wire bytes). LUNs below 256
/// use peripheral device addressing, as tgt and istgt report them; up to
/// 16383 flat space addressing.
pub fn encode_lun(lun: u64) -> Result<u64, LunError> {
    if lun <= MAX_PERIPHERAL_LUN {
        Ok(lun << 48)
    } else if lun <= MAX_FLAT_LUN {
        Ok((0x4000 | lun) << 48)
    } else {
        Err(LunError::TooLarge(lun))
    }
}

/// SAM-5 §4.7: the LUN number in a single-level peripheral (bus 0) or flat
/// space address. Any other form (a non-zero bus identifier, a second level,
/// logical unit or extended addressing) is returned as the raw 8-byte value
/// unchanged, so a caller can send it back as is. Decoded LUNs are below
/// 16384 and raw first-level forms are at least 2^56; only a hierarchical
/// address with an empty first level can look like a small LUN.
pub fn decode_lun(raw: u64) -> u64 {
    let first_level = raw >> 48;
    let lower_levels = raw & 0x0000_ffff_ffff_ffff;
    if lower_levels != 0 {
        return raw;
    }
    match first_level >> 14 {
        // Peripheral device addressing: bus identifier (bits 13..8) must be 0.
        0b00 if first_level >> 8 == 0 => first_level & 0xff,
        // Flat space addressing.
        0b01 => first_level & 0x3fff,
        _ => raw,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peripheral_addressing_below_256() {
        assert_eq!(encode_lun(0).unwrap(), 0);
        assert_eq!(encode_lun(1).unwrap().to_be_bytes(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(255).unwrap().to_be_bytes(), [0, 0xff, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn flat_space_addressing_to_16383() {
        assert_eq!(encode_lun(256).unwrap().to_be_bytes(), [0x41, 0x00, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(0x1234).unwrap().to_be_bytes(), [0x52, 0x34, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(16383).unwrap().to_be_bytes(), [0x7f, 0xff, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(16384), Err(LunError::TooLarge(16384)));
        assert_eq!(encode_lun(u64::MAX), Err(LunError::TooLarge(u64::MAX)));
    }

    #[test]
    fn decode_known_forms() {
        assert_eq!(decode_lun(u64::from_be_bytes([0, 1, 0, 0, 0, 0, 0, 0])), 1);
        // Flat space may also carry a small LUN.
        assert_eq!(decode_lun(u64::from_be_bytes([0x40, 0x05, 0, 0, 0, 0, 0, 0])), 5);
        assert_eq!(decode_lun(u64::from_be_bytes([0x7f, 0xff, 0, 0, 0, 0, 0, 0])), 16383);
    }

    #[test]
    fn decode_other_forms_raw() {
        for raw in [
            [0x01, 0x02, 0, 0, 0, 0, 0, 0],       // bus identifier 1
            [0x00, 0x02, 0x00, 0x03, 0, 0, 0, 0], // second level
            [0x80, 0x01, 0, 0, 0, 0, 0, 0],       // logical unit addressing
            [0xd2, 0x01, 0x02, 0x03, 0, 0, 0, 0], // extended flat space
            [0xc1, 0x00, 0, 0, 0, 0, 0, 0],       // well-known LU
            [0x40, 0x01, 0, 0, 0, 0, 0, 1],       // flat with a lower level set
        ] {
            let v = u64::from_be_bytes(raw);
            assert_eq!(decode_lun(v), v);
        }
    }

    proptest! {
        #[test]
        fn round_trip(lun in 0u64..=MAX_FLAT_LUN) {
            prop_assert_eq!(decode_lun(encode_lun(lun).unwrap()), lun);
        }

        #[test]
        fn decode_never_panics(raw in any::<u64>()) {
            let _ = decode_lun(raw);
        }
    }
}
