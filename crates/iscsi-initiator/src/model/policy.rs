//! MC/S load balancing: the policies of Windows'
//! `ISCSI_Supported_LB_Policies.LoadBalancePolicy` and a pure chooser that
//! picks the connection (path) for each new task.
//!
//! RFC 7143 §4.2.2 lets an initiator send a task on any connection of the
//! session (connection allegiance then holds for that task); how it chooses
//! is left to the initiator, and these are Windows' choices.

use std::fmt;
use std::str::FromStr;

use super::status::{IsdscCode, Status};

/// Windows `MSiSCSI_LB_VENDOR_SPECIFIC` (6): recognised but never supported.
pub const MSISCSI_LB_VENDOR_SPECIFIC: u32 = 6;

/// An MC/S load balance policy, with Windows' `MSiSCSI_LB_*` numbers (not the
/// MPIO `DSM_LB_*` list, which inserts "least blocks" at 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum LoadBalancePolicy {
    /// `MSiSCSI_LB_FAILOVER`: one path carries everything, the others stand by.
    FailoverOnly = 1,
    /// `MSiSCSI_LB_ROUND_ROBIN`: every available path in turn. The default
    /// (said to be Windows' default for MC/S; unconfirmed).
    #[default]
    RoundRobin = 2,
    /// `MSiSCSI_LB_ROUND_ROBIN_WITH_SUBSET`: round robin over the primary
    /// paths; standbys only when no primary is available.
    RoundRobinWithSubset = 3,
    /// `MSiSCSI_LB_DYN_LEAST_QUEUE_DEPTH`: the path with the fewest
    /// outstanding tasks; once the links' rates are measured (writes), the
    /// path where the task would finish first (see `Balancer::pick_sized`).
    LeastQueueDepth = 4,
    /// `MSiSCSI_LB_WEIGHTED_PATHS`: paths share tasks in proportion to their
    /// administrator-set weights.
    WeightedPaths = 5,
}

/// Least-queue-depth takes as equally good every path that would finish a
/// task within a quarter of the best path's wait (or one task, if more):
/// measured rates of equal links drift by more than one deep queue's last
/// task. istgt 1 MiB writes over 4 equal links, 2-run medians: 345-371
/// MiB/s with one task, 336-386 with an eighth, 401-407 with a quarter
/// (round-robin 421-434); unequal links (1, 1, 0.2, 0.2 Gbit/s) no worse
/// (tgt 267 -> 273, istgt 167 -> 172; bench/results/2026-12-07-links-rerun.md).
const LQD_SLACK_DIVISOR: u128 = 4;

/// How much a path may hold, in time at its measured link rate, before a
/// new task waits in the session's queue for the first path with room
/// instead of joining its queue ([`PathView::has_room`]). Binding a task to
/// a path late keeps every path's queue short, so CmdSN order follows the
/// order in which the links deliver: a target that runs a session's
/// commands in CmdSN order (istgt) no longer waits on a command stuck
/// behind a long queue while the other links idle, and istgt, which sends
/// R2Ts at once for only 16 commands on the leading connection, has none
/// deferred. 4 links of 1, 1, 0.2 and 0.2 Gbit/s, 1 MiB writes at iodepth
/// 64 to istgt: weighted 212-226 -> 273 MiB/s, least-queue-depth 173-183
/// -> 265 (links' sum 274); equal links and tgt unchanged. 100 ms gave
/// least-queue-depth 231, 200 ms 187.
pub const ROOM_HORIZON_MS: u64 = 50;

const SPELLINGS: &str = "failover-only, round-robin, round-robin-subset, least-queue-depth, weighted";

impl LoadBalancePolicy {
    pub const ALL: [LoadBalancePolicy; 5] =
        [Self::FailoverOnly, Self::RoundRobin, Self::RoundRobinWithSubset, Self::LeastQueueDepth, Self::WeightedPaths];

    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The policy for a Windows value. 6 (vendor specific) is known but
    /// refused with `ISDSC_LB_POLICY_NOT_SUPPORTED`; anything else is
    /// `ISDSC_INVALID_LOAD_BALANCE_POLICY`.
    pub fn from_u32(v: u32) -> Result<Self, Status> {
        match v {
            1 => Ok(Self::FailoverOnly),
            2 => Ok(Self::RoundRobin),
            3 => Ok(Self::RoundRobinWithSubset),
            4 => Ok(Self::LeastQueueDepth),
            5 => Ok(Self::WeightedPaths),
            MSISCSI_LB_VENDOR_SPECIFIC => Err(Status::new(
                IsdscCode::LbPolicyNotSupported,
                "load balance policy 6 (vendor specific) is not supported",
            )),
            _ => Err(Status::new(
                IsdscCode::InvalidLoadBalancePolicy,
                format!("load balance policy {v}: expected 1 to 5"),
            )),
        }
    }

