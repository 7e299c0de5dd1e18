//! Web Push wake-ups (RFC 8030 / 8291 / 8292) against a real SFU and a local HTTPS push
//! service: an offline invitee is woken and joins; the wake-up is encrypted to the
//! device, signed with the server's VAPID key and says nothing but a count; a connected
//! device is not woken; a flood of containers makes one wake-up; 404/410 delete the
//! subscription; 429/5xx are retried; endpoints off the allow-list are refused.

// Test helpers may panic on unexpected failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding as _};
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};
use conclave_sdk::client::{Client, ClientError, ClientEvent, DeviceCredentials, MediaKind};
use conclave_sdk::push::{PushKeys, WakeAction, open_wake_up};
use conclave_sfu::config::PushConfig;
use conclave_sfu::push::VapidKey;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::prelude::*;
use conclave_testkit::protocol::device_id_bytes;
use conclave_testkit::protocol::mailbox::junk_container;
use conclave_testkit::push_service::{LocalPushService, PushRequest};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use rand_core::OsRng;

/// How long "nothing more arrives" is watched for (the wake-up delay is 100 ms).
const QUIET: Duration = Duration::from_millis(1_500);

/// A local push service, and an SFU that wakes devices through it (after 100 ms;
/// retries from 100 ms) with its key in the returned directory.
async fn start() -> (LocalPushService, tempfile::TempDir, TestSfu) {
    start_edited(|_| {}).await
}

/// [`start`] with the SFU's push settings as `edit` changes them.
async fn start_edited(
    edit: impl FnOnce(&mut PushConfig),
) -> (LocalPushService, tempfile::TempDir, TestSfu) {
    let service = LocalPushService::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("vapid.pem");
    std::fs::write(&key_file, VapidKey::generate_pem().unwrap().as_bytes()).unwrap();
    let mut config = client_test_config();
    let mut push = PushConfig::default();
    push.vapid_key_file = key_file;
    push.contact = "mailto:ops@conclave.test".into();
    push.allowed_hosts = vec![service.allowed_host()];
    push.ca_file = Some(service.ca_file.clone());
    // The local push service is on 127.0.0.1.
    push.allow_private_addresses = true;
    push.delay_ms = 100;
    push.retry_base_ms = 100;
    push.retry_max_ms = 1_000;
    edit(&mut push);
    config.push = Some(push);
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    (service, dir, sfu)
}

/// Registers `keys` at `endpoint` on the raw protocol; the server's answer.
async fn subscribe(
    client: &TestClient,
    endpoint: &str,
    keys: &PushKeys,
) -> Result<response::Result, conclave_sdk::transport::TransportError> {
    client
        .request(Request::SetPushSubscription(v1::SetPushSubscription {
            endpoint: endpoint.to_string(),
            p256dh: keys.public_key().to_vec(),
            auth: keys.auth_secret().to_vec(),
        }))
        .await
}

/// The code a refused request was answered with.
fn error_code(
    answer: &Result<response::Result, conclave_sdk::transport::TransportError>,
) -> Option<ErrorCode> {
    match answer {
        Err(conclave_sdk::transport::TransportError::Server { code, .. }) => Some(*code),
        _ => None,
    }
}

/// A registered device with a push subscription at `service`'s endpoint `name`, which
/// then disconnects; and a connected sender.
async fn offline_subscriber(
    sfu: &TestSfu,
    service: &LocalPushService,
    name: &str,
) -> (
    PushKeys,
    Vec<u8>,
    TestClient,
    conclave_sdk::identity::DeviceIdentity,
) {
    let keys = PushKeys::generate(&mut OsRng);
    let (bob, bob_device) = TestClient::registered(sfu, &User::new(name)).await;
    let set = subscribe(&bob, &service.endpoint(name), &keys)
        .await
        .unwrap();
    assert!(
        matches!(set, response::Result::PushSubscriptionSet(_)),
        "{set:?}"
    );
    drop(bob);
    let (alice, alice_device) = TestClient::registered(sfu, &User::new("alice")).await;
    (keys, device_id_bytes(&bob_device), alice, alice_device)
}

/// `sender` stores one 100-byte container for the device `to`.
async fn send_one(
    sender: &TestClient,
    sender_device: &conclave_sdk::identity::DeviceIdentity,
    to: &[u8],
) {
    sender
        .send_container(&[to.to_vec()], junk_container(sender_device, 100))
        .await
        .unwrap();
}

