//! The session's shared state and what happens to it when a PDU arrives:
//! the task table, the session-wide CmdSN window, the connections with
//! their StatSN, and the rules of RFC 7143 §4 and §11 applied to each PDU.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use iscsi_proto::negotiation::Negotiated;
use iscsi_proto::pdu::{
    AsyncMessage, Bhs, DataIn, DataOut, FrameConfig, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, R2t,
    RESERVED_TAG, Reject, ScsiCommand, ScsiResponse, TaskMgmtResponse, TextRequest, TextResponse, data_trailer,
};
use iscsi_proto::scsi::cdb::Cdb;
use iscsi_proto::seq::{CmdWindow, Sn};
use iscsi_proto::text::{TextAccumulator, TextPairs};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::fault::{ConnectionFault, FaultKind, GiveUp, GiveUpWhy, TaskRecovery, Verdict};
use super::{Inner, ScsiOutcome, Session};
use crate::error::{Error, Result};
use crate::model::policy::LinkRate;
use crate::model::{Balancer, PathView, UniqueConnectionId};
use crate::portal::PortalAddr;

/// A SCSI task waiting for data or status.
pub(super) struct ScsiTask {
    pub expected_len: u32,
    pub read: bool,
    pub received: u32,
    pub next_data_sn: u32,
    /// Data-In lands here in order; allocated once per command so that the
    /// receive buffer's frozen slices are released at once.
    pub buf: BytesMut,
    pub write_data: Bytes,
}

impl ScsiTask {
    /// Payload bytes the command moves, both directions (for the balancer).
    pub fn payload(&self) -> u64 {
        u64::from(self.expected_len).max(self.write_data.len() as u64)
    }
}

/// The payload of task `t` when it is a SCSI command, else 0.
fn payload_of(t: &Task) -> u64 {
    match &t.kind {
        TaskKind::Scsi(s) => s.payload(),
        _ => 0,
    }
}

pub(super) enum TaskKind {
    Scsi(ScsiTask),
    /// Our keepalive ping: answered by a NOP-In with the same ITT.
    Ping,
    /// A ping whose answer tells the target's current ExpCmdSN.
    Probe,
    Text(TextAccumulator),
    /// Logout with this reason (RFC 7143 §11.14.1).
    Logout(u8),
    /// A task management function (RFC 7143 §11.5), e.g. TASK REASSIGN.
    TaskMgmt,
}

pub(super) enum Reply {
    Scsi(ScsiOutcome),
    Text(TextPairs),
    Logout(LogoutResponse),
    /// ExpCmdSN of the NOP-In that answered a probe.
    Probe(u32),
    TaskMgmt(TaskMgmtResponse),
}

/// How long a filler (`State::send_filler`) waits for its answer.
pub(super) const FILLER_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) struct Task {
    /// The connection the task belongs to (allegiance, RFC 7143 §4.2.2);
    /// `None` while a SCSI command waits for the CmdSN window.
    pub cid: Option<u16>,
    pub lun: u64,
    pub kind: TaskKind,
    pub reply: Option<super::reply::Sender>,
    /// A SCSI command's CDB and task attribute, kept for retries.
    pub cdb: Option<(Cdb, u8)>,
    /// The CmdSN the command went out with, once sent.
    pub cmd_sn: Option<u32>,
    /// The connection this task was on when that connection failed; the
    /// task waits for recovery (RFC 7143 §6.2.1, §7.1).
    pub lost_on: Option<u16>,
    /// When the command last went out, for the connection's latency counters.
    pub sent_at: Option<Instant>,
    /// When its waiter gives up (`SessionConfig::command_timeout`; see
    /// `State::expire_overdue`).
    pub deadline: Option<Instant>,
    /// What recovery has seen of this command since a fault first hit it
    /// (the recovery budget, `fault.rs`).
    pub recovery: Option<TaskRecovery>,
    /// A write lost with a silent link that the target had received: it
    /// waits for its connection's reinstatement (`failover.rs`).
    pub held_for_reinstatement: bool,
    /// A TEST UNIT READY that only fills a CmdSN (`State::send_filler`):
    /// forgotten after `FILLER_LIFETIME` should no answer come.
    pub filler: bool,
    /// Where the command PDU (with its immediate data) ends in its
    /// connection's stream (`io::Link::pushed`), once sent.
    pub sent_end: Option<u64>,
    /// The command was lost with its connection after the target's TCP had
    /// acknowledged all of it (`State::orphan_connection`): the target got
    /// it, whatever ExpCmdSN it last reported (`failover.rs`).
    pub delivered: bool,
}

impl Task {
    /// Forgets what was transferred so far, for a retry from the start.
    pub fn restart(&mut self) {
        if let TaskKind::Scsi(s) = &mut self.kind {
            s.buf.clear();
            s.received = 0;
            s.next_data_sn = 0;
        }
    }

    pub fn new(cid: Option<u16>, lun: u64, kind: TaskKind, cdb: Option<(Cdb, u8)>) -> Self {
        Self {
            cid,
            lun,
            kind,
            reply: None,
            cdb,
            cmd_sn: None,
            lost_on: None,
            sent_at: None,
            deadline: None,
            recovery: None,
            held_for_reinstatement: false,
            filler: false,
            sent_end: None,
            delivered: false,
        }
    }

    /// Whether nobody waits for the task any more: its waiter was answered
    /// (timed out, or recovery gave up on it). Such a task is never sent
    /// again as a command; it stays only while its CmdSN may be a hole that
    /// the target waits for (see `State::replay_lost`).
    pub fn abandoned(&self) -> bool {
        self.reply.is_none()
    }
}

/// Room for a BHS and its header digest (we send no AHS).
pub(super) const HEADER_MAX: usize = iscsi_proto::pdu::BHS_LEN + 4;

/// One outgoing PDU: header (with digest), data, trailer (padding, digest).
/// The header lives inline, so that a PDU costs no allocation of its own.
pub(super) struct Out {
    pub header: [u8; HEADER_MAX],
    /// The part of `header` still to send.
    pub header_range: (u8, u8),
    pub data: Bytes,
    pub trailer: ([u8; 7], usize),
}

/// Counters of one connection, for the management view. They follow the
/// connection's CID across reinstatements (RFC 7143 §6.3.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCounters {
    pub commands: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// SCSI commands that ended with an iSCSI failure or a status other than
    /// GOOD or CONDITION MET (a UNIT ATTENTION is news, not an error).
    pub errors: u64,
    /// Times the connection failed and recovery took it over.
    pub reconnects: u64,
    /// Completion latency of the SCSI commands answered on it.
    pub latency: LatencyHistogram,
    /// Times the reader, busy, slept until several answers were there
    /// instead of waking for each (`rx::answers_mark`).
    pub answer_waits: u64,
    /// Of those, waits that ran out before the answers came (a slow target
    /// or short answers); answers are then read one by one for a while.
    pub answer_waits_ran_out: u64,
}

impl ConnCounters {
    /// Adds `other` (an earlier incarnation of the same CID).
    pub fn absorb(&mut self, other: &ConnCounters) {
        self.commands += other.commands;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.latency.absorb(&other.latency);
        self.answer_waits += other.answer_waits;
        self.answer_waits_ran_out += other.answer_waits_ran_out;
    }
}

/// Latencies in power-of-two microsecond buckets: constant size and cost per
/// command, precise enough for the p50/p99 a management view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Bucket `i` counts latencies below 2^i µs (and at least 2^(i-1)).
    buckets: [u64; 40],
    count: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { buckets: [0; 40], count: 0, max_us: 0 }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = ((u64::BITS - us.leading_zeros()) as usize).min(self.buckets.len() - 1);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The latency (µs) at or below which a fraction `q` (0..=1) of the
    /// commands completed: the upper bound of its bucket, never above the
    /// largest seen. `None` before the first command.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = if i == 0 { 0 } else { 1u64.checked_shl(i as u32).unwrap_or(u64::MAX) - 1 };
                return Some(upper.min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    fn absorb(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }
}

pub(super) struct ConnState {
    pub cid: u16,
    pub id: UniqueConnectionId,
    pub portal: PortalAddr,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub params: Negotiated,
    pub tx: mpsc::UnboundedSender<Out>,
    /// The socket's write half, shared with the writer task.
    pub link: Arc<super::io::Link>,
    pub tx_cfg: FrameConfig,
    pub exp_stat_sn: u32,
    /// The target's MaxRecvDataSegmentLength: our largest data segment.
    pub max_xmit: u32,
    pub ping_itt: Option<u32>,
    /// SCSI tasks in flight on this connection.
    pub outstanding: usize,
    /// Their payload bytes (`PathView::outstanding_bytes`).
    pub outstanding_bytes: u64,
    /// The link's rate from the socket (`State::sample_link_rates`).
    pub link_rate: LinkRate,
    /// Being removed: takes no new tasks.
    pub draining: bool,
    /// Owed answers but silent for the stall time (`health::Watch`): takes
    /// no new tasks until it hears from the target again.
    pub stalled: bool,
    pub primary: bool,
    pub weight: u32,
    pub counters: ConnCounters,
    /// Whether commands are held back while the target is busy.
    pub tuner: super::hold::HoldTuner,
    pub handles: Vec<JoinHandle<()>>,
}