    /// The user spelling (CLI, configuration).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailoverOnly => "failover-only",
            Self::RoundRobin => "round-robin",
            Self::RoundRobinWithSubset => "round-robin-subset",
            Self::LeastQueueDepth => "least-queue-depth",
            Self::WeightedPaths => "weighted",
        }
    }

    /// The Windows constant name.
    pub const fn windows_name(self) -> &'static str {
        match self {
            Self::FailoverOnly => "MSiSCSI_LB_FAILOVER",
            Self::RoundRobin => "MSiSCSI_LB_ROUND_ROBIN",
            Self::RoundRobinWithSubset => "MSiSCSI_LB_ROUND_ROBIN_WITH_SUBSET",
            Self::LeastQueueDepth => "MSiSCSI_LB_DYN_LEAST_QUEUE_DEPTH",
            Self::WeightedPaths => "MSiSCSI_LB_WEIGHTED_PATHS",
        }
    }
}

impl fmt::Display for LoadBalancePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LoadBalancePolicy {
    type Err = Status;

    /// Only the exact lower-case spellings of [`LoadBalancePolicy::as_str`].
    fn from_str(s: &str) -> Result<Self, Status> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            Status::new(
                IsdscCode::InvalidLoadBalancePolicy,
                format!("unknown load balance policy {s:?}; expected one of: {SPELLINGS}"),
            )
        })
    }
}

/// What the balancer needs to know about one path (one TCP connection of
/// the session; Windows `ISCSI_Path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathView {
    /// Logged in and in full-feature phase, able to take a new task.
    pub available: bool,
    /// Windows `PrimaryPath`: active under failover and RR-with-subset;
    /// a non-primary path is a standby.
    pub primary: bool,
    /// Windows `PathWeight`, for weighted paths; 0 = only when nothing else.
    pub weight: u32,
    /// Tasks sent on the path and not yet completed.
    pub outstanding: usize,
    /// Payload bytes (both directions) of those tasks.
    pub outstanding_bytes: u64,
    /// Measured payload throughput of the path, bytes per second;
    /// 0 = not measured yet.
    pub bytes_per_sec: u64,
}

impl PathView {
    /// Whether the path takes a task of `bytes` now: while what it holds
    /// with it would move within [`ROOM_HORIZON_MS`] at its measured rate.
    /// An idle path, and one not measured (a path that only reads: our
    /// side sends small commands), always has room.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.bytes_per_sec == 0
            || self.outstanding == 0
            || self.outstanding_bytes.saturating_add(bytes) <= self.bytes_per_sec.saturating_mul(ROOM_HORIZON_MS) / 1000
    }
}

/// A path's link rate for [`PathView::bytes_per_sec`]: the median of the
/// last [`LinkRate::WINDOW`] delivery rate samples of its TCP socket
/// (`tcp_info::delivery_rate`, one per sweep) that say something of the
/// link: the path, not our sending, limited them, and at least
/// [`LinkRate::MIN_MOVED`] bytes were acknowledged since the sample before.
/// The median, as single samples stray far both ways (on a 1 Gbit/s link,
/// from 0.1 to 14 Gbit/s when ACKs bunch up). A path that only reads (our
/// side sends small commands) stays unmeasured, and one that sent nothing
/// worth a sample for a whole window forgets its rate: a path judged slow
/// gets little to send, and must not stay judged on old samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkRate {
    samples: [u64; LinkRate::WINDOW],
    /// How many samples were kept (the next goes at `taken % WINDOW`).
    taken: usize,
    /// The socket's acknowledged bytes at the last sample.
    acked: u64,
    /// Samples in a row that were not kept.
    skipped: usize,
}

impl LinkRate {
    /// Samples kept: at one every 250 ms, the last two seconds.
    pub const WINDOW: usize = 8;
    /// Samples needed before the rate counts.
    pub const MIN_SAMPLES: usize = 3;
    /// Bytes that must have moved since the sample before for a sample to
    /// count: a few bursts of write data, not a few commands.
    pub const MIN_MOVED: u64 = 256 << 10;

    /// A sample of `bytes_per_sec`, the socket having had `bytes_acked`
    /// acknowledged in all; `app_limited` ones are left out.
    pub fn sample(&mut self, bytes_per_sec: u64, app_limited: bool, bytes_acked: u64) {
        let moved = bytes_acked.wrapping_sub(self.acked);
        self.acked = bytes_acked;
        if app_limited || bytes_per_sec == 0 || moved < Self::MIN_MOVED {
            self.skipped = self.skipped.saturating_add(1);
            if self.skipped >= Self::WINDOW {
                self.taken = 0;
            }
            return;
        }
        self.skipped = 0;
        if let Some(slot) = self.samples.get_mut(self.taken % Self::WINDOW) {
            *slot = bytes_per_sec;
        }
        self.taken = self.taken.wrapping_add(1);
    }

    /// Bytes per second; 0 until [`LinkRate::MIN_SAMPLES`] samples.
    pub fn bytes_per_sec(&self) -> u64 {
        let n = self.taken.min(Self::WINDOW);
        if n < Self::MIN_SAMPLES {
            return 0;
        }
        let mut s = self.samples;
        let kept = s.get_mut(..n).unwrap_or_default();
        kept.sort_unstable();
        kept.get(n / 2).copied().unwrap_or(0)
    }
}

