//! The LUN as an NBD block device: each NBD command becomes the SCSI
//! command with the same meaning (SBC-3), and each SCSI failure the NBD
//! error a client can act on (NBD protocol, "Error values").

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use iscsi_initiator::Error as InitError;
use iscsi_initiator::scsi::Capacity;
use iscsi_initiator::session::Session;
use iscsi_proto::scsi::data::{BlockLimits, LogicalBlockProvisioning};
use iscsi_proto::scsi::sense::{ScsiError, SenseKey};
use nbd_export::{BlockDevice, BlockSizes, DeviceError, Errno, Features};

use crate::combine::{ReadQueue, Run};

/// The largest NBD request we accept and the most one SCSI command carries
/// here: the NBD protocol suggests clients keep to 32 MiB (its "Block size
/// constraints"), and larger commands only hold the window longer.
const MAX_REQUEST: u32 = 32 << 20;
/// Zeroes written per command when the LUN has no WRITE SAME.
const ZERO_CHUNK: usize = 1 << 20;
static ZEROES: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
/// SBC-3 §5.43 without a MAXIMUM WRITE SAME LENGTH: a bound of our own so
/// one command's time stays short.
const DEFAULT_WRITE_SAME_BLOCKS: u64 = 1 << 16;
/// Read buffers kept for reuse: more than the reads in flight and the
/// replies waiting to be written; more are freed.
const SPARE_BUFFERS: usize = 64;
/// Reads of all clients at once. More only wait in the session's queue
/// with their buffers taken: nbdcopy's 4 connections × 64 requests of
/// 256 KiB would keep 64 MiB of buffers cycling, out of the CPU caches, and
/// wake more tasks per byte; 8 reads of 256 KiB keep tgt and the link busy
/// (bench/results/2026-12-06-nbd.md: reads 0.8 s → 0.65 s per GiB).
const READS_IN_FLIGHT: usize = 8;
/// Most bytes of adjacent waiting reads taken into one READ (see
/// [`crate::combine`]): nbdcopy's 256 KiB requests four at a time, where
/// tgt's CPU per GiB drops to what 1–4 MiB reads cost it.
const COMBINED_READ: u64 = 1 << 20;
/// Buffers of combined reads kept until every reply cut from them is
/// written, to be reused then.
const LENT_BUFFERS: usize = 2 * READS_IN_FLIGHT;
/// Writes of all clients at once: their data is in memory already, so the
/// bound is looser; it keeps one client's burst from filling the command
/// window for the others.
const WRITES_IN_FLIGHT: usize = 32;

/// Why a LUN cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("LUN {lun} is a {kind}, not a disk")]
    NotADisk { lun: u64, kind: &'static str },
    #[error("LUN {lun} has a block size of {size} bytes; NBD needs a power of two from 512 to 64 KiB")]
    BlockSize { lun: u64, size: u32 },
    #[error("{what} of LUN {lun} failed: {source}")]
    Scsi {
        what: &'static str,
        lun: u64,
        #[source]
        source: InitError,
    },
}

/// One LUN of a logged-in session, as an NBD export sees it.
pub struct LunDevice {
    session: Session,
    lun: u64,
    cap: Capacity,
    limits: BlockLimits,
    provisioning: LogicalBlockProvisioning,
    read_only: bool,
    /// Cleared the first time the LUN refuses WRITE SAME (16): zeroes are
    /// then written as data.
    write_same: AtomicBool,
    /// Buffers of earlier reads, back from the NBD writer: a fresh 256 KiB
    /// allocation per read costs its pages' faults every time.
    spare: Mutex<Vec<BytesMut>>,
    /// Buffers of combined reads whose replies may still be being written:
    /// each reply holds a slice, so none comes back through `recycle`.
    lent: Mutex<Vec<Bytes>>,
    /// Reads waiting for a turn, combined when adjacent.
    queue: ReadQueue,
    /// Reads of all clients at once (see [`READS_IN_FLIGHT`]).
    reads: tokio::sync::Semaphore,
    /// Writes of all clients at once (see [`WRITES_IN_FLIGHT`]).
    writes: tokio::sync::Semaphore,
}

