//! Hand-checked byte layouts against the figures of RFC 7143 §11, and
//! encode/decode round trips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use proptest::prelude::*;

use super::strategies::arb_bhs;
use crate::pdu::*;

/// Parses a 48-byte header written as hex with free spacing.
fn hex48(s: &str) -> [u8; BHS_LEN] {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).unwrap().try_into().unwrap()
}

/// Checks `bhs` encodes to `wire` and `wire` decodes to `bhs`.
fn check(bhs: impl Into<Bhs>, ahs_words: u8, dsl: u32, wire: &str) {
    let bhs = bhs.into();
    let wire = hex48(wire);
    assert_eq!(hex::encode(bhs.encode(ahs_words, dsl)), hex::encode(wire), "encode {bhs:?}");
    assert_eq!(Bhs::decode(&wire).unwrap(), bhs);
    assert_eq!(peek_lengths(&wire), Some((usize::from(ahs_words) * 4, dsl)));
}

#[test]
fn login_request_layout() {
    let h = LoginRequest {
        transit: true,
        continue_: false,
        csg: 1,
        nsg: 3,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
        tsih: 0x0102,
        itt: 0x1122_3344,
        cid: 0x0506,
        cmd_sn: 7,
        exp_stat_sn: 9,
    };
    // §11.12: byte 0 always carries I; T=0x80, CSG=1 in bits 2-3, NSG=3.
    check(
        h,
        0,
        256,
        "43 87 00 00  00 00 01 00  80 12 34 56  78 9a 01 02
         11 22 33 44  05 06 00 00  00 00 00 07  00 00 00 09
         00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00",
    );
    // C bit, no T, security stage.
    let h = LoginRequest { transit: false, continue_: true, csg: 0, nsg: 0, ..h };
    check(
        h,
        0,
        0,
        "43 40 00 00  00 00 00 00  80 12 34 56  78 9a 01 02
         11 22 33 44  05 06 00 00  00 00 00 07  00 00 00 09
         00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00",
    );
}

#[test]
fn login_response_layout() {
    let h = LoginResponse {
        transit: true,
        continue_: false,
        csg: 0,
        nsg: 1,
        version_max: 0,
        version_active: 0,
        isid: [0x40, 0, 0x01, 0x37, 0, 0],
        tsih: 0x00a5,
        itt: 1,
        stat_sn: 0x0000_1000,
        exp_cmd_sn: 2,
        max_cmd_sn: 33,
        status_class: 2,
        status_detail: 1,
    };
    check(
        h,
        0,
        0x01_0203,
        "23 81 00 00  00 01 02 03  40 00 01 37  00 00 00 a5
         00 00 00 01  00 00 00 00  00 00 10 00  00 00 00 02
         00 00 00 21  02 01 00 00  00 00 00 00  00 00 00 00",
    );
}

