//! The mailbox, each function the body of one [`Store`] method run inside the
//! caller's transaction.
//!
//! A container is stored once in `mailbox_containers`; every recipient gets a small
//! `mailbox` entry that refers to it. Invariants kept here:
//!
//! * every `mailbox` row has exactly one `mailbox_expiry` row (with the expiry stored
//!   in the entry); `mailbox_counts` holds the number of `mailbox` rows of each device
//!   (no row when zero);
//! * every container has a `mailbox_container_refs` row whose count is the number of
//!   `mailbox` rows referring to it, never zero: the container and its row are deleted
//!   with the last entry;
//! * `mailbox_sender_entries` holds, per (recipient device, sender), the number of
//!   `mailbox` rows of that device whose container that sender stored (no row when
//!   zero);
//! * `mailbox_sender_bytes` holds, per sender, the summed length of its containers (no
//!   row when zero); `meta` holds the totals `mailbox_bytes`, `mailbox_containers` and
//!   `mailbox_entries`;
//! * `meta.next_mailbox_id` is above every id ever handed out, and is written in the
//!   transaction that uses it. A container's id is the id of its first entry.
//!
//! [`Store`]: crate::store::Store

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::codec::{
    ContainerRefs, DEVICE_U64_KEY, DEVICE_USER_KEY, EXPIRY_KEY, MailboxRef, decode_container_refs,
    decode_mailbox, device_u64_key, device_u64_key_id, device_user_key, encode_container_refs,
    encode_mailbox, mailbox_expiry_key, mailbox_expiry_key_parts,
};
use super::{
    MAILBOX, MAILBOX_BYTES_KEY, MAILBOX_CONTAINER_REFS, MAILBOX_CONTAINERS, MAILBOX_CONTAINERS_KEY,
    MAILBOX_COUNTS, MAILBOX_ENTRIES_KEY, MAILBOX_EXPIRY, MAILBOX_SENDER_BYTES,
    MAILBOX_SENDER_ENTRIES, META, NEXT_MAILBOX_ID_KEY, backend, read_count, to_usize, write_count,
};
use crate::store::{
    DeviceIdBytes, MailboxEntry, MailboxPut, MailboxQuota, MailboxUsage, NewContainer, StoreError,
    UserIdBytes,
};

/// Error for a counter below the rows it counts.
const COUNT_TOO_LOW: StoreError = StoreError::Corrupt("mailbox count too low");

/// A `meta` counter (0 if absent).
fn read_meta(
    meta: &impl ReadableTable<&'static str, u64>,
    key: &'static str,
) -> Result<u64, StoreError> {
    Ok(meta.get(key).map_err(backend)?.map_or(0, |v| v.value()))
}

/// Adds `delta` (which may be negative) to a `meta` counter.
fn add_meta(
    meta: &mut Table<'_, &'static str, u64>,
    key: &'static str,
    delta: i128,
) -> Result<(), StoreError> {
    let value = i128::from(read_meta(meta, key)?) + delta;
    let value =
        u64::try_from(value).map_err(|_| StoreError::Corrupt("mailbox total out of range"))?;
    meta.insert(key, value).map_err(backend)?;
    Ok(())
}

/// Bytes attributed to a sender (0 if absent).
fn read_sender_bytes(
    table: &impl ReadableTable<&'static [u8; 32], u64>,
    sender: &UserIdBytes,
) -> Result<u64, StoreError> {
    Ok(table.get(sender).map_err(backend)?.map_or(0, |v| v.value()))
}

/// A per-(device, sender) entry count (0 if absent).
fn read_pair(
    table: &impl ReadableTable<&'static [u8; DEVICE_USER_KEY], u64>,
    device: &DeviceIdBytes,
    sender: &UserIdBytes,
) -> Result<u64, StoreError> {
    let key = device_user_key(device, sender);
    Ok(table.get(&key).map_err(backend)?.map_or(0, |v| v.value()))
}

/// Sets a per-(device, sender) entry count, removing the row at 0.
fn write_pair(
    table: &mut Table<'_, &'static [u8; DEVICE_USER_KEY], u64>,
    device: &DeviceIdBytes,
    sender: &UserIdBytes,
    count: u64,
) -> Result<(), StoreError> {
    let key = device_user_key(device, sender);
    if count == 0 {
        table.remove(&key).map_err(backend)?;
    } else {
        table.insert(&key, count).map_err(backend)?;
    }
    Ok(())
}

