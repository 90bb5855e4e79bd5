//! Requests waiting for a turn at the LUN, combined into one SCSI command
//! when they continue each other.
//!
//! nbdcopy reads and writes 256 KiB per request, each connection in order.
//! One SCSI command per request costs the target as much as the data: tgt
//! spent 0.66–0.92 CPU-s per GiB serving 256 KiB READs against 0.49–0.67 s
//! for 1 MiB ones, and 0.77–0.88 s against 0.59–0.66 s for WRITEs
//! (bench/results/2026-12-07-nbd-ceiling.md), on the two CPUs it shares
//! with us and nbdcopy. Requests that queue behind the ones in flight are
//! taken together when they are adjacent: one command for all. A request
//! that finds a turn free goes alone, so an idle export adds no latency.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nbd_export::DeviceError;
use tokio::sync::oneshot;

/// What a waiting request gets: its share of the command's outcome.
pub(crate) type Delivery<R> = Result<R, DeviceError>;

/// One request waiting for its turn: blocks `lba .. lba + blocks` and what
/// it brings along (a write's data).
pub(crate) struct Waiting<P, R> {
    id: u64,
    lba: u64,
    blocks: u64,
    payload: P,
    tx: oneshot::Sender<Delivery<R>>,
}

/// Requests of one kind waiting for a turn, of all clients of one LUN.
pub(crate) struct Queue<P, R> {
    waiting: Mutex<Vec<Waiting<P, R>>>,
    next_id: AtomicU64,
}

impl<P, R> Default for Queue<P, R> {
    fn default() -> Self {
        Self { waiting: Mutex::new(Vec::new()), next_id: AtomicU64::new(0) }
    }
}

/// A request's place in the queue; leaving it (the client gone, the
/// request dropped) takes the request out, so no turn does work nobody
/// waits for.
pub(crate) struct Ticket<'q, P, R> {
    queue: &'q Queue<P, R>,
    id: u64,
}

impl<P, R> Drop for Ticket<'_, P, R> {
    fn drop(&mut self) {
        let mut waiting = self.queue.lock();
        if let Some(i) = waiting.iter().position(|w| w.id == self.id) {
            waiting.swap_remove(i);
        }
    }
}

/// Adjacent requests taken for one command over `lba .. lba + blocks`.
pub(crate) struct Run<P, R> {
    pub(crate) lba: u64,
    pub(crate) blocks: u64,
    /// In block order.
    members: Vec<Waiting<P, R>>,
    /// The request whose turn it is.
    mine: u64,
}

impl<P, R> Queue<P, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting<P, R>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request for `blocks` blocks at `lba`; its outcome comes
    /// through the receiver when another request's turn takes it along.
    pub(crate) fn enqueue(
        &self,
        lba: u64,
        blocks: u64,
        payload: P,
    ) -> (Ticket<'_, P, R>, oneshot::Receiver<Delivery<R>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().push(Waiting { id, lba, blocks, payload, tx });
        (Ticket { queue: self, id }, rx)
    }

    /// The run for `ticket`'s turn: its request and the waiting ones that
    /// continue it on either side without gap or overlap and `join` it (a
    /// write's FUA must match), up to `max_blocks` in all (its own request
    /// counts whatever its size). `None` when another turn has taken it
    /// already: its outcome then comes through its receiver.
    pub(crate) fn take_run(
        &self,
        ticket: &Ticket<'_, P, R>,
        max_blocks: u64,
        join: impl Fn(&P, &P) -> bool,
    ) -> Option<Run<P, R>> {
        take_run(&mut self.lock(), ticket.id, max_blocks, join)
    }
}

fn take_run<P, R>(
    waiting: &mut Vec<Waiting<P, R>>,
    id: u64,
    max_blocks: u64,
    join: impl Fn(&P, &P) -> bool,
) -> Option<Run<P, R>> {
    let mine = waiting.swap_remove(waiting.iter().position(|w| w.id == id)?);
    let (mut lba, mut end) = (mine.lba, mine.lba.saturating_add(mine.blocks));
    let mut before = Vec::new();
    let mut after = Vec::new();
    loop {
        let fits = |w: &Waiting<P, R>| end - lba + w.blocks <= max_blocks && join(&mine.payload, &w.payload);
        if let Some(i) = waiting.iter().position(|w| w.lba == end && fits(w)) {
            let w = waiting.swap_remove(i);
            end = end.saturating_add(w.blocks);
            after.push(w);
        } else if let Some(i) = waiting.iter().position(|w| w.lba.saturating_add(w.blocks) == lba && fits(w)) {
            let w = waiting.swap_remove(i);
            lba = w.lba;
            before.push(w);
        } else {
            break;
        }
    }
    let id = mine.id;
    before.reverse();
    before.push(mine);
    before.append(&mut after);
    Some(Run { lba, blocks: end - lba, members: before, mine: id })
}

impl<P, R> Run<P, R> {
    /// Requests taken along with the one whose turn it is.
    pub(crate) fn combined(&self) -> usize {
        self.members.len().saturating_sub(1)
    }

    /// What the members brought, in block order.
    pub(crate) fn payloads(&self) -> impl Iterator<Item = &P> {
        self.members.iter().map(|w| &w.payload)
    }

    /// Takes the payloads out (in block order), leaving `P::default()`.
    pub(crate) fn take_payloads(&mut self) -> Vec<P>
    where
        P: Default,
    {
        self.members.iter_mut().map(|w| std::mem::take(&mut w.payload)).collect()
    }

