//! Conformance: registration (trust on first use) and prekeys.

use std::collections::BTreeSet;

use super::Factory;
use crate::store::{
    DeviceIdBytes, DeviceRecord, RegisterOutcome, Store, StoreError, StoredPrekey, UserIdBytes,
};

const KEY_A: [u8; 32] = [0xa1; 32];
const KEY_B: [u8; 32] = [0xb2; 32];
const USER_1: UserIdBytes = [1; 32];
const USER_2: UserIdBytes = [2; 32];

fn device(user: UserIdBytes, id: u8) -> DeviceRecord {
    DeviceRecord {
        user_id: user,
        device_id: [id; 16],
        certificate: vec![id, 0xce, 0x47],
    }
}

fn prekey(prekey_id: u64, expires_at_ms: u64) -> StoredPrekey {
    StoredPrekey {
        prekey_id,
        expires_at_ms,
        signed: prekey_id.to_be_bytes().to_vec(),
    }
}

/// Registers a device of `USER_1` with `KEY_A` and gives it prekeys `ids`, expiring at 1000.
fn device_with_prekeys(
    store: &dyn Store,
    id: u8,
    ids: impl IntoIterator<Item = u64>,
) -> DeviceIdBytes {
    store
        .register_device(&KEY_A, &device(USER_1, id), 16)
        .unwrap();
    let prekeys: Vec<_> = ids.into_iter().map(|p| prekey(p, 1000)).collect();
    store.add_prekeys(&[id; 16], &prekeys, 10_000, 0).unwrap();
    [id; 16]
}

fn taken_ids(store: &dyn Store, devices: &[DeviceIdBytes], now_ms: u64) -> Vec<Option<u64>> {
    let taken = store.take_prekeys(devices, now_ms).unwrap();
    taken
        .iter()
        .map(|t| t.prekey.as_ref().map(|p| p.prekey_id))
        .collect()
}

// --- Registration (trust on first use) ---

pub(super) fn first_device_pins_new_user(make: Factory) {
    let (store, _guard) = make();
    assert_eq!(store.user_key(&USER_1).unwrap(), None);
    let d = device(USER_1, 1);
    assert_eq!(
        store.register_device(&KEY_A, &d, 4).unwrap(),
        RegisterOutcome::NewUser
    );
    assert_eq!(store.user_key(&USER_1).unwrap(), Some(KEY_A));
    assert_eq!(store.device(&d.device_id).unwrap(), Some(d.clone()));
    assert_eq!(store.user_devices(&USER_1).unwrap(), vec![d]);
    assert_eq!(store.device(&[9; 16]).unwrap(), None);
    assert!(store.user_devices(&USER_2).unwrap().is_empty());
}

pub(super) fn second_device_with_same_key_is_new_device(make: Factory) {
    let (store, _guard) = make();
    let (d3, d1) = (device(USER_1, 3), device(USER_1, 1));
    assert_eq!(
        store.register_device(&KEY_A, &d3, 4).unwrap(),
        RegisterOutcome::NewUser
    );
    assert_eq!(
        store.register_device(&KEY_A, &d1, 4).unwrap(),
        RegisterOutcome::NewDevice
    );
    // Ordered by device id, other users' devices not listed.
    store
        .register_device(&KEY_B, &device(USER_2, 2), 4)
        .unwrap();
    assert_eq!(store.user_devices(&USER_1).unwrap(), vec![d1, d3]);
}

pub(super) fn different_user_key_is_refused(make: Factory) {
    let (store, _guard) = make();
    store
        .register_device(&KEY_A, &device(USER_1, 1), 4)
        .unwrap();
    let err = store
        .register_device(&KEY_B, &device(USER_1, 2), 4)
        .unwrap_err();
    assert!(matches!(err, StoreError::UserKeyMismatch), "{err:?}");
    assert_eq!(store.user_key(&USER_1).unwrap(), Some(KEY_A));
    assert_eq!(store.device(&[2; 16]).unwrap(), None);
    assert_eq!(store.user_devices(&USER_1).unwrap().len(), 1);
}

