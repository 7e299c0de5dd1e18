//! Reliable in-meeting messages that arrive before this device holds their epoch's key
//! (sans-IO).
//!
//! After a rekey, members switch to the new epoch at slightly different times: a member
//! that switched first may send a chat message that reaches this device before the
//! `Rekey` that carries the key. Dropping it would break the reliable mode's promise, so
//! it is kept here, still sealed, until the key arrives (then opened in arrival order,
//! before anything that arrives later) or until a later epoch's message shows that the
//! key will never come to this device. Nothing here is authenticated yet (that needs
//! the key), so anyone in the room could send junk claiming a future epoch: only the
//! next [`MAX_EPOCHS_AHEAD`] epochs are kept (the caller checks), entries expire after
//! [`MAX_EARLY_AGE`], and at the bound (count or bytes) the oldest entry makes room, so
//! junk cannot keep real messages out for long.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most messages kept.
pub(crate) const MAX_EARLY_MESSAGES: usize = 256;
/// Most bytes kept (sealed frames).
pub(crate) const MAX_EARLY_MESSAGE_BYTES: usize = 256 * 1024;
/// How far above the newest epoch held a message may be and still be kept: a rekey
/// moves one epoch, two in a row (a leave, then a removal) two.
pub(crate) const MAX_EPOCHS_AHEAD: u64 = 2;
/// How long a message is kept: a key that takes longer is not coming (the key leader
/// resends a lost key within a few seconds).
pub(crate) const MAX_EARLY_AGE: Duration = Duration::from_secs(10);

/// Sealed reliable messages waiting for their epoch's key.
#[derive(Debug, Default)]
pub(crate) struct EarlyMessages {
    kept: VecDeque<(u64, Instant, Vec<u8>)>,
    bytes: usize,
    /// Messages dropped at the bound or expired.
    dropped: u64,
}

impl EarlyMessages {
    /// Keeps `frame`, a message of `epoch` (above every epoch held here and at most
    /// [`MAX_EPOCHS_AHEAD`] above the newest: the caller checks), arrived at `now`.
    /// Expired entries go first; at the bound the oldest entries make room. Returns
    /// whether it was kept (only a frame larger than the whole bound is not).
    pub(crate) fn keep(&mut self, epoch: u64, frame: Vec<u8>, now: Instant) -> bool {
        self.expire(now);
        if frame.len() > MAX_EARLY_MESSAGE_BYTES {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        while self.kept.len() >= MAX_EARLY_MESSAGES
            || self.bytes.saturating_add(frame.len()) > MAX_EARLY_MESSAGE_BYTES
        {
            self.drop_oldest();
        }
        self.bytes += frame.len();
        self.kept.push_back((epoch, now, frame));
        true
    }

    /// Drops the entries older than [`MAX_EARLY_AGE`] at `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .kept
            .front()
            .is_some_and(|(_, at, _)| now.saturating_duration_since(*at) > MAX_EARLY_AGE)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((_, _, frame)) = self.kept.pop_front() {
            self.bytes = self.bytes.saturating_sub(frame.len());
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Takes, in arrival order, every message kept that `ready(epoch)` says can be opened
    /// now, and those that `stale(epoch)` says never can; both come out, `stale` ones
    /// flagged `false`. The rest stay, in order.
    pub(crate) fn take(
        &mut self,
        ready: impl Fn(u64) -> bool,
        stale: impl Fn(u64) -> bool,
    ) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.kept.len());
        for (epoch, at, frame) in self.kept.drain(..) {
            if ready(epoch) {
                out.push((true, frame));
            } else if stale(epoch) {
                out.push((false, frame));
            } else {
                keep.push_back((epoch, at, frame));
            }
        }
        self.kept = keep;
        self.bytes = self.kept.iter().map(|(_, _, f)| f.len()).sum();
        out
    }

    /// Whether nothing is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Messages dropped at the bound or expired so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_in_arrival_order_once_their_epoch_is_held() {
        let now = Instant::now();
        let mut early = EarlyMessages::default();
        assert!(early.keep(3, vec![1], now));
        assert!(early.keep(4, vec![2], now));
        assert!(early.keep(3, vec![3], now));
        let out = early.take(|e| e == 3, |_| false);
        assert_eq!(out, vec![(true, vec![1]), (true, vec![3])]);
        assert!(!early.is_empty());
        let out = early.take(|e| e <= 4, |_| false);
        assert_eq!(out, vec![(true, vec![2])]);
        assert!(early.is_empty());
    }

    #[test]
    fn messages_of_an_epoch_that_will_never_come_are_released_as_stale() {
        let now = Instant::now();
        let mut early = EarlyMessages::default();
        early.keep(3, vec![1], now);
        early.keep(5, vec![2], now);
        let out = early.take(|e| e == 5, |e| e < 5);
        assert_eq!(out, vec![(false, vec![1]), (true, vec![2])]);
    }

    /// Junk that fills the buffer (nothing can be authenticated before the key) makes
    /// room for newer messages: oldest first, in count and in bytes.
    #[test]
    fn at_the_bound_the_oldest_make_room() {
        let now = Instant::now();
        let mut early = EarlyMessages::default();
        for _ in 0..MAX_EARLY_MESSAGES {
            assert!(early.keep(1, vec![0], now));
        }
        assert!(early.keep(2, vec![9], now));
        assert_eq!(early.dropped(), 1);
        let out = early.take(|e| e == 2, |_| false);
        assert_eq!(out, vec![(true, vec![9])]);
        let mut early = EarlyMessages::default();
        assert!(early.keep(1, vec![0; MAX_EARLY_MESSAGE_BYTES], now));
        assert!(early.keep(1, vec![7], now));
        assert_eq!(early.take(|_| true, |_| false), vec![(true, vec![7])]);
        assert!(!early.keep(1, vec![0; MAX_EARLY_MESSAGE_BYTES + 1], now));
    }

    #[test]
    fn entries_expire() {
        let now = Instant::now();
        let mut early = EarlyMessages::default();
        early.keep(2, vec![1], now);
        early.keep(2, vec![2], now + MAX_EARLY_AGE);
        early.expire(now + MAX_EARLY_AGE + Duration::from_millis(1));
        assert_eq!(early.take(|_| true, |_| false), vec![(true, vec![2])]);
        assert_eq!(early.dropped(), 1);
    }
}
