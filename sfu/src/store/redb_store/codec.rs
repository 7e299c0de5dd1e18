//! Byte layouts of the redb tables.
//!
//! Keys are fixed-size byte arrays: ids concatenated with integers in big-endian, so
//! that redb's lexicographic key order is (id, number) order and a device's or
//! user's entries form one contiguous range. Values are variable-length byte strings
//! decoded here by hand; decoding never panics and reports malformed bytes as
//! [`StoreError::Corrupt`].
//!
//! Table: key → value (byte widths in parentheses, `++` is concatenation):
//!
//! * `users`: user id (32) → user key (32)
//! * `devices`: device id (16) → user id (32) ++ certificate
//! * `user_devices`: user id (32) ++ device id (16) → `()`
//! * `prekeys`: device id (16) ++ prekey id (8) → expires at (8) ++ signed prekey
//! * `prekey_expiry`: device id (16) ++ expires at (8) ++ prekey id (8) → `()`
//! * `prekey_counts`: device id (16) → `u64` prekeys held
//! * `last_resort_prekeys`: device id (16) → prekey id (8) ++ expires at (8) ++
//!   signed prekey
//! * `push_subscriptions`: device id (16) → format (1) ++ updated at (8) ++ p256dh
//!   (65) ++ auth (16) ++ endpoint (see [`push`](super::push), which encodes it)
//! * `mailbox`: device id (16) ++ mailbox id (8) → stored at (8) ++ expires at (8) ++
//!   container id (8)
//! * `mailbox_expiry`: expires at (8) ++ device id (16) ++ mailbox id (8) → `()`
//! * `mailbox_counts`: device id (16) → `u64` entries waiting
//! * `mailbox_containers`: container id (`u64`) → the serialized container, stored once
//! * `mailbox_container_refs`: container id (`u64`) → entries referring to it (8) ++
//!   sender user id (32) ++ container length (8)
//! * `mailbox_sender_bytes`: user id (32) → `u64` bytes of its stored containers
//! * `mailbox_sender_entries`: device id (16) ++ sender user id (32) → `u64` entries
//!   that sender has waiting in that device's mailbox
//! * `rooms`: routing id (32) → epoch (8) ++ auth public (32) ++ updated at (8)
//!   ++ leader device ids (16 each, at most 4; none in records of older versions)
//! * `meta`: name → `u64` (`schema_version`, `next_mailbox_id`, `mailbox_bytes`,
//!   `mailbox_containers`, `mailbox_entries`)
//!
//! A container's id is the mailbox id of its first entry (ids are never reused).
//! Schema version 1 stored the whole container in every `mailbox` value (stored at ++
//! expires at ++ container); [`decode_mailbox_v1`] reads it for the migration.

use crate::store::{
    DeviceIdBytes, DeviceRecord, MAX_ROOM_LEADERS, RoomRecord, StoreError, StoredPrekey,
    UserIdBytes,
};

/// Length of a `prekeys` or `mailbox` key: device id ++ u64.
pub(super) const DEVICE_U64_KEY: usize = 24;
/// Length of a `prekey_expiry` or `mailbox_expiry` key: 16-byte id and two u64.
pub(super) const EXPIRY_KEY: usize = 32;
/// Length of a `user_devices` key.
pub(super) const USER_DEVICE_KEY: usize = 48;
/// Length of a `mailbox_sender_entries` key: device id ++ user id.
pub(super) const DEVICE_USER_KEY: usize = 48;

/// Concatenates `parts` into an array whose length is their total length.
fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut pos = 0;
    for part in parts {
        let end = pos + part.len();
        if let Some(dst) = out.get_mut(pos..end) {
            dst.copy_from_slice(part);
        }
        pos = end;
    }
    debug_assert_eq!(pos, N, "key parts do not fill the key");
    out
}

/// `user_devices` key.
pub(super) fn user_device_key(user: &UserIdBytes, device: &DeviceIdBytes) -> [u8; USER_DEVICE_KEY] {
    concat(&[user, device])
}

/// `mailbox_sender_entries` key: recipient device id ++ sender user id.
pub(super) fn device_user_key(device: &DeviceIdBytes, user: &UserIdBytes) -> [u8; DEVICE_USER_KEY] {
    concat(&[device, user])
}

/// The device id at the end of a `user_devices` key.
pub(super) fn user_device_key_device(key: &[u8; USER_DEVICE_KEY]) -> DeviceIdBytes {
    let (_, device) = split_array::<32, 16, USER_DEVICE_KEY>(key);
    device
}

