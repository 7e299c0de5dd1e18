//! Telling a dropped device from one that is reconnecting (sans-IO).
//!
//! When a member's connection leaves the SFU room, every device waits `drop_after_ms`
//! for the same device to send media again (from any connection). If it does not, the
//! device has dropped out: the key leader rekeys without it, and if the key leader is
//! the one that dropped, its successor takes over and rekeys. A reconnect inside the
//! window costs nothing. (A device that never sends media is not tracked: it leaves
//! only by `Leave` or removal.)

use std::collections::BTreeMap;

use crate::DeviceId;

/// Departure candidates: device → (sender index, left at, deadline), in ms of one
/// monotonic clock.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    pending: BTreeMap<DeviceId, (u32, u64, u64)>,
}

impl Presence {
    /// The connection of `device` (sender `index`) left the room at `now`.
    pub(crate) fn left(&mut self, device: DeviceId, index: u32, now: u64, window: u64) {
        self.pending
            .entry(device)
            .or_insert((index, now, now.saturating_add(window)));
    }

    /// Earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|(_, _, at)| *at).min()
    }

    /// Devices whose deadline passed without media seen after they left. `last_seen`
    /// gives the last time a frame of a sender index decrypted.
    pub(crate) fn dropped(
        &mut self,
        now: u64,
        last_seen: impl Fn(u32) -> Option<u64>,
    ) -> Vec<DeviceId> {
        let mut out = Vec::new();
        self.pending.retain(|device, (index, left_at, at)| {
            if *at > now {
                return true;
            }
            if last_seen(*index).is_none_or(|seen| seen <= *left_at) {
                out.push(*device);
            }
            false
        });
        out
    }

    /// Forgets `device` (it left explicitly or was removed).
    pub(crate) fn forget(&mut self, device: &DeviceId) {
        self.pending.remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u8) -> DeviceId {
        DeviceId::from_slice(&[n; 16]).unwrap()
    }

    #[test]
    fn a_device_silent_past_the_window_has_dropped() {
        let mut p = Presence::default();
        p.left(dev(1), 1, 1_000, 500);
        assert_eq!(p.next_deadline(), Some(1_500));
        assert!(p.dropped(1_499, |_| Some(900)).is_empty());
        assert_eq!(p.dropped(1_500, |_| Some(900)), vec![dev(1)]);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_device_that_sends_again_in_the_window_is_kept() {
        let mut p = Presence::default();
        p.left(dev(1), 1, 1_000, 500);
        p.left(dev(2), 2, 1_000, 500);
        assert_eq!(
            p.dropped(2_000, |i| (i == 1).then_some(1_200)),
            vec![dev(2)]
        );
    }

    #[test]
    fn forgetting_cancels_the_timer() {
        let mut p = Presence::default();
        p.left(dev(1), 1, 0, 10);
        p.forget(&dev(1));
        assert!(p.dropped(100, |_| None).is_empty());
    }
}
