//! `rsiscsi bench`: a load generator for one LUN, for comparing the
//! initiator's data path with other initiators (see `bench/README.md`).
//!
//! `--iodepth` workers share one session; each keeps one command in flight,
//! so the session sees `--iodepth` outstanding commands. Commands issued
//! during the warm-up are not counted. Latency is per command, from issue to
//! status; CPU is this process's user+system time over the measured interval.
//!
//! On a terminal (or with `--progress`) stderr shows the phases: login,
//! warm-up, the workload with its running rate, logout. The report goes to
//! stdout alone.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use iscsi_initiator::Session;
use serde::Serialize;

use crate::cli::{Common, ProgressMode};
use crate::commands::progress::{Phase, Screen};
use crate::commands::{CmdError, CmdResult, Signals, session_config};
use crate::url::{IscsiUrl, redact};

/// I/O pattern of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RwMode {
    Read,
    Write,
    Randread,
    Randwrite,
}

impl RwMode {
    fn name(self) -> &'static str {
        match self {
            RwMode::Read => "read",
            RwMode::Write => "write",
            RwMode::Randread => "randread",
            RwMode::Randwrite => "randwrite",
        }
    }
    fn is_write(self) -> bool {
        matches!(self, RwMode::Write | RwMode::Randwrite)
    }
    fn is_random(self) -> bool {
        matches!(self, RwMode::Randread | RwMode::Randwrite)
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// iscsi://HOST[:PORT]/IQN/LUN (the LUN's data is overwritten by the write modes).
    pub url: String,
    /// I/O pattern.
    #[arg(long, value_enum, default_value = "read")]
    pub rw: RwMode,
    /// Bytes per command: a number with an optional k/M/G suffix (powers of 1024), e.g. 4k, 1M, 1MiB.
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "SIZE")]
    pub bs: u64,
    /// Commands in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub iodepth: u32,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub time: f64,
    /// Seconds run before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub warmup: f64,
    /// Use only SIZE bytes of the LUN from --offset on (default: all of it).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,
    /// Where the region used starts in the LUN, in bytes (a multiple of the block size; k/M/G
    /// suffixes allowed).
    #[arg(long, default_value = "0", value_parser = parse_offset, value_name = "BYTES")]
    pub offset: u64,
    /// --connections, --policy and --add-portal: one session of several TCP
    /// connections (MC/S, RFC 7143 §4.2.2.5).
    #[command(flatten)]
    pub mcs: crate::cli::McsArgs,
    #[command(flatten)]
    pub session: crate::cli::SessionArgs,
    /// Runtime worker threads (default: one per connection, at most one per
    /// CPU, or one per CPU at iodepth 1; TOKIO_WORKER_THREADS, when set,
    /// wins over the default).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Print one JSON object instead of one line per metric.
    #[arg(long)]
    pub json: bool,
    /// Check every block's content. Writes put a stamp in every 512-byte sector (magic, seed,
    /// sector number, then bytes derived from them) and, at the end, read back and check all they
    /// wrote; reads check every sector they read (the region must have been written by `bench
    /// --rw write --verify` with the same --seed, or --prefill writes it first). A difference is
    /// reported with its LBA, counted in errors and verify_errors, and the exit status is 1.
    #[arg(long)]
    pub verify: bool,
    /// The seed of the --verify stamps: a read checks what a write with the same seed wrote.
    #[arg(long, default_value_t = 1, requires = "verify", value_name = "N")]
    pub seed: u64,
    /// With --verify and a read mode: write the region (see --size) with the stamps first
    /// (not measured, shown as phase "prefill" in the timeline).
    #[arg(long, requires = "verify")]
    pub prefill: bool,
    /// Print one line a second on stderr: seconds since the start, phase, MiB/s, IOPS, errors and
    /// each connection's MiB/s (instead of the progress display). --json always has this
    /// timeline.
    #[arg(long)]
    pub timeline: bool,
    #[command(flatten)]
    pub progress: crate::cli::ProgressArgs,
}

impl BenchArgs {
    /// How many runtime worker threads the benchmark runs on. One thread
    /// drives one connection best: its reader, writer and the submitters
    /// then hand over work without cross-thread wake-ups (futex, IPIs), as
    /// libiscsi's single event loop does; more connections can use more
    /// CPUs. `None` leaves tokio's default (TOKIO_WORKER_THREADS or one per
    /// CPU).
    pub fn worker_threads(&self) -> Option<usize> {
        if let Some(t) = self.threads {
            return Some(usize::from(t));
        }
        // At iodepth 1 there is nothing to batch, and tokio's default (one
        // worker per CPU) measured about 10 % more IOPS than one worker
        // (4 KiB randread, tgt-null, 2 CPUs).
        if self.iodepth <= 1 || std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
            return None;
        }
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Some(usize::from(self.mcs.connections).clamp(1, cpus))
    }
}

/// `--offset`: a size, or 0.
fn parse_offset(s: &str) -> Result<u64, String> {
    if s.trim() == "0" { Ok(0) } else { parse_size(s) }
}

/// Parses `4096`, `4k`, `4K`, `4KiB`, `1M`, `1MiB`, `1MB`, `2g`: suffixes are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}: expected a number like 4k or 1M"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?} (use k, M, G, T)")),
    };
    let v = n.checked_mul(1u64 << shift).ok_or_else(|| format!("size {s:?} is too large"))?;
    if v == 0 {
        return Err(format!("size {s:?} must be greater than 0"));
    }
    Ok(v)
}

