//! The Windows-shaped session model against real targets:
//! `add_connection(initiator_port, portal, security_flags, login_options,
//! key)`, `remove_connection`, `send_scsi_command`, with ISDSC codes.

mod common;

use common::lab::*;
use iscsi_initiator::model::options::*;
use iscsi_initiator::model::*;
use iscsi_initiator::session::ScsiData;
use iscsi_initiator::{PortalAddr, Session};
use iscsi_proto::chap::Secret;

fn portal(lab: &Lab) -> Portal {
    Portal::new("127.0.0.1", lab.port)
}

fn loopback_index() -> u32 {
    if_addrs::get_if_addrs()
        .unwrap()
        .into_iter()
        .find(|i| i.ip().is_loopback() && i.ip().is_ipv4())
        .and_then(|i| i.index)
        .unwrap()
}

#[tokio::test]
async fn add_connection_grows_a_live_session_and_ids_print_as_windows_does() {
    let s = Session::login(&ISTGT.portal(), Some(&ISTGT.iqn("ram1")), config()).await.unwrap();
    let id = s
        .add_connection(ISCSI_ANY_INITIATOR_PORT, &portal(&ISTGT), SecurityFlags(0), &LoginOptions::default(), &[])
        .await
        .unwrap();
    let text = id.to_string();
    assert!(text.split_once('-').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.starts_with('0')), "{text}");
    assert_eq!(text.parse::<UniqueConnectionId>().unwrap(), id);
    // Bound to the loopback interface, with digests asked for this connection only.
    let opts = LoginOptions::default().with_header_digest(DigestType::Crc32c).with_data_digest(DigestType::Crc32c);
    let id2 = s.add_connection(loopback_index(), &portal(&ISTGT), SecurityFlags(0), &opts, &[]).await.unwrap();
    let conns = s.connections();
    assert_eq!(conns.len(), 3);
    let c2 = conns.iter().find(|c| c.id == id2).unwrap();
    assert_eq!(c2.header_digest, iscsi_proto::negotiation::Digest::Crc32c);
    assert!(c2.local_address.unwrap().ip().is_loopback());
    let err =
        s.add_connection(999_999, &portal(&ISTGT), SecurityFlags(0), &LoginOptions::default(), &[]).await.unwrap_err();
    assert_eq!(err.code, IsdscCode::InvalidPortNumber, "{err}");
    // I/O over all three.
    for i in 0..30u64 {
        let d = pattern(8192, 40_000 + i);
        s.write_blocks(ISTGT.lun, 1_500_000 + i * 16, d.clone(), 512).await.unwrap();
        assert!(s.read_blocks(ISTGT.lun, 1_500_000 + i * 16, 16, 512).await.unwrap() == d);
    }
    assert!(s.connections().iter().all(|c| c.counters.commands > 0));
    s.remove_connection(id).await.unwrap();
    s.remove_connection(id2).await.unwrap();
    let leading = s.connections()[0].id;
    assert_eq!(s.remove_connection(leading).await.unwrap_err().code, IsdscCode::CantRemoveLastConnection);
    s.logout().await.unwrap();
}