pub(super) fn device_id_with_other_certificate_is_refused(make: Factory) {
    let (store, _guard) = make();
    let original = device(USER_1, 1);
    store.register_device(&KEY_A, &original, 4).unwrap();
    let other_cert = DeviceRecord {
        certificate: vec![0xee],
        ..original.clone()
    };
    let err = store.register_device(&KEY_A, &other_cert, 4).unwrap_err();
    assert!(matches!(err, StoreError::DeviceExists), "{err:?}");
    // The same device id claimed by another user: refused, and that user is not pinned.
    let other_user = DeviceRecord {
        user_id: USER_2,
        ..original.clone()
    };
    let err = store.register_device(&KEY_B, &other_user, 4).unwrap_err();
    assert!(matches!(err, StoreError::DeviceExists), "{err:?}");
    assert_eq!(store.user_key(&USER_2).unwrap(), None);
    assert_eq!(store.device(&original.device_id).unwrap(), Some(original));
}

pub(super) fn reregistering_same_device_is_idempotent(make: Factory) {
    let (store, _guard) = make();
    let d = device(USER_1, 1);
    store.register_device(&KEY_A, &d, 1).unwrap();
    // Even at the device limit.
    for _ in 0..2 {
        let outcome = store.register_device(&KEY_A, &d, 1).unwrap();
        assert_eq!(outcome, RegisterOutcome::AlreadyRegistered);
    }
    assert_eq!(store.user_devices(&USER_1).unwrap(), vec![d]);
}

pub(super) fn too_many_devices_is_refused(make: Factory) {
    let (store, _guard) = make();
    store
        .register_device(&KEY_A, &device(USER_1, 1), 2)
        .unwrap();
    store
        .register_device(&KEY_A, &device(USER_1, 2), 2)
        .unwrap();
    let err = store
        .register_device(&KEY_A, &device(USER_1, 3), 2)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooManyDevices { limit: 2 }),
        "{err:?}"
    );
    assert_eq!(store.device(&[3; 16]).unwrap(), None);
    assert_eq!(store.user_devices(&USER_1).unwrap().len(), 2);
    // With a limit of zero even a new user is refused, and nothing is pinned.
    let err = store
        .register_device(&KEY_B, &device(USER_2, 4), 0)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooManyDevices { limit: 0 }),
        "{err:?}"
    );
    assert_eq!(store.user_key(&USER_2).unwrap(), None);
}

// --- Prekeys ---

pub(super) fn add_prekeys_counts_and_replaces_same_id(make: Factory) {
    let (store, _guard) = make();
    store
        .register_device(&KEY_A, &device(USER_1, 1), 4)
        .unwrap();
    let d = [1; 16];
    assert_eq!(store.prekey_count(&d).unwrap(), 0);
    assert_eq!(
        store
            .add_prekeys(&d, &[prekey(1, 10), prekey(2, 10)], 3, 0)
            .unwrap(),
        2
    );
    // Id 2 replaced (and duplicated within the upload): counted once.
    let upload = [prekey(2, 50), prekey(3, 50), prekey(2, 60)];
    assert_eq!(store.add_prekeys(&d, &upload, 3, 0).unwrap(), 3);
    assert_eq!(store.prekey_count(&d).unwrap(), 3);
    assert_eq!(store.add_prekeys(&d, &[], 3, 0).unwrap(), 3);
    // The replacement wins: id 2 now expires at 60, so it is handed out at 20.
    let taken = store.take_prekeys(&[d, d], 20).unwrap();
    assert_eq!(taken[0].prekey, Some(prekey(2, 60)));
    assert_eq!(taken[1].prekey, Some(prekey(3, 50)));
}

pub(super) fn expired_prekeys_do_not_block_an_upload(make: Factory) {
    let (store, _guard) = make();
    let d = device_with_prekeys(&*store, 1, [1, 2, 3]);
    // All three expire at 1000; at 1000 the pool is full of dead keys, yet an
    // upload of three fresh ones fits the limit of 3.
    let upload = [prekey(4, 5000), prekey(5, 5000), prekey(6, 5000)];
    assert_eq!(store.add_prekeys(&d, &upload, 3, 1000).unwrap(), 3);
    assert_eq!(store.prekey_count(&d).unwrap(), 3);
    let taken = store.take_prekeys(&[d], 1000).unwrap();
    assert_eq!(taken[0].prekey, Some(prekey(4, 5000)));
}

