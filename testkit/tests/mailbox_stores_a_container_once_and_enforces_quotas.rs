//! H3: one user cannot exhaust the server's mailbox storage. A container is stored once
//! however many recipients it has; the bytes a sending user has stored are bounded
//! (counted once per container), so are all stored bytes together; and registrations
//! from one source address are rate limited; and one sending user may hold only so many
//! entries in one device's mailbox, so it cannot fill a victim's mailbox. Other users
//! keep working throughout.

// Test helpers may panic on unexpected failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Instant;

use conclave_proto::v1::{DeliveryStatus, ErrorCode};
use conclave_sdk::transport::TransportError;
use conclave_sfu::config::Config;
use conclave_sfu::store::{DeviceRecord, MemoryStore, RedbStore, Store};
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::{junk_container, status_for};
use conclave_testkit::protocol::{TestClient, device_id_bytes};
use conclave_testkit::sfu::{TestSfu, test_config_with};
use rand_core::{OsRng, RngCore};

/// Registers a device straight in the store (no connection): a recipient that exists
/// but is offline. The certificate is never read by these tests.
fn offline_device(store: &dyn Store) -> [u8; 16] {
    let mut user_id = [0u8; 32];
    let mut device_id = [0u8; 16];
    OsRng.fill_bytes(&mut user_id);
    OsRng.fill_bytes(&mut device_id);
    let record = DeviceRecord {
        user_id,
        device_id,
        certificate: vec![0xce; 300],
    };
    store.register_device(&[7; 32], &record, 16).unwrap();
    device_id
}

async fn start(store: Arc<dyn Store>, edit: impl FnOnce(&mut Config)) -> TestSfu {
    TestSfu::start_with(test_config_with(edit), store).await
}

fn assert_limit(err: &TransportError, limit: &str) {
    assert_eq!(err.server_code(), Some(ErrorCode::LimitExceeded), "{err}");
    assert!(err.to_string().contains(limit), "{err} should name {limit}");
}

const MIB: u64 = 1024 * 1024;

/// A 1 MiB container to 1,000 recipients grows the redb file by about 1 MiB, not
/// 1 GiB. Measured two ways: the database file's size on disk before and after the
/// send (`std::fs::metadata(path).len()`), and the store's own accounting
/// (`Store::mailbox_usage`). The container is deleted with its last entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_container_to_1000_recipients_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conclave.redb");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&path).unwrap());
    let server = start(Arc::clone(&store), |_| {}).await;
    let alice = User::new("alice");
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;

    let started = Instant::now();
    let recipients: Vec<[u8; 16]> = (0..1000).map(|_| offline_device(store.as_ref())).collect();
    eprintln!("registered 1000 recipients in {:?}", started.elapsed());
    let container = junk_container(&alice_device, 1024 * 1024);
    assert!(container.len() as u64 > MIB - 64 && container.len() as u64 <= MIB);

    let before = std::fs::metadata(&path).unwrap().len();
    let ids: Vec<Vec<u8>> = recipients.iter().map(|d| d.to_vec()).collect();
    let started = Instant::now();
    let sent = alice_client
        .send_container(&ids, container.clone())
        .await
        .unwrap();
    let send_time = started.elapsed();
    let after = std::fs::metadata(&path).unwrap().len();
    assert_eq!(sent.results.len(), 1000);
    for id in &ids {
        assert_eq!(status_for(&sent, id), DeliveryStatus::Stored);
    }
    let growth = after.saturating_sub(before);
    eprintln!(
        "1 MiB container to 1000 recipients: redb file {before} -> {after} bytes (+{growth}) in {send_time:?}"
    );
    // redb allocates in power-of-two regions, so the file grows by a few MiB for a
    // 1 MiB value; a copy per recipient made it grow by 1.6 GB.
    assert!(
        growth < 8 * MIB,
        "the database grew by {growth} bytes for one {}-byte container",
        container.len()
    );

    // The store's accounting: one container of its own size, 1000 entries, all of it
    // attributed to Alice once.
    let usage = store.mailbox_usage().unwrap();
    eprintln!("store accounting after the send: {usage:?}");
    assert_eq!(
        (usage.bytes, usage.containers, usage.entries),
        (container.len() as u64, 1, 1000)
    );
    let alice_user = *alice.identity.user_id.as_bytes();
    assert_eq!(
        store.mailbox_sender_bytes(&alice_user).unwrap(),
        container.len() as u64
    );
    // Every recipient gets the whole container.
    let first = store.mailbox_list(&recipients[0], 0, 10).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].container, container);

    // The container stays while any recipient has not acknowledged it ...
    for device in &recipients[..2] {
        let entry = store.mailbox_list(device, 0, 1).unwrap()[0].mailbox_id;
        assert_eq!(store.mailbox_ack(device, &[entry]).unwrap(), 1);
    }
    let usage = store.mailbox_usage().unwrap();
    assert_eq!(
        (usage.bytes, usage.containers, usage.entries),
        (container.len() as u64, 1, 998)
    );
    // ... and goes with its last entry (here the other 998 expire in one sweep; the
    // conformance suite and the quota test below cover the last acknowledgement).
    assert_eq!(store.mailbox_expire(u64::MAX).unwrap(), 998);
    assert_eq!(store.mailbox_usage().unwrap(), Default::default());
    assert_eq!(store.mailbox_sender_bytes(&alice_user).unwrap(), 0);
}