/// [`Store::mailbox_store`](crate::store::Store::mailbox_store).
pub(super) fn store(
    txn: &WriteTransaction,
    new: &NewContainer<'_>,
    quota: &MailboxQuota,
) -> Result<Vec<MailboxPut>, StoreError> {
    let mut mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let mut expiry = txn.open_table(MAILBOX_EXPIRY).map_err(backend)?;
    let mut counts = txn.open_table(MAILBOX_COUNTS).map_err(backend)?;
    let mut meta = txn.open_table(META).map_err(backend)?;
    let mut pairs = txn.open_table(MAILBOX_SENDER_ENTRIES).map_err(backend)?;

    // Decide every recipient first (a device listed twice fills up within the call).
    // Nothing is written before the quotas are checked, though an error would abort
    // the whole transaction anyway. `held`: (entries, entries from this sender).
    let mut held: BTreeMap<DeviceIdBytes, (u64, u64)> = BTreeMap::new();
    let room = quota.verdicts(new.recipients, |device| {
        let count = read_count(&counts, device)?;
        let from_sender = read_pair(&pairs, device, new.sender)?;
        held.insert(*device, (count, from_sender));
        Ok::<_, StoreError>((to_usize(count)?, to_usize(from_sender)?))
    })?;
    // The counts after this call: one more per stored entry.
    for (device, refused) in new.recipients.iter().zip(&room) {
        if refused.is_none()
            && let Some((count, from_sender)) = held.get_mut(device)
        {
            *count += 1;
            *from_sender += 1;
        }
    }
    let refs = room.iter().filter(|refused| refused.is_none()).count() as u64;
    if refs == 0 {
        return Ok(room.into_iter().flatten().collect());
    }

    let len = new.container.len() as u64;
    let mut sender_bytes = txn.open_table(MAILBOX_SENDER_BYTES).map_err(backend)?;
    let stored = read_sender_bytes(&sender_bytes, new.sender)?;
    let total = read_meta(&meta, MAILBOX_BYTES_KEY)?;
    quota.check_bytes(stored, total, len)?;

    let mut next_id = meta
        .get(NEXT_MAILBOX_ID_KEY)
        .map_err(backend)?
        .map_or(1, |next| next.value());
    let container_id = next_id;
    let value = encode_mailbox(&MailboxRef {
        stored_at_ms: new.stored_at_ms,
        expires_at_ms: new.expires_at_ms,
        container_id,
    });
    let mut results = Vec::with_capacity(new.recipients.len());
    for (device, refused) in new.recipients.iter().zip(room) {
        if let Some(refused) = refused {
            results.push(refused);
            continue;
        }
        let mailbox_id = next_id;
        next_id = next_id
            .checked_add(1)
            .ok_or(StoreError::Corrupt("mailbox ids exhausted"))?;
        let key = device_u64_key(device, mailbox_id);
        mailbox.insert(&key, value.as_slice()).map_err(backend)?;
        let index_key = mailbox_expiry_key(new.expires_at_ms, device, mailbox_id);
        expiry.insert(&index_key, ()).map_err(backend)?;
        results.push(MailboxPut::Stored { mailbox_id });
    }
    for (device, (count, from_sender)) in held {
        write_count(&mut counts, &device, count)?;
        write_pair(&mut pairs, &device, new.sender, from_sender)?;
    }

    let mut containers = txn.open_table(MAILBOX_CONTAINERS).map_err(backend)?;
    containers
        .insert(container_id, new.container)
        .map_err(backend)?;
    let mut container_refs = txn.open_table(MAILBOX_CONTAINER_REFS).map_err(backend)?;
    let info = ContainerRefs {
        refs,
        sender: *new.sender,
        len,
    };
    container_refs
        .insert(container_id, encode_container_refs(&info).as_slice())
        .map_err(backend)?;
    sender_bytes
        .insert(new.sender, stored.saturating_add(len))
        .map_err(backend)?;
    meta.insert(NEXT_MAILBOX_ID_KEY, next_id).map_err(backend)?;
    add_meta(&mut meta, MAILBOX_BYTES_KEY, i128::from(len))?;
    add_meta(&mut meta, MAILBOX_CONTAINERS_KEY, 1)?;
    add_meta(&mut meta, MAILBOX_ENTRIES_KEY, i128::from(refs))?;
    Ok(results)
}

