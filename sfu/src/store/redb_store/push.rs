//! Web Push subscriptions: the `push_subscriptions` table and its value layout, each
//! function the body of one [`Store`] method run inside the caller's transaction.
//!
//! `push_subscriptions`: device id (16) → format (1, [`PUSH_FORMAT`]) ++ updated at
//! (8) ++ p256dh (65) ++ auth (16) ++ endpoint (UTF-8, the rest). The leading format
//! byte lets a later layout be told apart from this one; decoding never panics and
//! reports malformed bytes (unknown format, short record, endpoint not UTF-8) as
//! [`StoreError::Corrupt`].
//!
//! [`Store`]: crate::store::Store

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::{DEVICES, PUSH_SUBSCRIPTIONS, backend};
use crate::store::{DeviceIdBytes, PushSubscription, StoreError};

/// The first byte of every `push_subscriptions` value this code writes.
pub(super) const PUSH_FORMAT: u8 = 1;
/// Bytes of a `push_subscriptions` value before the endpoint.
const FIXED_PART: usize = 1 + 8 + 65 + 16;

/// A `push_subscriptions` value.
pub(super) fn encode(subscription: &PushSubscription) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_PART + subscription.endpoint.len());
    out.push(PUSH_FORMAT);
    out.extend_from_slice(&subscription.updated_at_ms.to_be_bytes());
    out.extend_from_slice(&subscription.p256dh);
    out.extend_from_slice(&subscription.auth);
    out.extend_from_slice(subscription.endpoint.as_bytes());
    out
}

/// A `push_subscriptions` value.
pub(super) fn decode(value: &[u8]) -> Result<PushSubscription, StoreError> {
    const SHORT: StoreError = StoreError::Corrupt("push subscription record is too short");
    let (format, rest) = value.split_first().ok_or(SHORT)?;
    if *format != PUSH_FORMAT {
        return Err(StoreError::Corrupt(
            "push subscription record has an unknown format",
        ));
    }
    let (updated_at_ms, rest) = rest.split_first_chunk::<8>().ok_or(SHORT)?;
    let (p256dh, rest) = rest.split_first_chunk::<65>().ok_or(SHORT)?;
    let (auth, endpoint) = rest.split_first_chunk::<16>().ok_or(SHORT)?;
    let endpoint = std::str::from_utf8(endpoint)
        .map_err(|_| StoreError::Corrupt("push subscription endpoint is not UTF-8"))?;
    Ok(PushSubscription {
        endpoint: endpoint.to_string(),
        p256dh: *p256dh,
        auth: *auth,
        updated_at_ms: u64::from_be_bytes(*updated_at_ms),
    })
}

/// [`Store::set_push_subscription`](crate::store::Store::set_push_subscription).
pub(super) fn set(
    txn: &WriteTransaction,
    device_id: &DeviceIdBytes,
    subscription: &PushSubscription,
) -> Result<(), StoreError> {
    let devices = txn.open_table(DEVICES).map_err(backend)?;
    if devices.get(device_id).map_err(backend)?.is_none() {
        return Err(StoreError::UnknownDevice);
    }
    let mut table = txn.open_table(PUSH_SUBSCRIPTIONS).map_err(backend)?;
    table
        .insert(device_id, encode(subscription).as_slice())
        .map_err(backend)?;
    Ok(())
}

/// [`Store::push_subscription`](crate::store::Store::push_subscription).
pub(super) fn get(
    txn: &ReadTransaction,
    device_id: &DeviceIdBytes,
) -> Result<Option<PushSubscription>, StoreError> {
    let table = txn.open_table(PUSH_SUBSCRIPTIONS).map_err(backend)?;
    let value = table.get(device_id).map_err(backend)?;
    value.map(|v| decode(v.value())).transpose()
}

/// [`Store::clear_push_subscription`](crate::store::Store::clear_push_subscription).
/// Without `only_endpoint` the record is deleted unread (even a corrupt one); with it,
/// a corrupt record is an error and stays.
pub(super) fn clear(
    txn: &WriteTransaction,
    device_id: &DeviceIdBytes,
    only_endpoint: Option<&str>,
) -> Result<bool, StoreError> {
    let mut table = txn.open_table(PUSH_SUBSCRIPTIONS).map_err(backend)?;
    if let Some(endpoint) = only_endpoint {
        let held = table.get(device_id).map_err(backend)?;
        let held = held.map(|v| decode(v.value())).transpose()?;
        if held.is_none_or(|held| held.endpoint != endpoint) {
            return Ok(false);
        }
    }
    Ok(table.remove(device_id).map_err(backend)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_PUSH_ENDPOINT_BYTES;

    fn subscription(endpoint: &str) -> PushSubscription {
        PushSubscription {
            endpoint: endpoint.to_string(),
            p256dh: [4; 65],
            auth: [7; 16],
            updated_at_ms: u64::MAX - 1,
        }
    }

    #[test]
    fn push_subscription_values_round_trip() {
        for endpoint in [
            "https://push.example.net/wpush/v2/abc",
            "https://p.example/é",
            "",
            &format!("https://push.example/{}", "a".repeat(1000)),
        ] {
            let s = subscription(endpoint);
            let value = encode(&s);
            assert_eq!(value.len(), FIXED_PART + endpoint.len());
            assert_eq!(decode(&value).unwrap(), s);
        }
        let long = "x".repeat(MAX_PUSH_ENDPOINT_BYTES);
        assert_eq!(
            decode(&encode(&subscription(&long))).unwrap().endpoint,
            long
        );
    }

    #[test]
    fn malformed_push_subscription_values_are_corrupt_not_panics() {
        let good = encode(&subscription("https://push.example/x"));
        for len in 0..good.len() {
            let result = decode(good.get(..len).unwrap_or_default());
            assert_eq!(result.is_ok(), len >= FIXED_PART, "{len}");
        }
        let mut other_format = good.clone();
        other_format[0] = PUSH_FORMAT + 1;
        assert!(matches!(decode(&other_format), Err(StoreError::Corrupt(_))));
        let mut not_utf8 = good;
        not_utf8.push(0xff);
        assert!(matches!(decode(&not_utf8), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode(&[]), Err(StoreError::Corrupt(_))));
    }
}