/// `prekeys` or `mailbox` key: device id ++ id, big-endian.
pub(super) fn device_u64_key(device: &DeviceIdBytes, id: u64) -> [u8; DEVICE_U64_KEY] {
    concat(&[device, &id.to_be_bytes()])
}

/// The id at the end of a `prekeys` or `mailbox` key.
pub(super) fn device_u64_key_id(key: &[u8; DEVICE_U64_KEY]) -> u64 {
    let (_, id) = split_array::<16, 8, DEVICE_U64_KEY>(key);
    u64::from_be_bytes(id)
}

/// `prekey_expiry` key: device id ++ expires at ++ prekey id.
pub(super) fn prekey_expiry_key(
    device: &DeviceIdBytes,
    expires_at_ms: u64,
    prekey_id: u64,
) -> [u8; EXPIRY_KEY] {
    concat(&[
        device,
        &expires_at_ms.to_be_bytes(),
        &prekey_id.to_be_bytes(),
    ])
}

/// The prekey id at the end of a `prekey_expiry` key.
pub(super) fn prekey_expiry_key_id(key: &[u8; EXPIRY_KEY]) -> u64 {
    let (_, id) = split_array::<24, 8, EXPIRY_KEY>(key);
    u64::from_be_bytes(id)
}

/// `mailbox_expiry` key: expires at ++ device id ++ mailbox id.
pub(super) fn mailbox_expiry_key(
    expires_at_ms: u64,
    device: &DeviceIdBytes,
    mailbox_id: u64,
) -> [u8; EXPIRY_KEY] {
    concat(&[
        &expires_at_ms.to_be_bytes(),
        device,
        &mailbox_id.to_be_bytes(),
    ])
}

/// The device id and mailbox id of a `mailbox_expiry` key.
pub(super) fn mailbox_expiry_key_parts(key: &[u8; EXPIRY_KEY]) -> (DeviceIdBytes, u64) {
    let (_, rest) = split_array::<8, 24, EXPIRY_KEY>(key);
    let (device, id) = split_array::<16, 8, 24>(&rest);
    (device, u64::from_be_bytes(id))
}

/// Splits an array into its first `A` and last `B` bytes (`A + B == N`).
fn split_array<const A: usize, const B: usize, const N: usize>(
    bytes: &[u8; N],
) -> ([u8; A], [u8; B]) {
    debug_assert_eq!(A + B, N);
    let mut head = [0u8; A];
    let mut tail = [0u8; B];
    if let Some((h, t)) = bytes.split_first_chunk::<A>() {
        head = *h;
        if let Ok(t) = <[u8; B]>::try_from(t) {
            tail = t;
        }
    }
    (head, tail)
}

/// Splits a big-endian u64 off the front of a stored value.
fn take_u64<'a>(bytes: &'a [u8], what: &'static str) -> Result<(u64, &'a [u8]), StoreError> {
    let (head, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or(StoreError::Corrupt(what))?;
    Ok((u64::from_be_bytes(*head), rest))
}

/// Splits a 32-byte array off the front of a stored value.
fn take_32<'a>(bytes: &'a [u8], what: &'static str) -> Result<([u8; 32], &'a [u8]), StoreError> {
    let (head, rest) = bytes
        .split_first_chunk::<32>()
        .ok_or(StoreError::Corrupt(what))?;
    Ok((*head, rest))
}

/// A `users` value.
pub(super) fn decode_user_key(value: &[u8]) -> Result<[u8; 32], StoreError> {
    value
        .try_into()
        .map_err(|_| StoreError::Corrupt("user key is not 32 bytes"))
}

/// A `devices` value.
pub(super) fn encode_device(device: &DeviceRecord) -> Vec<u8> {
    [&device.user_id[..], &device.certificate].concat()
}

/// A `devices` value.
pub(super) fn decode_device(
    device_id: &DeviceIdBytes,
    value: &[u8],
) -> Result<DeviceRecord, StoreError> {
    let (user_id, certificate) = take_32(value, "device record shorter than a user id")?;
    Ok(DeviceRecord {
        user_id,
        device_id: *device_id,
        certificate: certificate.to_vec(),
    })
}

/// A `prekeys` value.
pub(super) fn encode_prekey(prekey: &StoredPrekey) -> Vec<u8> {
    [&prekey.expires_at_ms.to_be_bytes()[..], &prekey.signed].concat()
}

/// A `prekeys` value: the prekey's expiry, without copying the signed bytes.
pub(super) fn decode_prekey_expiry(value: &[u8]) -> Result<u64, StoreError> {
    take_u64(value, "prekey record shorter than its expiry").map(|(expires_at_ms, _)| expires_at_ms)
}