impl ConnState {
    /// One of this connection's tasks is no longer at the target. Answers
    /// that come while the target was busy feed the hold-back trial; a
    /// connection that runs dry restarts its measured window.
    fn task_left(&mut self, bytes: u64) {
        if self.outstanding >= super::io::HOLD_AT {
            self.tuner.completed();
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        self.outstanding_bytes = self.outstanding_bytes.saturating_sub(bytes);
        if self.outstanding == 0 {
            self.tuner.idle();
            // Tasks dropped by recovery without this call leave no residue.
            self.outstanding_bytes = 0;
        }
    }

    /// A SCSI task of `bytes` payload was sent on this connection.
    fn task_sent(&mut self, bytes: u64) {
        self.outstanding += 1;
        self.outstanding_bytes = self.outstanding_bytes.saturating_add(bytes);
        self.counters.commands += 1;
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

/// A connection the session should have, and how it logs in: recovery
/// connects it again from the same initiator port (local address), with
/// the same CHAP settings and digests.
#[derive(Clone)]
pub(super) struct Wanted {
    pub cid: u16,
    pub portal: PortalAddr,
    pub how: super::ConnectionLogin,
    /// Its IPsec, in place while the connection is wanted: recovery brings
    /// the SA back (if gone) before it reconnects.
    pub protection: Option<std::sync::Arc<crate::ipsec::Protection>>,
}

/// The session keys that shape a write (RFC 7143 §13.10-13.14).
#[derive(Clone, Copy)]
pub(super) struct Burst {
    pub first_burst_length: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
}

impl Burst {
    /// How many of a write's `total` bytes go with the command as immediate
    /// data, and where the unsolicited data ends (RFC 7143 §4.2.5.2): the
    /// rest waits for the target's R2Ts. `max_xmit` caps the immediate part
    /// (one data segment).
    pub fn unsolicited(self, total: usize, max_xmit: u32) -> (usize, usize) {
        let first_burst = (self.first_burst_length as usize).min(total);
        let immediate = if self.immediate_data { first_burst.min(max_xmit as usize) } else { 0 };
        (immediate, if self.initial_r2t { immediate } else { first_burst })
    }
}

/// The answers a connection is owed for commands the target has (see
/// [`State::owed_answers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OwedAnswers {
    /// Commands sent on the connection and not answered yet.
    pub count: usize,
    /// The fewest bytes any one of them still brings when it succeeds: the
    /// data a read has yet to receive, plus a 48-byte header.
    pub least_bytes: usize,
}

pub(super) struct State {
    pub window: CmdWindow,
    pub burst: Burst,
    pub next_itt: u32,
    pub tasks: HashMap<u32, Task, IttHash>,
    /// Commands waiting for the CmdSN window to open (RFC 7143 §4.2.2.1).
    pub queued: VecDeque<u32>,
    pub conns: Vec<ConnState>,
    pub leading_cid: u16,
    pub next_cid: u16,
    /// Connections logged in only to carry the fillers of a CmdSN gap left
    /// by a lost link, while the target reads none of the others
    /// (`failover.rs`); they take no commands and log out once done.
    pub gap_fillers: Vec<u16>,
    /// (CmdSN, LUN) of commands lost with a connection after the target's
    /// TCP acknowledged them, while the target has not yet confirmed it
    /// ran them (its ExpCmdSN has not passed them): acknowledged bytes may
    /// still wait in a socket the target does not read (`failover.rs`).
    pub unconfirmed: Vec<(u32, u64)>,
    /// A watch for commands the target dropped unanswered runs
    /// (`dropped.rs`).
    pub watching_dropped: bool,
    pub balancer: Balancer,
    /// Scratch space for `pick_connection`.
    pub path_views: Vec<PathView>,
    /// Counters of connections that failed, by CID, added to the counters of
    /// the connection that takes the CID over.
    pub retired_counters: HashMap<u16, ConnCounters>,
    pub closed: Option<String>,
    /// While non-zero, queued commands wait (a connection is logging out).
    pub hold: u32,
    /// A ping on an idle connection of a multi-connection session: new
    /// commands wait for its answer (see `io::send_ping`).
    pub ping_hold: Option<u32>,
    /// The connections the session should have: what the user added and
    /// did not remove, with how each logged in. Recovery restores them.
    pub wanted: Vec<Wanted>,
    /// Target Session Identifying Handle; changes on session reinstatement.
    pub tsih: u16,
    /// Bumped whenever the session is reinstated: a recovery that started
    /// before then has nothing left to do.
    pub generation: u64,
    /// When recovery gives up (`SessionConfig::recovery_budget`).
    pub budget: crate::config::RecoveryBudget,
    /// What recovery did, for the management view.
    pub recovery_stats: super::fault::RecoveryStats,
    /// Since when the CmdSN window has been closed with commands queued
    /// and none in flight (`give_up_on_closed_window`).
    pub window_closed_since: Option<Instant>,
    /// Silences of the target that continue each other (`fault.rs`).
    pub silences: super::fault::Silences,
    /// Connections declared failed and being logged in again, for the
    /// management view (`ConnectionState::Recovering`).
    pub recovering: Vec<Recovering>,
}

/// A connection being recovered, as the management view shows it.
#[derive(Debug, Clone)]
pub(super) struct Recovering {
    pub cid: u16,
    /// What the view showed of it when it failed.
    pub info: super::ConnectionInfo,
}

/// Hashes an ITT. ITTs are ours, handed out in sequence, so they need no
/// protection against chosen keys (SipHash was 6 % of the user-space
/// instructions of a 4 KiB read); a multiplication spreads them over the
/// table's buckets and control bytes.
#[derive(Clone, Copy, Default)]
pub(super) struct IttHash;

impl std::hash::BuildHasher for IttHash {
    type Hasher = IttHasher;
    fn build_hasher(&self) -> IttHasher {
        IttHasher(0)
    }
}

#[derive(Default)]
pub(super) struct IttHasher(u64);

impl std::hash::Hasher for IttHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(super) fn conn_mut(conns: &mut [ConnState], cid: u16) -> Option<&mut ConnState> {
    conns.iter_mut().find(|c| c.cid == cid)
}

fn conn(conns: &[ConnState], cid: Option<u16>) -> Option<&ConnState> {
    cid.and_then(|cid| conns.iter().find(|c| c.cid == cid))
}

impl State {
    /// Removes a task, releasing its place in its connection's queue depth.
    /// A session's state right after its leading login: no connection yet
    /// (the caller adds it), round-robin balancing.
    pub fn new(window: CmdWindow, burst: Burst, tsih: u16) -> Self {
        State {
            window,
            burst,
            next_itt: 1,
            tasks: HashMap::default(),
            queued: VecDeque::new(),
            conns: Vec::new(),
            leading_cid: 0,
            next_cid: 1,
            gap_fillers: Vec::new(),
            unconfirmed: Vec::new(),
            watching_dropped: false,
            balancer: Balancer::new(crate::model::LoadBalancePolicy::RoundRobin),
            path_views: Vec::new(),
            retired_counters: HashMap::new(),
            closed: None,
            hold: 0,
            ping_hold: None,
            wanted: Vec::new(),
            tsih,
            generation: 0,
            budget: crate::config::RecoveryBudget::WINDOWS,
            recovery_stats: super::fault::RecoveryStats::default(),
            window_closed_since: None,
            silences: super::fault::Silences::default(),
            recovering: Vec::new(),
        }
    }

    /// A whole PDU came on connection `cid`: a stalled connection is alive
    /// and takes commands again.
    pub fn heard(&mut self, cid: u16) {
        if let Some(c) = conn_mut(&mut self.conns, cid)
            && c.stalled
        {
            c.stalled = false;
            info!(cid, "stalled connection heard from the target again; back in service");
        }
    }

    /// When the oldest SCSI command still unanswered on connection `cid`
    /// went out (`health::Watch`), `None` when it owes nothing.
    pub fn oldest_outstanding(&self, cid: u16) -> Option<Instant> {
        self.tasks
            .values()
            .filter(|t| t.cid == Some(cid) && t.cmd_sn.is_some() && matches!(t.kind, TaskKind::Scsi(_)))
            .filter_map(|t| t.sent_at)
            .min()
    }

    pub fn take_task(&mut self, itt: u32) -> Option<Task> {
        let t = self.tasks.remove(&itt)?;
        if let (TaskKind::Scsi(_), Some(cid)) = (&t.kind, t.cid)
            && let Some(c) = conn_mut(&mut self.conns, cid)
        {
            let now = Instant::now();
            c.task_left(payload_of(&t));
            if let Some(at) = t.sent_at {
                c.counters.latency.record(now.saturating_duration_since(at));
            }
            // Held-back commands go once the target runs short of work.
            c.link.flush_if_short(&c.tx, c.outstanding);
        }
        Some(t)
    }

    /// What connection `cid` is owed by the target for the SCSI commands it
    /// has, when every one of them is answered without anything more from
    /// us; `None` when some answer hinges on what we send next (a write
    /// waiting for an R2T, RFC 7143 §11.8) or another kind of task is out
    /// (a ping, a text or task management request), or fewer than `at_least`
    /// commands are out. The reader then waits for the next PDU as it comes.
    pub fn owed_answers(&self, cid: u16, at_least: usize) -> Option<OwedAnswers> {
        let c = self.conns.iter().find(|c| c.cid == cid)?;
        if c.outstanding < at_least {
            return None;
        }
        let mut owed = OwedAnswers { count: 0, least_bytes: usize::MAX };
        for t in self.tasks.values().filter(|t| t.cid == Some(cid) && t.cmd_sn.is_some()) {
            let TaskKind::Scsi(s) = &t.kind else { return None };
            if t.lost_on.is_some() || self.burst.unsolicited(s.write_data.len(), c.max_xmit).1 < s.write_data.len() {
                return None;
            }
            let data = if s.read { s.expected_len.saturating_sub(s.received) as usize } else { 0 };
            owed.count += 1;
            owed.least_bytes = owed.least_bytes.min(iscsi_proto::pdu::BHS_LEN + data);
        }
        (owed.count >= at_least).then_some(owed)
    }

    /// Fails every task (session gone).
    pub fn fail_all(&mut self, reason: &str) {
        if self.closed.is_none() {
            self.closed = Some(reason.to_string());
        }
        self.queued.clear();
        for (_, t) in self.tasks.drain() {
            complete(t, Err(Error::ConnectionLost(reason.to_string())));
        }
    }

    /// Recovery gave up on the session (`why`): every command still waiting
    /// fails with the fault that first hit it, else `fault`.
    pub fn give_up_all(&mut self, fault: &ConnectionFault, why: &GiveUpWhy) {
        self.queued.clear();
        for t in self.tasks.values_mut() {
            if t.abandoned() {
                continue;
            }
            let cause = t.recovery.as_ref().map_or_else(|| fault.clone(), |r| r.first.clone());
            complete_ref(t, Err(Error::GaveUp(Box::new(GiveUp { cause, why: why.clone() }))));
            self.recovery_stats.give_ups += 1;
        }
    }

    /// A connection is gone: its tasks fail (ERL 0 keeps no state to
    /// resume them), the others go on; the session ends with the last one.
    pub fn drop_connection(&mut self, cid: u16, reason: &str) {
        self.conns.retain(|c| c.cid != cid);
        // With commands waiting for a recovery under way, the session is
        // not over yet: the recovery ends it if it must.
        if self.conns.is_empty() && !self.tasks.values().any(|t| t.lost_on.is_some()) {
            self.fail_all(reason);
            return;
        }
        let lost: Vec<u32> = self.tasks.iter().filter(|(_, t)| t.cid == Some(cid)).map(|(itt, _)| *itt).collect();
        for itt in lost {
            if let Some(t) = self.tasks.remove(&itt) {
                complete(t, Err(Error::ConnectionLost(format!("connection {cid}: {reason}"))));
            }
        }
        if self.leading_cid == cid {
            // The session lives on; the oldest remaining connection leads.
            if let Some(c) = self.conns.first() {
                self.leading_cid = c.cid;
            }
        }
    }

    /// A connection failed and will be recovered: its SCSI tasks wait for
    /// a retry or a TASK REASSIGN (their transfer state is kept until it is
    /// known which), anything else fails. With the `fault` that ended it
    /// (when it was noticed, when it began),
    /// each SCSI task's recovery budget is charged (`fault.rs`): one that
    /// met the same violation again, or was held past the hold time, fails
    /// now with the first cause and is never sent again.
    /// Returns the portal and id of the lost connection.
    pub fn orphan_connection(
        &mut self,
        cid: u16,
        fault: Option<(&ConnectionFault, Instant, Instant)>,
    ) -> Option<(PortalAddr, UniqueConnectionId)> {
        let idx = self.conns.iter().position(|c| c.cid == cid)?;
        let c = self.conns.remove(idx);
        let mut earlier = c.counters;
        earlier.reconnects += 1;
        self.retired_counters.entry(cid).or_default().absorb(&earlier);
        if fault.is_some() {
            self.recovery_stats.recoveries += 1;
        }
        let lost: Vec<u32> = self.tasks.iter().filter(|(_, t)| t.cid == Some(cid)).map(|(itt, _)| *itt).collect();
        // What the target's TCP acknowledged, it has: read before the
        // socket closes.
        let acked = c.link.acked();
        let sns: Vec<Option<u32>> = lost.iter().map(|i| self.tasks.get(i).and_then(|t| t.cmd_sn)).collect();
        let (exp, next) = (self.window.exp_cmd_sn(), self.window.current());
        debug!(cid, exp, next, lost = ?sns, "connection orphaned; its commands wait for recovery");
        let budget = self.budget;
        // A silence that continues an earlier one counts from that one.
        let fault = fault.map(|(f, now, began)| {
            let start = if f.kind == FaultKind::Silent { self.silences.on_silence(began, now, &budget) } else { began };
            (f, now, start, start < began)
        });
        for itt in lost {
            // A filler (`send_filler`) is kept too: the hole it was to
            // fill must be filled again.
            let keep = self.tasks.get(&itt).is_some_and(|t| matches!(t.kind, TaskKind::Scsi(_)));
            if keep {
                if let Some(t) = self.tasks.get_mut(&itt) {
                    t.cid = None;
                    t.lost_on = Some(cid);
                    t.delivered = t.sent_end.zip(acked).is_some_and(|(end, acked)| end <= acked);
                    // Not before the command went out (a silence may have begun
                    // earlier), unless an earlier silence goes on.
                    if let Some((fault, now, began, chained)) = fault
                        && !t.abandoned()
                        && let began = if chained { began } else { t.sent_at.map_or(began, |sent| sent.max(began)) }
                        && let Verdict::GiveUp(g) = TaskRecovery::on_fault(&mut t.recovery, fault, now, began, &budget)
                    {
                        tracing::warn!(itt, "{g}");
                        complete_ref(t, Err(Error::GaveUp(Box::new(g))));
                        self.recovery_stats.give_ups += 1;
                    }
                }
            } else if let Some(t) = self.tasks.remove(&itt) {
                complete(t, Err(Error::ConnectionLost(format!("connection {cid} failed"))));
            }
        }
        if self.leading_cid == cid
            && let Some(first) = self.conns.first()
        {
            self.leading_cid = first.cid;
        }
        Some((c.portal.clone(), c.id))
    }

    /// After connection `lost_cid` was reinstated as `new_cid` (RFC 7143
    /// §6.2.1): commands the target never received (CmdSN at or past its
    /// ExpCmdSN) are retried with their own ITT and CmdSN, which fills the
    /// holes in the CmdSN order; commands it received were terminated with
    /// the old connection and go out again as new commands.
    /// Returns the (ITT, CmdSN) of the commands retried as they were.
    pub fn replay_lost(&mut self, lost_cid: u16, new_cid: u16, exp_cmd_sn: u32) -> Vec<(u32, u32)> {
        let mut lost: Vec<(u32, Option<u32>)> =
            self.tasks.iter().filter(|(_, t)| t.lost_on == Some(lost_cid)).map(|(itt, t)| (*itt, t.cmd_sn)).collect();
        lost.sort_by_key(|(_, sn)| sn.map_or(i64::MAX, |sn| i64::from(sn.wrapping_sub(exp_cmd_sn) as i32)));
        let mut again = Vec::new();
        let mut retried = Vec::new();
        for (itt, sn) in lost {
            if self.tasks.get(&itt).is_some_and(Task::abandoned) {
                self.fill_or_forget(itt, sn, new_cid, exp_cmd_sn);
                continue;
            }
            match sn {
                Some(sn) if Sn(sn).ge(Sn(exp_cmd_sn)) => {
                    retried.push((itt, sn));
                    if let Some(t) = self.tasks.get_mut(&itt) {
                        t.cid = Some(new_cid);
                        t.lost_on = None;
                        t.restart();
                    }
                    let bytes = self.tasks.get(&itt).map_or(0, payload_of);
                    if let Some(c) = conn_mut(&mut self.conns, new_cid) {
                        c.task_sent(bytes);
                    }
                    self.send_command(itt, sn);
                }
                _ => again.push(itt),
            }
        }
        self.reissue(again);
        retried
    }

    /// A lost command nobody waits for any more (`Task::abandoned`) is not
    /// sent again: when the target never got its CmdSN, a filler takes that
    /// CmdSN instead (`State::send_filler`; RFC 7143 §4.2.2.1: the target
    /// delivers nothing past a missing CmdSN); else it is forgotten.
    pub fn fill_or_forget(&mut self, itt: u32, sn: Option<u32>, new_cid: u16, exp_cmd_sn: u32) {
        let Some(sn) = sn.filter(|sn| Sn(*sn).ge(Sn(exp_cmd_sn))) else {
            self.tasks.remove(&itt);
            return;
        };
        self.send_filler(itt, sn, new_cid);
        debug!(itt, sn, "abandoned command's CmdSN filled with a TEST UNIT READY");
    }

    /// Turns task `itt` into a filler of CmdSN `sn` and sends it on
    /// connection `via`: a TEST UNIT READY to the task's LUN that nobody
    /// waits for. A SCSI command rather than a non-immediate NOP-Out
    /// (which would do by RFC 7143 §11.18): istgt advances its ExpCmdSN for
    /// a NOP-Out without waking the connections whose later commands wait
    /// for that CmdSN, so they sat out its 10 s `MAX_MCSREVWAIT`
    /// (istgt_iscsi.c, `istgt_iscsi_op_scsi` wakes them for SCSI commands
    /// only), stalled to the balancer meanwhile.
    pub fn send_filler(&mut self, itt: u32, sn: u32, via: u16) {
        let Some(t) = self.tasks.get_mut(&itt) else { return };
        t.kind = TaskKind::Scsi(ScsiTask {
            expected_len: 0,
            read: false,
            received: 0,
            next_data_sn: 0,
            buf: BytesMut::new(),
            write_data: Bytes::new(),
        });
        t.cdb = Some((iscsi_proto::scsi::cdb::test_unit_ready(), iscsi_proto::pdu::task_attr::SIMPLE));
        t.cid = Some(via);
        t.lost_on = None;
        t.filler = true;
        t.deadline = Some(Instant::now() + FILLER_LIFETIME);
        if let Some(c) = conn_mut(&mut self.conns, via) {
            c.task_sent(0);
        }
        self.send_command(itt, sn);
    }

    /// The least the target's ExpCmdSN is: the last one it reported, past
    /// the commands right after it that it got although their answers were
    /// lost with a connection (`Task::delivered`). Without that, a command
    /// whose answer was lost reads as missing while the other connections
    /// are idle, and a CmdSN filler would duplicate it: tgt and istgt drop
    /// the connection that carries a CmdSN below their ExpCmdSN.
    pub fn known_exp_cmd_sn(&self) -> u32 {
        let mut exp = self.window.exp_cmd_sn();
        let mut delivered: Vec<u32> = self
            .tasks
            .values()
            .filter(|t| t.lost_on.is_some() && t.delivered)
            .filter_map(|t| t.cmd_sn)
            .chain(self.unconfirmed.iter().map(|(sn, _)| *sn))
            .collect();
        delivered.sort_unstable_by_key(|sn| sn.wrapping_sub(exp));
        for sn in delivered {
            if sn == exp {
                exp = exp.wrapping_add(1);
            }
        }
        exp
    }

    /// The target's ExpCmdSN once it can no longer move while new commands
    /// are held back, else `None`. Every command sent on a live connection
    /// reaches the target, so its ExpCmdSN stops at the first command lost
    /// with a failed connection at or past the last ExpCmdSN it reported (a
    /// CmdSN gap, RFC 7143 §4.2.2.1), or else at our next CmdSN. An
    /// immediate PDU must carry that number (istgt drops the connection
    /// otherwise, RFC 7143 §4.2.2.1 "immediate delivery").
    pub fn settled_exp_cmd_sn(&self) -> Option<u32> {
        let exp = self.known_exp_cmd_sn();
        let gap = self
            .tasks
            .values()
            .filter(|t| t.lost_on.is_some() && !t.delivered)
            .filter_map(|t| t.cmd_sn)
            .filter(|sn| Sn(*sn).ge(Sn(exp)))
            .min_by_key(|sn| sn.wrapping_sub(exp));
        (exp == gap.unwrap_or(self.window.current())).then_some(exp)
    }

    /// A retried command that the target has acknowledged (its ExpCmdSN
    /// passed the CmdSN) but not answered was a duplicate of one the old
    /// connection delivered after all (istgt may still process what it read
    /// from a connection after its reinstatement): send it again as new.
    pub fn reissue_unanswered(&mut self, retried: &[(u32, u32)]) {
        let exp = Sn(self.window.exp_cmd_sn());
        let stale: Vec<u32> = retried
            .iter()
            .filter(|(itt, sn)| Sn(*sn).lt(exp) && self.tasks.get(itt).is_some_and(|t| t.cmd_sn == Some(*sn)))
            .map(|(itt, _)| *itt)
            .collect();
        for itt in &stale {
            if let Some(t) = self.tasks.get(itt)
                && let Some(cid) = t.cid
                && let Some(c) = conn_mut(&mut self.conns, cid)
            {
                c.task_left(payload_of(t));
            }
        }
        if !stale.is_empty() {
            tracing::info!(
                count = stale.len(),
                "re-issuing retried commands the target acknowledged but did not answer"
            );
        }
        self.reissue(stale);
    }

    /// Sends every task lost with a failed connection again as a new
    /// command (after session reinstatement the target knows none of them).
    pub fn reissue_all_lost(&mut self) {
        let mut lost: Vec<(u32, Option<u32>)> =
            self.tasks.iter().filter(|(_, t)| t.lost_on.is_some()).map(|(itt, t)| (*itt, t.cmd_sn)).collect();
        lost.sort_by_key(|(_, sn)| *sn);
        self.reissue(lost.into_iter().map(|(itt, _)| itt).collect());
    }

    /// New ITT, new CmdSN, ahead of everything queued, in the given order.
    /// A command nobody waits for any more is dropped instead.
    pub fn reissue(&mut self, itts: Vec<u32>) {
        for itt in itts.into_iter().rev() {
            if let Some(mut t) = self.tasks.remove(&itt) {
                if t.abandoned() {
                    continue;
                }
                t.cid = None;
                t.lost_on = None;
                t.held_for_reinstatement = false;
                t.cmd_sn = None;
                t.restart();
                let new = self.alloc_itt();
                self.tasks.insert(new, t);
                self.queued.push_front(new);
            }
        }
        self.drain_queue();
    }

    pub fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    /// Answers every waiter whose deadline has passed with a timeout. The
    /// task stays, without a waiter, so that a late answer is consumed
    /// quietly. One sweep per session replaces a timer per command, whose
    /// arming and removal cost 11 % of the instructions of a 4 KiB read.
    pub fn expire_overdue(&mut self, now: Instant) {
        let window = (self.window.exp_cmd_sn(), self.window.max_cmd_sn(), self.window.current());
        let budget = self.budget;
        // Fillers (`send_filler`) nobody answered.
        // (One lost with its connection stays: its hole is filled again.)
        let overdue: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.filler && t.abandoned() && t.lost_on.is_none() && t.deadline.is_some_and(|d| d <= now))
            .map(|(itt, _)| *itt)
            .collect();
        for itt in overdue {
            self.take_task(itt);
        }
        self.give_up_on_closed_window(now);
        // Commands given up on while queued: never sent (see below).
        let mut unsent = Vec::new();
        for (&itt, t) in self.tasks.iter_mut() {
            if t.abandoned() {
                continue;
            }
            let queued = t.cid.is_none() && t.lost_on.is_none();
            // Held past the hold time since its first fault (`fault.rs`).
            if let Some(g) = t.recovery.as_ref().and_then(|r| r.check_hold(now, &budget)) {
                tracing::warn!(itt, "{g}");
                complete_ref(t, Err(Error::GaveUp(Box::new(g))));
                self.recovery_stats.give_ups += 1;
                if queued {
                    unsent.push(itt);
                }
                continue;
            }
            if t.deadline.is_none_or(|d| d > now) {
                continue;
            }
            let where_ = match (t.cid, t.cmd_sn) {
                (Some(cid), Some(_)) => format!(" (sent on connection {cid})"),
                (None, _) => " (never sent: the target kept its command window full)".to_string(),
                _ => String::new(),
            };
            tracing::debug!(itt, ?window, cmd_sn = ?t.cmd_sn, "command timed out{where_}");
            let what = match (&t.kind, t.cdb) {
                (_, Some((cdb, _))) => cdb
                    .name()
                    .map_or_else(|| format!("the SCSI command of opcode 0x{:02x}", cdb.opcode()), str::to_string),
                (TaskKind::Logout(_), None) => "the Logout Request".to_string(),
                (TaskKind::Text(_), None) => "the Text Request".to_string(),
                (TaskKind::TaskMgmt, None) => "the task management request".to_string(),
                _ => "the NOP-Out".to_string(),
            };
            complete_ref(t, Err(Error::Timeout(format!("the target's answer to {what}{where_}"))));
            if queued {
                unsent.push(itt);
            }
        }
        // Out of the queue now, so that `drain_queue` (run for every
        // command) never meets one nobody waits for.
        if !unsent.is_empty() {
            self.queued.retain(|itt| !unsent.contains(itt));
            for itt in unsent {
                self.tasks.remove(&itt);
            }
        }
    }

    /// Fails the queued commands once the target has kept its CmdSN window
    /// closed (RFC 7143 §4.2.2.1: MaxCmdSN = ExpCmdSN - 1) for the hold
    /// time with nothing of ours in flight that could open it again.
    fn give_up_on_closed_window(&mut self, now: Instant) {
        let stalled = !self.window.is_open()
            && !self.queued.is_empty()
            && !self.tasks.values().any(|t| t.cid.is_some() && matches!(t.kind, TaskKind::Scsi(_)));
        if !stalled {
            self.window_closed_since = None;
            return;
        }
        let since = *self.window_closed_since.get_or_insert(now);
        let hold = self.budget.max_request_hold_time;
        if now.saturating_duration_since(since) < hold {
            return;
        }
        let detail = format!(
            "the target kept its command window closed: MaxCmdSN {} is below ExpCmdSN {} (RFC 7143 §4.2.2.1)",
            self.window.max_cmd_sn(),
            self.window.exp_cmd_sn()
        );
        let g = GiveUp {
            cause: ConnectionFault::new(FaultKind::WindowClosed, detail),
            why: GiveUpWhy::HoldTime { held: hold, reinstated: 0 },
        };
        tracing::warn!(queued = self.queued.len(), "{g}");
        for itt in std::mem::take(&mut self.queued) {
            if let Some(mut t) = self.tasks.remove(&itt) {
                if !t.abandoned() {
                    self.recovery_stats.give_ups += 1;
                }
                complete_ref(&mut t, Err(Error::GaveUp(Box::new(g.clone()))));
            }
        }
        self.window_closed_since = None;
    }

    /// Takes a delivery rate sample of each connection's socket (`LinkRate`)
    /// when there is a choice of connection to make: least-queue-depth
    /// weighs queues by it, and every spreading policy holds a task back
    /// from a path whose queue is long for its link (`PathView::has_room`).
    /// Completion times would not do: istgt runs a session's writes nearly
    /// one at a time in CmdSN order, so every connection completes at the
    /// pace of its queue whatever the link (bench/results/2026-12-07-links.md).
    pub fn sample_link_rates(&mut self) {
        if self.conns.len() < 2 {
            return;
        }
        for c in &mut self.conns {
            if let Some(r) = c.link.delivery_rate() {
                c.link_rate.sample(r.bytes_per_sec, r.app_limited, r.bytes_acked);
            }
        }
    }

    /// Chooses the connection for a new SCSI task by the load-balance policy.
    fn pick_connection(&mut self, bytes: u64) -> Option<u16> {
        // Reuses one buffer: this runs for every command.
        let mut views = std::mem::take(&mut self.path_views);
        views.clear();
        views.extend(self.conns.iter().map(|c| PathView {
            available: !c.draining && !c.stalled,
            primary: c.primary,
            weight: c.weight,
            outstanding: c.outstanding,
            outstanding_bytes: c.outstanding_bytes,
            bytes_per_sec: c.link_rate.bytes_per_sec(),
        }));
        let i = self.balancer.pick_sized(&views, bytes);
        self.path_views = views;
        self.conns.get(i?).map(|c| c.cid)
    }

    /// Sends queued commands while the window allows (RFC 7143 §4.2.2.1).
    pub fn drain_queue(&mut self) {
        if let Some(p) = self.ping_hold {
            if self.tasks.contains_key(&p) {
                return;
            }
            self.ping_hold = None;
        }
        while let Some(&itt) = self.queued.front() {
            if !self.window.is_open() || self.hold > 0 {
                return;
            }
            let bytes = self.tasks.get(&itt).map_or(0, payload_of);
            let Some(cid) = self.pick_connection(bytes) else { return };
            self.queued.pop_front();
            let Some(cmd_sn) = self.window.take() else { return };
            if let Some(t) = self.tasks.get_mut(&itt) {
                t.cid = Some(cid);
            }
            if let Some(c) = conn_mut(&mut self.conns, cid) {
                c.task_sent(bytes);
            }
            self.send_command(itt, cmd_sn);
        }
    }

    /// Sends every connection's held-back commands (see `push_command`):
    /// called before a connection joins the session and on every sweep.
    pub fn flush_held(&self) {
        for c in &self.conns {
            c.link.flush(&c.tx);
        }
    }

    pub fn send_logout(&mut self, itt: u32, logout_cid: u16) {
        let cmd_sn = self.window.current();
        let Some(t) = self.tasks.get(&itt) else { return };
        let TaskKind::Logout(reason) = t.kind else { return };
        let Some(c) = conn(&self.conns, t.cid) else { return };
        let req = LogoutRequest { immediate: true, reason, itt, cid: logout_cid, cmd_sn, exp_stat_sn: c.exp_stat_sn };
        push(c, req, Bytes::new());
    }

    pub fn send_text(&mut self, itt: u32, ttt: u32, data: Bytes) {
        let cmd_sn = self.window.current();
        let Some(t) = self.tasks.get(&itt) else { return };
        let Some(c) = conn(&self.conns, t.cid) else { return };
        let req = TextRequest {
            immediate: true,
            final_bit: true,
            continue_: false,
            lun: 0,
            itt,
            ttt,
            cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
        };
        push(c, req, data);
    }

    /// Sends a SCSI Command with its immediate data and unsolicited
    /// Data-Out (RFC 7143 §4.2.5.2: ImmediateData, InitialR2T, FirstBurstLength).
    pub fn send_command(&mut self, itt: u32, cmd_sn: u32) {
        let b = self.burst;
        let sole_connection = self.conns.len() == 1;
        let Some(t) = self.tasks.get_mut(&itt) else {
            tracing::warn!(itt, cmd_sn, "CmdSN taken for a task that is gone");
            return;
        };
        let Some((cdb, attr)) = t.cdb else { return };
        t.cmd_sn = Some(cmd_sn);
        t.sent_at = Some(Instant::now());
        t.delivered = false;
        t.sent_end = None;
        let Some(c) = t.cid.and_then(|cid| self.conns.iter_mut().find(|c| c.cid == cid)) else { return };
        let TaskKind::Scsi(s) = &t.kind else { return };
        let total = s.write_data.len();
        let (immediate, unsolicited_end) = b.unsolicited(total, c.max_xmit);
        let mut cdb_bytes = [0u8; 16];
        let n = usize::from(cdb.len).min(16);
        if let (Some(dst), Some(src)) = (cdb_bytes.get_mut(..n), cdb.bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        let cmd = ScsiCommand {
            immediate: false,
            final_bit: unsolicited_end <= immediate,
            read: s.read,
            write: total > 0,
            attr,
            lun: t.lun,
            itt,
            expected_data_transfer_length: s.expected_len,
            cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
            cdb: cdb_bytes,
        };
        c.counters.bytes_out += immediate as u64;
        if unsolicited_end > immediate {
            push(c, cmd, s.write_data.slice(..immediate));
            t.sent_end = Some(c.link.pushed());
            send_data_out(c, t.lun, itt, RESERVED_TAG, &s.write_data, immediate, unsolicited_end - immediate);
        } else {
            push_command(c, cmd, s.write_data.slice(..immediate), sole_connection);
            t.sent_end = Some(c.link.pushed());
        }
    }
}

/// Encodes a PDU for connection `c` and hands it to its writer.
pub(super) fn push(c: &ConnState, bhs: impl Into<Bhs>, data: Bytes) {
    push_held(c, bhs, data, None);
}

/// [`push`], for a SCSI Command that may be held back while the target
/// is busy (see `io::Link`); `c.outstanding` already counts it. Only a
/// session of one connection holds commands back: with several, a held
/// command would leave a CmdSN gap that keeps the target from running
/// the later commands of the other connections (RFC 7143 §3.2.2.1).
fn push_command(c: &ConnState, cmd: ScsiCommand, data: Bytes, sole_connection: bool) {
    push_held(c, cmd, data, (sole_connection && c.tuner.holds()).then(|| c.outstanding.saturating_sub(1)));
}

fn push_held(c: &ConnState, bhs: impl Into<Bhs>, data: Bytes, busy: Option<usize>) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let (header, header_len) = encode_header_inline(&bhs.into(), len, &c.tx_cfg);
    let trailer = data_trailer(&data, &c.tx_cfg);
    let out = Out { header, header_range: (0, header_len), data, trailer };
    // A send error means the writer is gone; the reader reports the loss.
    if c.link.send(&c.tx, out, busy).is_err() {
        tracing::debug!(cid = c.cid, "PDU not sent: the connection's writer is gone");
    }
}

/// The BHS (no AHS) and, when negotiated, its digest (RFC 7143 §11.2),
/// the same bytes as `encode_header`, in an array; returns how many are used.
fn encode_header_inline(bhs: &Bhs, data_len: u32, cfg: &FrameConfig) -> ([u8; HEADER_MAX], u8) {
    let mut out = [0u8; HEADER_MAX];
    let (head, digest) = out.split_at_mut(iscsi_proto::pdu::BHS_LEN);
    head.copy_from_slice(&bhs.encode(0, data_len));
    if !cfg.header_digest {
        return (out, iscsi_proto::pdu::BHS_LEN as u8);
    }
    digest.copy_from_slice(&iscsi_proto::digest::to_wire(iscsi_proto::digest::crc32c(head)));
    (out, HEADER_MAX as u8)
}

/// Sends `len` bytes from `offset` as Data-Out PDUs no larger than the
/// target's MaxRecvDataSegmentLength (RFC 7143 §11.7.7), DataSN from 0.
fn send_data_out(c: &mut ConnState, lun: u64, itt: u32, ttt: u32, data: &Bytes, offset: usize, len: usize) {
    let seg = (c.max_xmit as usize).max(512);
    let end = offset + len;
    let mut off = offset;
    let mut data_sn = 0u32;
    c.counters.bytes_out += len as u64;
    while off < end {
        let n = seg.min(end - off);
        let h = DataOut {
            final_bit: off + n == end,
            lun,
            itt,
            ttt,
            exp_stat_sn: c.exp_stat_sn,
            data_sn,
            buffer_offset: off as u32,
        };
        push(c, h, data.slice(off..off + n));
        off += n;
        data_sn = data_sn.wrapping_add(1);
    }
}

pub(super) fn complete(mut t: Task, r: Result<Reply>) {
    complete_ref(&mut t, r);
}

/// Answers the task's waiter, if it still has one.
fn complete_ref(t: &mut Task, r: Result<Reply>) {
    if let Some(tx) = t.reply.take() {
        let _ = tx.send(r);
    }
}

impl Inner {
    /// Handles one PDU from the target on connection `cid`. An error here is
    /// fatal for the connection (ERL 0, RFC 7143 §7.1.4).
    pub(super) fn handle_pdu(self: &Arc<Self>, cid: u16, pdu: Pdu) -> Result<()> {
        let mut st = self.lock();
        let st = &mut *st;
        st.heard(cid);
        track_target_sequence(st, cid, &pdu.bhs)?;
        let Pdu { bhs, data, .. } = pdu;
        match bhs {
            Bhs::DataIn(h) => on_data_in(st, cid, h, data)?,
            Bhs::ScsiResponse(h) => on_scsi_response(st, cid, h, data)?,
            Bhs::R2t(h) => on_r2t(st, cid, h)?,
            Bhs::NopIn(h) => on_nop_in(st, cid, h, data),
            Bhs::TextResponse(h) => on_text_response(st, h, data)?,
            Bhs::LogoutResponse(h) => {
                tracing::debug!(
                    cid,
                    exp_cmd_sn = h.exp_cmd_sn,
                    max_cmd_sn = h.max_cmd_sn,
                    next = st.window.current(),
                    "logout response"
                );
                let reason = st.tasks.get(&h.itt).map(|t| match t.kind {
                    TaskKind::Logout(r) => r,
                    _ => u8::MAX,
                });
                if let Some(t) = st.take_task(h.itt) {
                    complete(t, Ok(Reply::Logout(h)));
                }
                // The target closes the connection next: that is expected.
                // (Reason 2 removes another connection; this one goes on.)
                if reason == Some(iscsi_proto::pdu::logout_reason::CLOSE_SESSION) {
                    st.closed.get_or_insert_with(|| "logged out".to_string());
                } else if reason != Some(iscsi_proto::pdu::logout_reason::REMOVE_CONNECTION_FOR_RECOVERY)
                    && let Some(c) = conn_mut(&mut st.conns, cid)
                {
                    c.draining = true;
                }
            }
            Bhs::TaskMgmtResponse(h) => {
                if let Some(t) = st.take_task(h.itt) {
                    complete(t, Ok(Reply::TaskMgmt(h)));
                }
            }
            Bhs::AsyncMessage(h) => on_async(self, cid, h)?,
            Bhs::Reject(h) => on_reject(st, h, &data)?,
            other => {
                return Err(Error::protocol(format!(
                    "unexpected PDU of opcode 0x{:02x} in full feature phase",
                    other.opcode() as u8
                )));
            }
        }
        st.drain_queue();
        Ok(())
    }
}

/// Applies the ExpCmdSN/MaxCmdSN window and the StatSN a PDU carries.
fn track_target_sequence(st: &mut State, cid: u16, bhs: &Bhs) -> Result<()> {
    if let Some((stat_sn, exp, max)) = bhs.target_sequence() {
        st.window.update(exp, max);
        // RFC 7143 §11.19: an unsolicited NOP-In carries the next StatSN
        // without consuming it.
        let counts = !matches!(bhs, Bhs::NopIn(h) if h.itt == RESERVED_TAG);
        if let (Some(sn), true, Some(c)) = (stat_sn, counts, conn_mut(&mut st.conns, cid)) {
            // RFC 7143 §4.2.2.2: StatSN comes in order; a jump means lost
            // statuses, which ERL 0 cannot recover within the connection.
            if Sn(sn).gt(Sn(c.exp_stat_sn)) {
                return Err(Error::protocol(format!("StatSN jumped from {} to {sn}", c.exp_stat_sn)));
            }
            if sn == c.exp_stat_sn {
                c.exp_stat_sn = sn.wrapping_add(1);
            }
        }
    }
    Ok(())
}

impl Inner {
    /// Checks a Data-In header before its data segment has arrived and lends
    /// the reader the task's buffer, so that the segment goes from the
    /// socket straight to its place (one copy). The reader appends exactly
    /// `len` bytes and gives the buffer back with [`Inner::end_data_in`].
    /// While lent, the task's `buf` is empty although `received` counts the
    /// bytes already placed: a task whose connection dies meanwhile must be
    /// restarted from offset 0 ([`Task::restart`]), which ERL 0 does anyway.
    pub(super) fn begin_data_in(&self, cid: u16, h: &DataIn, len: usize) -> Result<BytesMut> {
        let mut st = self.lock();
        let t = scsi_task(&mut st, h.itt, cid, "Data-In")?;
        let TaskKind::Scsi(s) = &mut t.kind else {
            return Err(Error::protocol("Data-In for a task that is not a SCSI command"));
        };
        check_data_in(s, h, len)?;
        reserve_read_buffer(s);
        Ok(std::mem::take(&mut s.buf))
    }