impl LunDevice {
    /// Reads what the export needs of the LUN: that it is a disk, its
    /// capacity, and its Block Limits and Logical Block Provisioning pages
    /// (SBC-3 §6.5.3, §6.5.4; a LUN without them gets the defaults: no
    /// UNMAP, our own transfer bound).
    pub async fn open(session: Session, lun: u64, read_only: bool) -> Result<LunDevice, OpenError> {
        let scsi = |what| move |source| OpenError::Scsi { what, lun, source };
        let inq = session.inquiry(lun).await.map_err(scsi("INQUIRY"))?;
        if inq.peripheral_qualifier != 0 || inq.device_type != 0 {
            return Err(OpenError::NotADisk { lun, kind: inq.device_type_name() });
        }
        let cap = session.read_capacity(lun).await.map_err(scsi("READ CAPACITY"))?;
        if !cap.block_size.is_power_of_two() || !(512..=65536).contains(&cap.block_size) {
            return Err(OpenError::BlockSize { lun, size: cap.block_size });
        }
        // Optional pages: a target that fails to return them still serves
        // reads and writes.
        let limits = session.block_limits(lun).await.ok().flatten().unwrap_or_default();
        let provisioning = session.provisioning(lun).await.ok().flatten().unwrap_or_default();
        Ok(LunDevice {
            session,
            lun,
            cap,
            limits,
            provisioning,
            read_only,
            write_same: AtomicBool::new(true),
            spare: Mutex::new(Vec::new()),
            lent: Mutex::new(Vec::new()),
            queue: ReadQueue::default(),
            reads: tokio::sync::Semaphore::new(READS_IN_FLIGHT),
            writes: tokio::sync::Semaphore::new(WRITES_IN_FLIGHT),
        })
    }

    fn spare_buffer(&self) -> BytesMut {
        if let Some(buf) = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return buf;
        }
        // A combined read's buffer once all its replies are written.
        let mut lent = self.lent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = lent.iter().position(Bytes::is_unique)
            && let Ok(mut buf) = lent.swap_remove(i).try_into_mut()
        {
            buf.clear();
            return buf;
        }
        BytesMut::new()
    }

    /// Reads `run` with one READ and hands each of its reads its blocks.
    async fn read_run(&self, run: Run) -> Result<Bytes, DeviceError> {
        let blocks = u32::try_from(run.blocks).map_err(|_| too_large());
        let result = match blocks {
            Ok(n) => self
                .session
                .read_blocks_into(self.lun, run.lba, n, self.cap.block_size, self.spare_buffer())
                .await
                .map_err(|e| device_error("READ", &e)),
            Err(e) => Err(e),
        };
        if run.combined() > 0
            && let Ok(data) = &result
        {
            let mut lent = self.lent.lock().unwrap_or_else(|p| p.into_inner());
            if lent.len() < LENT_BUFFERS {
                lent.push(data.clone());
            }
        }
        run.deliver(result, self.bs())
    }

    pub fn capacity(&self) -> Capacity {
        self.cap
    }

    pub fn lun(&self) -> u64 {
        self.lun
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// SYNCHRONIZE CACHE over the whole LUN.
    pub async fn synchronize(&self) -> Result<(), InitError> {
        self.session.synchronize_cache(self.lun).await
    }

    fn bs(&self) -> u64 {
        u64::from(self.cap.block_size)
    }

    /// Most bytes in one SCSI command: the LUN's MAXIMUM TRANSFER LENGTH
    /// (SBC-3 §6.5.3), else our own bound; always whole blocks.
    fn max_transfer(&self) -> u32 {
        let lun_max = u64::from(self.limits.max_transfer_blocks).saturating_mul(self.bs());
        match u32::try_from(lun_max) {
            Ok(m) if m >= self.cap.block_size => MAX_REQUEST.min(m),
            _ => MAX_REQUEST,
        }
    }

    /// The largest NBD request advertised: at most [`MAX_REQUEST`], never
    /// below the preferred size (the NBD protocol's block size rules);
    /// requests larger than the LUN takes are split.
    fn max_request(&self) -> u32 {
        let bs = self.cap.block_size;
        let preferred = bs.max(4096);
        let m = self.max_transfer().max(preferred).min(MAX_REQUEST);
        m - m % bs
    }

    /// Blocks of `offset .. offset + len`, which must start and end on a
    /// block boundary (the export advertises the block size as its minimum).
    fn whole_blocks(&self, offset: u64, len: u64, what: &str) -> Result<(u64, u64), DeviceError> {
        let bs = self.bs();
        if offset % bs != 0 || len % bs != 0 {
            return Err(DeviceError {
                errno: Errno::Einval,
                message: format!("{what} of {len} bytes at {offset} is not aligned to the LUN's {bs}-byte blocks"),
            });
        }
        Ok((offset / bs, len / bs))
    }

    async fn write_zero_data(&self, lba: u64, blocks: u64) -> Result<(), DeviceError> {
        let per = (ZERO_CHUNK as u64 / self.bs()).max(1);
        let mut done = 0;
        while done < blocks {
            let n = per.min(blocks - done);
            let len = usize::try_from(n * self.bs()).map_err(|_| too_large())?;
            let data = Bytes::from_static(ZEROES.get(..len).ok_or_else(too_large)?);
            self.session
                .write_blocks(self.lun, lba + done, data, self.cap.block_size)
                .await
                .map_err(|e| device_error("WRITE", &e))?;
            done += n;
        }
        Ok(())
    }
}

