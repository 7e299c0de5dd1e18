//! Mailbox entries nobody acknowledges are deleted by the background sweep once their
//! ttl has passed: the shorter of the container's own ttl and the server's
//! `mailbox_ttl_secs`.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1::DeliveryStatus;
use conclave_sdk::container::ReplayCache;
use conclave_sdk::identity::{DeviceIdentity, PrekeyPool};
use conclave_sdk::time::DAY_MS;
use conclave_sfu::config::Config;
use conclave_sfu::store::{DeviceIdBytes, MemoryStore, Store};
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::{
    mailbox_events, open_text, recipients_from, seal_text, status_for,
};
use conclave_testkit::protocol::{TestClient, device_id_bytes};
use conclave_testkit::sfu::{TestSfu, test_config};

/// Polls the store (at most 100 times, 100 ms apart) until `device` holds `want`
/// entries; returns the last count seen.
async fn wait_for_mailbox_count(store: &MemoryStore, device: &DeviceIdBytes, want: usize) -> usize {
    let mut count = store.mailbox_count(device).unwrap();
    for _ in 0..100 {
        if count == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        count = store.mailbox_count(device).unwrap();
    }
    count
}

/// Registers Carol with prekeys on a server with `config`, then restarts the server
/// so that she is certainly offline. Returns the new server and her keys.
async fn offline_carol(
    config: &Config,
    store: &Arc<MemoryStore>,
) -> (TestSfu, User, DeviceIdentity, PrekeyPool) {
    let server = TestSfu::start_with(config.clone(), Arc::clone(store) as Arc<dyn Store>).await;
    let carol = User::new("carol");
    let (client, device) = TestClient::registered(&server, &carol).await;
    let mut pool = PrekeyPool::new(&device);
    client.upload_prekeys(&device, &mut pool, 5).await.unwrap();
    client.conn.close().await;
    let server = server.restart_with(config.clone()).await;
    (server, carol, device, pool)
}

/// Alice sends Carol a text with `ttl_ms`; the server must store it for offline Carol.
async fn send_to_carol(
    alice: (&TestClient, &DeviceIdentity),
    carol: (&User, &DeviceIdentity),
    text: &str,
    ttl_ms: u64,
) {
    let bundles = alice.0.fetch_bundles(&[carol.0]).await.unwrap();
    let container = seal_text(
        alice.1,
        &recipients_from(&bundles, &[carol.0]),
        text,
        ttl_ms,
    );
    let carol_id = device_id_bytes(carol.1);
    let sent = alice
        .0
        .send_container(std::slice::from_ref(&carol_id), container)
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &carol_id), DeliveryStatus::Stored);
}

#[tokio::test]
async fn an_entry_is_swept_once_the_configured_mailbox_ttl_has_passed() {
    let mut config = test_config();
    config.timing.mailbox_ttl_secs = 1;
    config.timing.sweep_interval_secs = 1;
    let store = Arc::new(MemoryStore::new());
    let (server, carol, carol_device, _pool) = offline_carol(&config, &store).await;

    let alice = User::new("alice");
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    // The container itself would live a day; the server keeps it one second.
    send_to_carol(
        (&alice_client, &alice_device),
        (&carol, &carol_device),
        "are you there?",
        DAY_MS,
    )
    .await;

    let carol_id = *carol_device.device_id().as_bytes();
    assert_eq!(
        wait_for_mailbox_count(&store, &carol_id, 0).await,
        0,
        "the sweep deletes the expired entry"
    );

    // Carol comes back to an empty mailbox.
    let mut carol_client = TestClient::connect(&server).await;
    let auth = carol_client.authenticate(&carol_device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 0);
    carol_client.round_trip().await;
    let delivered = mailbox_events(carol_client.received_events());
    assert!(
        delivered.is_empty(),
        "expired entries are not delivered: {delivered:?}"
    );
}

#[tokio::test]
async fn a_container_ttl_shorter_than_the_server_ttl_decides_when_its_entry_expires() {
    // The server would keep entries for the default 30 days.
    let config = test_config();
    assert!(config.timing.mailbox_ttl_secs > 3600);
    let store = Arc::new(MemoryStore::new());
    let (server, carol, carol_device, mut carol_pool) = offline_carol(&config, &store).await;

    let alice = User::new("alice");
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    let alice_side = (&alice_client, &alice_device);
    let carol_side = (&carol, &carol_device);
    send_to_carol(alice_side, carol_side, "short-lived", 1_000).await;
    send_to_carol(alice_side, carol_side, "long-lived", DAY_MS).await;

    let carol_id = *carol_device.device_id().as_bytes();
    assert_eq!(
        wait_for_mailbox_count(&store, &carol_id, 1).await,
        1,
        "the sweep deletes the short-lived entry only"
    );

    let mut carol_client = TestClient::connect(&server).await;
    let auth = carol_client.authenticate(&carol_device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 1);
    let delivery = carol_client.mailbox_delivery().await;
    let (text, _) = open_text(
        &delivery.container,
        &alice.identity,
        &carol_device,
        &mut carol_pool,
        &mut ReplayCache::default(),
    )
    .unwrap();
    assert_eq!(text, "long-lived");
    carol_client.round_trip().await;
    let more = mailbox_events(carol_client.received_events());
    assert!(more.is_empty(), "only one entry was left: {more:?}");
}
