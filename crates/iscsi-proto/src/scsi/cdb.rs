//! CDB builders. A CDB is at most 16 bytes here; `len` says how many count.
//!
//! Layouts follow SPC-4 (TEST UNIT READY, INQUIRY, REPORT LUNS) and SBC-3
//! (READ CAPACITY, READ, WRITE, SYNCHRONIZE CACHE). Every builder leaves the
//! flag, group number and CONTROL bytes zero: no FUA, no DPO, no protection
//! information, no NACA.

/// A command descriptor block and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    pub bytes: [u8; 16],
    pub len: u8,
}

/// SPC-4 §6.37 (TEST UNIT READY).
pub const OP_TEST_UNIT_READY: u8 = 0x00;
/// SPC-4 §6.6 (INQUIRY).
pub const OP_INQUIRY: u8 = 0x12;
/// SPC-4 §6.33 (REPORT LUNS).
pub const OP_REPORT_LUNS: u8 = 0xA0;
/// SBC-3 §5.15 (READ CAPACITY (10)).
pub const OP_READ_CAPACITY10: u8 = 0x25;
/// SBC-3 §5.16: READ CAPACITY (16) is SERVICE ACTION IN (16) with service action 0x10.
pub const OP_SERVICE_ACTION_IN16: u8 = 0x9E;
/// SBC-3 §5.16: the service action of READ CAPACITY (16).
pub const SA_READ_CAPACITY16: u8 = 0x10;
/// SBC-3 §5.11 (READ (10)).
pub const OP_READ10: u8 = 0x28;
/// SBC-3 §5.13 (READ (16)).
pub const OP_READ16: u8 = 0x88;
/// SBC-3 §5.32 (WRITE (10)).
pub const OP_WRITE10: u8 = 0x2A;
/// SBC-3 §5.34 (WRITE (16)).
pub const OP_WRITE16: u8 = 0x8A;
/// SBC-3 §5.22 (SYNCHRONIZE CACHE (10)).
pub const OP_SYNCHRONIZE_CACHE10: u8 = 0x35;
/// SBC-3 §5.23 (SYNCHRONIZE CACHE (16)).
pub const OP_SYNCHRONIZE_CACHE16: u8 = 0x91;
/// SBC-3 §5.43 (WRITE SAME (16)).
pub const OP_WRITE_SAME16: u8 = 0x93;
/// SBC-3 §5.28 (UNMAP).
pub const OP_UNMAP: u8 = 0x42;

impl Cdb {
    /// The bytes that make up the CDB (`len` of them).
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&self.bytes)
    }

    /// The OPERATION CODE (byte 0 of every CDB, SPC-4 §4.2.5.1).
    pub fn opcode(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }

    /// The command's name as SPC-4 and SBC-3 give it (`READ(16)`), for an
    /// error a user reads; `None` for an operation code not built here.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self.opcode() {
            OP_TEST_UNIT_READY => "TEST UNIT READY",
            OP_INQUIRY => "INQUIRY",
            OP_READ_CAPACITY10 => "READ CAPACITY(10)",
            OP_READ10 => "READ(10)",
            OP_WRITE10 => "WRITE(10)",
            OP_SYNCHRONIZE_CACHE10 => "SYNCHRONIZE CACHE(10)",
            OP_READ16 => "READ(16)",
            OP_WRITE16 => "WRITE(16)",
            OP_SYNCHRONIZE_CACHE16 => "SYNCHRONIZE CACHE(16)",
            OP_WRITE_SAME16 => "WRITE SAME(16)",
            OP_UNMAP => "UNMAP",
            OP_SERVICE_ACTION_IN16 if self.bytes.get(1).map(|b| b & 0x1f) == Some(SA_READ_CAPACITY16) => {
                "READ CAPACITY(16)"
            }
            OP_REPORT_LUNS => "REPORT LUNS",
            _ => return None,
        })
    }

    /// A CDB from raw bytes, for pass-through of commands not built here.
    /// `None` if `raw` is empty or longer than 16 bytes.
    pub fn from_slice(raw: &[u8]) -> Option<Cdb> {
        if raw.is_empty() {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes.get_mut(..raw.len())?.copy_from_slice(raw);
        Some(Cdb { bytes, len: u8::try_from(raw.len()).ok()? })
    }

    /// A zeroed CDB of `N` bytes with `opcode` in byte 0; `N` is 6, 10, 12 or 16.
    fn build<const N: usize>(opcode: u8, fill: impl FnOnce(&mut [u8; N])) -> Cdb {
        let mut head = [0u8; N];
        if let Some(op) = head.first_mut() {
            *op = opcode;
        }
        fill(&mut head);
        let mut bytes = [0u8; 16];
        for (dst, src) in bytes.iter_mut().zip(head.iter()) {
            *dst = *src;
        }
        Cdb { bytes, len: u8::try_from(N).unwrap_or(16) }
    }
}

