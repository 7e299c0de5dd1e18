use std::collections::HashMap;
use std::fmt;

use super::ContainerError;
use crate::{ContainerId, UnixMillis};

/// Default number of unexpired container ids remembered.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Container ids opened within their ttl, to reject replays.
///
/// A container id is remembered until the container's own expiry; after that the
/// container is rejected as expired anyway, so forgetting it is safe. The cache is
/// bounded: when full, expired ids are purged first, and if it is still full the new
/// container is refused with [`ContainerError::ReplayCacheFull`] rather than silently
/// forgetting an id that could then be replayed.
pub struct ReplayCache {
    seen: HashMap<ContainerId, UnixMillis>,
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

    /// Fails if `id` was seen, or if there is no room to remember it.
    pub(crate) fn check(
        &mut self,
        id: &ContainerId,
        now: UnixMillis,
    ) -> Result<(), ContainerError> {
        if self.seen.get(id).is_some_and(|expires| *expires > now) {
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
    pub(crate) fn record(&mut self, id: ContainerId, expires_at: UnixMillis) {
        self.seen.insert(id, expires_at);
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

    #[test]
    fn replay_within_ttl_is_rejected_and_forgotten_after_expiry() {
        let mut cache = ReplayCache::new(10);
        let id = ContainerId::from_bytes([1; 16]);
        cache.check(&id, UnixMillis(0)).unwrap();
        cache.record(id, UnixMillis(100));
        assert!(matches!(
            cache.check(&id, UnixMillis(50)),
            Err(ContainerError::Replayed { .. })
        ));
        cache.purge_expired(UnixMillis(100));
        assert!(cache.is_empty());
    }

    #[test]
    fn full_cache_purges_expired_then_refuses() {
        let mut cache = ReplayCache::new(2);
        cache.record(ContainerId::from_bytes([1; 16]), UnixMillis(10));
        cache.record(ContainerId::from_bytes([2; 16]), UnixMillis(1000));
        let new = ContainerId::from_bytes([3; 16]);
        cache.check(&new, UnixMillis(20)).unwrap();
        cache.record(new, UnixMillis(1000));
        assert!(matches!(
            cache.check(&ContainerId::from_bytes([4; 16]), UnixMillis(20)),
            Err(ContainerError::ReplayCacheFull { max: 2 })
        ));
    }
}
