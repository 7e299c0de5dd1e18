//! [`Store`] in memory, for tests: the semantics of [`RedbStore`](super::RedbStore)
//! without durability.
//!
//! One [`Mutex`] guards all the state, so every method is trivially atomic and
//! isolated. Methods check everything that can fail before they mutate anything,
//! which makes failed operations leave no trace (the redb store gets the same from
//! aborting its transaction).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use super::{
    DeviceIdBytes, DeviceRecord, MailboxEntry, MailboxPut, RegisterOutcome, RoomRecord,
    RoutingIdBytes, Store, StoreError, StoredPrekey, TakenPrekey, UserIdBytes,
};

/// Everything the store holds.
#[derive(Debug)]
struct State {
    /// User id → pinned user key.
    users: BTreeMap<UserIdBytes, [u8; 32]>,
    /// Device id → record.
    devices: BTreeMap<DeviceIdBytes, DeviceRecord>,
    /// (user id, device id) of every device, to list a user's devices in order.
    user_devices: BTreeSet<(UserIdBytes, DeviceIdBytes)>,
    /// Device id → prekey id → prekey. No empty inner maps.
    prekeys: BTreeMap<DeviceIdBytes, BTreeMap<u64, StoredPrekey>>,
    /// Device id → mailbox id → entry. No empty inner maps.
    mailbox: BTreeMap<DeviceIdBytes, BTreeMap<u64, MailboxEntry>>,
    /// The id the next mailbox entry gets.
    next_mailbox_id: u64,
    /// Routing id → room record.
    rooms: BTreeMap<RoutingIdBytes, RoomRecord>,
}

impl Default for State {
    fn default() -> Self {
        State {
            users: BTreeMap::new(),
            devices: BTreeMap::new(),
            user_devices: BTreeSet::new(),
            prekeys: BTreeMap::new(),
            mailbox: BTreeMap::new(),
            next_mailbox_id: 1,
            rooms: BTreeMap::new(),
        }
    }
}

/// A [`Store`] in memory; everything is lost on drop.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state.
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent: every
        // method validates before it mutates and the mutations do not panic (only a
        // panicking `is_live` callback can interrupt `expire_rooms`, which then has
        // deleted some stale rooms, a consistent state). So keep using the data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Takes one prekey of `device`: drops its expired prekeys, then removes the
    /// lowest-id one left.
    fn take_one(&mut self, device: &DeviceIdBytes, now_ms: u64) -> TakenPrekey {
        let mut prekey = None;
        let mut remaining = 0;
        if let Some(pool) = self.prekeys.get_mut(device) {
            pool.retain(|_, prekey| prekey.expires_at_ms > now_ms);
            prekey = pool.pop_first().map(|(_, prekey)| prekey);
            remaining = pool.len();
            if pool.is_empty() {
                self.prekeys.remove(device);
            }
        }
        TakenPrekey {
            device_id: *device,
            prekey,
            remaining,
        }
    }
}