#[test]
fn scsi_command_layout() {
    // RFC 3720 appendix B.4: the iSCSI Read command used as CRC example.
    let read = ScsiCommand {
        immediate: false,
        final_bit: true,
        read: true,
        write: false,
        attr: task_attr::UNTAGGED,
        lun: 0,
        itt: 0x1400_0000,
        expected_data_transfer_length: 0x400,
        cmd_sn: 0x14,
        exp_stat_sn: 0x18,
        cdb: [0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0],
    };
    check(
        read,
        0,
        0,
        "01 c0 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         14 00 00 00  00 00 04 00  00 00 00 14  00 00 00 18
         28 00 00 00  00 00 00 00  02 00 00 00  00 00 00 00",
    );
    // An immediate WRITE(10) with SIMPLE attribute, LUN 2 (single level), AHS.
    let write = ScsiCommand {
        immediate: true,
        final_bit: true,
        read: false,
        write: true,
        attr: task_attr::SIMPLE,
        lun: 0x0002_0000_0000_0000,
        itt: 0xdead_beef,
        expected_data_transfer_length: 4096,
        cmd_sn: 0xffff_ffff,
        exp_stat_sn: 1,
        cdb: [0x2a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
    };
    check(
        write,
        2,
        4096,
        "41 a1 00 00  02 00 10 00  00 02 00 00  00 00 00 00
         de ad be ef  00 00 10 00  ff ff ff ff  00 00 00 01
         2a 00 00 00  10 00 00 00  08 00 00 00  00 00 00 00",
    );
}

#[test]
fn data_in_with_status_layout() {
    let h = DataIn {
        final_bit: true,
        ack: false,
        overflow: false,
        underflow: true,
        status_present: true,
        status: 0x02,
        lun: 0x0001_0000_0000_0000,
        itt: 0x0000_0010,
        ttt: RESERVED_TAG,
        stat_sn: 0x55,
        exp_cmd_sn: 0x66,
        max_cmd_sn: 0x77,
        data_sn: 3,
        buffer_offset: 0x0003_0000,
        residual_count: 0x200,
    };
    // F | U | S = 0x83, status in byte 3.
    check(
        h,
        0,
        0x1_0000,
        "25 83 00 02  00 01 00 00  00 01 00 00  00 00 00 00
         00 00 00 10  ff ff ff ff  00 00 00 55  00 00 00 66
         00 00 00 77  00 00 00 03  00 03 00 00  00 00 02 00",
    );
    // Without S the status byte is reserved and ignored; A and O bits.
    let h =
        DataIn { final_bit: false, ack: true, overflow: true, underflow: false, status_present: false, status: 0, ..h };
    let wire = "25 44 00 00  00 01 00 00  00 01 00 00  00 00 00 00
         00 00 00 10  ff ff ff ff  00 00 00 55  00 00 00 66
         00 00 00 77  00 00 00 03  00 03 00 00  00 00 02 00";
    check(h, 0, 0x1_0000, wire);
    let mut junk = hex48(wire);
    junk[3] = 0x99;
    assert_eq!(Bhs::decode(&junk).unwrap(), Bhs::DataIn(h));
}

#[test]
fn r2t_layout() {
    let h = R2t {
        lun: 0,
        itt: 0x0a0b_0c0d,
        ttt: 0x1000_0001,
        stat_sn: 5,
        exp_cmd_sn: 6,
        max_cmd_sn: 7,
        r2t_sn: 0,
        buffer_offset: 0x0001_0000,
        desired_data_transfer_length: 0x0004_0000,
    };
    check(
        h,
        0,
        0,
        "31 80 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         0a 0b 0c 0d  10 00 00 01  00 00 00 05  00 00 00 06
         00 00 00 07  00 00 00 00  00 01 00 00  00 04 00 00",
    );
}

#[test]
fn nop_in_and_nop_out_layout() {
    // A target ping: ITT reserved, TTT valid (§11.19.1).
    let ping =
        NopIn { lun: 0, itt: RESERVED_TAG, ttt: 0x0000_0abc, stat_sn: 0x100, exp_cmd_sn: 0x200, max_cmd_sn: 0x220 };
    check(
        ping,
        0,
        0,
        "20 80 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         ff ff ff ff  00 00 0a bc  00 00 01 00  00 00 02 00
         00 00 02 20  00 00 00 00  00 00 00 00  00 00 00 00",
    );
    // The answer: immediate NOP-Out echoing the TTT.
    let pong =
        NopOut { immediate: true, lun: 0, itt: RESERVED_TAG, ttt: 0x0000_0abc, cmd_sn: 0x200, exp_stat_sn: 0x101 };
    check(
        pong,
        0,
        0,
        "40 80 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         ff ff ff ff  00 00 0a bc  00 00 02 00  00 00 01 01
         00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00",
    );
}

#[test]
fn reject_layout() {
    let h = Reject { reason: 0x09, stat_sn: 0x10, exp_cmd_sn: 0x11, max_cmd_sn: 0x12, data_sn_r2t_sn: 0 };
    // §11.17: the ITT field is 0xffffffff; 48 bytes of data follow.
    check(
        h,
        0,
        48,
        "3f 80 09 00  00 00 00 30  00 00 00 00  00 00 00 00
         ff ff ff ff  00 00 00 00  00 00 00 10  00 00 00 11
         00 00 00 12  00 00 00 00  00 00 00 00  00 00 00 00",
    );
}

#[test]
fn request_and_response_families_layout() {
    check(
        TaskMgmtRequest {
            immediate: true,
            function: 1,
            lun: 0x0001_0000_0000_0000,
            itt: 0x20,
            referenced_task_tag: 0x10,
            cmd_sn: 0x30,
            exp_stat_sn: 0x40,
            ref_cmd_sn: 0x2f,
            exp_data_sn: 0,
        },
        0,
        0,
        "42 81 00 00  00 00 00 00  00 01 00 00  00 00 00 00
         00 00 00 20  00 00 00 10  00 00 00 30  00 00 00 40
         00 00 00 2f  00 00 00 00  00 00 00 00  00 00 00 00",
    );
    check(
        TaskMgmtResponse { response: 5, itt: 0x20, stat_sn: 1, exp_cmd_sn: 2, max_cmd_sn: 3 },
        0,
        0,
        "22 80 05 00  00 00 00 00  00 00 00 00  00 00 00 00
         00 00 00 20  00 00 00 00  00 00 00 01  00 00 00 02
         00 00 00 03  00 00 00 00  00 00 00 00  00 00 00 00",
    );
    check(
        TextRequest {
            immediate: false,
            final_bit: true,
            continue_: false,
            lun: 0,
            itt: 3,
            ttt: RESERVED_TAG,
            cmd_sn: 4,
            exp_stat_sn: 5,
        },
        0,
        16,
        "04 80 00 00  00 00 00 10  00 00 00 00  00 00 00 00
         00 00 00 03  ff ff ff ff  00 00 00 04  00 00 00 05
         00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00",
    );
    check(
        TextResponse {
            final_bit: false,
            continue_: true,
            lun: 0,
            itt: 3,
            ttt: 0x77,
            stat_sn: 6,
            exp_cmd_sn: 5,
            max_cmd_sn: 9,
        },
        0,
        8192,
        "24 40 00 00  00 00 20 00  00 00 00 00  00 00 00 00
         00 00 00 03  00 00 00 77  00 00 00 06  00 00 00 05
         00 00 00 09  00 00 00 00  00 00 00 00  00 00 00 00",
    );
    check(
        DataOut { final_bit: true, lun: 0, itt: 9, ttt: 0x1234, exp_stat_sn: 8, data_sn: 1, buffer_offset: 0x2000 },
        0,
        0x2000,
        "05 80 00 00  00 00 20 00  00 00 00 00  00 00 00 00
         00 00 00 09  00 00 12 34  00 00 00 00  00 00 00 08
         00 00 00 00  00 00 00 01  00 00 20 00  00 00 00 00",
    );
    check(
        LogoutRequest {
            immediate: true,
            reason: logout_reason::CLOSE_CONNECTION,
            itt: 0x44,
            cid: 2,
            cmd_sn: 0x50,
            exp_stat_sn: 0x60,
        },
        0,
        0,
        "46 81 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         00 00 00 44  00 02 00 00  00 00 00 50  00 00 00 60
         00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00",
    );
    check(
        LogoutResponse {
            response: 0,
            itt: 0x44,
            stat_sn: 0x61,
            exp_cmd_sn: 0x51,
            max_cmd_sn: 0x70,
            time2wait: 2,
            time2retain: 20,
        },
        0,
        0,
        "26 80 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         00 00 00 44  00 00 00 00  00 00 00 61  00 00 00 51
         00 00 00 70  00 00 00 00  00 02 00 14  00 00 00 00",
    );
    check(
        SnackRequest {
            snack_type: 1,
            lun: 0,
            itt: RESERVED_TAG,
            ttt: 0,
            exp_stat_sn: 0x80,
            beg_run: 0x7c,
            run_length: 4,
        },
        0,
        0,
        "10 81 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         ff ff ff ff  00 00 00 00  00 00 00 00  00 00 00 80
         00 00 00 00  00 00 00 00  00 00 00 7c  00 00 00 04",
    );
    check(
        ScsiResponse {
            bidi_overflow: true,
            bidi_underflow: false,
            overflow: false,
            underflow: true,
            response: 0,
            status: 0x02,
            itt: 0x10,
            snack_tag: 0,
            stat_sn: 0x21,
            exp_cmd_sn: 0x31,
            max_cmd_sn: 0x41,
            exp_data_sn: 4,
            bidi_residual_count: 0x10,
            residual_count: 0x200,
        },
        0,
        20,
        "21 92 00 02  00 00 00 14  00 00 00 00  00 00 00 00
         00 00 00 10  00 00 00 00  00 00 00 21  00 00 00 31
         00 00 00 41  00 00 00 04  00 00 00 10  00 00 02 00",
    );
    check(
        AsyncMessage {
            lun: 0,
            stat_sn: 0x90,
            exp_cmd_sn: 0x91,
            max_cmd_sn: 0x92,
            async_event: 1,
            async_vcode: 0,
            parameter1: 0,
            parameter2: 2,
            parameter3: 20,
        },
        0,
        0,
        "32 80 00 00  00 00 00 00  00 00 00 00  00 00 00 00
         ff ff ff ff  00 00 00 00  00 00 00 90  00 00 00 91
         00 00 00 92  01 00 00 00  00 02 00 14  00 00 00 00",
    );
}

#[test]
fn reserved_bits_ignored_on_decode() {
    // Reserved bit 0x80 of byte 0 and the I bit on a target PDU are ignored;
    // reserved bytes of a NOP-In are ignored.
    let mut b = NopIn::default().encode_bhs();
    b[0] |= 0xc0;
    b[2] = 0xff;
    b[40] = 0xff;
    assert_eq!(Bhs::decode(&b).unwrap(), Bhs::NopIn(NopIn::default()));
    // A Data-Out never carries I.
    let mut b = DataOut::default().encode_bhs();
    b[0] |= 0x40;
    assert_eq!(Bhs::decode(&b).unwrap(), Bhs::DataOut(DataOut::default()));
}

#[test]
fn narrow_fields_are_masked_on_encode() {
    let h = LoginRequest { csg: 0xff, nsg: 0xfd, ..Default::default() };
    assert_eq!(h.encode_bhs()[1], 0x0d);
    let h = SnackRequest { snack_type: 0xf3, ..Default::default() };
    assert_eq!(h.encode_bhs()[1], 0x83);
    let h = TaskMgmtRequest { function: 0xff, ..Default::default() };
    assert_eq!(h.encode_bhs()[1], 0xff);
    let h = ScsiCommand { attr: 0xff, ..Default::default() };
    assert_eq!(h.encode_bhs()[1], 0x07);
    // DataSegmentLength is 24 bits; TotalAHSLength is byte 4.
    let b = Bhs::from(NopOut::default()).encode(0xab, 0xffff_ffff);
    assert_eq!(&b[4..8], &[0xab, 0xff, 0xff, 0xff]);
}

#[test]
fn unknown_opcodes_are_refused() {
    for op in 0u8..=0xff {
        let mut b = [0u8; BHS_LEN];
        b[0] = op;
        match (Opcode::from_u8(op), Bhs::decode(&b)) {
            (Some(o), Ok(h)) => assert_eq!(h.opcode(), o),
            (None, Err(PduError::UnknownOpcode(v))) => assert_eq!(v, op & 0x3f),
            other => panic!("opcode 0x{op:02x}: {other:?}"),
        }
    }
}

trait EncodeBhs {
    fn encode_bhs(self) -> [u8; BHS_LEN];
}

impl<T: Into<Bhs>> EncodeBhs for T {
    fn encode_bhs(self) -> [u8; BHS_LEN] {
        self.into().encode(0, 0)
    }
}

proptest! {
    #[test]
    fn encode_decode_is_identity(bhs in arb_bhs(), ahs_words in any::<u8>(), dsl in 0u32..=MAX_DATA_SEGMENT_LENGTH) {
        let wire = bhs.encode(ahs_words, dsl);
        prop_assert_eq!(Bhs::decode(&wire).unwrap(), bhs.clone());
        prop_assert_eq!(wire[0] & 0x3f, bhs.opcode() as u8);
        prop_assert_eq!(peek_lengths(&wire), Some((usize::from(ahs_words) * 4, dsl)));
    }

    /// Any 48 bytes decode without panicking, and what decodes re-encodes to
    /// a header that decodes to the same value.
    #[test]
    fn decode_any_48_bytes(b in any::<[u8; 48]>()) {
        match Bhs::decode(&b) {
            Ok(h) => prop_assert_eq!(Bhs::decode(&h.encode(0, 0)).unwrap(), h),
            Err(e) => prop_assert_eq!(e, PduError::UnknownOpcode(b[0] & 0x3f)),
        }
    }
}

/// RFC 7143 §11.5 with function 8, TASK REASSIGN (§11.5.1): immediate,
/// ReferencedTaskTag the task's ITT, RefCmdSN and ExpDataSN set.
#[test]
fn task_reassign_layout() {
    let h = TaskMgmtRequest {
        immediate: true,
        function: tmf_function::TASK_REASSIGN,
        lun: 0x0001_0000_0000_0000,
        itt: 0x11,
        referenced_task_tag: 0x07,
        cmd_sn: 0x20,
        exp_stat_sn: 0x30,
        ref_cmd_sn: 0x1f,
        exp_data_sn: 2,
    };
    check(
        h,
        0,
        0,
        "42 88 0000 00 000000 0001000000000000
         00000011 00000007 00000020 00000030 0000001f 00000002 0000000000000000",
    );
}