    /// Hands each member its share, `share(lba - run.lba, blocks)` of the
    /// command's outcome, and returns that of the request whose turn it
    /// was. A member whose request is gone is skipped.
    pub(crate) fn deliver(self, share: impl Fn(u64, u64) -> Delivery<R>) -> Delivery<R> {
        let Run { lba: start, members, mine, .. } = self;
        let mut own = None;
        for w in members {
            let part = share(w.lba.saturating_sub(start), w.blocks);
            if w.id == mine {
                own = Some(part);
            } else {
                let _ = w.tx.send(part);
            }
        }
        own.unwrap_or_else(|| Err(DeviceError::io("the request left its own run")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    type Rx = oneshot::Receiver<Delivery<Bytes>>;

    fn queue_of(reads: &[(u64, u64, bool)]) -> (Queue<bool, Bytes>, Vec<(u64, Rx)>) {
        let q = Queue::default();
        let mut rxs = Vec::new();
        for &(lba, blocks, fua) in reads {
            let (ticket, rx) = q.enqueue(lba, blocks, fua);
            rxs.push((ticket.id, rx));
            // The test keeps the requests queued without holding their tickets.
            std::mem::forget(ticket);
        }
        (q, rxs)
    }

    fn run_of(q: &Queue<bool, Bytes>, id: u64, max: u64) -> Option<Run<bool, Bytes>> {
        take_run(&mut q.lock(), id, max, |a, b| a == b)
    }

    fn left(q: &Queue<bool, Bytes>) -> Vec<u64> {
        let mut l: Vec<u64> = q.lock().iter().map(|w| w.lba).collect();
        l.sort_unstable();
        l
    }

    fn lbas(run: &Run<bool, Bytes>) -> Vec<u64> {
        run.members.iter().map(|w| w.lba).collect()
    }

    #[test]
    fn adjacent_requests_on_both_sides_join_the_turn_in_block_order_up_to_the_bound() {
        // 4 blocks each at 0, 4, 8, 12, 20 (a gap before 20); the turn is the request at 8.
        let (q, rxs) = queue_of(&[(0, 4, false), (4, 4, false), (8, 4, false), (12, 4, false), (20, 4, false)]);
        let run = run_of(&q, rxs[2].0, 12).expect("the request is queued");
        assert_eq!((run.lba, run.blocks, run.combined()), (4, 12, 2), "8 joined by 12 and 4, then the bound");
        assert_eq!(lbas(&run), vec![4, 8, 12]);
        assert_eq!(left(&q), vec![0, 20]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        assert_eq!((run.lba, run.blocks, run.combined()), (0, 4, 0), "20 is not adjacent to 0..4");
        assert!(run_of(&q, rxs[2].0, 64).is_none(), "a request already taken has no turn of its own");
    }

    #[test]
    fn overlapping_gapped_or_unjoinable_requests_stay_and_a_large_one_still_goes() {
        let (q, rxs) = queue_of(&[(0, 8, false), (4, 8, false), (9, 2, false)]);
        let run = run_of(&q, rxs[0].0, 4).expect("queued");
        assert_eq!((run.lba, run.blocks, run.combined()), (0, 8, 0), "its own request counts whatever its size");
        assert_eq!(left(&q), vec![4, 9]);
        // A FUA write does not join plain ones (the join rule), adjacent or not.
        let (q, rxs) = queue_of(&[(0, 1, false), (1, 1, true), (2, 1, false)]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        assert_eq!(lbas(&run), vec![0]);
        assert_eq!(left(&q), vec![1, 2]);
    }

    #[tokio::test]
    async fn each_member_gets_its_own_share_and_a_failure_reaches_all() {
        let (q, mut rxs) = queue_of(&[(10, 2, false), (12, 1, false), (8, 2, false)]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        assert_eq!((run.lba, run.blocks, lbas(&run)), (8, 5, vec![8, 10, 12]));
        let data: Bytes = (0u8..5).flat_map(|b| [b; 4]).collect::<Vec<u8>>().into();
        let mine = run.deliver(|at, n| Ok(data.slice(at as usize * 4..(at + n) as usize * 4))).expect("delivered");
        assert_eq!(&mine[..], &[2, 2, 2, 2, 3, 3, 3, 3]);
        let (_, rx) = rxs.remove(2);
        assert_eq!(&rx.await.expect("sent").expect("data")[..], &[0, 0, 0, 0, 1, 1, 1, 1]);
        let (_, rx) = rxs.remove(1);
        assert_eq!(&rx.await.expect("sent").expect("data")[..], &[4, 4, 4, 4]);

        let (q, mut rxs) = queue_of(&[(0, 1, false), (1, 1, false)]);
        let run = run_of(&q, rxs[0].0, 64).expect("queued");
        assert!(run.deliver(|_, _| Err(DeviceError::io("READ failed: gone"))).is_err());
        let (_, rx) = rxs.remove(1);
        assert_eq!(rx.await.expect("sent").expect_err("failed").message, "READ failed: gone");
    }

    #[test]
    fn payloads_come_in_block_order_and_can_be_taken() {
        let q: Queue<Vec<u8>, ()> = Queue::default();
        let (_a, _ra) = q.enqueue(2, 1, vec![2]);
        let (mine, _rm) = q.enqueue(1, 1, vec![1]);
        let (_c, _rc) = q.enqueue(0, 1, vec![0]);
        let mut run = q.take_run(&mine, 64, |_, _| true).expect("queued");
        assert_eq!(run.payloads().cloned().collect::<Vec<_>>(), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(run.take_payloads().concat(), vec![0, 1, 2]);
        assert!(run.payloads().all(Vec::is_empty));
    }

    #[test]
    fn a_dropped_ticket_leaves_the_queue() {
        let q: Queue<bool, Bytes> = Queue::default();
        let (ticket, _rx) = q.enqueue(0, 1, false);
        let (_kept, _rx2) = q.enqueue(1, 1, false);
        drop(ticket);
        assert_eq!(left(&q), vec![1]);
    }
}
