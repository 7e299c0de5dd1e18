//! Configured limits refuse requests with `RATE_LIMITED` (and a retry hint) or
//! `LIMIT_EXCEEDED` with a message naming the limit; connections above the limit
//! never get a session.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};
use conclave_sdk::identity::PrekeyPool;
use conclave_sdk::time::DAY_MS;
use conclave_sdk::transport::{ControlConnection, TransportError};
use conclave_testkit::clock::WAIT;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::{recipients_from, seal_text};
use conclave_testkit::protocol::{TestClient, device_id_bytes};
use conclave_testkit::sfu::TestSfu;

async fn get_time(client: &TestClient) -> Result<response::Result, TransportError> {
    client.request(Request::GetTime(v1::GetTime {})).await
}

fn assert_limit(err: &TransportError, limit: &str) {
    assert_eq!(err.server_code(), Some(ErrorCode::LimitExceeded), "{err}");
    assert!(err.to_string().contains(limit), "{err} should name {limit}");
}

#[tokio::test]
async fn requests_beyond_the_burst_are_rate_limited_with_a_retry_hint() {
    let server = TestSfu::start_edited(|c| {
        c.limits.requests_per_second = 1;
        c.limits.request_burst = 3;
    })
    .await;
    // Hello was request 1; the burst of 3 covers two more, whatever the timing.
    let client = TestClient::connect(&server).await;
    get_time(&client).await.unwrap();
    get_time(&client).await.unwrap();

    // Tokens come back at one per second, so rapid requests are soon refused (the 4th
    // unless the machine stalls for a second).
    let mut refused = None;
    for _ in 0..8 {
        if let Err(e) = get_time(&client).await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("a rapid request beyond the burst is refused");
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
    assert!(message.contains("too many control requests"), "{message}");
    assert!(
        (1..=1000).contains(retry_after_ms),
        "at one request per second the wait is at most a second: {retry_after_ms}"
    );

    // The limit is per connection: another client is served.
    let other = TestClient::connect(&server).await;
    get_time(&other).await.unwrap();
}

#[tokio::test]
async fn waiting_as_long_as_the_retry_hint_says_is_enough() {
    let server = TestSfu::start_edited(|c| {
        c.limits.requests_per_second = 7;
        c.limits.request_burst = 1;
    })
    .await;
    let client = TestClient::connect(&server).await;
    let mut refusals = 0;
    for _ in 0..12 {
        match get_time(&client).await {
            Ok(_) => {}
            Err(TransportError::Server {
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            }) => {
                refusals += 1;
                assert!(retry_after_ms > 0);
                tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
                let retried = get_time(&client).await;
                assert!(
                    retried.is_ok(),
                    "refused again after waiting the {retry_after_ms} ms hint: {retried:?}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(refusals > 0, "rapid requests at a burst of 1 are refused");
}

#[tokio::test]
async fn a_fetch_for_more_users_than_max_users_per_fetch_is_refused() {
    let server = TestSfu::start_edited(|c| c.limits.max_users_per_fetch = 3).await;
    let users: Vec<User> = (0..4).map(|i| User::new(&format!("u{i}"))).collect();
    let (client, _) = TestClient::registered(&server, &users[0]).await;

    let all: Vec<&User> = users.iter().collect();
    let err = client.fetch_bundles(&all).await.unwrap_err();
    assert_limit(&err, "max_users_per_fetch");
    // At the limit it works (unknown users come back without a key).
    let bundles = client.fetch_bundles(&all[..3]).await.unwrap();
    assert_eq!(bundles.users.len(), 3);
}

#[tokio::test]
async fn a_container_for_more_recipients_than_max_recipients_per_container_is_refused() {
    let server = TestSfu::start_edited(|c| c.limits.max_recipients_per_container = 2).await;
    let alice = User::new("alice");
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    let mut recipients = Vec::new();
    let mut ids = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let user = User::new(name);
        let (client, device) = TestClient::registered(&server, &user).await;
        let mut pool = PrekeyPool::new(&device);
        client.upload_prekeys(&device, &mut pool, 2).await.unwrap();
        ids.push(device_id_bytes(&device));
        recipients.push((user, client, device));
    }
    let users: Vec<&User> = recipients.iter().map(|r| &r.0).collect();
    let bundles = alice_client.fetch_bundles(&users).await.unwrap();
    let container = seal_text(
        &alice_device,
        &recipients_from(&bundles, &users),
        "to all three",
        DAY_MS,
    );

    let err = alice_client
        .send_container(&ids, container.clone())
        .await
        .unwrap_err();
    assert_limit(&err, "max_recipients_per_container");
    for (_, _, device) in &recipients {
        let id = *device.device_id().as_bytes();
        assert_eq!(
            server.store.mailbox_count(&id).unwrap(),
            0,
            "nothing stored"
        );
    }
    // Two of them are within the limit.
    let sent = alice_client
        .send_container(&ids[..2], container)
        .await
        .unwrap();
    assert_eq!(sent.results.len(), 2);
}

#[tokio::test]
async fn a_user_cannot_register_more_than_max_devices_per_user() {
    let server = TestSfu::start_edited(|c| c.limits.max_devices_per_user = 2).await;
    let alice = User::new("alice");
    let (_c1, first) = TestClient::registered(&server, &alice).await;
    let (_c2, _second) = TestClient::registered(&server, &alice).await;

    let c3 = TestClient::connect(&server).await;
    let err = c3.register(&alice, &alice.device()).await.unwrap_err();
    assert_limit(&err, "max_devices_per_user");

    // A device already registered may still register again (an idempotent retry) and
    // other users are not affected.
    let c4 = TestClient::connect(&server).await;
    assert!(!c4.register(&alice, &first).await.unwrap().new_user);
    TestClient::registered(&server, &User::new("bob")).await;
}

#[tokio::test]
async fn an_upload_that_would_exceed_max_prekeys_per_device_is_refused_whole() {
    let server = TestSfu::start_edited(|c| {
        c.limits.max_prekeys_per_device = 25;
        c.limits.prekeys_low_threshold = 5;
    })
    .await;
    let owner = User::new("owner");
    let (client, device) = TestClient::registered(&server, &owner).await;
    let mut pool = PrekeyPool::new(&device);
    assert_eq!(
        client.upload_prekeys(&device, &mut pool, 20).await.unwrap(),
        20
    );
    let err = client
        .upload_prekeys(&device, &mut pool, 6)
        .await
        .unwrap_err();
    assert_limit(&err, "max_prekeys_per_device");
    let id = *device.device_id().as_bytes();
    assert_eq!(
        server.store.prekey_count(&id).unwrap(),
        20,
        "nothing stored"
    );
    assert_eq!(
        client.upload_prekeys(&device, &mut pool, 5).await.unwrap(),
        25
    );
}

/// Tries to open a session: `Ok` only if the server answers Hello with HelloOk.
async fn try_session(server: &TestSfu) -> Result<(), String> {
    let config = conclave_sdk::transport::client_config(&server.trust).unwrap();
    let attempt = async {
        let (conn, _events) = ControlConnection::connect(server.addr, "localhost", config)
            .await
            .map_err(|e| e.to_string())?;
        let hello = conn
            .request(Request::Hello(v1::Hello {
                protocol_version: 1,
                mailbox_window_bytes: 0,
            }))
            .await
            .map_err(|e| e.to_string())?;
        match hello {
            response::Result::Hello(_) => {
                conn.close().await;
                Ok(())
            }
            other => Err(format!("no HelloOk: {other:?}")),
        }
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within the wait bound".into()))
}

#[tokio::test]
async fn connections_above_max_connections_are_refused_until_one_closes() {
    let server = TestSfu::start_edited(|c| c.limits.max_connections = 2).await;
    let first = TestClient::connect(&server).await;
    let _second = TestClient::connect(&server).await;

    let refused = try_session(&server).await.unwrap_err();
    // The server refuses it in the handshake, before any control stream.
    assert!(refused.contains("refused"), "{refused}");

    // Once a client leaves, a new one is served (after the server has noticed).
    first.conn.close().await;
    let mut served = Err(String::new());
    for _ in 0..50 {
        served = try_session(&server).await;
        if served.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.is_ok(), "a freed slot is reused: {served:?}");
}

#[tokio::test]
async fn a_rate_limited_request_has_no_effect() {
    let server = TestSfu::start_edited(|c| {
        c.limits.requests_per_second = 1;
        c.limits.request_burst = 5;
    })
    .await;
    let bob = User::new("bob");
    let (bob_client, bob_device) = TestClient::registered(&server, &bob).await;
    let mut pool = PrekeyPool::new(&bob_device);
    bob_client
        .upload_prekeys(&bob_device, &mut pool, 1)
        .await
        .unwrap();
    let alice = User::new("alice");
    // Hello, Register and FetchBundles: three of Alice's five tokens.
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    let bundles = alice_client.fetch_bundles(&[&bob]).await.unwrap();
    let container = seal_text(
        &alice_device,
        &recipients_from(&bundles, &[&bob]),
        "again and again",
        DAY_MS,
    );

    let bob_id = device_id_bytes(&bob_device);
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..10 {
        match alice_client
            .send_container(std::slice::from_ref(&bob_id), container.clone())
            .await
        {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("rapid sends are rate limited");
    assert_eq!(err.server_code(), Some(ErrorCode::RateLimited), "{err}");
    assert!(accepted >= 2, "the rest of the burst was served");
    let id = *bob_device.device_id().as_bytes();
    assert_eq!(
        server.store.mailbox_count(&id).unwrap(),
        accepted,
        "the refused send stored nothing"
    );
}

#[tokio::test]
async fn an_acknowledgement_of_too_many_ids_is_refused_whole() {
    let server = TestSfu::start().await;
    let bob = User::new("bob");
    let (mut bob_client, bob_device) = TestClient::registered(&server, &bob).await;
    let mut pool = PrekeyPool::new(&bob_device);
    bob_client
        .upload_prekeys(&bob_device, &mut pool, 1)
        .await
        .unwrap();
    let alice = User::new("alice");
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    let bundles = alice_client.fetch_bundles(&[&bob]).await.unwrap();
    let container = seal_text(
        &alice_device,
        &recipients_from(&bundles, &[&bob]),
        "ack me",
        DAY_MS,
    );
    alice_client
        .send_container(&[device_id_bytes(&bob_device)], container)
        .await
        .unwrap();
    let delivery = bob_client.mailbox_delivery().await;

    let mut ids: Vec<u64> = (1_000_000..1_001_000).collect();
    ids.push(delivery.mailbox_id);
    let err = bob_client.ack(&ids).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::LimitExceeded), "{err}");
    assert!(err.to_string().contains("at most 1000"), "{err}");
    let id = *bob_device.device_id().as_bytes();
    assert_eq!(
        server.store.mailbox_count(&id).unwrap(),
        1,
        "nothing deleted"
    );
    assert_eq!(bob_client.ack(&[delivery.mailbox_id]).await.unwrap(), 1);
}
