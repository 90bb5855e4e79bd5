//! Encoding and decoding of the 48-byte BHS of each opcode (RFC 7143 §11).
//!
//! Every BHS shares bytes 0..8 (§11.2.1): byte 0 holds the I bit and the
//! opcode, byte 1 the opcode-specific flags, byte 4 TotalAHSLength and
//! bytes 5..8 DataSegmentLength. Bytes 8..16 are the LUN or opcode-specific
//! fields, 16..20 the Initiator Task Tag; the rest is opcode-specific. All
//! multi-byte fields are big-endian (§11.1). Reserved bits and bytes are
//! written as zero and ignored when read.

use super::{
    AsyncMessage, BHS_LEN, Bhs, DataIn, DataOut, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse,
    MAX_DATA_SEGMENT_LENGTH, NopIn, NopOut, Opcode, PduError, R2t, RESERVED_TAG, Reject, ScsiCommand, ScsiResponse,
    SnackRequest, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse,
};

#[cfg(test)]
pub(crate) mod strategies;
#[cfg(test)]
mod tests;

/// RFC 7143 §11.2.1.1: I bit in byte 0 (immediate delivery).
const I_BIT: u8 = 0x40;
/// Final bit in byte 1 (§11.2.1.3 and per opcode).
const F_BIT: u8 = 0x80;
/// Continue bit of Login and Text PDUs (§11.10.2, §11.12.2).
const C_BIT: u8 = 0x40;
/// Login Transit bit (§11.12.1).
const T_BIT: u8 = 0x80;
/// SCSI Command Read and Write bits (§11.3.1).
const R_BIT: u8 = 0x40;
const W_BIT: u8 = 0x20;
/// Data-In Acknowledge bit (§11.7.2).
const A_BIT: u8 = 0x40;
/// Bidirectional overflow/underflow (o, u) and residual overflow/underflow
/// (O, U) bits of SCSI Response; O and U share their place in Data-In
/// (§11.4.5, §11.7.5).
const BIDI_O_BIT: u8 = 0x10;
const BIDI_U_BIT: u8 = 0x08;
const O_BIT: u8 = 0x04;
const U_BIT: u8 = 0x02;
/// Data-In Status bit (§11.7.4).
const S_BIT: u8 = 0x01;

/// A 48-byte header being filled in; offsets are compile-time constants
/// inside the array, so `put_*` helpers can use `get_mut` without a failure
/// path that matters.
struct Writer([u8; BHS_LEN]);

impl Writer {
    fn new(byte0: u8, byte1: u8, total_ahs_words: u8, data_segment_length: u32) -> Self {
        let mut w = Writer([0; BHS_LEN]);
        w.put_u8(0, byte0);
        w.put_u8(1, byte1);
        w.put_u8(4, total_ahs_words);
        // RFC 7143 §11.2.1.5: DataSegmentLength is 24 bits.
        let dsl = (data_segment_length & MAX_DATA_SEGMENT_LENGTH).to_be_bytes();
        w.put_bytes(5, dsl.get(1..).unwrap_or_default());
        w
    }

    fn put_bytes(&mut self, at: usize, v: &[u8]) {
        if let Some(dst) = self.0.get_mut(at..at + v.len()) {
            dst.copy_from_slice(v);
        }
    }

    fn put_u8(&mut self, at: usize, v: u8) {
        self.put_bytes(at, &[v]);
    }

    fn put_u16(&mut self, at: usize, v: u16) {
        self.put_bytes(at, &v.to_be_bytes());
    }

    fn put_u32(&mut self, at: usize, v: u32) {
        self.put_bytes(at, &v.to_be_bytes());
    }

    fn put_u64(&mut self, at: usize, v: u64) {
        self.put_bytes(at, &v.to_be_bytes());
    }
}

/// Reads fixed-offset fields of a 48-byte header. Every offset used below is
/// inside the array; a miss would read as zero rather than panic.
struct Reader<'a>(&'a [u8; BHS_LEN]);