    /// Takes back the buffer lent by [`Inner::begin_data_in`], now holding
    /// the segment, and handles the rest of the Data-In PDU.
    pub(super) fn end_data_in(self: &Arc<Self>, cid: u16, bhs: &Bhs, buf: BytesMut, len: usize) -> Result<()> {
        let Bhs::DataIn(h) = bhs else { return Ok(()) };
        let mut st = self.lock();
        let st = &mut *st;
        st.heard(cid);
        track_target_sequence(st, cid, bhs)?;
        // The task may have been aborted or restarted while its data was
        // being read: then the bytes are dropped.
        if let Some(t) = st.tasks.get_mut(&h.itt)
            && t.cid == Some(cid)
            && let TaskKind::Scsi(s) = &mut t.kind
            && s.buf.capacity() == 0
            && s.received == h.buffer_offset
            && s.next_data_sn == h.data_sn
        {
            s.buf = buf;
            commit_data_in(st, cid, h, len);
        }
        st.drain_queue();
        Ok(())
    }
}

fn scsi_task<'a>(st: &'a mut State, itt: u32, cid: u16, what: &str) -> Result<&'a mut Task> {
    let t = st.tasks.get_mut(&itt).ok_or_else(|| Error::protocol(format!("{what} for unknown task 0x{itt:08x}")))?;
    if t.cid != Some(cid) {
        return Err(Error::protocol(format!("{what} for task 0x{itt:08x} arrived on another connection (allegiance)")));
    }
    Ok(t)
}