/// Alice's stored bytes hit `max_mailbox_bytes_per_sender`: her next send is refused
/// whole (nothing stored), while Carol's message to the same recipient is delivered.
/// A container counts once however many recipients it has, and its bytes come back
/// only when its last recipient has acknowledged it.
#[tokio::test]
async fn a_sender_over_its_quota_is_refused_while_another_senders_message_is_delivered() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = start(Arc::clone(&store), |c| {
        c.limits.max_mailbox_bytes_per_sender = 100_000;
    })
    .await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    let (mut bob_client, bob_device) = TestClient::registered(&server, &bob).await;
    let (carol_client, carol_device) = TestClient::registered(&server, &carol).await;
    let bob_id = device_id_bytes(&bob_device);
    let dave = offline_device(store.as_ref());
    let alice_user = *alice.identity.user_id.as_bytes();

    // 30 kB to Bob and Dave counts 30 kB, not 60 kB.
    let first = junk_container(&alice_device, 30_000);
    alice_client
        .send_container(&[bob_id.clone(), dave.to_vec()], first.clone())
        .await
        .unwrap();
    assert_eq!(store.mailbox_sender_bytes(&alice_user).unwrap(), 30_000);
    let first_id = bob_client.mailbox_delivery().await.mailbox_id;
    for _ in 0..2 {
        alice_client
            .send_container(
                std::slice::from_ref(&bob_id),
                junk_container(&alice_device, 30_000),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.mailbox_sender_bytes(&alice_user).unwrap(), 90_000);

    // 90 kB + 30 kB > 100 kB: refused whole, nothing stored.
    let bob_key = *bob_device.device_id().as_bytes();
    let err = alice_client
        .send_container(
            std::slice::from_ref(&bob_id),
            junk_container(&alice_device, 30_000),
        )
        .await
        .unwrap_err();
    assert_limit(&err, "max_mailbox_bytes_per_sender");
    assert_eq!(store.mailbox_count(&bob_key).unwrap(), 3);
    assert_eq!(store.mailbox_sender_bytes(&alice_user).unwrap(), 90_000);

    // Carol is not affected: her message reaches Bob at once.
    let sent = carol_client
        .send_container(
            std::slice::from_ref(&bob_id),
            junk_container(&carol_device, 30_000),
        )
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob_id), DeliveryStatus::Delivered);

    // Bob acknowledges Alice's first container, but Dave has not: still stored, still
    // counted, still refused.
    assert_eq!(bob_client.ack(&[first_id]).await.unwrap(), 1);
    assert_eq!(store.mailbox_sender_bytes(&alice_user).unwrap(), 90_000);
    let err = alice_client
        .send_container(
            std::slice::from_ref(&bob_id),
            junk_container(&alice_device, 30_000),
        )
        .await
        .unwrap_err();
    assert_limit(&err, "max_mailbox_bytes_per_sender");
    // Dave acknowledges too: the container is gone and Alice may send again.
    let dave_entry = store.mailbox_list(&dave, 0, 1).unwrap()[0].mailbox_id;
    assert_eq!(store.mailbox_ack(&dave, &[dave_entry]).unwrap(), 1);
    assert_eq!(store.mailbox_sender_bytes(&alice_user).unwrap(), 60_000);
    alice_client
        .send_container(
            std::slice::from_ref(&bob_id),
            junk_container(&alice_device, 30_000),
        )
        .await
        .unwrap();
}