/// Checks the request's VAPID `Authorization` (RFC 8292): signed by `server_key`, for
/// the push service's origin, expiring within 24 hours, naming the operator.
fn assert_vapid(request: &PushRequest, server_key: &[u8; 65], origin: &str) {
    let header = request
        .header("authorization")
        .expect("an Authorization header");
    let rest = header.strip_prefix("vapid t=").expect("the vapid scheme");
    let (token, k) = rest.split_once(", k=").expect("t= and k=");
    assert_eq!(
        Base64UrlUnpadded::decode_vec(k).unwrap(),
        server_key.to_vec()
    );
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature =
        Signature::from_slice(&Base64UrlUnpadded::decode_vec(signature).unwrap()).unwrap();
    VerifyingKey::from_sec1_bytes(server_key)
        .unwrap()
        .verify(signing_input.as_bytes(), &signature)
        .expect("the VAPID token verifies under the server's key");
    let (_, claims) = signing_input.split_once('.').unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(claims).unwrap()).unwrap();
    assert_eq!(claims["aud"], origin);
    assert_eq!(claims["sub"], "mailto:ops@conclave.test");
    let exp = claims["exp"].as_u64().unwrap();
    let now = now().0 / 1000;
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}, now {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_invitee_is_woken_by_push_and_joins() {
    let (service, _dir, sfu) = start().await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.connect(&sfu).await;

    // Bob's app subscribes with the server's key, registers, stores, goes away.
    let (client, mut events) = Client::connect(sfu.client_config(), bob.credentials())
        .await
        .unwrap();
    loop {
        if let Some(ClientEvent::PrekeysUploaded { .. }) = events.recv().await {
            break;
        }
    }
    let server_key = client.push_server_key().await.unwrap();
    let keys = PushKeys::generate(&mut OsRng);
    client
        .register_push(&service.endpoint("bob"), &keys)
        .await
        .unwrap();
    let stored = client.export_credentials().await.unwrap();
    let stored_keys = keys.to_bytes();
    client.close().await;
    assert!(service.requests().is_empty(), "no wake-up while connected");

    // Alice calls him: the invitation waits in his mailbox, and he is woken.
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let requests = service.wait_for(1).await;
    let push = &requests[0];
    assert_eq!(push.method, "POST");
    assert_eq!(push.path, "/push/bob");
    assert_eq!(push.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(push.header("urgency"), Some("high"), "an invitation rings");
    assert_eq!(push.header("topic"), Some("conclave-mailbox"));
    let ttl: u64 = push.header("ttl").unwrap().parse().unwrap();
    assert!(ttl > 0 && ttl <= 24 * 3600, "ttl {ttl}");
    assert_vapid(
        push,
        &server_key,
        &format!("https://localhost:{}", service.port),
    );
    // Header (86 bytes), a few bytes of protobuf, padding delimiter, tag: nothing else.
    assert!(push.body.len() < 128, "{} bytes", push.body.len());

    // Bob's phone opens it with the keys it stored, and connects.
    let keys = PushKeys::from_bytes(&stored_keys).unwrap();
    let wake = open_wake_up(&keys, &push.body).expect("the wake-up opens");
    assert_eq!(wake.pending, 1);
    assert!(wake.urgent);
    assert_eq!(wake.action(), WakeAction::ConnectAndFetch);
    let other = PushKeys::generate(&mut OsRng);
    assert!(
        open_wake_up(&other, &push.body).is_err(),
        "only Bob can read it"
    );

    let restored = DeviceCredentials::import(&stored, now()).unwrap();
    let (client, events) = Client::connect(sfu.client_config(), restored)
        .await
        .unwrap();
    let mut b = Device { client, events };
    let invitation = b.invitation().await;
    assert_eq!(invitation.meeting_id, meeting_a.id());
    let mut meeting_b = b
        .client
        .accept(&invitation, &[MediaKind::Audio])
        .await
        .unwrap();
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"woken and here",
        &mut meeting_b,
    )
    .await;
    assert_eq!(
        service.requests().len(),
        1,
        "one wake-up for one invitation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_device_is_not_woken() {
    let (service, _dir, sfu) = start().await;
    let keys = PushKeys::generate(&mut OsRng);
    let (bob, bob_device) = TestClient::registered(&sfu, &User::new("bob")).await;
    subscribe(&bob, &service.endpoint("bob"), &keys)
        .await
        .unwrap();
    let (alice, alice_device) = TestClient::registered(&sfu, &User::new("alice")).await;
    let sent = alice
        .send_container(
            &[device_id_bytes(&bob_device)],
            junk_container(&alice_device, 200),
        )
        .await
        .unwrap();
    assert_eq!(sent.results[0].status, v1::DeliveryStatus::Delivered as i32);
    assert!(service.settle(QUIET).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_containers_to_one_device_makes_one_wake_up() {
    let (service, _dir, sfu) = start().await;
    let (keys, bob, alice, alice_device) = offline_subscriber(&sfu, &service, "bob").await;
    for _ in 0..40 {
        let sent = alice
            .send_container(
                std::slice::from_ref(&bob),
                junk_container(&alice_device, 300),
            )
            .await
            .unwrap();
        assert_eq!(sent.results[0].status, v1::DeliveryStatus::Stored as i32);
    }
    service.wait_for(1).await;
    let requests = service.settle(QUIET).await;
    // One per `min_interval_secs` (10 s by default): the rest are folded into it.
    assert_eq!(requests.len(), 1, "{requests:?}");
    let wake = open_wake_up(&keys, &requests[0].body).unwrap();
    assert!(wake.pending >= 1 && wake.pending <= 40, "{}", wake.pending);
    assert!(!wake.urgent, "no sender asked for urgency");
    assert_eq!(requests[0].header("urgency"), Some("normal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_push_service_says_is_gone_is_deleted() {
    let (service, _dir, sfu) = start().await;
    service.script(&[(410, None)]);
    let (_keys, bob, alice, alice_device) = offline_subscriber(&sfu, &service, "bob").await;
    let bob_id: [u8; 16] = bob.as_slice().try_into().unwrap();
    send_one(&alice, &alice_device, &bob).await;
    let requests = service.wait_for(1).await;
    assert_eq!(requests[0].status, 410);
    let deadline = tokio::time::Instant::now() + WAIT;
    while sfu.store.push_subscription(&bob_id).unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "subscription kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another container: nobody to wake.
    send_one(&alice, &alice_device, &bob).await;
    assert_eq!(service.settle(QUIET).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_push_service_is_retried_until_it_takes_the_wake_up() {
    let (service, _dir, sfu) = start().await;
    service.script(&[(503, None), (429, Some(0))]);
    let (keys, bob, alice, alice_device) = offline_subscriber(&sfu, &service, "bob").await;
    let bob_id: [u8; 16] = bob.as_slice().try_into().unwrap();
    let sent = alice
        .request(Request::SendContainer(v1::SendContainer {
            recipient_device_ids: vec![bob.clone()],
            container: junk_container(&alice_device, 100),
            wake_urgency: v1::WakeUrgency::High as i32,
        }))
        .await
        .unwrap();
    assert!(matches!(sent, response::Result::ContainerSent(_)));
    let requests = service.wait_for(3).await;
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 201]);
    for r in &requests {
        assert_eq!(
            r.header("urgency"),
            Some("high"),
            "the sender's hint is kept"
        );
        assert!(open_wake_up(&keys, &r.body).unwrap().urgent);
    }
    assert!(sfu.store.push_subscription(&bob_id).unwrap().is_some());
    assert_eq!(
        service.settle(QUIET).await.len(),
        3,
        "no more after the 201"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_off_the_allow_list_are_refused_and_never_contacted() {
    let (service, _dir, sfu) = start().await;
    let keys = PushKeys::generate(&mut OsRng);
    let (bob, _) = TestClient::registered(&sfu, &User::new("bob")).await;
    let port = service.port;
    for endpoint in [
        format!("http://localhost:{port}/push/x"),
        format!("https://127.0.0.1:{port}/push/x"),
        format!("https://localhost:{}/push/x", port.wrapping_add(1)),
        "https://metadata.internal/latest".to_string(),
        format!("https://user:pw@localhost:{port}/push/x"),
        format!("https://localhost:{port}/{}", "a".repeat(1_100)),
    ] {
        let answer = subscribe(&bob, &endpoint, &keys).await;
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::ForbiddenEndpoint),
            "{endpoint}: {answer:?}"
        );
    }
    // Keys that are not a P-256 point and an auth secret of the wrong size.
    let bad_point = bob
        .request(Request::SetPushSubscription(v1::SetPushSubscription {
            endpoint: service.endpoint("bob"),
            p256dh: vec![4; 65],
            auth: keys.auth_secret().to_vec(),
        }))
        .await;
    assert_eq!(error_code(&bad_point), Some(ErrorCode::BadRequest));
    let bad_auth = bob
        .request(Request::SetPushSubscription(v1::SetPushSubscription {
            endpoint: service.endpoint("bob"),
            p256dh: keys.public_key().to_vec(),
            auth: vec![1; 15],
        }))
        .await;
    assert_eq!(error_code(&bad_auth), Some(ErrorCode::BadRequest));
    assert!(service.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_push_says_so_and_clearing_is_always_allowed() {
    let sfu = TestSfu::start_for_clients().await;
    let bob = User::new("bob").connect(&sfu).await;
    let err = bob.client.push_server_key().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::NotOffered,
                ..
            }
        ),
        "{err}"
    );
    let keys = PushKeys::generate(&mut OsRng);
    let err = bob
        .client
        .register_push("https://push.example.net/x", &keys)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::NotOffered,
                ..
            }
        ),
        "{err}"
    );
    assert!(!bob.client.unregister_push().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_unregisters_is_not_woken() {
    let (service, _dir, sfu) = start().await;
    let bob = User::new("bob").connect(&sfu).await;
    let keys = PushKeys::generate(&mut OsRng);
    bob.client
        .register_push(&service.endpoint("bob"), &keys)
        .await
        .unwrap();
    assert!(bob.client.unregister_push().await.unwrap());
    let bob_id = bob.id();
    bob.client.close().await;
    let (alice, alice_device) = TestClient::registered(&sfu, &User::new("alice")).await;
    send_one(&alice, &alice_device, bob_id.as_bytes()).await;
    assert!(service.settle(QUIET).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_the_push_service_is_not_followed() {
    let (service, _dir, sfu) = start().await;
    // To another path of the same service: a follower would be seen at once.
    service.redirect_next(&service.endpoint("elsewhere"));
    let (_keys, bob, alice, alice_device) = offline_subscriber(&sfu, &service, "bob").await;
    let bob_id: [u8; 16] = bob.as_slice().try_into().unwrap();
    send_one(&alice, &alice_device, &bob).await;
    service.wait_for(1).await;
    let requests = service.settle(QUIET).await;
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/push/bob"], "the redirect was followed");
    assert_eq!(requests[0].status, 307);
    // One refusal keeps the subscription (three in a row drop it).
    assert!(sfu.store.push_subscription(&bob_id).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_stored_as_the_server_will_request_it() {
    let (service, _dir, sfu) = start().await;
    let keys = PushKeys::generate(&mut OsRng);
    let (bob, bob_device) = TestClient::registered(&sfu, &User::new("bob")).await;
    let port = service.port;
    // Upper case host, a backslash (a slash to URL parsers), a dot segment.
    let written = format!("https://LOCALHOST:{port}\\push/./bob");
    subscribe(&bob, &written, &keys).await.unwrap();
    let id: [u8; 16] = device_id_bytes(&bob_device).as_slice().try_into().unwrap();
    let stored = sfu.store.push_subscription(&id).unwrap().unwrap();
    assert_eq!(
        stored.endpoint,
        format!("https://localhost:{port}/push/bob")
    );
    assert!(!format!("{stored:?}").contains("push/bob"), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_wakes_only_its_budget_of_devices() {
    let (service, _dir, sfu) = start_edited(|push| {
        push.wakeups_per_sender_per_minute = 1;
        push.wakeup_burst_per_sender = 2;
    })
    .await;
    let mut devices = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let keys = PushKeys::generate(&mut OsRng);
        let (client, device) = TestClient::registered(&sfu, &User::new(name)).await;
        subscribe(&client, &service.endpoint(name), &keys)
            .await
            .unwrap();
        devices.push(device_id_bytes(&device));
    }
    let (mallory, mallory_device) = TestClient::registered(&sfu, &User::new("mallory")).await;
    let sent = mallory
        .send_container(&devices, junk_container(&mallory_device, 100))
        .await
        .unwrap();
    // All three are stored; only two are woken.
    assert!(
        sent.results
            .iter()
            .all(|r| r.status == v1::DeliveryStatus::Stored as i32)
    );
    service.wait_for(2).await;
    assert_eq!(service.settle(QUIET).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_that_resolves_to_a_private_address_is_not_contacted() {
    // `localhost` is on the list, but by default only public addresses are dialled.
    let (service, _dir, sfu) = start_edited(|push| push.allow_private_addresses = false).await;
    let (_keys, bob, alice, alice_device) = offline_subscriber(&sfu, &service, "bob").await;
    send_one(&alice, &alice_device, &bob).await;
    assert!(service.settle(QUIET).await.is_empty());
}
