//! Parsers for the data-in of INQUIRY, READ CAPACITY and REPORT LUNS.
//!
//! Each parser takes the bytes the target returned. Data shorter than the
//! fields read is an error that says how much was needed; data longer than
//! needed is fine (targets may pad, or return more than a header declares).

use std::fmt;

use super::lun::decode_lun;

/// Errors from parsing SCSI data-in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The data ends before a fixed field the parser needs.
    #[error("{what}: need {need} bytes, got {got}")]
    TooShort { what: &'static str, need: usize, got: usize },
    /// SPC-4 §7.8.1: byte 1 of a VPD page is its PAGE CODE; the target sent
    /// another page than the one asked for.
    #[error("VPD page code is 0x{got:02x}, expected 0x{expected:02x}")]
    WrongPage { expected: u8, got: u8 },
    /// SPC-4 §7.8.1: the PAGE LENGTH says more than the data holds, usually
    /// because the allocation length was too small; re-issue the INQUIRY
    /// with an allocation length of at least `need`.
    #[error("VPD page 0x{page:02x} is {need} bytes long but only {got} were returned")]
    VpdTruncated { page: u8, need: usize, got: usize },
    /// SPC-4 §7.8.6.1: a designation descriptor's DESIGNATOR LENGTH runs past
    /// the end of the page.
    #[error("designation descriptor at offset {offset} runs past the end of the page")]
    DesignatorOverrun { offset: usize },
    /// SPC-4 §6.33: the LUN LIST LENGTH counts 8-byte entries, so it must be a
    /// multiple of 8.
    #[error("REPORT LUNS list length {0} is not a multiple of 8")]
    LunListLength(u32),
}

/// Reads `N` bytes at `at`, or says what was missing.
fn array<const N: usize>(data: &[u8], at: usize, what: &'static str) -> Result<[u8; N], DataError> {
    let need = at.saturating_add(N);
    data.get(at..need).and_then(|s| s.try_into().ok()).ok_or(DataError::TooShort { what, need, got: data.len() })
}

fn byte(data: &[u8], at: usize, what: &'static str) -> Result<u8, DataError> {
    array::<1>(data, at, what).map(|[b]| b)
}

/// ASCII text of an INQUIRY or VPD field (SPC-4 §4.4.1): printable ASCII
/// kept, anything else replaced by '?', trailing spaces and NULs (some
/// targets pad with NUL) removed.
fn ascii_field(raw: &[u8]) -> String {
    let text: String =
        raw.iter().map(|&b| if (0x20..=0x7e).contains(&b) || b == 0 { char::from(b) } else { '?' }).collect();
    text.trim_end_matches([' ', '\0']).replace('\0', "?")
}

/// SPC-4 §6.6.2: the fields of standard INQUIRY data an initiator uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInquiry {
    /// 0: LU connected; 1: LU supported but not connected; 3: no LU here.
    pub peripheral_qualifier: u8,
    /// SPC-4 Table 134: 0x00 disk, 0x05 CD/DVD, 0x0c storage array controller, ...
    pub device_type: u8,
    /// RMB: removable medium.
    pub removable: bool,
    /// VERSION: the SPC standard claimed (0x06 SPC-4, 0x05 SPC-3, 0 none).
    pub version: u8,
    /// T10 VENDOR IDENTIFICATION (bytes 8..16).
    pub vendor: String,
    /// PRODUCT IDENTIFICATION (bytes 16..32).
    pub product: String,
    /// PRODUCT REVISION LEVEL (bytes 32..36).
    pub revision: String,
}

/// SPC-4 §6.6.2: the standard data runs to byte 35 inclusive.
pub const STANDARD_INQUIRY_LEN: usize = 36;

impl StandardInquiry {
    /// SPC-4 §6.6.2: parse standard INQUIRY data (EVPD 0). At least 36 bytes.
    pub fn parse(data: &[u8]) -> Result<StandardInquiry, DataError> {
        const WHAT: &str = "standard INQUIRY data";
        let b0 = byte(data, 0, WHAT)?;
        let b1 = byte(data, 1, WHAT)?;
        let version = byte(data, 2, WHAT)?;
        let vendor: [u8; 8] = array(data, 8, WHAT)?;
        let product: [u8; 16] = array(data, 16, WHAT)?;
        let revision: [u8; 4] = array(data, 32, WHAT)?;
        Ok(StandardInquiry {
            peripheral_qualifier: b0 >> 5,
            device_type: b0 & 0x1f,
            removable: b1 & 0x80 != 0,
            version,
            vendor: ascii_field(&vendor),
            product: ascii_field(&product),
            revision: ascii_field(&revision),
        })
    }