fn on_data_in(st: &mut State, cid: u16, h: DataIn, data: Bytes) -> Result<()> {
    let t = scsi_task(st, h.itt, cid, "Data-In")?;
    let TaskKind::Scsi(s) = &mut t.kind else {
        return Err(Error::protocol("Data-In for a task that is not a SCSI command"));
    };
    check_data_in(s, &h, data.len())?;
    if !data.is_empty() {
        reserve_read_buffer(s);
        s.buf.extend_from_slice(&data);
    }
    commit_data_in(st, cid, &h, data.len());
    Ok(())
}

/// RFC 7143 §11.7.4-5: DataSN and BufferOffset in order (DataPDUInOrder and
/// DataSequenceInOrder are Yes), within the expected transfer length.
fn check_data_in(s: &ScsiTask, h: &DataIn, len: usize) -> Result<()> {
    if !s.read {
        return Err(Error::protocol("Data-In for a command that reads nothing"));
    }
    if h.data_sn != s.next_data_sn {
        return Err(Error::protocol(format!("Data-In DataSN {} where {} was due", h.data_sn, s.next_data_sn)));
    }
    if h.buffer_offset != s.received {
        return Err(Error::protocol(format!(
            "Data-In at offset {} where {} was due (DataPDUInOrder=Yes)",
            h.buffer_offset, s.received
        )));
    }
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    if s.received.checked_add(len).is_none_or(|e| e > s.expected_len) {
        return Err(Error::protocol(format!(
            "Data-In beyond the expected transfer length of {} bytes",
            s.expected_len
        )));
    }
    Ok(())
}

