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
    DeviceIdBytes, DeviceRecord, MailboxEntry, MailboxPut, MailboxQuota, MailboxUsage,
    NewContainer, PushSubscription, RegisterOutcome, RoomRecord, RoutingIdBytes, Store, StoreError,
    StoredPrekey, TakenPrekey, UserIdBytes,
};

/// A mailbox entry: a reference to a stored container.
#[derive(Debug, Clone, Copy)]
struct Entry {
    container_id: u64,
    stored_at_ms: u64,
    expires_at_ms: u64,
}

/// A container stored once for all its recipients.
#[derive(Debug)]
struct StoredContainer {
    bytes: Vec<u8>,
    sender: UserIdBytes,
    /// Entries referring to it; it is deleted when the last one goes.
    refs: u64,
}

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
    /// Device id → its last-resort prekey.
    last_resort: BTreeMap<DeviceIdBytes, StoredPrekey>,
    /// Device id → mailbox id → entry. No empty inner maps.
    mailbox: BTreeMap<DeviceIdBytes, BTreeMap<u64, Entry>>,
    /// Container id (the id of its first entry) → container.
    containers: BTreeMap<u64, StoredContainer>,
    /// Sender → bytes of its stored containers. No zero values.
    sender_bytes: BTreeMap<UserIdBytes, u64>,
    /// (Recipient device, sender) → entries waiting. No zero values.
    sender_entries: BTreeMap<(DeviceIdBytes, UserIdBytes), u64>,
    /// Bytes of all stored containers.
    mailbox_bytes: u64,
    /// Entries in all mailboxes.
    mailbox_entries: u64,
    /// The id the next mailbox entry gets.
    next_mailbox_id: u64,
    /// Routing id → room record.
    rooms: BTreeMap<RoutingIdBytes, RoomRecord>,
    /// Device id → its Web Push subscription.
    push: BTreeMap<DeviceIdBytes, PushSubscription>,
}

