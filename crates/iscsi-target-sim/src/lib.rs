//! A small iSCSI target on loopback for tests, built on the sans-IO core of
//! `iscsi-proto`, that can be told to misbehave on cue ([`Fault`]).
//!
//! It serves one target name with one RAM-backed LUN: login (AuthMethod
//! None or one-way CHAP MD5), operational negotiation (RFC 7143 §6.2, §13),
//! SendTargets discovery (Appendix C), and the full feature phase with
//! NOP, SCSI commands, Data-In/Data-Out/R2T and Logout. A session may have
//! up to `max_connections` connections (MC/S, §5.3) sharing one CmdSN window.
//! With `error_recovery_level` 2 it is an ERL 2 peer (§7.2): a failed
//! connection's tasks are kept for DefaultTime2Retain, and after a Logout
//! for recovery (reason 2) or a reinstatement of the CID, TASK REASSIGN
//! moves them to another connection, where a read resumes at its ExpDataSN
//! and a write gets recovery R2Ts for what is missing.
//!
//! What the initiator sent that breaks RFC 7143 is recorded in
//! [`SimStats::violations`], so a well-behaved run can be asserted too; the
//! target then acts as the RFC says: a non-immediate request outside the
//! CmdSN window is ignored (§4.2.2.1), a write whose Data-Out DataSNs are
//! out of order ends in CHECK CONDITION (§7.4, §7.8.1). Residuals (§11.4.5)
//! and ABORT TASK (§11.5.1) follow the RFC too; `tests/conformance.rs`
//! checks all this with libiscsi's `iscsi-test-cu`, and the
//! `iscsi-sim-target` binary serves the sim to such outside tools.
//!
//! ```
//! # async fn demo() -> std::io::Result<()> {
//! use iscsi_target_sim::{Fault, SimConfig, SimTarget};
//!
//! // A target whose first Data-In skips DataSN 0.
//! let sim = SimTarget::start(SimConfig::with_fault(Fault::DataSnGap)).await?;
//! println!("log in to {} at {}", sim.target_name(), sim.addr());
//! assert!(sim.stats().violations.is_empty());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod conn;
mod erl2;
mod login;
pub mod scsi;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// When, in the life of a connection, a [`Fault::Reset`] strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Right after accepting, before any PDU is read.
    Accept,
    /// On the first Login Request.
    Login,
    /// On the first SCSI command of the full feature phase.
    FullFeature,
    /// After the first Data-In PDU of a read.
    DataIn,
}

/// One way to misbehave. `None` is a well-behaved target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    // ---- framing (RFC 7143 §11.2) ----
    /// A NOP-In whose DataSegmentLength is 2^24-1, far beyond the
    /// initiator's MaxRecvDataSegmentLength (§13.12), sent on the first command.
    DataSegmentTooLong,
    /// The SCSI Response of the first command carries TotalAHSLength=255
    /// (1020 bytes of meaningless AHS, §11.2.1.4).
    AhsTooLong,
    /// Half a SCSI Response, then the connection is closed.
    TruncatedPdu,
    /// The answer to the first command has a wrong header digest (§12.1;
    /// only meaningful with `digests` on).
    BadHeaderDigest,
    /// The Data-In of the first read has a wrong data digest.
    BadDataDigest,
    /// Bytes that are not iSCSI at all right after the login.
    GarbageAfterLogin,
    /// A PDU with the undefined opcode 0x1c answers the first command.
    UnknownOpcode,
    /// The first SCSI command is rejected (Reject, reason 0x04 protocol error, §11.17).
    RejectCommand,
    // ---- sequencing (§4.2.2, §11.7) ----
    /// Data-In carrying another Initiator Task Tag.
    DataInWrongItt,
    /// The first Data-In of a read has DataSN 1 instead of 0.
    DataSnGap,
    /// The first Data-In of a read is sent twice.
    DataSnRepeat,
    /// A read returns 512 bytes more than the initiator asked for.
    DataOverrun,
    /// A Data-In whose BufferOffset lies beyond the end of the command.
    BufferOffsetOutside,
    /// StatSN jumps forward by 1000 on the answer to the first command.
    StatSnJump,
    /// ExpCmdSN and MaxCmdSN go backwards by 8 on the answer to the second command.
    CmdWindowBackwards,
    /// The window is closed (MaxCmdSN = ExpCmdSN - 1) from login until
    /// `secs` seconds later, when an unsolicited NOP-In opens it (§4.2.2.1).
    WindowClosed { secs: u64 },
    /// The first R2T of a write asks for data outside the transfer.
    R2tOutside,
    /// A SCSI Response for a task the initiator never started.
    ResponseForUnsentCommand,
    // ---- login and authentication (§6, §12.1.3) ----
    /// The CHAP challenge is the one the initiator sent on an earlier
    /// connection (reflection). The first connection is redirected back here.
    ChapReflect,
    /// A CHAP_C of 100 KB of hex digits (sent over several continued PDUs).
    ChapHugeChallenge,
    /// CHAP_A=7 (SHA-256) although the initiator offered only MD5.
    ChapWrongAlgorithm,
    /// The operational answer names MaxBurstLength twice.
    KeyRepeated,
    /// The operational answer answers a key that was never offered (CHAP_A).
    KeyOutOfTurn,
    /// Every login is redirected to this same portal.
    RedirectLoop,
    /// The login is redirected to a TargetAddress that is not an address.
    BadTargetAddress,
    /// The SendTargets answer gives a TargetAddress that is not an address
    /// (Appendix C, §13.8).
    SendTargetsBadAddress,
    /// The SendTargets answer never ends: Text Responses with the C bit,
    /// one after another (§11.11), each a full data segment.
    TextEndlessContinuation,
    /// Every login response keeps T clear: the login never moves on.
    LoginNeverTransits,
    /// The first Login Response claims a data segment of 2^24-1 bytes.
    LoginDataSegmentTooLong,
    /// Login Requests are read and never answered.
    LoginNeverFinishes,
    // ---- liveness ----
    /// After the first Data-In PDU of a read, nothing more is ever sent
    /// (NOP-Outs included): the initiator's NOP-Out timeout must fire.
    StopAnswering,
    /// Every PDU after login is sent one byte every 500 ms.
    SlowLoris,
    /// A Logout Request is read and never answered (§11.14).
    LogoutNeverAnswered,
    /// A TCP reset (SO_LINGER 0, then close) at this phase.
    Reset(Phase),
    // ---- connection failures for recovery (§6.2, §7) ----
    /// The connection carrying a read ends after `after` of its Data-In
    /// PDUs went out (once per target, on the first read long enough): with
    /// `reset` by a TCP reset, which may lose what was still queued to send;
    /// else by a close that delivers them first.
    CutMidRead { after: u32, reset: bool },
    /// The connection carrying a write ends after `after` of its Data-Out
    /// PDUs came in (once per target, on the first write long enough).
    CutMidWrite { after: u32, reset: bool },
    /// A write's data all arrives and is stored, but its status is never
    /// sent: the connection closes instead (once per target, on the first
    /// write after `after` commands answered on that connection).
    WriteStatusLost { after: u32 },
    /// Async Message event 1 (§11.9.1, "logout requested", 1 s to comply)
    /// on connection `cid` once it has answered `after` SCSI commands.
    AsyncLogoutRequest { cid: u16, after: u32 },
    /// Async Message event 2 (§11.9.1, "dropping the connection") on
    /// connection `cid` once it has answered `after` SCSI commands; then the
    /// connection is closed.
    AsyncDropConnection { cid: u16, after: u32 },
}

