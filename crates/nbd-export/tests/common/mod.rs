//! Test helpers: a memory-backed device, an in-process server on a Unix socket under a temp dir, and a
//! raw protocol client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nbd_export::{
    BlockDevice, BlockSizes, DeviceError, Errno, ExportConfig, Exporter, Features, Listener, ServeError, ServeStats,
    UnixSocketGuard, bind_unix_guarded,
};
use nbd_proto::option::{OPTION_REPLY_HEADER_LEN, OptionReplyHeader, encode_info_request, encode_option};
use nbd_proto::reply::{ChunkHeader, ReplyHeader};
use nbd_proto::{CommandFlags, CommandKind, OptionCode, OptionReplyType, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// A `Vec<u8>` disk with switches: fail every request with EIO, slow down some requests, count calls.
pub struct MemDevice {
    pub data: Mutex<Vec<u8>>,
    pub fail: AtomicBool,
    pub features: Features,
    pub block_sizes: BlockSizes,
    /// Reads at this offset sleep first (to force completion out of request order).
    pub slow_read_offset: AtomicU64,
    /// Writes sleep this long before storing (to test flush ordering).
    pub write_delay_ms: AtomicU64,
    /// Operations in completion order, e.g. "write 0", "flush".
    pub log: Mutex<Vec<String>>,
}

pub const NO_OFFSET: u64 = u64::MAX;

impl MemDevice {
    pub fn new(size: usize) -> Self {
        Self {
            data: Mutex::new(vec![0; size]),
            fail: AtomicBool::new(false),
            features: Features {
                read_only: false,
                flush: true,
                fua: true,
                trim: true,
                write_zeroes: true,
                multi_conn: true,
            },
            block_sizes: BlockSizes { min: 512, preferred: 4096, max: 1 << 21 },
            slow_read_offset: AtomicU64::new(NO_OFFSET),
            write_delay_ms: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }

    fn check(&self) -> Result<(), DeviceError> {
        if self.fail.load(Ordering::SeqCst) { Err(DeviceError::new(Errno::Eio, "injected failure")) } else { Ok(()) }
    }

    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }

    fn range(offset: u64, len: usize) -> std::ops::Range<usize> {
        offset as usize..offset as usize + len
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }

    fn block_sizes(&self) -> BlockSizes {
        self.block_sizes
    }

    fn features(&self) -> Features {
        self.features
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        if offset == self.slow_read_offset.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.check()?;
        let data = self.data.lock().unwrap();
        Ok(Bytes::copy_from_slice(&data[Self::range(offset, len as usize)]))
    }

    async fn write(&self, offset: u64, data: Bytes, _fua: bool) -> Result<(), DeviceError> {
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.check()?;
        self.data.lock().unwrap()[Self::range(offset, data.len())].copy_from_slice(&data);
        self.note(format!("write {offset}"));
        Ok(())
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.check()?;
        self.note("flush".into());
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        self.check()?;
        self.data.lock().unwrap()[Self::range(offset, len as usize)].fill(0);
        Ok(())
    }

    async fn write_zeroes(&self, offset: u64, len: u32, _may_trim: bool) -> Result<(), DeviceError> {
        self.check()?;
        self.data.lock().unwrap()[Self::range(offset, len as usize)].fill(0);
        Ok(())
    }
}

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("nbd-export-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An exporter serving a [`MemDevice`] on `<tempdir>/nbd.sock` in a background task.
pub struct TestServer {
    pub device: Arc<MemDevice>,
    pub exporter: Arc<Exporter<MemDevice>>,
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<ServeStats, ServeError>>>,
    _guard: UnixSocketGuard,
    pub dir: TempDir,
}

impl TestServer {
    pub fn start(device: MemDevice, config: ExportConfig) -> Self {
        Self::start_with(device, config, |e| e)
    }

    pub fn start_with(
        device: MemDevice,
        config: ExportConfig,
        tune: impl FnOnce(Exporter<MemDevice>) -> Exporter<MemDevice>,
    ) -> Self {
        let dir = TempDir::new("srv");
        let socket = dir.path().join("nbd.sock");
        let (listener, guard) = bind_unix_guarded(&socket).unwrap();
        let device = Arc::new(device);
        let exporter = Arc::new(tune(Exporter::new(Arc::clone(&device), config)));
        let (stop, stopped) = oneshot::channel::<()>();
        let e = Arc::clone(&exporter);
        let task = tokio::spawn(async move {
            e.serve(Listener::Unix(listener), async {
                let _ = stopped.await;
            })
            .await
        });
        Self { device, exporter, socket, stop: Some(stop), task: Some(task), _guard: guard, dir }
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> ServeStats {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap()
    }
}

pub fn default_config() -> ExportConfig {
    ExportConfig {
        name: "lun0".into(),
        description: "memory test device".into(),
        read_only: false,
        max_clients: 8,
        max_in_flight: 16,
    }
}

/// The path of a client tool, or a failure that says what to install: these tests never skip.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found in PATH: install libnbd-bin (nbdinfo, nbdcopy) and qemu-utils (qemu-img); scripts/test.sh does")
        })
}