/// Latency histogram: exact below 256 ns, then 128 buckets per power of two
/// (relative error under 0.8%). Fixed size, no allocation while recording.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB as usize) * (64 - SUB_BITS as usize + 1);

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() - SUB_BITS; // v >> e is in [SUB, 2*SUB)
        let m = v >> e;
        (SUB * u64::from(e + 1) + (m - SUB)) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let e = i / SUB - 1;
        let m = i % SUB + SUB;
        // The top bucket ends at 2^64, which wraps to 0 here: u64::MAX after the subtraction.
        ((m + 1) << e).wrapping_sub(1)
    }

    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(Self::index(v)) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below or at which `pct` percent of the samples lie (nearest
    /// rank: the ceil(pct/100 * n)-th smallest sample), reported as the upper
    /// edge of its bucket but never above the largest sample. 0 when empty.
    pub fn percentile(&self, pct: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The small slack keeps float error (0.999 * 1000 = 999.0000000000001) from skipping a rank.
        let rank = ((pct / 100.0) * self.total as f64 - 1e-9).ceil().clamp(1.0, self.total as f64) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

/// CPU time of this whole process (all threads), from /proc/self/stat.
#[derive(Clone, Copy)]
struct CpuTimes {
    user: Duration,
    system: Duration,
}

fn process_cpu() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it exports.
    Some(CpuTimes { user: Duration::from_millis(utime * 10), system: Duration::from_millis(stime * 10) })
}

/// A small xorshift generator: random offsets need speed, not quality.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in 0..n (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[derive(Default)]
struct WorkerResult {
    hist: Histogram,
    ops: u64,
    errors: u64,
    first_error: Option<iscsi_initiator::Error>,
}

/// The differences `--verify` describes in full (the rest are counted).
const VERIFY_KEEP: usize = 8;

/// What `--verify` keeps while the workload runs.
struct Verify {
    seed: u64,
    /// One bit per slot: written without error at least once (what the
    /// read-back at the end checks).
    written: Vec<AtomicU64>,
    /// Sectors that differed from their stamp.
    bad: AtomicU64,
    /// Bytes checked.
    checked: AtomicU64,
    /// The first differences, described.
    first: std::sync::Mutex<Vec<String>>,
}

impl Verify {
    fn new(seed: u64, slots: u64) -> Verify {
        let words = usize::try_from(slots.div_ceil(64)).unwrap_or(0);
        Verify {
            seed,
            written: (0..words).map(|_| AtomicU64::new(0)).collect(),
            bad: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            first: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn mark(&self, slot: u64) {
        if let Some(w) = usize::try_from(slot / 64).ok().and_then(|i| self.written.get(i)) {
            w.fetch_or(1 << (slot % 64), Ordering::Relaxed);
        }
    }

    fn is_written(&self, slot: u64) -> bool {
        usize::try_from(slot / 64)
            .ok()
            .and_then(|i| self.written.get(i))
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (slot % 64)) != 0)
    }

    /// Checks `data` read from sector `first_sector` on; returns the
    /// number of sectors that differ.
    fn check(&self, data: &[u8], first_sector: u64, block_size: u32) -> u64 {
        let (bad, n) = crate::stamp::check(data, self.seed, first_sector, VERIFY_KEEP);
        self.checked.fetch_add(data.len() as u64, Ordering::Relaxed);
        if n > 0 {
            self.bad.fetch_add(n, Ordering::Relaxed);
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            for b in bad {
                if first.len() >= VERIFY_KEEP {
                    break;
                }
                first.push(b.describe(block_size, self.seed));
            }
        }
        n
    }
}

/// The phases a run goes through, as the timeline names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    Prefill = 0,
    Warmup = 1,
    Run = 2,
    Verify = 3,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Prefill => "prefill",
            Stage::Warmup => "warmup",
            Stage::Run => "run",
            Stage::Verify => "verify",
        }
    }
    fn from_u8(v: u8) -> Stage {
        match v {
            0 => Stage::Prefill,
            1 => Stage::Warmup,
            3 => Stage::Verify,
            _ => Stage::Run,
        }
    }
}

/// The LUN region and how it is cut into commands, shared by the workload
/// and the prefill and read-back sweeps of `--verify`.
struct Io {
    session: Session,
    lun: u64,
    block_size: u32,
    /// The LBA where the region starts (`--offset`).
    first_lba: u64,
    blocks_per_io: u64,
    slots: u64,
    verify: Option<Verify>,
    /// Commands completed without error, in any phase: the running rate
    /// that the progress display and the timeline show.
    completed: AtomicU64,
    /// Commands that failed, in any phase.
    failed: AtomicU64,
    stage: std::sync::atomic::AtomicU8,
}

