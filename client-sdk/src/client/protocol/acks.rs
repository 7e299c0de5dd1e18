//! Acknowledging processed mailbox entries in batches (sans-IO).
//!
//! Every processed container (opened, refused for good, or a duplicate) is
//! acknowledged so the server deletes it; containers that could not be processed yet
//! are not, and come back. Acknowledgements wait a few milliseconds to go out
//! together, or leave at once when a batch is full. The batcher also counts the
//! one-time prekeys the processed containers used, so the app can be told to save its
//! prekey pool (review L2), and the container bytes handled on the current connection,
//! which the server's mailbox window waits for (docs/protocol.md 10.4): a report goes
//! out with the acknowledgements, or at once when half the window is handled and
//! unreported.

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
    /// Container bytes delivered on the current connection and handled, in all.
    handled_bytes: u64,
    /// How much of that the server has taken (its answer to a report came back).
    confirmed_bytes: u64,
}

/// What flushing the batcher yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AckFlush {
    /// Mailbox ids to acknowledge in one request (may be empty).
    pub(crate) ids: Vec<u64>,
    /// One-time prekeys used since the last flush (0: nothing to tell the app).
    pub(crate) prekeys_consumed: u32,
    /// Container bytes handled on this connection, in all, when the server has not
    /// taken that yet (`AckContainers.handled_bytes`); confirm with
    /// [`AckBatcher::report_done`] once it answers.
    pub(crate) handled_bytes: Option<u64>,
}

impl AckFlush {
    /// Whether there is anything to send the server.
    pub(crate) fn has_request(&self) -> bool {
        !self.ids.is_empty() || self.handled_bytes.is_some()
    }
}

impl AckBatcher {
    /// A new connection: its window starts empty (ids waiting are kept, as they are
    /// still to be acknowledged).
    pub(crate) fn new_connection(&mut self) {
        self.handled_bytes = 0;
        self.confirmed_bytes = 0;
    }

    /// The server took the report of `total` handled bytes.
    pub(crate) fn report_done(&mut self, total: u64) {
        self.confirmed_bytes = self.confirmed_bytes.max(total).min(self.handled_bytes);
    }

    /// A flush's request failed with an error that may pass (rate limit, no
    /// connection): its `ids` wait for the next flush, which is due at `retry_at`
    /// (the unconfirmed report goes with it). Without this a report the server never
    /// took would hold its mailbox window shut: nothing new arrives to report.
    pub(crate) fn report_failed(&mut self, ids: Vec<u64>, retry_at: Instant) {
        let later = std::mem::replace(&mut self.pending, ids);
        self.pending.extend(later);
        if !self.pending.is_empty() || self.handled_bytes > self.confirmed_bytes {
            self.due = Some(self.due.map_or(retry_at, |due| due.min(retry_at)));
        }
    }

    /// A container of `bytes` delivered on the current connection was handled at
    /// `now` (whatever came of it). Returns `true` when half of `window` is handled
    /// and unreported, and the report should go at once.
    pub(crate) fn handled(&mut self, bytes: usize, window: u32, now: Instant) -> bool {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.handled_bytes = self.handled_bytes.saturating_add(bytes);
        if self.due.is_none() {
            self.due = Some(now + ACK_DELAY);
        }
        self.handled_bytes - self.confirmed_bytes >= u64::from(window / 2).max(1)
    }

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
        let handled_bytes =
            (connected && self.handled_bytes > self.confirmed_bytes).then_some(self.handled_bytes);
        AckFlush {
            ids,
            prekeys_consumed,
            handled_bytes,
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
                prekeys_consumed: 1,
                handled_bytes: None,
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
                prekeys_consumed: 1,
                handled_bytes: None,
            }
        );
        assert_eq!(acks.flush(true).ids, vec![9]);
    }

    #[test]
    fn handled_bytes_are_reported_in_all_once_and_anew_per_connection() {
        let t0 = Instant::now();
        let mut acks = AckBatcher::default();
        assert!(!acks.handled(300, 1000, t0));
        assert_eq!(
            acks.due_at(),
            Some(t0 + ACK_DELAY),
            "a handled entry sets the time"
        );
        // Without a connection nothing is reported, and nothing is lost.
        assert_eq!(acks.flush(false).handled_bytes, None);
        assert!(!acks.handled(100, 1000, t0));
        let flush = acks.flush(true);
        assert!(flush.has_request(), "a report alone makes a request");
        assert_eq!(flush.handled_bytes, Some(400));
        acks.report_done(400);
        assert_eq!(acks.flush(true), AckFlush::default(), "reported once");
        // Half the window handled and unreported: report at once, cumulatively.
        assert!(acks.handled(500, 1000, t0));
        assert_eq!(acks.flush(true).handled_bytes, Some(900));
        acks.report_done(900);
        acks.new_connection();
        assert!(!acks.handled(10, 1000, t0));
        assert_eq!(acks.flush(true).handled_bytes, Some(10));
    }

    #[test]
    fn a_report_the_server_did_not_take_goes_again_with_its_ids() {
        let t0 = Instant::now();
        let retry = t0 + Duration::from_millis(300);
        let mut acks = AckBatcher::default();
        acks.processed(1, t0);
        acks.handled(700, 1000, t0);
        let failed = acks.flush(true);
        assert_eq!(failed.handled_bytes, Some(700));
        // Rate limited: the ids and the report wait for the retry.
        acks.processed(2, t0);
        acks.report_failed(failed.ids, retry);
        assert_eq!(
            acks.due_at(),
            Some(t0 + ACK_DELAY),
            "the earlier time stands"
        );
        let again = acks.flush(true);
        assert_eq!(again.ids, vec![1, 2]);
        assert_eq!(again.handled_bytes, Some(700));
        acks.report_failed(again.ids, retry);
        assert_eq!(acks.due_at(), Some(retry));
        let third = acks.flush(true);
        acks.report_done(700);
        assert_eq!(third.ids, vec![1, 2]);
        assert_eq!(acks.flush(true), AckFlush::default());
    }
}
