//! [`Epoch`]: the generation of a meeting key.

use std::fmt;

/// A meeting epoch: the generation of the meeting key. Epoch 0 is the key a meeting
/// starts with; each rekey or ratchet moves to a greater one. Epochs travel as plain
/// `u64` on the wire (and the SFU's rooms count with the same numbers); inside the key
/// schedule they are this type, so an epoch is never mixed up with a time or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch a meeting starts at.
    pub const ZERO: Epoch = Epoch(0);

    /// The number, as the wire carries it.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The epoch after this one, unless the counter is exhausted.
    #[must_use]
    pub fn next(self) -> Option<Epoch> {
        self.0.checked_add(1).map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_and_step_without_wrapping() {
        assert!(Epoch::ZERO < Epoch(1));
        assert_eq!(Epoch(41).next(), Some(Epoch(42)));
        assert_eq!(Epoch(u64::MAX).next(), None);
        assert_eq!(Epoch(7).to_string(), "7");
    }
}
