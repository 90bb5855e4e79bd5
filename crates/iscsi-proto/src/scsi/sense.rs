//! SCSI status and sense data (SPC-4 §4.5), fixed and descriptor formats.
//!
//! The initiator turns a non-GOOD status plus the SCSI Response data segment
//! into a [`ScsiError`] with [`ScsiError::from_status`].

use std::borrow::Cow;
use std::fmt;

/// SAM-5 §5.3: the STATUS byte of a completed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScsiStatus {
    Good,
    CheckCondition,
    ConditionMet,
    Busy,
    ReservationConflict,
    TaskSetFull,
    AcaActive,
    TaskAborted,
    Other(u8),
}

impl ScsiStatus {
    /// SAM-5 Table 33: status codes.
    pub fn from_u8(status: u8) -> ScsiStatus {
        match status {
            0x00 => ScsiStatus::Good,
            0x02 => ScsiStatus::CheckCondition,
            0x04 => ScsiStatus::ConditionMet,
            0x08 => ScsiStatus::Busy,
            0x18 => ScsiStatus::ReservationConflict,
            0x28 => ScsiStatus::TaskSetFull,
            0x30 => ScsiStatus::AcaActive,
            0x40 => ScsiStatus::TaskAborted,
            other => ScsiStatus::Other(other),
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            ScsiStatus::Good => 0x00,
            ScsiStatus::CheckCondition => 0x02,
            ScsiStatus::ConditionMet => 0x04,
            ScsiStatus::Busy => 0x08,
            ScsiStatus::ReservationConflict => 0x18,
            ScsiStatus::TaskSetFull => 0x28,
            ScsiStatus::AcaActive => 0x30,
            ScsiStatus::TaskAborted => 0x40,
            ScsiStatus::Other(v) => v,
        }
    }

    /// SAM-5 §5.3.1: GOOD and CONDITION MET both mean the command succeeded.
    pub fn is_success(self) -> bool {
        matches!(self, ScsiStatus::Good | ScsiStatus::ConditionMet)
    }
}

impl fmt::Display for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScsiStatus::Good => f.write_str("GOOD"),
            ScsiStatus::CheckCondition => f.write_str("CHECK CONDITION"),
            ScsiStatus::ConditionMet => f.write_str("CONDITION MET"),
            ScsiStatus::Busy => f.write_str("BUSY"),
            ScsiStatus::ReservationConflict => f.write_str("RESERVATION CONFLICT"),
            ScsiStatus::TaskSetFull => f.write_str("TASK SET FULL"),
            ScsiStatus::AcaActive => f.write_str("ACA ACTIVE"),
            ScsiStatus::TaskAborted => f.write_str("TASK ABORTED"),
            ScsiStatus::Other(v) => write!(f, "status 0x{v:02x}"),
        }
    }
}

/// SPC-4 §4.5.6, Table 28: the 4-bit SENSE KEY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenseKey {
    NoSense,
    RecoveredError,
    NotReady,
    MediumError,
    HardwareError,
    IllegalRequest,
    UnitAttention,
    DataProtect,
    BlankCheck,
    VendorSpecific,
    CopyAborted,
    AbortedCommand,
    /// 0xC: reserved in SPC-4 (formerly EQUAL).
    Reserved,
    VolumeOverflow,
    Miscompare,
    Completed,
}