fn too_large() -> DeviceError {
    DeviceError { errno: Errno::Einval, message: "request too large".into() }
}

/// The NBD error for a failed SCSI command (NBD protocol, "Error values";
/// SPC-4 §4.5.6 sense keys, asc/ascq from SPC-4 Annex D).
fn errno_of(e: &InitError) -> Errno {
    match e {
        InitError::Scsi(ScsiError::CheckCondition(s)) => match (s.key, s.asc, s.ascq) {
            // SPACE ALLOCATION FAILED WRITE PROTECT (thin pool full).
            (_, 0x27, 0x07) => Errno::Enospc,
            (SenseKey::DataProtect, 0x27, _) => Errno::Eperm,
            // LBA out of range, invalid opcode or field: the request, not the medium.
            (SenseKey::IllegalRequest, 0x20 | 0x21 | 0x24, _) => Errno::Einval,
            _ => Errno::Eio,
        },
        InitError::InvalidArgument(_) => Errno::Einval,
        _ => Errno::Eio,
    }
}

fn device_error(what: &str, e: &InitError) -> DeviceError {
    DeviceError { errno: errno_of(e), message: format!("{what} failed: {e}") }
}

/// SBC-3: ILLEGAL REQUEST with INVALID COMMAND OPERATION CODE (20/00) or
/// INVALID FIELD IN CDB (24/00): the LUN does not do this command (form).
fn unsupported(e: &InitError) -> bool {
    matches!(e, InitError::Scsi(ScsiError::CheckCondition(s))
        if s.key == SenseKey::IllegalRequest && matches!(s.asc, 0x20 | 0x24))
}

impl BlockDevice for LunDevice {
    fn size(&self) -> u64 {
        self.cap.bytes()
    }

    fn block_sizes(&self) -> BlockSizes {
        let min = self.cap.block_size;
        BlockSizes { min, preferred: min.max(4096), max: self.max_request() }
    }

    fn features(&self) -> Features {
        Features {
            read_only: self.read_only,
            flush: true,
            fua: true,
            trim: !self.read_only && self.provisioning.unmap,
            write_zeroes: !self.read_only,
            // Every client goes through this one session: a FLUSH on any
            // of them is a SYNCHRONIZE CACHE of the LUN, which covers every
            // write already completed, whichever client sent it.
            multi_conn: true,
        }
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        let bs = self.bs();
        let first = offset / bs;
        let end = offset.checked_add(u64::from(len)).ok_or_else(too_large)?;
        let blocks = end.div_ceil(bs) - first;
        let per = u64::from(self.max_transfer()) / bs;
        let data = if blocks <= per {
            // In the queue until a turn is free, or another read's turn takes it along.
            let (ticket, mut taken) = self.queue.enqueue(first, blocks);
            let turn = tokio::select! {
                biased;
                delivered = &mut taken => Err(delivered),
                turn = self.reads.acquire() => Ok(turn.map_err(|_| too_large())?),
            };
            let delivered = match turn {
                Err(delivered) => delivered,
                Ok(turn) => match self.queue.take_run(&ticket, per.min(COMBINED_READ / bs)) {
                    Some(run) => Ok(self.read_run(run).await),
                    None => {
                        // Taken along by another turn in the meantime.
                        drop(turn);
                        taken.await
                    }
                },
            };
            drop(ticket);
            delivered.map_err(|_| DeviceError::io("the READ this request was part of was dropped"))??
        } else {
            let _turn = self.reads.acquire().await.map_err(|_| too_large())?;
            // More than the LUN takes in one command: read it in pieces.
            let mut all = bytes::BytesMut::with_capacity(usize::try_from(blocks * bs).map_err(|_| too_large())?);
            let mut at = 0;
            while at < blocks {
                let n = u32::try_from(per.min(blocks - at)).map_err(|_| too_large())?;
                let part = self
                    .session
                    .read_blocks(self.lun, first + at, n, self.cap.block_size)
                    .await
                    .map_err(|e| device_error("READ", &e))?;
                all.extend_from_slice(&part);
                at += u64::from(n);
            }
            all.freeze()
        };
        // Reads need not be aligned: the covering blocks, cut to the range.
        let skip = usize::try_from(offset - first * bs).map_err(|_| too_large())?;
        let end = skip.checked_add(len as usize).ok_or_else(too_large)?;
        if end > data.len() {
            return Err(DeviceError { errno: Errno::Eio, message: "short read from the LUN".into() });
        }
        if skip == 0 && end == data.len() {
            // Whole: the buffer can come back through `recycle`.
            return Ok(data);
        }
        Ok(data.slice(skip..end))
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        let (lba, _) = self.whole_blocks(offset, data.len() as u64, "write")?;
        let _turn = self.writes.acquire().await.map_err(|_| too_large())?;
        let per = self.max_transfer() as usize;
        let mut at = 0;
        // More than the LUN takes in one command goes in pieces.
        while at < data.len() {
            let part = data.slice(at..data.len().min(at + per));
            let n = part.len();
            let lba = lba + (at as u64) / self.bs();
            let r = if fua {
                self.session.write_blocks_fua(self.lun, lba, part, self.cap.block_size).await
            } else {
                self.session.write_blocks(self.lun, lba, part, self.cap.block_size).await
            };
            r.map_err(|e| device_error(if fua { "WRITE(16) with FUA" } else { "WRITE" }, &e))?;
            at += n;
        }
        Ok(())
    }