impl Io {
    fn bytes_per_io(&self) -> u64 {
        self.blocks_per_io * u64::from(self.block_size)
    }
    /// The LBA where slot `slot` starts.
    fn lba(&self, slot: u64) -> u64 {
        self.first_lba + slot * self.blocks_per_io
    }
    /// The 512-byte sector where slot `slot` starts.
    fn first_sector(&self, slot: u64) -> u64 {
        self.lba(slot) * u64::from(self.block_size) / crate::stamp::SECTOR as u64
    }
    fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Relaxed))
    }
    fn set_stage(&self, s: Stage) {
        self.stage.store(s as u8, Ordering::Relaxed);
    }

    /// Writes slot `slot`, with its stamps under `--verify`, else `buf`.
    async fn write(&self, slot: u64, buf: &Bytes) -> iscsi_initiator::Result<()> {
        let lba = self.lba(slot);
        let data = match &self.verify {
            Some(v) => {
                let mut b = vec![0u8; usize::try_from(self.bytes_per_io()).unwrap_or(0)];
                crate::stamp::fill(&mut b, v.seed, self.first_sector(slot));
                Bytes::from(b)
            }
            None => buf.clone(),
        };
        let r = self.session.write_blocks(self.lun, lba, data, self.block_size).await;
        if let (Ok(()), Some(v)) = (&r, &self.verify) {
            v.mark(slot);
        }
        r
    }

    /// Reads slot `slot` into `spare` (handed back for the next read) and
    /// checks it under `--verify`.
    async fn read(&self, slot: u64, spare: &mut BytesMut) -> iscsi_initiator::Result<()> {
        let lba = self.lba(slot);
        let blocks = u32::try_from(self.blocks_per_io).unwrap_or(u32::MAX);
        let buf = std::mem::take(spare);
        let data = self.session.read_blocks_into(self.lun, lba, blocks, self.block_size, buf).await?;
        if let Some(v) = &self.verify {
            v.check(&data, self.first_sector(slot), self.block_size);
        }
        // Reads reuse the previous read's buffer: no allocation per command.
        *spare = data.try_into_mut().unwrap_or_default();
        Ok(())
    }

    fn count(&self, ok: bool) {
        let c = if ok { &self.completed } else { &self.failed };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

struct Plan {
    io: Arc<Io>,
    rw: RwMode,
    measure_from: Instant,
    stop_at: Instant,
    next_seq: AtomicU64,
}

async fn worker(plan: Arc<Plan>, seed: u64) -> WorkerResult {
    let mut res = WorkerResult::default();
    let mut rng = XorShift(seed | 1);
    let io = &plan.io;
    // One buffer per worker, filled once and sent again and again: `Bytes`
    // clones share it, so no per-command allocation or copy happens here
    // (--verify stamps each command's own).
    let buf = if plan.rw.is_write() && io.verify.is_none() {
        let mut v = vec![0u8; usize::try_from(io.bytes_per_io()).unwrap_or(0)];
        for (i, b) in v.iter_mut().enumerate() {
            *b = (i as u64 ^ seed) as u8;
        }
        Bytes::from(v)
    } else {
        Bytes::new()
    };
    let mut recycled = BytesMut::new();
    loop {
        let start = Instant::now();
        if start >= plan.stop_at {
            break;
        }
        let slot = if plan.rw.is_random() {
            rng.below(io.slots)
        } else {
            plan.next_seq.fetch_add(1, Ordering::Relaxed) % io.slots
        };
        let r = if plan.rw.is_write() { io.write(slot, &buf).await } else { io.read(slot, &mut recycled).await };
        // Counted by when it completes, as fio does: what the window moved.
        let done = Instant::now();
        let measured = done >= plan.measure_from && done < plan.stop_at;
        io.count(r.is_ok());
        match r {
            Ok(()) if measured => {
                res.hist.record(done.saturating_duration_since(start).as_nanos() as u64);
                res.ops += 1;
            }
            Ok(()) => {}
            Err(err) => {
                res.errors += 1;
                if res.first_error.is_none() {
                    res.first_error = Some(err);
                }
                if io.session.closed_reason().is_some() {
                    break;
                }
            }
        }
    }
    res
}

/// A `--verify` sweep over the region, one command at a time per worker,
/// the slots taken in turn from `next`: the prefill writes every slot, the
/// read-back reads and checks those the workload wrote.
async fn sweep(io: Arc<Io>, next: Arc<AtomicU64>, write: bool) -> WorkerResult {
    let mut res = WorkerResult::default();
    let mut recycled = BytesMut::new();
    loop {
        let slot = next.fetch_add(1, Ordering::Relaxed);
        if slot >= io.slots {
            break;
        }
        let r = if write {
            io.write(slot, &Bytes::new()).await
        } else if io.verify.as_ref().is_some_and(|v| v.is_written(slot)) {
            io.read(slot, &mut recycled).await
        } else {
            continue;
        };
        io.count(r.is_ok());
        match r {
            Ok(()) => res.ops += 1,
            Err(err) => {
                res.errors += 1;
                if res.first_error.is_none() {
                    res.first_error = Some(err);
                }
                if io.session.closed_reason().is_some() {
                    break;
                }
            }
        }
    }
    res
}

/// Runs `iodepth` sweeps and sums them.
async fn sweeps(io: &Arc<Io>, iodepth: u32, write: bool) -> CmdResult<WorkerResult> {
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..iodepth {
        set.spawn(sweep(io.clone(), next.clone(), write));
    }
    let mut sum = WorkerResult::default();
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| CmdError::from(format!("benchmark worker failed: {e}")))?;
        sum.ops += r.ops;
        sum.errors += r.errors;
        if sum.first_error.is_none() {
            sum.first_error = r.first_error;
        }
    }
    Ok(sum)
}

