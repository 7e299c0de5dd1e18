//! Acknowledging processed mailbox entries in batches (sans-IO).
//!
//! Every processed container (opened, refused for good, or a duplicate) is
//! acknowledged so the server deletes it; containers that could not be processed yet
//! are not, and come back. Acknowledgements wait a few milliseconds to go out
//! together, or leave at once when a batch is full. The batcher also counts the
//! one-time prekeys the processed containers used, so the app can be told to save its
//! prekey pool (review L2).

use std::time::{Duration, Instant};

/// Containers acknowledged together at most.
pub(crate) const ACK_BATCH: usize = 256;
/// How long processed containers wait to be acknowledged together.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(5);

/// Processed mailbox entries not acknowledged yet.
#[derive(Debug, Default)]
pub(crate) struct AckBatcher {
    pending: Vec<u64>,
    due: Option<Instant>,
    prekeys_consumed: u32,
}

/// What flushing the batcher yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AckFlush {
    /// Mailbox ids to acknowledge in one request (may be empty).
    pub(crate) ids: Vec<u64>,
    /// One-time prekeys used since the last flush (0: nothing to tell the app).
    pub(crate) prekeys_consumed: u32,
}

impl AckBatcher {
    /// Mailbox entry `id` was processed at `now`. Returns `true` when the batch is full
    /// and should be flushed at once.
    pub(crate) fn processed(&mut self, id: u64, now: Instant) -> bool {
        self.pending.push(id);
        if self.due.is_none() {
            self.due = Some(now + ACK_DELAY);
        }
        self.pending.len() >= ACK_BATCH
    }

    /// A container used one of this device's one-time prekeys.
    pub(crate) fn prekey_consumed(&mut self) {
        self.prekeys_consumed = self.prekeys_consumed.saturating_add(1);
    }

    /// When the batch is due.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.due
    }

    /// Whether the batch is due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|at| at <= now)
    }

    /// Takes the batch. Without a connection the ids stay for the next flush (the
    /// prekey count is reported either way).
    pub(crate) fn flush(&mut self, connected: bool) -> AckFlush {
        self.due = None;
        let prekeys_consumed = std::mem::take(&mut self.prekeys_consumed);
        let ids = if connected {
            std::mem::take(&mut self.pending)
        } else {
            Vec::new()
        };
        AckFlush {
            ids,
            prekeys_consumed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_entries_are_acknowledged_together_after_a_short_delay() {
        let t0 = Instant::now();
        let mut acks = AckBatcher::default();
        assert!(!acks.processed(1, t0));
        assert!(!acks.processed(2, t0 + Duration::from_millis(1)));
        assert_eq!(
            acks.due_at(),
            Some(t0 + ACK_DELAY),
            "the first entry sets the time"
        );
        assert!(!acks.is_due(t0));
        assert!(acks.is_due(t0 + ACK_DELAY));
        acks.prekey_consumed();
        assert_eq!(
            acks.flush(true),
            AckFlush {
                ids: vec![1, 2],
                prekeys_consumed: 1
            }
        );
        assert_eq!(acks.due_at(), None);
        assert_eq!(acks.flush(true), AckFlush::default());
    }

    #[test]
    fn a_full_batch_asks_to_be_flushed_at_once() {
        let t0 = Instant::now();
        let mut acks = AckBatcher::default();
        for id in 0..ACK_BATCH as u64 - 1 {
            assert!(!acks.processed(id, t0));
        }
        assert!(acks.processed(u64::MAX, t0));
        assert_eq!(acks.flush(true).ids.len(), ACK_BATCH);
    }

    #[test]
    fn without_a_connection_the_ids_wait_but_the_prekey_count_is_reported() {
        let t0 = Instant::now();
        let mut acks = AckBatcher::default();
        acks.processed(9, t0);
        acks.prekey_consumed();
        assert_eq!(
            acks.flush(false),
            AckFlush {
                ids: Vec::new(),
                prekeys_consumed: 1
            }
        );
        assert_eq!(acks.flush(true).ids, vec![9]);
    }
}