/// [`Store::mailbox_list`](crate::store::Store::mailbox_list).
pub(super) fn list(
    txn: &ReadTransaction,
    device_id: &DeviceIdBytes,
    after_id: u64,
    limit: usize,
) -> Result<Vec<MailboxEntry>, StoreError> {
    let Some(first) = after_id.checked_add(1) else {
        return Ok(Vec::new());
    };
    let mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let containers = txn.open_table(MAILBOX_CONTAINERS).map_err(backend)?;
    let low = device_u64_key(device_id, first);
    let high = device_u64_key(device_id, u64::MAX);
    let rows = mailbox
        .range::<&[u8; DEVICE_U64_KEY]>(&low..=&high)
        .map_err(backend)?;
    let mut entries = Vec::new();
    for row in rows.take(limit) {
        let (key, value) = row.map_err(backend)?;
        let mailbox_id = device_u64_key_id(key.value());
        let entry = decode_mailbox(value.value())?;
        let container = containers
            .get(entry.container_id)
            .map_err(backend)?
            .ok_or(StoreError::Corrupt("mailbox entry without its container"))?;
        entries.push(MailboxEntry {
            mailbox_id,
            container: container.value().to_vec(),
            stored_at_ms: entry.stored_at_ms,
            expires_at_ms: entry.expires_at_ms,
        });
    }
    Ok(entries)
}

/// The tables an entry's removal touches besides `mailbox` and `mailbox_expiry`.
struct Release<'txn> {
    containers: Table<'txn, u64, &'static [u8]>,
    container_refs: Table<'txn, u64, &'static [u8]>,
    sender_bytes: Table<'txn, &'static [u8; 32], u64>,
    pairs: Table<'txn, &'static [u8; DEVICE_USER_KEY], u64>,
    /// Net changes to the `meta` totals, written once at the end.
    bytes: u64,
    containers_deleted: u64,
    entries: u64,
}

impl<'txn> Release<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Release {
            containers: txn.open_table(MAILBOX_CONTAINERS).map_err(backend)?,
            container_refs: txn.open_table(MAILBOX_CONTAINER_REFS).map_err(backend)?,
            sender_bytes: txn.open_table(MAILBOX_SENDER_BYTES).map_err(backend)?,
            pairs: txn.open_table(MAILBOX_SENDER_ENTRIES).map_err(backend)?,
            bytes: 0,
            containers_deleted: 0,
            entries: 0,
        })
    }

    /// Drops one removed entry of `device`: its count under its sender, and its
    /// reference to its container; the last reference deletes the container and gives
    /// its bytes back to its sender.
    fn entry(&mut self, device: &DeviceIdBytes, container_id: u64) -> Result<(), StoreError> {
        self.entries += 1;
        let info = self
            .container_refs
            .get(container_id)
            .map_err(backend)?
            .ok_or(StoreError::Corrupt("mailbox entry without its container"))
            .and_then(|row| decode_container_refs(row.value()))?;
        let from_sender = read_pair(&self.pairs, device, &info.sender)?
            .checked_sub(1)
            .ok_or(StoreError::Corrupt("per-sender entry count too low"))?;
        write_pair(&mut self.pairs, device, &info.sender, from_sender)?;
        let refs = info.refs.checked_sub(1).ok_or(COUNT_TOO_LOW)?;
        if refs > 0 {
            let info = ContainerRefs { refs, ..info };
            self.container_refs
                .insert(container_id, encode_container_refs(&info).as_slice())
                .map_err(backend)?;
            return Ok(());
        }
        self.container_refs.remove(container_id).map_err(backend)?;
        self.containers.remove(container_id).map_err(backend)?;
        let held = read_sender_bytes(&self.sender_bytes, &info.sender)?
            .checked_sub(info.len)
            .ok_or(StoreError::Corrupt("sender byte count too low"))?;
        if held == 0 {
            self.sender_bytes.remove(&info.sender).map_err(backend)?;
        } else {
            self.sender_bytes
                .insert(&info.sender, held)
                .map_err(backend)?;
        }
        self.bytes += info.len;
        self.containers_deleted += 1;
        Ok(())
    }

    /// Writes the totals.
    fn finish(self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.entries == 0 {
            return Ok(());
        }
        let mut meta = txn.open_table(META).map_err(backend)?;
        add_meta(&mut meta, MAILBOX_BYTES_KEY, -i128::from(self.bytes))?;
        add_meta(
            &mut meta,
            MAILBOX_CONTAINERS_KEY,
            -i128::from(self.containers_deleted),
        )?;
        add_meta(&mut meta, MAILBOX_ENTRIES_KEY, -i128::from(self.entries))
    }
}