/// Copies `src` into `dst` at `at`; a no-op if it would not fit, which the
/// fixed CDB sizes below never hit.
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = at.checked_add(src.len()).and_then(|end| dst.get_mut(at..end)) {
        d.copy_from_slice(src);
    }
}

/// SPC-4 §6.37: TEST UNIT READY (6 bytes, all fields zero).
pub fn test_unit_ready() -> Cdb {
    Cdb::build::<6>(OP_TEST_UNIT_READY, |_| {})
}

/// SPC-4 §6.6.1: INQUIRY. With `evpd` false the target returns standard
/// INQUIRY data and `page` must be 0 (otherwise the target answers
/// ILLEGAL REQUEST); with `evpd` true it returns VPD page `page`.
pub fn inquiry(evpd: bool, page: u8, alloc_len: u16) -> Cdb {
    Cdb::build::<6>(OP_INQUIRY, |c| {
        put(c, 1, &[u8::from(evpd)]);
        put(c, 2, &[page]);
        put(c, 3, &alloc_len.to_be_bytes());
    })
}

/// SPC-4 §6.33: REPORT LUNS with SELECT REPORT 0 (all LUs the I_T nexus may
/// address). SPC-4 requires an allocation length of at least 16.
pub fn report_luns(alloc_len: u32) -> Cdb {
    Cdb::build::<12>(OP_REPORT_LUNS, |c| put(c, 6, &alloc_len.to_be_bytes()))
}

/// SBC-3 §5.15: READ CAPACITY (10), LBA 0 and PMI 0. Returns 8 bytes.
pub fn read_capacity10() -> Cdb {
    Cdb::build::<10>(OP_READ_CAPACITY10, |_| {})
}

/// SBC-3 §5.16: READ CAPACITY (16), LBA 0 and PMI 0. The target returns
/// 32 bytes of parameter data (fewer if `alloc_len` is smaller).
pub fn read_capacity16(alloc_len: u32) -> Cdb {
    Cdb::build::<16>(OP_SERVICE_ACTION_IN16, |c| {
        put(c, 1, &[SA_READ_CAPACITY16]);
        put(c, 10, &alloc_len.to_be_bytes());
    })
}

/// The 10-byte layout shared by READ (10), WRITE (10) and SYNCHRONIZE
/// CACHE (10): LBA in bytes 2..6, length in bytes 7..9 (SBC-3 §5.11).
fn rw10(opcode: u8, lba: u32, blocks: u16) -> Cdb {
    Cdb::build::<10>(opcode, |c| {
        put(c, 2, &lba.to_be_bytes());
        put(c, 7, &blocks.to_be_bytes());
    })
}

/// The 16-byte layout shared by READ (16), WRITE (16) and SYNCHRONIZE
/// CACHE (16): LBA in bytes 2..10, length in bytes 10..14 (SBC-3 §5.13).
fn rw16(opcode: u8, lba: u64, blocks: u32) -> Cdb {
    Cdb::build::<16>(opcode, |c| {
        put(c, 2, &lba.to_be_bytes());
        put(c, 10, &blocks.to_be_bytes());
    })
}

/// SBC-3 §5.11: READ (10). A TRANSFER LENGTH of 0 transfers nothing.
pub fn read10(lba: u32, blocks: u16) -> Cdb {
    rw10(OP_READ10, lba, blocks)
}

/// SBC-3 §5.13: READ (16).
pub fn read16(lba: u64, blocks: u32) -> Cdb {
    rw16(OP_READ16, lba, blocks)
}

/// SBC-3 §5.32: WRITE (10). A TRANSFER LENGTH of 0 transfers nothing.
pub fn write10(lba: u32, blocks: u16) -> Cdb {
    rw10(OP_WRITE10, lba, blocks)
}

/// SBC-3 §5.34: WRITE (16).
pub fn write16(lba: u64, blocks: u32) -> Cdb {
    rw16(OP_WRITE16, lba, blocks)
}