/// All stored containers together are bounded by `max_mailbox_bytes`: a send that
/// would exceed it is refused with an error naming the limit, and succeeds again once
/// recipients have fetched their mail.
#[tokio::test]
async fn the_global_mailbox_budget_refuses_with_a_clear_error() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = start(Arc::clone(&store), |c| {
        c.limits.max_mailbox_bytes_per_sender = 40_000;
        c.limits.max_mailbox_bytes = 50_000;
    })
    .await;
    let (alice, carol) = (User::new("alice"), User::new("carol"));
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    let (carol_client, carol_device) = TestClient::registered(&server, &carol).await;
    let bob = offline_device(store.as_ref());

    alice_client
        .send_container(&[bob.to_vec()], junk_container(&alice_device, 30_000))
        .await
        .unwrap();
    let err = carol_client
        .send_container(&[bob.to_vec()], junk_container(&carol_device, 30_000))
        .await
        .unwrap_err();
    assert_limit(&err, "max_mailbox_bytes");
    assert!(
        !err.to_string().contains("per_sender"),
        "the global budget, not Carol's quota: {err}"
    );
    assert_eq!(store.mailbox_count(&bob).unwrap(), 1);

    let entry = store.mailbox_list(&bob, 0, 1).unwrap()[0].mailbox_id;
    store.mailbox_ack(&bob, &[entry]).unwrap();
    carol_client
        .send_container(&[bob.to_vec()], junk_container(&carol_device, 30_000))
        .await
        .unwrap();
}

/// One source address may register `registrations_per_ip_burst` devices at once; the
/// next `Register` is refused with `RATE_LIMITED`, a retry hint and a message naming
/// the limit, and stores nothing. Devices registered earlier keep authenticating and
/// sending.
#[tokio::test]
async fn registrations_beyond_the_per_ip_limit_are_refused_with_a_clear_error() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = start(Arc::clone(&store), |c| {
        c.limits.registrations_per_ip_burst = 3;
        c.limits.registrations_per_ip_per_hour = 1;
    })
    .await;
    let users: Vec<User> = (0..4).map(|i| User::new(&format!("u{i}"))).collect();
    let mut devices = Vec::new();
    for user in &users[..3] {
        let (client, device) = TestClient::registered(&server, user).await;
        client.conn.close().await;
        devices.push(device);
    }

    let refused = TestClient::connect(&server).await;
    let device = users[3].device();
    let err = refused.register(&users[3], &device).await.unwrap_err();
    let TransportError::Server {
        code,
        message,
        retry_after_ms,
        ..
    } = &err
    else {
        panic!("expected a server refusal, got {err}");
    };
    assert_eq!(*code, ErrorCode::RateLimited, "{err}");
    assert!(message.contains("registrations_per_ip"), "{message}");
    assert!(
        (1..=3_600_000).contains(retry_after_ms),
        "at one registration per hour the wait is at most an hour: {retry_after_ms}"
    );
    assert_eq!(
        store.device(device.device_id().as_bytes()).unwrap(),
        None,
        "nothing registered"
    );

    // Registered devices are unaffected: they authenticate and send.
    let sender = TestClient::connect(&server).await;
    sender.authenticate(&devices[0]).await.unwrap();
    let receiver = TestClient::connect(&server).await;
    receiver.authenticate(&devices[1]).await.unwrap();
    let sent = sender
        .send_container(
            &[device_id_bytes(&devices[1])],
            junk_container(&devices[0], 1_000),
        )
        .await
        .unwrap();
    assert_eq!(
        status_for(&sent, &device_id_bytes(&devices[1])),
        DeliveryStatus::Delivered
    );
}

