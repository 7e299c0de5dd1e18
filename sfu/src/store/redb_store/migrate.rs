//! Schema migrations, run by [`RedbStore::open`](super::RedbStore::open) inside its
//! opening transaction (so a crash mid-way leaves the old version intact).

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, WriteTransaction};
use sha2::{Digest, Sha256};

use super::codec::{
    ContainerRefs, DEVICE_U64_KEY, MailboxRef, decode_container_refs, decode_mailbox,
    decode_mailbox_v1, device_u64_key_id, device_user_key, encode_container_refs, encode_mailbox,
};
use super::{
    MAILBOX, MAILBOX_BYTES_KEY, MAILBOX_CONTAINER_REFS, MAILBOX_CONTAINERS, MAILBOX_CONTAINERS_KEY,
    MAILBOX_ENTRIES_KEY, MAILBOX_SENDER_BYTES, MAILBOX_SENDER_ENTRIES, META, backend,
};
use crate::store::{DeviceIdBytes, StoreError, UNATTRIBUTED_SENDER, UserIdBytes};

/// Version 1 → 2: every `mailbox` value held its own copy of the container; now each
/// distinct container is stored once and entries refer to it. Copies with identical
/// bytes (one container sent to many recipients) become one stored container.
/// Version 1 did not record senders, so migrated containers are attributed to
/// [`UNATTRIBUTED_SENDER`]: they count toward the global byte budget but toward no
/// user's quota, and leave with their entries (by acknowledgement or the mailbox ttl).
/// Reads one entry at a time, so memory stays bounded by the number of entries.
pub(super) fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let mut containers = txn.open_table(MAILBOX_CONTAINERS).map_err(backend)?;
    let mut container_refs = txn.open_table(MAILBOX_CONTAINER_REFS).map_err(backend)?;
    let keys = mailbox
        .iter()
        .map_err(backend)?
        .map(|row| row.map(|(key, _)| *key.value()))
        .collect::<Result<Vec<[u8; DEVICE_U64_KEY]>, _>>()
        .map_err(backend)?;
    let mut by_digest: HashMap<[u8; 32], u64> = HashMap::new();
    let (mut bytes, mut stored) = (0u64, 0u64);
    for key in &keys {
        let (entry, digest, container) = {
            let value = mailbox
                .get(key)
                .map_err(backend)?
                .ok_or(StoreError::Corrupt("mailbox row vanished during migration"))?;
            let (stored_at_ms, expires_at_ms, container) = decode_mailbox_v1(value.value())?;
            let digest: [u8; 32] = Sha256::digest(container).into();
            let new_id = device_u64_key_id(key);
            let container_id = *by_digest.get(&digest).unwrap_or(&new_id);
            let copy = (container_id == new_id).then(|| container.to_vec());
            let entry = MailboxRef {
                stored_at_ms,
                expires_at_ms,
                container_id,
            };
            (entry, digest, copy)
        };
        if let Some(container) = container {
            // The first entry with these bytes: store them under its id.
            by_digest.insert(digest, entry.container_id);
            containers
                .insert(entry.container_id, container.as_slice())
                .map_err(backend)?;
            let info = ContainerRefs {
                refs: 1,
                sender: UNATTRIBUTED_SENDER,
                len: container.len() as u64,
            };
            container_refs
                .insert(entry.container_id, encode_container_refs(&info).as_slice())
                .map_err(backend)?;
            bytes = bytes.saturating_add(info.len);
            stored += 1;
        } else {
            let info = container_refs
                .get(entry.container_id)
                .map_err(backend)?
                .ok_or(StoreError::Corrupt("migrated container lost its record"))
                .and_then(|row| decode_container_refs(row.value()))?;
            let info = ContainerRefs {
                refs: info.refs.saturating_add(1),
                ..info
            };
            container_refs
                .insert(entry.container_id, encode_container_refs(&info).as_slice())
                .map_err(backend)?;
        }
        mailbox
            .insert(key, encode_mailbox(&entry).as_slice())
            .map_err(backend)?;
    }
    if bytes > 0 {
        let mut senders = txn.open_table(MAILBOX_SENDER_BYTES).map_err(backend)?;
        senders
            .insert(&UNATTRIBUTED_SENDER, bytes)
            .map_err(backend)?;
    }
    let mut meta = txn.open_table(META).map_err(backend)?;
    meta.insert(MAILBOX_BYTES_KEY, bytes).map_err(backend)?;
    meta.insert(MAILBOX_CONTAINERS_KEY, stored)
        .map_err(backend)?;
    meta.insert(MAILBOX_ENTRIES_KEY, keys.len() as u64)
        .map_err(backend)?;
    Ok(())
}

/// Version 2 → 3: counts, per (recipient device, sender), the entries waiting, into the
/// new `mailbox_sender_entries` table (the sender of an entry is its container's).
/// Memory is bounded by the number of distinct (device, sender) pairs.
pub(super) fn v2_to_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let container_refs = txn.open_table(MAILBOX_CONTAINER_REFS).map_err(backend)?;
    let mut pairs: BTreeMap<(DeviceIdBytes, UserIdBytes), u64> = BTreeMap::new();
    for row in mailbox.iter().map_err(backend)? {
        let (key, value) = row.map_err(backend)?;
        let key = key.value();
        let (device, _) = key
            .split_first_chunk::<16>()
            .ok_or(StoreError::Corrupt("mailbox key shorter than a device id"))?;
        let entry = decode_mailbox(value.value())?;
        let sender = container_refs
            .get(entry.container_id)
            .map_err(backend)?
            .ok_or(StoreError::Corrupt("mailbox entry without its container"))
            .and_then(|row| decode_container_refs(row.value()))?
            .sender;
        *pairs.entry((*device, sender)).or_default() += 1;
    }
    let mut table = txn.open_table(MAILBOX_SENDER_ENTRIES).map_err(backend)?;
    for ((device, sender), count) in pairs {
        table
            .insert(&device_user_key(&device, &sender), count)
            .map_err(backend)?;
    }
    Ok(())
}