impl Default for State {
    fn default() -> Self {
        State {
            users: BTreeMap::new(),
            devices: BTreeMap::new(),
            user_devices: BTreeSet::new(),
            prekeys: BTreeMap::new(),
            last_resort: BTreeMap::new(),
            mailbox: BTreeMap::new(),
            containers: BTreeMap::new(),
            sender_bytes: BTreeMap::new(),
            sender_entries: BTreeMap::new(),
            mailbox_bytes: 0,
            mailbox_entries: 0,
            next_mailbox_id: 1,
            rooms: BTreeMap::new(),
            push: BTreeMap::new(),
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

impl State {
    /// Drops one entry (of `device`) and its reference to its container, deleting the
    /// container (and giving its bytes back) with the last one.
    fn release(&mut self, device: &DeviceIdBytes, entry: &Entry) {
        self.mailbox_entries = self.mailbox_entries.saturating_sub(1);
        let Some(container) = self.containers.get_mut(&entry.container_id) else {
            return;
        };
        let pair = (*device, container.sender);
        if let Some(held) = self.sender_entries.get_mut(&pair) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.sender_entries.remove(&pair);
            }
        }
        container.refs = container.refs.saturating_sub(1);
        if container.refs > 0 {
            return;
        }
        let Some(container) = self.containers.remove(&entry.container_id) else {
            return;
        };
        let len = container.bytes.len() as u64;
        self.mailbox_bytes = self.mailbox_bytes.saturating_sub(len);
        if let Some(held) = self.sender_bytes.get_mut(&container.sender) {
            *held = held.saturating_sub(len);
            if *held == 0 {
                self.sender_bytes.remove(&container.sender);
            }
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

    fn set_last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        prekey: Option<&StoredPrekey>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.devices.contains_key(device_id) {
            return Err(StoreError::UnknownDevice);
        }
        match prekey {
            Some(prekey) => state.last_resort.insert(*device_id, prekey.clone()),
            None => state.last_resort.remove(device_id),
        };
        Ok(())
    }

    fn last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        now_ms: u64,
    ) -> Result<Option<StoredPrekey>, StoreError> {
        let state = self.lock();
        let prekey = state.last_resort.get(device_id);
        Ok(prekey.filter(|p| p.expires_at_ms > now_ms).cloned())
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

    fn mailbox_store(
        &self,
        new: &NewContainer<'_>,
        quota: &MailboxQuota,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        let mut state = self.lock();
        let needed = u64::try_from(new.recipients.len()).unwrap_or(u64::MAX);
        if state.next_mailbox_id.checked_add(needed).is_none() {
            return Err(StoreError::Corrupt("mailbox ids exhausted"));
        }
        // Decide every recipient first (a device listed twice fills up within the
        // call), so that a refusal below leaves nothing behind.
        let room = quota.verdicts(new.recipients, |device| {
            let held = state.mailbox.get(device).map_or(0, BTreeMap::len);
            let from_sender = state
                .sender_entries
                .get(&(*device, *new.sender))
                .map_or(0, |n| usize::try_from(*n).unwrap_or(usize::MAX));
            Ok::<_, std::convert::Infallible>((held, from_sender))
        });
        let Ok(room) = room;
        let refs = room.iter().filter(|refused| refused.is_none()).count() as u64;
        if refs == 0 {
            return Ok(room.into_iter().flatten().collect());
        }
        let len = new.container.len() as u64;
        let stored = state.sender_bytes.get(new.sender).copied().unwrap_or(0);
        quota.check_bytes(stored, state.mailbox_bytes, len)?;
        let container_id = state.next_mailbox_id;
        let mut results = Vec::with_capacity(new.recipients.len());
        for (device, refused) in new.recipients.iter().zip(room) {
            if let Some(refused) = refused {
                results.push(refused);
                continue;
            }
            let mailbox_id = state.next_mailbox_id;
            // Cannot overflow: checked against all recipients above.
            state.next_mailbox_id = mailbox_id.saturating_add(1);
            let entry = Entry {
                container_id,
                stored_at_ms: new.stored_at_ms,
                expires_at_ms: new.expires_at_ms,
            };
            state
                .mailbox
                .entry(*device)
                .or_default()
                .insert(mailbox_id, entry);
            *state
                .sender_entries
                .entry((*device, *new.sender))
                .or_default() += 1;
            results.push(MailboxPut::Stored { mailbox_id });
        }
        state.containers.insert(
            container_id,
            StoredContainer {
                bytes: new.container.to_vec(),
                sender: *new.sender,
                refs,
            },
        );
        let held = state.sender_bytes.entry(*new.sender).or_default();
        *held = held.saturating_add(len);
        state.mailbox_bytes = state.mailbox_bytes.saturating_add(len);
        state.mailbox_entries = state.mailbox_entries.saturating_add(refs);
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
        entries
            .range(first..)
            .take(limit)
            .map(|(mailbox_id, entry)| {
                let container = state
                    .containers
                    .get(&entry.container_id)
                    .ok_or(StoreError::Corrupt("mailbox entry without its container"))?;
                Ok(MailboxEntry {
                    mailbox_id: *mailbox_id,
                    container: container.bytes.clone(),
                    stored_at_ms: entry.stored_at_ms,
                    expires_at_ms: entry.expires_at_ms,
                })
            })
            .collect()
    }

    fn mailbox_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError> {
        Ok(self.lock().mailbox.get(device_id).map_or(0, BTreeMap::len))
    }

    fn mailbox_count_from(
        &self,
        device_id: &DeviceIdBytes,
        sender: &UserIdBytes,
    ) -> Result<usize, StoreError> {
        let state = self.lock();
        let held = state.sender_entries.get(&(*device_id, *sender)).copied();
        usize::try_from(held.unwrap_or(0))
            .map_err(|_| StoreError::Corrupt("count does not fit in usize"))
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
        let removed: Vec<Entry> = mailbox_ids
            .iter()
            .filter_map(|id| entries.remove(id))
            .collect();
        if entries.is_empty() {
            state.mailbox.remove(device_id);
        }
        for entry in &removed {
            state.release(device_id, entry);
        }
        Ok(removed.len())
    }

    fn mailbox_expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let mut expired = Vec::new();
        state.mailbox.retain(|device, entries| {
            entries.retain(|_, entry| {
                let keep = entry.expires_at_ms > now_ms;
                if !keep {
                    expired.push((*device, *entry));
                }
                keep
            });
            !entries.is_empty()
        });
        for (device, entry) in &expired {
            state.release(device, entry);
        }
        Ok(expired.len())
    }

    fn mailbox_usage(&self) -> Result<MailboxUsage, StoreError> {
        let state = self.lock();
        Ok(MailboxUsage {
            bytes: state.mailbox_bytes,
            containers: state.containers.len() as u64,
            entries: state.mailbox_entries,
        })
    }

    fn mailbox_sender_bytes(&self, sender: &UserIdBytes) -> Result<u64, StoreError> {
        Ok(self.lock().sender_bytes.get(sender).copied().unwrap_or(0))
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

    fn set_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.devices.contains_key(device_id) {
            return Err(StoreError::UnknownDevice);
        }
        state.push.insert(*device_id, subscription.clone());
        Ok(())
    }

    fn push_subscription(
        &self,
        device_id: &DeviceIdBytes,
    ) -> Result<Option<PushSubscription>, StoreError> {
        Ok(self.lock().push.get(device_id).cloned())
    }

    fn clear_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        only_endpoint: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let matches = state
            .push
            .get(device_id)
            .is_some_and(|held| only_endpoint.is_none_or(|e| held.endpoint == e));
        Ok(matches && state.push.remove(device_id).is_some())
    }
}
