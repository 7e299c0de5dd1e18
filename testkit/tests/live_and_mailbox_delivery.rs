//! Containers sealed with the crypto core reach connected devices live and offline
//! devices from their mailbox; entries stay until acknowledged; the server refuses
//! containers it must not store and reports per recipient what happened.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use conclave_proto::Message as _;
use conclave_proto::v1::{self, DeliveryStatus, ErrorCode};
use conclave_sdk::DeviceId;
use conclave_sdk::container::{ContainerError, ReplayCache, SealedContainer};
use conclave_sdk::identity::{DeviceIdentity, PrekeyPool};
use conclave_sdk::time::DAY_MS;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::{
    mailbox_events, open_text, recipients_from, seal_text, status_for,
};
use conclave_testkit::protocol::{TestClient, device_id_bytes};
use conclave_testkit::sfu::{TestSfu, test_config};
use rand_core::OsRng;

/// A user with one registered device, its prekey pool and its replay cache.
struct Person {
    user: User,
    device: DeviceIdentity,
    pool: PrekeyPool,
    replay: ReplayCache,
}

impl Person {
    /// Registers a new user on `server` and uploads `prekeys` prekeys.
    async fn join(server: &TestSfu, name: &str, prekeys: usize) -> (Person, TestClient) {
        let user = User::new(name);
        let (client, device) = TestClient::registered(server, &user).await;
        let mut pool = PrekeyPool::new(&device);
        if prekeys > 0 {
            client
                .upload_prekeys(&device, &mut pool, prekeys)
                .await
                .unwrap();
        }
        let person = Person {
            user,
            device,
            pool,
            replay: ReplayCache::default(),
        };
        (person, client)
    }

    fn id(&self) -> Vec<u8> {
        device_id_bytes(&self.device)
    }

    /// Opens a delivered container from `sender` and returns its text.
    fn open_text(
        &mut self,
        delivery: &v1::MailboxDelivery,
        sender: &Person,
    ) -> Result<String, ContainerError> {
        let sealed = SealedContainer::decode(&delivery.container)?;
        assert_eq!(sealed.claimed_sender(), sender.user.identity.user_id);
        let (text, device) = open_text(
            &delivery.container,
            &sender.user.identity,
            &self.device,
            &mut self.pool,
            &mut self.replay,
        )?;
        assert_eq!(device, sender.device.device_id());
        Ok(text)
    }
}

/// Fetches fresh bundles of `to` and seals `text` from `from` to all their devices.
async fn seal_for(from: (&TestClient, &Person), to: &[&Person], text: &str) -> Vec<u8> {
    let users: Vec<&User> = to.iter().map(|p| &p.user).collect();
    let bundles = from.0.fetch_bundles(&users).await.unwrap();
    let recipients = recipients_from(&bundles, &users);
    assert_eq!(recipients.len(), to.len());
    seal_text(&from.1.device, &recipients, text, DAY_MS)
}