/// A `prekeys` value.
pub(super) fn decode_prekey(prekey_id: u64, value: &[u8]) -> Result<StoredPrekey, StoreError> {
    let (expires_at_ms, signed) = take_u64(value, "prekey record shorter than its expiry")?;
    Ok(StoredPrekey {
        prekey_id,
        expires_at_ms,
        signed: signed.to_vec(),
    })
}

/// A `last_resort_prekeys` value.
pub(super) fn encode_last_resort(prekey: &StoredPrekey) -> Vec<u8> {
    [&prekey.prekey_id.to_be_bytes()[..], &encode_prekey(prekey)].concat()
}

/// A `last_resort_prekeys` value.
pub(super) fn decode_last_resort(value: &[u8]) -> Result<StoredPrekey, StoreError> {
    let (prekey_id, rest) = take_u64(value, "last-resort prekey record shorter than its id")?;
    decode_prekey(prekey_id, rest)
}

/// Length of a `mailbox` value.
pub(super) const MAILBOX_VALUE: usize = 24;
/// Length of a `mailbox_container_refs` value.
pub(super) const CONTAINER_REFS_VALUE: usize = 48;

/// A `mailbox` value: one entry's reference to its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MailboxRef {
    pub(super) stored_at_ms: u64,
    pub(super) expires_at_ms: u64,
    pub(super) container_id: u64,
}

/// A `mailbox` value.
pub(super) fn encode_mailbox(entry: &MailboxRef) -> [u8; MAILBOX_VALUE] {
    concat(&[
        &entry.stored_at_ms.to_be_bytes(),
        &entry.expires_at_ms.to_be_bytes(),
        &entry.container_id.to_be_bytes(),
    ])
}

/// A `mailbox` value.
pub(super) fn decode_mailbox(value: &[u8]) -> Result<MailboxRef, StoreError> {
    const WHAT: &str = "mailbox record is not 24 bytes";
    let (stored_at_ms, rest) = take_u64(value, WHAT)?;
    let (expires_at_ms, rest) = take_u64(rest, WHAT)?;
    let (container_id, rest) = take_u64(rest, WHAT)?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(WHAT));
    }
    Ok(MailboxRef {
        stored_at_ms,
        expires_at_ms,
        container_id,
    })
}

/// A schema version 1 `mailbox` value: stored at, expires at and the container.
pub(super) fn decode_mailbox_v1(value: &[u8]) -> Result<(u64, u64, &[u8]), StoreError> {
    const WHAT: &str = "version 1 mailbox record shorter than its timestamps";
    let (stored_at_ms, rest) = take_u64(value, WHAT)?;
    let (expires_at_ms, container) = take_u64(rest, WHAT)?;
    Ok((stored_at_ms, expires_at_ms, container))
}

/// A schema version 1 `mailbox` value (for the migration's tests).
#[cfg(test)]
pub(super) fn encode_mailbox_v1(
    stored_at_ms: u64,
    expires_at_ms: u64,
    container: &[u8],
) -> Vec<u8> {
    [
        &stored_at_ms.to_be_bytes()[..],
        &expires_at_ms.to_be_bytes(),
        container,
    ]
    .concat()
}

/// A `mailbox_container_refs` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContainerRefs {
    /// Entries referring to the container.
    pub(super) refs: u64,
    /// The user its bytes are attributed to.
    pub(super) sender: UserIdBytes,
    /// Its length in bytes.
    pub(super) len: u64,
}

/// A `mailbox_container_refs` value.
pub(super) fn encode_container_refs(refs: &ContainerRefs) -> [u8; CONTAINER_REFS_VALUE] {
    concat(&[
        &refs.refs.to_be_bytes(),
        &refs.sender,
        &refs.len.to_be_bytes(),
    ])
}

/// A `mailbox_container_refs` value.
pub(super) fn decode_container_refs(value: &[u8]) -> Result<ContainerRefs, StoreError> {
    const WHAT: &str = "container reference record is not 48 bytes";
    let (refs, rest) = take_u64(value, WHAT)?;
    let (sender, rest) = take_32(rest, WHAT)?;
    let (len, rest) = take_u64(rest, WHAT)?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(WHAT));
    }
    Ok(ContainerRefs { refs, sender, len })
}

/// A `rooms` value: epoch, auth public key, updated at, then the leader devices
/// (16 bytes each, at most `MAX_ROOM_LEADERS`). A 48-byte value (no leaders) is a
/// record written before leaders were recorded.
pub(super) fn encode_room(room: &RoomRecord) -> Vec<u8> {
    let mut out = [
        &room.epoch.to_be_bytes()[..],
        &room.auth_public,
        &room.updated_at_ms.to_be_bytes(),
    ]
    .concat();
    for leader in room.leaders.iter().take(MAX_ROOM_LEADERS) {
        out.extend_from_slice(leader);
    }
    out
}

