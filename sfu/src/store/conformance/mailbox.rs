//! Conformance: the mailbox.

use super::Factory;
use crate::store::{
    DeviceIdBytes, MailboxPut, MailboxQuota, NewContainer, Store, StoreError, UNATTRIBUTED_SENDER,
    UserIdBytes,
};

fn stored_id(put: MailboxPut) -> u64 {
    match put {
        MailboxPut::Stored { mailbox_id } => mailbox_id,
        other => panic!("unexpected {other:?}"),
    }
}

pub(super) fn mailbox_put_list_count_ack(make: Factory) {
    let (store, _guard) = make();
    let (a, b) = ([1; 16], [2; 16]);
    let puts = store.mailbox_put(&[a, b], b"first", 10, 1000, 100).unwrap();
    let (a1, b1) = (stored_id(puts[0]), stored_id(puts[1]));
    let a2 = stored_id(store.mailbox_put(&[a], b"second", 20, 2000, 100).unwrap()[0]);
    assert_eq!(
        (
            store.mailbox_count(&a).unwrap(),
            store.mailbox_count(&b).unwrap()
        ),
        (2, 1)
    );
    let listed = store.mailbox_list(&a, 0, 10).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].mailbox_id, &listed[0].container[..]),
        (a1, &b"first"[..])
    );
    assert_eq!(
        (listed[0].stored_at_ms, listed[0].expires_at_ms),
        (10, 1000)
    );
    assert_eq!(
        (listed[1].mailbox_id, &listed[1].container[..]),
        (a2, &b"second"[..])
    );
    assert_eq!(store.mailbox_list(&b, 0, 10).unwrap()[0].mailbox_id, b1);
    assert!(store.mailbox_list(&[3; 16], 0, 10).unwrap().is_empty());
    // Acking twice (and an unknown id) deletes once.
    assert_eq!(store.mailbox_ack(&a, &[a1, a1, 999_999]).unwrap(), 1);
    assert_eq!(store.mailbox_count(&a).unwrap(), 1);
    assert_eq!(store.mailbox_list(&a, 0, 10).unwrap()[0].mailbox_id, a2);
    assert_eq!(store.mailbox_ack(&a, &[a2]).unwrap(), 1);
    assert_eq!(store.mailbox_count(&a).unwrap(), 0);
    assert_eq!(store.mailbox_ack(&a, &[]).unwrap(), 0);
}

pub(super) fn mailbox_list_pages_after_id(make: Factory) {
    let (store, _guard) = make();
    let a = [1; 16];
    let ids: Vec<u64> = (0..5)
        .map(|i| stored_id(store.mailbox_put(&[a], &[i], 0, 1000, 100).unwrap()[0]))
        .collect();
    let page = |after, limit| -> Vec<u64> {
        store
            .mailbox_list(&a, after, limit)
            .unwrap()
            .iter()
            .map(|e| e.mailbox_id)
            .collect()
    };
    assert_eq!(page(0, 2), ids[..2]);
    assert_eq!(page(ids[1], 2), ids[2..4]);
    assert_eq!(page(ids[3], 10), ids[4..]);
    assert!(page(ids[4], 10).is_empty());
    assert!(page(u64::MAX, 10).is_empty());
    assert!(page(0, 0).is_empty());
}

pub(super) fn mailbox_ack_ignores_other_devices_ids(make: Factory) {
    let (store, _guard) = make();
    let (a, b) = ([1; 16], [2; 16]);
    let puts = store.mailbox_put(&[a, b], b"x", 0, 1000, 100).unwrap();
    let b_id = stored_id(puts[1]);
    assert_eq!(store.mailbox_ack(&a, &[b_id]).unwrap(), 0);
    assert_eq!(store.mailbox_count(&b).unwrap(), 1);
    assert_eq!(store.mailbox_count(&a).unwrap(), 1);
}