    /// SPC-4 §6.6.2: qualifier 000b means a logical unit is connected here;
    /// tgt and istgt answer 011b with type 0x1f for a LUN that does not exist.
    pub fn is_connected(&self) -> bool {
        self.peripheral_qualifier == 0
    }

    /// Short name of the peripheral device type (SPC-4 Table 134).
    pub fn device_type_name(&self) -> &'static str {
        device_type_name(self.device_type)
    }
}

/// SPC-4 §6.6.2: same as [`StandardInquiry::parse`].
pub fn parse_standard_inquiry(data: &[u8]) -> Result<StandardInquiry, DataError> {
    StandardInquiry::parse(data)
}

/// SBC-3 §5.15.2: same as [`ReadCapacity10::parse`].
pub fn parse_read_capacity10(data: &[u8]) -> Result<ReadCapacity10, DataError> {
    ReadCapacity10::parse(data)
}

/// SBC-3 §5.16.2: same as [`ReadCapacity16::parse`].
pub fn parse_read_capacity16(data: &[u8]) -> Result<ReadCapacity16, DataError> {
    ReadCapacity16::parse(data)
}

/// SPC-4 Table 134: short name of a PERIPHERAL DEVICE TYPE.
pub fn device_type_name(device_type: u8) -> &'static str {
    match device_type {
        0x00 => "disk",
        0x01 => "tape",
        0x02 => "printer",
        0x03 => "processor",
        0x04 => "write-once",
        0x05 => "cd/dvd",
        0x06 => "scanner",
        0x07 => "optical memory",
        0x08 => "medium changer",
        0x09 => "communications",
        0x0c => "storage array controller",
        0x0d => "enclosure services",
        0x0e => "simplified direct-access",
        0x0f => "optical card reader/writer",
        0x10 => "bridge controller",
        0x11 => "object-based storage",
        0x12 => "automation/drive interface",
        0x13 => "security manager",
        0x14 => "host managed zoned block",
        0x1e => "well known logical unit",
        0x1f => "unknown or no device",
        _ => "reserved",
    }
}

/// SPC-4 §7.8.1: check the 4-byte VPD header (page code in byte 1, PAGE
/// LENGTH in bytes 2..4) and return the page body.
fn vpd_body(data: &[u8], page: u8) -> Result<&[u8], DataError> {
    let [_, code, hi, lo] = array::<4>(data, 0, "VPD page header")?;
    if code != page {
        return Err(DataError::WrongPage { expected: page, got: code });
    }
    let need = 4 + usize::from(u16::from_be_bytes([hi, lo]));
    data.get(4..need).ok_or(DataError::VpdTruncated { page, need, got: data.len() })
}

/// SPC-4 §7.8.13: the Supported VPD Pages page (0x00), as the list of page
/// codes the target implements.
pub fn parse_vpd_supported_pages(data: &[u8]) -> Result<Vec<u8>, DataError> {
    vpd_body(data, 0x00).map(<[u8]>::to_vec)
}

/// SBC-3 §6.5.3: the Block Limits page (0xB0), the fields an initiator
/// sizes its commands by. A field of 0 means "no limit reported"; a short
/// page (SBC-2 targets send only 12 bytes of body) leaves the later fields 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockLimits {
    /// MAXIMUM TRANSFER LENGTH, in blocks.
    pub max_transfer_blocks: u32,
    /// OPTIMAL TRANSFER LENGTH, in blocks.
    pub optimal_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT: blocks one UNMAP may name in all.
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// OPTIMAL UNMAP GRANULARITY, in blocks.
    pub unmap_granularity: u32,
    /// MAXIMUM WRITE SAME LENGTH, in blocks.
    pub max_write_same_blocks: u64,
}

