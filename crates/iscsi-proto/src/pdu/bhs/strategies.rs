//! proptest strategies for every BHS, limited to values the wire can carry:
//! narrow fields within their width and flag combinations that survive a
//! round trip (Data-In status only with S).

use proptest::prelude::*;

use crate::pdu::*;

fn w<const N: usize>() -> impl Strategy<Value = [u32; N]> {
    any::<[u32; N]>()
}

pub(crate) fn arb_bhs() -> impl Strategy<Value = Bhs> {
    prop_oneof![
        (any::<bool>(), any::<u64>(), w::<4>()).prop_map(|(immediate, lun, [itt, ttt, cmd_sn, exp_stat_sn])| {
            Bhs::from(NopOut { immediate, lun, itt, ttt, cmd_sn, exp_stat_sn })
        }),
        (any::<[bool; 4]>(), 0u8..8, any::<u64>(), w::<4>(), any::<[u8; 16]>()).prop_map(
            |([immediate, final_bit, read, write], attr, lun, [itt, edtl, cmd_sn, exp_stat_sn], cdb)| {
                Bhs::from(ScsiCommand {
                    immediate,
                    final_bit,
                    read,
                    write,
                    attr,
                    lun,
                    itt,
                    expected_data_transfer_length: edtl,
                    cmd_sn,
                    exp_stat_sn,
                    cdb,
                })
            }
        ),
        (any::<bool>(), 0u8..0x80, any::<u64>(), w::<6>()).prop_map(
            |(immediate, function, lun, [itt, rtt, cmd_sn, exp_stat_sn, ref_cmd_sn, exp_data_sn])| {
                Bhs::from(TaskMgmtRequest {
                    immediate,
                    function,
                    lun,
                    itt,
                    referenced_task_tag: rtt,
                    cmd_sn,
                    exp_stat_sn,
                    ref_cmd_sn,
                    exp_data_sn,
                })
            }
        ),
        (any::<[bool; 2]>(), 0u8..4, 0u8..4, any::<[u8; 2]>(), any::<[u8; 6]>(), any::<[u16; 2]>(), w::<3>()).prop_map(
            |(
                [transit, continue_],
                csg,
                nsg,
                [version_max, version_min],
                isid,
                [tsih, cid],
                [itt, cmd_sn, exp_stat_sn],
            )| {
                Bhs::from(LoginRequest {
                    transit,
                    continue_,
                    csg,
                    nsg,
                    version_max,
                    version_min,
                    isid,
                    tsih,
                    itt,
                    cid,
                    cmd_sn,
                    exp_stat_sn,
                })
            }
        ),
        (any::<[bool; 3]>(), any::<u64>(), w::<4>()).prop_map(
            |([immediate, final_bit, continue_], lun, [itt, ttt, cmd_sn, exp_stat_sn])| {
                Bhs::from(TextRequest { immediate, final_bit, continue_, lun, itt, ttt, cmd_sn, exp_stat_sn })
            }
        ),
        (any::<bool>(), any::<u64>(), w::<5>()).prop_map(
            |(final_bit, lun, [itt, ttt, exp_stat_sn, data_sn, buffer_offset])| {
                Bhs::from(DataOut { final_bit, lun, itt, ttt, exp_stat_sn, data_sn, buffer_offset })
            }
        ),
        (any::<bool>(), 0u8..0x80, any::<u16>(), w::<3>()).prop_map(
            |(immediate, reason, cid, [itt, cmd_sn, exp_stat_sn])| {
                Bhs::from(LogoutRequest { immediate, reason, itt, cid, cmd_sn, exp_stat_sn })
            }
        ),
        (0u8..16, any::<u64>(), w::<5>()).prop_map(
            |(snack_type, lun, [itt, ttt, exp_stat_sn, beg_run, run_length])| {
                Bhs::from(SnackRequest { snack_type, lun, itt, ttt, exp_stat_sn, beg_run, run_length })
            }
        ),
        (any::<u64>(), w::<5>()).prop_map(|(lun, [itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn])| {
            Bhs::from(NopIn { lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn })
        }),
        // o/u and O/U are each mutually exclusive (§11.4.5).
        (0u8..3, 0u8..3, any::<[u8; 2]>(), w::<8>()).prop_map(
            |(
                bidi,
                residual,
                [response, status],
                [itt, snack_tag, stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn, bidi_residual_count, residual_count],
            )| {
                Bhs::from(ScsiResponse {
                    bidi_overflow: bidi == 1,
                    bidi_underflow: bidi == 2,
                    overflow: residual == 1,
                    underflow: residual == 2,
                    response,
                    status,
                    itt,
                    snack_tag,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    exp_data_sn,
                    bidi_residual_count,
                    residual_count,
                })
            }
        ),
        (any::<u8>(), w::<4>()).prop_map(|(response, [itt, stat_sn, exp_cmd_sn, max_cmd_sn])| {
            Bhs::from(TaskMgmtResponse { response, itt, stat_sn, exp_cmd_sn, max_cmd_sn })
        }),
        (any::<[bool; 2]>(), 0u8..4, 0u8..4, any::<[u8; 4]>(), any::<[u8; 6]>(), any::<u16>(), w::<4>()).prop_map(
            |(
                [transit, continue_],
                csg,
                nsg,
                [version_max, version_active, status_class, status_detail],
                isid,
                tsih,
                [itt, stat_sn, exp_cmd_sn, max_cmd_sn],
            )| {
                Bhs::from(LoginResponse {
                    transit,
                    continue_,
                    csg,
                    nsg,
                    version_max,
                    version_active,
                    isid,
                    tsih,
                    itt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    status_class,
                    status_detail,
                })
            }
        ),
        (any::<[bool; 2]>(), any::<u64>(), w::<5>()).prop_map(
            |([final_bit, continue_], lun, [itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn])| {
                Bhs::from(TextResponse { final_bit, continue_, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn })
            }
        ),
        // S implies F (§11.7.1); status only with S; O and U exclusive.
        (any::<[bool; 3]>(), 0u8..3, any::<u8>(), any::<u64>(), w::<8>()).prop_map(
            |(
                [final_bit, ack, status_present],
                residual,
                status,
                lun,
                [itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, buffer_offset, residual_count],
            )| {
                Bhs::from(DataIn {
                    final_bit: final_bit || status_present,
                    ack,
                    overflow: residual == 1,
                    underflow: residual == 2,
                    status_present,
                    status: if status_present { status } else { 0 },
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    data_sn,
                    buffer_offset,
                    residual_count,
                })
            }
        ),
        (any::<u8>(), w::<4>(), any::<[u16; 2]>()).prop_map(
            |(response, [itt, stat_sn, exp_cmd_sn, max_cmd_sn], [time2wait, time2retain])| {
                Bhs::from(LogoutResponse { response, itt, stat_sn, exp_cmd_sn, max_cmd_sn, time2wait, time2retain })
            }
        ),
        (any::<u64>(), w::<8>()).prop_map(
            |(lun, [itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, r2t_sn, buffer_offset, ddtl])| {
                Bhs::from(R2t {
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    r2t_sn,
                    buffer_offset,
                    desired_data_transfer_length: ddtl,
                })
            }
        ),
        (any::<u64>(), w::<3>(), any::<[u8; 2]>(), any::<[u16; 3]>()).prop_map(
            |(
                lun,
                [stat_sn, exp_cmd_sn, max_cmd_sn],
                [async_event, async_vcode],
                [parameter1, parameter2, parameter3],
            )| {
                Bhs::from(AsyncMessage {
                    lun,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    async_event,
                    async_vcode,
                    parameter1,
                    parameter2,
                    parameter3,
                })
            }
        ),
        (any::<u8>(), w::<4>()).prop_map(|(reason, [stat_sn, exp_cmd_sn, max_cmd_sn, data_sn_r2t_sn])| {
            Bhs::from(Reject { reason, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn_r2t_sn })
        }),
    ]
}

/// A whole PDU: any BHS, an AHS of 0..=64 words, data of 0..1000 bytes.
pub(crate) fn arb_pdu() -> impl Strategy<Value = Pdu> {
    (
        arb_bhs(),
        (0usize..=64).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4)),
        proptest::collection::vec(any::<u8>(), 0..1000),
    )
        .prop_map(|(bhs, ahs, data)| Pdu { bhs, ahs: ahs.into(), data: data.into() })
}
