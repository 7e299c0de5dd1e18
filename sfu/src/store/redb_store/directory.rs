//! Users, devices and prekeys, each function the body of one [`Store`] method run
//! inside the caller's transaction.
//!
//! Invariants kept here: every `devices` row has its `user_devices` row and its user
//! in `users`; every `prekeys` row has exactly one `prekey_expiry` row (with the
//! expiry stored in the prekey), and `prekey_counts` holds the number of `prekeys`
//! rows of each device (no row when zero).
//!
//! [`Store`]: crate::store::Store

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::codec::{
    DEVICE_U64_KEY, EXPIRY_KEY, USER_DEVICE_KEY, decode_device, decode_prekey,
    decode_prekey_expiry, decode_user_key, device_u64_key, device_u64_key_id, encode_device,
    encode_last_resort, encode_prekey, prekey_expiry_key, prekey_expiry_key_id, user_device_key,
    user_device_key_device,
};
use super::{
    DEVICES, LAST_RESORT_PREKEYS, PREKEY_COUNTS, PREKEY_EXPIRY, PREKEYS, USER_DEVICES, USERS,
    backend, read_count, to_usize, write_count,
};
use crate::store::{
    DeviceIdBytes, DeviceRecord, RegisterOutcome, StoreError, StoredPrekey, TakenPrekey,
    UserIdBytes,
};

/// The device ids of a user, ascending.
fn device_ids_of(
    table: &impl ReadableTable<&'static [u8; USER_DEVICE_KEY], ()>,
    user_id: &UserIdBytes,
) -> Result<Vec<DeviceIdBytes>, StoreError> {
    let low = user_device_key(user_id, &[0; 16]);
    let high = user_device_key(user_id, &[0xff; 16]);
    let mut ids = Vec::new();
    for row in table
        .range::<&[u8; USER_DEVICE_KEY]>(&low..=&high)
        .map_err(backend)?
    {
        let (key, _) = row.map_err(backend)?;
        ids.push(user_device_key_device(key.value()));
    }
    Ok(ids)
}

/// [`Store::register_device`](crate::store::Store::register_device).
pub(super) fn register(
    txn: &WriteTransaction,
    user_key: &[u8; 32],
    device: &DeviceRecord,
    max_devices: usize,
) -> Result<RegisterOutcome, StoreError> {
    let mut users = txn.open_table(USERS).map_err(backend)?;
    let mut devices = txn.open_table(DEVICES).map_err(backend)?;
    let mut user_devices = txn.open_table(USER_DEVICES).map_err(backend)?;
    let pinned = users.get(&device.user_id).map_err(backend)?;
    let pinned = pinned.map(|key| decode_user_key(key.value())).transpose()?;
    if pinned.is_some_and(|pinned| pinned != *user_key) {
        return Err(StoreError::UserKeyMismatch);
    }
    if let Some(existing) = devices.get(&device.device_id).map_err(backend)? {
        let existing = decode_device(&device.device_id, existing.value())?;
        return if existing == *device {
            Ok(RegisterOutcome::AlreadyRegistered)
        } else {
            Err(StoreError::DeviceExists)
        };
    }
    if device_ids_of(&user_devices, &device.user_id)?.len() >= max_devices {
        return Err(StoreError::TooManyDevices { limit: max_devices });
    }
    if pinned.is_none() {
        users
            .insert(&device.user_id, &user_key[..])
            .map_err(backend)?;
    }
    let record = encode_device(device);
    devices
        .insert(&device.device_id, record.as_slice())
        .map_err(backend)?;
    let index_key = user_device_key(&device.user_id, &device.device_id);
    user_devices.insert(&index_key, ()).map_err(backend)?;
    Ok(if pinned.is_none() {
        RegisterOutcome::NewUser
    } else {
        RegisterOutcome::NewDevice
    })
}

/// [`Store::user_devices`](crate::store::Store::user_devices).
pub(super) fn user_devices(
    txn: &ReadTransaction,
    user_id: &UserIdBytes,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let user_devices = txn.open_table(USER_DEVICES).map_err(backend)?;
    let devices = txn.open_table(DEVICES).map_err(backend)?;
    let mut records = Vec::new();
    for device_id in device_ids_of(&user_devices, user_id)? {
        let record = devices
            .get(&device_id)
            .map_err(backend)?
            .ok_or(StoreError::Corrupt("user_devices lists a missing device"))?;
        records.push(decode_device(&device_id, record.value())?);
    }
    Ok(records)
}

/// [`Store::add_prekeys`](crate::store::Store::add_prekeys). On `Err` the caller
/// aborts the transaction, which undoes the inserts already made.
pub(super) fn add_prekeys(
    txn: &WriteTransaction,
    device_id: &DeviceIdBytes,
    prekeys: &[StoredPrekey],
    max_held: usize,
    now_ms: u64,
) -> Result<usize, StoreError> {
    let devices = txn.open_table(DEVICES).map_err(backend)?;
    if devices.get(device_id).map_err(backend)?.is_none() {
        return Err(StoreError::UnknownDevice);
    }
    let mut table = txn.open_table(PREKEYS).map_err(backend)?;
    let mut expiry = txn.open_table(PREKEY_EXPIRY).map_err(backend)?;
    let mut counts = txn.open_table(PREKEY_COUNTS).map_err(backend)?;
    let held = read_count(&counts, device_id)?;
    let mut held = purge_expired(&mut table, &mut expiry, device_id, now_ms, held)?;
    for prekey in prekeys {
        let key = device_u64_key(device_id, prekey.prekey_id);
        let value = encode_prekey(prekey);
        let replaced = table.insert(&key, value.as_slice()).map_err(backend)?;
        match replaced
            .map(|old| decode_prekey_expiry(old.value()))
            .transpose()?
        {
            Some(old_expiry) => {
                let old_key = prekey_expiry_key(device_id, old_expiry, prekey.prekey_id);
                expiry.remove(&old_key).map_err(backend)?;
            }
            None => held += 1,
        }
        let index_key = prekey_expiry_key(device_id, prekey.expires_at_ms, prekey.prekey_id);
        expiry.insert(&index_key, ()).map_err(backend)?;
    }
    let would_hold = to_usize(held)?;
    if would_hold > max_held {
        return Err(StoreError::TooManyPrekeys {
            would_hold,
            limit: max_held,
        });
    }
    write_count(&mut counts, device_id, held)?;
    Ok(would_hold)
}