impl BlockLimits {
    pub fn parse(data: &[u8]) -> Result<BlockLimits, DataError> {
        let body = vpd_body(data, 0xb0)?;
        // Offsets below are into the page, the body starting at byte 4.
        let u32_at = |at: usize| array::<4>(body, at - 4, "Block Limits page").map(u32::from_be_bytes).unwrap_or(0);
        let u64_at = |at: usize| array::<8>(body, at - 4, "Block Limits page").map(u64::from_be_bytes).unwrap_or(0);
        Ok(BlockLimits {
            max_transfer_blocks: u32_at(8),
            optimal_transfer_blocks: u32_at(12),
            max_unmap_blocks: u32_at(20),
            max_unmap_descriptors: u32_at(24),
            unmap_granularity: u32_at(28),
            max_write_same_blocks: u64_at(36),
        })
    }
}

/// SBC-3 §6.5.4: the Logical Block Provisioning page (0xB2): which commands
/// deallocate blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogicalBlockProvisioning {
    /// LBPU: UNMAP is supported.
    pub unmap: bool,
    /// LBPWS: WRITE SAME (16) with its UNMAP bit is supported.
    pub write_same16_unmap: bool,
    /// LBPRZ: deallocated blocks read back as zeroes.
    pub reads_zeroes: bool,
}

impl LogicalBlockProvisioning {
    pub fn parse(data: &[u8]) -> Result<LogicalBlockProvisioning, DataError> {
        let body = vpd_body(data, 0xb2)?;
        let flags = byte(body, 1, "Logical Block Provisioning page")?;
        Ok(LogicalBlockProvisioning {
            unmap: flags & 0x80 != 0,
            write_same16_unmap: flags & 0x40 != 0,
            reads_zeroes: flags & 0x04 != 0,
        })
    }
}

/// SPC-4 §7.8.15: the Unit Serial Number page (0x80). The serial is ASCII;
/// leading and trailing spaces are padding and removed.
pub fn parse_vpd_unit_serial(data: &[u8]) -> Result<String, DataError> {
    vpd_body(data, 0x80).map(|body| ascii_field(body).trim_start().to_string())
}

/// SPC-4 §7.8.6.1: one designation descriptor of the Device Identification
/// page (0x83).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Designator {
    /// 1 binary, 2 ASCII, 3 UTF-8 (SPC-4 Table 476).
    pub code_set: u8,
    /// 0 the addressed LU, 1 the target port, 2 the target device (SPC-4 Table 477).
    pub association: u8,
    /// SPC-4 Table 478: 1 T10 vendor ID, 2 EUI-64, 3 NAA, 8 SCSI name string, ...
    pub designator_type: u8,
    pub value: Vec<u8>,
}

impl Designator {
    /// Short name of the designator type (SPC-4 Table 478).
    pub fn type_name(&self) -> &'static str {
        match self.designator_type {
            0x0 => "vendor specific",
            0x1 => "T10 vendor ID",
            0x2 => "EUI-64",
            0x3 => "NAA",
            0x4 => "relative target port",
            0x5 => "target port group",
            0x6 => "logical unit group",
            0x7 => "MD5 logical unit identifier",
            0x8 => "SCSI name string",
            0x9 => "protocol specific port identifier",
            0xa => "UUID",
            _ => "reserved",
        }
    }

    /// What the designator names (SPC-4 Table 477).
    pub fn association_name(&self) -> &'static str {
        match self.association {
            0 => "logical unit",
            1 => "target port",
            2 => "target device",
            _ => "reserved",
        }
    }

    /// Whether the value is text by its code set (2 ASCII, 3 UTF-8).
    fn is_text(&self) -> bool {
        matches!(self.code_set, 2 | 3)
    }
}

