//! The queue of decrypted frames between the media reader and the app.
//!
//! The reader hands over every frame of a burst of datagrams at once ([`FrameSink::push_batch`]:
//! one lock, and a wake-up only if the queue was empty, so an app that is busy with
//! earlier frames is not woken per frame). The app takes everything queued at once
//! ([`FrameSource`] swaps the queue with its own empty one under one lock) and then
//! hands frames out of its local batch without locking. Bounded in frames and in
//! bytes, counting the batch the app has taken but not yet read; frames beyond the
//! bound are dropped and counted by the caller.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::MediaFrame;
use super::shared::lock;

/// Bounds of a frame queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameBounds {
    /// Most frames queued (at least 1).
    pub frames: usize,
    /// Most payload bytes queued (a single frame larger than this still passes into an
    /// empty queue, so that no frame is undeliverable).
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    queued: VecDeque<MediaFrame>,
    queued_bytes: usize,
    /// What the app took with its last batch (an upper bound of what it still holds).
    taken_frames: usize,
    taken_bytes: usize,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    ready: Notify,
    bounds: FrameBounds,
}

/// The reader's end.
#[derive(Debug)]
pub(crate) struct FrameSink(Arc<Shared>);

/// The app's end.
#[derive(Debug)]
pub(crate) struct FrameSource {
    shared: Arc<Shared>,
    local: VecDeque<MediaFrame>,
}

/// A queue bounded by `bounds`.
pub(crate) fn frame_queue(bounds: FrameBounds) -> (FrameSink, FrameSource) {
    let bounds = FrameBounds {
        frames: bounds.frames.max(1),
        bytes: bounds.bytes,
    };
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner::default()),
        ready: Notify::new(),
        bounds,
    });
    (
        FrameSink(Arc::clone(&shared)),
        FrameSource {
            shared,
            local: VecDeque::new(),
        },
    )
}

impl FrameSink {
    /// Queues the frames of `batch` (leaving it empty, its allocation kept) while they
    /// fit; returns how many were dropped because the queue was full or closed.
    pub(crate) fn push_batch(&self, batch: &mut Vec<MediaFrame>) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let bounds = self.0.bounds;
        let mut dropped = 0;
        let was_empty;
        {
            let mut inner = lock(&self.0.inner);
            if inner.closed {
                let n = batch.len();
                batch.clear();
                return n;
            }
            was_empty = inner.queued.is_empty();
            for frame in batch.drain(..) {
                let frames = inner.queued.len() + inner.taken_frames;
                let bytes = inner.queued_bytes + inner.taken_bytes;
                let len = frame.data.len();
                let fits = frames < bounds.frames
                    && (frames == 0 || bytes.saturating_add(len) <= bounds.bytes);
                if fits {
                    inner.queued_bytes += len;
                    inner.queued.push_back(frame);
                } else {
                    dropped += 1;
                }
            }
        }
        // An app that found the queue non-empty takes everything before it waits
        // again, so only the first frames after an empty queue need a wake-up.
        if was_empty {
            self.0.ready.notify_one();
        }
        dropped
    }

    /// No frame is queued after this; the app reads what is queued, then the end.
    pub(crate) fn close(&self) {
        lock(&self.0.inner).closed = true;
        self.0.ready.notify_one();
    }
}

impl Drop for FrameSink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Moves everything queued into `local` (empty: the app has read its last batch)
/// under one lock, keeping both allocations; whether the queue is closed.
fn refill(shared: &Shared, local: &mut VecDeque<MediaFrame>) -> bool {
    let mut inner = lock(&shared.inner);
    debug_assert!(local.is_empty());
    std::mem::swap(&mut inner.queued, local);
    inner.taken_frames = local.len();
    inner.taken_bytes = inner.queued_bytes;
    inner.queued_bytes = 0;
    inner.closed
}

impl FrameSource {
    /// Moves everything queued into the local batch (one lock); whether the queue is
    /// closed.
    fn refill(&mut self) -> bool {
        refill(&self.shared, &mut self.local)
    }

    /// A frame, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<MediaFrame> {
        if self.local.is_empty() {
            self.refill();
        }
        self.local.pop_front()
    }

    /// Moves up to `max` frames into `out` without waiting; returns how many.
    pub(crate) fn try_recv_many(&mut self, out: &mut Vec<MediaFrame>, max: usize) -> usize {
        let mut moved = 0;
        while moved < max {
            if self.local.is_empty() {
                self.refill();
                if self.local.is_empty() {
                    break;
                }
            }
            let n = self.local.len().min(max - moved);
            out.extend(self.local.drain(..n));
            moved += n;
        }
        moved
    }

    /// The next frame; `None` once the queue is closed and empty.
    pub(crate) async fn recv(&mut self) -> Option<MediaFrame> {
        loop {
            if let Some(frame) = self.local.pop_front() {
                return Some(frame);
            }
            let notified = self.shared.ready.notified();
            let closed = refill(&self.shared, &mut self.local);
            if let Some(frame) = self.local.pop_front() {
                return Some(frame);
            }
            if closed {
                return None;
            }
            notified.await;
        }
    }

    /// Waits for at least one frame, then moves up to `max` (at least 1) into `out`;
    /// returns how many, 0 once the queue is closed and empty.
    pub(crate) async fn recv_many(&mut self, out: &mut Vec<MediaFrame>, max: usize) -> usize {
        let max = max.max(1);
        loop {
            if !self.local.is_empty() {
                return self.try_recv_many(out, max);
            }
            let notified = self.shared.ready.notified();
            let closed = refill(&self.shared, &mut self.local);
            if !self.local.is_empty() {
                drop(notified);
                return self.try_recv_many(out, max);
            }
            if closed {
                return 0;
            }
            notified.await;
        }
    }

    /// Whether a frame is ready without waiting (for the app's event loop).
    pub(crate) fn has_local(&self) -> bool {
        !self.local.is_empty()
    }
}

#[cfg(test)]
mod tests;
