//! Tests of what only the redb store has: persistence across reopen, the file
//! itself, and the handling of corrupt records.

use super::codec::device_u64_key;
use super::*;
use crate::store::UNATTRIBUTED_SENDER;
use redb::ReadableTableMetadata;

fn device(id: u8) -> DeviceRecord {
    DeviceRecord {
        user_id: [1; 32],
        device_id: [id; 16],
        certificate: vec![id; 40],
    }
}

fn prekey(prekey_id: u64, expires_at_ms: u64) -> StoredPrekey {
    StoredPrekey {
        prekey_id,
        expires_at_ms,
        signed: vec![prekey_id as u8; 10],
    }
}

fn stored_id(put: &MailboxPut) -> u64 {
    match put {
        MailboxPut::Stored { mailbox_id } => *mailbox_id,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn reopen_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conclave.redb");
    let room = RoomRecord {
        epoch: 3,
        auth_public: [7; 32],
        updated_at_ms: 1234,
        leaders: vec![[1; 16], [2; 16]],
    };
    let last_id = {
        let store = RedbStore::open(&path).unwrap();
        store.register_device(&[0xaa; 32], &device(1), 4).unwrap();
        store.register_device(&[0xaa; 32], &device(2), 4).unwrap();
        store
            .add_prekeys(&[1; 16], &[prekey(5, 900), prekey(6, 100)], 10, 0)
            .unwrap();
        let puts = store
            .mailbox_put(&[[1; 16], [2; 16]], b"sealed", 10, 5000, 10)
            .unwrap();
        store.mailbox_ack(&[2; 16], &[stored_id(&puts[1])]).unwrap();
        store.put_room(&[9; 32], &room).unwrap();
        stored_id(&puts[1])
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.user_key(&[1; 32]).unwrap(), Some([0xaa; 32]));
    assert_eq!(
        store.user_devices(&[1; 32]).unwrap(),
        vec![device(1), device(2)]
    );
    assert_eq!(store.prekey_count(&[1; 16]).unwrap(), 2);
    let taken = store.take_prekeys(&[[1; 16]], 500).unwrap();
    assert_eq!(
        (taken[0].prekey.clone(), taken[0].remaining),
        (Some(prekey(5, 900)), 0)
    );
    let entries = store.mailbox_list(&[1; 16], 0, 10).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (&entries[0].container[..], entries[0].expires_at_ms),
        (&b"sealed"[..], 5000)
    );
    assert_eq!(store.mailbox_count(&[2; 16]).unwrap(), 0);
    // The acked (highest) id is not handed out again.
    let next = store
        .mailbox_put(&[[2; 16]], b"more", 20, 5000, 10)
        .unwrap();
    assert!(stored_id(&next[0]) > last_id);
    assert_eq!(store.mailbox_expire(5000).unwrap(), 2);
    assert_eq!(store.room(&[9; 32]).unwrap(), Some(room));
}

#[test]
fn open_creates_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/store.redb");
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.mailbox_count(&[0; 16]).unwrap(), 0);
    assert!(path.is_file());
}

#[test]
fn open_twice_in_one_process_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let _first = RedbStore::open(&path).unwrap();
    assert!(matches!(
        RedbStore::open(&path),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn other_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = RedbStore::open(&path).unwrap();
    store
        .write(|txn| {
            let mut meta = txn.open_table(META).map_err(backend)?;
            meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1)
                .map_err(backend)?;
            Ok(())
        })
        .unwrap();
    drop(store);
    let err = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedSchema {
                found,
                supported: SCHEMA_VERSION
            } if found == SCHEMA_VERSION + 1
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("schema version 4"), "{err}");
}