impl SenseKey {
    /// The low 4 bits of `key`; every value names a key.
    pub fn from_u8(key: u8) -> SenseKey {
        match key & 0x0f {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0x9 => SenseKey::VendorSpecific,
            0xa => SenseKey::CopyAborted,
            0xb => SenseKey::AbortedCommand,
            0xc => SenseKey::Reserved,
            0xd => SenseKey::VolumeOverflow,
            0xe => SenseKey::Miscompare,
            _ => SenseKey::Completed,
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The SPC-4 name, in capitals as the standard writes it.
    pub fn name(self) -> &'static str {
        match self {
            SenseKey::NoSense => "NO SENSE",
            SenseKey::RecoveredError => "RECOVERED ERROR",
            SenseKey::NotReady => "NOT READY",
            SenseKey::MediumError => "MEDIUM ERROR",
            SenseKey::HardwareError => "HARDWARE ERROR",
            SenseKey::IllegalRequest => "ILLEGAL REQUEST",
            SenseKey::UnitAttention => "UNIT ATTENTION",
            SenseKey::DataProtect => "DATA PROTECT",
            SenseKey::BlankCheck => "BLANK CHECK",
            SenseKey::VendorSpecific => "VENDOR SPECIFIC",
            SenseKey::CopyAborted => "COPY ABORTED",
            SenseKey::AbortedCommand => "ABORTED COMMAND",
            SenseKey::Reserved => "RESERVED",
            SenseKey::VolumeOverflow => "VOLUME OVERFLOW",
            SenseKey::Miscompare => "MISCOMPARE",
            SenseKey::Completed => "COMPLETED",
        }
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors from parsing sense data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenseError {
    /// SPC-4 §4.5.1: sense data starts with its RESPONSE CODE; none was sent.
    #[error("sense data is empty")]
    Empty,
    /// SPC-4 §4.5.1: only 0x70/0x71 (fixed) and 0x72/0x73 (descriptor) are defined.
    #[error("sense RESPONSE CODE 0x{0:02x} is neither fixed (0x70/0x71) nor descriptor (0x72/0x73)")]
    UnknownResponseCode(u8),
    /// The sense data ends before the SENSE KEY, ASC or ASCQ.
    #[error("{format} sense data: need {need} bytes for the sense key, got {got}")]
    TooShort { format: &'static str, need: usize, got: usize },
    /// RFC 7143 §11.4.7.2: the data segment is shorter than its 2-byte SenseLength.
    #[error("SCSI Response data segment of {0} byte(s) cannot hold the 2-byte SenseLength")]
    NoSenseLength(usize),
}

/// SPC-4 §4.5: the parts of sense data an initiator acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sense {
    /// RESPONSE CODE: 0x70/0x72 current, 0x71/0x73 deferred error.
    pub response_code: u8,
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION (e.g. the failing LBA), when the target marks it valid.
    pub information: Option<u64>,
    pub descriptor_format: bool,
}

impl Sense {
    /// SPC-4 §4.5: parse fixed (0x70/0x71) or descriptor (0x72/0x73) sense
    /// data. Fields after the sense key are read only as far as both the data
    /// and the ADDITIONAL SENSE LENGTH reach; missing ones read as 0 / None.
    pub fn parse(data: &[u8]) -> Result<Sense, SenseError> {
        let b0 = *data.first().ok_or(SenseError::Empty)?;
        match b0 & 0x7f {
            0x70 | 0x71 => Self::parse_fixed(data, b0),
            0x72 | 0x73 => Self::parse_descriptor(data, b0),
            other => Err(SenseError::UnknownResponseCode(other)),
        }
    }

    /// The bytes covered by the ADDITIONAL SENSE LENGTH (byte 7), cut to what
    /// is present.
    fn declared(data: &[u8]) -> &[u8] {
        match data.get(7) {
            Some(&add) => data.get(..8 + usize::from(add)).unwrap_or(data),
            None => data,
        }
    }

    /// SPC-4 §4.5.3: fixed format. Key in byte 2, INFORMATION in bytes 3..7
    /// (valid when byte 0 bit 7 is set), ASC/ASCQ in bytes 12 and 13.
    fn parse_fixed(data: &[u8], b0: u8) -> Result<Sense, SenseError> {
        let key = data.get(2).copied().ok_or(SenseError::TooShort { format: "fixed", need: 3, got: data.len() })?;
        let information = if b0 & 0x80 != 0 {
            data.get(3..7).and_then(|s| <[u8; 4]>::try_from(s).ok()).map(|b| u64::from(u32::from_be_bytes(b)))
        } else {
            None
        };
        let d = Self::declared(data);
        Ok(Sense {
            response_code: b0 & 0x7f,
            key: SenseKey::from_u8(key),
            asc: d.get(12).copied().unwrap_or(0),
            ascq: d.get(13).copied().unwrap_or(0),
            information,
            descriptor_format: false,
        })
    }

    /// SPC-4 §4.5.2: descriptor format. Key, ASC and ASCQ in bytes 1..4,
    /// descriptors from byte 8; the Information descriptor (type 0x00,
    /// §4.5.2.2) carries an 8-byte INFORMATION valid when its bit 7 is set.
    fn parse_descriptor(data: &[u8], b0: u8) -> Result<Sense, SenseError> {
        let Some(&[_, key, asc, ascq]) = data.first_chunk::<4>() else {
            return Err(SenseError::TooShort { format: "descriptor", need: 4, got: data.len() });
        };
        let mut information = None;
        let mut rest = Self::declared(data).get(8..).unwrap_or_default();
        while let Some((&[kind, len], tail)) = rest.split_first_chunk::<2>() {
            let Some((body, tail)) = tail.split_at_checked(usize::from(len)) else {
                break; // a descriptor cut short: keep what was decoded
            };
            if kind == 0x00 && information.is_none() {
                information = match body.split_first_chunk::<2>() {
                    Some((&[valid, _], info)) if valid & 0x80 != 0 => {
                        info.first_chunk::<8>().map(|b| u64::from_be_bytes(*b))
                    }
                    _ => None,
                };
            }
            rest = tail;
        }
        Ok(Sense {
            response_code: b0 & 0x7f,
            key: SenseKey::from_u8(key),
            asc,
            ascq,
            information,
            descriptor_format: true,
        })
    }

    /// RFC 7143 §11.4.7.2: the SCSI Response data segment holds a 2-byte
    /// big-endian SenseLength, then that many bytes of sense data. `Ok(None)`
    /// when the segment is empty or SenseLength is 0. A SenseLength beyond
    /// the segment is tolerated: the sense bytes present are parsed.
    pub fn from_iscsi_data(segment: &[u8]) -> Result<Option<Sense>, SenseError> {
        if segment.is_empty() {
            return Ok(None);
        }
        let Some((&len, rest)) = segment.split_first_chunk::<2>() else {
            return Err(SenseError::NoSenseLength(segment.len()));
        };
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 {
            return Ok(None);
        }
        Self::parse(rest.get(..len).unwrap_or(rest)).map(Some)
    }

    /// Whether the error is about an earlier command (0x71/0x73, SPC-4 §4.5.1).
    pub fn is_deferred(&self) -> bool {
        matches!(self.response_code, 0x71 | 0x73)
    }

    /// SPC-4 Annex D (Table D.1): words for the ASC/ASCQ pairs an initiator
    /// meets; others as "ASC 0xNN ASCQ 0xNN".
    pub fn description(&self) -> Cow<'static, str> {
        let words = match (self.asc, self.ascq) {
            (0x00, 0x00) => "no additional sense information",
            (0x04, 0x00) => "logical unit not ready, cause not reportable",
            (0x04, 0x01) => "logical unit is in process of becoming ready",
            (0x04, 0x02) => "logical unit not ready, initializing command required",
            (0x04, 0x03) => "logical unit not ready, manual intervention required",
            (0x04, 0x04) => "logical unit not ready, format in progress",
            (0x04, 0x07) => "logical unit not ready, operation in progress",
            (0x04, 0x09) => "logical unit not ready, self-test in progress",
            (0x04, 0x0a) => "logical unit not accessible, asymmetric access state transition",
            (0x04, 0x0b) => "logical unit not accessible, target port in standby state",
            (0x04, 0x0c) => "logical unit not accessible, target port in unavailable state",
            (0x04, 0x1b) => "logical unit not ready, sanitize in progress",
            (0x04, _) => "logical unit not ready",
            (0x0c, 0x00) => "write error",
            (0x11, 0x00) => "unrecovered read error",
            (0x1a, 0x00) => "parameter list length error",
            (0x20, 0x00) => "invalid command operation code",
            (0x21, 0x00) => "logical block address out of range",
            (0x24, 0x00) => "invalid field in CDB",
            (0x25, 0x00) => "logical unit not supported",
            (0x26, 0x00) => "invalid field in parameter list",
            (0x27, 0x00) => "write protected",
            (0x27, 0x07) => "space allocation failed write protect",
            (0x28, 0x00) => "not ready to ready change, medium may have changed",
            (0x29, 0x00) => "power on, reset, or bus device reset occurred",
            (0x29, 0x01) => "power on occurred",
            (0x29, 0x02) => "SCSI bus reset occurred",
            (0x29, 0x03) => "bus device reset function occurred",
            (0x29, 0x04) => "device internal reset",
            (0x29, 0x07) => "I_T nexus loss occurred",
            (0x29, _) => "power on or reset occurred",
            (0x2a, 0x00) => "parameters changed",
            (0x2a, 0x01) => "mode parameters changed",
            (0x2a, 0x02) => "log parameters changed",
            (0x2a, 0x03) => "reservations preempted",
            (0x2a, 0x04) => "reservations released",
            (0x2a, 0x05) => "registrations preempted",
            (0x2a, 0x06) => "asymmetric access state changed",
            (0x2a, 0x09) => "capacity data has changed",
            (0x2a, _) => "parameters changed",
            (0x2c, 0x00) => "command sequence error",
            (0x38, 0x07) => "thin provisioning soft threshold reached",
            (0x3a, 0x00) => "medium not present",
            (0x3a, _) => "medium not present",
            (0x3f, 0x00) => "target operating conditions have changed",
            (0x3f, 0x01) => "microcode has been changed",
            (0x3f, 0x03) => "inquiry data has changed",
            (0x3f, 0x0e) => "reported luns data has changed",
            (0x44, 0x00) => "internal target failure",
            (0x47, 0x00) => "SCSI parity error",
            (0x49, 0x00) => "invalid message error",
            (0x4b, 0x00) => "data phase error",
            (0x55, 0x03) => "insufficient resources",
            _ => return Cow::Owned(format!("ASC 0x{:02x} ASCQ 0x{:02x}", self.asc, self.ascq)),
        };
        Cow::Borrowed(words)
    }
}

/// `ILLEGAL REQUEST: logical block address out of range (asc 0x21 ascq 0x00)`.
impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (asc 0x{:02x} ascq 0x{:02x})", self.key, self.description(), self.asc, self.ascq)?;
        if let Some(info) = self.information {
            write!(f, " information 0x{info:x}")?;
        }
        if self.is_deferred() {
            f.write_str(" (deferred)")?;
        }
        Ok(())
    }
}