/// The command's whole read buffer, allocated once at its first Data-In
/// unless the caller lent one large enough (`Session::execute_read_into`).
fn reserve_read_buffer(s: &mut ScsiTask) {
    let want = s.expected_len as usize;
    if s.buf.capacity() < want {
        s.buf.reserve(want.saturating_sub(s.buf.len()));
    }
}

/// Accounts for a checked Data-In segment of `len` bytes already in the
/// task's buffer; completes the task when the PDU carries its status.
fn commit_data_in(st: &mut State, cid: u16, h: &DataIn, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    if let Some(t) = st.tasks.get_mut(&h.itt)
        && let TaskKind::Scsi(s) = &mut t.kind
    {
        s.next_data_sn = s.next_data_sn.wrapping_add(1);
        s.received = s.received.saturating_add(len);
    }
    if let Some(c) = conn_mut(&mut st.conns, cid) {
        c.counters.bytes_in += u64::from(len);
    }
    if h.status_present {
        let residual = residual(h.underflow, h.overflow, h.residual_count);
        if let Some(t) = st.take_task(h.itt) {
            count_error(st, cid, !scsi_status_ok(h.status, &[]));
            finish_scsi(t, h.status, Bytes::new(), residual);
        }
    }
}

fn residual(underflow: bool, overflow: bool, count: u32) -> i64 {
    if underflow {
        i64::from(count)
    } else if overflow {
        -i64::from(count)
    } else {
        0
    }
}