#[tokio::test]
async fn a_sealed_message_reaches_an_online_device_live_and_an_offline_device_from_its_mailbox() {
    let server = TestSfu::start().await;
    // Carol registers and uploads prekeys, then goes offline. The restart makes sure the
    // server holds no connection of hers (instead of waiting for it to notice the close).
    let (mut carol, carol_client) = Person::join(&server, "carol", 5).await;
    carol_client.conn.close().await;
    let server = server.restart_with(test_config()).await;

    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (mut bob, mut bob_client) = Person::join(&server, "bob", 5).await;

    let text = "lunch at noon? — alice";
    let container = seal_for((&alice_client, &alice), &[&bob, &carol], text).await;
    let sent = alice_client
        .send_container(&[bob.id(), carol.id()], container.clone())
        .await
        .unwrap();
    assert_eq!(sent.results.len(), 2);
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Delivered);
    assert_eq!(status_for(&sent, &carol.id()), DeliveryStatus::Stored);

    // Bob gets it live and opens it with his one-time prekey.
    let delivery = bob_client.mailbox_delivery().await;
    assert_eq!(delivery.container, container);
    assert_eq!(bob.open_text(&delivery, &alice).unwrap(), text);
    assert_eq!(bob_client.ack(&[delivery.mailbox_id]).await.unwrap(), 1);

    // Carol connects later: the entry is announced and delivered after authentication.
    let mut carol_client = TestClient::connect(&server).await;
    let auth = carol_client.authenticate(&carol.device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 1);
    let delivery = carol_client.mailbox_delivery().await;
    assert_eq!(delivery.container, container);
    assert!(delivery.stored_at_ms > 0);
    assert_eq!(carol.open_text(&delivery, &alice).unwrap(), text);
    assert_eq!(carol_client.ack(&[delivery.mailbox_id]).await.unwrap(), 1);
    // Acknowledging again deletes nothing.
    assert_eq!(carol_client.ack(&[delivery.mailbox_id]).await.unwrap(), 0);
    carol_client.conn.close().await;

    // Once acknowledged, reconnecting delivers nothing.
    let mut carol_client = TestClient::connect(&server).await;
    let auth = carol_client.authenticate(&carol.device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 0);
    carol_client.round_trip().await;
    let again = mailbox_events(carol_client.received_events());
    assert!(again.is_empty(), "nothing left to deliver: {again:?}");
    let carol_id = *carol.device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&carol_id).unwrap(), 0);
}

#[tokio::test]
async fn an_unacknowledged_delivery_comes_again_and_the_replay_cache_drops_it() {
    let server = TestSfu::start().await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (mut bob, mut bob_client) = Person::join(&server, "bob", 5).await;

    let container = seal_for((&alice_client, &alice), &[&bob], "once").await;
    let sent = alice_client
        .send_container(&[bob.id()], container)
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Delivered);
    let first = bob_client.mailbox_delivery().await;
    assert_eq!(bob.open_text(&first, &alice).unwrap(), "once");
    // Bob does not acknowledge (say he crashed before he could) and reconnects.
    bob_client.conn.close().await;

    let mut bob_client = TestClient::connect(&server).await;
    assert_eq!(
        bob_client
            .authenticate(&bob.device)
            .await
            .unwrap()
            .mailbox_pending,
        1
    );
    let second = bob_client.mailbox_delivery().await;
    assert_eq!(second.mailbox_id, first.mailbox_id);
    assert_eq!(second.container, first.container);
    // At-least-once delivery: the client's replay cache drops the duplicate.
    let err = bob.open_text(&second, &alice).unwrap_err();
    assert!(matches!(err, ContainerError::Replayed { .. }), "{err}");
    assert_eq!(bob_client.ack(&[second.mailbox_id]).await.unwrap(), 1);
}

#[tokio::test]
async fn an_unknown_recipient_device_is_reported_and_known_ones_still_get_the_container() {
    let server = TestSfu::start().await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (mut bob, mut bob_client) = Person::join(&server, "bob", 5).await;
    let nobody = DeviceId::random(&mut OsRng).as_bytes().to_vec();

    let container = seal_for((&alice_client, &alice), &[&bob], "hi").await;
    let sent = alice_client
        .send_container(&[nobody.clone(), bob.id()], container)
        .await
        .unwrap();
    assert_eq!(sent.results.len(), 2);
    assert_eq!(status_for(&sent, &nobody), DeliveryStatus::UnknownDevice);
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Delivered);
    let delivery = bob_client.mailbox_delivery().await;
    assert_eq!(bob.open_text(&delivery, &alice).unwrap(), "hi");
}

#[tokio::test]
async fn a_container_claiming_another_sender_device_or_user_is_refused() {
    let server = TestSfu::start().await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (bob, bob_client) = Person::join(&server, "bob", 0).await;
    let (carol, _carol_client) = Person::join(&server, "carol", 5).await;

    // Alice's genuine container, sent by Bob's device.
    let container = seal_for((&alice_client, &alice), &[&carol], "from alice").await;
    let err = bob_client
        .send_container(&[carol.id()], container)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("sender device"), "{err}");

    // Bob's own device naming a made-up sender user (review M8: each would cost the
    // recipient a directory lookup).
    let mut forged = v1::Container::decode(
        conclave_testkit::protocol::mailbox::junk_container(&bob.device, 200).as_slice(),
    )
    .unwrap();
    let mut header = v1::ContainerHeader::decode(forged.header.as_slice()).unwrap();
    header.sender_user_id = vec![7; 32];
    forged.header = header.encode_to_vec();
    let err = bob_client
        .send_container(&[carol.id()], forged.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("sender user"), "{err}");

    // Bytes that are no container at all.
    let err = bob_client
        .send_container(&[carol.id()], b"not a container".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");

    let carol_id = *carol.device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&carol_id).unwrap(), 0);
}

