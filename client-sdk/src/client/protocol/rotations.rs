//! Retrying room rotations (sans-IO).
//!
//! The key leader rotates the SFU room to each new epoch, signed with the old epoch's
//! room-auth key. The SFU lets a successor rotate only once the leader before it has
//! been gone a while, and rate-limits rotations, so a refused rotation is retried with
//! backoff; once the attempts are spent the app is told, since a room left at the old
//! epoch keeps routing media to removed participants. One rotation per meeting is
//! pending at a time: a newer one replaces it.

use std::time::{Duration, Instant};

use crate::meeting::{Epoch, MeetingId};

/// Attempts at rotating a room before the app is told it failed.
pub(crate) const ROTATE_ATTEMPTS: u32 = 8;
/// Delay before the first rotation retry, ms; doubled for each further one.
pub(crate) const ROTATE_RETRY_MS: u64 = 250;
/// Longest delay between rotation retries, ms (eight attempts span about 20 s, longer
/// than the SFU's default succession grace of 10 s).
pub(crate) const ROTATE_RETRY_MAX_MS: u64 = 4_000;

/// Longest wait a server's rate limit may impose on one rotation retry, ms (a
/// compromised server cannot park a rotation for hours).
pub(crate) const MAX_SERVER_WAIT_MS: u64 = 30_000;

/// A room rotation being attempted.
#[derive(Debug, Clone)]
pub(crate) struct PendingRotation {
    /// When to try next.
    pub(crate) at: Instant,
    pub(crate) meeting: MeetingId,
    /// The epoch the room rotates to.
    pub(crate) to: Epoch,
    /// The old epoch's room-auth key's signature over the rotation (made while the old
    /// key was held: it is dropped after the grace window, and a retry may come later).
    pub(crate) signature: Vec<u8>,
    /// Attempts so far.
    pub(crate) attempt: u32,
}

/// The rotations waiting for their next attempt.
#[derive(Debug, Default)]
pub(crate) struct Rotations {
    pending: Vec<PendingRotation>,
}

/// The attempts at a rotation are spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RotationGaveUp {
    pub(crate) meeting: MeetingId,
    pub(crate) epoch: Epoch,
}

impl Rotations {
    /// A new rotation of `meeting` supersedes the one pending.
    pub(crate) fn cancel(&mut self, meeting: &MeetingId) {
        self.pending.retain(|r| r.meeting != *meeting);
    }

    /// Schedules another attempt at `rotation` (which just failed at `now`), or gives
    /// up when its attempts are spent. The attempt waits out the backoff, and at least
    /// `retry_after` when the server's rate limit asked for it (capped at
    /// [`MAX_SERVER_WAIT_MS`]).
    pub(crate) fn retry(
        &mut self,
        mut rotation: PendingRotation,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Result<(), RotationGaveUp> {
        if rotation.attempt + 1 >= ROTATE_ATTEMPTS {
            return Err(RotationGaveUp {
                meeting: rotation.meeting,
                epoch: rotation.to,
            });
        }
        let backoff = Duration::from_millis(
            (ROTATE_RETRY_MS << rotation.attempt.min(4)).min(ROTATE_RETRY_MAX_MS),
        );
        let asked = retry_after
            .unwrap_or_default()
            .min(Duration::from_millis(MAX_SERVER_WAIT_MS));
        rotation.at = now + backoff.max(asked);
        rotation.attempt += 1;
        self.cancel(&rotation.meeting);
        self.pending.push(rotation);
        Ok(())
    }

    /// The rotations due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<PendingRotation> {
        let (due, later) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|r| r.at <= now);
        self.pending = later;
        due
    }

    /// When the next attempt is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.pending.iter().map(|r| r.at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(at: Instant, to: u64) -> PendingRotation {
        let to = Epoch(to);
        PendingRotation {
            at,
            meeting: MeetingId::from_slice(&[1; 32]).unwrap(),
            to,
            signature: vec![1, 2, 3],
            attempt: 0,
        }
    }

    #[test]
    fn a_refused_rotation_is_retried_with_capped_backoff_then_given_up() {
        let t0 = Instant::now();
        let mut rotations = Rotations::default();
        let mut r = rotation(t0, 5);
        let mut now = t0;
        let mut delays = Vec::new();
        loop {
            match rotations.retry(r, None, now) {
                Ok(()) => {}
                Err(gave_up) => {
                    assert_eq!(gave_up.epoch, Epoch(5));
                    break;
                }
            }
            let at = rotations.next_at().unwrap();
            delays.push(at.duration_since(now).as_millis());
            assert!(rotations.take_due(at - Duration::from_millis(1)).is_empty());
            let mut due = rotations.take_due(at);
            r = due.remove(0);
            now = at;
        }
        assert_eq!(delays, vec![250, 500, 1_000, 2_000, 4_000, 4_000, 4_000]);
        assert_eq!(delays.len() as u32 + 1, ROTATE_ATTEMPTS);
        assert_eq!(rotations.next_at(), None);
    }

    #[test]
    fn a_newer_rotation_of_the_meeting_replaces_the_pending_one() {
        let t0 = Instant::now();
        let mut rotations = Rotations::default();
        rotations.retry(rotation(t0, 5), None, t0).unwrap();
        rotations.retry(rotation(t0, 6), None, t0).unwrap();
        let due = rotations.take_due(t0 + Duration::from_secs(10));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].to, Epoch(6));
    }

    /// The server's rate limit sets the wait when it is longer than the backoff, up to
    /// a bound.
    #[test]
    fn a_rate_limited_rotation_waits_as_long_as_the_server_asks_within_a_bound() {
        let t0 = Instant::now();
        let mut rotations = Rotations::default();
        rotations
            .retry(rotation(t0, 5), Some(Duration::from_secs(3)), t0)
            .unwrap();
        assert_eq!(rotations.next_at(), Some(t0 + Duration::from_secs(3)));
        let mut rotations = Rotations::default();
        rotations
            .retry(rotation(t0, 5), Some(Duration::from_millis(10)), t0)
            .unwrap();
        assert_eq!(rotations.next_at(), Some(t0 + Duration::from_millis(250)));
        let mut rotations = Rotations::default();
        rotations
            .retry(rotation(t0, 5), Some(Duration::from_secs(3_600)), t0)
            .unwrap();
        assert_eq!(
            rotations.next_at(),
            Some(t0 + Duration::from_millis(MAX_SERVER_WAIT_MS))
        );
    }
}
