//! Conformance: Web Push subscriptions.

use super::Factory;
use crate::store::{
    DeviceIdBytes, DeviceRecord, MAX_PUSH_ENDPOINT_BYTES, PushSubscription, Store, StoreError,
};

/// Registers device `[id; 16]` (of one user) and returns its id.
fn registered(store: &dyn Store, id: u8) -> DeviceIdBytes {
    let device = DeviceRecord {
        user_id: [1; 32],
        device_id: [id; 16],
        certificate: vec![id, 0xce, 0x47],
    };
    store.register_device(&[0xa1; 32], &device, 16).unwrap();
    [id; 16]
}

fn subscription(endpoint: &str, seed: u8, updated_at_ms: u64) -> PushSubscription {
    let mut p256dh = [seed; 65];
    p256dh[0] = 0x04;
    PushSubscription {
        endpoint: endpoint.to_string(),
        p256dh,
        auth: [seed.wrapping_add(1); 16],
        updated_at_ms,
    }
}

const OLD: &str = "https://push.example.net/wpush/v2/old-token";
const NEW: &str = "https://push.example.net/wpush/v2/new-token";

pub(super) fn push_subscription_set_then_get_round_trips(make: Factory) {
    let (store, _guard) = make();
    let device = registered(&*store, 1);
    assert_eq!(store.push_subscription(&device).unwrap(), None);
    let s = subscription(OLD, 7, 1_700_000_000_000);
    store.set_push_subscription(&device, &s).unwrap();
    assert_eq!(store.push_subscription(&device).unwrap(), Some(s));
    // The longest endpoint, non-ASCII bytes included, comes back byte for byte.
    let prefix = "https://push.example/é/";
    let long = format!(
        "{prefix}{}",
        "x".repeat(MAX_PUSH_ENDPOINT_BYTES - prefix.len())
    );
    assert_eq!(long.len(), MAX_PUSH_ENDPOINT_BYTES);
    let s = subscription(&long, 0xfe, i64::MAX as u64);
    store.set_push_subscription(&device, &s).unwrap();
    assert_eq!(store.push_subscription(&device).unwrap(), Some(s));
}

pub(super) fn push_subscription_set_replaces(make: Factory) {
    let (store, _guard) = make();
    let device = registered(&*store, 1);
    store
        .set_push_subscription(&device, &subscription(OLD, 1, 10))
        .unwrap();
    let replacement = subscription(NEW, 2, 20);
    store.set_push_subscription(&device, &replacement).unwrap();
    assert_eq!(store.push_subscription(&device).unwrap(), Some(replacement));
    // One subscription per device: clearing it leaves none.
    assert!(store.clear_push_subscription(&device, None).unwrap());
    assert_eq!(store.push_subscription(&device).unwrap(), None);
}

pub(super) fn push_subscription_for_unknown_device_is_refused(make: Factory) {
    let (store, _guard) = make();
    registered(&*store, 1);
    let result = store.set_push_subscription(&[9; 16], &subscription(OLD, 1, 10));
    assert!(
        matches!(result, Err(StoreError::UnknownDevice)),
        "{result:?}"
    );
    assert_eq!(store.push_subscription(&[9; 16]).unwrap(), None);
    assert!(!store.clear_push_subscription(&[9; 16], None).unwrap());
    assert!(!store.clear_push_subscription(&[9; 16], Some(OLD)).unwrap());
}

pub(super) fn push_subscription_clear_returns_true_then_false(make: Factory) {
    let (store, _guard) = make();
    let device = registered(&*store, 1);
    assert!(!store.clear_push_subscription(&device, None).unwrap());
    store
        .set_push_subscription(&device, &subscription(OLD, 1, 10))
        .unwrap();
    assert!(store.clear_push_subscription(&device, None).unwrap());
    assert!(!store.clear_push_subscription(&device, None).unwrap());
    assert_eq!(store.push_subscription(&device).unwrap(), None);
}

pub(super) fn push_subscription_clear_of_another_endpoint_keeps_it(make: Factory) {
    let (store, _guard) = make();
    let device = registered(&*store, 1);
    // The device replaced OLD with NEW; a "gone" for OLD arrives afterwards.
    store
        .set_push_subscription(&device, &subscription(OLD, 1, 10))
        .unwrap();
    let current = subscription(NEW, 2, 20);
    store.set_push_subscription(&device, &current).unwrap();
    assert!(!store.clear_push_subscription(&device, Some(OLD)).unwrap());
    // Exact comparison: a prefix or a differently cased endpoint is another one.
    assert!(
        !store
            .clear_push_subscription(&device, Some("https://push.example.net/wpush/v2/"))
            .unwrap()
    );
    let upper = NEW.to_uppercase();
    assert!(
        !store
            .clear_push_subscription(&device, Some(&upper))
            .unwrap()
    );
    assert_eq!(store.push_subscription(&device).unwrap(), Some(current));
}

pub(super) fn push_subscription_clear_of_its_endpoint_deletes_it(make: Factory) {
    let (store, _guard) = make();
    let device = registered(&*store, 1);
    store
        .set_push_subscription(&device, &subscription(NEW, 2, 20))
        .unwrap();
    assert!(store.clear_push_subscription(&device, Some(NEW)).unwrap());
    assert_eq!(store.push_subscription(&device).unwrap(), None);
    assert!(!store.clear_push_subscription(&device, Some(NEW)).unwrap());
}

pub(super) fn push_subscriptions_of_two_devices_are_independent(make: Factory) {
    let (store, _guard) = make();
    let (a, b) = (registered(&*store, 1), registered(&*store, 2));
    // Even with the same endpoint (a push service would not, but the store does not
    // care), each device has its own.
    let (sa, sb) = (subscription(OLD, 1, 10), subscription(OLD, 2, 20));
    store.set_push_subscription(&a, &sa).unwrap();
    store.set_push_subscription(&b, &sb).unwrap();
    assert_eq!(store.push_subscription(&a).unwrap(), Some(sa.clone()));
    assert_eq!(store.push_subscription(&b).unwrap(), Some(sb.clone()));
    let sb2 = subscription(NEW, 3, 30);
    store.set_push_subscription(&b, &sb2).unwrap();
    assert_eq!(store.push_subscription(&a).unwrap(), Some(sa));
    assert!(store.clear_push_subscription(&a, Some(OLD)).unwrap());
    assert_eq!(store.push_subscription(&a).unwrap(), None);
    assert_eq!(store.push_subscription(&b).unwrap(), Some(sb2));
    assert!(!store.clear_push_subscription(&a, None).unwrap());
    assert!(store.clear_push_subscription(&b, None).unwrap());
}