/// Writes a schema version 1 database as the previous release did: every recipient's
/// `mailbox` value carries its own copy of the container.
fn write_v1_database(path: &std::path::Path) {
    use super::codec::{encode_mailbox_v1, mailbox_expiry_key};
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert(SCHEMA_VERSION_KEY, 1).unwrap();
        meta.insert(NEXT_MAILBOX_ID_KEY, 5).unwrap();
        let mut mailbox = txn.open_table(MAILBOX).unwrap();
        let mut expiry = txn.open_table(MAILBOX_EXPIRY).unwrap();
        let mut counts = txn.open_table(MAILBOX_COUNTS).unwrap();
        // Ids 1..=3: one container sent to three devices; id 4: another one.
        let rows: [([u8; 16], u64, &[u8], u64); 4] = [
            ([1; 16], 1, b"shared", 900),
            ([2; 16], 2, b"shared", 900),
            ([3; 16], 3, b"shared", 900),
            ([1; 16], 4, b"alone", 500),
        ];
        for (device, id, container, expires) in rows {
            mailbox
                .insert(
                    &device_u64_key(&device, id),
                    encode_mailbox_v1(10, expires, container).as_slice(),
                )
                .unwrap();
            expiry
                .insert(&mailbox_expiry_key(expires, &device, id), ())
                .unwrap();
        }
        counts.insert(&[1; 16], 2).unwrap();
        counts.insert(&[2; 16], 1).unwrap();
        counts.insert(&[3; 16], 1).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_version_1_database_is_migrated_with_each_container_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    write_v1_database(&path);
    let store = RedbStore::open(&path).unwrap();
    let version = store
        .read(|txn| {
            let meta = txn.open_table(META).map_err(backend)?;
            Ok(meta
                .get(SCHEMA_VERSION_KEY)
                .map_err(backend)?
                .map(|v| v.value()))
        })
        .unwrap();
    assert_eq!(version, Some(SCHEMA_VERSION));
    // Three copies of "shared" became one container; senders were not recorded.
    let usage = store.mailbox_usage().unwrap();
    assert_eq!((usage.bytes, usage.containers, usage.entries), (11, 2, 4));
    assert_eq!(
        store.mailbox_sender_bytes(&UNATTRIBUTED_SENDER).unwrap(),
        11
    );
    let listed = store.mailbox_list(&[1; 16], 0, 10).unwrap();
    let listed: Vec<(u64, &[u8], u64)> = listed
        .iter()
        .map(|e| (e.mailbox_id, e.container.as_slice(), e.expires_at_ms))
        .collect();
    assert_eq!(
        listed,
        vec![(1, &b"shared"[..], 900), (4, &b"alone"[..], 500)]
    );
    assert_eq!(store.mailbox_count(&[1; 16]).unwrap(), 2);
    assert_eq!(
        store
            .mailbox_count_from(&[1; 16], &UNATTRIBUTED_SENDER)
            .unwrap(),
        2
    );
    // Entries leave as before, and the containers with their last entry.
    assert_eq!(store.mailbox_expire(500).unwrap(), 1);
    assert_eq!(store.mailbox_ack(&[2; 16], &[2]).unwrap(), 1);
    assert_eq!(store.mailbox_ack(&[3; 16], &[3]).unwrap(), 1);
    assert_eq!(store.mailbox_usage().unwrap().bytes, 6);
    assert_eq!(store.mailbox_ack(&[1; 16], &[1]).unwrap(), 1);
    assert_eq!(store.mailbox_usage().unwrap(), MailboxUsage::default());
    // New ids continue above the migrated ones; reopening does not migrate again.
    let put = store.mailbox_put(&[[9; 16]], b"new", 0, 900, 10).unwrap();
    assert_eq!(stored_id(&put[0]), 5);
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.mailbox_list(&[9; 16], 0, 1).unwrap()[0].container,
        b"new"
    );
}

