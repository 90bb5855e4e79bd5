//! Reads waiting for a turn at the LUN, combined into one SCSI READ when
//! they continue each other.
//!
//! nbdcopy reads 256 KiB per request, each connection in order. One SCSI
//! command per request costs the target as much as the data: tgt spent
//! 0.8–0.96 CPU-s per GiB serving 256 KiB READs against 0.52–0.6 s for
//! 1 MiB ones (bench/results/2026-12-07-nbd-ceiling.md), on the two CPUs it
//! shares with us and nbdcopy. Reads that queue behind the ones in flight
//! are taken together when they are adjacent: one READ, and each request
//! gets its slice of the one buffer (no copy). A read that finds a turn
//! free goes alone, so an idle export adds no latency.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use nbd_export::DeviceError;
use tokio::sync::oneshot;

/// What a waiting read gets: the bytes of its blocks, or the READ's failure.
pub(crate) type Delivery = Result<Bytes, DeviceError>;

/// One read waiting for its blocks.
pub(crate) struct Waiting {
    id: u64,
    lba: u64,
    blocks: u64,
    tx: oneshot::Sender<Delivery>,
}

/// Reads waiting for a turn, of all clients of one LUN.
#[derive(Default)]
pub(crate) struct ReadQueue {
    waiting: Mutex<Vec<Waiting>>,
    next_id: AtomicU64,
}

/// A read's place in the queue; leaving it (the client gone, the request
/// dropped) takes the read out, so no turn reads blocks nobody waits for.
pub(crate) struct Ticket<'q> {
    queue: &'q ReadQueue,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut waiting = self.queue.lock();
        if let Some(i) = waiting.iter().position(|w| w.id == self.id) {
            waiting.swap_remove(i);
        }
    }
}

/// Adjacent reads taken for one READ: `lba .. lba + blocks`, the first of
/// `members` the read whose turn it is.
pub(crate) struct Run {
    pub(crate) lba: u64,
    pub(crate) blocks: u64,
    members: Vec<Waiting>,
}

impl ReadQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a read of `blocks` blocks at `lba`; its blocks come through
    /// the receiver when another read's turn takes it along.
    pub(crate) fn enqueue(&self, lba: u64, blocks: u64) -> (Ticket<'_>, oneshot::Receiver<Delivery>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().push(Waiting { id, lba, blocks, tx });
        (Ticket { queue: self, id }, rx)
    }

    /// The run for `ticket`'s turn: its read and the waiting reads that
    /// continue it on either side without gap or overlap, up to
    /// `max_blocks` in all (its own read counts whatever its size). `None`
    /// when another turn has taken it already: its blocks then come
    /// through its receiver.
    pub(crate) fn take_run(&self, ticket: &Ticket<'_>, max_blocks: u64) -> Option<Run> {
        take_run(&mut self.lock(), ticket.id, max_blocks)
    }
}

fn take_run(waiting: &mut Vec<Waiting>, id: u64, max_blocks: u64) -> Option<Run> {
    let mine = waiting.swap_remove(waiting.iter().position(|w| w.id == id)?);
    let (mut lba, mut end) = (mine.lba, mine.lba.saturating_add(mine.blocks));
    let mut members = vec![mine];
    loop {
        let fits = |w: &Waiting| end - lba + w.blocks <= max_blocks;
        let next = waiting
            .iter()
            .position(|w| w.lba == end && fits(w))
            .or_else(|| waiting.iter().position(|w| w.lba.saturating_add(w.blocks) == lba && fits(w)));
        let Some(i) = next else { break };
        let w = waiting.swap_remove(i);
        if w.lba == end {
            end = end.saturating_add(w.blocks);
        } else {
            lba = w.lba;
        }
        members.push(w);
    }
    Some(Run { lba, blocks: end - lba, members })
}

impl Run {
    /// Reads taken along with the one whose turn it is.
    pub(crate) fn combined(&self) -> usize {
        self.members.len().saturating_sub(1)
    }

    /// Hands each member its blocks of `result` (the READ of the whole
    /// run, `block_size` bytes a block) and returns those of the read whose
    /// turn it was. A member whose request is gone is skipped.
    pub(crate) fn deliver(self, result: Result<Bytes, DeviceError>, block_size: u64) -> Delivery {
        let Run { lba, members, .. } = self;
        let mut mine = None;
        for w in members {
            let part = match &result {
                Ok(data) => match member_range(data, lba, &w, block_size) {
                    Some((from, to)) => Ok(data.slice(from..to)),
                    None => Err(DeviceError::io(format!(
                        "READ of the combined run returned {} bytes, short of blocks {}..{}",
                        data.len(),
                        w.lba,
                        w.lba.saturating_add(w.blocks)
                    ))),
                },
                Err(e) => Err(e.clone()),
            };
            if mine.is_none() {
                mine = Some(part);
            } else {
                let _ = w.tx.send(part);
            }
        }
        mine.unwrap_or_else(|| Err(DeviceError::io("empty read run")))
    }
}

