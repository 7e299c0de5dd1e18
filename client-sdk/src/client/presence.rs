//! Telling a dropped device from one that is reconnecting (sans-IO).
//!
//! When a member device's connection leaves the SFU room (`MemberLeft`, which names the
//! device), every device waits `drop_after` for that device to join the room again
//! (`MemberJoined`, from any connection). If it does not, the device has dropped out:
//! the key leader rekeys without it, and if the key leader is the one that dropped, its
//! successor takes over and rekeys. A reconnect inside the window costs nothing.
//!
//! Liveness is room presence, never media: a muted device (no frames for minutes) that
//! stays connected is present, so nobody can depose a silent key leader (security
//! review M2), and nobody can keep a departed device "alive" by forging its frames.

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

    /// Devices whose deadline passed without them joining the room again.
    pub(crate) fn dropped(&mut self, now: u64) -> Vec<DeviceId> {
        let mut out = Vec::new();
        self.pending.retain(|device, (_, _, at)| {
            if *at > now {
                return true;
            }
            out.push(*device);
            false
        });
        out
    }

    /// Forgets `device`: it joined the room again, left explicitly or was removed.
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
    fn a_device_gone_past_the_window_has_dropped() {
        let mut p = Presence::default();
        p.left(dev(1), 1, 1_000, 500);
        assert_eq!(p.next_deadline(), Some(1_500));
        assert!(p.dropped(1_499).is_empty());
        assert_eq!(p.dropped(1_500), vec![dev(1)]);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_device_that_rejoins_in_the_window_is_kept() {
        let mut p = Presence::default();
        p.left(dev(1), 1, 1_000, 500);
        p.left(dev(2), 2, 1_000, 500);
        p.forget(&dev(1)); // MemberJoined
        assert_eq!(p.dropped(2_000), vec![dev(2)]);
    }

    #[test]
    fn forgetting_cancels_the_timer() {
        let mut p = Presence::default();
        p.left(dev(1), 1, 0, 10);
        p.forget(&dev(1));
        assert!(p.dropped(100).is_empty());
    }
}