#[tokio::test]
async fn ipsec_requests_fail_without_connecting_in_clear_text() {
    let proxy = common::proxy::Proxy::start("127.0.0.1:3261".parse().unwrap()).await;
    let p = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
    let s = Session::login(&p, Some(&ISTGT.iqn("ram1")), config()).await.unwrap();
    let before = proxy.accepted();
    let wmi_portal = Portal::new("127.0.0.1", proxy.addr.port());
    let ipsec = SecurityFlags(
        ISCSI_SECURITY_FLAG_VALID | ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED | ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED,
    );
    let err = s
        .add_connection(ISCSI_ANY_INITIATOR_PORT, &wmi_portal, ipsec, &LoginOptions::default(), b"psk")
        .await
        .unwrap_err();
    assert_eq!(err.code, IsdscCode::IpsecNotSupportedOnOs, "{err}");
    let require = LoginOptions::default().with_login_flags(LoginFlags::REQUIRE_IPSEC);
    let err =
        s.add_connection(ISCSI_ANY_INITIATOR_PORT, &wmi_portal, SecurityFlags(0), &require, &[]).await.unwrap_err();
    assert_eq!(err.code, IsdscCode::IpsecNotSupportedOnOs, "{err}");
    let both = SecurityFlags(
        ISCSI_SECURITY_FLAG_VALID
            | ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED
            | ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED
            | ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED,
    );
    let err =
        s.add_connection(ISCSI_ANY_INITIATOR_PORT, &wmi_portal, both, &LoginOptions::default(), &[]).await.unwrap_err();
    assert_eq!(err.code, IsdscCode::InvalidParameter, "{err}");
    // VALID clear: the other bits are ignored, as Windows does.
    s.add_connection(
        ISCSI_ANY_INITIATOR_PORT,
        &wmi_portal,
        SecurityFlags(ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED),
        &LoginOptions::default(),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(proxy.accepted(), before + 1, "only the last request may have connected");
    s.logout().await.unwrap();
}

#[tokio::test]
async fn chap_credentials_come_from_the_login_options() {
    for lab in BOTH {
        let mut cfg = config();
        cfg.chap = Some(chap(CHAP_USER, CHAP_SECRET));
        let s = Session::login(&lab.portal(), Some(&lab.iqn("chap")), cfg).await.unwrap();
        let good = LoginOptions::default()
            .with_auth_type(AuthType::Chap)
            .with_username(CHAP_USER)
            .with_password(Secret::new(CHAP_SECRET.as_bytes().to_vec()));
        s.add_connection(ISCSI_ANY_INITIATOR_PORT, &portal(&lab), SecurityFlags(0), &good, &[]).await.unwrap();
        let wrong = good.clone().with_password(Secret::new(b"wrongsecret1".to_vec()));
        let err =
            s.add_connection(ISCSI_ANY_INITIATOR_PORT, &portal(&lab), SecurityFlags(0), &wrong, &[]).await.unwrap_err();
        assert_eq!(err.code, IsdscCode::AuthenticationFailure, "{}: {err}", lab.name);
        assert!(!err.to_string().contains("wrongsecret1"));
        let short = good.clone().with_password(Secret::new(b"short".to_vec()));
        let err =
            s.add_connection(ISCSI_ANY_INITIATOR_PORT, &portal(&lab), SecurityFlags(0), &short, &[]).await.unwrap_err();
        assert_eq!(err.code, IsdscCode::InvalidChapSecret, "{}: {err}", lab.name);
        assert_eq!(s.connections().len(), 2);
        s.logout().await.unwrap();
    }
}

#[tokio::test]
async fn connection_limits_give_their_own_codes() {
    // istgt enforces MaxConnections 8.
    let s = Session::login(&ISTGT.portal(), Some(&ISTGT.iqn("ram1")), config()).await.unwrap();
    for _ in 1..8 {
        s.add_connection(ISCSI_ANY_INITIATOR_PORT, &portal(&ISTGT), SecurityFlags(0), &LoginOptions::default(), &[])
            .await
            .unwrap();
    }
    let err = s
        .add_connection(ISCSI_ANY_INITIATOR_PORT, &portal(&ISTGT), SecurityFlags(0), &LoginOptions::default(), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, IsdscCode::TooManyConnections, "{err}");
    assert!(err.to_string().contains('8'), "the message names the limit: {err}");
    s.logout().await.unwrap();
    // tgt's "noimm" target keeps its default MaxConnections=1.
    let s = Session::login(&TGT.portal(), Some(&TGT.iqn("noimm")), config()).await.unwrap();
    let err = s
        .add_connection(ISCSI_ANY_INITIATOR_PORT, &portal(&TGT), SecurityFlags(0), &LoginOptions::default(), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, IsdscCode::RequestNotSupported, "{err}");
    s.logout().await.unwrap();
}

#[tokio::test]
async fn send_scsi_command_returns_status_sense_and_data() {
    let s = Session::login(&TGT.portal(), Some(&TGT.iqn("ram1")), config()).await.unwrap();
    s.test_unit_ready(TGT.lun).await.unwrap();
    let r = s.send_scsi_command(TGT.lun, &[0x12, 0, 0, 0, 96, 0], ScsiData::In(96)).await.unwrap();
    assert_eq!(r.status, 0);
    assert_eq!(&r.data[8..11], b"IET");
    // READ(10) past the end: CHECK CONDITION with ILLEGAL REQUEST sense.
    let r =
        s.send_scsi_command(TGT.lun, &[0x28, 0, 0xff, 0xff, 0xff, 0xf0, 0, 0, 1, 0], ScsiData::In(512)).await.unwrap();
    assert_eq!(r.status, 2);
    assert_eq!(r.sense.get(2).map(|k| k & 0x0f), Some(0x05), "{:?}", r.sense);
    let err = s.send_scsi_command(TGT.lun, &[0u8; 17], ScsiData::None).await.unwrap_err();
    assert_eq!(err.code, IsdscCode::InvalidParameter);
    s.logout().await.unwrap();
}