/// One second of the run (the last one may be shorter).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelinePoint {
    /// Seconds since the start of the first phase, at the end of this sample (every full
    /// second, and at each change of phase: a sample spans at most the last 0.1 s of the
    /// phase before).
    pub t: f64,
    /// `prefill`, `warmup` (not measured), `run` (measured) or `verify` (the read-back of
    /// `--rw write --verify`): the phase at the end of the sample.
    pub phase: &'static str,
    pub mib_s: f64,
    pub iops: f64,
    /// Commands that failed in this sample.
    pub errors: u64,
    /// Data bytes each connection moved (read plus written), in the order of `paths`.
    pub per_connection_mib_s: Vec<f64>,
}

/// A connection of the session, listed once in the report; the timeline's
/// per-connection rates are in this order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PathJson {
    pub connection_id: String,
    pub cid: u16,
    pub leading: bool,
    pub local_address: Option<String>,
    pub remote_address: Option<String>,
    pub primary: bool,
    pub weight: u32,
}

fn paths(session: &Session) -> Vec<PathJson> {
    session
        .connections()
        .into_iter()
        .map(|c| PathJson {
            connection_id: c.id.to_string(),
            cid: c.cid,
            leading: c.leading,
            local_address: c.local_address.map(|a| a.to_string()),
            remote_address: c.remote_address.map(|a| a.to_string()),
            primary: c.primary,
            weight: c.weight,
        })
        .collect()
}

/// Takes the per-second samples of the timeline.
struct Sampler {
    start: Instant,
    last: Instant,
    last_ops: u64,
    last_failed: u64,
    /// The connections by CID (a reinstated connection keeps its CID and
    /// its counters), in the order of `paths`, with their last byte counts.
    cids: Vec<(u16, u64)>,
    bs: u64,
    print: bool,
    points: Vec<TimelinePoint>,
}

/// Data bytes moved by each connection, by CID.
fn connection_bytes(session: &Session) -> Vec<(u16, u64)> {
    session.connections().into_iter().map(|c| (c.cid, c.counters.bytes_in + c.counters.bytes_out)).collect()
}

impl Sampler {
    fn new(io: &Io, bs: u64, print: bool) -> Sampler {
        let now = Instant::now();
        Sampler {
            start: now,
            last: now,
            last_ops: io.completed.load(Ordering::Relaxed),
            last_failed: io.failed.load(Ordering::Relaxed),
            cids: connection_bytes(&io.session),
            bs,
            print,
            points: Vec::new(),
        }
    }

    fn sample(&mut self, io: &Io) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let ops = io.completed.load(Ordering::Relaxed);
        let failed = io.failed.load(Ordering::Relaxed);
        let bytes = connection_bytes(&io.session);
        let mib = f64::from(1u32 << 20);
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let per: Vec<f64> = self
            .cids
            .iter_mut()
            .map(|(cid, last)| {
                let now_bytes = bytes.iter().find(|(c, _)| c == cid).map_or(*last, |(_, b)| *b);
                let d = now_bytes.saturating_sub(*last);
                *last = now_bytes;
                round(d as f64 / mib / dt)
            })
            .collect();
        let dops = ops.saturating_sub(self.last_ops);
        let p = TimelinePoint {
            t: (now.duration_since(self.start).as_secs_f64() * 1000.0).round() / 1000.0,
            phase: io.stage().name(),
            mib_s: round(dops as f64 * self.bs as f64 / mib / dt),
            iops: round(dops as f64 / dt),
            errors: failed.saturating_sub(self.last_failed),
            per_connection_mib_s: per,
        };
        if self.print {
            let per: Vec<String> = p.per_connection_mib_s.iter().map(|v| format!("{v:.1}")).collect();
            eprintln!(
                "t={:.1}s {} {:.1} MiB/s {:.0} IOPS errors={} per-connection MiB/s [{}]",
                p.t,
                p.phase,
                p.mib_s,
                p.iops,
                p.errors,
                per.join(" ")
            );
        }
        self.points.push(p);
        (self.last, self.last_ops, self.last_failed) = (now, ops, failed);
    }
}

/// The shortest sample: a shorter one (a tick right after a change of
/// phase) gives rates of a few commands, noise; its commands go to the next.
const MIN_SAMPLE: Duration = Duration::from_millis(100);

/// Samples every second until stopped; the last, shorter sample is taken
/// by [`finish_timeline`].
fn start_timeline(io: Arc<Io>, bs: u64, print: bool) -> (Arc<std::sync::Mutex<Sampler>>, tokio::task::JoinHandle<()>) {
    let sampler = Arc::new(std::sync::Mutex::new(Sampler::new(&io, bs, print)));
    let s = sampler.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            // A change of phase just took a sample.
            if s.last.elapsed() >= MIN_SAMPLE {
                s.sample(&io);
            }
        }
    });
    (sampler, task)
}

/// Moves the run to `stage`, closing the timeline's current sample first
/// so that no sample spans two phases.
fn switch(io: &Io, sampler: &std::sync::Mutex<Sampler>, stage: Stage) {
    let mut s = sampler.lock().unwrap_or_else(|p| p.into_inner());
    if io.stage() != stage && s.last.elapsed() >= MIN_SAMPLE {
        s.sample(io);
    }
    io.set_stage(stage);
}