/// [`Store::set_last_resort_prekey`](crate::store::Store::set_last_resort_prekey).
pub(super) fn set_last_resort(
    txn: &WriteTransaction,
    device_id: &DeviceIdBytes,
    prekey: Option<&StoredPrekey>,
) -> Result<(), StoreError> {
    let devices = txn.open_table(DEVICES).map_err(backend)?;
    if devices.get(device_id).map_err(backend)?.is_none() {
        return Err(StoreError::UnknownDevice);
    }
    let mut table = txn.open_table(LAST_RESORT_PREKEYS).map_err(backend)?;
    match prekey {
        Some(prekey) => {
            let value = encode_last_resort(prekey);
            table.insert(device_id, value.as_slice()).map_err(backend)?;
        }
        None => {
            table.remove(device_id).map_err(backend)?;
        }
    }
    Ok(())
}

/// [`Store::take_prekeys`](crate::store::Store::take_prekeys): one [`take_one`] per
/// listed device, in order, in the same transaction.
pub(super) fn take_prekeys(
    txn: &WriteTransaction,
    device_ids: &[DeviceIdBytes],
    now_ms: u64,
) -> Result<Vec<TakenPrekey>, StoreError> {
    device_ids
        .iter()
        .map(|device| take_one(txn, device, now_ms))
        .collect()
}

const COUNT_TOO_LOW: StoreError = StoreError::Corrupt("prekey count too low");

/// Deletes every prekey of `device` expired at `now_ms` (found through the expiry
/// index, so unexpired ones are not read); returns the count `held` minus those.
fn purge_expired(
    prekeys: &mut redb::Table<'_, &'static [u8; DEVICE_U64_KEY], &'static [u8]>,
    expiry: &mut redb::Table<'_, &'static [u8; EXPIRY_KEY], ()>,
    device: &DeviceIdBytes,
    now_ms: u64,
    mut held: u64,
) -> Result<u64, StoreError> {
    let low = prekey_expiry_key(device, 0, 0);
    let high = prekey_expiry_key(device, now_ms, u64::MAX);
    let expired = expiry
        .range::<&[u8; EXPIRY_KEY]>(&low..=&high)
        .map_err(backend)?
        .map(|row| row.map(|(key, _)| *key.value()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend)?;
    for key in expired {
        expiry.remove(&key).map_err(backend)?;
        let prekey_key = device_u64_key(device, prekey_expiry_key_id(&key));
        if prekeys.remove(&prekey_key).map_err(backend)?.is_some() {
            held = held.checked_sub(1).ok_or(COUNT_TOO_LOW)?;
        }
    }
    Ok(held)
}

/// Takes one prekey of `device`: deletes all its expired prekeys (found through the
/// expiry index, so unexpired ones are not read), then removes the lowest-id one
/// left. The count left is then exactly the unexpired prekeys the device holds.
fn take_one(
    txn: &WriteTransaction,
    device: &DeviceIdBytes,
    now_ms: u64,
) -> Result<TakenPrekey, StoreError> {
    let mut prekeys = txn.open_table(PREKEYS).map_err(backend)?;
    let mut expiry = txn.open_table(PREKEY_EXPIRY).map_err(backend)?;
    let mut counts = txn.open_table(PREKEY_COUNTS).map_err(backend)?;
    let held = read_count(&counts, device)?;
    let mut held = purge_expired(&mut prekeys, &mut expiry, device, now_ms, held)?;
    let low = device_u64_key(device, 0);
    let high = device_u64_key(device, u64::MAX);
    let first = prekeys
        .range::<&[u8; DEVICE_U64_KEY]>(&low..=&high)
        .map_err(backend)?
        .next()
        .transpose()
        .map_err(backend)?
        .map(|(key, value)| (*key.value(), value.value().to_vec()));
    let prekey = match first {
        None => None,
        Some((key, value)) => {
            let prekey = decode_prekey(device_u64_key_id(&key), &value)?;
            if prekey.expires_at_ms <= now_ms {
                return Err(StoreError::Corrupt(
                    "expired prekey missing from the expiry index",
                ));
            }
            prekeys.remove(&key).map_err(backend)?;
            let index_key = prekey_expiry_key(device, prekey.expires_at_ms, prekey.prekey_id);
            expiry.remove(&index_key).map_err(backend)?;
            held = held.checked_sub(1).ok_or(COUNT_TOO_LOW)?;
            Some(prekey)
        }
    };
    write_count(&mut counts, device, held)?;
    Ok(TakenPrekey {
        device_id: *device,
        prekey,
        remaining: to_usize(held)?,
    })
}
