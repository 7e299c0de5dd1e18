//! A meeting's sending streams and their next sequence numbers, shared between the
//! senders (one writer each) and the receivers' measurement windows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One sending stream: a participant's audio or video.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) id: u32,
    next: AtomicU64,
}

impl Stream {
    /// The number the next frame gets.
    pub(crate) fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Frame `seq` was sent: the next one is `seq + 1`.
    pub(crate) fn sent(&self, seq: u64) {
        self.next.store(seq.saturating_add(1), Ordering::Release);
    }
}

/// Every stream a meeting ever had (streams are never removed: a departed sender's
/// frames may still be in flight).
#[derive(Debug, Default)]
pub(crate) struct Board {
    streams: Mutex<Vec<Arc<Stream>>>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Stream>>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds stream `id`, numbered from 0.
    pub(crate) fn add(&self, id: u32) -> Arc<Stream> {
        let stream = Arc::new(Stream {
            id,
            next: AtomicU64::new(0),
        });
        self.lock().push(Arc::clone(&stream));
        stream
    }

    /// Every stream's next number.
    pub(crate) fn snapshot(&self) -> Vec<(u32, u64)> {
        self.lock().iter().map(|s| (s.id, s.next())).collect()
    }
}
