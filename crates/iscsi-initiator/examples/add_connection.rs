//! Grows a live session by one connection, as Windows'
//! `MSIscsiInitiator_SessionClass.AddConnection` does, while I/O runs.
//!
//! `cargo run -p iscsi-initiator --example add_connection -- 127.0.0.1:3261 iqn.2024-01.lab.istgt:ram1 0`

use bytes::Bytes;
use iscsi_initiator::model::{ISCSI_ANY_INITIATOR_PORT, LoadBalancePolicy, LoginOptions, Portal, SecurityFlags};
use iscsi_initiator::{PortalAddr, Session, SessionConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let portal = PortalAddr::parse(&args.next().unwrap_or_else(|| "127.0.0.1:3261".into()))?;
    let target = args.next().unwrap_or_else(|| "iqn.2024-01.lab.istgt:ram1".into());
    let lun: u64 = args.next().unwrap_or_else(|| "0".into()).parse()?;

    let session = Session::login(&portal, Some(&target), SessionConfig::new("iqn.2026-11.rs.rsiscsi:example")).await?;
    println!("session {} (TSIH {}), MaxConnections {}", session.id(), session.tsih(), session.params().max_connections);

    // Keep writing and reading back while the session grows.
    let io = {
        let s = session.clone();
        tokio::spawn(async move {
            for i in 0..200u64 {
                let data = Bytes::from(vec![(i % 251) as u8; 64 * 1024]);
                s.write_blocks(lun, 4096 + i * 128, data.clone(), 512).await?;
                assert_eq!(s.read_blocks(lun, 4096 + i * 128, 128, 512).await?, data);
            }
            Ok::<_, iscsi_initiator::Error>(())
        })
    };
    let wmi_portal = Portal::new(portal.host.clone(), portal.port);
    for _ in 0..3 {
        let id = session
            .add_connection(ISCSI_ANY_INITIATOR_PORT, &wmi_portal, SecurityFlags(0), &LoginOptions::default(), &[])
            .await?;
        println!("added connection {id}");
    }
    session.set_load_balance_policy(LoadBalancePolicy::LeastQueueDepth);
    io.await??;
    for c in session.connections() {
        println!(
            "  cid {} {} {} -> {}: {} commands, {} bytes in, {} bytes out",
            c.cid,
            c.id,
            c.local_address.map(|a| a.to_string()).unwrap_or_default(),
            c.remote_address.map(|a| a.to_string()).unwrap_or_default(),
            c.counters.commands,
            c.counters.bytes_in,
            c.counters.bytes_out
        );
    }
    let last = session.connections().last().map(|c| c.id);
    if let Some(id) = last {
        session.remove_connection(id).await?;
        println!("removed connection {id}; {} left", session.connections().len());
    }
    session.logout().await?;
    Ok(())
}