/// GOOD or CONDITION MET (SAM-5 §5.3.1), or a UNIT ATTENTION: the target
/// telling news (a reset, a new session), which the command is retried for.
fn scsi_status_ok(status: u8, sense_segment: &[u8]) -> bool {
    use iscsi_proto::scsi::sense::{ScsiStatus, Sense, SenseKey};
    ScsiStatus::from_u8(status).is_success()
        || matches!(Sense::from_iscsi_data(sense_segment), Ok(Some(s)) if s.key == SenseKey::UnitAttention)
}

/// Counts a SCSI command that ended badly on connection `cid`.
fn count_error(st: &mut State, cid: u16, failed: bool) {
    if failed && let Some(c) = conn_mut(&mut st.conns, cid) {
        c.counters.errors += 1;
    }
}

fn finish_scsi(mut t: Task, status: u8, sense: Bytes, residual: i64) {
    let TaskKind::Scsi(s) = &mut t.kind else { return };
    // Taken whole (not `split`), so the caller can turn it back into a
    // `BytesMut` with `Bytes::try_into_mut` and reuse it.
    let data = std::mem::take(&mut s.buf).freeze();
    complete(t, Ok(Reply::Scsi(ScsiOutcome { status, sense, data, residual })));
}

fn on_scsi_response(st: &mut State, cid: u16, h: ScsiResponse, data: Bytes) -> Result<()> {
    scsi_task(st, h.itt, cid, "SCSI Response")?;
    let Some(t) = st.take_task(h.itt) else { return Ok(()) };
    count_error(st, cid, h.response != 0 || !scsi_status_ok(h.status, &data));
    if h.response != 0 {
        complete(t, Err(Error::TargetFailure(h.response)));
        return Ok(());
    }
    // RFC 7143 §11.4.7: the data segment is SenseLength (2 bytes) + sense.
    let sense = match data.get(..2) {
        Some(&[a, b]) => {
            let n = usize::from(u16::from_be_bytes([a, b]));
            data.slice(2..(2 + n).min(data.len()))
        }
        _ => Bytes::new(),
    };
    finish_scsi(t, h.status, sense, residual(h.underflow, h.overflow, h.residual_count));
    Ok(())
}

fn on_r2t(st: &mut State, cid: u16, h: R2t) -> Result<()> {
    let t = scsi_task(st, h.itt, cid, "R2T")?;
    let TaskKind::Scsi(s) = &t.kind else {
        return Err(Error::protocol("R2T for a task that is not a SCSI command"));
    };
    let start = h.buffer_offset as usize;
    let len = h.desired_data_transfer_length as usize;
    if len == 0 || start.checked_add(len).is_none_or(|e| e > s.write_data.len()) {
        return Err(Error::protocol(format!(
            "R2T asks for {len} bytes at offset {start}, outside the {}-byte write",
            s.write_data.len()
        )));
    }
    let (lun, data) = (t.lun, s.write_data.clone());
    if let Some(c) = conn_mut(&mut st.conns, cid) {
        send_data_out(c, lun, h.itt, h.ttt, &data, start, len);
    }
    Ok(())
}

fn on_nop_in(st: &mut State, cid: u16, h: NopIn, data: Bytes) {
    if h.itt != RESERVED_TAG {
        if let Some(t) = st.take_task(h.itt)
            && matches!(t.kind, TaskKind::Probe)
        {
            complete(t, Ok(Reply::Probe(h.exp_cmd_sn)));
        }
        if let Some(c) = conn_mut(&mut st.conns, cid)
            && c.ping_itt == Some(h.itt)
        {
            c.ping_itt = None;
        }
    }
    if h.ttt != RESERVED_TAG {
        // RFC 7143 §11.19: a NOP-In with a valid TTT asks for a NOP-Out
        // echoing the TTT (and the ping data), ITT reserved.
        let cmd_sn = st.window.current();
        if let Some(c) = st.conns.iter().find(|c| c.cid == cid) {
            let out = NopOut {
                immediate: true,
                lun: h.lun,
                itt: RESERVED_TAG,
                ttt: h.ttt,
                cmd_sn,
                exp_stat_sn: c.exp_stat_sn,
            };
            push(c, out, data);
        }
    }
}

fn on_text_response(st: &mut State, h: TextResponse, data: Bytes) -> Result<()> {
    let t = st.tasks.get_mut(&h.itt).ok_or_else(|| Error::protocol("Text Response for an unknown task"))?;
    let TaskKind::Text(acc) = &mut t.kind else {
        return Err(Error::protocol("Text Response for a task that is not a Text Request"));
    };
    match acc.push(&data, h.continue_ || !h.final_bit)? {
        Some(pairs) => {
            if let Some(t) = st.take_task(h.itt) {
                complete(t, Ok(Reply::Text(pairs)));
            }
        }
        // RFC 7143 §11.10.4: ask for the rest with an empty request
        // carrying the target's TTT.
        None => st.send_text(h.itt, h.ttt, Bytes::new()),
    }
    Ok(())
}

fn on_async(inner: &Arc<Inner>, cid: u16, h: AsyncMessage) -> Result<()> {
    match h.async_event {
        0 => debug!("SCSI asynchronous event"),
        1 => {
            // The target asks us to log out (RFC 7143 §11.9.1 event 1): this
            // connection when others remain, else the session.
            info!(cid, seconds = h.parameter3, "target requests logout");
            let s = Session { inner: inner.clone() };
            tokio::spawn(async move {
                let _ = s.logout_requested(cid).await;
            });
        }
        2 => return Err(Error::ConnectionLost("the target is dropping the connection".into())),
        3 => return Err(Error::ConnectionLost("the target is dropping the session".into())),
        4 => debug!("target requests parameter renegotiation; ignored"),
        e => debug!(event = e, "asynchronous message ignored"),
    }
    Ok(())
}

