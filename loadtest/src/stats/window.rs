//! Which frames a receiver should have got, and which it did (sans-IO).
//!
//! Every sending stream numbers its frames from 0 and publishes the next number in an
//! atomic (see `sim::board`). When a receiver's measurement window opens it snapshots
//! every stream's next number; when it closes it snapshots again. For each stream the
//! receiver expects exactly the frames numbered in `[start, end)`: those sent while it
//! was in the meeting and settled. Streams that start later begin at 0. This is exact
//! (no guess about what was in flight), and it counts tail losses, unlike gap counting.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Frames of one stream at one receiver.
#[derive(Debug, Clone, Default)]
pub(crate) struct PairStats {
    start: u64,
    end: Option<u64>,
    received: u64,
    /// Frames that arrived while the window was open but are numbered at or past
    /// its end (moved out of `received` at the close).
    beyond: u64,
    duplicates: u64,
    highest: Option<u64>,
    /// Bit i set: frame `highest - i` arrived.
    seen: u128,
    /// RFC 3550 interarrival jitter, µs.
    jitter_us: f64,
    last_transit_us: Option<i64>,
}

impl PairStats {
    fn expected(&self) -> u64 {
        self.end.map_or(0, |end| end.saturating_sub(self.start))
    }

    /// At the close: frames counted as received whose number is at or past `end`
    /// were not expected (the sender had handed them to the SDK but not yet
    /// published their number when the end snapshot was taken, or they arrived
    /// before the receiver processed the close). They move from `received` to
    /// `beyond`, so `received` never exceeds `expected`.
    fn settle_at_close(&mut self) {
        let Some(end) = self.end else {
            // A stream the end snapshot does not know: nothing of it was expected.
            self.beyond += self.received;
            self.received = 0;
            return;
        };
        let Some(highest) = self.highest else {
            return;
        };
        if highest < end {
            return;
        }
        // Numbers end..=highest are ages 0..span of the bitmap.
        let span = highest - end + 1;
        let mask = if span >= 128 {
            u128::MAX
        } else {
            (1u128 << span) - 1
        };
        let late = u64::from((self.seen & mask).count_ones()).min(self.received);
        self.received -= late;
        self.beyond += late;
    }

    /// Records `seq`; false if it is a duplicate.
    fn mark(&mut self, seq: u64) -> bool {
        match self.highest {
            Some(h) if seq <= h => {
                let age = h - seq;
                if age >= 128 {
                    return true; // too old to tell: counted once
                }
                let bit = 1u128 << age;
                if self.seen & bit != 0 {
                    return false;
                }
                self.seen |= bit;
                true
            }
            Some(h) => {
                let shift = seq - h;
                self.seen = if shift >= 128 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.highest = Some(seq);
                true
            }
            None => {
                self.highest = Some(seq);
                self.seen = 1;
                true
            }
        }
    }
}

/// What a receiver made of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Inside the window: counts as received (latency recorded).
    Yes,
    /// Received again.
    Duplicate,
    /// Outside the window (before it opened, after it closed, or its own stream).
    Outside,
}

/// Hashes a stream id, a small integer the load test assigns, with one
/// multiplication: the map is looked up for every received frame, where SipHash showed
/// in profiles, and its keys are not attacker-chosen.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StreamHasher(u64);

impl Hasher for StreamHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One receiver's window over every stream of its meeting.
#[derive(Debug, Clone, Default)]
pub struct ReceiverWindow {
    own: Vec<u32>,
    open: bool,
    closed: bool,
    pairs: HashMap<u32, PairStats, BuildHasherDefault<StreamHasher>>,
}

impl ReceiverWindow {
    /// A window for a receiver whose own streams are `own` (never expected).
    #[must_use]
    pub fn new(own: Vec<u32>) -> Self {
        ReceiverWindow {
            own,
            ..Self::default()
        }
    }