fn finish_timeline(
    io: &Io,
    sampler: &std::sync::Mutex<Sampler>,
    task: tokio::task::JoinHandle<()>,
) -> Vec<TimelinePoint> {
    task.abort();
    let mut s = sampler.lock().unwrap_or_else(|p| p.into_inner());
    if s.last.elapsed() >= MIN_SAMPLE || s.points.is_empty() {
        s.sample(io);
    } else {
        // Too short for rates, but every failure counts: the timeline's
        // errors add up to the commands that failed.
        let failed = io.failed.load(Ordering::Relaxed);
        let late = failed.saturating_sub(s.last_failed);
        if let Some(p) = s.points.last_mut() {
            p.errors += late;
        }
        s.last_failed = failed;
    }
    std::mem::take(&mut s.points)
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// The `--json` object.
#[derive(Debug, Serialize)]
pub struct Report {
    pub rw: &'static str,
    pub bs: u64,
    pub iodepth: u32,
    pub seconds: f64,
    pub bw_mib_s: f64,
    pub iops: f64,
    pub cpu_s_per_gib: f64,
    /// The part of `cpu_s_per_gib` spent in user space (the rest is the
    /// kernel's: syscalls, TCP, copies to and from the socket).
    pub cpu_user_s_per_gib: f64,
    pub lat_us: Latency,
    pub connections: u16,
    /// Commands that failed (measured or not, the --verify sweeps too),
    /// plus the sectors --verify found different.
    pub errors: u64,
    /// --verify: the 512-byte sectors that differed from their stamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_errors: Option<u64>,
    /// --verify: the bytes checked (the reads, and the read-back of a write run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_bytes: Option<u64>,
    /// --verify: the seed of the stamps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The session's connections, leading first, as the run began.
    pub paths: Vec<PathJson>,
    pub timeline: Vec<TimelinePoint>,
    /// --verify: the first differences, described.
    #[serde(skip)]
    pub verify_first: Vec<String>,
}

impl Report {
    fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "workload:    {} bs={} iodepth={} connections={}",
            self.rw, self.bs, self.iodepth, self.connections
        );
        let _ = writeln!(s, "seconds:     {:.2}", self.seconds);
        let _ = writeln!(s, "bandwidth:   {:.1} MiB/s", self.bw_mib_s);
        let _ = writeln!(s, "iops:        {:.0}", self.iops);
        let _ =
            writeln!(s, "cpu:         {:.3} s/GiB ({:.3} in user space)", self.cpu_s_per_gib, self.cpu_user_s_per_gib);
        let _ = writeln!(s, "latency p50: {:.1} us", self.lat_us.p50);
        let _ = writeln!(s, "latency p99: {:.1} us", self.lat_us.p99);
        let _ = writeln!(s, "latency p99.9: {:.1} us", self.lat_us.p999);
        let _ = writeln!(s, "errors:      {}", self.errors);
        if let (Some(bad), Some(bytes)) = (self.verify_errors, self.verified_bytes) {
            let _ = writeln!(s, "verified:    {bytes} bytes, {bad} sectors differ");
        }
        s
    }
}