pub(super) fn mailbox_put_is_full_at_the_limit(make: Factory) {
    let (store, _guard) = make();
    let (a, b) = ([1; 16], [2; 16]);
    store.mailbox_put(&[a, a], b"x", 0, 1000, 2).unwrap();
    let puts = store.mailbox_put(&[a, b], b"y", 0, 1000, 2).unwrap();
    assert_eq!(puts[0], MailboxPut::Full);
    assert!(matches!(puts[1], MailboxPut::Stored { .. }));
    // The same recipient twice in one put fills up within the call.
    let puts = store.mailbox_put(&[b, b], b"z", 0, 1000, 2).unwrap();
    assert!(matches!(puts[0], MailboxPut::Stored { .. }));
    assert_eq!(puts[1], MailboxPut::Full);
    assert_eq!(
        (
            store.mailbox_count(&a).unwrap(),
            store.mailbox_count(&b).unwrap()
        ),
        (2, 2)
    );
    // Acking frees room again.
    let first = store.mailbox_list(&a, 0, 1).unwrap()[0].mailbox_id;
    store.mailbox_ack(&a, &[first]).unwrap();
    assert!(matches!(
        store.mailbox_put(&[a], b"w", 0, 1000, 2).unwrap()[0],
        MailboxPut::Stored { .. }
    ));
}

pub(super) fn mailbox_ids_strictly_increase_store_wide(make: Factory) {
    let (store, _guard) = make();
    let mut last = 0;
    for round in 0u8..4 {
        let recipients = [[round; 16], [9; 16], [round; 16]];
        for put in store.mailbox_put(&recipients, b"c", 0, 1000, 1000).unwrap() {
            let id = stored_id(put);
            assert!(id > last, "{id} after {last}");
            last = id;
        }
        // Acked and expired ids are not reused.
        store.mailbox_ack(&[9; 16], &[last - 1]).unwrap();
    }
    store.mailbox_expire(u64::MAX).unwrap();
    assert!(stored_id(store.mailbox_put(&[[1; 16]], b"c", 0, 1000, 1000).unwrap()[0]) > last);
}

pub(super) fn mailbox_expire_deletes_by_time(make: Factory) {
    let (store, _guard) = make();
    let (a, b) = ([1; 16], [2; 16]);
    let early = stored_id(store.mailbox_put(&[a], b"early", 0, 100, 100).unwrap()[0]);
    let puts = store.mailbox_put(&[a, b], b"mid", 0, 200, 100).unwrap();
    let late = stored_id(store.mailbox_put(&[b], b"late", 0, 300, 100).unwrap()[0]);
    assert_eq!(store.mailbox_expire(99).unwrap(), 0);
    assert_eq!(store.mailbox_expire(100).unwrap(), 1);
    assert_eq!(
        store.mailbox_list(&a, 0, 10).unwrap()[0].mailbox_id,
        stored_id(puts[0])
    );
    assert_ne!(stored_id(puts[0]), early);
    assert_eq!(store.mailbox_expire(250).unwrap(), 2);
    assert_eq!(
        (
            store.mailbox_count(&a).unwrap(),
            store.mailbox_count(&b).unwrap()
        ),
        (0, 1)
    );
    assert_eq!(store.mailbox_list(&b, 0, 10).unwrap()[0].mailbox_id, late);
    // Acked entries are not expired a second time.
    store.mailbox_ack(&b, &[late]).unwrap();
    assert_eq!(store.mailbox_expire(u64::MAX).unwrap(), 0);
}

// --- Containers stored once, byte quotas ---

const ALICE: UserIdBytes = [0xa1; 32];
const CAROL: UserIdBytes = [0xc3; 32];

fn new<'a>(
    sender: &'a UserIdBytes,
    recipients: &'a [DeviceIdBytes],
    container: &'a [u8],
    expires_at_ms: u64,
) -> NewContainer<'a> {
    NewContainer {
        sender,
        recipients,
        container,
        stored_at_ms: 0,
        expires_at_ms,
    }
}

fn quota(max_sender_bytes: u64, max_total_bytes: u64) -> MailboxQuota {
    MailboxQuota {
        max_per_device: 100,
        max_per_sender_per_device: 100,
        max_sender_bytes,
        max_total_bytes,
    }
}

