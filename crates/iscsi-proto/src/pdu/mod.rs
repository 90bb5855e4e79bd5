//! iSCSI PDUs (RFC 7143 §11): the 48-byte Basic Header Segment of every
//! opcode, and the framing of a whole PDU (BHS, AHS, header digest, data
//! segment, padding, data digest).
//!
//! Field names follow the RFC. Sequence numbers are raw `u32` on the wire;
//! compare them only through [`crate::seq::Sn`].

mod bhs;
mod frame;

pub use frame::{FrameConfig, FrameHeader, PduDecoder, data_trailer, encode_header, encode_pdu, peek_lengths};

use bytes::Bytes;

/// Length of the Basic Header Segment (RFC 7143 §11.2.1).
pub const BHS_LEN: usize = 48;

/// Reserved "no tag" value for ITT and TTT (RFC 7143 §11.2.1.8).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Largest data segment the 24-bit DataSegmentLength field can express.
pub const MAX_DATA_SEGMENT_LENGTH: u32 = 0x00ff_ffff;

/// Opcodes (RFC 7143 §11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    NopOut = 0x00,
    ScsiCommand = 0x01,
    TaskMgmtRequest = 0x02,
    LoginRequest = 0x03,
    TextRequest = 0x04,
    DataOut = 0x05,
    LogoutRequest = 0x06,
    SnackRequest = 0x10,
    NopIn = 0x20,
    ScsiResponse = 0x21,
    TaskMgmtResponse = 0x22,
    LoginResponse = 0x23,
    TextResponse = 0x24,
    DataIn = 0x25,
    LogoutResponse = 0x26,
    R2t = 0x31,
    AsyncMessage = 0x32,
    Reject = 0x3f,
}

impl Opcode {
    /// Maps the low six bits of byte 0; `None` for an opcode RFC 7143 does not define.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v & 0x3f {
            0x00 => Self::NopOut,
            0x01 => Self::ScsiCommand,
            0x02 => Self::TaskMgmtRequest,
            0x03 => Self::LoginRequest,
            0x04 => Self::TextRequest,
            0x05 => Self::DataOut,
            0x06 => Self::LogoutRequest,
            0x10 => Self::SnackRequest,
            0x20 => Self::NopIn,
            0x21 => Self::ScsiResponse,
            0x22 => Self::TaskMgmtResponse,
            0x23 => Self::LoginResponse,
            0x24 => Self::TextResponse,
            0x25 => Self::DataIn,
            0x26 => Self::LogoutResponse,
            0x31 => Self::R2t,
            0x32 => Self::AsyncMessage,
            0x3f => Self::Reject,
            _ => return None,
        })
    }
}

/// Errors from decoding PDUs. Each names the field and the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    #[error("opcode 0x{0:02x} is sent by initiators, not targets")]
    UnexpectedOpcode(u8),
    #[error("data segment of {len} bytes exceeds the negotiated limit of {limit}")]
    DataSegmentTooLong { len: u32, limit: u32 },
    #[error("additional header segments of {len} bytes exceed the limit of {limit}")]
    AhsTooLong { len: usize, limit: usize },
    #[error("header digest mismatch: received 0x{received:08x}, computed 0x{computed:08x}")]
    HeaderDigest { received: u32, computed: u32 },
    #[error("data digest mismatch: received 0x{received:08x}, computed 0x{computed:08x}")]
    DataDigest { received: u32, computed: u32 },
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: &'static str },
}

/// A whole PDU: the typed BHS plus its AHS and data segment (padding and
/// digests are stripped on decode and added on encode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub bhs: Bhs,
    /// Additional Header Segments, raw (a multiple of 4 bytes).
    pub ahs: Bytes,
    /// The data segment without padding.
    pub data: Bytes,
}

impl Pdu {
    /// A PDU with no AHS.
    pub fn new(bhs: impl Into<Bhs>, data: Bytes) -> Self {
        Self { bhs: bhs.into(), ahs: Bytes::new(), data }
    }
}

/// The Basic Header Segment of every opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bhs {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    SnackRequest(SnackRequest),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

macro_rules! bhs_from {
    ($($t:ident),*) => {
        $(impl From<$t> for Bhs { fn from(v: $t) -> Self { Bhs::$t(v) } })*
    };
}
bhs_from!(
    NopOut,
    ScsiCommand,
    TaskMgmtRequest,
    LoginRequest,
    TextRequest,
    DataOut,
    LogoutRequest,
    SnackRequest,
    NopIn,
    ScsiResponse,
    TaskMgmtResponse,
    LoginResponse,
    TextResponse,
    DataIn,
    LogoutResponse,
    R2t,
    AsyncMessage,
    Reject
);

