//! SCSI commands over a session: status and sense turned into errors,
//! UNIT ATTENTION retried, data checked for length.

use bytes::{Bytes, BytesMut};
use iscsi_proto::scsi::cdb::{self, Cdb};
use iscsi_proto::scsi::data::{
    BlockLimits, LogicalBlockProvisioning, ReadCapacity10, ReadCapacity16, StandardInquiry, parse_report_luns,
    parse_vpd_supported_pages,
};
use iscsi_proto::scsi::sense::ScsiError;

use crate::error::{Error, Result};
use crate::session::{DataDirection, ScsiOutcome, Session};

/// How often a command is re-sent after UNIT ATTENTION (reported once per
/// condition after login or reset, SAM-5 §5.14).
const UNIT_ATTENTION_RETRIES: usize = 8;

/// Size of a logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub blocks: u64,
    pub block_size: u32,
}

impl Capacity {
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

impl Session {
    /// Runs a command and turns a non-GOOD status into an error.
    pub async fn command(&self, lun: u64, cdb: &Cdb, dir: DataDirection) -> Result<ScsiOutcome> {
        let mut tries = 0;
        loop {
            let out = self.execute(lun, cdb, dir.clone()).await?;
            match ScsiError::from_status(out.status, &out.sense) {
                None => return Ok(out),
                Some(ScsiError::UnitAttention(_)) if tries < UNIT_ATTENTION_RETRIES => tries += 1,
                Some(e) => return Err(Error::Scsi(e)),
            }
        }
    }

    pub async fn test_unit_ready(&self, lun: u64) -> Result<()> {
        self.command(lun, &cdb::test_unit_ready(), DataDirection::None).await.map(|_| ())
    }

    /// Standard INQUIRY data (SPC-4 §6.6.2).
    pub async fn inquiry(&self, lun: u64) -> Result<StandardInquiry> {
        let out = self.command(lun, &cdb::inquiry(false, 0, 255), DataDirection::Read(255)).await?;
        StandardInquiry::parse(&out.data).map_err(|e| Error::protocol(format!("INQUIRY data: {e}")))
    }

    /// A vital product data page, raw (SPC-4 §7.8).
    pub async fn vpd(&self, lun: u64, page: u8) -> Result<Bytes> {
        let out = self.command(lun, &cdb::inquiry(true, page, 4096), DataDirection::Read(4096)).await?;
        Ok(out.data)
    }

    /// LUNs of the target (SPC-4 §6.33), re-asked with a larger buffer when
    /// the list did not fit.
    pub async fn report_luns(&self) -> Result<Vec<u64>> {
        let mut alloc: u32 = 16 + 8 * 256;
        for _ in 0..3 {
            let out = self.command(0, &cdb::report_luns(alloc), DataDirection::Read(alloc)).await?;
            let r = parse_report_luns(&out.data).map_err(|e| Error::protocol(format!("REPORT LUNS data: {e}")))?;
            let needed = r.total_len.saturating_add(8);
            if needed <= alloc || needed > 1 << 20 {
                return Ok(r.luns);
            }
            alloc = needed;
        }
        Err(Error::protocol("REPORT LUNS list kept growing"))
    }

    /// READ CAPACITY (10), and (16) when the LUN is too large for it.
    pub async fn read_capacity(&self, lun: u64) -> Result<Capacity> {
        let out = self.command(lun, &cdb::read_capacity10(), DataDirection::Read(8)).await?;
        let rc = ReadCapacity10::parse(&out.data).map_err(|e| Error::protocol(format!("READ CAPACITY data: {e}")))?;
        if rc.last_lba != u32::MAX {
            return Ok(Capacity { blocks: u64::from(rc.last_lba) + 1, block_size: rc.block_len });
        }
        let out = self.command(lun, &cdb::read_capacity16(32), DataDirection::Read(32)).await?;
        let rc =
            ReadCapacity16::parse(&out.data).map_err(|e| Error::protocol(format!("READ CAPACITY(16) data: {e}")))?;
        Ok(Capacity { blocks: rc.last_lba.saturating_add(1), block_size: rc.block_len })
    }

    /// Reads `blocks` blocks at `lba`; fails unless all of them arrive.
    pub async fn read_blocks(&self, lun: u64, lba: u64, blocks: u32, block_size: u32) -> Result<Bytes> {
        self.read_blocks_into(lun, lba, blocks, block_size, BytesMut::new()).await
    }