#[tokio::test]
async fn a_container_above_max_container_bytes_is_refused() {
    let mut config = test_config();
    config.limits.max_container_bytes = 2048;
    let server = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (mut bob, mut bob_client) = Person::join(&server, "bob", 5).await;

    let big = seal_for((&alice_client, &alice), &[&bob], &"x".repeat(4000)).await;
    assert!(big.len() > 2048);
    let err = alice_client
        .send_container(&[bob.id()], big)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::LimitExceeded), "{err}");
    assert!(err.to_string().contains("max_container_bytes"), "{err}");
    let bob_id = *bob.device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&bob_id).unwrap(), 0);

    // A container within the limit goes through.
    let small = seal_for((&alice_client, &alice), &[&bob], "short").await;
    assert!(small.len() <= 2048, "{} bytes", small.len());
    let sent = alice_client
        .send_container(&[bob.id()], small)
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Delivered);
    let delivery = bob_client.mailbox_delivery().await;
    assert_eq!(bob.open_text(&delivery, &alice).unwrap(), "short");
}

#[tokio::test]
async fn a_full_mailbox_refuses_further_containers_until_entries_are_acknowledged() {
    let mut config = test_config();
    config.limits.max_mailbox_per_device = 2;
    let server = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (mut bob, mut bob_client) = Person::join(&server, "bob", 5).await;
    let (mut dave, mut dave_client) = Person::join(&server, "dave", 5).await;

    // Delivered live but not acknowledged: the entries still count.
    let mut delivered = Vec::new();
    for text in ["one", "two"] {
        let container = seal_for((&alice_client, &alice), &[&bob], text).await;
        let sent = alice_client
            .send_container(&[bob.id()], container)
            .await
            .unwrap();
        assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Delivered);
        let delivery = bob_client.mailbox_delivery().await;
        assert_eq!(bob.open_text(&delivery, &alice).unwrap(), text);
        delivered.push(delivery.mailbox_id);
    }

    // The third is refused for Bob only; Dave still gets it.
    let container = seal_for((&alice_client, &alice), &[&bob, &dave], "three").await;
    let sent = alice_client
        .send_container(&[bob.id(), dave.id()], container)
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::MailboxFull);
    assert_eq!(status_for(&sent, &dave.id()), DeliveryStatus::Delivered);
    let delivery = dave_client.mailbox_delivery().await;
    assert_eq!(dave.open_text(&delivery, &alice).unwrap(), "three");
    bob_client.round_trip().await;
    let extra = mailbox_events(bob_client.received_events());
    assert!(extra.is_empty(), "Bob got a refused container: {extra:?}");
    let bob_id = *bob.device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&bob_id).unwrap(), 2);

    // Acknowledging one makes room for one more.
    assert_eq!(bob_client.ack(&delivered[..1]).await.unwrap(), 1);
    let container = seal_for((&alice_client, &alice), &[&bob], "four").await;
    let sent = alice_client
        .send_container(&[bob.id()], container)
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Delivered);
    let delivery = bob_client.mailbox_delivery().await;
    assert_eq!(bob.open_text(&delivery, &alice).unwrap(), "four");
}