    /// Opens the window at the streams' next numbers `snapshot` (stream → next seq).
    pub fn open(&mut self, snapshot: &[(u32, u64)]) {
        if self.open || self.closed {
            return;
        }
        self.open = true;
        for (stream, next) in snapshot {
            if !self.own.contains(stream) {
                self.pairs.entry(*stream).or_default().start = *next;
            }
        }
    }

    /// Whether the window is open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open && !self.closed
    }

    /// Closes the window at `snapshot`: frames numbered from there on no longer count.
    /// A window closed before it opened (a joiner still settling when the run or its
    /// participation ended) stays shut: an `open` arriving later is ignored.
    pub fn close(&mut self, snapshot: &[(u32, u64)]) {
        if self.closed {
            return;
        }
        self.closed = true;
        if !self.open {
            return;
        }
        for (stream, next) in snapshot {
            if !self.own.contains(stream) {
                self.pairs.entry(*stream).or_default().end = Some(*next);
            }
        }
        for pair in self.pairs.values_mut() {
            pair.settle_at_close();
        }
    }

    /// A frame of `stream` numbered `seq` arrived; `transit_us` = receive − send time.
    pub fn on_frame(&mut self, stream: u32, seq: u64, transit_us: i64) -> Counted {
        if !self.open || self.own.contains(&stream) {
            return Counted::Outside;
        }
        let closed = self.closed;
        let pair = self.pairs.entry(stream).or_default();
        if seq < pair.start || (closed && pair.end.is_none_or(|end| seq >= end)) {
            return Counted::Outside;
        }
        if !pair.mark(seq) {
            pair.duplicates += 1;
            return Counted::Duplicate;
        }
        pair.received += 1;
        if let Some(last) = pair.last_transit_us {
            #[allow(clippy::cast_precision_loss)] // µs differences far below 2^52
            let d = (transit_us - last).unsigned_abs() as f64;
            pair.jitter_us += (d - pair.jitter_us) / 16.0;
        }
        pair.last_transit_us = Some(transit_us);
        Counted::Yes
    }

    /// Frames expected (only known once closed).
    #[must_use]
    pub fn expected(&self) -> u64 {
        self.pairs.values().map(PairStats::expected).sum()
    }

    /// Frames received inside the window (at most one per number). Only frames
    /// numbered inside a closed window count, so this never exceeds
    /// [`Self::expected`]: the others are in [`Self::beyond_expected`].
    #[must_use]
    pub fn received(&self) -> u64 {
        if !self.closed {
            return 0; // never closed: nothing was expected
        }
        self.pairs.values().map(|p| p.received).sum()
    }

    /// Frames that arrived while the window was open but were numbered at or past
    /// its end snapshot (sent in the instant the snapshot was taken): real
    /// deliveries that were not expected, so not counted as received either.
    #[must_use]
    pub fn beyond_expected(&self) -> u64 {
        if !self.closed {
            // Never closed: every frame counted so far was beyond what it expected.
            return self.pairs.values().map(|p| p.received).sum();
        }
        self.pairs.values().map(|p| p.beyond).sum()
    }

    /// Duplicates.
    #[must_use]
    pub fn duplicates(&self) -> u64 {
        self.pairs.values().map(|p| p.duplicates).sum()
    }

    /// Jitter of every stream that delivered at least two frames, µs.
    pub fn jitters_us(&self) -> impl Iterator<Item = f64> + '_ {
        self.pairs
            .values()
            .filter(|p| p.received >= 2)
            .map(|p| p.jitter_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_sent_while_the_window_was_open_are_expected_exactly() {
        let mut w = ReceiverWindow::new(vec![9]);
        for seq in 0..5 {
            assert_eq!(w.on_frame(1, seq, 100), Counted::Outside, "not open yet");
        }
        w.open(&[(1, 5), (2, 0), (9, 40)]);
        for seq in 5..15 {
            if seq != 7 {
                assert_eq!(w.on_frame(1, seq, 100), Counted::Yes);
            }
        }
        assert_eq!(w.on_frame(1, 8, 100), Counted::Duplicate);
        assert_eq!(w.on_frame(9, 41, 100), Counted::Outside, "own stream");
        // Stream 3 started after the window opened: from 0.
        assert_eq!(w.on_frame(3, 0, 100), Counted::Yes);
        w.close(&[(1, 16), (2, 0), (3, 1), (9, 50)]);
        // Frame 15 was in flight at the close: still counts; 16 does not.
        assert_eq!(w.on_frame(1, 15, 100), Counted::Yes);
        assert_eq!(w.on_frame(1, 16, 100), Counted::Outside);
        assert_eq!(w.expected(), 11 + 1);
        assert_eq!(w.received(), 10 + 1);
        assert_eq!(w.duplicates(), 1);
    }

    #[test]
    fn frames_numbered_past_the_end_snapshot_are_beyond_expected_not_received() {
        let mut w = ReceiverWindow::new(vec![]);
        w.open(&[(1, 5)]);
        // 5..12 arrive before the receiver processes the close; the end snapshot
        // says 10 (frames 10 and 11 were sent as it was taken).
        for seq in 5..12 {
            assert_eq!(w.on_frame(1, seq, 100), Counted::Yes);
        }
        w.close(&[(1, 10)]);
        assert_eq!(w.expected(), 5);
        assert_eq!(w.received(), 5, "never more than expected");
        assert_eq!(w.beyond_expected(), 2);
        assert_eq!(w.on_frame(1, 12, 100), Counted::Outside);
        assert_eq!(w.beyond_expected(), 2);
    }

    #[test]
    fn a_stream_the_end_snapshot_does_not_know_is_all_beyond_expected() {
        let mut w = ReceiverWindow::new(vec![]);
        w.open(&[(1, 0)]);
        w.on_frame(2, 0, 100);
        w.on_frame(2, 1, 100);
        w.close(&[(1, 0)]);
        assert_eq!((w.expected(), w.received(), w.beyond_expected()), (0, 0, 2));
    }

    #[test]
    fn a_loss_and_a_late_frame_do_not_cancel_out() {
        let mut w = ReceiverWindow::new(vec![]);
        w.open(&[(1, 0)]);
        for seq in [0, 1, 3, 4] {
            w.on_frame(1, seq, 100); // 2 lost, 4 is past the end
        }
        w.close(&[(1, 4)]);
        assert_eq!((w.expected(), w.received(), w.beyond_expected()), (4, 3, 1));
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut w = ReceiverWindow::new(vec![]);
        w.open(&[(1, 0)]);
        w.on_frame(1, 0, 1_000);
        w.on_frame(1, 1, 2_600);
        let j: Vec<f64> = w.jitters_us().collect();
        assert_eq!(j, vec![100.0]);
    }

    #[test]
    fn a_window_never_opened_expects_nothing() {
        let mut w = ReceiverWindow::new(vec![]);
        w.close(&[(1, 10)]);
        assert_eq!(w.expected(), 0);
        assert_eq!(w.on_frame(1, 3, 0), Counted::Outside);
    }

    #[test]
    fn an_open_arriving_after_the_close_is_ignored() {
        // A joiner still settling when the measurement ended: its delayed open
        // comes after the close and must not start counting frames.
        let mut w = ReceiverWindow::new(vec![]);
        w.close(&[(1, 10)]);
        w.open(&[(1, 10)]);
        assert!(!w.is_open());
        assert_eq!(w.on_frame(1, 10, 0), Counted::Outside);
        assert_eq!((w.expected(), w.received(), w.beyond_expected()), (0, 0, 0));
    }

    #[test]
    fn a_window_never_closed_counts_nothing_as_received() {
        let mut w = ReceiverWindow::new(vec![]);
        w.open(&[(1, 0)]);
        w.on_frame(1, 0, 0);
        w.on_frame(1, 1, 0);
        assert_eq!((w.expected(), w.received(), w.beyond_expected()), (0, 0, 2));
    }
}