    /// [`Session::read_blocks`] into a recycled buffer: pass what
    /// `Bytes::try_into_mut` gives back from an earlier read (its contents
    /// are discarded) to save an allocation, and its page faults, per read.
    pub async fn read_blocks_into(
        &self,
        lun: u64,
        lba: u64,
        blocks: u32,
        block_size: u32,
        mut buf: BytesMut,
    ) -> Result<Bytes> {
        let len = blocks
            .checked_mul(block_size)
            .ok_or_else(|| Error::InvalidArgument("read larger than 4 GiB in one command".into()))?;
        let read = cdb::read(lba, blocks);
        let mut tries = 0;
        let out = loop {
            let out = self.execute_read_into(lun, &read, len, buf).await?;
            match ScsiError::from_status(out.status, &out.sense) {
                None => break out,
                Some(ScsiError::UnitAttention(_)) if tries < UNIT_ATTENTION_RETRIES => tries += 1,
                Some(e) => return Err(Error::Scsi(e)),
            }
            buf = out.data.try_into_mut().unwrap_or_default();
        };
        if out.data.len() != len as usize {
            return Err(Error::protocol(format!(
                "READ returned {} bytes of the {len} asked (residual {})",
                out.data.len(),
                out.residual
            )));
        }
        Ok(out.data)
    }

    /// Writes whole blocks at `lba`.
    pub async fn write_blocks(&self, lun: u64, lba: u64, data: Bytes, block_size: u32) -> Result<()> {
        self.write_blocks_with(lun, lba, data, block_size, false).await
    }

    /// Writes whole blocks at `lba` with FUA (SBC-3 §5.34): GOOD means the
    /// blocks are on the medium, not only in the target's cache.
    pub async fn write_blocks_fua(&self, lun: u64, lba: u64, data: Bytes, block_size: u32) -> Result<()> {
        self.write_blocks_with(lun, lba, data, block_size, true).await
    }

    async fn write_blocks_with(&self, lun: u64, lba: u64, data: Bytes, block_size: u32, fua: bool) -> Result<()> {
        if block_size == 0 || !data.len().is_multiple_of(block_size as usize) {
            return Err(Error::InvalidArgument(format!(
                "write of {} bytes is not a whole number of {block_size}-byte blocks",
                data.len()
            )));
        }
        let blocks = u32::try_from(data.len() / block_size as usize)
            .map_err(|_| Error::InvalidArgument("write too large for one command".into()))?;
        let cdb = if fua { cdb::write16_fua(lba, blocks) } else { cdb::write(lba, blocks) };
        let out = self.command(lun, &cdb, DataDirection::Write(data)).await?;
        if out.residual != 0 {
            return Err(Error::protocol(format!("WRITE left a residual of {} bytes", out.residual)));
        }
        Ok(())
    }

    /// Zeroes `blocks` blocks at `lba` with one WRITE SAME (16) (SBC-3
    /// §5.43); with `unmap` the target may deallocate them instead.
    pub async fn write_same_zeroes(&self, lun: u64, lba: u64, blocks: u32, block_size: u32, unmap: bool) -> Result<()> {
        let zero = Bytes::from(vec![0u8; block_size as usize]);
        self.command(lun, &cdb::write_same16(lba, blocks, unmap), DataDirection::Write(zero)).await.map(|_| ())
    }

    /// UNMAP (SBC-3 §5.28) of the `(lba, blocks)` ranges; the caller keeps
    /// within the Block Limits page's counts.
    pub async fn unmap(&self, lun: u64, ranges: &[(u64, u32)]) -> Result<()> {
        let params = cdb::unmap_parameters(ranges);
        let len = u16::try_from(params.len())
            .map_err(|_| Error::InvalidArgument(format!("UNMAP of {} ranges is too long", ranges.len())))?;
        self.command(lun, &cdb::unmap(len), DataDirection::Write(Bytes::from(params))).await.map(|_| ())
    }

    /// The VPD pages the LUN implements (SPC-4 §7.8.13).
    pub async fn vpd_pages(&self, lun: u64) -> Result<Vec<u8>> {
        let page = self.vpd(lun, 0x00).await?;
        parse_vpd_supported_pages(&page).map_err(|e| Error::protocol(format!("Supported VPD Pages: {e}")))
    }

    /// The Block Limits page (SBC-3 §6.5.3), `None` if the LUN has none.
    pub async fn block_limits(&self, lun: u64) -> Result<Option<BlockLimits>> {
        if !self.vpd_pages(lun).await?.contains(&0xb0) {
            return Ok(None);
        }
        let page = self.vpd(lun, 0xb0).await?;
        BlockLimits::parse(&page).map(Some).map_err(|e| Error::protocol(format!("Block Limits page: {e}")))
    }

    /// The Logical Block Provisioning page (SBC-3 §6.5.4), `None` if the
    /// LUN has none (then it deallocates nothing on request).
    pub async fn provisioning(&self, lun: u64) -> Result<Option<LogicalBlockProvisioning>> {
        if !self.vpd_pages(lun).await?.contains(&0xb2) {
            return Ok(None);
        }
        let page = self.vpd(lun, 0xb2).await?;
        LogicalBlockProvisioning::parse(&page)
            .map(Some)
            .map_err(|e| Error::protocol(format!("Logical Block Provisioning page: {e}")))
    }

    /// SYNCHRONIZE CACHE (10) over the whole LUN.
    pub async fn synchronize_cache(&self, lun: u64) -> Result<()> {
        self.command(lun, &cdb::synchronize_cache10(0, 0), DataDirection::None).await.map(|_| ())
    }
}