/// Renders NAA, EUI-64 and other binary designators as `0x`-prefixed hex,
/// and T10 vendor IDs and SCSI name strings as text, e.g.
/// `NAA: 0x60000000000000000e00000000010001` or `SCSI name string: iqn....`.
impl fmt::Display for Designator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.type_name())?;
        match self.designator_type {
            // SPC-4 §7.8.6.5-7: a 2-byte number in the last half of 4 bytes.
            0x4..=0x6 if self.value.len() == 4 => {
                let n = self.value.get(2..4).and_then(|s| <[u8; 2]>::try_from(s).ok());
                match n {
                    Some(n) => write!(f, "{}", u16::from_be_bytes(n)),
                    None => Ok(()),
                }
            }
            0x1 | 0x8 if self.is_text() => {
                let text = String::from_utf8_lossy(&self.value);
                f.write_str(text.trim_end_matches([' ', '\0']))
            }
            _ if self.is_text() => f.write_str(&ascii_field(&self.value)),
            _ => {
                f.write_str("0x")?;
                self.value.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// SPC-4 §7.8.6: the Device Identification page (0x83), as its list of
/// designation descriptors. A descriptor that runs past the page is an error.
pub fn parse_vpd_device_identification(data: &[u8]) -> Result<Vec<Designator>, DataError> {
    let body = vpd_body(data, 0x83)?;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let offset = 4 + (body.len() - rest.len());
        let Some(([b0, b1, _, len], tail)) = rest.split_first_chunk::<4>().map(|(h, t)| (*h, t)) else {
            return Err(DataError::DesignatorOverrun { offset });
        };
        let Some((value, tail)) = tail.split_at_checked(usize::from(len)) else {
            return Err(DataError::DesignatorOverrun { offset });
        };
        out.push(Designator {
            code_set: b0 & 0x0f,
            association: (b1 >> 4) & 0x03,
            designator_type: b1 & 0x0f,
            value: value.to_vec(),
        });
        rest = tail;
    }
    Ok(out)
}

/// SBC-3 §5.15.2: READ CAPACITY (10) parameter data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCapacity10 {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA; 0xffff_ffff means the
    /// medium is too large for this command (use READ CAPACITY (16)).
    pub last_lba: u32,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_len: u32,
}

impl ReadCapacity10 {
    /// SBC-3 §5.15.2: 8 bytes.
    pub fn parse(data: &[u8]) -> Result<ReadCapacity10, DataError> {
        const WHAT: &str = "READ CAPACITY (10) data";
        Ok(ReadCapacity10 {
            last_lba: u32::from_be_bytes(array(data, 0, WHAT)?),
            block_len: u32::from_be_bytes(array(data, 4, WHAT)?),
        })
    }

    /// SBC-3 §5.15.2: an answer of 0xffff_ffff means "more than 2^32 blocks".
    pub fn needs_read_capacity16(&self) -> bool {
        self.last_lba == u32::MAX
    }

    /// Number of logical blocks (last LBA + 1).
    pub fn blocks(&self) -> u128 {
        u128::from(self.last_lba) + 1
    }

    /// Capacity in bytes; u128 so no value from the wire can overflow.
    pub fn bytes(&self) -> u128 {
        self.blocks().saturating_mul(u128::from(self.block_len))
    }
}

/// SBC-3 §5.16.2: READ CAPACITY (16) parameter data (the fields used here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCapacity16 {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA.
    pub last_lba: u64,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_len: u32,
    /// PROT_EN: protection information is enabled on the medium.
    pub prot_en: bool,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: 2^lbppbe logical blocks
    /// per physical block.
    pub lbppbe: u8,
    /// LBPME: the LU is thin provisioned (logical block provisioning).
    pub lbpme: bool,
}

impl ReadCapacity16 {
    /// SBC-3 §5.16.2: needs the first 16 bytes (of the 32 a target returns).
    pub fn parse(data: &[u8]) -> Result<ReadCapacity16, DataError> {
        const WHAT: &str = "READ CAPACITY (16) data";
        let [b12, b13, b14, _]: [u8; 4] = array(data, 12, WHAT)?;
        Ok(ReadCapacity16 {
            last_lba: u64::from_be_bytes(array(data, 0, WHAT)?),
            block_len: u32::from_be_bytes(array(data, 8, WHAT)?),
            prot_en: b12 & 0x01 != 0,
            lbppbe: b13 & 0x0f,
            lbpme: b14 & 0x80 != 0,
        })
    }

    /// Number of logical blocks (last LBA + 1); u128 because last LBA may be
    /// u64::MAX.
    pub fn blocks(&self) -> u128 {
        u128::from(self.last_lba) + 1
    }