fn usage(store: &dyn Store) -> (u64, u64, u64) {
    let u = store.mailbox_usage().unwrap();
    (u.bytes, u.containers, u.entries)
}

pub(super) fn mailbox_store_keeps_one_copy_for_all_recipients(make: Factory) {
    let (store, _guard) = make();
    let (a, b, c) = ([1; 16], [2; 16], [3; 16]);
    let body = vec![0x42; 1000];
    let puts = store
        .mailbox_store(
            &new(&ALICE, &[a, b, c], &body, 500),
            &quota(u64::MAX, u64::MAX),
        )
        .unwrap();
    let ids: Vec<u64> = puts.into_iter().map(stored_id).collect();
    assert_eq!(usage(store.as_ref()), (1000, 1, 3));
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 1000);
    assert_eq!(store.mailbox_sender_bytes(&CAROL).unwrap(), 0);
    for (device, id) in [a, b, c].iter().zip(&ids) {
        let listed = store.mailbox_list(device, 0, 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].mailbox_id,
                &listed[0].container,
                listed[0].expires_at_ms
            ),
            (*id, &body, 500)
        );
    }
    // Each acknowledgement removes one entry; the container stays for the others.
    assert_eq!(store.mailbox_ack(&a, &[ids[0]]).unwrap(), 1);
    assert_eq!(usage(store.as_ref()), (1000, 1, 2));
    assert_eq!(store.mailbox_list(&b, 0, 10).unwrap()[0].container, body);
    assert_eq!(store.mailbox_ack(&b, &[ids[1]]).unwrap(), 1);
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 1000);
    // The last one deletes it and gives its bytes back.
    assert_eq!(store.mailbox_ack(&c, &[ids[2]]).unwrap(), 1);
    assert_eq!(usage(store.as_ref()), (0, 0, 0));
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 0);
}

pub(super) fn mailbox_expire_releases_a_container_with_its_last_entry(make: Factory) {
    let (store, _guard) = make();
    let (a, b) = ([1; 16], [2; 16]);
    let q = quota(u64::MAX, u64::MAX);
    let early = store
        .mailbox_store(&new(&ALICE, &[a, b], &[1; 100], 100), &q)
        .unwrap();
    store
        .mailbox_store(&new(&CAROL, &[a], &[2; 30], 200), &q)
        .unwrap();
    // One recipient acknowledges, the other's entry expires: the container goes.
    store.mailbox_ack(&a, &[stored_id(early[0])]).unwrap();
    assert_eq!(usage(store.as_ref()), (130, 2, 2));
    assert_eq!(store.mailbox_expire(100).unwrap(), 1);
    assert_eq!(usage(store.as_ref()), (30, 1, 1));
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 0);
    assert_eq!(store.mailbox_sender_bytes(&CAROL).unwrap(), 30);
    assert_eq!(store.mailbox_expire(u64::MAX).unwrap(), 1);
    assert_eq!(usage(store.as_ref()), (0, 0, 0));
    assert_eq!(store.mailbox_sender_bytes(&CAROL).unwrap(), 0);
}

pub(super) fn mailbox_sender_quota_counts_each_container_once(make: Factory) {
    let (store, _guard) = make();
    let recipients: Vec<DeviceIdBytes> = (1..=5).map(|i| [i; 16]).collect();
    let q = quota(250, u64::MAX);
    // 100 bytes to five recipients count 100, not 500.
    store
        .mailbox_store(&new(&ALICE, &recipients, &[1; 100], 1000), &q)
        .unwrap();
    store
        .mailbox_store(&new(&ALICE, &recipients[..2], &[2; 100], 1000), &q)
        .unwrap();
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 200);
    // 200 + 100 > 250: refused whole, nothing stored.
    let err = store
        .mailbox_store(&new(&ALICE, &recipients, &[3; 100], 1000), &q)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SenderQuota {
                stored: 200,
                adding: 100,
                limit: 250
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("max_mailbox_bytes_per_sender"),
        "{err}"
    );
    assert_eq!(usage(store.as_ref()), (200, 2, 7));
    assert_eq!(store.mailbox_count(&recipients[4]).unwrap(), 1);
    // Exactly up to the quota is fine; other senders have their own.
    store
        .mailbox_store(&new(&ALICE, &recipients, &[4; 50], 1000), &q)
        .unwrap();
    store
        .mailbox_store(&new(&CAROL, &recipients, &[5; 250], 1000), &q)
        .unwrap();
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 250);
    assert_eq!(store.mailbox_sender_bytes(&CAROL).unwrap(), 250);
}

