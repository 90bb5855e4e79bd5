//! A task's answer, handed from the connection's reader to the waiting
//! caller: a one-shot channel like tokio's, whose slots are reused, so that
//! a command allocates nothing (tokio's `oneshot::channel` allocates one per
//! command, the last allocation left on the command path).
//!
//! A slot goes back to its thread's free list when the receiver has taken
//! the value and holds the only reference; a slot still shared (a receiver
//! dropped before the answer came) is simply freed.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::state::Reply;
use crate::Result;

/// What a task's waiter gets.
type Answer = Result<Reply>;

/// Free slots kept per thread; beyond that they are freed.
const FREE_MAX: usize = 1024;

struct Slot {
    st: Mutex<State>,
}

struct State {
    value: Option<Answer>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Slot {
    fn new() -> Self {
        Self { st: Mutex::new(State { value: None, waker: None, sender_gone: false, receiver_gone: false }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sender dropped without sending (the task went away unanswered).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Closed;

pub(super) struct Sender(Option<Arc<Slot>>);

pub(super) struct Receiver(Option<Arc<Slot>>);

thread_local! {
    static FREE: RefCell<Vec<Arc<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// A sender and its receiver, on a reused slot when this thread has one.
pub(super) fn channel() -> (Sender, Receiver) {
    let slot = FREE.with(|f| f.borrow_mut().pop()).unwrap_or_else(|| Arc::new(Slot::new()));
    (Sender(Some(slot.clone())), Receiver(Some(slot)))
}

impl Sender {
    /// Hands `value` to the receiver; gives it back if the receiver is gone.
    pub fn send(mut self, value: Answer) -> std::result::Result<(), Answer> {
        let Some(slot) = self.0.take() else { return Err(value) };
        let waker = {
            let mut st = slot.lock();
            if st.receiver_gone {
                return Err(value);
            }
            st.value = Some(value);
            st.waker.take()
        };
        drop(slot);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let Some(slot) = self.0.take() else { return };
        let waker = {
            let mut st = slot.lock();
            st.sender_gone = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Future for Receiver {
    type Output = std::result::Result<Answer, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(slot) = self.0.as_ref() else { return Poll::Ready(Err(Closed)) };
        let value = {
            let mut st = slot.lock();
            match st.value.take() {
                Some(v) => v,
                None if st.sender_gone => return Poll::Ready(Err(Closed)),
                None => {
                    if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        st.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        // The sender has let go of the slot once the value is in it: reuse
        // the slot if nobody else holds it.
        if let Some(mut slot) = self.0.take() {
            match Arc::get_mut(&mut slot) {
                Some(only) => {
                    let st = only.st.get_mut().unwrap_or_else(|p| p.into_inner());
                    *st = State { value: None, waker: None, sender_gone: false, receiver_gone: false };
                    FREE.with(|f| {
                        let mut f = f.borrow_mut();
                        if f.len() < FREE_MAX {
                            f.push(slot);
                        }
                    });
                }
                None => self.0 = Some(slot),
            }
        }
        Poll::Ready(Ok(value))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.lock().receiver_gone = true;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::Error;

    fn probe(answer: std::result::Result<Answer, Closed>) -> Option<u32> {
        match answer {
            Ok(Ok(Reply::Probe(n))) => Some(n),
            _ => None,
        }
    }

    #[tokio::test]
    async fn the_value_arrives_and_the_slot_is_reused() {
        let (tx, rx) = channel();
        let first = Arc::as_ptr(rx.0.as_ref().unwrap());
        assert!(tx.send(Ok(Reply::Probe(7))).is_ok());
        assert_eq!(probe(rx.await), Some(7));
        let (tx, rx) = channel();
        assert_eq!(Arc::as_ptr(rx.0.as_ref().unwrap()), first, "the slot came back");
        let waiting = tokio::spawn(rx);
        tokio::task::yield_now().await;
        assert!(tx.send(Ok(Reply::Probe(8))).is_ok());
        assert_eq!(probe(waiting.await.unwrap()), Some(8));
    }

    #[tokio::test]
    async fn a_sender_dropped_unanswered_closes_the_receiver() {
        let (tx, rx) = channel();
        let waiting = tokio::spawn(rx);
        tokio::task::yield_now().await;
        drop(tx);
        assert!(matches!(waiting.await.unwrap(), Err(Closed)));
    }

    #[test]
    fn an_answer_for_a_receiver_that_is_gone_comes_back() {
        let free = || FREE.with(|f| f.borrow().len());
        let (tx, rx) = channel();
        let before = free();
        drop(rx);
        assert!(matches!(tx.send(Err(Error::SessionClosed)), Err(Err(Error::SessionClosed))));
        // Its slot was shared when the receiver went: freed, not put back.
        assert_eq!(free(), before);
    }
}