impl Reader<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        self.0.get(at..at + N).and_then(|s| s.try_into().ok()).unwrap_or([0; N])
    }

    fn u8(&self, at: usize) -> u8 {
        self.0.get(at).copied().unwrap_or(0)
    }

    fn u16(&self, at: usize) -> u16 {
        u16::from_be_bytes(self.array(at))
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.array(at))
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.array(at))
    }

    fn flag(&self, bit: u8) -> bool {
        self.u8(1) & bit != 0
    }

    fn immediate(&self) -> bool {
        self.u8(0) & I_BIT != 0
    }
}

fn bit(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn immediate(set: bool, opcode: Opcode) -> u8 {
    bit(set, I_BIT) | opcode as u8
}

/// Login stage byte: T, C, CSG in bits 2-3, NSG in bits 0-1 (§11.12.1-4).
fn login_flags(transit: bool, continue_: bool, csg: u8, nsg: u8) -> u8 {
    bit(transit, T_BIT) | bit(continue_, C_BIT) | ((csg & 0x03) << 2) | (nsg & 0x03)
}

impl Bhs {
    /// Encodes this header with the given TotalAHSLength (in 4-byte words)
    /// and DataSegmentLength (must be at most 2^24-1; larger values are
    /// truncated to 24 bits by the caller's contract).
    ///
    /// Fields narrower than their Rust type (CSG/NSG 2 bits, ATTR 3 bits,
    /// SNACK Type 4 bits, TMF function and Logout reason 7 bits) are masked
    /// to their width.
    pub fn encode(&self, total_ahs_words: u8, data_segment_length: u32) -> [u8; BHS_LEN] {
        let op = self.opcode();
        let new = |byte0: u8, byte1: u8| Writer::new(byte0, byte1, total_ahs_words, data_segment_length);
        let w = match self {
            // §11.18
            Bhs::NopOut(h) => {
                let mut w = new(immediate(h.immediate, op), F_BIT);
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(24, h.cmd_sn);
                w.put_u32(28, h.exp_stat_sn);
                w
            }
            // §11.3
            Bhs::ScsiCommand(h) => {
                let flags = bit(h.final_bit, F_BIT) | bit(h.read, R_BIT) | bit(h.write, W_BIT) | (h.attr & 0x07);
                let mut w = new(immediate(h.immediate, op), flags);
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.expected_data_transfer_length);
                w.put_u32(24, h.cmd_sn);
                w.put_u32(28, h.exp_stat_sn);
                w.put_bytes(32, &h.cdb);
                w
            }
            // §11.5
            Bhs::TaskMgmtRequest(h) => {
                let mut w = new(immediate(h.immediate, op), F_BIT | (h.function & 0x7f));
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.referenced_task_tag);
                w.put_u32(24, h.cmd_sn);
                w.put_u32(28, h.exp_stat_sn);
                w.put_u32(32, h.ref_cmd_sn);
                w.put_u32(36, h.exp_data_sn);
                w
            }
            // §11.12: a Login Request always carries the I bit.
            Bhs::LoginRequest(h) => {
                let mut w = new(immediate(true, op), login_flags(h.transit, h.continue_, h.csg, h.nsg));
                w.put_u8(2, h.version_max);
                w.put_u8(3, h.version_min);
                w.put_bytes(8, &h.isid);
                w.put_u16(14, h.tsih);
                w.put_u32(16, h.itt);
                w.put_u16(20, h.cid);
                w.put_u32(24, h.cmd_sn);
                w.put_u32(28, h.exp_stat_sn);
                w
            }
            // §11.10
            Bhs::TextRequest(h) => {
                let flags = bit(h.final_bit, F_BIT) | bit(h.continue_, C_BIT);
                let mut w = new(immediate(h.immediate, op), flags);
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(24, h.cmd_sn);
                w.put_u32(28, h.exp_stat_sn);
                w
            }
            // §11.7
            Bhs::DataOut(h) => {
                let mut w = new(op as u8, bit(h.final_bit, F_BIT));
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(28, h.exp_stat_sn);
                w.put_u32(36, h.data_sn);
                w.put_u32(40, h.buffer_offset);
                w
            }
            // §11.14
            Bhs::LogoutRequest(h) => {
                let mut w = new(immediate(h.immediate, op), F_BIT | (h.reason & 0x7f));
                w.put_u32(16, h.itt);
                w.put_u16(20, h.cid);
                w.put_u32(24, h.cmd_sn);
                w.put_u32(28, h.exp_stat_sn);
                w
            }
            // §11.16
            Bhs::SnackRequest(h) => {
                let mut w = new(op as u8, F_BIT | (h.snack_type & 0x0f));
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(28, h.exp_stat_sn);
                w.put_u32(40, h.beg_run);
                w.put_u32(44, h.run_length);
                w
            }
            // §11.19
            Bhs::NopIn(h) => {
                let mut w = new(op as u8, F_BIT);
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w
            }
            // §11.4
            Bhs::ScsiResponse(h) => {
                let flags = F_BIT
                    | bit(h.bidi_overflow, BIDI_O_BIT)
                    | bit(h.bidi_underflow, BIDI_U_BIT)
                    | bit(h.overflow, O_BIT)
                    | bit(h.underflow, U_BIT);
                let mut w = new(op as u8, flags);
                w.put_u8(2, h.response);
                w.put_u8(3, h.status);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.snack_tag);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w.put_u32(36, h.exp_data_sn);
                w.put_u32(40, h.bidi_residual_count);
                w.put_u32(44, h.residual_count);
                w
            }
            // §11.6
            Bhs::TaskMgmtResponse(h) => {
                let mut w = new(op as u8, F_BIT);
                w.put_u8(2, h.response);
                w.put_u32(16, h.itt);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w
            }
            // §11.13
            Bhs::LoginResponse(h) => {
                let mut w = new(op as u8, login_flags(h.transit, h.continue_, h.csg, h.nsg));
                w.put_u8(2, h.version_max);
                w.put_u8(3, h.version_active);
                w.put_bytes(8, &h.isid);
                w.put_u16(14, h.tsih);
                w.put_u32(16, h.itt);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w.put_u8(36, h.status_class);
                w.put_u8(37, h.status_detail);
                w
            }
            // §11.11
            Bhs::TextResponse(h) => {
                let flags = bit(h.final_bit, F_BIT) | bit(h.continue_, C_BIT);
                let mut w = new(op as u8, flags);
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w
            }
            // §11.7: Status (byte 3) is only meaningful with S, reserved otherwise.
            Bhs::DataIn(h) => {
                let flags = bit(h.final_bit, F_BIT)
                    | bit(h.ack, A_BIT)
                    | bit(h.overflow, O_BIT)
                    | bit(h.underflow, U_BIT)
                    | bit(h.status_present, S_BIT);
                let mut w = new(op as u8, flags);
                if h.status_present {
                    w.put_u8(3, h.status);
                }
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w.put_u32(36, h.data_sn);
                w.put_u32(40, h.buffer_offset);
                w.put_u32(44, h.residual_count);
                w
            }
            // §11.15
            Bhs::LogoutResponse(h) => {
                let mut w = new(op as u8, F_BIT);
                w.put_u8(2, h.response);
                w.put_u32(16, h.itt);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w.put_u16(40, h.time2wait);
                w.put_u16(42, h.time2retain);
                w
            }
            // §11.8
            Bhs::R2t(h) => {
                let mut w = new(op as u8, F_BIT);
                w.put_u64(8, h.lun);
                w.put_u32(16, h.itt);
                w.put_u32(20, h.ttt);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w.put_u32(36, h.r2t_sn);
                w.put_u32(40, h.buffer_offset);
                w.put_u32(44, h.desired_data_transfer_length);
                w
            }
            // §11.9: the ITT field is always 0xffffffff.
            Bhs::AsyncMessage(h) => {
                let mut w = new(op as u8, F_BIT);
                w.put_u64(8, h.lun);
                w.put_u32(16, RESERVED_TAG);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w.put_u8(36, h.async_event);
                w.put_u8(37, h.async_vcode);
                w.put_u16(38, h.parameter1);
                w.put_u16(40, h.parameter2);
                w.put_u16(42, h.parameter3);
                w
            }
            // §11.17: the ITT field is always 0xffffffff.
            Bhs::Reject(h) => {
                let mut w = new(op as u8, F_BIT);
                w.put_u8(2, h.reason);
                w.put_u32(16, RESERVED_TAG);
                w.put_u32(24, h.stat_sn);
                w.put_u32(28, h.exp_cmd_sn);
                w.put_u32(32, h.max_cmd_sn);
                w.put_u32(36, h.data_sn_r2t_sn);
                w
            }
        };
        w.0
    }

    /// Decodes a header of any opcode. Lengths (bytes 4..8) are not part of
    /// the typed header; read them with [`super::peek_lengths`].
    ///
    /// Reserved bits and fields are ignored, and the I bit is only kept for
    /// the requests that define it (§11.2.1.1). Flag combinations the RFC
    /// forbids (for instance S without F in Data-In) are reported as they
    /// are, for the protocol layer to judge.
    pub fn decode(b: &[u8; BHS_LEN]) -> Result<Bhs, PduError> {
        let r = Reader(b);
        let byte0 = r.u8(0);
        let op = Opcode::from_u8(byte0).ok_or(PduError::UnknownOpcode(byte0 & 0x3f))?;
        let byte1 = r.u8(1);
        Ok(match op {
            Opcode::NopOut => Bhs::NopOut(NopOut {
                immediate: r.immediate(),
                lun: r.u64(8),
                itt: r.u32(16),
                ttt: r.u32(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::ScsiCommand => Bhs::ScsiCommand(ScsiCommand {
                immediate: r.immediate(),
                final_bit: r.flag(F_BIT),
                read: r.flag(R_BIT),
                write: r.flag(W_BIT),
                attr: byte1 & 0x07,
                lun: r.u64(8),
                itt: r.u32(16),
                expected_data_transfer_length: r.u32(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
                cdb: r.array(32),
            }),
            Opcode::TaskMgmtRequest => Bhs::TaskMgmtRequest(TaskMgmtRequest {
                immediate: r.immediate(),
                function: byte1 & 0x7f,
                lun: r.u64(8),
                itt: r.u32(16),
                referenced_task_tag: r.u32(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
                ref_cmd_sn: r.u32(32),
                exp_data_sn: r.u32(36),
            }),
            Opcode::LoginRequest => Bhs::LoginRequest(LoginRequest {
                transit: r.flag(T_BIT),
                continue_: r.flag(C_BIT),
                csg: (byte1 >> 2) & 0x03,
                nsg: byte1 & 0x03,
                version_max: r.u8(2),
                version_min: r.u8(3),
                isid: r.array(8),
                tsih: r.u16(14),
                itt: r.u32(16),
                cid: r.u16(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::TextRequest => Bhs::TextRequest(TextRequest {
                immediate: r.immediate(),
                final_bit: r.flag(F_BIT),
                continue_: r.flag(C_BIT),
                lun: r.u64(8),
                itt: r.u32(16),
                ttt: r.u32(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::DataOut => Bhs::DataOut(DataOut {
                final_bit: r.flag(F_BIT),
                lun: r.u64(8),
                itt: r.u32(16),
                ttt: r.u32(20),
                exp_stat_sn: r.u32(28),
                data_sn: r.u32(36),
                buffer_offset: r.u32(40),
            }),
            Opcode::LogoutRequest => Bhs::LogoutRequest(LogoutRequest {
                immediate: r.immediate(),
                reason: byte1 & 0x7f,
                itt: r.u32(16),
                cid: r.u16(20),
                cmd_sn: r.u32(24),
                exp_stat_sn: r.u32(28),
            }),
            Opcode::SnackRequest => Bhs::SnackRequest(SnackRequest {
                snack_type: byte1 & 0x0f,
                lun: r.u64(8),
                itt: r.u32(16),
                ttt: r.u32(20),
                exp_stat_sn: r.u32(28),
                beg_run: r.u32(40),
                run_length: r.u32(44),
            }),
            Opcode::NopIn => Bhs::NopIn(NopIn {
                lun: r.u64(8),
                itt: r.u32(16),
                ttt: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
            }),
            Opcode::ScsiResponse => Bhs::ScsiResponse(ScsiResponse {
                bidi_overflow: r.flag(BIDI_O_BIT),
                bidi_underflow: r.flag(BIDI_U_BIT),
                overflow: r.flag(O_BIT),
                underflow: r.flag(U_BIT),
                response: r.u8(2),
                status: r.u8(3),
                itt: r.u32(16),
                snack_tag: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                exp_data_sn: r.u32(36),
                bidi_residual_count: r.u32(40),
                residual_count: r.u32(44),
            }),
            Opcode::TaskMgmtResponse => Bhs::TaskMgmtResponse(TaskMgmtResponse {
                response: r.u8(2),
                itt: r.u32(16),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
            }),
            Opcode::LoginResponse => Bhs::LoginResponse(LoginResponse {
                transit: r.flag(T_BIT),
                continue_: r.flag(C_BIT),
                csg: (byte1 >> 2) & 0x03,
                nsg: byte1 & 0x03,
                version_max: r.u8(2),
                version_active: r.u8(3),
                isid: r.array(8),
                tsih: r.u16(14),
                itt: r.u32(16),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                status_class: r.u8(36),
                status_detail: r.u8(37),
            }),
            Opcode::TextResponse => Bhs::TextResponse(TextResponse {
                final_bit: r.flag(F_BIT),
                continue_: r.flag(C_BIT),
                lun: r.u64(8),
                itt: r.u32(16),
                ttt: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
            }),
            Opcode::DataIn => {
                let status_present = r.flag(S_BIT);
                Bhs::DataIn(DataIn {
                    final_bit: r.flag(F_BIT),
                    ack: r.flag(A_BIT),
                    overflow: r.flag(O_BIT),
                    underflow: r.flag(U_BIT),
                    status_present,
                    // §11.7.4: byte 3 is reserved unless S is set.
                    status: if status_present { r.u8(3) } else { 0 },
                    lun: r.u64(8),
                    itt: r.u32(16),
                    ttt: r.u32(20),
                    stat_sn: r.u32(24),
                    exp_cmd_sn: r.u32(28),
                    max_cmd_sn: r.u32(32),
                    data_sn: r.u32(36),
                    buffer_offset: r.u32(40),
                    residual_count: r.u32(44),
                })
            }
            Opcode::LogoutResponse => Bhs::LogoutResponse(LogoutResponse {
                response: r.u8(2),
                itt: r.u32(16),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                time2wait: r.u16(40),
                time2retain: r.u16(42),
            }),
            Opcode::R2t => Bhs::R2t(R2t {
                lun: r.u64(8),
                itt: r.u32(16),
                ttt: r.u32(20),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                r2t_sn: r.u32(36),
                buffer_offset: r.u32(40),
                desired_data_transfer_length: r.u32(44),
            }),
            Opcode::AsyncMessage => Bhs::AsyncMessage(AsyncMessage {
                lun: r.u64(8),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                async_event: r.u8(36),
                async_vcode: r.u8(37),
                parameter1: r.u16(38),
                parameter2: r.u16(40),
                parameter3: r.u16(42),
            }),
            Opcode::Reject => Bhs::Reject(Reject {
                reason: r.u8(2),
                stat_sn: r.u32(24),
                exp_cmd_sn: r.u32(28),
                max_cmd_sn: r.u32(32),
                data_sn_r2t_sn: r.u32(36),
            }),
        })
    }
}