impl Store for MemoryStore {
    fn user_key(&self, user_id: &UserIdBytes) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.lock().users.get(user_id).copied())
    }

    fn register_device(
        &self,
        user_key: &[u8; 32],
        device: &DeviceRecord,
        max_devices: usize,
    ) -> Result<RegisterOutcome, StoreError> {
        let mut state = self.lock();
        let pinned = state.users.get(&device.user_id).copied();
        if pinned.is_some_and(|pinned| pinned != *user_key) {
            return Err(StoreError::UserKeyMismatch);
        }
        if let Some(existing) = state.devices.get(&device.device_id) {
            return if existing == device {
                Ok(RegisterOutcome::AlreadyRegistered)
            } else {
                Err(StoreError::DeviceExists)
            };
        }
        let range = (device.user_id, [0; 16])..=(device.user_id, [0xff; 16]);
        if state.user_devices.range(range).count() >= max_devices {
            return Err(StoreError::TooManyDevices { limit: max_devices });
        }
        state.users.insert(device.user_id, *user_key);
        state.devices.insert(device.device_id, device.clone());
        state
            .user_devices
            .insert((device.user_id, device.device_id));
        Ok(if pinned.is_none() {
            RegisterOutcome::NewUser
        } else {
            RegisterOutcome::NewDevice
        })
    }

    fn device(&self, device_id: &DeviceIdBytes) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.lock().devices.get(device_id).cloned())
    }

    fn user_devices(&self, user_id: &UserIdBytes) -> Result<Vec<DeviceRecord>, StoreError> {
        let state = self.lock();
        let range = (*user_id, [0; 16])..=(*user_id, [0xff; 16]);
        let ids = state.user_devices.range(range).map(|(_, device)| device);
        ids.map(|device| {
            let record = state.devices.get(device);
            record
                .cloned()
                .ok_or(StoreError::Corrupt("user_devices lists a missing device"))
        })
        .collect()
    }

    fn add_prekeys(
        &self,
        device_id: &DeviceIdBytes,
        prekeys: &[StoredPrekey],
        max_held: usize,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let mut state = self.lock();
        if !state.devices.contains_key(device_id) {
            return Err(StoreError::UnknownDevice);
        }
        if let Some(pool) = state.prekeys.get_mut(device_id) {
            pool.retain(|_, prekey| prekey.expires_at_ms > now_ms);
        }
        let mut pool = state.prekeys.get(device_id).cloned().unwrap_or_default();
        for prekey in prekeys {
            pool.insert(prekey.prekey_id, prekey.clone());
        }
        let held = pool.len();
        if held > max_held {
            return Err(StoreError::TooManyPrekeys {
                would_hold: held,
                limit: max_held,
            });
        }
        if !pool.is_empty() {
            state.prekeys.insert(*device_id, pool);
        }
        Ok(held)
    }

    fn prekey_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError> {
        Ok(self.lock().prekeys.get(device_id).map_or(0, BTreeMap::len))
    }

    fn take_prekeys(
        &self,
        device_ids: &[DeviceIdBytes],
        now_ms: u64,
    ) -> Result<Vec<TakenPrekey>, StoreError> {
        let mut state = self.lock();
        Ok(device_ids
            .iter()
            .map(|device| state.take_one(device, now_ms))
            .collect())
    }

    fn mailbox_put(
        &self,
        recipients: &[DeviceIdBytes],
        container: &[u8],
        stored_at_ms: u64,
        expires_at_ms: u64,
        max_per_device: usize,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        let mut state = self.lock();
        let needed = u64::try_from(recipients.len()).unwrap_or(u64::MAX);
        if state.next_mailbox_id.checked_add(needed).is_none() {
            return Err(StoreError::Corrupt("mailbox ids exhausted"));
        }
        let mut results = Vec::with_capacity(recipients.len());
        for device in recipients {
            if state.mailbox.get(device).map_or(0, BTreeMap::len) >= max_per_device {
                results.push(MailboxPut::Full);
                continue;
            }
            let mailbox_id = state.next_mailbox_id;
            // Cannot overflow: checked against all recipients above.
            state.next_mailbox_id = mailbox_id.saturating_add(1);
            let entry = MailboxEntry {
                mailbox_id,
                container: container.to_vec(),
                stored_at_ms,
                expires_at_ms,
            };
            state
                .mailbox
                .entry(*device)
                .or_default()
                .insert(mailbox_id, entry);
            results.push(MailboxPut::Stored { mailbox_id });
        }
        Ok(results)
    }

    fn mailbox_list(
        &self,
        device_id: &DeviceIdBytes,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        let state = self.lock();
        let (Some(entries), Some(first)) = (state.mailbox.get(device_id), after_id.checked_add(1))
        else {
            return Ok(Vec::new());
        };
        Ok(entries
            .range(first..)
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    fn mailbox_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError> {
        Ok(self.lock().mailbox.get(device_id).map_or(0, BTreeMap::len))
    }

    fn mailbox_ack(
        &self,
        device_id: &DeviceIdBytes,
        mailbox_ids: &[u64],
    ) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let Some(entries) = state.mailbox.get_mut(device_id) else {
            return Ok(0);
        };
        let deleted = mailbox_ids
            .iter()
            .filter(|id| entries.remove(id).is_some())
            .count();
        if entries.is_empty() {
            state.mailbox.remove(device_id);
        }
        Ok(deleted)
    }

    fn mailbox_expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let mut deleted = 0;
        state.mailbox.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|_, entry| entry.expires_at_ms > now_ms);
            deleted += before - entries.len();
            !entries.is_empty()
        });
        Ok(deleted)
    }

    fn room(&self, routing_id: &RoutingIdBytes) -> Result<Option<RoomRecord>, StoreError> {
        Ok(self.lock().rooms.get(routing_id).cloned())
    }

    fn put_room(&self, routing_id: &RoutingIdBytes, record: &RoomRecord) -> Result<(), StoreError> {
        self.lock().rooms.insert(*routing_id, record.clone());
        Ok(())
    }

    fn delete_room(&self, routing_id: &RoutingIdBytes) -> Result<(), StoreError> {
        self.lock().rooms.remove(routing_id);
        Ok(())
    }

    fn expire_rooms(
        &self,
        cutoff_ms: u64,
        is_live: &dyn Fn(&RoutingIdBytes) -> bool,
    ) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let before = state.rooms.len();
        state
            .rooms
            .retain(|routing_id, room| room.updated_at_ms >= cutoff_ms || is_live(routing_id));
        Ok(before - state.rooms.len())
    }
}
