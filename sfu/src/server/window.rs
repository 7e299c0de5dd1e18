//! A connection's mailbox window (docs/protocol.md 10.4): how many bytes of delivered
//! containers the client may have outstanding, i.e. delivered but not yet reported
//! handled.
//!
//! Why: a client's control stream carries events and the answers to its requests in
//! one order, and a client that waits for an answer reads the events ahead of it into
//! memory it bounds. A backlog delivered as fast as the stream allows could overflow
//! that bound while the client waits, at every reconnection. The window keeps stored
//! entries (the delivery pass) within what the client said it can hold; containers
//! delivered live as they are sent count against it but never wait, so a sender's
//! answer never depends on a recipient's reading.
//!
//! The client reports a cumulative count of handled bytes (`AckContainers.
//! handled_bytes`), so reports may be lost or reordered without the window leaking.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// One connection's mailbox window. Without [`open`](Self::open) (or opened with 0)
/// nothing ever waits.
#[derive(Debug, Default)]
pub(crate) struct MailboxWindow {
    /// Bytes the client accepts outstanding; 0: no window.
    size: AtomicU64,
    /// Container bytes delivered on this connection so far.
    delivered: AtomicU64,
    /// Container bytes the client reported handled so far (never above `delivered`).
    handled: AtomicU64,
    /// Woken when a report frees room.
    freed: Notify,
}

impl MailboxWindow {
    /// Sets the window the client announced in `Hello`.
    pub(crate) fn open(&self, bytes: u32) {
        self.size.store(u64::from(bytes), Ordering::Release);
    }

    /// Whether the client asked for a window (deliveries may then wait for its
    /// reports, so nothing that answers its requests may wait for a delivery).
    pub(crate) fn is_open(&self) -> bool {
        self.size.load(Ordering::Acquire) > 0
    }

    /// `bytes` of container were queued for the client.
    pub(crate) fn delivered(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.delivered.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The client reports `total` bytes handled since the connection opened. Reports
    /// only move forward, and never past what was delivered.
    pub(crate) fn handled(&self, total: u64) {
        let delivered = self.delivered.load(Ordering::Acquire);
        let total = total.min(delivered);
        if self.handled.fetch_max(total, Ordering::AcqRel) < total {
            self.freed.notify_waiters();
        }
    }

    /// Bytes delivered and not reported handled.
    pub(crate) fn outstanding(&self) -> u64 {
        let handled = self.handled.load(Ordering::Acquire);
        self.delivered
            .load(Ordering::Acquire)
            .saturating_sub(handled)
    }

    /// Whether a container of `bytes` may be delivered now: always without a window
    /// or with nothing outstanding (so one entry larger than the window still goes),
    /// otherwise if it fits.
    fn fits(&self, bytes: usize) -> bool {
        let size = self.size.load(Ordering::Acquire);
        let outstanding = self.outstanding();
        size == 0
            || outstanding == 0
            || outstanding.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX)) <= size
    }

    /// Waits until a container of `bytes` fits (see `fits`). Cancel-safe: callers race
    /// it against the connection's end.
    pub(crate) async fn room_for(&self, bytes: usize) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a report between the check and the
            // wait is not missed.
            freed.as_mut().enable();
            if self.fits(bytes) {
                return;
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::Arc;

    #[test]
    fn without_a_window_everything_fits() {
        let w = MailboxWindow::default();
        w.delivered(10 << 20);
        assert!(w.fits(10 << 20));
        w.open(0);
        assert!(w.fits(usize::MAX));
    }

    #[test]
    fn one_entry_larger_than_the_window_goes_when_nothing_is_outstanding() {
        let w = MailboxWindow::default();
        w.open(1000);
        assert!(w.fits(5000));
        w.delivered(5000);
        assert!(!w.fits(1));
        w.handled(5000);
        assert!(w.fits(1000));
        assert!(w.fits(5000));
    }

    #[test]
    fn reports_are_cumulative_and_never_pass_what_was_delivered() {
        let w = MailboxWindow::default();
        w.open(1000);
        w.delivered(600);
        w.delivered(300);
        assert_eq!(w.outstanding(), 900);
        assert!(!w.fits(200));
        // A report beyond what was delivered frees no more than was delivered.
        w.handled(5000);
        assert_eq!(w.outstanding(), 0);
        w.delivered(700);
        assert_eq!(w.outstanding(), 700);
        // An older report arriving late changes nothing.
        w.handled(600);
        assert_eq!(w.outstanding(), 700);
        w.handled(1200);
        assert_eq!(w.outstanding(), 400);
        assert!(w.fits(600));
        assert!(!w.fits(601));
    }

    #[tokio::test]
    async fn a_delivery_waits_for_a_report_that_frees_room() {
        let w = Arc::new(MailboxWindow::default());
        w.open(1000);
        w.delivered(800);
        let waiting = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.room_for(500).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Freeing too little keeps it waiting.
        w.handled(200);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        w.handled(300);
        waiting.await.unwrap();
    }
}