/// A command that did not end in GOOD or CONDITION MET (SAM-5 §5.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScsiError {
    /// CHECK CONDITION with sense data other than UNIT ATTENTION.
    #[error("{0}")]
    CheckCondition(Sense),
    /// CHECK CONDITION with sense key UNIT ATTENTION (SAM-5 §5.14): the
    /// target reports an event (reset, LUN change, ...); the command was not
    /// executed and may be retried.
    #[error("{0}")]
    UnitAttention(Sense),
    /// SAM-5 §5.3.1: the LU is busy; retry later.
    #[error("target returned BUSY")]
    Busy,
    /// SAM-5 §5.3.1: another initiator holds a reservation.
    #[error("target returned RESERVATION CONFLICT")]
    ReservationConflict,
    /// SAM-5 §5.3.1: the task set is full; retry with fewer commands in flight.
    #[error("target returned TASK SET FULL")]
    TaskSetFull,
    /// SAM-5 §5.3.1: the command was aborted by another I_T nexus or the LU.
    #[error("target returned TASK ABORTED")]
    TaskAborted,
    /// Any other status (ACA ACTIVE, reserved values).
    #[error("target returned SCSI status 0x{0:02x}")]
    Status(u8),
    /// CHECK CONDITION without (parseable) sense data.
    #[error("target returned CHECK CONDITION without sense data")]
    NoSense,
}