/// A version 2 file (before per-(sender, device) counts) is migrated: the counts are
/// rebuilt from the entries, so the limit holds for entries stored before, and they
/// come down again as entries leave.
#[test]
fn a_version_2_database_gets_its_per_sender_entry_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (alice, carol) = ([0xa1; 32], [0xc3; 32]);
    let (a, b) = ([1; 16], [2; 16]);
    {
        let store = RedbStore::open(&path).unwrap();
        let q = MailboxQuota::entries_only(10);
        for (sender, recipients) in [(&alice, &[a, b][..]), (&alice, &[a]), (&carol, &[a])] {
            let new = NewContainer {
                sender,
                recipients,
                container: b"c",
                stored_at_ms: 0,
                expires_at_ms: 900,
            };
            store.mailbox_store(&new, &q).unwrap();
        }
        // Back to what version 2 had: no count table, version 2.
        store
            .write(|txn| {
                txn.delete_table(MAILBOX_SENDER_ENTRIES).map_err(backend)?;
                let mut meta = txn.open_table(META).map_err(backend)?;
                meta.insert(SCHEMA_VERSION_KEY, 2).map_err(backend)?;
                Ok(())
            })
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.mailbox_count_from(&a, &alice).unwrap(), 2);
    assert_eq!(store.mailbox_count_from(&b, &alice).unwrap(), 1);
    assert_eq!(store.mailbox_count_from(&a, &carol).unwrap(), 1);
    let q = MailboxQuota {
        max_per_sender_per_device: 2,
        ..MailboxQuota::entries_only(10)
    };
    let new = NewContainer {
        sender: &alice,
        recipients: &[a],
        container: b"d",
        stored_at_ms: 0,
        expires_at_ms: 900,
    };
    assert_eq!(
        store.mailbox_store(&new, &q).unwrap(),
        vec![MailboxPut::SenderFull]
    );
    assert_eq!(store.mailbox_expire(u64::MAX).unwrap(), 4);
    assert_eq!(store.mailbox_count_from(&a, &alice).unwrap(), 0);
    assert!(matches!(
        store.mailbox_store(&new, &q).unwrap()[0],
        MailboxPut::Stored { .. }
    ));
}

#[test]
fn a_container_survives_reopen_until_its_last_recipient_acks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let sender = [0x5e; 32];
    let ids = {
        let store = RedbStore::open(&path).unwrap();
        let new = NewContainer {
            sender: &sender,
            recipients: &[[1; 16], [2; 16]],
            container: b"once",
            stored_at_ms: 0,
            expires_at_ms: 900,
        };
        let quota = MailboxQuota {
            max_per_device: 10,
            max_per_sender_per_device: 10,
            max_sender_bytes: 4,
            max_total_bytes: 4,
        };
        let puts = store.mailbox_store(&new, &quota).unwrap();
        // Refused: over both limits, nothing stored.
        assert!(matches!(
            store.mailbox_store(&new, &quota),
            Err(StoreError::SenderQuota { .. })
        ));
        puts.iter().map(stored_id).collect::<Vec<_>>()
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.mailbox_usage().unwrap().entries, 2);
    assert_eq!(store.mailbox_sender_bytes(&sender).unwrap(), 4);
    store.mailbox_ack(&[1; 16], &[ids[0]]).unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.mailbox_list(&[2; 16], 0, 1).unwrap()[0].container,
        b"once"
    );
    store.mailbox_ack(&[2; 16], &[ids[1]]).unwrap();
    assert_eq!(store.mailbox_usage().unwrap(), MailboxUsage::default());
    assert_eq!(store.mailbox_sender_bytes(&sender).unwrap(), 0);
    let empty = store
        .read(|txn| {
            let containers = txn.open_table(MAILBOX_CONTAINERS).map_err(backend)?;
            let refs = txn.open_table(MAILBOX_CONTAINER_REFS).map_err(backend)?;
            Ok(containers.len().map_err(backend)? + refs.len().map_err(backend)? == 0)
        })
        .unwrap();
    assert!(empty, "the container rows are gone");
}