/// SBC-3 §5.34: WRITE (16) with FUA set: the target reports GOOD only once
/// the data is on the medium, not just in its cache (what NBD's FUA flag asks).
pub fn write16_fua(lba: u64, blocks: u32) -> Cdb {
    let mut c = rw16(OP_WRITE16, lba, blocks);
    if let Some(flags) = c.bytes.get_mut(1) {
        *flags |= 0x08;
    }
    c
}

/// SBC-3 §5.43: WRITE SAME (16): the one block of data-out is written to
/// every block of the range. With `unmap` the target may deallocate the
/// blocks instead, if they then read back as that data (SBC-3 §4.7.3.4).
pub fn write_same16(lba: u64, blocks: u32, unmap: bool) -> Cdb {
    let mut c = rw16(OP_WRITE_SAME16, lba, blocks);
    if let Some(flags) = c.bytes.get_mut(1) {
        *flags |= if unmap { 0x08 } else { 0 };
    }
    c
}

/// SBC-3 §5.28: UNMAP, ANCHOR 0; its parameter list (see
/// [`unmap_parameters`]) is `param_len` bytes of data-out.
pub fn unmap(param_len: u16) -> Cdb {
    Cdb::build::<10>(OP_UNMAP, |c| put(c, 7, &param_len.to_be_bytes()))
}