impl ScsiError {
    /// SAM-5 §5.3: the error for a command's status, `None` for GOOD and
    /// CONDITION MET. `sense_data` is the SCSI Response data segment
    /// (RFC 7143 §11.4.7.2, SenseLength first); bare sense bytes are accepted
    /// too, since their first byte (0x70..0x73, or 0xf0..0xf3 with VALID)
    /// cannot start a SenseLength: SPC-4 §4.5.1 caps sense data at 252 bytes.
    pub fn from_status(status: u8, sense_data: &[u8]) -> Option<ScsiError> {
        Some(match ScsiStatus::from_u8(status) {
            ScsiStatus::Good | ScsiStatus::ConditionMet => return None,
            ScsiStatus::CheckCondition => match sense_from(sense_data) {
                Some(s) if s.key == SenseKey::UnitAttention => ScsiError::UnitAttention(s),
                Some(s) => ScsiError::CheckCondition(s),
                None => ScsiError::NoSense,
            },
            ScsiStatus::Busy => ScsiError::Busy,
            ScsiStatus::ReservationConflict => ScsiError::ReservationConflict,
            ScsiStatus::TaskSetFull => ScsiError::TaskSetFull,
            ScsiStatus::TaskAborted => ScsiError::TaskAborted,
            other @ (ScsiStatus::AcaActive | ScsiStatus::Other(_)) => ScsiError::Status(other.as_u8()),
        })
    }