/// Runs a tool off the runtime; returns (success, stdout, stderr).
pub async fn run(program: &str, args: &[String]) -> (bool, String, String) {
    let exe = tool(program);
    let args = args.to_vec();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(exe).args(&args).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A raw NBD client speaking the protocol by hand.
pub struct RawClient {
    pub stream: UnixStream,
}

impl RawClient {
    pub async fn connect(path: &Path) -> Self {
        Self { stream: UnixStream::connect(path).await.unwrap() }
    }

    /// Greeting, flags, optional structured replies, then `NBD_OPT_GO` on the default export.
    /// Returns (size, transmission flags).
    pub async fn handshake(path: &Path, structured: bool) -> (Self, u64, u16) {
        let mut c = Self::connect(path).await;
        let mut greeting = [0u8; 18];
        c.stream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        c.stream.write_all(&1u32.to_be_bytes()).await.unwrap();
        let mut out = bytes::BytesMut::new();
        if structured {
            encode_option(&mut out, OptionCode::STRUCTURED_REPLY, b"").unwrap();
        }
        encode_option(&mut out, OptionCode::GO, &encode_info_request(b"", &[]).unwrap()).unwrap();
        c.stream.write_all(&out).await.unwrap();
        let (mut size, mut flags) = (0, 0);
        loop {
            let (h, data) = c.option_reply().await;
            if h.option == OptionCode::STRUCTURED_REPLY {
                assert_eq!(h.reply_type, OptionReplyType::ACK);
                continue;
            }
            if h.reply_type == OptionReplyType::ACK {
                return (c, size, flags);
            }
            assert_eq!(h.reply_type, OptionReplyType::INFO);
            if data[..2] == [0, 0] {
                size = u64::from_be_bytes(data[2..10].try_into().unwrap());
                flags = u16::from_be_bytes(data[10..12].try_into().unwrap());
            }
        }
    }

    pub async fn option_reply(&mut self) -> (OptionReplyHeader, Vec<u8>) {
        let mut h = [0u8; OPTION_REPLY_HEADER_LEN];
        self.stream.read_exact(&mut h).await.unwrap();
        let h = OptionReplyHeader::decode(&h).unwrap();
        let mut data = vec![0; h.length as usize];
        self.stream.read_exact(&mut data).await.unwrap();
        (h, data)
    }

    pub async fn send(&mut self, kind: CommandKind, flags: CommandFlags, cookie: u64, offset: u64, length: u32) {
        let r = Request { flags, kind, cookie, offset, length };
        self.stream.write_all(&r.encode()).await.unwrap();
    }

    pub async fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) {
        self.send(CommandKind::Write, CommandFlags::EMPTY, cookie, offset, data.len() as u32).await;
        self.stream.write_all(data).await.unwrap();
    }

    /// A simple reply: (error, cookie), then `data_len` bytes if the error is zero.
    pub async fn simple_reply(&mut self, data_len: usize) -> (u32, u64, Vec<u8>) {
        let mut h = [0u8; 16];
        self.stream.read_exact(&mut h).await.unwrap();
        let (ReplyHeader::Simple(s), _) = ReplyHeader::decode(&h).unwrap() else { panic!("expected a simple reply") };
        let mut data = vec![0; if s.error == 0 { data_len } else { 0 }];
        self.stream.read_exact(&mut data).await.unwrap();
        (s.error, s.cookie, data)
    }

    /// Any reply header with its payload (structured) or nothing (simple).
    pub async fn chunk(&mut self) -> (ChunkHeader, Vec<u8>) {
        let mut h = [0u8; 20];
        self.stream.read_exact(&mut h[..4]).await.unwrap();
        assert_eq!(h[..4], 0x668e_33efu32.to_be_bytes(), "expected a structured chunk");
        self.stream.read_exact(&mut h[4..]).await.unwrap();
        let (ReplyHeader::Chunk(c), _) = ReplyHeader::decode(&h).unwrap() else { unreachable!() };
        let mut data = vec![0; c.length as usize];
        self.stream.read_exact(&mut data).await.unwrap();
        (c, data)
    }

    /// True when the server closed the connection (EOF) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}
