//! The RAM-backed logical unit: the few SCSI commands (SPC-4, SBC-3) an
//! initiator needs (TEST UNIT READY, INQUIRY, MODE SENSE(6), READ CAPACITY,
//! REPORT LUNS, READ/WRITE/WRITE AND VERIFY/VERIFY 10/12/16, SYNCHRONIZE
//! CACHE), with CHECK CONDITION and fixed-format sense otherwise.

/// SAM-5 status codes used here.
pub const GOOD: u8 = 0x00;
pub const CHECK_CONDITION: u8 = 0x02;

/// SPC-4 §4.5.2.1 sense keys used here.
const ILLEGAL_REQUEST: u8 = 0x05;
const MISCOMPARE: u8 = 0x0e;
pub const ABORTED_COMMAND: u8 = 0x0b;

/// Additional sense codes (SPC-4 Table 48).
const INVALID_COMMAND_OPERATION_CODE: (u8, u8) = (0x20, 0x00);
const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
const MISCOMPARE_DURING_VERIFY: (u8, u8) = (0x1d, 0x00);
const SAVING_PARAMETERS_NOT_SUPPORTED: (u8, u8) = (0x39, 0x00);
/// RFC 7143 §11.4.7.2: the sense a task ended for a lost or out-of-order
/// Data-Out PDU gets (§7.8.1, "Protocol Service CRC error").
pub const PROTOCOL_SERVICE_CRC_ERROR: (u8, u8) = (0x47, 0x05);

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScsiResult {
    pub status: u8,
    /// Fixed-format sense data (SPC-4 §4.5.3), empty on GOOD.
    pub sense: Vec<u8>,
    /// Data-In, before the initiator's allocation/transfer length is applied.
    pub data: Vec<u8>,
}

impl ScsiResult {
    fn good(data: Vec<u8>) -> Self {
        Self { status: GOOD, sense: Vec::new(), data }
    }

    pub fn check(key: u8, (asc, ascq): (u8, u8)) -> Self {
        let sense = vec![0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0];
        Self { status: CHECK_CONDITION, sense, data: Vec::new() }
    }
}

/// A direct-access block device (peripheral type 0) kept in memory.
#[derive(Debug)]
pub struct RamLun {
    data: Vec<u8>,
    block_size: u32,
}