/// SBC-3 §5.28.2: the UNMAP parameter list: an 8-byte header and one 16-byte
/// block descriptor (LBA, number of blocks) per range.
pub fn unmap_parameters(ranges: &[(u64, u32)]) -> Vec<u8> {
    let descriptors = ranges.len().saturating_mul(16);
    let mut out = Vec::with_capacity(8 + descriptors);
    out.extend_from_slice(&u16::try_from(descriptors + 6).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&u16::try_from(descriptors).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for (lba, blocks) in ranges {
        out.extend_from_slice(&lba.to_be_bytes());
        out.extend_from_slice(&blocks.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
    }
    out
}

/// SBC-3 §5.22: SYNCHRONIZE CACHE (10), IMMED 0 (status after the flush).
/// `blocks` 0 means from `lba` to the end of the medium.
pub fn synchronize_cache10(lba: u32, blocks: u16) -> Cdb {
    rw10(OP_SYNCHRONIZE_CACHE10, lba, blocks)
}

/// SBC-3 §5.23: SYNCHRONIZE CACHE (16), IMMED 0.
/// `blocks` 0 means from `lba` to the end of the medium.
pub fn synchronize_cache16(lba: u64, blocks: u32) -> Cdb {
    rw16(OP_SYNCHRONIZE_CACHE16, lba, blocks)
}

/// Whether the whole range `lba .. lba + blocks` is addressable by a 10-byte
/// CDB: the LBA and the length fit their fields, and the range does not run
/// past LBA 2^32 - 1 (SBC-3 §4.5: the 10-byte forms only address the first
/// 2^32 blocks, so a range crossing that line goes in a 16-byte CDB).
fn fits_10(lba: u64, blocks: u32) -> bool {
    u16::try_from(blocks).is_ok() && u128::from(lba) + u128::from(blocks) <= u128::from(u32::MAX) + 1
}

/// READ (10) when `lba` and `blocks` fit it, otherwise READ (16).
pub fn read(lba: u64, blocks: u32) -> Cdb {
    match (u32::try_from(lba), u16::try_from(blocks)) {
        (Ok(l), Ok(b)) if fits_10(lba, blocks) => read10(l, b),
        _ => read16(lba, blocks),
    }
}

/// WRITE (10) when `lba` and `blocks` fit it, otherwise WRITE (16).
pub fn write(lba: u64, blocks: u32) -> Cdb {
    match (u32::try_from(lba), u16::try_from(blocks)) {
        (Ok(l), Ok(b)) if fits_10(lba, blocks) => write10(l, b),
        _ => write16(lba, blocks),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_named_as_the_standards_name_them() {
        assert_eq!(read16(0, 1).name(), Some("READ(16)"));
        assert_eq!(write16(0, 1).name(), Some("WRITE(16)"));
        assert_eq!(write_same16(0, 1, false).name(), Some("WRITE SAME(16)"));
        assert_eq!(unmap(24).name(), Some("UNMAP"));
        assert_eq!(read_capacity16(32).name(), Some("READ CAPACITY(16)"));
        assert_eq!(Cdb::from_slice(&[0x9e, 0x11]).and_then(|c| c.name()), None, "another service action");
        assert_eq!(Cdb::from_slice(&[0x5a, 0, 0]).and_then(|c| c.name()), None);
    }

    fn hex(c: &Cdb) -> String {
        hex::encode(c.as_slice())
    }

    #[test]
    fn test_unit_ready_is_six_zero_bytes() {
        assert_eq!(hex(&test_unit_ready()), "000000000000");
        assert_eq!(test_unit_ready().len, 6);
    }

    #[test]
    fn inquiry_standard_and_vpd() {
        assert_eq!(hex(&inquiry(false, 0, 96)), "120000006000");
        assert_eq!(hex(&inquiry(true, 0x83, 0x1234)), "120183123400");
        assert_eq!(hex(&inquiry(true, 0x80, 255)), "12018000ff00");
    }

    #[test]
    fn report_luns_layout() {
        assert_eq!(hex(&report_luns(16)), "a00000000000000000100000");
        assert_eq!(hex(&report_luns(0x0102_0304)), "a00000000000010203040000");
        assert_eq!(report_luns(16).len, 12);
    }

    #[test]
    fn read_capacity_layouts() {
        assert_eq!(hex(&read_capacity10()), "25000000000000000000");
        assert_eq!(hex(&read_capacity16(32)), "9e100000000000000000000000200000");
    }

    #[test]
    fn read_write_10() {
        assert_eq!(hex(&read10(0x0102_0304, 0x0506)), "28000102030400050600");
        assert_eq!(hex(&write10(0xffff_ffff, 0xffff)), "2a00ffffffff00ffff00");
    }

    #[test]
    fn read_write_16() {
        assert_eq!(hex(&read16(0x0102_0304_0506_0708, 0x090a_0b0c)), "88000102030405060708090a0b0c0000");
        assert_eq!(hex(&write16(u64::MAX, u32::MAX)), "8a00ffffffffffffffffffffffff0000");
        assert_eq!(hex(&write16_fua(1, 2)), "8a080000000000000001000000020000");
        assert_eq!(hex(&write_same16(3, 4, true)), "93080000000000000003000000040000");
        assert_eq!(hex(&write_same16(3, 4, false)), "93000000000000000003000000040000");
        assert_eq!(hex(&unmap(24)), "42000000000000001800");
    }

    #[test]
    fn synchronize_cache_layouts() {
        assert_eq!(hex(&synchronize_cache10(0, 0)), "35000000000000000000");
        assert_eq!(hex(&synchronize_cache10(8, 2)), "35000000000800000200");
        assert_eq!(hex(&synchronize_cache16(1 << 32, 7)), "91000000000100000000000000070000");
    }

    #[test]
    fn read_and_write_pick_the_smallest_form() {
        assert_eq!(read(0, 8), read10(0, 8));
        assert_eq!(write(100, 0xffff), write10(100, 0xffff));
        assert_eq!(read(0, 0x1_0000), read16(0, 0x1_0000));
        assert_eq!(write(1 << 32, 1), write16(1 << 32, 1));
        // The last addressable 10-byte block, and one range that crosses it.
        assert_eq!(read(0xffff_ffff, 1), read10(0xffff_ffff, 1));
        assert_eq!(read(0xffff_ffff, 2), read16(0xffff_ffff, 2));
        assert_eq!(read(u64::MAX, u32::MAX).opcode(), OP_READ16);
    }

    #[test]
    fn from_slice_bounds() {
        assert_eq!(Cdb::from_slice(&[]), None);
        assert_eq!(Cdb::from_slice(&[0u8; 17]), None);
        let c = Cdb::from_slice(&[0x12, 0, 0, 0, 36, 0]).unwrap();
        assert_eq!(c, inquiry(false, 0, 36));
        assert_eq!(Cdb::from_slice(&[0u8; 16]).unwrap().as_slice().len(), 16);
    }

    #[test]
    fn as_slice_tolerates_a_bad_len() {
        let c = Cdb { bytes: [1; 16], len: 200 };
        assert_eq!(c.as_slice().len(), 16);
    }

    #[test]
    fn unmap_parameters_follow_sbc3_5_28_2() {
        let p = unmap_parameters(&[(0x10, 8), (u64::MAX - 1, 1)]);
        assert_eq!(p.len(), 8 + 32);
        assert_eq!(
            hex::encode(&p),
            concat!(
                "0026",
                "0020",
                "00000000",
                "0000000000000010",
                "00000008",
                "00000000",
                "fffffffffffffffe",
                "00000001",
                "00000000"
            )
        );
        assert_eq!(hex::encode(unmap_parameters(&[])), "0006000000000000");
    }
}
