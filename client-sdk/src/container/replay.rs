use std::collections::HashMap;
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
/// bounded: when full, expired ids are purged first, and if it is still full the new
/// container is refused with [`ContainerError::ReplayCacheFull`] rather than silently
/// forgetting an id that could then be replayed.
pub struct ReplayCache {
    seen: HashMap<(DeviceId, ContainerId), UnixMillis>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache remembering at most `capacity` unexpired ids.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: HashMap::new(),
            capacity,
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
        self.seen.retain(|_, expires| *expires > now);
    }

    /// Fails if `id` from `sender` was seen, or if there is no room to remember it.
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
        if self.seen.len() >= self.capacity {
            self.purge_expired(now);
            if self.seen.len() >= self.capacity {
                return Err(ContainerError::ReplayCacheFull { max: self.capacity });
            }
        }
        Ok(())
    }

    /// Remembers `id` until `expires_at`. Call only after [`Self::check`] succeeded.
    pub(crate) fn record(&mut self, sender: DeviceId, id: ContainerId, expires_at: UnixMillis) {
        self.seen.insert((sender, id), expires_at);
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

    #[test]
    fn full_cache_purges_expired_then_refuses() {
        let mut cache = ReplayCache::new(2);
        cache.record(ALICE, ContainerId::from_bytes([1; 16]), UnixMillis(10));
        cache.record(ALICE, ContainerId::from_bytes([2; 16]), UnixMillis(1000));
        let new = ContainerId::from_bytes([3; 16]);
        cache.check(ALICE, &new, UnixMillis(20)).unwrap();
        cache.record(ALICE, new, UnixMillis(1000));
        assert!(matches!(
            cache.check(ALICE, &ContainerId::from_bytes([4; 16]), UnixMillis(20)),
            Err(ContainerError::ReplayCacheFull { max: 2 })
        ));
    }
}