fn seconds(v: f64, what: &str) -> Result<Duration, String> {
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        return Err(format!("--{what} {v} is out of range (0 to 86400 seconds)"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Runs the benchmark described by `args` and prints its report.
pub async fn run(common: &Common, args: &BenchArgs) -> CmdResult {
    let time = seconds(args.time, "time")?;
    if time.is_zero() {
        return Err("--time must be greater than 0".into());
    }
    let warmup = seconds(args.warmup, "warmup")?;
    let url = IscsiUrl::parse(&args.url).map_err(|e| e.to_string())?;
    let (Some(target), Some(lun)) = (url.target.clone(), url.lun) else {
        return Err(format!("{} does not name a LUN: expected iscsi://HOST[:PORT]/IQN/LUN", redact(&args.url)).into());
    };
    crate::commands::check_mcs(&args.mcs)?;
    if args.prefill && args.rw.is_write() {
        return Err("--prefill is for the read modes: a write run stamps what it writes itself".into());
    }
    let mut cfg = session_config(common, Some(&url), &args.session)?;
    crate::commands::apply_from(&mut cfg, &url.portal, &args.mcs)?;
    let ipsec = cfg.ipsec.clone();
    // The timeline's lines replace the progress display unless --progress asks for both.
    let tty = std::io::stderr().is_terminal() && !args.timeline;
    let screen = Screen::new(args.progress.mode(tty));
    let mut signals = Signals::listen()?;
    let interrupted = |stop: crate::commands::Stop| {
        screen.leave();
        CmdError::Interrupted { message: "interrupted: no report".to_string(), status: stop.status() }
    };
    let phase = Phase::spinner(&screen, format!("login to {}", redact(&args.url)));
    // A login cut short is dropped: its connections close.
    let session = tokio::select! {
        r = async {
            let session = crate::commands::open_session(&url.portal, Some(&target), cfg).await?;
            crate::commands::grow(&session, &url, &args.mcs, &ipsec).await?;
            Ok::<_, CmdError>(session)
        } => r?,
        stop = signals.recv() => return Err(interrupted(stop)),
    };
    phase.finish("");
    let result = tokio::select! {
        r = async {
            crate::commands::check_disk(&session, &target, lun).await?;
            measure(&session, lun, args, time, warmup, &screen).await
        } => r,
        stop = signals.recv() => Err(interrupted(stop)),
    };
    let phase = Phase::spinner(&screen, "logout".to_string());
    // A second signal gives up the logout.
    tokio::select! {
        () = crate::commands::logout(&session) => phase.finish(""),
        _ = signals.recv() => screen.leave(),
    }
    let (report, first_error) = result?;
    let text = if args.json {
        let mut s = serde_json::to_string(&report).map_err(|e| format!("cannot encode JSON: {e}"))?;
        s.push('\n');
        s
    } else {
        report.human()
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(err) => return Err(format!("cannot write to stdout: {err}").into()),
    }
    if let Some(bad) = report.verify_errors.filter(|n| *n > 0) {
        for line in &report.verify_first {
            eprintln!("rsiscsi: verify: {line}");
        }
        let more = bad.saturating_sub(report.verify_first.len() as u64);
        let first = report.verify_first.first().map(String::as_str).unwrap_or("");
        let tail = if more > 0 { format!(" ({more} more not shown)") } else { String::new() };
        return Err(format!(
            "--verify: {bad} sector(s) differ from what --seed {} writes; the first: {first}{tail}",
            args.seed
        )
        .into());
    }
    if report.errors > 0 && report.iops == 0.0 {
        // The first error's class picks the exit status (a target that went
        // away is not a SCSI error).
        let what = format!("every measured command failed ({} errors), the first", report.errors);
        return Err(match first_error {
            Some(e) => CmdError::from(e).context(&what),
            None => what.into(),
        });
    }
    Ok(())
}

/// Waits for `until`, showing `phase` with the running rate of the
/// commands completed; without progress shown, only waits. The display's
/// own CPU (a redraw at most 20 times a second) is counted in the report.
async fn watch(mut phase: Phase, io: &Io, until: Instant, bs: u64, screen: &Screen) {
    let every = match screen.mode {
        ProgressMode::Off => {
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        ProgressMode::Bar => Duration::from_millis(250),
        ProgressMode::Lines => crate::commands::progress::LINE_EVERY,
    };
    let (start, ops0) = (Instant::now(), io.completed.load(Ordering::Relaxed));
    let mut last = (start, ops0);
    let rate = |ops: u64, secs: f64| {
        let per_s = ops as f64 / secs.max(1e-3);
        let bytes = crate::commands::progress::size(per_s * bs as f64);
        format!("{bytes}/s, {per_s:.0} IOPS")
    };
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::time::sleep_until(until.min(now + every).into()).await;
        let (now, ops) = (Instant::now(), io.completed.load(Ordering::Relaxed));
        phase.tick(&rate(ops - last.1, now.duration_since(last.0).as_secs_f64()));
        last = (now, ops);
    }
    let ops = io.completed.load(Ordering::Relaxed);
    phase.finish(&rate(ops - ops0, start.elapsed().as_secs_f64()));
}

async fn measure(
    session: &Session,
    lun: u64,
    args: &BenchArgs,
    time: Duration,
    warmup: Duration,
    screen: &Screen,
) -> CmdResult<(Report, Option<iscsi_initiator::Error>)> {
    let cap = session
        .read_capacity(lun)
        .await
        .map_err(|e| CmdError::from(e).context(&format!("READ CAPACITY of LUN {lun}")))?;
    let block_size = u64::from(cap.block_size);
    if block_size == 0 || !args.bs.is_multiple_of(block_size) {
        return Err(format!("--bs {} is not a multiple of the LUN's block size {block_size}", args.bs).into());
    }
    if args.verify && !block_size.is_multiple_of(crate::stamp::SECTOR as u64) {
        return Err(format!(
            "--verify stamps 512-byte sectors: the LUN's block size {block_size} is not a multiple of 512"
        )
        .into());
    }
    if !args.offset.is_multiple_of(block_size) || args.offset >= cap.bytes() {
        return Err(format!(
            "--offset {} is not a multiple of the block size {block_size} below the LUN's size {}",
            args.offset,
            cap.bytes()
        )
        .into());
    }
    let room = cap.bytes() - args.offset;
    let region = args.size.unwrap_or(room).min(room);
    let blocks_per_io = args.bs / block_size;
    if u32::try_from(blocks_per_io).is_err() {
        return Err(format!("--bs {} is too large for one command", args.bs).into());
    }
    let slots = region / args.bs;
    if slots == 0 {
        return Err(format!("the LUN region ({region} bytes) is smaller than --bs {}", args.bs).into());
    }
    let io = Arc::new(Io {
        session: session.clone(),
        lun,
        block_size: cap.block_size,
        first_lba: args.offset / block_size,
        blocks_per_io,
        slots,
        verify: args.verify.then(|| Verify::new(args.seed, slots)),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stage: std::sync::atomic::AtomicU8::new(Stage::Warmup as u8),
    });
    let paths = paths(session);
    let (sampler, sampling) = start_timeline(io.clone(), args.bs, args.timeline);
    let mut errors = 0u64;
    let mut first_error = None;
    if args.prefill {
        switch(&io, &sampler, Stage::Prefill);
        let phase = Phase::spinner(screen, format!("prefill {region} bytes with --verify stamps"));
        let r = sweeps(&io, args.iodepth, true).await?;
        phase.finish("");
        if r.errors > 0 {
            sampling.abort();
            let what = format!("--prefill: {} of {} writes failed, the first", r.errors, r.errors + r.ops);
            return Err(match r.first_error {
                Some(e) => CmdError::from(e).context(&what),
                None => what.into(),
            });
        }
    }
    switch(&io, &sampler, Stage::Warmup);
    let now = Instant::now();
    let plan = Arc::new(Plan {
        io: io.clone(),
        rw: args.rw,
        measure_from: now + warmup,
        stop_at: now + warmup + time,
        next_seq: AtomicU64::new(0),
    });
    let base_seed = rand::random::<u64>();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..args.iodepth {
        let seed = base_seed.wrapping_add(u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        set.spawn(worker(plan.clone(), seed));
    }
    // The measured window is [measure_from, stop_at): the commands that complete in it and
    // the CPU used in it; the commands still in flight at its end are waited for, not counted.
    if !warmup.is_zero() {
        let phase = Phase::timed(screen, "warm-up".to_string(), "warm-up", warmup);
        watch(phase, &io, plan.measure_from, args.bs, screen).await;
    }
    switch(&io, &sampler, Stage::Run);
    let cpu0 = process_cpu();
    let name = format!("{} bs={} iodepth={}", args.rw.name(), args.bs, args.iodepth);
    let phase = Phase::timed(screen, name, args.rw.name(), time);
    watch(phase, &io, plan.stop_at, args.bs, screen).await;
    let cpu1 = process_cpu();
    let mut hist = Histogram::default();
    let mut ops = 0u64;
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| CmdError::from(format!("benchmark worker failed: {e}")))?;
        hist.merge(&r.hist);
        ops += r.ops;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    if args.verify && args.rw.is_write() {
        // What the run wrote, read back and checked (not measured).
        switch(&io, &sampler, Stage::Verify);
        let phase = Phase::spinner(screen, "read back and verify what was written".to_string());
        let r = sweeps(&io, args.iodepth, false).await?;
        phase.finish("");
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let timeline = finish_timeline(&io, &sampler, sampling);
    let elapsed = plan.stop_at.saturating_duration_since(plan.measure_from).as_secs_f64();
    let (cpu, cpu_user) = match (cpu0, cpu1) {
        (Some(a), Some(b)) => {
            let user = b.user.saturating_sub(a.user).as_secs_f64();
            (user + b.system.saturating_sub(a.system).as_secs_f64(), user)
        }
        _ => (f64::NAN, f64::NAN),
    };
    if let Some(e) = &first_error {
        tracing::warn!("{errors} command(s) failed; the first: {e}");
    }
    let (verify_errors, verified_bytes, verify_first) = match &io.verify {
        Some(v) => (
            Some(v.bad.load(Ordering::Relaxed)),
            Some(v.checked.load(Ordering::Relaxed)),
            v.first.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        ),
        None => (None, None, Vec::new()),
    };
    let bytes = ops as f64 * args.bs as f64;
    let gib = bytes / f64::from(1u32 << 30);
    let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
    let report = Report {
        rw: args.rw.name(),
        bs: args.bs,
        iodepth: args.iodepth,
        seconds: (elapsed * 1000.0).round() / 1000.0,
        bw_mib_s: if elapsed > 0.0 { bytes / f64::from(1u32 << 20) / elapsed } else { 0.0 },
        iops: if elapsed > 0.0 { ops as f64 / elapsed } else { 0.0 },
        cpu_s_per_gib: if gib > 0.0 { cpu / gib } else { 0.0 },
        cpu_user_s_per_gib: if gib > 0.0 { cpu_user / gib } else { 0.0 },
        lat_us: Latency {
            p50: us(hist.percentile(50.0)),
            p99: us(hist.percentile(99.0)),
            p999: us(hist.percentile(99.9)),
        },
        connections: args.mcs.connections,
        errors: errors + verify_errors.unwrap_or(0),
        verify_errors,
        verified_bytes,
        seed: args.verify.then_some(args.seed),
        paths,
        timeline,
        verify_first,
    };
    Ok((report, first_error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        b: BenchArgs,
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("4x").is_err());
        assert!(parse_size("-4k").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn args_parse() {
        let t = T::try_parse_from([
            "x",
            "iscsi://h/iqn.x:y/1",
            "--rw",
            "randwrite",
            "--bs",
            "4k",
            "--iodepth",
            "32",
            "--time",
            "5",
        ])
        .unwrap();
        assert_eq!(t.b.rw, RwMode::Randwrite);
        assert_eq!(t.b.bs, 4096);
        assert_eq!(t.b.iodepth, 32);
        assert_eq!(t.b.time, 5.0);
        assert_eq!(t.b.mcs.connections, 1);
        assert_eq!(t.b.mcs.policy, iscsi_initiator::model::LoadBalancePolicy::RoundRobin);
        let t = T::try_parse_from(["x", "u", "--bs", "1MiB", "--connections", "4", "--policy", "least-queue-depth"])
            .unwrap();
        assert_eq!(t.b.bs, 1 << 20);
        assert_eq!(t.b.mcs.connections, 4);
        assert_eq!(t.b.mcs.policy, iscsi_initiator::model::LoadBalancePolicy::LeastQueueDepth);
        assert!(T::try_parse_from(["x", "u", "--iodepth", "0"]).is_err());
        assert!(T::try_parse_from(["x", "u", "--connections", "0"]).is_err());
        assert!(T::try_parse_from(["x", "u", "--rw", "trim"]).is_err());
        assert!(T::try_parse_from(["x", "u", "--bs", "4q"]).is_err());
    }

    #[test]
    fn verify_options_go_together() {
        let t = T::try_parse_from(["x", "u", "--verify", "--seed", "9", "--prefill", "--timeline"]).unwrap();
        assert!(t.b.verify && t.b.prefill && t.b.timeline);
        assert_eq!(t.b.seed, 9);
        assert_eq!(T::try_parse_from(["x", "u", "--verify"]).unwrap().b.seed, 1);
        assert!(T::try_parse_from(["x", "u", "--seed", "9"]).is_err(), "--seed without --verify");
        assert!(T::try_parse_from(["x", "u", "--prefill"]).is_err(), "--prefill without --verify");
        assert!(T::try_parse_from(["x", "u", "--verify", "--seed", "-1"]).is_err());
    }

    #[test]
    fn verify_remembers_the_slots_written() {
        let v = Verify::new(3, 130);
        assert_eq!(v.written.len(), 3);
        for s in [0, 63, 64, 129] {
            assert!(!v.is_written(s));
            v.mark(s);
            assert!(v.is_written(s));
        }
        assert!(!v.is_written(1) && !v.is_written(128));
        // Out of range: neither a panic nor a bit.
        v.mark(10_000);
        assert!(!v.is_written(10_000));
        let mut data = vec![0u8; 4096];
        crate::stamp::fill(&mut data, 3, 8);
        assert_eq!(v.check(&data, 8, 512), 0);
        assert_eq!(v.check(&data, 16, 4096), 8);
        assert_eq!(v.bad.load(Ordering::Relaxed), 8);
        assert_eq!(v.checked.load(Ordering::Relaxed), 8192);
        let first = v.first.lock().unwrap().clone();
        assert_eq!(first.len(), VERIFY_KEEP);
        assert_eq!(
            first[0],
            "LBA 2 (512-byte sector 0 of it): holds the data of 512-byte sector 8, expected sector 16"
        );
    }

    #[test]
    fn worker_threads_follow_the_connections_unless_given() {
        let t = T::try_parse_from(["x", "u", "--threads", "3"]).unwrap();
        assert_eq!(t.b.worker_threads(), Some(3));
        assert!(T::try_parse_from(["x", "u", "--threads", "0"]).is_err());
        if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            let t = T::try_parse_from(["x", "u"]).unwrap();
            assert_eq!(t.b.worker_threads(), Some(1));
            let t = T::try_parse_from(["x", "u", "--iodepth", "1"]).unwrap();
            assert_eq!(t.b.worker_threads(), None);
            let t = T::try_parse_from(["x", "u", "--connections", "64"]).unwrap();
            assert_eq!(t.b.worker_threads(), Some(cpus.min(64)));
        }
    }

    #[test]
    fn histogram_buckets_round_trip() {
        for v in [0u64, 1, 255, 256, 257, 1000, 4095, 4096, 123_456_789, u64::MAX / 3, u64::MAX] {
            let i = Histogram::index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(Histogram::upper(i) >= v, "{v}");
            // Relative width of a bucket stays under 1/128.
            assert!((Histogram::upper(i) - v) as f64 <= v as f64 / 128.0 + 1.0, "{v}");
        }
        assert_eq!(Histogram::index(255) + 1, Histogram::index(256));
    }

    #[test]
    fn percentiles_exact_for_small_values() {
        let mut h = Histogram::default();
        for v in 1..=200u64 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 100);
        assert_eq!(h.percentile(99.0), 198);
        assert_eq!(h.percentile(99.9), 200);
        assert_eq!(h.percentile(100.0), 200);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(Histogram::default().percentile(50.0), 0);
    }

    #[test]
    fn percentiles_within_bucket_precision() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        // 1..=100_000 us in ns, split over two histograms and merged.
        for k in 1..=100_000u64 {
            if k % 2 == 0 { a.record(k * 1000) } else { b.record(k * 1000) }
        }
        a.merge(&b);
        assert_eq!(a.count(), 100_000);
        for (p, want) in [(50.0, 50_000_000f64), (99.0, 99_000_000.0), (99.9, 99_900_000.0)] {
            let got = a.percentile(p) as f64;
            assert!(got >= want && got <= want * (1.0 + 1.0 / 128.0), "p{p}: {got} vs {want}");
        }
        // A single outlier moves p99.9 only when it is in the top 0.1%.
        let mut h = Histogram::default();
        for _ in 0..999 {
            h.record(100);
        }
        h.record(1_000_000);
        assert_eq!(h.percentile(99.9), 100);
        assert_eq!(h.percentile(100.0), 1_000_000);
    }

    #[test]
    fn random_offsets_stay_in_range() {
        let mut r = XorShift(12345);
        let mut seen = [false; 7];
        for _ in 0..10_000 {
            let v = r.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