pub(super) fn mailbox_budget_bounds_all_senders_together(make: Factory) {
    let (store, _guard) = make();
    let a = [1; 16];
    let q = quota(200, 300);
    store
        .mailbox_store(&new(&ALICE, &[a], &[1; 200], 1000), &q)
        .unwrap();
    store
        .mailbox_store(&new(&CAROL, &[a], &[2; 100], 1000), &q)
        .unwrap();
    let err = store
        .mailbox_store(&new(&CAROL, &[a], &[3; 1], 1000), &q)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::MailboxBudget {
                stored: 300,
                adding: 1,
                limit: 300
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("(max_mailbox_bytes)"), "{err}");
    assert_eq!(usage(store.as_ref()), (300, 2, 2));
    // Space comes back as entries go.
    let first = store.mailbox_list(&a, 0, 1).unwrap()[0].mailbox_id;
    store.mailbox_ack(&a, &[first]).unwrap();
    store
        .mailbox_store(&new(&CAROL, &[a], &[3; 100], 1000), &q)
        .unwrap();
}

pub(super) fn mailbox_store_with_every_recipient_full_stores_and_charges_nothing(make: Factory) {
    let (store, _guard) = make();
    let a = [1; 16];
    let q = MailboxQuota {
        max_per_device: 1,
        ..quota(150, u64::MAX)
    };
    store
        .mailbox_store(&new(&ALICE, &[a], &[1; 100], 1000), &q)
        .unwrap();
    // Over the byte quota too, but nothing would be stored: every recipient is Full.
    let puts = store
        .mailbox_store(&new(&ALICE, &[a, a], &[2; 100], 1000), &q)
        .unwrap();
    assert_eq!(puts, vec![MailboxPut::Full, MailboxPut::Full]);
    assert_eq!(usage(store.as_ref()), (100, 1, 1));
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 100);
}

pub(super) fn mailbox_put_stores_once_for_the_unattributed_sender(make: Factory) {
    let (store, _guard) = make();
    store
        .mailbox_put(&[[1; 16], [2; 16]], &[7; 64], 0, 1000, 10)
        .unwrap();
    assert_eq!(usage(store.as_ref()), (64, 1, 2));
    assert_eq!(
        store.mailbox_sender_bytes(&UNATTRIBUTED_SENDER).unwrap(),
        64
    );
}

// --- Entries per (sender, recipient device) ---

