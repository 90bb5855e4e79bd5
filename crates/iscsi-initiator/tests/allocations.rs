//! The command path allocates nothing per command (issue 6: "no
//! per-command allocation"): a counting global allocator watches 4 KiB
//! writes and reads against tgt and istgt, each read compared with what
//! was written. Buffers are reused the way `rsiscsi bench` reuses them:
//! one `Bytes` per writer sent again and again, reads into the previous
//! read's buffer. This file holds one test so that nothing else runs in
//! the process while it counts.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use common::lab::*;
use iscsi_initiator::Session;
use iscsi_initiator::session::ConnectionLogin;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on unchanged to the system allocator; the
// counter is the only addition.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WORKERS: u64 = 8;
/// Blocks of 512 bytes per command (4 KiB).
const BLOCKS: u32 = 8;
/// A region of the lab LUN no other test uses.
const BASE: u64 = 1_620_000;

/// Each worker writes its own pattern to one of 8 slots of its own and
/// reads it back, `rounds` times; returns the commands sent.
async fn run(s: &Session, lab: &Lab, rounds: u64) -> u64 {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (s, lun, name) = (s.clone(), lab.lun, lab.name);
        set.spawn(async move {
            let data: Bytes = pattern(BLOCKS as usize * 512, 1_000 + w);
            let mut recycled = BytesMut::new();
            for n in 0..rounds {
                let lba = BASE + w * 64 + (n % 8) * u64::from(BLOCKS);
                s.write_blocks(lun, lba, data.clone(), 512)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: worker {w} write {n}: {e}"));
                let back = s
                    .read_blocks_into(lun, lba, BLOCKS, 512, std::mem::take(&mut recycled))
                    .await
                    .unwrap_or_else(|e| panic!("{name}: worker {w} read {n}: {e}"));
                assert!(back == data, "{name}: worker {w} round {n} read back other data");
                recycled = back.try_into_mut().unwrap_or_default();
            }
            rounds * 2
        });
    }
    let mut commands = 0;
    while let Some(r) = set.join_next().await {
        commands += r.unwrap();
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_path_allocates_nothing_per_command() {
    for lab in BOTH {
        let s = Session::login(&lab.portal(), Some(&lab.iqn("ram1")), config()).await.unwrap();
        // One connection, then two (the load balancer's path too).
        for connections in 1..=2 {
            if connections > 1 {
                s.connect_more(&lab.portal(), &ConnectionLogin::default()).await.unwrap();
            }
            // Warm up: the runtime, the task slots and the connection's
            // buffers reach their working size.
            run(&s, &lab, 200).await;
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            let commands = run(&s, &lab, 1_000).await;
            let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
            eprintln!("{}, {connections} connection(s): {allocations} allocations for {commands} commands", lab.name);
            // What may remain is per run, not per command: the workers'
            // tasks and their buffers (a few each), the JoinSet, a timer.
            assert!(
                allocations * 100 < commands,
                "{}, {connections} connection(s): {allocations} allocations for {commands} commands \
                 (at most one per 100 expected)",
                lab.name
            );
        }
        s.logout().await.unwrap();
    }
}