/// [`Store::mailbox_ack`](crate::store::Store::mailbox_ack). Ids are looked up under
/// this device's key prefix only, so other devices' entries cannot be deleted.
pub(super) fn ack(
    txn: &WriteTransaction,
    device_id: &DeviceIdBytes,
    mailbox_ids: &[u64],
) -> Result<usize, StoreError> {
    let mut mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let mut expiry = txn.open_table(MAILBOX_EXPIRY).map_err(backend)?;
    let mut counts = txn.open_table(MAILBOX_COUNTS).map_err(backend)?;
    let mut release = Release::open(txn)?;
    let mut deleted = 0u64;
    for &mailbox_id in mailbox_ids {
        let key = device_u64_key(device_id, mailbox_id);
        let removed = mailbox.remove(&key).map_err(backend)?;
        if let Some(removed) = removed {
            let entry = decode_mailbox(removed.value())?;
            drop(removed);
            let index_key = mailbox_expiry_key(entry.expires_at_ms, device_id, mailbox_id);
            expiry.remove(&index_key).map_err(backend)?;
            release.entry(device_id, entry.container_id)?;
            deleted += 1;
        }
    }
    let count = read_count(&counts, device_id)?
        .checked_sub(deleted)
        .ok_or(COUNT_TOO_LOW)?;
    write_count(&mut counts, device_id, count)?;
    release.finish(txn)?;
    to_usize(deleted)
}

/// [`Store::mailbox_expire`](crate::store::Store::mailbox_expire): reads only the
/// expired part of the global expiry index.
pub(super) fn expire(txn: &WriteTransaction, now_ms: u64) -> Result<usize, StoreError> {
    let mut mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let mut expiry = txn.open_table(MAILBOX_EXPIRY).map_err(backend)?;
    let mut counts = txn.open_table(MAILBOX_COUNTS).map_err(backend)?;
    let mut release = Release::open(txn)?;
    let high = mailbox_expiry_key(now_ms, &[0xff; 16], u64::MAX);
    let expired = expiry
        .range::<&[u8; EXPIRY_KEY]>(..=&high)
        .map_err(backend)?
        .map(|row| row.map(|(key, _)| *key.value()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    let mut deleted = 0;
    for key in expired {
        expiry.remove(&key).map_err(backend)?;
        let (device, mailbox_id) = mailbox_expiry_key_parts(&key);
        let removed = mailbox
            .remove(&device_u64_key(&device, mailbox_id))
            .map_err(backend)?;
        if let Some(removed) = removed {
            let entry = decode_mailbox(removed.value())?;
            drop(removed);
            release.entry(&device, entry.container_id)?;
            let count = read_count(&counts, &device)?
                .checked_sub(1)
                .ok_or(COUNT_TOO_LOW)?;
            write_count(&mut counts, &device, count)?;
            deleted += 1;
        }
    }
    release.finish(txn)?;
    Ok(deleted)
}

/// [`Store::mailbox_usage`](crate::store::Store::mailbox_usage).
pub(super) fn usage(txn: &ReadTransaction) -> Result<MailboxUsage, StoreError> {
    let meta = txn.open_table(META).map_err(backend)?;
    Ok(MailboxUsage {
        bytes: read_meta(&meta, MAILBOX_BYTES_KEY)?,
        containers: read_meta(&meta, MAILBOX_CONTAINERS_KEY)?,
        entries: read_meta(&meta, MAILBOX_ENTRIES_KEY)?,
    })
}

/// [`Store::mailbox_count_from`](crate::store::Store::mailbox_count_from).
pub(super) fn count_from(
    txn: &ReadTransaction,
    device: &DeviceIdBytes,
    sender: &UserIdBytes,
) -> Result<usize, StoreError> {
    let table = txn.open_table(MAILBOX_SENDER_ENTRIES).map_err(backend)?;
    to_usize(read_pair(&table, device, sender)?)
}

/// [`Store::mailbox_sender_bytes`](crate::store::Store::mailbox_sender_bytes).
pub(super) fn sender_bytes(txn: &ReadTransaction, sender: &UserIdBytes) -> Result<u64, StoreError> {
    let table = txn.open_table(MAILBOX_SENDER_BYTES).map_err(backend)?;
    read_sender_bytes(&table, sender)
}
