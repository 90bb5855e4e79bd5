//! A loopback TCP proxy between the initiator and a real target that can
//! stall or cut its connections on command, to inject network faults.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    stall: Arc<AtomicBool>,
    /// One cut switch per accepted connection, in accept order.
    cuts: Arc<Mutex<Vec<watch::Sender<bool>>>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (any free port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stall = Arc::new(AtomicBool::new(false));
        let cuts: Arc<Mutex<Vec<watch::Sender<bool>>>> = Arc::default();
        let (st, cs) = (stall.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let (tx, rx) = watch::channel(false);
                cs.lock().unwrap().push(tx);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, st.clone(), rx.clone()));
                tokio::spawn(pump(sr, cw, st.clone(), rx));
            }
        });
        Proxy { addr, stall, cuts }
    }

    /// Stops forwarding in both directions without closing anything: the
    /// peers see a silent network.
    pub fn stall(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.cuts.lock().unwrap().len()
    }

    /// Abruptly closes the `i`-th accepted connection (both sides), losing
    /// whatever was in flight through the proxy.
    pub fn cut(&self, i: usize) {
        if let Some(tx) = self.cuts.lock().unwrap().get(i) {
            let _ = tx.send(true);
        }
    }

    /// Closes every connection accepted so far.
    pub fn cut_all(&self) {
        for tx in self.cuts.lock().unwrap().iter() {
            let _ = tx.send(true);
        }
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    stall: Arc<AtomicBool>,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if *cut.borrow() {
            return;
        }
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
        tokio::select! {
            r = w.write_all(&buf[..n]) => if r.is_err() { return },
            _ = cut.changed() => return,
        }
    }
}
