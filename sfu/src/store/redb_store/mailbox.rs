//! The mailbox, each function the body of one [`Store`] method run inside the
//! caller's transaction.
//!
//! Invariants kept here: every `mailbox` row has exactly one `mailbox_expiry` row
//! (with the expiry stored in the entry); `mailbox_counts` holds the number of
//! `mailbox` rows of each device (no row when zero); `meta.next_mailbox_id` is above
//! every id ever handed out, and is written in the transaction that uses it.
//!
//! [`Store`]: crate::store::Store

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::codec::{
    DEVICE_U64_KEY, EXPIRY_KEY, decode_mailbox, decode_mailbox_expiry, device_u64_key,
    device_u64_key_id, encode_mailbox, mailbox_expiry_key, mailbox_expiry_key_parts,
};
use super::{
    MAILBOX, MAILBOX_COUNTS, MAILBOX_EXPIRY, META, NEXT_MAILBOX_ID_KEY, backend, read_count,
    to_usize, write_count,
};
use crate::store::{DeviceIdBytes, MailboxEntry, MailboxPut, StoreError};

/// Error for a counter below the rows it counts.
const COUNT_TOO_LOW: StoreError = StoreError::Corrupt("mailbox count too low");

/// [`Store::mailbox_put`](crate::store::Store::mailbox_put).
pub(super) fn put(
    txn: &WriteTransaction,
    recipients: &[DeviceIdBytes],
    container: &[u8],
    stored_at_ms: u64,
    expires_at_ms: u64,
    max_per_device: usize,
) -> Result<Vec<MailboxPut>, StoreError> {
    let mut mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let mut expiry = txn.open_table(MAILBOX_EXPIRY).map_err(backend)?;
    let mut counts = txn.open_table(MAILBOX_COUNTS).map_err(backend)?;
    let mut meta = txn.open_table(META).map_err(backend)?;
    let next = meta.get(NEXT_MAILBOX_ID_KEY).map_err(backend)?;
    let mut next_id = next.map_or(1, |next| next.value());
    let value = encode_mailbox(stored_at_ms, expires_at_ms, container);
    let mut results = Vec::with_capacity(recipients.len());
    for device in recipients {
        let count = read_count(&counts, device)?;
        if to_usize(count)? >= max_per_device {
            results.push(MailboxPut::Full);
            continue;
        }
        let mailbox_id = next_id;
        next_id = next_id
            .checked_add(1)
            .ok_or(StoreError::Corrupt("mailbox ids exhausted"))?;
        let key = device_u64_key(device, mailbox_id);
        mailbox.insert(&key, value.as_slice()).map_err(backend)?;
        let index_key = mailbox_expiry_key(expires_at_ms, device, mailbox_id);
        expiry.insert(&index_key, ()).map_err(backend)?;
        write_count(&mut counts, device, count + 1)?;
        results.push(MailboxPut::Stored { mailbox_id });
    }
    meta.insert(NEXT_MAILBOX_ID_KEY, next_id).map_err(backend)?;
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
    let low = device_u64_key(device_id, first);
    let high = device_u64_key(device_id, u64::MAX);
    let rows = mailbox
        .range::<&[u8; DEVICE_U64_KEY]>(&low..=&high)
        .map_err(backend)?;
    let mut entries = Vec::new();
    for row in rows.take(limit) {
        let (key, value) = row.map_err(backend)?;
        let mailbox_id = device_u64_key_id(key.value());
        entries.push(decode_mailbox(mailbox_id, value.value())?);
    }
    Ok(entries)
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
    let mut deleted = 0u64;
    for &mailbox_id in mailbox_ids {
        let key = device_u64_key(device_id, mailbox_id);
        let removed = mailbox.remove(&key).map_err(backend)?;
        if let Some(removed) = removed {
            let expires_at_ms = decode_mailbox_expiry(removed.value())?;
            let index_key = mailbox_expiry_key(expires_at_ms, device_id, mailbox_id);
            expiry.remove(&index_key).map_err(backend)?;
            deleted += 1;
        }
    }
    let count = read_count(&counts, device_id)?
        .checked_sub(deleted)
        .ok_or(COUNT_TOO_LOW)?;
    write_count(&mut counts, device_id, count)?;
    to_usize(deleted)
}

/// [`Store::mailbox_expire`](crate::store::Store::mailbox_expire): reads only the
/// expired part of the global expiry index.
pub(super) fn expire(txn: &WriteTransaction, now_ms: u64) -> Result<usize, StoreError> {
    let mut mailbox = txn.open_table(MAILBOX).map_err(backend)?;
    let mut expiry = txn.open_table(MAILBOX_EXPIRY).map_err(backend)?;
    let mut counts = txn.open_table(MAILBOX_COUNTS).map_err(backend)?;
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
        let removed = mailbox.remove(&device_u64_key(&device, mailbox_id));
        if removed.map_err(backend)?.is_some() {
            let count = read_count(&counts, &device)?
                .checked_sub(1)
                .ok_or(COUNT_TOO_LOW)?;
            write_count(&mut counts, &device, count)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