    /// The sense data, for the CHECK CONDITION variants.
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            ScsiError::CheckCondition(s) | ScsiError::UnitAttention(s) => Some(s),
            _ => None,
        }
    }

    /// Whether re-sending the same command may succeed: UNIT ATTENTION,
    /// BUSY, TASK SET FULL, and NOT READY "becoming ready" (SPC-4 04/01).
    pub fn is_retryable(&self) -> bool {
        match self {
            ScsiError::UnitAttention(_) | ScsiError::Busy | ScsiError::TaskSetFull => true,
            ScsiError::CheckCondition(s) => s.key == SenseKey::NotReady && s.asc == 0x04 && s.ascq == 0x01,
            _ => false,
        }
    }
}

/// Sense from either an iSCSI data segment or bare sense bytes (see
/// [`ScsiError::from_status`]); `None` if neither parses.
fn sense_from(data: &[u8]) -> Option<Sense> {
    let first = *data.first()?;
    if matches!(first & 0x7f, 0x70..=0x73) {
        Sense::parse(data).ok()
    } else {
        Sense::from_iscsi_data(data).ok().flatten()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fixed sense as tgt sends for a READ past the end: ILLEGAL REQUEST 21/00.
    fn fixed_lba_out_of_range() -> Vec<u8> {
        hex::decode("700005000000000a000000002100000000000000").unwrap()
    }

    #[test]
    fn status_codes() {
        for (v, s) in [
            (0x00, ScsiStatus::Good),
            (0x02, ScsiStatus::CheckCondition),
            (0x04, ScsiStatus::ConditionMet),
            (0x08, ScsiStatus::Busy),
            (0x18, ScsiStatus::ReservationConflict),
            (0x28, ScsiStatus::TaskSetFull),
            (0x30, ScsiStatus::AcaActive),
            (0x40, ScsiStatus::TaskAborted),
            (0x22, ScsiStatus::Other(0x22)),
        ] {
            assert_eq!(ScsiStatus::from_u8(v), s);
            assert_eq!(s.as_u8(), v);
        }
        assert!(ScsiStatus::ConditionMet.is_success());
        assert_eq!(ScsiStatus::CheckCondition.to_string(), "CHECK CONDITION");
    }

    #[test]
    fn sense_keys_round_trip() {
        for k in 0..16u8 {
            assert_eq!(SenseKey::from_u8(k).as_u8(), k);
        }
        assert_eq!(SenseKey::from_u8(0xf5), SenseKey::IllegalRequest);
        assert_eq!(SenseKey::UnitAttention.name(), "UNIT ATTENTION");
    }

    #[test]
    fn fixed_sense() {
        let s = Sense::parse(&fixed_lba_out_of_range()).unwrap();
        assert_eq!(
            s,
            Sense {
                response_code: 0x70,
                key: SenseKey::IllegalRequest,
                asc: 0x21,
                ascq: 0x00,
                information: None,
                descriptor_format: false,
            }
        );
        assert_eq!(s.to_string(), "ILLEGAL REQUEST: logical block address out of range (asc 0x21 ascq 0x00)");
    }

    #[test]
    fn fixed_sense_with_information_and_deferred() {
        let d = hex::decode("f10003001234560a00000000110000000000").unwrap();
        let s = Sense::parse(&d).unwrap();
        assert_eq!(s.response_code, 0x71);
        assert!(s.is_deferred());
        assert_eq!(s.key, SenseKey::MediumError);
        assert_eq!(s.information, Some(0x123456));
        assert_eq!((s.asc, s.ascq), (0x11, 0x00));
        assert_eq!(
            s.to_string(),
            "MEDIUM ERROR: unrecovered read error (asc 0x11 ascq 0x00) information 0x123456 (deferred)"
        );
    }

    #[test]
    fn fixed_sense_short_forms() {
        // Only the key: ASC/ASCQ read as 0.
        let s = Sense::parse(&[0x70, 0x00, 0x06]).unwrap();
        assert_eq!((s.key, s.asc, s.ascq), (SenseKey::UnitAttention, 0, 0));
        // ADDITIONAL SENSE LENGTH 4 excludes the ASC at byte 12.
        let s = Sense::parse(&hex::decode("7000050000000004000000002400").unwrap()).unwrap();
        assert_eq!(s.asc, 0);
        assert_eq!(Sense::parse(&[0x70, 0x00]), Err(SenseError::TooShort { format: "fixed", need: 3, got: 2 }));
    }

    #[test]
    fn descriptor_sense_with_information() {
        // 72 / key 3 / 11 00, one Information descriptor (valid, LBA 0x1_0000_0000).
        let d = hex::decode("720311000000000c000a80000000000100000000").unwrap();
        let s = Sense::parse(&d).unwrap();
        assert_eq!(
            s,
            Sense {
                response_code: 0x72,
                key: SenseKey::MediumError,
                asc: 0x11,
                ascq: 0x00,
                information: Some(0x1_0000_0000),
                descriptor_format: true,
            }
        );
    }

    #[test]
    fn descriptor_sense_other_descriptors_and_truncation() {
        // A sense-key-specific descriptor (type 2) first, then Information.
        let d = hex::decode("72052400000000140206000080000000000a80000000000000000042").unwrap();
        let s = Sense::parse(&d).unwrap();
        assert_eq!(s.key, SenseKey::IllegalRequest);
        assert_eq!(s.information, Some(0x42));
        // Information not marked valid.
        let d = hex::decode("720311000000000c000a00000000000000000042").unwrap();
        assert_eq!(Sense::parse(&d).unwrap().information, None);
        // Descriptor cut short: key/ASC still decoded.
        let d = hex::decode("720627000000000c000a8000").unwrap();
        let s = Sense::parse(&d).unwrap();
        assert_eq!((s.key, s.asc, s.information), (SenseKey::UnitAttention, 0x27, None));
        // Header only.
        assert_eq!(Sense::parse(&[0x72, 0x02, 0x04, 0x01]).unwrap().asc, 0x04);
        assert!(matches!(Sense::parse(&[0x73, 0x02]), Err(SenseError::TooShort { .. })));
    }

    #[test]
    fn bad_response_codes() {
        assert_eq!(Sense::parse(&[]), Err(SenseError::Empty));
        assert_eq!(Sense::parse(&[0x00; 18]), Err(SenseError::UnknownResponseCode(0)));
        assert_eq!(Sense::parse(&[0x7f, 0, 5]), Err(SenseError::UnknownResponseCode(0x7f)));
    }

    #[test]
    fn iscsi_data_segment() {
        let sense = fixed_lba_out_of_range();
        let mut seg = (sense.len() as u16).to_be_bytes().to_vec();
        seg.extend_from_slice(&sense);
        seg.extend_from_slice(&[0, 0]); // padding or response data after the sense
        let s = Sense::from_iscsi_data(&seg).unwrap().unwrap();
        assert_eq!((s.key, s.asc), (SenseKey::IllegalRequest, 0x21));
        assert_eq!(Sense::from_iscsi_data(&[]), Ok(None));
        assert_eq!(Sense::from_iscsi_data(&[0, 0, 0x70]), Ok(None));
        assert_eq!(Sense::from_iscsi_data(&[0]), Err(SenseError::NoSenseLength(1)));
        // SenseLength larger than the segment: what is there is parsed.
        let s = Sense::from_iscsi_data(&[0, 18, 0x70, 0, 0x02]).unwrap().unwrap();
        assert_eq!(s.key, SenseKey::NotReady);
    }

    #[test]
    fn descriptions() {
        let mk = |asc, ascq| Sense {
            response_code: 0x70,
            key: SenseKey::NotReady,
            asc,
            ascq,
            information: None,
            descriptor_format: false,
        };
        assert_eq!(mk(0x04, 0x01).description(), "logical unit is in process of becoming ready");
        assert_eq!(mk(0x04, 0x55).description(), "logical unit not ready");
        assert_eq!(mk(0x20, 0).description(), "invalid command operation code");
        assert_eq!(mk(0x24, 0).description(), "invalid field in CDB");
        assert_eq!(mk(0x25, 0).description(), "logical unit not supported");
        assert_eq!(mk(0x29, 0x07).description(), "I_T nexus loss occurred");
        assert_eq!(mk(0x2a, 0x09).description(), "capacity data has changed");
        assert_eq!(mk(0x3a, 0x02).description(), "medium not present");
        assert_eq!(mk(0x3f, 0x0e).description(), "reported luns data has changed");
        assert_eq!(mk(0x44, 0).description(), "internal target failure");
        assert_eq!(mk(0x47, 0).description(), "SCSI parity error");
        assert_eq!(mk(0x49, 0).description(), "invalid message error");
        assert_eq!(mk(0x0c, 0).description(), "write error");
        assert_eq!(mk(0x27, 0).description(), "write protected");
        assert_eq!(mk(0x28, 0).description(), "not ready to ready change, medium may have changed");
        assert_eq!(mk(0x99, 0x0a).description(), "ASC 0x99 ASCQ 0x0a");
    }

    #[test]
    fn scsi_error_from_status() {
        assert_eq!(ScsiError::from_status(0x00, &[]), None);
        assert_eq!(ScsiError::from_status(0x04, &[]), None);
        assert_eq!(ScsiError::from_status(0x08, &[]), Some(ScsiError::Busy));
        assert_eq!(ScsiError::from_status(0x18, &[]), Some(ScsiError::ReservationConflict));
        assert_eq!(ScsiError::from_status(0x28, &[]), Some(ScsiError::TaskSetFull));
        assert_eq!(ScsiError::from_status(0x40, &[]), Some(ScsiError::TaskAborted));
        assert_eq!(ScsiError::from_status(0x30, &[]), Some(ScsiError::Status(0x30)));
        assert_eq!(ScsiError::from_status(0x22, &[]), Some(ScsiError::Status(0x22)));
        assert_eq!(ScsiError::from_status(0x02, &[]), Some(ScsiError::NoSense));
        assert_eq!(ScsiError::from_status(0x02, &[0, 0]), Some(ScsiError::NoSense));
        assert_eq!(ScsiError::from_status(0x02, &[0, 3, 0x10]), Some(ScsiError::NoSense));

        let sense = fixed_lba_out_of_range();
        let mut seg = (sense.len() as u16).to_be_bytes().to_vec();
        seg.extend_from_slice(&sense);
        let e = ScsiError::from_status(0x02, &seg).unwrap();
        assert_eq!(e.to_string(), "ILLEGAL REQUEST: logical block address out of range (asc 0x21 ascq 0x00)");
        assert!(!e.is_retryable());
        // Bare sense bytes give the same answer.
        assert_eq!(ScsiError::from_status(0x02, &sense), Some(e));
    }

    #[test]
    fn unit_attention_is_its_own_variant() {
        // tgt after a LUN is added: UNIT ATTENTION 3F/0E, descriptor form here.
        let seg = hex::decode("000872063f0e00000000").unwrap();
        let e = ScsiError::from_status(0x02, &seg).unwrap();
        let ScsiError::UnitAttention(s) = &e else { panic!("{e:?}") };
        assert_eq!((s.asc, s.ascq), (0x3f, 0x0e));
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "UNIT ATTENTION: reported luns data has changed (asc 0x3f ascq 0x0e)");
        assert_eq!(e.sense(), Some(s));
    }

    proptest! {
        #[test]
        fn sense_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(s) = Sense::parse(&data) {
                let _ = s.to_string();
            }
            let _ = Sense::from_iscsi_data(&data);
            if let Some(e) = ScsiError::from_status(0x02, &data) {
                let _ = (e.to_string(), e.is_retryable());
            }
        }

        #[test]
        fn every_status_maps(status in any::<u8>()) {
            let e = ScsiError::from_status(status, &[]);
            prop_assert_eq!(e.is_none(), ScsiStatus::from_u8(status).is_success());
        }

        #[test]
        fn descriptor_sense_walk_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..260)) {
            let mut d = vec![0x72, 0x03, 0x11, 0x00, 0, 0, 0, tail.len().min(255) as u8];
            d.extend(tail);
            let s = Sense::parse(&d).unwrap();
            prop_assert!(s.descriptor_format);
        }
    }
}
