//! Stopping the server is graceful: every connected client is told (`ShuttingDown`,
//! then a close with the shutting-down code), `run` returns `Ok`, nobody can connect
//! any more, and the store is released with everything it acknowledged on disk.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1::event::Event;
use conclave_sdk::identity::PrekeyPool;
use conclave_sdk::transport::{ControlConnection, client_config};
use conclave_sfu::server::close_code;
use conclave_sfu::store::{RedbStore, Store};
use conclave_testkit::clock::WAIT;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::TestRoom;
use conclave_testkit::sfu::{TestSfu, test_config};

async fn told_to_leave(client: &mut TestClient, who: &str) -> u64 {
    let told = client
        .event(|e| match e {
            Event::ShuttingDown(s) => Some(s),
            _ => None,
        })
        .await;
    let closed = tokio::time::timeout(WAIT, client.conn.quic().closed())
        .await
        .unwrap_or_else(|_| panic!("{who}: the server closes the connection in bounded time"));
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            close.error_code,
            quinn::VarInt::from_u32(close_code::SHUTTING_DOWN),
            "{who}: {close:?}"
        ),
        other => panic!("{who}: expected an application close, got {other:?}"),
    }
    told.reconnect_after_ms
}

#[tokio::test]
async fn clients_are_told_run_returns_ok_and_new_connections_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conclave.redb");
    let config = test_config();
    let reconnect_after_ms = config.timing.shutdown_reconnect_after_ms;
    let server = TestSfu::start_with(config, Arc::new(RedbStore::open(&path).unwrap())).await;

    let alice = User::new("alice");
    let (mut a, alice_device) = TestClient::registered(&server, &alice).await;
    let bob = User::new("bob");
    let (mut b, bob_device) = TestClient::registered(&server, &bob).await;
    // A client that only said Hello is a client too.
    let mut fresh = TestClient::connect(&server).await;

    // Durable state to find again after the stop: prekeys and a room record.
    let mut pool = PrekeyPool::new(&alice_device);
    assert_eq!(
        a.upload_prekeys(&alice_device, &mut pool, 5).await.unwrap(),
        5
    );
    let room = TestRoom::new();
    a.open_room(&room.auth(), &room.routing).await.unwrap();
    b.join_room(&room.auth(), &room.routing).await.unwrap();

    let (addr, trust) = (server.addr, server.trust.clone());
    let stopping = tokio::spawn(server.stop());
    assert_eq!(told_to_leave(&mut a, "alice").await, reconnect_after_ms);
    assert_eq!(told_to_leave(&mut b, "bob").await, reconnect_after_ms);
    assert_eq!(told_to_leave(&mut fresh, "fresh").await, reconnect_after_ms);
    let stopped = stopping.await.expect("stop does not panic");
    assert!(
        stopped.is_ok(),
        "run returns Ok after a graceful stop: {stopped:?}"
    );

    // Nobody answers any more. A short idle timeout makes the attempt fail by itself.
    let mut config = client_config(&trust).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(1).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    let attempt = tokio::time::timeout(WAIT, ControlConnection::connect(addr, "localhost", config))
        .await
        .expect("the attempt gives up by itself");
    assert!(attempt.is_err(), "a connection after the stop must fail");

    // The store was released (redb refuses a second open of a file in use) and holds
    // what the server acknowledged.
    let store = RedbStore::open(&path).expect("the stopped server released the store");
    for (user, device) in [(&alice, &alice_device), (&bob, &bob_device)] {
        let id = device.device_id();
        let record = store.device(id.as_bytes()).unwrap().expect("device kept");
        assert_eq!(&record.user_id, user.identity.user_id.as_bytes());
        assert_eq!(
            store.user_key(user.identity.user_id.as_bytes()).unwrap(),
            Some(user.identity.key.to_bytes())
        );
    }
    assert_eq!(
        store
            .prekey_count(alice_device.device_id().as_bytes())
            .unwrap(),
        5
    );
    let record = store
        .room(room.routing.as_bytes())
        .unwrap()
        .expect("room record kept");
    assert_eq!(record.epoch, 1);
    assert_eq!(record.auth_public, room.auth().public().to_bytes());
}
