//! Safety-words round messages that arrive before this device's round of their epoch
//! has started (sans-IO).
//!
//! Devices switch epoch at slightly different times, and each starts its round only
//! once the epoch has settled ([`super::sas_timing`]), so the first commitments of an
//! epoch reach most devices before their own round runs. Dropping them would leave the
//! round waiting for resends; they are kept here instead, unverified (the round
//! verifies each when it is handed over), for **one** epoch: the highest seen above
//! the round running here. Bounded in count and size; a message of a lower epoch than
//! the one kept, or beyond the bound, is dropped (resends bring what matters again).

use conclave_proto::v1;

/// Most early messages kept (two per device of the largest meetings, with room).
pub(crate) const MAX_EARLY_MESSAGES: usize = 1_024;

/// The early messages of one future epoch.
#[derive(Debug, Default)]
pub(crate) struct EarlyRoundMessages {
    epoch: u64,
    messages: Vec<v1::SasRoundMessage>,
}

impl EarlyRoundMessages {
    /// Keeps `message`, whose epoch is above the epoch of the round running here (if
    /// any) and not below this device's sending epoch (the caller checks both), if its
    /// epoch is at most `max_epoch`: one past the newest epoch whose key this device
    /// holds (its Rekey may not have arrived yet), no further. A newer epoch replaces
    /// the one kept. Returns whether it was kept.
    ///
    /// The bound is what stops an unverified message from far ahead (`u64::MAX`, from
    /// any room member or the server) taking the buffer: before, one did for good, and
    /// every real early message was dropped.
    pub(crate) fn keep(&mut self, message: v1::SasRoundMessage, max_epoch: u64) -> bool {
        if message.epoch < self.epoch || message.epoch > max_epoch {
            return false;
        }
        if message.epoch > self.epoch {
            self.epoch = message.epoch;
            self.messages.clear();
        }
        // A resend of a message already kept adds nothing.
        let step = message.step.as_ref().map(std::mem::discriminant);
        let same = |m: &v1::SasRoundMessage| {
            m.device_id == message.device_id && m.step.as_ref().map(std::mem::discriminant) == step
        };
        if self.messages.iter().any(same) || self.messages.len() >= MAX_EARLY_MESSAGES {
            return false;
        }
        self.messages.push(message);
        true
    }

    /// The messages kept for `epoch`, in arrival order; everything kept is dropped,
    /// and the next message of any epoch may be kept again.
    pub(crate) fn take(&mut self, epoch: u64) -> Vec<v1::SasRoundMessage> {
        let messages = std::mem::take(&mut self.messages);
        let kept = std::mem::take(&mut self.epoch);
        if kept == epoch { messages } else { Vec::new() }
    }

    /// Messages kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use conclave_proto::v1::sas_round_message::Step;

    use super::*;

    fn msg(epoch: u64, device: u8, nonce: bool) -> v1::SasRoundMessage {
        v1::SasRoundMessage {
            epoch,
            device_id: vec![device; 16],
            step: Some(if nonce {
                Step::Nonce(vec![device; 32])
            } else {
                Step::Commitment(vec![device; 32])
            }),
            signature: vec![0; 64],
        }
    }

    #[test]
    fn messages_of_the_epoch_kept_are_handed_over_once_in_arrival_order() {
        let mut early = EarlyRoundMessages::default();
        assert!(early.keep(msg(4, 1, false), 12));
        assert!(early.keep(msg(4, 2, false), 12));
        assert!(early.keep(msg(4, 1, true), 12));
        let taken = early.take(4);
        assert_eq!(
            taken,
            vec![msg(4, 1, false), msg(4, 2, false), msg(4, 1, true)]
        );
        assert!(early.take(4).is_empty());
    }

    #[test]
    fn a_newer_epoch_replaces_the_one_kept_and_older_ones_are_dropped() {
        let mut early = EarlyRoundMessages::default();
        assert!(early.keep(msg(4, 1, false), 12));
        assert!(early.keep(msg(5, 2, false), 12));
        assert!(!early.keep(msg(4, 3, false), 12));
        assert_eq!(early.len(), 1);
        // Taking another epoch's messages drops them.
        assert!(early.take(4).is_empty());
        assert_eq!(early.len(), 0);
    }

    #[test]
    fn resends_are_kept_once_and_the_count_is_bounded() {
        let mut early = EarlyRoundMessages::default();
        assert!(early.keep(msg(4, 1, false), 12));
        assert!(!early.keep(msg(4, 1, false), 12));
        for i in 0..MAX_EARLY_MESSAGES {
            let mut m = msg(4, 0, false);
            m.device_id = (i as u64).to_be_bytes().repeat(2);
            early.keep(m, 12);
        }
        assert_eq!(early.len(), MAX_EARLY_MESSAGES);
        assert!(!early.keep(msg(4, 9, true), 12));
    }

    #[test]
    fn a_message_from_far_ahead_is_dropped_and_cannot_lock_the_buffer() {
        let mut early = EarlyRoundMessages::default();
        // Holding keys up to epoch 4: early messages up to epoch 5.
        assert!(!early.keep(msg(u64::MAX, 1, false), 5));
        assert!(!early.keep(msg(6, 1, false), 5));
        assert!(early.keep(msg(5, 2, false), 5));
        // Once a round takes the messages (or another epoch's), the buffer starts over.
        assert_eq!(early.take(5).len(), 1);
        assert!(early.keep(msg(6, 4, false), 6));
        assert!(early.take(7).is_empty());
        assert!(early.keep(msg(6, 4, false), 6));
        assert_eq!(early.take(6), vec![msg(6, 4, false)]);
    }
}
