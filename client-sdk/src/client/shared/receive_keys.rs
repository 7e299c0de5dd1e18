//! A meeting's media receive keys, derived at each sender's first frame of an epoch.
//!
//! Every epoch brings a key per roster sender. Deriving them all when the epoch
//! arrives (an HKDF and a map insert each) was a sixth of a 100-device rekey's CPU
//! (`docs/benchmarks.md`, "Rekey: what 100 simulated devices cost two cores"), mostly
//! for senders that never send. So an epoch's key and the senders it accepts are kept,
//! and a sender's key is derived when a frame under its key id first fails as unknown.
//!
//! Bounds: one meeting key per held epoch (the meeting core drops them after its grace
//! window), and at most [`MAX_RECEIVER_KEYS`] accepted (epoch, sender) pairs, the bound
//! of the receiver itself.

use std::collections::{BTreeMap, BTreeSet};

use crate::meeting::{MeetingKey, SFRAME_SUITE};
use crate::sframe::{MAX_RECEIVER_KEYS, SframeReceiver};

/// Why an epoch's senders were not (all) accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AcceptError {
    /// A different key for an epoch already held: the first one stays.
    #[error("a second, different key for epoch {epoch}; the first one stays")]
    KeyConflict { epoch: u64 },
    /// The receiver's bound on keys is reached.
    #[error("more than {max} senders' receive keys")]
    TooMany { max: usize },
}

/// The epochs' keys and who may send in each.
#[derive(Default)]
pub(crate) struct ReceiveKeys {
    /// Zeroized on drop (`MeetingKey`); boxed so that the map's rebalancing moves
    /// pointers, not key bytes (a moved-from copy would not be wiped).
    epochs: BTreeMap<u64, Box<MeetingKey>>,
    /// (epoch, sender index) whose frames are accepted.
    accepted: BTreeSet<(u64, u32)>,
}

impl ReceiveKeys {
    /// Accepts frames of `key`'s epoch from `senders`.
    pub(crate) fn accept(
        &mut self,
        key: &MeetingKey,
        senders: impl IntoIterator<Item = u32>,
    ) -> Result<(), AcceptError> {
        let epoch = key.epoch().get();
        match self.epochs.get(&epoch) {
            Some(held) if **held != *key => return Err(AcceptError::KeyConflict { epoch }),
            Some(_) => {}
            None => {
                self.epochs.insert(epoch, Box::new(key.clone()));
            }
        }
        for index in senders {
            if self.accepted.len() >= MAX_RECEIVER_KEYS && !self.accepted.contains(&(epoch, index))
            {
                return Err(AcceptError::TooMany {
                    max: MAX_RECEIVER_KEYS,
                });
            }
            self.accepted.insert((epoch, index));
        }
        Ok(())
    }

    /// Registers in `receiver` the key of sender `index` in `epoch` if that sender is
    /// accepted there and its key is not registered yet; returns whether it did.
    pub(crate) fn derive(&self, receiver: &mut SframeReceiver, epoch: u64, index: u32) -> bool {
        if !self.accepted.contains(&(epoch, index)) {
            return false;
        }
        let Some(key) = self.epochs.get(&epoch) else {
            return false;
        };
        let Ok(kid) = key.sframe_kid(index) else {
            return false;
        };
        !receiver.has_key(kid)
            && receiver
                .add_key(kid, SFRAME_SUITE, key.sframe_base_key(index).as_slice())
                .is_ok()
    }

    /// Forgets `epoch`.
    pub(crate) fn drop_epoch(&mut self, epoch: u64) {
        self.epochs.remove(&epoch);
        self.accepted.retain(|(e, _)| *e != epoch);
    }

    /// Whether frames of sender `index` in `epoch` are accepted (for tests).
    #[cfg(test)]
    pub(crate) fn accepts(&self, epoch: u64, index: u32) -> bool {
        self.accepted.contains(&(epoch, index))
    }

    /// Whether `epoch`'s key is held (for tests).
    #[cfg(test)]
    pub(crate) fn holds(&self, epoch: u64) -> bool {
        self.epochs.contains_key(&epoch)
    }
}
