//! Conformance: the mailbox.

use super::Factory;
use crate::store::MailboxPut;

fn stored_id(put: MailboxPut) -> u64 {
    match put {
        MailboxPut::Stored { mailbox_id } => mailbox_id,
        MailboxPut::Full => panic!("unexpected Full"),
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