/// RFC 7143 §11.17.1 reason codes.
fn reject_reason(r: u8) -> &'static str {
    match r {
        0x02 => "data digest error",
        0x03 => "SNACK reject",
        0x04 => "protocol error",
        0x05 => "command not supported",
        0x06 => "too many immediate commands",
        0x07 => "task in progress",
        0x08 => "invalid data ack",
        0x09 => "invalid PDU field",
        0x0a => "out of resources",
        0x0b => "deprecated reason",
        0x0c => "waiting for logout",
        _ => "unknown reason",
    }
}

fn on_reject(st: &mut State, h: Reject, data: &Bytes) -> Result<()> {
    let itt = data.get(16..20).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
    let msg = format!("{} (reason 0x{:02x})", reject_reason(h.reason), h.reason);
    match itt.and_then(|i| st.take_task(i)) {
        Some(t) => {
            complete(t, Err(Error::Rejected(msg)));
            Ok(())
        }
        None => Err(Error::Rejected(msg)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    use iscsi_proto::pdu::encode_header;

    #[test]
    fn inline_header_matches_encode_header() {
        let bhs: Bhs = NopOut { immediate: true, lun: 3, itt: 9, ttt: RESERVED_TAG, cmd_sn: 5, exp_stat_sn: 7 }.into();
        for header_digest in [false, true] {
            let cfg = FrameConfig { header_digest, ..FrameConfig::default() };
            let mut want = BytesMut::new();
            encode_header(&bhs, &[], 512, &cfg, &mut want);
            let (got, n) = encode_header_inline(&bhs, 512, &cfg);
            assert_eq!(&got[..usize::from(n)], &want[..]);
        }
    }

    /// A connection on one end of a loopback pair, its writer running,
    /// with `outstanding` commands already at the target.
    pub(crate) async fn busy_conn(outstanding: usize) -> (ConnState, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (peer, _) = l.accept().await.unwrap();
        let (_rd, wr) = c.into_split();
        let link = Arc::new(super::super::io::Link::new(wr));
        let (tx, rx) = mpsc::unbounded_channel();
        let w = tokio::spawn(super::super::io::writer(link.clone(), rx, tx.downgrade()));
        let conn = ConnState {
            cid: 0,
            id: UniqueConnectionId::new(1, 1),
            portal: PortalAddr { host: "127.0.0.1".into(), port: 3260 },
            local: None,
            remote: None,
            params: Negotiated::default(),
            tx,
            link,
            tx_cfg: FrameConfig::default(),
            exp_stat_sn: 1,
            max_xmit: 8192,
            ping_itt: None,
            outstanding,
            outstanding_bytes: 0,
            link_rate: LinkRate::default(),
            draining: false,
            stalled: false,
            primary: true,
            weight: 1,
            counters: ConnCounters::default(),
            tuner: Default::default(),
            handles: vec![w],
        };
        (conn, peer)
    }

    fn read_command(itt: u32) -> ScsiCommand {
        ScsiCommand {
            final_bit: true,
            read: true,
            itt,
            cmd_sn: itt,
            expected_data_transfer_length: 4096,
            ..Default::default()
        }
    }

    /// With the target this busy, a session of one connection holds the
    /// next command back; a session of several must not, since the held
    /// command's CmdSN would keep the target from running the other
    /// connections' later ones (RFC 7143 §3.2.2.1).
    #[tokio::test]
    async fn only_a_sole_connection_holds_commands_back() {
        let busy = super::super::io::HOLD_AT + 1;
        let (sole, _peer1) = busy_conn(busy).await;
        push_command(&sole, read_command(1), Bytes::new(), true);
        assert_eq!(sole.link.held_len(), 1);
        let (shared, mut peer2) = busy_conn(busy).await;
        push_command(&shared, read_command(2), Bytes::new(), false);
        assert_eq!(shared.link.held_len(), 0);
        arrives_at_once(&mut peer2).await;
    }

    /// The peer receives a SCSI Command within 2 s.
    async fn arrives_at_once(peer: &mut tokio::net::TcpStream) {
        let mut got = [0u8; 48];
        tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read_exact(peer, &mut got))
            .await
            .expect("the command goes out at once")
            .unwrap();
        assert_eq!(got[0] & 0x3f, 0x01, "a SCSI Command");
    }

    /// A connection whose trial found sending at once faster (istgt's
    /// 4 KiB reads) sends a command at once however busy the target is.
    #[tokio::test]
    async fn a_connection_that_chose_not_to_hold_sends_at_once() {
        let (mut conn, mut peer) = busy_conn(super::super::io::HOLD_AT + 1).await;
        conn.tuner = super::super::hold::HoldTuner::sending_at_once();
        push_command(&conn, read_command(3), Bytes::new(), true);
        assert_eq!(conn.link.held_len(), 0);
        arrives_at_once(&mut peer).await;
    }

    /// Only answers while the target had at least `HOLD_AT` commands feed
    /// the hold-back trial, and a connection that runs dry starts its
    /// measured window again (idle time would measure the application).
    #[tokio::test]
    async fn busy_answers_feed_the_hold_trial() {
        let hold_at = super::super::io::HOLD_AT;
        let mut st = state(1, 1);
        let (conn, _peer) = busy_conn(hold_at + 2).await;
        st.conns.push(conn);
        for itt in 1..=hold_at as u32 + 2 {
            let scsi = ScsiTask {
                expected_len: 0,
                read: true,
                received: 0,
                next_data_sn: 0,
                buf: BytesMut::new(),
                write_data: Bytes::new(),
            };
            st.tasks.insert(itt, Task::new(Some(0), 0, TaskKind::Scsi(scsi), None));
        }
        // The first busy answer starts the window, the next two count.
        for itt in 1..=3 {
            assert!(st.take_task(itt).is_some());
        }
        assert_eq!(st.conns[0].tuner.window(), (2, true));
        // Fewer than HOLD_AT at the target: not counted.
        assert!(st.take_task(4).is_some());
        assert_eq!(st.conns[0].tuner.window(), (2, true));
        for itt in 5..=hold_at as u32 + 2 {
            assert!(st.take_task(itt).is_some());
        }
        assert_eq!(st.conns[0].outstanding, 0);
        assert_eq!(st.conns[0].tuner.window(), (0, false));
    }

    #[test]
    fn itt_hash_spreads_sequential_itts() {
        use std::hash::BuildHasher;
        let h: Vec<u64> = (0u32..4).map(|i| IttHash.hash_one(i)).collect();
        // Distinct hashes, and the top 7 bits (hashbrown's control byte) vary.
        assert!(h.windows(2).all(|w| w[0] != w[1]));
        assert!(h.iter().map(|x| x >> 57).collect::<std::collections::HashSet<_>>().len() > 1);
        let mut m: HashMap<u32, u8, IttHash> = HashMap::default();
        m.insert(7, 1);
        m.insert(RESERVED_TAG, 2);
        assert_eq!((m.get(&7), m.get(&RESERVED_TAG), m.get(&8)), (Some(&1), Some(&2), None));
    }

    #[test]
    fn latency_quantiles_come_from_power_of_two_buckets() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for us in [90u64, 100, 110, 120, 5000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 5);
        // 90..120 µs fall in [64, 128): p50 is that bucket's upper bound.
        assert_eq!(h.quantile_us(0.5), Some(127));
        // The slowest one bounds p99 by the largest seen, not the bucket's end.
        assert_eq!(h.quantile_us(0.99), Some(5000));
        assert_eq!(h.max_us(), 5000);
        let mut c = ConnCounters { commands: 5, errors: 1, latency: h, ..Default::default() };
        let earlier = ConnCounters { commands: 2, reconnects: 1, latency: h, ..Default::default() };
        c.absorb(&earlier);
        assert_eq!((c.commands, c.errors, c.reconnects, c.latency.count()), (7, 1, 1, 10));
    }

    /// A sent SCSI task on connection 0: a read of `read` bytes of which
    /// `received` came, or a write of `write` bytes.
    fn sent(st: &mut State, itt: u32, read: u32, received: u32, write: usize) {
        let scsi = ScsiTask {
            expected_len: read.max(write as u32),
            read: read > 0,
            received,
            next_data_sn: 0,
            buf: BytesMut::new(),
            write_data: Bytes::from(vec![0u8; write]),
        };
        let mut t = Task::new(Some(0), 0, TaskKind::Scsi(scsi), None);
        t.cmd_sn = Some(itt);
        st.tasks.insert(itt, t);
    }

    /// What the reader may wait for: the least any answer still brings,
    /// over the commands sent on the connection; nothing when an answer
    /// needs an R2T answered first, another kind of task is out, or too
    /// few commands are.
    #[tokio::test]
    async fn owed_answers_count_only_what_comes_unprompted() {
        let mut st = state(1, 1);
        let (conn, _peer) = busy_conn(8).await;
        st.conns.push(conn);
        for itt in 1..=6 {
            sent(&mut st, itt, 4096, 0, 0);
        }
        // A read half answered, a write wholly sent as immediate data (the
        // connection's MaxXmitDataSegmentLength is 8192).
        sent(&mut st, 7, 4096, 3072, 0);
        sent(&mut st, 8, 0, 0, 8192);
        // Not yet sent (waits for the CmdSN window): not counted.
        st.tasks.insert(9, Task::new(Some(0), 0, TaskKind::Ping, None));
        assert_eq!(st.owed_answers(0, 8), Some(OwedAnswers { count: 8, least_bytes: 48 }));
        assert_eq!(st.owed_answers(0, 9), None, "fewer than asked for");
        assert_eq!(st.owed_answers(1, 1), None, "no such connection");
        st.tasks.remove(&8);
        assert_eq!(st.owed_answers(0, 7), Some(OwedAnswers { count: 7, least_bytes: 48 + 1024 }));
        // A write beyond its immediate data waits for an R2T.
        sent(&mut st, 10, 0, 0, 8193);
        assert_eq!(st.owed_answers(0, 7), None);
        st.tasks.remove(&10);
        // A ping out on the connection.
        st.tasks.get_mut(&9).unwrap().cmd_sn = Some(9);
        assert_eq!(st.owed_answers(0, 7), None);
    }

    #[test]
    fn unsolicited_data_follows_the_burst_keys() {
        let b = |immediate_data, initial_r2t| Burst { first_burst_length: 65536, immediate_data, initial_r2t };
        assert_eq!(b(true, true).unsolicited(100_000, 8192), (8192, 8192));
        assert_eq!(b(true, false).unsolicited(100_000, 8192), (8192, 65536));
        assert_eq!(b(false, false).unsolicited(100_000, 8192), (0, 65536));
        assert_eq!(b(false, true).unsolicited(100_000, 8192), (0, 0));
        assert_eq!(b(true, false).unsolicited(4096, 8192), (4096, 4096));
    }

    pub(crate) fn state(next: u32, exp: u32) -> State {
        let burst = Burst { first_burst_length: 65536, immediate_data: true, initial_r2t: true };
        State::new(CmdWindow::new(next, exp, exp.wrapping_add(31)), burst, 1)
    }

    /// A read of one block, nothing received yet.
    pub(crate) fn one_block_read() -> TaskKind {
        TaskKind::Scsi(ScsiTask {
            expected_len: 512,
            read: true,
            received: 0,
            next_data_sn: 0,
            buf: BytesMut::new(),
            write_data: Bytes::new(),
        })
    }

    /// A SCSI task that went out with `cmd_sn`, on `cid` or lost with it.
    fn task(st: &mut State, cmd_sn: u32, cid: u16, lost: bool) {
        let mut t = Task::new(Some(cid), 0, one_block_read(), None);
        t.cmd_sn = Some(cmd_sn);
        if lost {
            t.cid = None;
            t.lost_on = Some(cid);
        }
        let itt = st.alloc_itt();
        st.tasks.insert(itt, t);
    }

    #[test]
    fn exp_cmd_sn_settles_at_our_next_cmd_sn_without_a_gap() {
        let mut st = state(20, 17);
        task(&mut st, 17, 1, false);
        // 17..19 are still on their way: the target's ExpCmdSN will move.
        assert_eq!(st.settled_exp_cmd_sn(), None);
        st.window.update(20, 51);
        assert_eq!(st.settled_exp_cmd_sn(), Some(20));
    }

    #[test]
    fn exp_cmd_sn_settles_at_the_first_lost_cmd_sn() {
        let mut st = state(20, 12);
        // 10 was lost but reached the target (ExpCmdSN passed it); 14 and
        // 16 never did: the target stops at 14 once 12 and 13 arrive.
        task(&mut st, 10, 2, true);
        task(&mut st, 16, 2, true);
        task(&mut st, 14, 3, true);
        task(&mut st, 18, 1, false);
        assert_eq!(st.settled_exp_cmd_sn(), None);
        st.window.update(14, 45);
        assert_eq!(st.settled_exp_cmd_sn(), Some(14));
    }

    #[test]
    fn exp_cmd_sn_settles_across_the_wrap() {
        let mut st = state(3, u32::MAX - 1);
        task(&mut st, 1, 2, true);
        task(&mut st, u32::MAX, 2, true);
        st.window.update(u32::MAX, 30);
        assert_eq!(st.settled_exp_cmd_sn(), Some(u32::MAX));
    }

    /// A read of one block lost with connection `lost_on`, waiting for its
    /// answer (a waiter) or not; returns its ITT.
    fn lost_read(
        st: &mut State,
        cmd_sn: u32,
        lost_on: u16,
        waiting: bool,
    ) -> (u32, Option<super::super::reply::Receiver>) {
        let cdb = iscsi_proto::scsi::cdb::read10(0, 1);
        let mut t = Task::new(None, 0, one_block_read(), Some((cdb, 0)));
        t.cmd_sn = Some(cmd_sn);
        t.lost_on = Some(lost_on);
        let rx = waiting.then(|| {
            let (tx, rx) = super::super::reply::channel();
            t.reply = Some(tx);
            rx
        });
        let itt = st.alloc_itt();
        st.tasks.insert(itt, t);
        (itt, rx)
    }

    /// The next PDU the connection wrote to `peer`.
    pub(crate) async fn next_pdu(
        peer: &mut tokio::net::TcpStream,
        dec: &mut iscsi_proto::pdu::PduDecoder,
        buf: &mut BytesMut,
    ) -> Pdu {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(p) = dec.decode(buf).unwrap() {
                return p;
            }
            let n = tokio::time::timeout(Duration::from_secs(2), peer.read_buf(buf)).await.unwrap().unwrap();
            assert!(n > 0, "connection closed");
        }
    }

    /// RFC 7143 §4.2.2.1: a command recovery gave up on is never sent
    /// again; the CmdSN the target never got is filled by a TEST UNIT READY,
    /// so that the commands behind it are not held up; one it got is forgotten.
    #[tokio::test]
    async fn an_abandoned_command_is_not_sent_again_but_its_cmd_sn_is_filled() {
        let (conn, mut peer) = busy_conn(0).await;
        let mut st = state(20, 12);
        st.conns.push(conn);
        let (got, _) = lost_read(&mut st, 12, 5, false);
        let (hole, _) = lost_read(&mut st, 14, 5, false);
        let (waiting, _rx) = lost_read(&mut st, 15, 5, true);
        let retried = st.replay_lost(5, 0, 13);
        assert_eq!(retried, vec![(waiting, 15)], "only the command someone waits for is retried");
        assert!(!st.tasks.contains_key(&got), "a command the target had is forgotten");
        assert!(st.tasks.get(&hole).is_some_and(|t| t.filler));
        let (mut dec, mut buf) = (iscsi_proto::pdu::PduDecoder::new(FrameConfig::default()), BytesMut::new());
        match next_pdu(&mut peer, &mut dec, &mut buf).await.bhs {
            Bhs::ScsiCommand(c) => {
                assert_eq!((c.immediate, c.itt, c.cmd_sn, c.cdb[0]), (false, hole, 14, 0x00));
                assert!(!c.read && !c.write && c.expected_data_transfer_length == 0);
            }
            other => panic!("expected the TEST UNIT READY filling CmdSN 14, got {other:?}"),
        }
        match next_pdu(&mut peer, &mut dec, &mut buf).await.bhs {
            Bhs::ScsiCommand(c) => assert_eq!((c.itt, c.cmd_sn), (waiting, 15)),
            other => panic!("expected the retried read, got {other:?}"),
        }
    }

    /// A lost command whose reinstated connection failed with the same
    /// violation ends at once with the first cause (`fault.rs`).
    #[tokio::test]
    async fn the_same_violation_on_a_reinstated_connection_ends_the_command() {
        let fault =
            |itt: u32| ConnectionFault::new(FaultKind::Violation, format!("Data-In for unknown task 0x{itt:08x}"));
        let (conn, _peer) = busy_conn(0).await;
        let mut st = state(20, 12);
        st.conns.push(conn);
        let (itt, rx) = lost_read(&mut st, 14, 0, true);
        let now = Instant::now();
        if let Some(t) = st.tasks.get_mut(&itt) {
            (t.cid, t.lost_on) = (Some(0), None);
            TaskRecovery::on_fault(&mut t.recovery, &fault(0x4000_0001), now, now, &st.budget);
        }
        assert!(st.orphan_connection(0, Some((&fault(0x4000_0002), now, now))).is_some());
        assert_eq!(st.recovery_stats.give_ups, 1);
        assert_eq!(st.recovery_stats.recoveries, 1);
        assert!(st.tasks.get(&itt).is_some_and(Task::abandoned), "kept only for its CmdSN");
        let e = rx.unwrap().await.unwrap().err().unwrap();
        assert_eq!(
            e.to_string(),
            "target broke the iSCSI protocol: Data-In for unknown task 0x40000001 \
             (same fault on 1 reinstated connection; gave up)"
        );
    }

    /// A queued command whose waiter timed out leaves the queue at once: it
    /// is never sent, and the queue's hot path never meets it.
    #[tokio::test]
    async fn a_queued_command_that_timed_out_leaves_the_queue() {
        let mut st = state(10, 10);
        let (itt, rx) = lost_read(&mut st, 0, 0, true);
        let t0 = Instant::now();
        if let Some(t) = st.tasks.get_mut(&itt) {
            (t.cmd_sn, t.lost_on, t.deadline) = (None, None, Some(t0));
        }
        st.queued.push_back(itt);
        st.expire_overdue(t0 + Duration::from_millis(1));
        assert!(st.queued.is_empty() && st.tasks.is_empty());
        let e = rx.unwrap().await.unwrap().err().unwrap();
        assert_eq!(
            e.to_string(),
            "timed out waiting for the target's answer to READ(10) (never sent: the target kept its command window full)"
        );
    }

    /// RFC 7143 §4.2.2.1: a window the target keeps closed with nothing in
    /// flight fails the queued commands after the hold time, not before.
    #[tokio::test]
    async fn a_window_kept_closed_fails_the_queued_commands_after_the_hold_time() {
        let mut st = state(10, 10);
        st.window = CmdWindow::new(10, 10, 9);
        st.budget.max_request_hold_time = Duration::from_secs(5);
        let (itt, rx) = lost_read(&mut st, 0, 0, true);
        if let Some(t) = st.tasks.get_mut(&itt) {
            (t.cmd_sn, t.lost_on) = (None, None);
        }
        st.queued.push_back(itt);
        let t0 = Instant::now();
        st.expire_overdue(t0);
        st.expire_overdue(t0 + Duration::from_millis(4900));
        assert_eq!(st.queued.len(), 1, "still within the hold time");
        st.expire_overdue(t0 + Duration::from_secs(5));
        assert!(st.queued.is_empty() && st.tasks.is_empty());
        let e = rx.unwrap().await.unwrap().err().unwrap();
        assert!(matches!(&e, Error::GaveUp(g) if g.cause.kind == FaultKind::WindowClosed), "{e:?}");
        assert!(e.to_string().contains("MaxCmdSN 9 is below ExpCmdSN 10"), "{e}");
    }
}
