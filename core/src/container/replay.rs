use std::collections::{BTreeSet, HashMap};
use std::fmt;

use super::ContainerError;
use crate::{ContainerId, DeviceId, UnixMillis};

/// Default number of unexpired container ids remembered.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Containers opened within their ttl, to reject replays.
///
/// Entries are keyed by *(sender device, container id)*: container ids travel in the
/// clear, so keying by id alone would let another sender pre-empt a genuine container
/// by reusing its id in a valid container of its own.
///
/// A container id is remembered until the container's own expiry; after that the
/// container is rejected as expired anyway, so forgetting it is safe. The cache is
/// bounded: when full, the id whose container expires soonest is forgotten (security
/// review L1: refusing instead let one sender whose containers open block every new
/// container). For a container sealed to a one-time prekey that is safe: opening it
/// deleted the prekey, so it cannot be opened again. A container sealed to a
/// last-resort prekey (never deleted) can be opened again once its id is forgotten,
/// until the prekey rotates away or the container expires (`docs/protocol.md` 2.3).
pub struct ReplayCache {
    seen: HashMap<(DeviceId, ContainerId), UnixMillis>,
    /// The same entries by expiry, to forget the soonest-expiring first.
    by_expiry: BTreeSet<(UnixMillis, DeviceId, ContainerId)>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache remembering at most `capacity` unexpired ids.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Number of ids remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets ids whose containers have expired at `now`.
    pub fn purge_expired(&mut self, now: UnixMillis) {
        while let Some(&(expires, sender, id)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(sender, id));
        }
    }

    /// Fails if `id` from `sender` was seen (and has not expired).
    pub(crate) fn check(
        &mut self,
        sender: DeviceId,
        id: &ContainerId,
        now: UnixMillis,
    ) -> Result<(), ContainerError> {
        if self
            .seen
            .get(&(sender, *id))
            .is_some_and(|expires| *expires > now)
        {
            return Err(ContainerError::Replayed { container_id: *id });
        }
        Ok(())
    }

    /// Remembers `id` until `expires_at`, forgetting the soonest-expiring ids if the
    /// cache is full. Call only after [`Self::check`] succeeded.
    pub(crate) fn record(&mut self, sender: DeviceId, id: ContainerId, expires_at: UnixMillis) {
        if let Some(old) = self.seen.insert((sender, id), expires_at) {
            self.by_expiry.remove(&(old, sender, id));
        }
        self.by_expiry.insert((expires_at, sender, id));
        while self.seen.len() > self.capacity {
            let Some((_, s, i)) = self.by_expiry.pop_first() else {
                break;
            };
            self.seen.remove(&(s, i));
        }
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache")
            .field("len", &self.seen.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: DeviceId = DeviceId::from_bytes([0xa1; 16]);
    const MALLORY: DeviceId = DeviceId::from_bytes([0x66; 16]);

    #[test]
    fn replay_within_ttl_is_rejected_and_forgotten_after_expiry() {
        let mut cache = ReplayCache::new(10);
        let id = ContainerId::from_bytes([1; 16]);
        cache.check(ALICE, &id, UnixMillis(0)).unwrap();
        cache.record(ALICE, id, UnixMillis(100));
        assert!(matches!(
            cache.check(ALICE, &id, UnixMillis(50)),
            Err(ContainerError::Replayed { .. })
        ));
        // The same id from another sender is a different container.
        cache.check(MALLORY, &id, UnixMillis(50)).unwrap();
        cache.purge_expired(UnixMillis(100));
        assert!(cache.is_empty());
    }

    /// Review L1: a full cache used to refuse every new container until the client
    /// restarted; now it forgets the id that expires soonest.
    #[test]
    fn a_full_cache_forgets_the_soonest_expiring_id_instead_of_refusing() {
        let mut cache = ReplayCache::new(2);
        let (a, b, c) = (
            ContainerId::from_bytes([1; 16]),
            ContainerId::from_bytes([2; 16]),
            ContainerId::from_bytes([3; 16]),
        );
        cache.record(ALICE, a, UnixMillis(1_000));
        cache.record(ALICE, b, UnixMillis(500));
        cache.check(MALLORY, &c, UnixMillis(20)).unwrap();
        cache.record(MALLORY, c, UnixMillis(2_000));
        assert_eq!(cache.len(), 2);
        cache
            .check(ALICE, &b, UnixMillis(20))
            .expect("the soonest-expiring id was forgotten");
        for (sender, id) in [(ALICE, a), (MALLORY, c)] {
            assert!(matches!(
                cache.check(sender, &id, UnixMillis(20)),
                Err(ContainerError::Replayed { .. })
            ));
        }
        for n in 0..100u8 {
            cache.record(MALLORY, ContainerId::from_bytes([n; 16]), UnixMillis(3_000));
        }
        assert_eq!(cache.len(), 2, "bounded");
        assert_eq!(cache.by_expiry.len(), 2);
    }
}