/// NOP-Out (RFC 7143 §11.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Task attributes (RFC 7143 §11.3.1, ATTR field).
pub mod task_attr {
    pub const UNTAGGED: u8 = 0;
    pub const SIMPLE: u8 = 1;
    pub const ORDERED: u8 = 2;
    pub const HEAD_OF_QUEUE: u8 = 3;
    pub const ACA: u8 = 4;
}

/// SCSI Command (RFC 7143 §11.3). CDBs longer than 16 bytes would need an
/// Extended CDB AHS; this initiator never builds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out follows this PDU.
    pub final_bit: bool,
    pub read: bool,
    pub write: bool,
    /// ATTR, see [`task_attr`].
    pub attr: u8,
    pub lun: u64,
    pub itt: u32,
    pub expected_data_transfer_length: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub cdb: [u8; 16],
}

/// Task Management Function Request (RFC 7143 §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    /// Function code (1 ABORT TASK ... 8 TASK REASSIGN, see [`tmf_function`]), §11.5.1.
    pub function: u8,
    pub lun: u64,
    pub itt: u32,
    pub referenced_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Login Request (RFC 7143 §11.12). Always sent with the I bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginRequest {
    /// T: ready to move to `nsg`.
    pub transit: bool,
    /// C: the text is continued in the next PDU.
    pub continue_: bool,
    /// Current stage: 0 security, 1 operational, 3 full feature.
    pub csg: u8,
    /// Next stage (meaningful only with T).
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// Text Request (RFC 7143 §11.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_bit: bool,
    pub continue_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SCSI Data-Out (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataOut {
    pub final_bit: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

/// Task management function codes (RFC 7143 §11.5.1; 9-12 from RFC 7144 §4.1).
pub mod tmf_function {
    pub const ABORT_TASK: u8 = 1;
    pub const ABORT_TASK_SET: u8 = 2;
    pub const CLEAR_ACA: u8 = 3;
    pub const CLEAR_TASK_SET: u8 = 4;
    pub const LOGICAL_UNIT_RESET: u8 = 5;
    pub const TARGET_WARM_RESET: u8 = 6;
    pub const TARGET_COLD_RESET: u8 = 7;
    /// Moves a task to the connection the request arrives on (ERL 2).
    pub const TASK_REASSIGN: u8 = 8;
    pub const QUERY_TASK: u8 = 9;
    pub const QUERY_TASK_SET: u8 = 10;
    pub const I_T_NEXUS_RESET: u8 = 11;
    pub const QUERY_ASYNC_EVENT: u8 = 12;
}

/// Task Management Function Response codes (RFC 7143 §11.6.1).
pub mod tmf_response {
    pub const FUNCTION_COMPLETE: u8 = 0;
    pub const TASK_DOES_NOT_EXIST: u8 = 1;
    pub const LUN_DOES_NOT_EXIST: u8 = 2;
    pub const TASK_STILL_ALLEGIANT: u8 = 3;
    pub const REASSIGNMENT_NOT_SUPPORTED: u8 = 4;
    pub const FUNCTION_NOT_SUPPORTED: u8 = 5;
    pub const AUTHORIZATION_FAILED: u8 = 6;
    /// RFC 7144 §4.2: a query function found what it asked about.
    pub const FUNCTION_SUCCEEDED: u8 = 7;
    pub const FUNCTION_REJECTED: u8 = 255;
}

/// Logout Response codes (RFC 7143 §11.15.1).
pub mod logout_response {
    pub const SUCCESS: u8 = 0;
    pub const CID_NOT_FOUND: u8 = 1;
    pub const RECOVERY_NOT_SUPPORTED: u8 = 2;
    pub const CLEANUP_FAILED: u8 = 3;
}

/// Logout reason codes (RFC 7143 §11.14.1).
pub mod logout_reason {
    pub const CLOSE_SESSION: u8 = 0;
    pub const CLOSE_CONNECTION: u8 = 1;
    pub const REMOVE_CONNECTION_FOR_RECOVERY: u8 = 2;
}

/// Logout Request (RFC 7143 §11.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SNACK Request (RFC 7143 §11.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnackRequest {
    /// 0 Data/R2T, 1 Status, 2 DataACK, 3 R-Data.
    pub snack_type: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

/// NOP-In (RFC 7143 §11.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NopIn {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Response (RFC 7143 §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScsiResponse {
    pub bidi_overflow: bool,
    pub bidi_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// iSCSI response: 0 completed at target, 1 target failure.
    pub response: u8,
    /// SCSI status byte.
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_residual_count: u32,
    pub residual_count: u32,
}

/// Task Management Function Response (RFC 7143 §11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskMgmtResponse {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// Login Response (RFC 7143 §11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginResponse {
    pub transit: bool,
    pub continue_: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

/// Text Response (RFC 7143 §11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextResponse {
    pub final_bit: bool,
    pub continue_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// SCSI Data-In (RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataIn {
    pub final_bit: bool,
    /// A: the target asks for a DataACK SNACK (ERL > 0 only).
    pub ack: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// S: this PDU carries the command's status (and `final_bit` is set).
    pub status_present: bool,
    pub status: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub residual_count: u32,
}

/// Logout Response (RFC 7143 §11.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogoutResponse {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

/// Ready To Transfer (RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_data_transfer_length: u32,
}

