//! ErrorRecoveryLevel 2 offered to the real targets: whatever they agree
//! to (RFC 7143 §13.20, result function minimum), a cut connection of a
//! two-connection session loses nothing, and asking for a Logout for
//! recovery below ERL 2 is refused with a clear error.

mod common;

use std::time::Duration;

use common::lab::*;
use iscsi_initiator::session::ConnectionLogin;
use iscsi_initiator::{Error, PortalAddr, Session};

const BASE: u64 = 1_750_000;
const LEN: usize = 256 * 1024;
const JOBS: u64 = 6;

#[tokio::test]
async fn offering_erl2_to_the_lab_targets() {
    for lab in BOTH {
        let proxy = common::proxy::Proxy::start(format!("127.0.0.1:{}", lab.port).parse().unwrap()).await;
        let portal = PortalAddr { host: "127.0.0.1".into(), port: proxy.addr.port() };
        let mut cfg = config();
        cfg.proposal.error_recovery_level = 2;
        let s = Session::login(&portal, Some(&lab.iqn("ram1")), cfg).await.unwrap();
        s.connect_more(&portal, &ConnectionLogin::default()).await.unwrap();
        let erl = s.params().error_recovery_level;
        eprintln!("{}: ErrorRecoveryLevel offered 2, agreed {erl}", lab.name);
        assert!(erl <= 2);
        if erl < 2 {
            let id = s.connections()[1].id;
            let e = s.logout_connection_for_recovery(id).await.unwrap_err();
            assert!(matches!(e, Error::RecoveryLevelTooLow { negotiated } if negotiated == erl), "{e:?}");
        }
        let mut data = Vec::new();
        for i in 0..JOBS {
            let d = pattern(LEN, 9_000 + i);
            s.write_blocks(lab.lun, BASE + i * 1024, d.clone(), 512).await.unwrap();
            data.push(d);
        }
        // Reads in flight on both connections when the second one is cut.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..JOBS {
            let s = s.clone();
            set.spawn(async move { (i, s.read_blocks(lab.lun, BASE + i * 1024, (LEN / 512) as u32, 512).await) });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        proxy.cut(1);
        while let Some(r) = set.join_next().await {
            let (i, back) = r.unwrap();
            let back = back.unwrap_or_else(|e| panic!("{}: read {i}: {e}", lab.name));
            assert!(back == data[i as usize], "{}: read {i} differs", lab.name);
        }
        assert!(s.closed_reason().is_none());
        s.logout().await.unwrap();
    }
}