    fn recycle(&self, data: Bytes) {
        if let Ok(mut buf) = data.try_into_mut()
            && buf.capacity() <= MAX_REQUEST as usize
        {
            buf.clear();
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < SPARE_BUFFERS {
                spare.push(buf);
            }
        }
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.synchronize().await.map_err(|e| device_error("SYNCHRONIZE CACHE", &e))
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        // A trim is advice (NBD protocol, NBD_CMD_TRIM): only the whole
        // blocks inside the range are unmapped, and a LUN without UNMAP
        // ignores it.
        if !self.provisioning.unmap || self.read_only {
            return Ok(());
        }
        let bs = self.bs();
        let first = offset.div_ceil(bs);
        let end = offset.saturating_add(u64::from(len)) / bs;
        let max = match self.limits.max_unmap_blocks {
            0 | u32::MAX => u32::MAX,
            m => m,
        };
        let mut lba = first;
        while lba < end {
            let n = u32::try_from(end - lba).unwrap_or(u32::MAX).min(max);
            self.session.unmap(self.lun, &[(lba, n)]).await.map_err(|e| device_error("UNMAP", &e))?;
            lba += u64::from(n);
        }
        Ok(())
    }

    async fn write_zeroes(&self, offset: u64, len: u32, may_trim: bool) -> Result<(), DeviceError> {
        let (lba, blocks) = self.whole_blocks(offset, u64::from(len), "write zeroes")?;
        // The UNMAP bit only where deallocated blocks are known to read
        // back as zeroes (SBC-3 §4.7.3.4, LBPRZ).
        let unmap = may_trim && self.provisioning.write_same16_unmap && self.provisioning.reads_zeroes;
        let per = match self.limits.max_write_same_blocks {
            0 => DEFAULT_WRITE_SAME_BLOCKS,
            m => m.min(u64::from(u32::MAX)),
        };
        let mut done = 0;
        while done < blocks && self.write_same.load(Ordering::Relaxed) {
            let n = per.min(blocks - done);
            let n32 = u32::try_from(n).map_err(|_| too_large())?;
            match self.session.write_same_zeroes(self.lun, lba + done, n32, self.cap.block_size, unmap).await {
                Ok(()) => done += n,
                Err(e) if unsupported(&e) => {
                    tracing::info!(lun = self.lun, "the LUN refuses WRITE SAME(16): zeroes are written as data");
                    self.write_same.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(device_error("WRITE SAME(16)", &e)),
            }
        }
        if done < blocks { self.write_zero_data(lba + done, blocks - done).await } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iscsi_proto::scsi::sense::Sense;

    fn check(key: SenseKey, asc: u8, ascq: u8) -> InitError {
        InitError::Scsi(ScsiError::CheckCondition(Sense {
            response_code: 0x70,
            key,
            asc,
            ascq,
            information: None,
            descriptor_format: false,
        }))
    }

    #[test]
    fn scsi_failures_map_to_the_nbd_errors_a_client_can_act_on() {
        assert_eq!(errno_of(&check(SenseKey::DataProtect, 0x27, 0)), Errno::Eperm);
        assert_eq!(errno_of(&check(SenseKey::DataProtect, 0x27, 0x07)), Errno::Enospc);
        assert_eq!(errno_of(&check(SenseKey::IllegalRequest, 0x21, 0)), Errno::Einval);
        assert_eq!(errno_of(&check(SenseKey::IllegalRequest, 0x20, 0)), Errno::Einval);
        assert_eq!(errno_of(&check(SenseKey::MediumError, 0x11, 0)), Errno::Eio);
        assert_eq!(errno_of(&InitError::SessionClosed), Errno::Eio);
        assert!(unsupported(&check(SenseKey::IllegalRequest, 0x20, 0)));
        assert!(!unsupported(&check(SenseKey::MediumError, 0x20, 0)));
    }
}