/// The byte range of `w`'s blocks within the run's data, if the data holds them.
fn member_range(data: &Bytes, run_lba: u64, w: &Waiting, block_size: u64) -> Option<(usize, usize)> {
    let from = usize::try_from(w.lba.checked_sub(run_lba)?.checked_mul(block_size)?).ok()?;
    let to = from.checked_add(usize::try_from(w.blocks.checked_mul(block_size)?).ok()?)?;
    (to <= data.len()).then_some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_of(reads: &[(u64, u64)]) -> (ReadQueue, Vec<(u64, oneshot::Receiver<Delivery>)>) {
        let q = ReadQueue::default();
        let mut rxs = Vec::new();
        for &(lba, blocks) in reads {
            let (ticket, rx) = q.enqueue(lba, blocks);
            rxs.push((ticket.id, rx));
            // The test keeps the reads queued without holding their tickets.
            std::mem::forget(ticket);
        }
        (q, rxs)
    }

    fn run_of(q: &ReadQueue, id: u64, max: u64) -> Option<Run> {
        take_run(&mut q.lock(), id, max)
    }

    fn left(q: &ReadQueue) -> Vec<u64> {
        let mut l: Vec<u64> = q.lock().iter().map(|w| w.lba).collect();
        l.sort_unstable();
        l
    }

    #[test]
    fn adjacent_reads_on_both_sides_join_the_turn_up_to_the_bound() {
        // Reads of 4 blocks at 0, 4, 8, 12, 20 (a gap before 20); the turn is the read at 8.
        let (q, rxs) = queue_of(&[(0, 4), (4, 4), (8, 4), (12, 4), (20, 4)]);
        let run = run_of(&q, rxs[2].0, 12).expect("the read is queued");
        assert_eq!((run.lba, run.blocks, run.combined()), (4, 12, 2), "8 joined by 12 and 4, then the bound");
        assert_eq!(left(&q), vec![0, 20]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        assert_eq!((run.lba, run.blocks, run.combined()), (0, 4, 0), "20 is not adjacent to 0..4");
        assert!(run_of(&q, rxs[2].0, 64).is_none(), "a read already taken has no turn of its own");
    }

    #[test]
    fn overlapping_or_gapped_reads_are_not_combined_and_a_large_read_still_goes() {
        let (q, rxs) = queue_of(&[(0, 8), (4, 8), (9, 2)]);
        let run = run_of(&q, rxs[0].0, 4).expect("queued");
        assert_eq!((run.lba, run.blocks, run.combined()), (0, 8, 0), "its own read counts whatever its size");
        assert_eq!(left(&q), vec![4, 9]);
    }

    #[tokio::test]
    async fn each_member_gets_its_own_blocks_and_a_failure_reaches_all() {
        let (q, mut rxs) = queue_of(&[(10, 2), (12, 1), (8, 2)]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        assert_eq!((run.lba, run.blocks), (8, 5));
        let data: Bytes = (0u8..5).flat_map(|b| [b; 4]).collect::<Vec<u8>>().into();
        let mine = run.deliver(Ok(data), 4).expect("delivered");
        assert_eq!(&mine[..], &[2, 2, 2, 2, 3, 3, 3, 3]);
        let (_, rx) = rxs.remove(2);
        assert_eq!(&rx.await.expect("sent").expect("data")[..], &[0, 0, 0, 0, 1, 1, 1, 1]);
        let (_, rx) = rxs.remove(1);
        assert_eq!(&rx.await.expect("sent").expect("data")[..], &[4, 4, 4, 4]);

        let (q, mut rxs) = queue_of(&[(0, 1), (1, 1)]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        assert!(run.deliver(Err(DeviceError::io("READ failed: gone")), 512).is_err());
        let (_, rx) = rxs.remove(1);
        assert_eq!(rx.await.expect("sent").expect_err("failed").message, "READ failed: gone");
    }

    #[tokio::test]
    async fn a_short_buffer_is_an_error_for_the_members_it_does_not_cover() {
        let (q, mut rxs) = queue_of(&[(0, 1), (1, 1)]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        let mine = run.deliver(Ok(Bytes::from_static(&[9; 4])), 4).expect("covered");
        assert_eq!(&mine[..], &[9; 4]);
        let (_, rx) = rxs.remove(1);
        assert!(rx.await.expect("sent").is_err());
    }

    #[test]
    fn a_dropped_ticket_leaves_the_queue() {
        let q = ReadQueue::default();
        let (ticket, _rx) = q.enqueue(0, 1);
        let (_kept, _rx2) = q.enqueue(1, 1);
        drop(ticket);
        assert_eq!(left(&q), vec![1]);
    }
}
