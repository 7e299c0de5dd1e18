//! Tests of what only the redb store has: persistence across reopen, the file
//! itself, and the handling of corrupt records.

use super::codec::device_u64_key;
use super::*;

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
        MailboxPut::Full => panic!("unexpected Full"),
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
    assert!(matches!(
        RedbStore::open(&path),
        Err(StoreError::Corrupt(_))
    ));
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