#[tokio::test]
async fn a_device_cannot_acknowledge_another_devices_mailbox_entries() {
    let server = TestSfu::start().await;
    let (carol, carol_client) = Person::join(&server, "carol", 5).await;
    carol_client.conn.close().await;
    let server = server.restart_with(test_config()).await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (mut bob, mut bob_client) = Person::join(&server, "bob", 5).await;

    let container = seal_for((&alice_client, &alice), &[&bob, &carol], "for both").await;
    let sent = alice_client
        .send_container(&[bob.id(), carol.id()], container)
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &carol.id()), DeliveryStatus::Stored);
    let bob_delivery = bob_client.mailbox_delivery().await;
    assert_eq!(bob.open_text(&bob_delivery, &alice).unwrap(), "for both");

    // Mailbox ids are sequential store-wide, so Carol's is near Bob's. Bob (or anyone)
    // acknowledging ids that are not his deletes nothing of Carol's.
    let guesses: Vec<u64> = (1..=bob_delivery.mailbox_id + 10).collect();
    let deleted = bob_client.ack(&guesses).await.unwrap();
    assert_eq!(deleted, 1, "only Bob's own entry");
    let alice_deleted = alice_client.ack(&guesses).await.unwrap();
    assert_eq!(alice_deleted, 0);

    let carol_id = *carol.device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&carol_id).unwrap(), 1);
    let mut carol_client = TestClient::connect(&server).await;
    let auth = carol_client.authenticate(&carol.device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 1);
    carol_client.mailbox_delivery().await;
}

#[tokio::test]
async fn listing_a_recipient_twice_stores_one_entry() {
    let server = TestSfu::start().await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;
    let (mut bob, mut bob_client) = Person::join(&server, "bob", 5).await;

    let container = seal_for((&alice_client, &alice), &[&bob], "just once").await;
    let sent = alice_client
        .send_container(&[bob.id(), bob.id()], container)
        .await
        .unwrap();
    assert_eq!(sent.results.len(), 1, "{sent:?}");
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Delivered);
    let delivery = bob_client.mailbox_delivery().await;
    assert_eq!(bob.open_text(&delivery, &alice).unwrap(), "just once");
    bob_client.round_trip().await;
    let more = mailbox_events(bob_client.received_events());
    assert!(more.is_empty(), "{more:?}");
    let bob_id = *bob.device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&bob_id).unwrap(), 1);
}

#[tokio::test]
async fn more_waiting_entries_than_one_delivery_page_all_arrive_in_order() {
    const ENTRIES: usize = 250; // the server reads the mailbox 100 entries at a time
    let mut config = test_config();
    config.limits.requests_per_second = 10_000;
    config.limits.request_burst = 10_000;
    // All from one sender: above the default per-sender share of a mailbox.
    config.limits.max_mailbox_entries_per_sender_per_device = ENTRIES;
    let server = TestSfu::start_with(config.clone(), Arc::new(MemoryStore::new())).await;
    let (mut carol, carol_client) = Person::join(&server, "carol", 1).await;
    carol_client.conn.close().await;
    let server = server.restart_with(config).await;
    let (alice, alice_client) = Person::join(&server, "alice", 0).await;

    // One sealed container stored many times (the replay cache will drop the copies).
    let container = seal_for((&alice_client, &alice), &[&carol], "page me").await;
    for _ in 0..ENTRIES {
        let sent = alice_client
            .send_container(&[carol.id()], container.clone())
            .await
            .unwrap();
        assert_eq!(status_for(&sent, &carol.id()), DeliveryStatus::Stored);
    }

    let mut carol_client = TestClient::connect(&server).await;
    let auth = carol_client.authenticate(&carol.device).await.unwrap();
    assert_eq!(auth.mailbox_pending as usize, ENTRIES);
    let mut ids = Vec::with_capacity(ENTRIES);
    for _ in 0..ENTRIES {
        let delivery = carol_client.mailbox_delivery().await;
        assert_eq!(delivery.container, container);
        if ids.is_empty() {
            assert_eq!(carol.open_text(&delivery, &alice).unwrap(), "page me");
        }
        ids.push(delivery.mailbox_id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no entry twice: {ids:?}"
    );
    carol_client.round_trip().await;
    let extra = mailbox_events(carol_client.received_events());
    assert!(extra.is_empty(), "exactly the waiting entries: {extra:?}");
    assert_eq!(carol_client.ack(&ids).await.unwrap() as usize, ENTRIES);
    let carol_id = *carol.device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&carol_id).unwrap(), 0);
}