/// Asynchronous Message (RFC 7143 §11.9). Its ITT is always 0xffffffff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AsyncMessage {
    pub lun: u64,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// 0 SCSI event, 1 logout request, 2 connection drop, 3 session drop,
    /// 4 renegotiation request, 255 vendor specific (§11.9.1).
    pub async_event: u8,
    pub async_vcode: u8,
    pub parameter1: u16,
    pub parameter2: u16,
    pub parameter3: u16,
}

/// Reject (RFC 7143 §11.17). The data segment holds the rejected header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reject {
    pub reason: u8,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn_r2t_sn: u32,
}

impl Bhs {
    /// The opcode this header encodes as.
    pub fn opcode(&self) -> Opcode {
        match self {
            Bhs::NopOut(_) => Opcode::NopOut,
            Bhs::ScsiCommand(_) => Opcode::ScsiCommand,
            Bhs::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Bhs::LoginRequest(_) => Opcode::LoginRequest,
            Bhs::TextRequest(_) => Opcode::TextRequest,
            Bhs::DataOut(_) => Opcode::DataOut,
            Bhs::LogoutRequest(_) => Opcode::LogoutRequest,
            Bhs::SnackRequest(_) => Opcode::SnackRequest,
            Bhs::NopIn(_) => Opcode::NopIn,
            Bhs::ScsiResponse(_) => Opcode::ScsiResponse,
            Bhs::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Bhs::LoginResponse(_) => Opcode::LoginResponse,
            Bhs::TextResponse(_) => Opcode::TextResponse,
            Bhs::DataIn(_) => Opcode::DataIn,
            Bhs::LogoutResponse(_) => Opcode::LogoutResponse,
            Bhs::R2t(_) => Opcode::R2t,
            Bhs::AsyncMessage(_) => Opcode::AsyncMessage,
            Bhs::Reject(_) => Opcode::Reject,
        }
    }

    /// Initiator Task Tag (0xffffffff for PDUs that carry none).
    pub fn itt(&self) -> u32 {
        match self {
            Bhs::NopOut(h) => h.itt,
            Bhs::ScsiCommand(h) => h.itt,
            Bhs::TaskMgmtRequest(h) => h.itt,
            Bhs::LoginRequest(h) => h.itt,
            Bhs::TextRequest(h) => h.itt,
            Bhs::DataOut(h) => h.itt,
            Bhs::LogoutRequest(h) => h.itt,
            Bhs::SnackRequest(h) => h.itt,
            Bhs::NopIn(h) => h.itt,
            Bhs::ScsiResponse(h) => h.itt,
            Bhs::TaskMgmtResponse(h) => h.itt,
            Bhs::LoginResponse(h) => h.itt,
            Bhs::TextResponse(h) => h.itt,
            Bhs::DataIn(h) => h.itt,
            Bhs::LogoutResponse(h) => h.itt,
            Bhs::R2t(h) => h.itt,
            Bhs::AsyncMessage(_) | Bhs::Reject(_) => RESERVED_TAG,
        }
    }

    /// `(StatSN, ExpCmdSN, MaxCmdSN)` of a target PDU that carries them.
    /// Data-In without the S bit carries no valid StatSN (§11.7.4), so its
    /// StatSN is reported as `None` but its window fields are still given.
    pub fn target_sequence(&self) -> Option<(Option<u32>, u32, u32)> {
        Some(match self {
            Bhs::NopIn(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::ScsiResponse(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::TaskMgmtResponse(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::LoginResponse(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::TextResponse(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::DataIn(h) => (h.status_present.then_some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::LogoutResponse(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::R2t(h) => (None, h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::AsyncMessage(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            Bhs::Reject(h) => (Some(h.stat_sn), h.exp_cmd_sn, h.max_cmd_sn),
            _ => return None,
        })
    }
}