/// What the simulated target is and how it negotiates.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The one target name served (RFC 7143 §13.4).
    pub target_name: String,
    /// LUN 0 size in bytes (a multiple of `block_size`).
    pub lun_size: u64,
    pub block_size: u32,
    /// One-way CHAP MD5: the user and secret the initiator must prove.
    pub chap: Option<(String, Vec<u8>)>,
    /// Mutual CHAP: the name and secret we answer the initiator's challenge with.
    pub mutual_chap: Option<(String, Vec<u8>)>,
    /// Our MaxRecvDataSegmentLength (declarative, §13.12).
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_connections: u16,
    /// Accept CRC32C header and data digests when offered (§13.1).
    pub digests: bool,
    /// CmdSN window depth (MaxCmdSN - ExpCmdSN + 1).
    pub queue_depth: u32,
    /// The highest ErrorRecoveryLevel accepted (§13.20: the answer is the
    /// minimum of this and the offer). At 2 the failed connection's tasks are
    /// kept for DefaultTime2Retain and may be reassigned (§7.2, §11.5.1).
    pub error_recovery_level: u8,
    /// Whether TASK REASSIGN is carried out at ERL 2; when false it is
    /// answered "Task allegiance reassignment not supported" (§11.6.1).
    pub task_reassign: bool,
    /// Our DefaultTime2Wait (§13.15, result: maximum) and
    /// DefaultTime2Retain (§13.16, result: minimum).
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub fault: Fault,
    /// How many connections (in the order they are accepted) misbehave
    /// with `fault`: `None` every one (a deterministic target), `Some(1)`
    /// only the first (a transient fault that recovery must heal).
    pub faulty_connections: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            target_name: "iqn.2026-11.rs.rsiscsi:sim".into(),
            lun_size: 16 * 1024 * 1024,
            block_size: 512,
            chap: None,
            mutual_chap: None,
            max_recv_data_segment_length: 65_536,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            initial_r2t: false,
            immediate_data: true,
            max_connections: 1,
            digests: false,
            queue_depth: 32,
            error_recovery_level: 0,
            task_reassign: true,
            default_time2wait: 2,
            default_time2retain: 20,
            fault: Fault::None,
            faulty_connections: None,
        }
    }
}

impl SimConfig {
    pub fn with_fault(fault: Fault) -> Self {
        Self { fault, ..Self::default() }
    }
}

