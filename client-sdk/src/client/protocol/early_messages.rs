//! Reliable in-meeting messages that arrive before this device holds their epoch's key
//! (sans-IO).
//!
//! After a rekey, members switch to the new epoch at slightly different times: a member
//! that switched first may send a chat message that reaches this device before the
//! `Rekey` that carries the key. Dropping it would break the reliable mode's promise, so
//! it is kept here, still sealed, until the key arrives (then opened in arrival order,
//! before anything that arrives later) or until a later epoch's message shows that the
//! key will never come to this device. Bounded in count and bytes; beyond the bound a
//! message is dropped and counted.

use std::collections::VecDeque;

/// Most messages kept.
pub(crate) const MAX_EARLY_MESSAGES: usize = 256;
/// Most bytes kept (sealed frames).
pub(crate) const MAX_EARLY_MESSAGE_BYTES: usize = 256 * 1024;

/// Sealed reliable messages waiting for their epoch's key.
#[derive(Debug, Default)]
pub(crate) struct EarlyMessages {
    kept: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    /// Messages dropped because the bound was reached.
    dropped: u64,
}

impl EarlyMessages {
    /// Keeps `frame`, a message of `epoch` (above every epoch held here: the caller
    /// checks). Returns whether it was kept.
    pub(crate) fn keep(&mut self, epoch: u64, frame: Vec<u8>) -> bool {
        if self.kept.len() >= MAX_EARLY_MESSAGES
            || self.bytes.saturating_add(frame.len()) > MAX_EARLY_MESSAGE_BYTES
        {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.bytes += frame.len();
        self.kept.push_back((epoch, frame));
        true
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
        for (epoch, frame) in self.kept.drain(..) {
            if ready(epoch) {
                out.push((true, frame));
            } else if stale(epoch) {
                out.push((false, frame));
            } else {
                keep.push_back((epoch, frame));
            }
        }
        self.kept = keep;
        self.bytes = self.kept.iter().map(|(_, f)| f.len()).sum();
        out
    }

    /// Whether nothing is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Messages dropped at the bound so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_in_arrival_order_once_their_epoch_is_held() {
        let mut early = EarlyMessages::default();
        assert!(early.keep(3, vec![1]));
        assert!(early.keep(4, vec![2]));
        assert!(early.keep(3, vec![3]));
        let out = early.take(|e| e == 3, |_| false);
        assert_eq!(out, vec![(true, vec![1]), (true, vec![3])]);
        assert!(!early.is_empty());
        let out = early.take(|e| e <= 4, |_| false);
        assert_eq!(out, vec![(true, vec![2])]);
        assert!(early.is_empty());
    }

    #[test]
    fn messages_of_an_epoch_that_will_never_come_are_released_as_stale() {
        let mut early = EarlyMessages::default();
        early.keep(3, vec![1]);
        early.keep(5, vec![2]);
        let out = early.take(|e| e == 5, |e| e < 5);
        assert_eq!(out, vec![(false, vec![1]), (true, vec![2])]);
    }

    #[test]
    fn the_bound_holds_in_count_and_in_bytes() {
        let mut early = EarlyMessages::default();
        for _ in 0..MAX_EARLY_MESSAGES {
            assert!(early.keep(1, vec![0]));
        }
        assert!(!early.keep(1, vec![0]));
        assert_eq!(early.dropped(), 1);
        let mut early = EarlyMessages::default();
        assert!(early.keep(1, vec![0; MAX_EARLY_MESSAGE_BYTES]));
        assert!(!early.keep(1, vec![0]));
        early.take(|_| true, |_| false);
        assert!(early.keep(1, vec![0; 10]));
    }
}
