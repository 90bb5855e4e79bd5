//! A loopback TCP proxy between the initiator and a real target that can
//! stall or cut its connections on command, to inject network faults.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    stall: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (any free port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stall = Arc::new(AtomicBool::new(false));
        let (cut, cut_rx) = watch::channel(0u64);
        let st = stall.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, st.clone(), cut_rx.clone()));
                tokio::spawn(pump(sr, cw, st.clone(), cut_rx.clone()));
            }
        });
        Proxy { addr, stall, cut }
    }

    /// Stops forwarding in both directions without closing anything: the
    /// peers see a silent network.
    pub fn stall(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }

    /// Closes every connection made so far.
    pub fn cut_all(&self) {
        self.cut.send_modify(|g| *g += 1);
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    stall: Arc<AtomicBool>,
    mut cut: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        while stall.load(Ordering::SeqCst) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = cut.changed() => return,
            }
        }
        let n = tokio::select! {
            r = r.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = cut.changed() => return,
        };
        while stall.load(Ordering::SeqCst) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = cut.changed() => return,
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