/// Alice fills her share of Bob's mailbox (`max_mailbox_entries_per_sender_per_device`)
/// with tiny containers, from two of her devices: her next send to Bob alone is refused
/// with `LIMIT_EXCEEDED` naming the limit, and one to Bob and Dave reaches Dave only
/// (`MAILBOX_FULL` for Bob). Bob's mailbox is far from its own limit, so Carol's
/// container to Bob is stored and delivered. Once Bob acknowledges one of Alice's
/// entries, Alice may send him one more.
#[tokio::test]
async fn one_sender_cannot_fill_a_victims_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("c.redb")).unwrap());
    let server = start(Arc::clone(&store), |c| {
        c.limits.max_mailbox_per_device = 10;
        c.limits.max_mailbox_entries_per_sender_per_device = 3;
    })
    .await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let (alice_phone, alice_phone_device) = TestClient::registered(&server, &alice).await;
    let (alice_laptop, alice_laptop_device) = TestClient::registered(&server, &alice).await;
    let (mut bob_client, bob_device) = TestClient::registered(&server, &bob).await;
    let (carol_client, carol_device) = TestClient::registered(&server, &carol).await;
    let bob_id = device_id_bytes(&bob_device);
    let bob_key = *bob_device.device_id().as_bytes();
    let dave = offline_device(store.as_ref());
    let alice_user = *alice.identity.user_id.as_bytes();

    // Three tiny containers from Alice's two devices: delivered, not acknowledged.
    let mut alice_entries = Vec::new();
    for (client, device) in [
        (&alice_phone, &alice_phone_device),
        (&alice_laptop, &alice_laptop_device),
        (&alice_phone, &alice_phone_device),
    ] {
        let sent = client
            .send_container(std::slice::from_ref(&bob_id), junk_container(device, 200))
            .await
            .unwrap();
        assert_eq!(status_for(&sent, &bob_id), DeliveryStatus::Delivered);
        alice_entries.push(bob_client.mailbox_delivery().await.mailbox_id);
    }
    assert_eq!(store.mailbox_count_from(&bob_key, &alice_user).unwrap(), 3);

    // The fourth, from either device, is refused whole with an error naming the limit.
    for (client, device) in [
        (&alice_phone, &alice_phone_device),
        (&alice_laptop, &alice_laptop_device),
    ] {
        let err = client
            .send_container(std::slice::from_ref(&bob_id), junk_container(device, 200))
            .await
            .unwrap_err();
        assert_limit(&err, "max_mailbox_entries_per_sender_per_device");
    }
    // To Bob and Dave: Dave gets it, Bob is reported full (for Alice).
    let sent = alice_phone
        .send_container(
            &[bob_id.clone(), dave.to_vec()],
            junk_container(&alice_phone_device, 200),
        )
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob_id), DeliveryStatus::MailboxFull);
    assert_eq!(status_for(&sent, &dave), DeliveryStatus::Stored);
    assert_eq!(store.mailbox_count(&bob_key).unwrap(), 3);

    // Carol is not locked out of Bob's mailbox.
    let sent = carol_client
        .send_container(
            std::slice::from_ref(&bob_id),
            junk_container(&carol_device, 200),
        )
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob_id), DeliveryStatus::Delivered);
    bob_client.mailbox_delivery().await;
    assert_eq!(store.mailbox_count(&bob_key).unwrap(), 4);

    // Bob acknowledges one of Alice's containers: she may send one more.
    assert_eq!(bob_client.ack(&alice_entries[..1]).await.unwrap(), 1);
    let sent = alice_laptop
        .send_container(
            std::slice::from_ref(&bob_id),
            junk_container(&alice_laptop_device, 200),
        )
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob_id), DeliveryStatus::Delivered);
}