/// What the target saw, for tests to check the initiator's behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Connections that reached the full feature phase.
    pub logins: u32,
    pub commands: u32,
    pub nop_outs: u32,
    pub immediate_bytes: u64,
    pub unsolicited_data_outs: u32,
    pub r2ts: u32,
    pub solicited_data_outs: u32,
    pub data_ins: u32,
    /// SCSI commands received per CmdSN: a task retried with its own CmdSN
    /// is seen once, one re-issued as a new command shows under a new CmdSN.
    pub commands_by_cmd_sn: BTreeMap<u32, u32>,
    /// Logout Requests received, by reason code (§11.14.1).
    pub logouts: BTreeMap<u8, u32>,
    /// Tasks kept after their connection failed (ERL 2, §6.2.2).
    pub tasks_retained: u32,
    /// TASK REASSIGN requests carried out (§11.5.1), refused, and answered
    /// "task does not exist" (a command the target never received).
    pub reassigned: u32,
    pub reassign_refused: u32,
    pub reassign_no_such_task: u32,
    /// The DataSN each reassigned read resumed from (its ExpDataSN).
    pub resumed_from_data_sn: Vec<u32>,
    /// R2Ts sent for reassigned writes (recovery R2Ts, §7.2.2).
    pub recovery_r2ts: u32,
    /// Statuses sent again for reassigned tasks that had finished.
    pub statuses_resent: u32,
    /// Async Messages sent, by event code (§11.9.1).
    pub async_events: BTreeMap<u8, u32>,
    /// Rules of RFC 7143 the initiator broke, in words (empty when it behaved).
    pub violations: Vec<String>,
}

/// Session-wide CmdSN state (RFC 7143 §4.2.2.1): with several connections
/// commands may arrive out of order; ExpCmdSN is the first CmdSN not yet seen.
#[derive(Debug)]
pub(crate) struct CmdSnState {
    pub exp_cmd_sn: u32,
    /// CmdSNs received ahead of ExpCmdSN.
    pub ahead: BTreeSet<u32>,
}

/// One normal session (§5.3): its ISID, CmdSN window and connection count.
#[derive(Debug)]
pub(crate) struct SessionState {
    pub isid: [u8; 6],
    pub cmd_sn: Mutex<CmdSnState>,
    pub connections: Mutex<u16>,
    /// Negotiated on the leading login.
    pub erl: u8,
    pub time2retain: u16,
    pub time2wait: u16,
    /// ERL 2: tasks of failed connections, by ITT, and which failed CIDs
    /// were logged out or reinstated (so their tasks may move).
    pub recovery: Mutex<erl2::Retained>,
}

/// State every connection of the target shares.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub addr: SocketAddr,
    pub lun: Mutex<scsi::RamLun>,
    /// Next TSIH to hand out (RFC 7143 §11.12.6: never 0).
    pub next_tsih: Mutex<u16>,
    /// The initiator's mutual CHAP challenge seen on an earlier connection
    /// (`Fault::ChapReflect`): CHAP_I and CHAP_C as sent.
    pub captured_challenge: Mutex<Option<(String, String)>>,
    pub stats: Mutex<SimStats>,
    /// Normal sessions by TSIH, for connections joining them (MC/S).
    pub sessions: Mutex<HashMap<u16, Arc<SessionState>>>,
    /// A one-shot fault (cut, async event) has struck.
    pub fired: AtomicBool,
    /// Connections accepted so far.
    pub accepted: AtomicU32,
}

/// A running simulated target; stops when dropped.
pub struct SimTarget {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl SimTarget {
    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(cfg: SimConfig) -> std::io::Result<SimTarget> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Binds `listen` and starts serving (the `iscsi-sim-target` binary).
    pub async fn start_on(listen: SocketAddr, cfg: SimConfig) -> std::io::Result<SimTarget> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let lun = scsi::RamLun::new(cfg.lun_size, cfg.block_size);
        let shared = Arc::new(Shared {
            cfg,
            addr,
            lun: Mutex::new(lun),
            next_tsih: Mutex::new(1),
            captured_challenge: Mutex::new(None),
            stats: Mutex::new(SimStats::default()),
            sessions: Mutex::new(HashMap::new()),
            fired: AtomicBool::new(false),
            accepted: AtomicU32::new(0),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            // Aborting this task drops the list, which aborts every connection.
            let mut conns: Vec<AbortOnDrop> = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.retain(|h| !h.0.is_finished());
                conns.push(AbortOnDrop(tokio::spawn(conn::serve(s.clone(), stream))));
            }
        });
        Ok(SimTarget { addr, shared, accept })
    }

    /// The portal to log in to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The served target name.
    pub fn target_name(&self) -> &str {
        &self.shared.cfg.target_name
    }

    /// What the target has seen so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A copy of `len` bytes of the LUN at byte `offset` (for checks).
    pub fn lun_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        self.shared.lun.lock().map(|l| l.bytes(offset, len)).unwrap_or_default()
    }
}

impl Drop for SimTarget {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A connection task that ends with the target.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pause between bytes of [`Fault::SlowLoris`].
pub(crate) const SLOW_LORIS_STEP: Duration = Duration::from_millis(500);