/// Big-endian field of a CDB, 0 where the CDB is too short.
fn be(cdb: &[u8], at: usize, len: usize) -> u64 {
    cdb.get(at..at + len).map_or(0, |b| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// Cuts `data` to the CDB's allocation length (SPC-4 §4.2.5.6).
fn allocated(mut data: Vec<u8>, alloc: u64) -> Vec<u8> {
    data.truncate(usize::try_from(alloc).unwrap_or(usize::MAX));
    data
}

impl RamLun {
    pub fn new(size: u64, block_size: u32) -> Self {
        let block_size = block_size.max(1);
        let blocks = size / u64::from(block_size);
        let len = usize::try_from(blocks * u64::from(block_size)).unwrap_or(0);
        Self { data: vec![0; len], block_size }
    }

    pub fn blocks(&self) -> u64 {
        self.data.len() as u64 / u64::from(self.block_size)
    }

    /// A copy of the stored bytes (short or empty past the end).
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        self.data.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// The byte range of `blocks` blocks at `lba`, when inside the LUN.
    fn range(&self, lba: u64, blocks: u64) -> Option<std::ops::Range<usize>> {
        let end = lba.checked_add(blocks).filter(|e| *e <= self.blocks())?;
        let bs = u64::from(self.block_size);
        Some(usize::try_from(lba * bs).ok()?..usize::try_from(end * bs).ok()?)
    }

    /// Whether the CDB moves data from the initiator: WRITE and WRITE AND
    /// VERIFY (10/12/16, SBC-3 §5.32-5.38).
    pub fn is_write(cdb: &[u8]) -> bool {
        matches!(cdb.first(), Some(0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e))
    }

    /// LBA and TRANSFER LENGTH of a READ or WRITE (AND VERIFY) CDB of size
    /// 10, 12 or 16 (SBC-3 §5.11-5.15, §5.32-5.38).
    fn lba_and_length(cdb: &[u8]) -> Option<(u64, u64)> {
        match cdb.first()? {
            0x28 | 0x2a | 0x2e | 0x2f => Some((be(cdb, 2, 4), be(cdb, 7, 2))),
            0xa8 | 0xaa | 0xae | 0xaf => Some((be(cdb, 2, 4), be(cdb, 6, 4))),
            0x88 | 0x8a | 0x8e | 0x8f => Some((be(cdb, 2, 8), be(cdb, 10, 4))),
            _ => None,
        }
    }

    /// BYTCHK of a VERIFY (10/12/16) CDB (SBC-4 §5.30: 0 no compare, 1
    /// compare every block, 3 compare one block with each); `None` for
    /// other commands.
    fn verify_bytchk(cdb: &[u8]) -> Option<u8> {
        match cdb.first()? {
            0x2f | 0xaf | 0x8f => Some((cdb.get(1)? >> 1) & 0x03),
            _ => None,
        }
    }

    /// Whether the CDB moves data from the initiator: a write, or a VERIFY
    /// that compares.
    pub fn takes_data_out(cdb: &[u8]) -> bool {
        Self::is_write(cdb) || Self::verify_bytchk(cdb).is_some_and(|b| b != 0)
    }

    /// The bytes the CDB itself asks the initiator to send (SCSI's idea of
    /// the transfer, against which the iSCSI residual is counted, RFC 7143
    /// §11.4.5): TRANSFER LENGTH blocks for a write or a comparing VERIFY,
    /// one block for VERIFY with BYTCHK 3, 0 otherwise.
    pub fn data_out_length(&self, cdb: &[u8]) -> u64 {
        let Some((_, n)) = Self::lba_and_length(cdb) else { return 0 };
        let bs = u64::from(self.block_size);
        match Self::verify_bytchk(cdb) {
            Some(1) => n.saturating_mul(bs),
            Some(3) if n > 0 => bs,
            Some(_) => 0,
            None if Self::is_write(cdb) => n.saturating_mul(bs),
            None => 0,
        }
    }

    /// Runs one command. `data_out` is the whole Data-Out of a write.
    pub fn execute(&mut self, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        let Some(&op) = cdb.first() else {
            return ScsiResult::check(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE);
        };
        match op {
            // TEST UNIT READY, SYNCHRONIZE CACHE (10/16): nothing to do in RAM.
            0x00 | 0x35 | 0x91 => ScsiResult::good(Vec::new()),
            0x12 => self.inquiry(cdb),
            0x25 => {
                // SBC-3 §5.16: the last LBA, all ones when it does not fit.
                let last = u32::try_from(self.blocks().saturating_sub(1)).unwrap_or(u32::MAX);
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&self.block_size.to_be_bytes());
                ScsiResult::good(d)
            }
            0x9e if cdb.get(1).map(|b| b & 0x1f) == Some(0x10) => {
                // SBC-3 §5.17: READ CAPACITY (16).
                let mut d = vec![0u8; 32];
                d.splice(0..8, self.blocks().saturating_sub(1).to_be_bytes());
                d.splice(8..12, self.block_size.to_be_bytes());
                ScsiResult::good(allocated(d, be(cdb, 10, 4)))
            }
            0xa0 => {
                // SPC-4 §6.33: one LUN, 0.
                let mut d = 8u32.to_be_bytes().to_vec();
                d.extend_from_slice(&[0; 12]);
                ScsiResult::good(allocated(d, be(cdb, 6, 4)))
            }
            0x28 | 0xa8 | 0x88 | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e => self.read_write(cdb, data_out),
            0x2f | 0xaf | 0x8f => self.verify(cdb, data_out),
            0x1a => self.mode_sense6(cdb),
            _ => ScsiResult::check(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE),
        }
    }

    /// READ, WRITE and WRITE AND VERIFY. SBC-3 §5.11: without protection
    /// information a nonzero RDPROTECT/WRPROTECT is an invalid field. A
    /// write stores what arrived, up to TRANSFER LENGTH blocks: with less
    /// Data-Out than the CDB asks for (an overflow, RFC 7143 §11.4.5.1) only
    /// those bytes change (FCP-4 §9.4.2 a: "process the command normally
    /// except that data beyond the expected length is not transferred").
    /// WRITE AND VERIFY's verify of a RAM copy always succeeds.
    fn read_write(&mut self, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        let Some((lba, n)) = Self::lba_and_length(cdb) else {
            return ScsiResult::check(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE);
        };
        if cdb.get(1).is_some_and(|b| b & 0xe0 != 0) {
            return ScsiResult::check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
        }
        let Some(range) = self.range(lba, n) else {
            return ScsiResult::check(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE);
        };
        if !Self::is_write(cdb) {
            return ScsiResult::good(self.data.get(range).map(<[u8]>::to_vec).unwrap_or_default());
        }
        let len = data_out.len().min(range.len());
        match (self.data.get_mut(range.start..range.start + len), data_out.get(..len)) {
            (Some(dst), Some(src)) => {
                dst.copy_from_slice(src);
                ScsiResult::good(Vec::new())
            }
            _ => ScsiResult::check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB),
        }
    }

    /// VERIFY (10/12/16), SBC-4 §5.30-5.32: the medium is RAM, so only the
    /// byte compare can fail: MISCOMPARE, with the offset of the first
    /// unequal byte in the Data-Out buffer in INFORMATION (SBC-4 §4.16).
    fn verify(&self, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        let (Some((lba, n)), Some(bytchk)) = (Self::lba_and_length(cdb), Self::verify_bytchk(cdb)) else {
            return ScsiResult::check(ILLEGAL_REQUEST, INVALID_COMMAND_OPERATION_CODE);
        };
        if cdb.get(1).is_some_and(|b| b & 0xe0 != 0) || bytchk == 2 {
            return ScsiResult::check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
        }
        let Some(range) = self.range(lba, n) else {
            return ScsiResult::check(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE);
        };
        let Some(medium) = self.data.get(range) else {
            return ScsiResult::check(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE);
        };
        let bs = self.block_size as usize;
        // Each block of the medium against the Data-Out byte that should match it.
        let expected = |i: usize| match bytchk {
            1 => data_out.get(i).copied(),
            3 => data_out.get(i % bs).copied(),
            _ => None,
        };
        if bytchk == 0 {
            return ScsiResult::good(Vec::new());
        }
        match medium.iter().enumerate().find(|(i, b)| expected(*i) != Some(**b)) {
            None => ScsiResult::good(Vec::new()),
            Some((at, _)) => {
                let mut r = ScsiResult::check(MISCOMPARE, MISCOMPARE_DURING_VERIFY);
                let info = u32::try_from(if bytchk == 3 { at % bs } else { at }).unwrap_or(u32::MAX);
                if let Some(f) = r.sense.get_mut(3..7) {
                    f.copy_from_slice(&info.to_be_bytes());
                }
                if let Some(b) = r.sense.first_mut() {
                    *b |= 0x80; // VALID: INFORMATION holds the offset
                }
                r
            }
        }
    }

    /// MODE SENSE(6), SPC-4 §6.11, for the caching (0x08, SBC-3 §6.4.5)
    /// and control (0x0A, SPC-4 §7.5.8) pages or all of them (0x3F): the
    /// header says DPOFUA (SBC-3 §6.4.2: DPO and FUA are accepted; RAM has
    /// no cache to bypass), not write-protected; one block descriptor
    /// unless DBD. Control: fixed-format sense (D_SENSE 0, as this LUN
    /// returns), SWP 0. Nothing is changeable and nothing can be saved
    /// (there is no MODE SELECT).
    fn mode_sense6(&self, cdb: &[u8]) -> ScsiResult {
        let dbd = cdb.get(1).is_some_and(|b| b & 0x08 != 0);
        let pc = cdb.get(2).map_or(0, |b| b >> 6);
        let page = cdb.get(2).map_or(0, |b| b & 0x3f);
        let subpage = cdb.get(3).copied().unwrap_or(0);
        let alloc = be(cdb, 4, 1);
        if pc == 3 {
            return ScsiResult::check(ILLEGAL_REQUEST, SAVING_PARAMETERS_NOT_SUPPORTED);
        }
        let changeable = pc == 1;
        let caching = || {
            let mut p = vec![0x08, 0x12];
            p.resize(20, 0);
            if !changeable && let Some(b) = p.get_mut(2) {
                *b = 0x04; // WCE: writes land in "cache" (RAM) at once
            }
            p
        };
        let control = || {
            let mut p = vec![0x0a, 0x0a];
            p.resize(12, 0);
            if !changeable && let Some(b) = p.get_mut(8..10) {
                b.copy_from_slice(&[0xff, 0xff]); // busy timeout period: unlimited
            }
            p
        };
        let pages = match (page, subpage) {
            (0x08, 0) => caching(),
            (0x0a, 0) => control(),
            (0x3f, 0 | 0xff) => [caching(), control()].concat(),
            _ => return ScsiResult::check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB),
        };
        let mut d = vec![0, 0, 0x10, if dbd { 0 } else { 8 }];
        if !dbd {
            let blocks = u32::try_from(self.blocks()).unwrap_or(u32::MAX).min(0x00ff_ffff);
            d.extend_from_slice(&blocks.to_be_bytes());
            if let Some(b) = d.get_mut(4) {
                *b = 0; // density code
            }
            d.extend_from_slice(&self.block_size.to_be_bytes());
            if let Some(b) = d.get_mut(8) {
                *b = 0; // reserved
            }
        }
        d.extend_from_slice(&pages);
        let mode_data_length = u8::try_from(d.len() - 1).unwrap_or(u8::MAX);
        if let Some(b) = d.first_mut() {
            *b = mode_data_length;
        }
        ScsiResult::good(allocated(d, alloc))
    }

    /// SPC-4 §6.6: standard data, or the VPD pages 0x00 (supported pages),
    /// 0x80 (unit serial number), 0x83 (device identification, mandatory
    /// for every device, SPC-4 §7.8.6) and 0xB0 (block limits, SBC-3 §6.5.3).
    fn inquiry(&self, cdb: &[u8]) -> ScsiResult {
        let evpd = cdb.get(1).is_some_and(|b| b & 1 == 1);
        let page = cdb.get(2).copied().unwrap_or(0);
        let alloc = be(cdb, 3, 2);
        let d = match (evpd, page) {
            (false, 0) => {
                // Version 6 (SPC-4), response data format 2, 74 bytes.
                let mut d = vec![0x00, 0x00, 0x06, 0x02, 74 - 5, 0, 0, 0x02];
                d.extend_from_slice(b"RSISCSI ");
                d.extend_from_slice(b"SIM-LUN         ");
                d.extend_from_slice(b"0001");
                d.resize(58, 0);
                // Version descriptors (SPC-4 §6.6.2): SPC-4, SBC-3, iSCSI.
                for v in [0x0460u16, 0x04c0, 0x0960] {
                    d.extend_from_slice(&v.to_be_bytes());
                }
                d.resize(74, 0);
                d
            }
            (false, _) => return ScsiResult::check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB),
            (true, 0x00) => vec![0x00, 0x00, 0x00, 4, 0x00, 0x80, 0x83, 0xb0],
            (true, 0x80) => {
                let mut d = vec![0x00, 0x80, 0x00, 8];
                d.extend_from_slice(b"SIM00001");
                d
            }
            (true, 0x83) => {
                // One designator: T10 vendor ID based (type 1), ASCII, for
                // the logical unit: vendor, then the serial number.
                let mut id = b"RSISCSI ".to_vec();
                id.extend_from_slice(b"SIM00001");
                let mut d = vec![0x00, 0x83, 0x00, 4 + id.len() as u8, 0x02, 0x01, 0x00, id.len() as u8];
                d.extend_from_slice(&id);
                d
            }
            (true, 0xb0) => {
                // SBC-3 length (0x3c), every limit 0: "not reported"; no UNMAP.
                let mut d = vec![0x00, 0xb0, 0x00, 0x3c];
                d.resize(0x40, 0);
                d
            }
            (true, _) => return ScsiResult::check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB),
        };
        ScsiResult::good(allocated(d, alloc))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_and_bounds() {
        let mut l = RamLun::new(8192, 512);
        assert_eq!(l.blocks(), 16);
        let w = [0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0];
        assert_eq!(l.execute(&w, &[7u8; 512]).status, GOOD);
        let r = l.execute(&[0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], &[]);
        assert_eq!(r.data, vec![7u8; 512]);
        let r = l.execute(&[0x28, 0, 0, 0, 0, 16, 0, 0, 1, 0], &[]);
        assert_eq!((r.status, r.sense[12]), (CHECK_CONDITION, 0x21));
        let r = l.execute(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(r.data, vec![0, 0, 0, 15, 0, 0, 2, 0]);
        assert_eq!(l.execute(&[0xff], &[]).status, CHECK_CONDITION);
        // RDPROTECT set on a LUN without protection information.
        let r = l.execute(&[0x28, 0x20, 0, 0, 0, 1, 0, 0, 1, 0], &[]);
        assert_eq!((r.status, r.sense[12]), (CHECK_CONDITION, 0x24));
        assert_eq!(l.execute(&[], &[]).status, CHECK_CONDITION);
    }

    #[test]
    fn inquiry_claims_spc4_and_sbc3_and_has_the_mandatory_vpd_pages() {
        let l = RamLun::new(8192, 512);
        let std = l.inquiry(&[0x12, 0, 0, 0, 255, 0]).data;
        assert_eq!((std.len(), usize::from(std[4]) + 5, std[2]), (74, 74, 6));
        assert_eq!(&std[58..64], &[0x04, 0x60, 0x04, 0xc0, 0x09, 0x60]);
        let pages = l.inquiry(&[0x12, 1, 0x00, 0, 255, 0]).data;
        assert_eq!(&pages[4..], &[0x00, 0x80, 0x83, 0xb0]);
        for page in [0x80u8, 0x83, 0xb0] {
            let d = l.inquiry(&[0x12, 1, page, 0, 255, 0]).data;
            assert_eq!((d[1], d.len()), (page, usize::from(d[3]) + 4), "page {page:#x}");
        }
        assert_eq!(l.inquiry(&[0x12, 1, 0xb2, 0, 255, 0]).status, CHECK_CONDITION);
        // Cut to the allocation length (SPC-4 §4.2.5.6).
        assert_eq!(l.inquiry(&[0x12, 0, 0, 0, 36, 0]).data.len(), 36);
    }

    #[test]
    fn verify_compares_only_with_bytchk() {
        let mut l = RamLun::new(8192, 512);
        assert_eq!(l.execute(&[0x2a, 0, 0, 0, 0, 2, 0, 0, 2, 0], &[5u8; 1024]).status, GOOD);
        // BYTCHK=1: equal data is GOOD; one byte off is MISCOMPARE at its offset.
        let v10 = [0x2f, 0x02, 0, 0, 0, 2, 0, 0, 2, 0];
        assert!(RamLun::takes_data_out(&v10));
        assert_eq!(l.data_out_length(&v10), 1024);
        assert_eq!(l.execute(&v10, &[5u8; 1024]).status, GOOD);
        let mut bad = vec![5u8; 1024];
        bad[700] = 6;
        let r = l.execute(&v10, &bad);
        assert_eq!((r.status, r.sense[0], r.sense[2], r.sense[12]), (CHECK_CONDITION, 0xf0, 0x0e, 0x1d));
        assert_eq!(&r.sense[3..7], &700u32.to_be_bytes());
        // BYTCHK=0: no data, nothing compared.
        let v16 = [0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0];
        assert!(!RamLun::takes_data_out(&v16));
        assert_eq!(l.execute(&v16, &[]).status, GOOD);
        // BYTCHK=3 (VERIFY(12)): one block against each of two.
        let v12 = [0xaf, 0x06, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0];
        assert_eq!(l.data_out_length(&v12), 512);
        assert_eq!(l.execute(&v12, &[5u8; 512]).status, GOOD);
        // Beyond the end, VRPROTECT, BYTCHK=2.
        assert_eq!(l.execute(&[0x2f, 0, 0, 0, 0, 16, 0, 0, 1, 0], &[]).sense[12], 0x21);
        assert_eq!(l.execute(&[0x2f, 0x20, 0, 0, 0, 0, 0, 0, 1, 0], &[]).sense[12], 0x24);
        assert_eq!(l.execute(&[0x2f, 0x04, 0, 0, 0, 0, 0, 0, 1, 0], &[]).sense[12], 0x24);
    }

    #[test]
    fn mode_sense6_pages_and_allocation() {
        let l = RamLun::new(8192, 512);
        let all = l.mode_sense6(&[0x1a, 0, 0x3f, 0, 255, 0]).data;
        assert_eq!(usize::from(all[0]) + 1, all.len());
        assert_eq!((all[2], all[3]), (0x10, 8));
        assert_eq!(&all[4..12], &[0, 0, 0, 16, 0, 0, 2, 0]);
        assert_eq!((all[12], all[32]), (0x08, 0x0a));
        assert_eq!(all.len(), 12 + 20 + 12);
        let ctl = l.mode_sense6(&[0x1a, 0x08, 0x0a, 0, 255, 0]).data;
        assert_eq!((ctl[3], ctl[4], ctl.len()), (0, 0x0a, 16));
        assert_eq!(l.mode_sense6(&[0x1a, 0, 0x3f, 0, 4, 0]).data.len(), 4);
        assert_eq!(l.mode_sense6(&[0x1a, 0, 0x01, 0, 255, 0]).sense[12], 0x24);
        assert_eq!(l.mode_sense6(&[0x1a, 0, 0xc8, 0, 255, 0]).sense[12], 0x39);
    }

    #[test]
    fn twelve_byte_cdbs_write_and_verify_and_short_writes() {
        let mut l = RamLun::new(8192, 512);
        // WRITE(12) of 2 blocks at LBA 3, READ(12) back.
        let w12 = [0xaa, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0];
        assert_eq!(l.data_out_length(&w12), 1024);
        assert_eq!(l.execute(&w12, &[9u8; 1024]).status, GOOD);
        let r = l.execute(&[0xa8, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0], &[]);
        assert_eq!(r.data, vec![9u8; 1024]);
        // WRITE AND VERIFY(16) with BYTCHK=1 of one block at LBA 5.
        let wv16 = [0x8e, 0x02, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0];
        assert_eq!(l.execute(&wv16, &[4u8; 512]).status, GOOD);
        assert_eq!(l.bytes(5 * 512, 512), vec![4u8; 512]);
        // WRITE AND VERIFY(10) of one block with only 200 bytes sent: those
        // 200 change, the rest of the block stays.
        let wv10 = [0x2e, 0x02, 0, 0, 0, 7, 0, 0, 1, 0];
        assert_eq!(l.execute(&wv10, &[1u8; 200]).status, GOOD);
        assert_eq!(l.bytes(7 * 512, 200), vec![1u8; 200]);
        assert_eq!(l.bytes(7 * 512 + 200, 312), vec![0u8; 312]);
        // More data than the CDB asks for: only TRANSFER LENGTH blocks change.
        let w10 = [0x2a, 0, 0, 0, 0, 9, 0, 0, 1, 0];
        assert_eq!(l.execute(&w10, &[2u8; 1024]).status, GOOD);
        assert_eq!(l.bytes(9 * 512, 1024), [vec![2u8; 512], vec![0u8; 512]].concat());
        assert_eq!(l.data_out_length(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 0);
    }
}
