//! Conclave's KID layout: `KID = (epoch << 12) | sender_index`.
//!
//! RFC 9605 leaves the meaning of the 64-bit key identifier to the application. Conclave
//! packs the meeting-key epoch into the high 52 bits and the sender's roster index into the
//! low 12 bits, so a receiver can tell from the clear header alone which epoch and which
//! sender a frame claims, and every (epoch, sender) pair has its own key and nonce space.

use super::SframeError;

/// Number of low KID bits that hold the sender index.
pub const SENDER_INDEX_BITS: u32 = 12;

/// Largest sender index that fits the KID (4095).
pub const MAX_SENDER_INDEX: u16 = (1 << SENDER_INDEX_BITS) - 1;

/// Largest epoch that fits the KID (2^52 - 1).
pub const MAX_EPOCH: u64 = u64::MAX >> SENDER_INDEX_BITS;

/// An SFrame key identifier, interpreted with Conclave's epoch/sender layout.
///
/// Any `u64` is a valid KID on the wire ([`Kid::new`]); [`Kid::for_sender`] builds one from
/// its parts and checks they fit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(u64);

impl Kid {
    /// Wraps a raw 64-bit KID (for example one read from a frame header).
    #[must_use]
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// Builds the KID of `sender_index` in `epoch`.
    ///
    /// # Errors
    /// [`SframeError::KidOutOfRange`] if `sender_index` > 4095 or `epoch` >= 2^52.
    pub const fn for_sender(epoch: u64, sender_index: u16) -> Result<Self, SframeError> {
        if sender_index > MAX_SENDER_INDEX || epoch > MAX_EPOCH {
            return Err(SframeError::KidOutOfRange);
        }
        // Both parts were range-checked above, so neither the shift nor the OR loses bits.
        Ok(Self((epoch << SENDER_INDEX_BITS) | sender_index as u64))
    }

    /// The raw 64-bit value carried in the SFrame header.
    #[must_use]
    pub const fn value(self) -> u64 {
        self.0
    }

    /// The epoch (high 52 bits).
    #[must_use]
    pub const fn epoch(self) -> u64 {
        self.0 >> SENDER_INDEX_BITS
    }

    /// The sender index (low 12 bits).
    #[must_use]
    pub const fn sender_index(self) -> u16 {
        // The mask keeps 12 bits, which always fit in a u16.
        (self.0 & MAX_SENDER_INDEX as u64) as u16
    }
}

impl From<Kid> for u64 {
    fn from(kid: Kid) -> Self {
        kid.0
    }
}

impl core::fmt::Debug for Kid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Kid({self})")
    }
}

impl core::fmt::Display for Kid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "0x{:x} (epoch {}, sender {})",
            self.0,
            self.epoch(),
            self.sender_index()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_for_sender_packs_epoch_and_sender_index() {
        let kid = Kid::for_sender(3, 17).unwrap();
        assert_eq!(kid.value(), (3 << 12) | 17);
        assert_eq!(kid.epoch(), 3);
        assert_eq!(kid.sender_index(), 17);
        assert_eq!(Kid::new(kid.value()), kid);
    }

    #[test]
    fn kid_for_sender_accepts_the_largest_parts() {
        let kid = Kid::for_sender(MAX_EPOCH, MAX_SENDER_INDEX).unwrap();
        assert_eq!(kid.value(), u64::MAX);
        assert_eq!(kid.epoch(), MAX_EPOCH);
        assert_eq!(kid.sender_index(), 4095);
    }

    #[test]
    fn kid_for_sender_rejects_out_of_range_parts() {
        assert_eq!(Kid::for_sender(0, 4096), Err(SframeError::KidOutOfRange));
        assert_eq!(Kid::for_sender(1 << 52, 0), Err(SframeError::KidOutOfRange));
    }

    #[test]
    fn kid_debug_shows_epoch_and_sender() {
        let kid = Kid::for_sender(2, 5).unwrap();
        assert_eq!(format!("{kid:?}"), "Kid(0x2005 (epoch 2, sender 5))");
    }
}