    /// Capacity in bytes; at most 2^64 * 2^32, which u128 holds.
    pub fn bytes(&self) -> u128 {
        self.blocks().saturating_mul(u128::from(self.block_len))
    }

    /// Physical block size in bytes (block_len * 2^lbppbe), if it fits u64.
    pub fn physical_block_len(&self) -> Option<u64> {
        1u64.checked_shl(u32::from(self.lbppbe))?.checked_mul(u64::from(self.block_len))
    }
}

/// SPC-4 §6.33.2: REPORT LUNS parameter data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLuns {
    /// The complete entries returned, each decoded by [`decode_lun`]
    /// (a form it does not know stays the raw 8-byte value).
    pub luns: Vec<u64>,
    /// LUN LIST LENGTH: bytes the full list takes at the target, which may be
    /// more than was returned.
    pub total_len: u32,
}

impl ReportLuns {
    /// Whether the target has more LUNs than were returned.
    pub fn is_truncated(&self) -> bool {
        (self.luns.len() as u64).saturating_mul(8) < u64::from(self.total_len)
    }

    /// The allocation length that returns the whole list (8-byte header plus
    /// the list), for re-issuing REPORT LUNS when [`Self::is_truncated`].
    pub fn needed_alloc_len(&self) -> u32 {
        self.total_len.saturating_add(8)
    }
}