pub(super) fn add_prekeys_over_limit_stores_nothing(make: Factory) {
    let (store, _guard) = make();
    let d = device_with_prekeys(&*store, 1, [1, 2]);
    let upload = [prekey(2, 1000), prekey(3, 1000), prekey(4, 1000)];
    let err = store.add_prekeys(&d, &upload, 3, 0).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooManyPrekeys {
                would_hold: 4,
                limit: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.prekey_count(&d).unwrap(), 2);
    assert_eq!(
        taken_ids(&*store, &[d, d, d], 0),
        vec![Some(1), Some(2), None]
    );
}

pub(super) fn add_prekeys_to_unknown_device_fails(make: Factory) {
    let (store, _guard) = make();
    let err = store
        .add_prekeys(&[7; 16], &[prekey(1, 1000)], 10, 0)
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownDevice), "{err:?}");
    assert_eq!(store.prekey_count(&[7; 16]).unwrap(), 0);
}

pub(super) fn take_prekeys_hands_out_lowest_id_first(make: Factory) {
    let (store, _guard) = make();
    let d = device_with_prekeys(&*store, 1, [300, 7, 256, 12]);
    let taken = store.take_prekeys(&[d], 0).unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].device_id, d);
    assert_eq!(taken[0].prekey, Some(prekey(7, 1000)));
    assert_eq!(taken[0].remaining, 3);
    assert_eq!(
        taken_ids(&*store, &[d, d, d], 0),
        vec![Some(12), Some(256), Some(300)]
    );
    assert_eq!(store.prekey_count(&d).unwrap(), 0);
}

pub(super) fn take_prekeys_skips_and_deletes_expired(make: Factory) {
    let (store, _guard) = make();
    store
        .register_device(&KEY_A, &device(USER_1, 1), 4)
        .unwrap();
    let d = [1; 16];
    let pool = [
        prekey(1, 100),
        prekey(2, 50),
        prekey(3, 500),
        prekey(4, 101),
        prekey(5, 400),
    ];
    store.add_prekeys(&d, &pool, 10, 0).unwrap();
    // At 100: ids 1 (expires exactly now) and 2 are expired and deleted, 3 is taken.
    let taken = store.take_prekeys(&[d], 100).unwrap();
    assert_eq!(taken[0].prekey, Some(prekey(3, 500)));
    assert_eq!(taken[0].remaining, 2);
    assert_eq!(store.prekey_count(&d).unwrap(), 2);
    // At 450 only id 4 and 5 are left, both expired.
    let taken = store.take_prekeys(&[d], 450).unwrap();
    assert_eq!((taken[0].prekey.clone(), taken[0].remaining), (None, 0));
    assert_eq!(store.prekey_count(&d).unwrap(), 0);
    // Expired prekeys with a higher id than the one taken are deleted too.
    store
        .add_prekeys(&d, &[prekey(7, 1000), prekey(8, 600)], 10, 0)
        .unwrap();
    let taken = store.take_prekeys(&[d], 700).unwrap();
    assert_eq!(
        (taken[0].prekey.clone(), taken[0].remaining),
        (Some(prekey(7, 1000)), 0)
    );
    assert_eq!(store.prekey_count(&d).unwrap(), 0);
}

pub(super) fn take_prekeys_exhausted_gives_none(make: Factory) {
    let (store, _guard) = make();
    let d = device_with_prekeys(&*store, 1, [1]);
    let unknown = [9; 16];
    let taken = store.take_prekeys(&[d, d, unknown], 0).unwrap();
    assert_eq!(taken.len(), 3);
    assert_eq!((taken[0].prekey.is_some(), taken[0].remaining), (true, 0));
    assert_eq!((taken[1].prekey.is_some(), taken[1].remaining), (false, 0));
    assert_eq!(
        (
            taken[2].device_id,
            taken[2].prekey.is_some(),
            taken[2].remaining
        ),
        (unknown, false, 0)
    );
    assert!(store.take_prekeys(&[], 0).unwrap().is_empty());
}