/// Chooses the path for each new task under a [`LoadBalancePolicy`]. Pure
/// state: the session passes the current paths at every call, and the slice
/// may grow or shrink between calls (connections added or removed).
#[derive(Debug, Clone, Default)]
pub struct Balancer {
    policy: LoadBalancePolicy,
    /// Where the next rotation starts looking.
    cursor: usize,
    /// Smooth weighted round robin state, one entry per path index.
    current: Vec<i64>,
    /// `current` before the last pick, put back when the pick is held.
    saved: Vec<i64>,
}

impl Balancer {
    pub fn new(policy: LoadBalancePolicy) -> Self {
        Self { policy, cursor: 0, current: Vec::new(), saved: Vec::new() }
    }

    pub fn policy(&self) -> LoadBalancePolicy {
        self.policy
    }

    /// Switches policy and forgets the rotation and weight state.
    pub fn set_policy(&mut self, policy: LoadBalancePolicy) {
        *self = Self::new(policy);
    }

    /// The index in `paths` of the path for the next task, or `None` when no
    /// path is available.
    pub fn pick(&mut self, paths: &[PathView]) -> Option<usize> {
        self.pick_sized(paths, 0)
    }

    /// Like [`Balancer::pick`], for a task that moves `bytes` of payload
    /// (least-queue-depth weighs it against each path's speed). When the
    /// policy spreads tasks over two or more available paths and the one it
    /// chooses has no room ([`PathView::has_room`]), the task is held:
    /// `None`, and the choice is undone so that the same path comes first
    /// again once it has room (a full fast path is waited for, not passed
    /// over for a slow one).
    pub fn pick_sized(&mut self, paths: &[PathView], bytes: u64) -> Option<usize> {
        let spread = self.policy != LoadBalancePolicy::FailoverOnly && paths.iter().filter(|p| p.available).count() > 1;
        if !spread {
            return self.choose(paths, bytes);
        }
        let cursor = self.cursor;
        self.saved.clone_from(&self.current);
        let i = self.choose(paths, bytes)?;
        if paths.get(i).is_some_and(|p| p.has_room(bytes)) {
            return Some(i);
        }
        self.cursor = cursor;
        std::mem::swap(&mut self.current, &mut self.saved);
        None
    }

    /// The policy's choice, with no regard to room.
    fn choose(&mut self, paths: &[PathView], bytes: u64) -> Option<usize> {
        if !paths.iter().any(|p| p.available) {
            return None;
        }
        match self.policy {
            LoadBalancePolicy::FailoverOnly => {
                paths.iter().position(|p| p.available && p.primary).or_else(|| paths.iter().position(|p| p.available))
            }
            LoadBalancePolicy::RoundRobin => self.rotate(paths, |p| p.available),
            LoadBalancePolicy::RoundRobinWithSubset => {
                self.rotate(paths, |p| p.available && p.primary).or_else(|| self.rotate(paths, |p| p.available))
            }
            LoadBalancePolicy::LeastQueueDepth => self.least_wait(paths, bytes),
            LoadBalancePolicy::WeightedPaths => self.weighted(paths),
        }
    }

    /// Least-queue-depth weighed by speed: the available path where this
    /// task would finish first, i.e. with the least (bytes outstanding +
    /// `bytes`) / throughput. Counting tasks alone overloads a slow path:
    /// the target runs commands in CmdSN order across the session (RFC 7143
    /// §4.2.2.1), so a task stuck behind a slow path's queue holds up the
    /// fast ones. The speeds are the links' (`LinkRate`, from the sockets).
    /// Paths close to the best finish are taken in turn. A path
    /// not measured yet counts as the fastest measured; with no path
    /// measured, the task count decides (Windows' rule).
    fn least_wait(&mut self, paths: &[PathView], bytes: u64) -> Option<usize> {
        let fastest = paths.iter().filter(|p| p.available).map(|p| p.bytes_per_sec).max()?;
        if fastest == 0 {
            let least = paths.iter().filter(|p| p.available).map(|p| p.outstanding).min()?;
            return self.rotate(paths, |p| p.available && p.outstanding == least);
        }
        let rate = |p: &PathView| if p.bytes_per_sec == 0 { fastest } else { p.bytes_per_sec };
        // Wait a/ra < b/rb  <=>  a*rb < b*ra, exact in u128 (no division).
        let wait = |p: &PathView| (u128::from(p.outstanding_bytes.saturating_add(bytes)), u128::from(rate(p)));
        let less = |a: (u128, u128), b: (u128, u128)| a.0.saturating_mul(b.1) < b.0.saturating_mul(a.1);
        let best = paths.iter().filter(|p| p.available).map(wait).reduce(|b, w| if less(w, b) { w } else { b })?;
        // Paths that would finish it within a quarter of the best wait (at
        // least one such task) are as good, and taken in turn: a measured
        // rate is not exact, and picking by its last digits sends runs of
        // consecutive CmdSNs to one connection, which a target that reads
        // each connection on a thread of its own and runs them in CmdSN
        // order (istgt) then waits on ([`LQD_SLACK_DIVISOR`]).
        let slack = u128::from(bytes).max(best.0 / LQD_SLACK_DIVISOR);
        let within = (best.0.saturating_add(slack), best.1);
        self.rotate(paths, |p| p.available && !less(within, wait(p)))
    }