pub(super) fn mailbox_one_sender_cannot_fill_a_devices_mailbox(make: Factory) {
    let (store, _guard) = make();
    let (victim, other) = ([1; 16], [2; 16]);
    let q = MailboxQuota {
        max_per_device: 5,
        max_per_sender_per_device: 2,
        ..quota(u64::MAX, u64::MAX)
    };
    // Alice may hold two entries in the victim's mailbox, counted within a call too.
    let puts = store
        .mailbox_store(&new(&ALICE, &[victim, victim, victim], b"a", 1000), &q)
        .unwrap();
    assert!(matches!(puts[0], MailboxPut::Stored { .. }));
    assert!(matches!(puts[1], MailboxPut::Stored { .. }));
    assert_eq!(puts[2], MailboxPut::SenderFull);
    // A third one is refused for the victim but still stored for another device.
    let puts = store
        .mailbox_store(&new(&ALICE, &[victim, other], b"b", 1000), &q)
        .unwrap();
    assert_eq!(puts[0], MailboxPut::SenderFull);
    assert!(matches!(puts[1], MailboxPut::Stored { .. }));
    // Refused everywhere: nothing stored, nothing charged.
    let puts = store
        .mailbox_store(&new(&ALICE, &[victim], &[9; 50], 1000), &q)
        .unwrap();
    assert_eq!(puts, vec![MailboxPut::SenderFull]);
    assert_eq!(store.mailbox_sender_bytes(&ALICE).unwrap(), 2);
    assert_eq!(store.mailbox_count(&victim).unwrap(), 2);
    assert_eq!(store.mailbox_count_from(&victim, &ALICE).unwrap(), 2);
    assert_eq!(store.mailbox_count_from(&other, &ALICE).unwrap(), 1);
    assert_eq!(store.mailbox_count_from(&victim, &CAROL).unwrap(), 0);
    // Carol still reaches the victim.
    let puts = store
        .mailbox_store(&new(&CAROL, &[victim], b"c", 1000), &q)
        .unwrap();
    assert!(matches!(puts[0], MailboxPut::Stored { .. }));
    assert_eq!(store.mailbox_count_from(&victim, &CAROL).unwrap(), 1);
    // An acknowledgement gives Alice room again; the device limit still applies.
    let first = store.mailbox_list(&victim, 0, 1).unwrap()[0].mailbox_id;
    assert_eq!(store.mailbox_ack(&victim, &[first]).unwrap(), 1);
    assert_eq!(store.mailbox_count_from(&victim, &ALICE).unwrap(), 1);
    let puts = store
        .mailbox_store(&new(&ALICE, &[victim], b"d", 1000), &q)
        .unwrap();
    assert!(matches!(puts[0], MailboxPut::Stored { .. }));
    assert_eq!(store.mailbox_count(&victim).unwrap(), 3);
}

pub(super) fn mailbox_per_sender_entries_come_back_on_expiry(make: Factory) {
    let (store, _guard) = make();
    let victim = [1; 16];
    let q = MailboxQuota {
        max_per_sender_per_device: 1,
        ..quota(u64::MAX, u64::MAX)
    };
    let puts = store
        .mailbox_store(&new(&ALICE, &[victim], b"a", 100), &q)
        .unwrap();
    assert!(matches!(puts[0], MailboxPut::Stored { .. }));
    let puts = store
        .mailbox_store(&new(&ALICE, &[victim], b"b", 200), &q)
        .unwrap();
    assert_eq!(puts[0], MailboxPut::SenderFull);
    assert_eq!(store.mailbox_expire(100).unwrap(), 1);
    assert_eq!(store.mailbox_count_from(&victim, &ALICE).unwrap(), 0);
    let puts = store
        .mailbox_store(&new(&ALICE, &[victim], b"b", 200), &q)
        .unwrap();
    assert!(matches!(puts[0], MailboxPut::Stored { .. }));
    // The device limit comes first: a full device is `Full`, whoever sends.
    let q = MailboxQuota {
        max_per_device: 1,
        ..q
    };
    let puts = store
        .mailbox_store(&new(&CAROL, &[victim], b"c", 200), &q)
        .unwrap();
    assert_eq!(puts[0], MailboxPut::Full);
}

pub(super) fn concurrent_sends_never_overshoot_the_device_limit(make: Factory) {
    const LIMIT: usize = 10;
    let (store, _guard) = make();
    let store: &dyn Store = &*store;
    let device = [7; 16];
    let stored: usize = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..6u8)
            .map(|sender| {
                scope.spawn(move || {
                    let sender = [sender; 32];
                    let new = NewContainer {
                        sender: &sender,
                        recipients: &[device],
                        container: b"c",
                        stored_at_ms: 0,
                        expires_at_ms: 1000,
                    };
                    (0..5)
                        .map(|_| {
                            let puts = store
                                .mailbox_store(&new, &MailboxQuota::entries_only(LIMIT))
                                .unwrap();
                            puts.iter()
                                .filter(|p| matches!(p, MailboxPut::Stored { .. }))
                                .count()
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).sum()
    });
    assert_eq!(stored, LIMIT, "30 sends to a device that holds 10");
    assert_eq!(store.mailbox_count(&device).unwrap(), LIMIT);
    assert_eq!(store.mailbox_usage().unwrap().entries, LIMIT as u64);
}