/// A `rooms` value.
pub(super) fn decode_room(value: &[u8]) -> Result<RoomRecord, StoreError> {
    const WHAT: &str = "room record is not 48 bytes plus up to 4 device ids";
    let (epoch, rest) = take_u64(value, WHAT)?;
    let (auth_public, rest) = take_32(rest, WHAT)?;
    let (updated_at_ms, rest) = take_u64(rest, WHAT)?;
    if rest.len() % 16 != 0 || rest.len() / 16 > MAX_ROOM_LEADERS {
        return Err(StoreError::Corrupt(WHAT));
    }
    let leaders = rest
        .chunks_exact(16)
        .map(|c| c.try_into().map_err(|_| StoreError::Corrupt(WHAT)))
        .collect::<Result<Vec<DeviceIdBytes>, StoreError>>()?;
    Ok(RoomRecord {
        epoch,
        auth_public,
        updated_at_ms,
        leaders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_number() {
        let device = [7u8; 16];
        let key = device_u64_key(&device, 0x0102_0304_0506_0708);
        assert_eq!(device_u64_key_id(&key), 0x0102_0304_0506_0708);
        assert!(device_u64_key(&device, 255) < device_u64_key(&device, 256));
        let key = prekey_expiry_key(&device, 9, 42);
        assert_eq!(prekey_expiry_key_id(&key), 42);
        let key = mailbox_expiry_key(5, &device, 11);
        assert_eq!(mailbox_expiry_key_parts(&key), (device, 11));
        assert!(mailbox_expiry_key(255, &[0xff; 16], 9) < mailbox_expiry_key(256, &[0; 16], 0));
        let key = user_device_key(&[1; 32], &device);
        assert_eq!(user_device_key_device(&key), device);
    }

    #[test]
    fn values_round_trip() {
        let device = DeviceRecord {
            user_id: [3; 32],
            device_id: [4; 16],
            certificate: vec![5, 6],
        };
        assert_eq!(
            decode_device(&[4; 16], &encode_device(&device)).unwrap(),
            device
        );
        let prekey = StoredPrekey {
            prekey_id: 8,
            expires_at_ms: 99,
            signed: vec![1, 2, 3],
        };
        assert_eq!(decode_prekey(8, &encode_prekey(&prekey)).unwrap(), prekey);
        assert_eq!(decode_prekey_expiry(&encode_prekey(&prekey)).unwrap(), 99);
        assert_eq!(
            decode_last_resort(&encode_last_resort(&prekey)).unwrap(),
            prekey
        );
        let entry = MailboxRef {
            stored_at_ms: 10,
            expires_at_ms: 20,
            container_id: 30,
        };
        assert_eq!(decode_mailbox(&encode_mailbox(&entry)).unwrap(), entry);
        let v1 = encode_mailbox_v1(10, 20, b"box");
        assert_eq!(decode_mailbox_v1(&v1).unwrap(), (10, 20, &b"box"[..]));
        let refs = ContainerRefs {
            refs: 1000,
            sender: [6; 32],
            len: 1 << 20,
        };
        assert_eq!(
            decode_container_refs(&encode_container_refs(&refs)).unwrap(),
            refs
        );
        let mut room = RoomRecord {
            epoch: 2,
            auth_public: [9; 32],
            updated_at_ms: 77,
            leaders: Vec::new(),
        };
        assert_eq!(decode_room(&encode_room(&room)).unwrap(), room);
        room.leaders = vec![[1; 16], [2; 16]];
        assert_eq!(encode_room(&room).len(), 48 + 32);
        assert_eq!(decode_room(&encode_room(&room)).unwrap(), room);
    }

    #[test]
    fn short_values_are_corrupt_not_panics() {
        for len in 0..60 {
            let bytes = vec![0xab; len];
            let _ = decode_user_key(&bytes);
            let _ = decode_device(&[0; 16], &bytes);
            let _ = decode_prekey(1, &bytes);
            let _ = decode_prekey_expiry(&bytes);
            let _ = decode_last_resort(&bytes);
            let _ = decode_mailbox_v1(&bytes);
            assert_eq!(decode_mailbox(&bytes).is_ok(), len == 24);
            assert_eq!(decode_container_refs(&bytes).is_ok(), len == 48);
            assert_eq!(
                decode_room(&bytes).is_ok(),
                len >= 48 && (len - 48) % 16 == 0,
                "{len}"
            );
        }
        assert!(matches!(
            decode_device(&[0; 16], &[1; 31]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_mailbox(&[1; 15]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_mailbox_v1(&[1; 15]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