    /// The first path at or after the cursor (cyclically) that `want`s, and
    /// moves the cursor past it.
    fn rotate(&mut self, paths: &[PathView], want: impl Fn(&PathView) -> bool) -> Option<usize> {
        let n = paths.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor % n;
        let chosen = (start..n).chain(0..start).find(|&i| paths.get(i).is_some_and(&want))?;
        self.cursor = chosen.wrapping_add(1);
        Some(chosen)
    }

    /// Smooth weighted round robin: every available path gains its weight,
    /// the richest is picked and pays the total. Over any run of
    /// `sum(weights)` picks each path is chosen exactly `weight` times, and
    /// the picks are spread out rather than bunched.
    fn weighted(&mut self, paths: &[PathView]) -> Option<usize> {
        self.current.resize(paths.len(), 0);
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (p, cur)) in paths.iter().zip(self.current.iter_mut()).enumerate() {
            if !p.available || p.weight == 0 {
                // A path that comes back starts from scratch, without credit.
                *cur = 0;
                continue;
            }
            let w = i64::from(p.weight);
            *cur = cur.saturating_add(w);
            total = total.saturating_add(w);
            if best.is_none_or(|(_, b)| *cur > b) {
                best = Some((i, *cur));
            }
        }
        match best {
            Some((i, _)) => {
                if let Some(cur) = self.current.get_mut(i) {
                    *cur = cur.saturating_sub(total);
                }
                Some(i)
            }
            // Only weight-0 paths are available: share among them.
            None => self.rotate(paths, |p| p.available),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn path(available: bool, primary: bool, weight: u32) -> PathView {
        PathView { available, primary, weight, ..PathView::default() }
    }

    fn up(n: usize) -> Vec<PathView> {
        vec![path(true, false, 1); n]
    }

    fn counts(b: &mut Balancer, paths: &[PathView], picks: usize) -> Vec<usize> {
        let mut c = vec![0; paths.len()];
        for _ in 0..picks {
            c[b.pick(paths).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn policy_values_and_spellings() {
        use LoadBalancePolicy::*;
        let expect = [
            (FailoverOnly, 1, "failover-only"),
            (RoundRobin, 2, "round-robin"),
            (RoundRobinWithSubset, 3, "round-robin-subset"),
            (LeastQueueDepth, 4, "least-queue-depth"),
            (WeightedPaths, 5, "weighted"),
        ];
        for (p, v, s) in expect {
            assert_eq!(p.as_u32(), v);
            assert_eq!(LoadBalancePolicy::from_u32(v).unwrap(), p);
            assert_eq!(p.to_string(), s);
            assert_eq!(s.parse::<LoadBalancePolicy>().unwrap(), p);
        }
        assert_eq!(LoadBalancePolicy::default(), RoundRobin);
        assert_eq!(WeightedPaths.windows_name(), "MSiSCSI_LB_WEIGHTED_PATHS");
    }

    #[test]
    fn refuses_unknown_and_vendor_policies() {
        assert_eq!(LoadBalancePolicy::from_u32(6).unwrap_err().code, IsdscCode::LbPolicyNotSupported);
        for v in [0, 7, 0xFFFF_FFFF] {
            assert_eq!(LoadBalancePolicy::from_u32(v).unwrap_err().code, IsdscCode::InvalidLoadBalancePolicy);
        }
        for s in ["", "Round-Robin", "ROUND-ROBIN", "round_robin", "rr", "weighted-paths", " weighted", "vendor"] {
            let e = s.parse::<LoadBalancePolicy>().unwrap_err();
            assert_eq!(e.code, IsdscCode::InvalidLoadBalancePolicy, "{s:?}");
            assert!(e.message.contains(SPELLINGS), "{}", e.message);
        }
    }

    #[test]
    fn nothing_available_gives_none() {
        for p in LoadBalancePolicy::ALL {
            let mut b = Balancer::new(p);
            assert_eq!(b.pick(&[]), None);
            assert_eq!(b.pick(&[path(false, true, 5), path(false, false, 1)]), None);
        }
    }

    #[test]
    fn failover_uses_the_primary_then_moves_on() {
        let mut b = Balancer::new(LoadBalancePolicy::FailoverOnly);
        let mut paths = vec![path(true, false, 1), path(true, true, 1), path(true, false, 1)];
        assert_eq!(counts(&mut b, &paths, 100), vec![0, 100, 0]);
        paths[1].available = false;
        assert_eq!(counts(&mut b, &paths, 100), vec![100, 0, 0]);
        paths[0].available = false;
        assert_eq!(counts(&mut b, &paths, 100), vec![0, 0, 100]);
        paths[1].available = true;
        assert_eq!(counts(&mut b, &paths, 10), vec![0, 10, 0]);
        // No primary at all: the first available path.
        let paths = vec![path(false, false, 1), path(true, false, 1), path(true, false, 1)];
        assert_eq!(counts(&mut b, &paths, 10), vec![0, 10, 0]);
    }

    #[test]
    fn round_robin_rotates_over_available_paths() {
        let mut b = Balancer::new(LoadBalancePolicy::RoundRobin);
        let mut paths = up(3);
        let seq: Vec<_> = (0..6).map(|_| b.pick(&paths).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(counts(&mut b, &paths, 999), vec![333, 333, 333]);
        paths[1].available = false;
        assert_eq!(counts(&mut b, &paths, 1000), vec![500, 0, 500]);
    }

    #[test]
    fn subset_uses_standbys_only_when_all_primaries_are_down() {
        let mut b = Balancer::new(LoadBalancePolicy::RoundRobinWithSubset);
        let mut paths = vec![path(true, true, 1), path(true, false, 1), path(true, true, 1), path(true, false, 1)];
        assert_eq!(counts(&mut b, &paths, 1000), vec![500, 0, 500, 0]);
        paths[0].available = false;
        assert_eq!(counts(&mut b, &paths, 1000), vec![0, 0, 1000, 0]);
        paths[2].available = false;
        assert_eq!(counts(&mut b, &paths, 1000), vec![0, 500, 0, 500]);
        paths[2].available = true;
        assert_eq!(counts(&mut b, &paths, 10), vec![0, 0, 10, 0]);
    }

    /// Issues `picks` tasks of `size` bytes, keeping `depth` in flight (less
    /// while tasks are held); each path finishes `rates[i]` bytes per tick,
    /// a tick being a millisecond (the paths' `bytes_per_sec` are per
    /// second: 1000 times that). Returns the bytes per path.
    fn simulate(
        b: &mut Balancer,
        paths: &mut [PathView],
        rates: &[u64],
        size: u64,
        depth: usize,
        picks: usize,
    ) -> Vec<u64> {
        let mut issued = vec![0u64; paths.len()];
        let mut queues: Vec<std::collections::VecDeque<u64>> = vec![Default::default(); paths.len()];
        let mut done = 0;
        while done < picks {
            while paths.iter().map(|p| p.outstanding).sum::<usize>() < depth && done < picks {
                // Held (no room): the next tick makes some.
                let Some(i) = b.pick_sized(paths, size) else { break };
                paths[i].outstanding += 1;
                paths[i].outstanding_bytes += size;
                queues[i].push_back(size);
                issued[i] += size;
                done += 1;
            }
            for (i, q) in queues.iter_mut().enumerate() {
                let mut budget = rates[i];
                while let Some(front) = q.front_mut() {
                    let n = budget.min(*front);
                    *front -= n;
                    budget -= n;
                    paths[i].outstanding_bytes -= n;
                    if *front > 0 {
                        break;
                    }
                    q.pop_front();
                    paths[i].outstanding -= 1;
                }
            }
        }
        issued
    }

    #[test]
    fn least_wait_with_equal_rates_keeps_queues_within_a_task_and_takes_them_in_turn() {
        let mut b = Balancer::new(LoadBalancePolicy::LeastQueueDepth);
        let mut timed = up(4);
        for (p, r) in timed.iter_mut().zip([100_000_000, 101_000_000, 99_000_000, 100_500_000]) {
            p.bytes_per_sec = r * 1000;
        }
        timed[1].outstanding_bytes = 3 * 65536;
        let mut picks = Vec::new();
        for step in 0..2000 {
            let i = b.pick_sized(&timed, 65536).unwrap();
            picks.push(i);
            timed[i].outstanding_bytes += 65536;
            let done = (step * 7) % 4;
            timed[done].outstanding_bytes = timed[done].outstanding_bytes.saturating_sub(65536);
            let q: Vec<u64> = timed.iter().map(|p| p.outstanding_bytes / 65536).collect();
            if step > 10 {
                let (lo, hi) = (q.iter().min().unwrap(), q.iter().max().unwrap());
                assert!(hi - lo <= 2, "step {step}: queues {q:?}");
            }
        }
        // Rates 1 % apart do not make runs on the fastest path.
        let longest_run = picks.chunk_by(|a, b| a == b).map(<[usize]>::len).max().unwrap();
        assert!(longest_run <= 2, "a run of {longest_run} picks on one path");
    }

    /// Deep queues on links whose measured rates differ by 15 % (equal
    /// links, measured while busy): still taken in turn, no runs.
    #[test]
    fn least_wait_takes_deep_queues_in_turn_despite_rates_apart() {
        let mut b = Balancer::new(LoadBalancePolicy::LeastQueueDepth);
        let mut timed = up(4);
        const MIB: u64 = 1 << 20;
        for (p, r) in timed.iter_mut().zip([100_000_000, 115_000_000, 100_000_000, 100_000_000]) {
            p.bytes_per_sec = r * 1000;
            p.outstanding_bytes = 16 * MIB;
        }
        let mut picks = Vec::new();
        for _ in 0..400 {
            let i = b.pick_sized(&timed, MIB).unwrap();
            // A command of that path finishes as this one joins it: the
            // queues stay 16 deep (`timed` is left as it is).
            picks.push(i);
        }
        let longest_run = picks.chunk_by(|a, b| a == b).map(<[usize]>::len).max().unwrap();
        assert_eq!(longest_run, 1, "{picks:?}");
        for i in 0..4 {
            assert_eq!(picks.iter().filter(|p| **p == i).count(), 100);
        }
    }

    #[test]
    fn least_wait_gives_a_five_times_slower_path_a_fifth_of_the_bytes() {
        let mut b = Balancer::new(LoadBalancePolicy::LeastQueueDepth);
        let mut paths = up(4);
        let rates = [5 * 65536, 5 * 65536, 65536, 65536];
        for (p, r) in paths.iter_mut().zip(rates) {
            p.bytes_per_sec = r * 1000;
        }
        let bytes = simulate(&mut b, &mut paths, &rates, 65536, 32, 12_000);
        let total: u64 = bytes.iter().sum();
        for (i, r) in rates.iter().enumerate() {
            let share = bytes[i] as f64 / total as f64;
            let want = *r as f64 / 12.0 / 65536.0;
            assert!((share - want).abs() < 0.02, "path {i}: {share:.3} of the bytes, want {want:.3}: {bytes:?}");
        }
        // The queues take about the same time to run (within one task on a
        // slow path): no task waits behind a slow path's backlog.
        let spread = |paths: &[PathView]| {
            let waits: Vec<f64> = paths.iter().zip(rates).map(|(p, r)| p.outstanding_bytes as f64 / r as f64).collect();
            waits.iter().cloned().fold(0.0, f64::max) - waits.iter().cloned().fold(f64::MAX, f64::min)
        };
        assert!(spread(&paths) <= 1.0, "{paths:?}");
        // Counting tasks alone keeps as many on a slow path as on a fast
        // one: five times the wait.
        let mut b = Balancer::new(LoadBalancePolicy::LeastQueueDepth);
        let mut counted = up(4);
        simulate(&mut b, &mut counted, &rates, 65536, 32, 12_000);
        assert!(spread(&counted) >= 4.0, "{counted:?}");
    }

    #[test]
    fn least_wait_counts_an_unmeasured_path_as_the_fastest() {
        let mut b = Balancer::new(LoadBalancePolicy::LeastQueueDepth);
        let mut paths = up(3);
        paths[0].bytes_per_sec = 1000;
        paths[1].bytes_per_sec = 4000;
        // Path 2 (no rate yet) is treated as 4000 B/s: it ties with path 1.
        let mut got = [0usize; 3];
        for _ in 0..10 {
            got[b.pick_sized(&paths, 100).unwrap()] += 1;
        }
        assert_eq!(got, [0, 5, 5]);
        paths[1].outstanding_bytes = 400;
        assert_eq!(b.pick_sized(&paths, 100), Some(2));
        // Nothing measured: the task count decides.
        let mut paths = up(2);
        paths[0].outstanding = 1;
        paths[0].outstanding_bytes = 1;
        paths[1].outstanding = 2;
        assert_eq!(b.pick_sized(&paths, 1 << 20), Some(0));
    }

    #[test]
    fn link_rate_is_the_median_of_the_recent_path_limited_samples() {
        const M: u64 = LinkRate::MIN_MOVED;
        let mut r = LinkRate::default();
        let mut acked = 0;
        let mut sample = |r: &mut LinkRate, rate: u64, app_limited: bool, moved: u64| {
            acked += moved;
            r.sample(rate, app_limited, acked);
        };
        sample(&mut r, 100, false, M);
        sample(&mut r, 5000, true, M);
        sample(&mut r, 0, false, M);
        sample(&mut r, 9000, false, M - 1);
        sample(&mut r, 120, false, M);
        assert_eq!(r.bytes_per_sec(), 0, "two samples are not enough");
        // Strays both ways do not move the median.
        sample(&mut r, 14_000, false, M);
        assert_eq!(r.bytes_per_sec(), 120);
        sample(&mut r, 10, false, 10 * M);
        sample(&mut r, 110, false, M);
        assert_eq!(r.bytes_per_sec(), 110);
        // The link slows down: within a window the old samples are gone.
        for _ in 0..LinkRate::WINDOW {
            sample(&mut r, 20, false, M);
        }
        assert_eq!(r.bytes_per_sec(), 20);
        // A window without a sample worth keeping (a path given nothing to
        // send, or only reads): the rate is forgotten.
        for _ in 0..LinkRate::WINDOW - 1 {
            sample(&mut r, 5, false, 100);
        }
        assert_eq!(r.bytes_per_sec(), 20);
        sample(&mut r, 5, true, M);
        assert_eq!(r.bytes_per_sec(), 0);
    }

    #[test]
    fn least_wait_saturates_instead_of_overflowing() {
        let mut b = Balancer::new(LoadBalancePolicy::LeastQueueDepth);
        let mut paths = up(3);
        paths[0].outstanding_bytes = u64::MAX;
        paths[0].bytes_per_sec = u64::MAX;
        paths[1].outstanding_bytes = u64::MAX;
        paths[1].bytes_per_sec = 1;
        paths[2].available = false;
        paths[2].bytes_per_sec = u64::MAX;
        assert_eq!(b.pick_sized(&paths, u64::MAX), Some(0));
        assert_eq!(b.pick(&paths), Some(0));
        paths[0].available = false;
        assert_eq!(b.pick_sized(&paths, u64::MAX), Some(1));
    }

    #[test]
    fn least_queue_depth_keeps_queues_equal() {
        let mut b = Balancer::new(LoadBalancePolicy::LeastQueueDepth);
        let mut paths = up(3);
        paths[0].outstanding = 5;
        // New tasks go to the shorter queues until they catch up.
        for _ in 0..10 {
            let i = b.pick(&paths).unwrap();
            assert_ne!(i, 0);
            paths[i].outstanding += 1;
        }
        assert_eq!(paths.iter().map(|p| p.outstanding).collect::<Vec<_>>(), vec![5, 5, 5]);
        // Issue and complete in a skewed pattern: queues never differ by more than 1.
        let mut issued = [0usize; 3];
        for step in 0..3000 {
            let i = b.pick(&paths).unwrap();
            paths[i].outstanding += 1;
            issued[i] += 1;
            // Path 2 completes twice as fast as the others.
            let done = if step % 3 == 0 { 2 } else { step % 2 };
            paths[done].outstanding = paths[done].outstanding.saturating_sub(1);
            let (lo, hi) =
                paths.iter().map(|p| p.outstanding).fold((usize::MAX, 0), |(lo, hi), o| (lo.min(o), hi.max(o)));
            assert!(hi - lo <= 2, "step {step}: {paths:?}");
        }
        // Ties are broken by rotation: with equal empty queues, all are used evenly.
        let even = up(4);
        assert_eq!(counts(&mut b, &even, 400), vec![100, 100, 100, 100]);
    }

    #[test]
    fn weighted_paths_follow_their_weights() {
        let mut b = Balancer::new(LoadBalancePolicy::WeightedPaths);
        let paths = vec![path(true, false, 3), path(true, false, 1)];
        assert_eq!(counts(&mut b, &paths, 1000), vec![750, 250]);
        // Smooth: the light path is never starved for long.
        let seq: Vec<_> = (0..8).map(|_| b.pick(&paths).unwrap()).collect();
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 2);
        let mut b = Balancer::new(LoadBalancePolicy::WeightedPaths);
        let paths = vec![path(true, false, 5), path(true, false, 2), path(true, false, 0), path(true, false, 3)];
        assert_eq!(counts(&mut b, &paths, 1000), vec![500, 200, 0, 300]);
        // A down path's share goes to the others, in proportion.
        let mut paths = paths;
        paths[0].available = false;
        assert_eq!(counts(&mut b, &paths, 1000), vec![0, 400, 0, 600]);
        // Weight 0 only when nothing else is available.
        let paths = vec![path(false, false, 4), path(true, false, 0), path(true, false, 0)];
        assert_eq!(counts(&mut b, &paths, 100), vec![0, 50, 50]);
    }

    #[test]
    fn room_is_what_the_link_moves_within_the_horizon() {
        const MIB: u64 = 1 << 20;
        // 100 MiB/s and a 50 ms horizon: 5 MiB.
        let p = |outstanding: usize, bytes: u64, rate: u64| PathView {
            available: true,
            outstanding,
            outstanding_bytes: bytes,
            bytes_per_sec: rate,
            ..PathView::default()
        };
        assert_eq!(ROOM_HORIZON_MS, 50);
        assert!(p(4, 4 * MIB, 100 * MIB).has_room(MIB));
        assert!(!p(5, 5 * MIB, 100 * MIB).has_room(MIB));
        // Idle and unmeasured paths always take a task, whatever its size.
        assert!(p(0, 0, 100 * MIB).has_room(64 * MIB));
        assert!(p(64, 64 * MIB, 0).has_room(MIB));
        // Saturates instead of overflowing.
        assert!(!p(1, u64::MAX, u64::MAX).has_room(u64::MAX));
    }

    #[test]
    fn a_full_path_holds_the_task_and_comes_first_once_it_has_room() {
        const MIB: u64 = 1 << 20;
        let mut b = Balancer::new(LoadBalancePolicy::WeightedPaths);
        let link =
            |weight: u32, rate: u64| PathView { available: true, weight, bytes_per_sec: rate, ..PathView::default() };
        let mut paths = vec![link(5, 100 * MIB), link(5, 100 * MIB), link(1, 20 * MIB), link(1, 20 * MIB)];
        let mut order = Vec::new();
        for _ in 0..12 {
            let i = b.pick_sized(&paths, MIB).unwrap();
            order.push(i);
        }
        assert_eq!(counts_of(&order, 4), vec![5, 5, 1, 1]);
        // Path 0 is full (5 MiB at 100 MiB/s): its turn is held, not given
        // to a slow path, and nothing moves until it has room again.
        paths[0].outstanding = 5;
        paths[0].outstanding_bytes = 5 * MIB;
        let next = {
            let mut probe = b.clone();
            probe.choose(&paths, MIB).unwrap()
        };
        assert_eq!(next, 0, "smooth weighted round robin starts over with the heaviest path");
        for _ in 0..3 {
            assert_eq!(b.pick_sized(&paths, MIB), None);
        }
        paths[0].outstanding = 4;
        paths[0].outstanding_bytes = 4 * MIB;
        assert_eq!(b.pick_sized(&paths, MIB), Some(0));
        // The shares stay the weights' over the next round.
        paths[0].outstanding = 0;
        paths[0].outstanding_bytes = 0;
        let order: Vec<_> = (0..12).map(|_| b.pick_sized(&paths, MIB).unwrap()).collect();
        assert_eq!(counts_of(&order, 4), vec![5, 5, 1, 1]);

        // Least-queue-depth and round-robin hold the same way.
        for policy in [LoadBalancePolicy::LeastQueueDepth, LoadBalancePolicy::RoundRobin] {
            let mut b = Balancer::new(policy);
            let full = PathView { outstanding: 5, outstanding_bytes: 5 * MIB, ..link(1, 100 * MIB) };
            let paths = vec![full, full];
            assert_eq!(b.pick_sized(&paths, MIB), None, "{policy}");
        }
    }

    #[test]
    fn held_tasks_still_fill_unequal_links_in_proportion() {
        // 1 MiB tasks, 64 in flight; 1 MiB takes 10 ms on a fast path and
        // 50 ms on a slow one, so room (50 ms) holds about five tasks on a
        // fast path and one on a slow one: most of the 64 wait unbound.
        const MIB: u64 = 1 << 20;
        let rates = [MIB / 10, MIB / 10, MIB / 50, MIB / 50];
        for policy in [LoadBalancePolicy::LeastQueueDepth, LoadBalancePolicy::WeightedPaths] {
            let mut b = Balancer::new(policy);
            let mut paths = up(4);
            for ((p, r), w) in paths.iter_mut().zip(rates).zip([5, 5, 1, 1]) {
                p.bytes_per_sec = r * 1000;
                p.weight = w;
            }
            let bytes = simulate(&mut b, &mut paths, &rates, MIB, 64, 2400);
            let total: u64 = bytes.iter().sum();
            for (i, r) in rates.iter().enumerate() {
                let share = bytes[i] as f64 / total as f64;
                let want = *r as f64 / (12 * MIB / 50) as f64;
                assert!((share - want).abs() < 0.03, "{policy} path {i}: {share:.3}, want {want:.3}: {bytes:?}");
            }
            // No path holds much more than the horizon's worth.
            for (p, r) in paths.iter().zip(rates) {
                assert!(p.outstanding_bytes <= (r * ROOM_HORIZON_MS).max(MIB) + MIB, "{policy}: {paths:?}");
            }
        }
    }

    #[test]
    fn failover_only_and_a_sole_path_never_hold() {
        const MIB: u64 = 1 << 20;
        let full = PathView {
            available: true,
            primary: true,
            weight: 1,
            outstanding: 64,
            outstanding_bytes: 64 * MIB,
            bytes_per_sec: MIB,
        };
        let mut b = Balancer::new(LoadBalancePolicy::FailoverOnly);
        assert_eq!(b.pick_sized(&[full, full], MIB), Some(0));
        for policy in
            [LoadBalancePolicy::RoundRobin, LoadBalancePolicy::LeastQueueDepth, LoadBalancePolicy::WeightedPaths]
        {
            let mut b = Balancer::new(policy);
            let down = PathView { available: false, ..full };
            assert_eq!(b.pick_sized(&[full], MIB), Some(0), "{policy}");
            assert_eq!(b.pick_sized(&[down, full], MIB), Some(1), "{policy}");
        }
    }

    fn counts_of(order: &[usize], n: usize) -> Vec<usize> {
        (0..n).map(|i| order.iter().filter(|&&j| j == i).count()).collect()
    }

    #[test]
    fn survives_paths_added_and_removed() {
        for policy in LoadBalancePolicy::ALL {
            let mut b = Balancer::new(policy);
            for n in [5usize, 1, 0, 3, 8, 2, 7, 1] {
                let paths: Vec<_> = (0..n)
                    .map(|i| PathView {
                        available: true,
                        primary: i % 2 == 0,
                        weight: i as u32,
                        outstanding: i,
                        ..PathView::default()
                    })
                    .collect();
                for _ in 0..20 {
                    match b.pick(&paths) {
                        Some(i) => assert!(i < n, "{policy}: {i} >= {n}"),
                        None => assert_eq!(n, 0),
                    }
                }
            }
        }
        // Round robin keeps rotating over the new set after a path is added.
        let mut b = Balancer::new(LoadBalancePolicy::RoundRobin);
        let two = up(2);
        assert_eq!(counts(&mut b, &two, 3), vec![2, 1]);
        let three = up(3);
        assert_eq!(counts(&mut b, &three, 300), vec![100, 100, 100]);
        // Weighted: a new path joins without credit and gets its share.
        let mut b = Balancer::new(LoadBalancePolicy::WeightedPaths);
        assert_eq!(counts(&mut b, &[path(true, false, 1)], 10), vec![10]);
        assert_eq!(counts(&mut b, &[path(true, false, 1), path(true, false, 1)], 100), vec![50, 50]);
    }

    #[test]
    fn set_policy_changes_behaviour() {
        let mut b = Balancer::new(LoadBalancePolicy::RoundRobin);
        let paths = vec![path(true, false, 1), path(true, true, 1)];
        assert_eq!(counts(&mut b, &paths, 10), vec![5, 5]);
        b.set_policy(LoadBalancePolicy::FailoverOnly);
        assert_eq!(b.policy(), LoadBalancePolicy::FailoverOnly);
        assert_eq!(counts(&mut b, &paths, 10), vec![0, 10]);
    }
}
