//! Write payload buffers kept for reuse. A fresh buffer per NBD write costs an allocation, zeroing
//! and the page faults of its first touch every time (nbdcopy writes 256 KiB per request); a buffer
//! back from a finished write is taken instead.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// Buffers kept at most: about the writes one export has in flight; more are freed.
const KEEP: usize = 64;
/// Buffers larger than this are freed, not kept (a rare large write does not pin its memory).
const KEEP_CAPACITY: usize = 4 << 20;

#[derive(Default)]
pub(crate) struct PayloadPool {
    spare: Mutex<Vec<BytesMut>>,
}

impl PayloadPool {
    /// An empty buffer with room for `len` bytes.
    pub(crate) fn take(&self, len: usize) -> BytesMut {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut buf = spare.unwrap_or_default();
        buf.reserve(len);
        buf
    }

    /// Keeps `data`'s buffer when nothing else holds a view of it.
    pub(crate) fn give(&self, data: Bytes) {
        if let Ok(mut buf) = data.try_into_mut()
            && buf.capacity() <= KEEP_CAPACITY
        {
            buf.clear();
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < KEEP {
                spare.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_only_when_no_view_of_it_is_left() {
        let pool = PayloadPool::default();
        let mut b = pool.take(1000);
        b.extend_from_slice(&[7; 1000]);
        let data = b.freeze();
        let view = data.slice(10..20);
        pool.give(data.clone());
        assert!(pool.spare.lock().unwrap().is_empty(), "still held by a view");
        drop(view);
        pool.give(data);
        assert_eq!(pool.spare.lock().unwrap().len(), 1);
        let again = pool.take(500);
        assert!(again.is_empty() && again.capacity() >= 1000);
    }
}