pub(super) fn take_prekeys_answers_in_input_order_with_duplicates(make: Factory) {
    let (store, _guard) = make();
    let a = device_with_prekeys(&*store, 1, [10, 11, 12]);
    let b = device_with_prekeys(&*store, 2, [20, 21]);
    let taken = store.take_prekeys(&[b, a, b, a, b], 0).unwrap();
    let summary: Vec<_> = taken
        .iter()
        .map(|t| {
            (
                t.device_id,
                t.prekey.as_ref().map(|p| p.prekey_id),
                t.remaining,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (b, Some(20), 1),
            (a, Some(10), 2),
            (b, Some(21), 0),
            (a, Some(11), 1),
            (b, None, 0)
        ]
    );
}

pub(super) fn concurrent_takes_hand_out_each_prekey_once(make: Factory) {
    const DEVICES: u8 = 3;
    const PER_DEVICE: u64 = 40;
    let (store, _guard) = make();
    let devices: Vec<_> = (1..=DEVICES)
        .map(|id| device_with_prekeys(&*store, id, 0..PER_DEVICE))
        .collect();
    let store: &dyn Store = &*store;
    let handed_out: Vec<(DeviceIdBytes, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let devices = &devices;
                scope.spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let taken = store.take_prekeys(devices, 0).unwrap();
                        if taken.iter().all(|t| t.prekey.is_none()) {
                            return got;
                        }
                        for t in taken {
                            got.extend(t.prekey.map(|p| (t.device_id, p.prekey_id)));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let unique: BTreeSet<_> = handed_out.iter().copied().collect();
    assert_eq!(
        unique.len(),
        handed_out.len(),
        "a prekey was handed out twice"
    );
    let expected: BTreeSet<_> = devices
        .iter()
        .flat_map(|d| (0..PER_DEVICE).map(move |p| (*d, p)))
        .collect();
    assert_eq!(unique, expected);
}

pub(super) fn last_resort_prekey_outlives_the_one_time_prekeys_and_is_never_deleted(make: Factory) {
    let (store, _guard) = make();
    let d = device_with_prekeys(&*store, 1, [1]);
    let last_resort = prekey(50, 1000);
    store
        .set_last_resort_prekey(&d, Some(&last_resort))
        .unwrap();
    // One-time prekeys go first and are deleted; the last-resort one is not counted.
    assert_eq!(store.prekey_count(&d).unwrap(), 1);
    let taken = store.take_prekeys(&[d], 0).unwrap();
    assert_eq!(taken[0].prekey, Some(prekey(1, 1000)));
    let taken = store.take_prekeys(&[d], 0).unwrap();
    assert_eq!((taken[0].prekey.clone(), taken[0].remaining), (None, 0));
    // The last-resort prekey is handed out again and again.
    for now in [0, 10, 999] {
        assert_eq!(
            store.last_resort_prekey(&d, now).unwrap(),
            Some(last_resort.clone())
        );
    }
    assert_eq!(store.prekey_count(&d).unwrap(), 0);
    // Taking one-time prekeys (none left) does not touch it either.
    store.take_prekeys(&[d, d], 0).unwrap();
    assert_eq!(
        store.last_resort_prekey(&d, 0).unwrap(),
        Some(last_resort.clone())
    );
    // Never handed out once expired.
    assert_eq!(store.last_resort_prekey(&d, 1000).unwrap(), None);
    // Another device has none.
    let other = device_with_prekeys(&*store, 2, [1]);
    assert_eq!(store.last_resort_prekey(&other, 0).unwrap(), None);
}

pub(super) fn last_resort_prekey_is_replaced_on_upload_and_deleted_on_request(make: Factory) {
    let (store, _guard) = make();
    let d = device_with_prekeys(&*store, 1, [1, 2]);
    store
        .set_last_resort_prekey(&d, Some(&prekey(50, 1000)))
        .unwrap();
    store
        .set_last_resort_prekey(&d, Some(&prekey(60, 2000)))
        .unwrap();
    assert_eq!(
        store.last_resort_prekey(&d, 1500).unwrap(),
        Some(prekey(60, 2000))
    );
    // Replacing it leaves the one-time prekeys alone.
    assert_eq!(store.prekey_count(&d).unwrap(), 2);
    store.set_last_resort_prekey(&d, None).unwrap();
    assert_eq!(store.last_resort_prekey(&d, 0).unwrap(), None);
    store.set_last_resort_prekey(&d, None).unwrap();
    let unknown = [9; 16];
    assert!(matches!(
        store.set_last_resort_prekey(&unknown, Some(&prekey(1, 1000))),
        Err(StoreError::UnknownDevice)
    ));
    assert_eq!(store.last_resort_prekey(&unknown, 0).unwrap(), None);
}