/// SPC-4 §6.33.2: parse REPORT LUNS data. A list cut short by the allocation
/// length yields the complete entries present, with `total_len` telling the
/// full size.
pub fn parse_report_luns(data: &[u8]) -> Result<ReportLuns, DataError> {
    let total_len = u32::from_be_bytes(array(data, 0, "REPORT LUNS header")?);
    if total_len % 8 != 0 {
        return Err(DataError::LunListLength(total_len));
    }
    let list = data.get(8..).unwrap_or_default();
    let list = list.get(..total_len as usize).unwrap_or(list);
    let luns = list
        .chunks_exact(8)
        .filter_map(|c| <[u8; 8]>::try_from(c).ok())
        .map(|e| decode_lun(u64::from_be_bytes(e)))
        .collect();
    Ok(ReportLuns { luns, total_len })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Standard INQUIRY data as tgt answers for a disk LU (vendor "IET",
    /// product "VIRTUAL-DISK", revision "0001", SPC-3).
    fn tgt_disk_inquiry() -> Vec<u8> {
        let mut d = vec![0x00, 0x00, 0x05, 0x12, 59, 0x00, 0x10, 0x02];
        d.extend_from_slice(b"IET     ");
        d.extend_from_slice(b"VIRTUAL-DISK    ");
        d.extend_from_slice(b"0001");
        d.resize(64, 0);
        d
    }

    #[test]
    fn standard_inquiry_tgt() {
        let inq = StandardInquiry::parse(&tgt_disk_inquiry()).unwrap();
        assert_eq!(
            inq,
            StandardInquiry {
                peripheral_qualifier: 0,
                device_type: 0,
                removable: false,
                version: 5,
                vendor: "IET".into(),
                product: "VIRTUAL-DISK".into(),
                revision: "0001".into(),
            }
        );
        assert_eq!(inq.device_type_name(), "disk");
        assert!(inq.is_connected());
    }

    #[test]
    fn standard_inquiry_tgt_controller_lun0() {
        let mut d = tgt_disk_inquiry();
        d[0] = 0x0c;
        d[16..32].copy_from_slice(b"Controller      ");
        let inq = StandardInquiry::parse(&d).unwrap();
        assert_eq!(inq.device_type_name(), "storage array controller");
        assert_eq!(inq.product, "Controller");
    }

    #[test]
    fn standard_inquiry_istgt_exactly_36_bytes() {
        let mut d = vec![0x00, 0x00, 0x05, 0x02, 31, 0, 0, 0x02];
        d.extend_from_slice(b"FreeBSD ");
        d.extend_from_slice(b"iSCSI DISK      ");
        d.extend_from_slice(b"0001");
        assert_eq!(d.len(), STANDARD_INQUIRY_LEN);
        let inq = StandardInquiry::parse(&d).unwrap();
        assert_eq!((inq.vendor.as_str(), inq.product.as_str()), ("FreeBSD", "iSCSI DISK"));
        assert_eq!(inq.revision, "0001");
    }

    #[test]
    fn standard_inquiry_no_lu_and_removable() {
        let mut d = tgt_disk_inquiry();
        d[0] = 0x7f;
        d[1] = 0x80;
        let inq = StandardInquiry::parse(&d).unwrap();
        assert_eq!((inq.peripheral_qualifier, inq.device_type), (3, 0x1f));
        assert!(!inq.is_connected());
        assert!(inq.removable);
        assert_eq!(inq.device_type_name(), "unknown or no device");
    }

    #[test]
    fn standard_inquiry_odd_text() {
        let mut d = tgt_disk_inquiry();
        d[8..16].copy_from_slice(b"AB\xffC\0\0\0\0");
        d[16..32].copy_from_slice(b" lead\0mid  \0    ");
        let inq = StandardInquiry::parse(&d).unwrap();
        assert_eq!(inq.vendor, "AB?C");
        assert_eq!(inq.product, " lead?mid");
    }

    #[test]
    fn standard_inquiry_short() {
        let d = tgt_disk_inquiry();
        assert_eq!(
            StandardInquiry::parse(&d[..35]),
            Err(DataError::TooShort { what: "standard INQUIRY data", need: 36, got: 35 })
        );
        assert!(StandardInquiry::parse(&[]).is_err());
    }

    #[test]
    fn vpd_supported_pages() {
        let d = [0x00, 0x00, 0x00, 0x04, 0x00, 0x80, 0x83, 0xb0, 0xee];
        assert_eq!(parse_vpd_supported_pages(&d).unwrap(), vec![0x00, 0x80, 0x83, 0xb0]);
        assert_eq!(parse_vpd_supported_pages(&d[..6]), Err(DataError::VpdTruncated { page: 0, need: 8, got: 6 }));
        assert_eq!(parse_vpd_supported_pages(&[0, 0x80, 0, 0]), Err(DataError::WrongPage { expected: 0, got: 0x80 }));
        assert!(matches!(parse_vpd_supported_pages(&[0, 0]), Err(DataError::TooShort { .. })));
    }

    #[test]
    fn vpd_unit_serial() {
        let mut d = vec![0x00, 0x80, 0x00, 0x10];
        d.extend_from_slice(b"  beaf11        ");
        assert_eq!(parse_vpd_unit_serial(&d).unwrap(), "beaf11");
        assert_eq!(parse_vpd_unit_serial(&[0, 0x80, 0, 0]).unwrap(), "");
    }

    fn designator(code_set: u8, assoc_type: u8, value: &[u8]) -> Vec<u8> {
        let mut d = vec![code_set, assoc_type, 0, value.len() as u8];
        d.extend_from_slice(value);
        d
    }

    #[test]
    fn vpd_device_identification_tgt_like() {
        let naa = hex::decode("60000000000000000e00000000010001").unwrap();
        let mut body = Vec::new();
        body.extend(designator(0x02, 0x01, b"IET     VIRTUAL-DISK    beaf11\0\0\0"));
        body.extend(designator(0x01, 0x03, &naa));
        body.extend(designator(0x01, 0x02, &[1, 2, 3, 4, 5, 6, 7, 8]));
        body.extend(designator(0x03, 0x28, b"iqn.2024-01.lab.tgt:ram1,t,0x0001\0\0\0"));
        body.extend(designator(0x01, 0x14, &[0, 0, 0, 1]));
        let mut d = vec![0x00, 0x83];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend(body);

        let ids = parse_vpd_device_identification(&d).unwrap();
        assert_eq!(ids.len(), 5);
        assert_eq!(ids[0].to_string(), "T10 vendor ID: IET     VIRTUAL-DISK    beaf11");
        assert_eq!(ids[1].designator_type, 3);
        assert_eq!(ids[1].value, naa);
        assert_eq!(ids[1].to_string(), "NAA: 0x60000000000000000e00000000010001");
        assert_eq!(ids[2].to_string(), "EUI-64: 0x0102030405060708");
        assert_eq!(ids[3].association, 2);
        assert_eq!(ids[3].association_name(), "target device");
        assert_eq!(ids[3].to_string(), "SCSI name string: iqn.2024-01.lab.tgt:ram1,t,0x0001");
        assert_eq!(ids[4].association, 1);
        assert_eq!(ids[4].to_string(), "relative target port: 1");
    }

    #[test]
    fn vpd_device_identification_bad() {
        // Descriptor says 16 bytes but the page holds 4 after its header.
        let d = [0x00, 0x83, 0x00, 0x08, 0x01, 0x03, 0x00, 0x10, 1, 2, 3, 4];
        assert_eq!(parse_vpd_device_identification(&d), Err(DataError::DesignatorOverrun { offset: 4 }));
        // A 2-byte leftover that cannot hold a descriptor header.
        let d = [0x00, 0x83, 0x00, 0x06, 0x01, 0x03, 0x00, 0x00, 9, 9];
        assert_eq!(parse_vpd_device_identification(&d), Err(DataError::DesignatorOverrun { offset: 8 }));
        assert_eq!(parse_vpd_device_identification(&[0, 0x83, 0, 0]).unwrap(), vec![]);
    }

    #[test]
    fn read_capacity10_one_gib() {
        let d = hex::decode("001fffff00000200").unwrap();
        let rc = ReadCapacity10::parse(&d).unwrap();
        assert_eq!(rc, ReadCapacity10 { last_lba: 0x1f_ffff, block_len: 512 });
        assert_eq!(rc.blocks(), 2 * 1024 * 1024);
        assert_eq!(rc.bytes(), 1 << 30);
        assert!(!rc.needs_read_capacity16());
        assert!(ReadCapacity10::parse(&d[..7]).is_err());
    }

    #[test]
    fn read_capacity10_extremes() {
        let rc = ReadCapacity10::parse(&[0xff; 8]).unwrap();
        assert!(rc.needs_read_capacity16());
        assert_eq!(rc.blocks(), 1 << 32);
        assert_eq!(rc.bytes(), (1u128 << 32) * u128::from(u32::MAX));
    }

    #[test]
    fn read_capacity16_fields() {
        let mut d = hex::decode("000000000007ffff00001000").unwrap();
        d.extend_from_slice(&[0x01, 0x03, 0x80, 0x00]);
        d.resize(32, 0);
        let rc = ReadCapacity16::parse(&d).unwrap();
        assert_eq!(rc, ReadCapacity16 { last_lba: 0x7ffff, block_len: 4096, prot_en: true, lbppbe: 3, lbpme: true });
        assert_eq!(rc.blocks(), 0x80000);
        assert_eq!(rc.bytes(), 2 << 30);
        assert_eq!(rc.physical_block_len(), Some(32768));
        assert!(ReadCapacity16::parse(&d[..16]).is_ok());
        assert_eq!(
            ReadCapacity16::parse(&d[..15]),
            Err(DataError::TooShort { what: "READ CAPACITY (16) data", need: 16, got: 15 })
        );
    }

    #[test]
    fn read_capacity16_extremes() {
        let rc = ReadCapacity16::parse(&[0xff; 32]).unwrap();
        assert_eq!(rc.blocks(), 1u128 << 64);
        assert_eq!(rc.bytes(), (1u128 << 64) * u128::from(u32::MAX));
        assert_eq!(rc.physical_block_len(), Some(u64::from(u32::MAX) << 15));
    }

    #[test]
    fn report_luns_tgt_two_luns() {
        let d = hex::decode(
            "0000001000000000\
             0000000000000000\
             0001000000000000",
        )
        .unwrap();
        let r = parse_report_luns(&d).unwrap();
        assert_eq!(r, ReportLuns { luns: vec![0, 1], total_len: 16 });
        assert!(!r.is_truncated());
    }

    #[test]
    fn report_luns_truncated_and_padded() {
        // Three LUNs at the target, 16-byte allocation: header + one entry.
        let d = hex::decode("000000180000000041000000000000000001").unwrap();
        let r = parse_report_luns(&d).unwrap();
        assert_eq!(r.luns, vec![256]);
        assert!(r.is_truncated());
        assert_eq!(r.needed_alloc_len(), 32);
        // Data longer than the list: the extra is ignored.
        let mut d = hex::decode("00000008000000000005000000000000").unwrap();
        d.extend_from_slice(&[0xaa; 24]);
        assert_eq!(parse_report_luns(&d).unwrap().luns, vec![5]);
        // An empty list with only 4 header bytes still parses.
        assert_eq!(parse_report_luns(&[0, 0, 0, 0]).unwrap().luns, Vec::<u64>::new());
    }

    #[test]
    fn report_luns_bad() {
        assert_eq!(parse_report_luns(&hex::decode("0000000c00000000").unwrap()), Err(DataError::LunListLength(12)));
        assert!(matches!(parse_report_luns(&[0, 0, 0]), Err(DataError::TooShort { .. })));
        let r = parse_report_luns(&[0xff, 0xff, 0xff, 0xf8]).unwrap();
        assert_eq!(r.needed_alloc_len(), u32::MAX);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = StandardInquiry::parse(&data);
            let _ = parse_vpd_supported_pages(&data);
            let _ = parse_vpd_unit_serial(&data);
            if let Ok(ids) = parse_vpd_device_identification(&data) {
                for id in ids {
                    let _ = id.to_string();
                }
            }
            if let Ok(rc) = ReadCapacity10::parse(&data) {
                let _ = (rc.blocks(), rc.bytes());
            }
            if let Ok(rc) = ReadCapacity16::parse(&data) {
                let _ = (rc.blocks(), rc.bytes(), rc.physical_block_len());
            }
            if let Ok(r) = parse_report_luns(&data) {
                prop_assert!(r.luns.len() * 8 <= data.len());
                let _ = (r.is_truncated(), r.needed_alloc_len());
            }
        }

        #[test]
        fn device_identification_on_valid_header(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut d = vec![0, 0x83];
            d.extend_from_slice(&(body.len() as u16).to_be_bytes());
            d.extend(body);
            if let Ok(ids) = parse_vpd_device_identification(&d) {
                for id in ids {
                    let _ = id.to_string();
                }
            }
        }
    }

    #[test]
    fn block_limits_reads_sbc3_fields_and_tolerates_a_short_page() {
        let mut page = vec![0u8; 64];
        page[1] = 0xb0;
        page[3] = 0x3c;
        page[8..12].copy_from_slice(&2048u32.to_be_bytes());
        page[12..16].copy_from_slice(&128u32.to_be_bytes());
        page[20..24].copy_from_slice(&4096u32.to_be_bytes());
        page[24..28].copy_from_slice(&16u32.to_be_bytes());
        page[28..32].copy_from_slice(&8u32.to_be_bytes());
        page[36..44].copy_from_slice(&65535u64.to_be_bytes());
        let l = BlockLimits::parse(&page).unwrap();
        assert_eq!(l.max_transfer_blocks, 2048);
        assert_eq!(l.optimal_transfer_blocks, 128);
        assert_eq!(l.max_unmap_blocks, 4096);
        assert_eq!(l.max_unmap_descriptors, 16);
        assert_eq!(l.unmap_granularity, 8);
        assert_eq!(l.max_write_same_blocks, 65535);
        // SBC-2's 12-byte body: transfer lengths only.
        let short = [&[0, 0xb0, 0, 12][..], &page[4..16]].concat();
        let l = BlockLimits::parse(&short).unwrap();
        assert_eq!((l.max_transfer_blocks, l.max_unmap_blocks, l.max_write_same_blocks), (2048, 0, 0));
        assert!(matches!(BlockLimits::parse(&page[..3]), Err(DataError::TooShort { .. })));
        assert!(matches!(BlockLimits::parse(&[0, 0xb2, 0, 0]), Err(DataError::WrongPage { .. })));
    }

    #[test]
    fn provisioning_flags() {
        let p = LogicalBlockProvisioning::parse(&[0, 0xb2, 0, 4, 0, 0xc4, 0, 0]).unwrap();
        assert_eq!(p, LogicalBlockProvisioning { unmap: true, write_same16_unmap: true, reads_zeroes: true });
        let p = LogicalBlockProvisioning::parse(&[0, 0xb2, 0, 4, 0, 0x00, 0, 0]).unwrap();
        assert_eq!(p, LogicalBlockProvisioning::default());
        assert!(LogicalBlockProvisioning::parse(&[0, 0xb2, 0, 1, 0]).is_err());
    }
}