/// Overwrites one value with `bytes` behind the store's back.
fn poke(
    store: &RedbStore,
    table: TableDefinition<'_, &'static [u8; 16], &'static [u8]>,
    key: &[u8; 16],
    bytes: &[u8],
) {
    store
        .write(|txn| {
            txn.open_table(table)
                .map_err(backend)?
                .insert(key, bytes)
                .map_err(backend)?;
            Ok(())
        })
        .unwrap();
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

#[test]
fn malformed_values_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
    store.register_device(&[0xaa; 32], &device(1), 4).unwrap();
    store
        .add_prekeys(&[1; 16], &[prekey(1, 900)], 10, 0)
        .unwrap();
    store.mailbox_put(&[[1; 16]], b"x", 0, 900, 10).unwrap();

    poke(&store, DEVICES, &[1; 16], &[0; 31]);
    assert_corrupt(store.device(&[1; 16]));
    assert_corrupt(store.user_devices(&[1; 32]));
    assert_corrupt(store.register_device(&[0xaa; 32], &device(1), 4));

    store
        .write(|txn| {
            txn.open_table(USERS)
                .map_err(backend)?
                .insert(&[1; 32], &[0u8; 5][..])
                .map_err(backend)?;
            let mut prekeys = txn.open_table(PREKEYS).map_err(backend)?;
            prekeys
                .insert(&device_u64_key(&[1; 16], 1), &[0u8; 3][..])
                .map_err(backend)?;
            let mut mailbox = txn.open_table(MAILBOX).map_err(backend)?;
            mailbox
                .insert(&device_u64_key(&[1; 16], 1), &[0u8; 9][..])
                .map_err(backend)?;
            txn.open_table(ROOMS)
                .map_err(backend)?
                .insert(&[4; 32], &[0u8; 47][..])
                .map_err(backend)?;
            Ok(())
        })
        .unwrap();
    assert_corrupt(store.user_key(&[1; 32]));
    assert_corrupt(store.take_prekeys(&[[1; 16]], 0));
    // Replacing the malformed prekey needs its old expiry.
    assert_corrupt(store.add_prekeys(&[1; 16], &[prekey(1, 900)], 10, 0));
    assert_corrupt(store.mailbox_list(&[1; 16], 0, 10));
    assert_corrupt(store.mailbox_ack(&[1; 16], &[1]));
    assert_corrupt(store.room(&[4; 32]));
    assert_corrupt(store.expire_rooms(u64::MAX, &|_| false));
    // A failed operation changed nothing.
    assert_eq!(store.mailbox_count(&[1; 16]).unwrap(), 1);
    assert_eq!(store.prekey_count(&[1; 16]).unwrap(), 1);
}

#[test]
fn a_last_resort_prekey_survives_reopen_and_a_file_without_its_table_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conclave.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store.register_device(&[0xaa; 32], &device(1), 4).unwrap();
        store
            .set_last_resort_prekey(&[1; 16], Some(&prekey(7, 900)))
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.last_resort_prekey(&[1; 16], 0).unwrap(),
        Some(prekey(7, 900))
    );
    // A version 3 file written before the table existed: opening creates it.
    store
        .write(|txn| {
            txn.delete_table(LAST_RESORT_PREKEYS).map_err(backend)?;
            Ok(())
        })
        .unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.last_resort_prekey(&[1; 16], 0).unwrap(), None);
    store
        .set_last_resort_prekey(&[1; 16], Some(&prekey(8, 900)))
        .unwrap();
    assert_eq!(
        store.last_resort_prekey(&[1; 16], 0).unwrap(),
        Some(prekey(8, 900))
    );
    // A damaged record is reported, not handed out.
    poke(&store, LAST_RESORT_PREKEYS, &[1; 16], &[1, 2, 3]);
    assert_corrupt(store.last_resort_prekey(&[1; 16], 0));
}

#[test]
fn a_push_subscription_survives_reopen_and_a_file_without_its_table_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conclave.redb");
    let subscription = |endpoint: &str| crate::store::PushSubscription {
        endpoint: endpoint.to_string(),
        p256dh: [4; 65],
        auth: [9; 16],
        updated_at_ms: 1234,
    };
    {
        let store = RedbStore::open(&path).unwrap();
        store.register_device(&[0xaa; 32], &device(1), 4).unwrap();
        store.register_device(&[0xaa; 32], &device(2), 4).unwrap();
        store
            .set_push_subscription(&[1; 16], &subscription("https://push.example/a"))
            .unwrap();
        store
            .set_push_subscription(&[2; 16], &subscription("https://push.example/b"))
            .unwrap();
        assert!(store.clear_push_subscription(&[2; 16], None).unwrap());
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.push_subscription(&[1; 16]).unwrap(),
        Some(subscription("https://push.example/a"))
    );
    assert_eq!(store.push_subscription(&[2; 16]).unwrap(), None);
    // A version 3 file written before the table existed: opening creates it.
    store
        .write(|txn| {
            txn.delete_table(PUSH_SUBSCRIPTIONS).map_err(backend)?;
            Ok(())
        })
        .unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.push_subscription(&[1; 16]).unwrap(), None);
    assert!(!store.clear_push_subscription(&[1; 16], None).unwrap());
    store
        .set_push_subscription(&[1; 16], &subscription("https://push.example/c"))
        .unwrap();
    // A damaged record is reported, not handed out; a conditional clear cannot compare
    // it and keeps it, an unconditional one deletes it.
    poke(&store, PUSH_SUBSCRIPTIONS, &[1; 16], &[1, 2, 3]);
    assert_corrupt(store.push_subscription(&[1; 16]));
    assert_corrupt(store.clear_push_subscription(&[1; 16], Some("https://push.example/c")));
    assert!(store.clear_push_subscription(&[1; 16], None).unwrap());
    assert_eq!(store.push_subscription(&[1; 16]).unwrap(), None);
}

