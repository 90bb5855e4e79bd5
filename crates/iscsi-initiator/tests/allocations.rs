//! The command path allocates nothing per command (issue 6: "no
//! per-command allocation"): a counting global allocator watches 4 KiB
//! and 256 KiB writes and reads against tgt and istgt over one and two
//! connections, each read compared with what was written. Buffers are
//! reused the way `rsiscsi bench` reuses them: one `Bytes` per writer sent
//! again and again, reads into the previous read's buffer. This file holds
//! one test so that nothing else runs in the process while it counts.

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
/// A region of the lab LUN no other test uses (8 workers x 8 slots of up
/// to 256 KiB: 16 MiB).
const BASE: u64 = 1_620_000;

/// Each worker writes its own pattern of `blocks` 512-byte blocks to one
/// of 8 slots of its own and reads it back, `rounds` times; returns the
/// commands sent.
async fn run(s: &Session, lab: &Lab, blocks: u32, rounds: u64) -> u64 {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (s, lun, name) = (s.clone(), lab.lun, lab.name);
        set.spawn(async move {
            let data: Bytes = pattern(blocks as usize * 512, 1_000 + w);
            let mut recycled = BytesMut::new();
            for n in 0..rounds {
                let lba = BASE + (w * 8 + n % 8) * u64::from(blocks);
                s.write_blocks(lun, lba, data.clone(), 512)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: worker {w} write {n}: {e}"));
                let back = s
                    .read_blocks_into(lun, lba, blocks, 512, std::mem::take(&mut recycled))
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

/// Allocations and commands of one [`run`].
async fn counted(s: &Session, lab: &Lab, blocks: u32, rounds: u64) -> (u64, u64) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let commands = run(s, lab, blocks, rounds).await;
    (ALLOCATIONS.load(Ordering::Relaxed) - before, commands)
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
            // 4 KiB: immediate data, Data-In decoded with its header; 256 KiB:
            // R2T and Data-Out, Data-In placed straight into the buffer.
            for (blocks, rounds) in [(8u32, 250u64), (512, 40)] {
                // Warm up: the runtime, the task slots and the connection's
                // buffers reach their working size.
                run(&s, &lab, blocks, rounds / 2).await;
                // A run allocates a few blocks of its own (its tasks, their
                // patterns, the JoinSet), however long it is: what a longer
                // run allocates beyond a shorter one is per command.
                let (a1, c1) = counted(&s, &lab, blocks, rounds).await;
                let (a4, c4) = counted(&s, &lab, blocks, rounds * 4).await;
                let (extra, more) = (a4.saturating_sub(a1), c4 - c1);
                let what = format!("{}, {connections} connection(s), {} KiB", lab.name, blocks / 2);
                eprintln!("{what}: {a1} allocations for {c1} commands, {a4} for {c4}");
                assert!(
                    extra * 100 < more,
                    "{what}: {extra} more allocations for {more} more commands (at most one per 100 expected)"
                );
            }
        }
        s.logout().await.unwrap();
    }
}
