//! The server against the real NBD clients: `nbdinfo` and `nbdcopy` (libnbd-bin) and `qemu-img`
//! (qemu-utils). A missing tool fails the test with what to install; nothing is skipped.

mod common;

use std::sync::atomic::Ordering;

use common::{MemDevice, TestServer, default_config, random_bytes, run};
use nbd_export::{BlockSizes, ExportConfig};

const MIB: usize = 1 << 20;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn nbdinfo_json(uri: &str) -> serde_json::Value {
    let (ok, out, err) = run("nbdinfo", &args(&["--json", uri])).await;
    assert!(ok, "nbdinfo failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nbdinfo --json printed no JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_shows_size_block_sizes_and_flags() {
    let mut dev = MemDevice::new(8 * MIB);
    dev.block_sizes = BlockSizes { min: 512, preferred: 4096, max: 1 << 20 };
    let srv = TestServer::start(dev, default_config());
    let info = nbdinfo_json(&srv.uri()).await;
    assert_eq!(info["protocol"], "newstyle-fixed");
    assert_eq!(info["structured"], true);
    let e = &info["exports"][0];
    assert_eq!(e["export-name"], "lun0", "the canonical name from NBD_INFO_NAME");
    assert_eq!(e["description"], "memory test device");
    assert_eq!(e["export-size"], 8 * MIB);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_preferred"], 4096);
    assert_eq!(e["block_size_maximum"], 1 << 20);
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["can_multi_conn"], true);
    assert_eq!(e["can_trim"], true);
    assert_eq!(e["can_zero"], true);
    assert_eq!(e["can_flush"], true);
    assert_eq!(e["can_fua"], true);
    assert_eq!(e["can_df"], true);

    // The export is also found by its name, and an unknown name is refused.
    let named = format!("nbd+unix:///lun0?socket={}", srv.socket.display());
    assert_eq!(nbdinfo_json(&named).await["exports"][0]["export-size"], 8 * MIB);
    // NBD_OPT_LIST names the export and its description.
    let (ok, out, err) = run("nbdinfo", &args(&["--list", "--json", &srv.uri()])).await;
    assert!(ok, "nbdinfo --list failed: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["exports"][0]["export-name"], "lun0", "{out}");
    assert_eq!(list["exports"][0]["description"], "memory test device", "{out}");
    let wrong = format!("nbd+unix:///nope?socket={}", srv.socket.display());
    let (ok, _, _) = run("nbdinfo", &args(&["--json", &wrong])).await;
    assert!(!ok, "an unknown export name must fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_shows_a_read_only_export() {
    let mut dev = MemDevice::new(4 * MIB);
    dev.features.multi_conn = false;
    let srv = TestServer::start(dev, ExportConfig { read_only: true, ..default_config() });
    let info = nbdinfo_json(&srv.uri()).await;
    let e = &info["exports"][0];
    assert_eq!(e["is_read_only"], true);
    assert_eq!(e["can_multi_conn"], false);
    assert_eq!(e["can_trim"], false);
    assert_eq!(e["can_zero"], false);
    // And a write through a real client is refused.
    let src = srv.dir.path().join("src.img");
    std::fs::write(&src, random_bytes(4 * MIB, 1)).unwrap();
    let (ok, _, _) = run("nbdcopy", &args(&[src.to_str().unwrap(), &srv.uri()])).await;
    assert!(!ok, "nbdcopy into a read-only export must fail");
    assert!(srv.device.contents().iter().all(|&b| b == 0));
}

/// Copies a 64 MiB random image in and out with `connections` connections and checks every byte.
async fn copy_in_and_out(connections: &str) {
    let size = 64 * MIB;
    let srv = TestServer::start(MemDevice::new(size), default_config());
    let data = random_bytes(size, 42);
    let src = srv.dir.path().join("src.img");
    let dst = srv.dir.path().join("dst.img");
    std::fs::write(&src, &data).unwrap();
    let uri = srv.uri();
    let (ok, _, err) = run("nbdcopy", &args(&["--connections", connections, src.to_str().unwrap(), &uri])).await;
    assert!(ok, "nbdcopy in failed: {err}");
    assert!(srv.device.contents() == data, "the device holds the image");
    let (ok, _, err) = run("nbdcopy", &args(&["--connections", connections, &uri, dst.to_str().unwrap()])).await;
    assert!(ok, "nbdcopy out failed: {err}");
    assert!(std::fs::read(&dst).unwrap() == data, "the copy out equals the image");
    let stats = srv.stop().await;
    assert!(stats.clients_served >= 2);
    assert_eq!(stats.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdcopy_64_mib_in_and_out() {
    copy_in_and_out("1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdcopy_four_connections() {
    copy_in_and_out("4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_convert_and_compare() {
    let size = 16 * MIB;
    let srv = TestServer::start(MemDevice::new(size), default_config());
    // Some zero runs so qemu-img uses write-zeroes as well as writes.
    let mut data = random_bytes(size, 9);
    data[MIB..3 * MIB].fill(0);
    data[10 * MIB..10 * MIB + 4096].fill(0);
    let src = srv.dir.path().join("src.img");
    std::fs::write(&src, &data).unwrap();
    let uri = srv.uri();
    let (ok, _, err) =
        run("qemu-img", &args(&["convert", "-n", "-f", "raw", "-O", "raw", src.to_str().unwrap(), &uri])).await;
    assert!(ok, "qemu-img convert failed: {err}");
    assert!(srv.device.contents() == data);
    let (ok, out, err) =
        run("qemu-img", &args(&["compare", "-f", "raw", "-F", "raw", src.to_str().unwrap(), &uri])).await;
    assert!(ok, "qemu-img compare failed: {out} {err}");
    assert!(out.contains("identical"), "{out}");
    // A difference is seen.
    srv.device.data.lock().unwrap()[5 * MIB] ^= 0xff;
    let (ok, out, _) =
        run("qemu-img", &args(&["compare", "-f", "raw", "-F", "raw", src.to_str().unwrap(), &uri])).await;
    assert!(!ok && out.contains("mismatch at offset 5242880"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_device_gives_an_io_error_and_the_next_client_works() {
    let size = 4 * MIB;
    let srv = TestServer::start(MemDevice::new(size), default_config());
    let data = random_bytes(size, 5);
    srv.device.data.lock().unwrap().copy_from_slice(&data);
    let dst = srv.dir.path().join("dst.img");
    srv.device.fail.store(true, Ordering::SeqCst);
    let (ok, _, err) = run("nbdcopy", &args(&[&srv.uri(), dst.to_str().unwrap()])).await;
    assert!(!ok, "nbdcopy must fail on a failing device");
    assert!(err.contains("Input/output error") || err.contains("injected failure"), "{err}");
    srv.device.fail.store(false, Ordering::SeqCst);
    let (ok, _, err) = run("nbdcopy", &args(&[&srv.uri(), dst.to_str().unwrap()])).await;
    assert!(ok, "nbdcopy after recovery failed: {err}");
    assert!(std::fs::read(&dst).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_on_loopback() {
    use std::sync::Arc;
    let size = 4 * MIB;
    let device = Arc::new(MemDevice::new(size));
    let exporter = Arc::new(nbd_export::Exporter::new(Arc::clone(&device), default_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let e = Arc::clone(&exporter);
    let task = tokio::spawn(async move {
        e.serve(nbd_export::Listener::Tcp(listener), async {
            let _ = stopped.await;
        })
        .await
    });
    let uri = format!("nbd://127.0.0.1:{port}/lun0");
    assert_eq!(nbdinfo_json(&uri).await["exports"][0]["export-size"], size);
    let dir = common::TempDir::new("tcp");
    let src = dir.path().join("src.img");
    let data = random_bytes(size, 77);
    std::fs::write(&src, &data).unwrap();
    let (ok, _, err) = run("nbdcopy", &args(&[src.to_str().unwrap(), &uri])).await;
    assert!(ok, "nbdcopy over TCP failed: {err}");
    assert!(device.contents() == data);
    stop.send(()).unwrap();
    let stats = task.await.unwrap().unwrap();
    // nbdinfo, then nbdcopy with one or more connections (it may open several on a multi-conn export).
    assert!(stats.clients_served >= 2, "{stats:?}");
    assert_eq!(stats.errors, 0);
}