/// Acknowledgements and the expiry sweep commit without an fsync; a clean close (and
/// the next durable commit) writes them, so a restart does not bring the entries back.
#[test]
fn acknowledgements_and_sweeps_committed_without_an_fsync_survive_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let sender = [0x5f; 32];
    let quota = MailboxQuota {
        max_per_device: 10,
        max_per_sender_per_device: 10,
        max_sender_bytes: 1_000,
        max_total_bytes: 1_000,
    };
    {
        let store = RedbStore::open(&path).unwrap();
        let put = |container: &[u8], expires_at_ms| {
            let new = NewContainer {
                sender: &sender,
                recipients: &[[1; 16]],
                container,
                stored_at_ms: 0,
                expires_at_ms,
            };
            stored_id(&store.mailbox_store(&new, &quota).unwrap()[0])
        };
        let acked = put(b"acknowledged", 10_000);
        put(b"expired", 100);
        put(b"kept", 10_000);
        assert_eq!(store.mailbox_ack(&[1; 16], &[acked]).unwrap(), 1);
        assert_eq!(store.mailbox_expire(500).unwrap(), 1);
    }
    let store = RedbStore::open(&path).unwrap();
    let left = store.mailbox_list(&[1; 16], 0, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].container, b"kept");
    assert_eq!(store.mailbox_usage().unwrap().entries, 1);
    assert_eq!(store.mailbox_sender_bytes(&sender).unwrap(), 4);
}

/// Set in a child process of the test below: the store file it works on.
const SYNC_CHILD: &str = "CONCLAVE_TEST_REDB_SYNC_CHILD";

/// The child's part: acknowledge device 1's entry, `sync` if asked to, and end the
/// process without closing the store (as a process killed after its last request).
fn acknowledge_and_exit(path: &str) -> ! {
    let store = RedbStore::open(std::path::Path::new(path)).unwrap();
    let id = store.mailbox_list(&[1; 16], 0, 1).unwrap()[0].mailbox_id;
    assert_eq!(store.mailbox_ack(&[1; 16], &[id]).unwrap(), 1);
    if std::env::var("CONCLAVE_TEST_REDB_SYNC").is_ok() {
        store.sync().unwrap();
    }
    std::process::exit(0)
}

/// An acknowledgement commits without an fsync, so a process that ends without closing
/// the store loses it (the entry comes back, to be delivered again) unless `sync` ran
/// first: the server syncs as it shuts down.
#[test]
fn sync_makes_acknowledgements_durable_before_the_process_ends() {
    if let Ok(path) = std::env::var(SYNC_CHILD) {
        acknowledge_and_exit(&path);
    }
    let entries_after_child = |sync: bool| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            let new = NewContainer {
                sender: &[0x51; 32],
                recipients: &[[1; 16]],
                container: b"acknowledged",
                stored_at_ms: 0,
                expires_at_ms: 10_000,
            };
            let quota = MailboxQuota {
                max_per_device: 10,
                max_per_sender_per_device: 10,
                max_sender_bytes: 1_000,
                max_total_bytes: 1_000,
            };
            store.mailbox_store(&new, &quota).unwrap();
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "store::redb_store::tests::sync_makes_acknowledgements_durable_before_the_process_ends",
                "--test-threads=1",
            ])
            .env(SYNC_CHILD, &path)
            .env_remove("CONCLAVE_TEST_REDB_SYNC");
        if sync {
            child.env("CONCLAVE_TEST_REDB_SYNC", "1");
        }
        let status = child.status().unwrap();
        assert!(status.success(), "the child process failed: {status}");
        let store = RedbStore::open(&path).unwrap();
        store.mailbox_list(&[1; 16], 0, 10).unwrap().len()
    };
    assert_eq!(
        entries_after_child(true),
        0,
        "synced: the acknowledgement is on disk"
    );
    assert_eq!(
        entries_after_child(false),
        1,
        "not synced: the acknowledgement was not on disk, the entry is delivered again"
    );
}
