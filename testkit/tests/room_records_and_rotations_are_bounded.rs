//! Review L12: room records and rotations are bounded. One device can create only so
//! many new durable room records (`room_records_per_device_*`); a room can be rotated
//! only so often (`room_rotation_*`); and a room's record outlives its last member,
//! explicit leave or not, for `room_idle_ttl_secs`, so a past member who knows the
//! routing id cannot re-create the room under a key of its own meanwhile.

// Test helpers may panic on unexpected failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use conclave_proto::v1::{self, ErrorCode, client_frame::Request};
use conclave_sdk::meeting::{Epoch, MeetingKey, RoomAuthKey, RoutingId};
use conclave_sdk::transport::TransportError;
use conclave_sfu::config::Config;
use conclave_sfu::store::{MemoryStore, Store};
use conclave_testkit::identity::User;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::TestRoom;
use conclave_testkit::sfu::{TestSfu, test_config_with};
use rand_core::OsRng;

async fn start(store: Arc<dyn Store>, edit: impl FnOnce(&mut Config)) -> TestSfu {
    TestSfu::start_with(test_config_with(edit), store).await
}

/// A server refusal's code, message and wait.
fn refusal(err: &TransportError) -> (ErrorCode, &str, u64) {
    match err {
        TransportError::Server {
            code,
            message,
            retry_after_ms,
            ..
        } => (*code, message.as_str(), *retry_after_ms),
        other => panic!("expected a server refusal, got {other}"),
    }
}

async fn leave(client: &TestClient, routing: &RoutingId) {
    client
        .request(Request::LeaveRoom(v1::LeaveRoom {
            routing_id: routing.as_bytes().to_vec(),
        }))
        .await
        .unwrap();
}

/// A key of the attacker's own for `routing` at `epoch`.
fn own_key(routing: &RoutingId, epoch: Epoch) -> RoomAuthKey {
    MeetingKey::generate(epoch, &mut OsRng).room_auth_key(routing)
}

/// Alice opens three new rooms and leaves each: her burst of new records is spent, so
/// a fourth new room is refused with `RATE_LIMITED`, a wait and a message naming the
/// limit, and leaves no record. Re-opening a room that has a record is not counted,
/// and Bob's device has its own budget.
#[tokio::test]
async fn one_device_cannot_create_room_records_without_limit() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = start(Arc::clone(&store), |c| {
        c.limits.room_records_per_device_burst = 3;
        c.limits.room_records_per_device_per_hour = 1;
    })
    .await;
    let (alice, _) = TestClient::registered(&server, &User::new("alice")).await;
    let (bob, _) = TestClient::registered(&server, &User::new("bob")).await;

    let rooms: Vec<TestRoom> = (0..4).map(|_| TestRoom::new()).collect();
    for room in &rooms[..3] {
        alice.open_room(&room.auth(), &room.routing).await.unwrap();
        leave(&alice, &room.routing).await;
    }
    let err = alice
        .open_room(&rooms[3].auth(), &rooms[3].routing)
        .await
        .unwrap_err();
    let (code, message, wait) = refusal(&err);
    assert_eq!(code, ErrorCode::RateLimited, "{err}");
    assert!(message.contains("room_records_per_device"), "{message}");
    assert!(
        (1..=3_600_000).contains(&wait),
        "at one record per hour the wait is at most an hour: {wait}"
    );
    assert_eq!(store.room(rooms[3].routing.as_bytes()).unwrap(), None);

    // A room with a record is re-opened freely; Bob creates his own.
    alice
        .open_room(&rooms[0].auth(), &rooms[0].routing)
        .await
        .unwrap();
    bob.open_room(&rooms[3].auth(), &rooms[3].routing)
        .await
        .unwrap();
    assert!(store.room(rooms[3].routing.as_bytes()).unwrap().is_some());
}

/// The leader rotates its room a burst of times; the next rotation is refused with
/// `RATE_LIMITED`, a wait and a message naming the limit, and changes nothing: the
/// room stays at the last accepted epoch.
#[tokio::test]
async fn rotations_beyond_the_room_budget_are_refused_with_a_wait() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = start(Arc::clone(&store), |c| {
        c.limits.room_rotation_burst = 2;
        c.limits.room_rotation_interval_ms = 60_000;
    })
    .await;
    let (alice, _) = TestClient::registered(&server, &User::new("alice")).await;
    let (bob, _) = TestClient::registered(&server, &User::new("bob")).await;
    let mut room = TestRoom::new();
    alice.open_room(&room.auth(), &room.routing).await.unwrap();
    for _ in 0..2 {
        let old = room.rekey();
        alice
            .rotate_room(&old, &room.auth(), &room.routing)
            .await
            .unwrap();
    }
    let current = room.rekey();
    let err = alice
        .rotate_room(&current, &room.auth(), &room.routing)
        .await
        .unwrap_err();
    let (code, message, wait) = refusal(&err);
    assert_eq!(code, ErrorCode::RateLimited, "{err}");
    assert!(message.contains("room_rotation_burst"), "{message}");
    assert!((1..=60_000).contains(&wait), "{wait}");
    // Still at epoch 3.
    assert_eq!(
        store.room(room.routing.as_bytes()).unwrap().unwrap().epoch,
        3
    );
    let joined = bob.join_room(&current, &room.routing).await.unwrap();
    assert_eq!(joined.epoch, 3);
}

/// Alice and Mallory met in a room; Mallory learnt its routing id. Once everybody has
/// left, explicitly, the record stays: Mallory cannot re-create the room under a key of
/// her own (another key at the same epoch conflicts, another epoch is the wrong one),
/// while Alice, who holds the room's key, re-opens it. Only a record idle past
/// `room_idle_ttl_secs` is forgotten, and then (as documented in protocol.md 10.5) a
/// past member can open the routing id under a key of its own.
#[tokio::test]
async fn a_room_record_outlives_its_last_explicit_leave_so_a_past_member_cannot_squat_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = start(Arc::clone(&store), |_| {}).await;
    let (alice, _) = TestClient::registered(&server, &User::new("alice")).await;
    let (mallory, _) = TestClient::registered(&server, &User::new("mallory")).await;
    let room = TestRoom::new();
    alice.open_room(&room.auth(), &room.routing).await.unwrap();
    mallory
        .join_room(&room.auth(), &room.routing)
        .await
        .unwrap();
    leave(&mallory, &room.routing).await;
    leave(&alice, &room.routing).await;
    assert_eq!(
        store
            .room(room.routing.as_bytes())
            .unwrap()
            .map(|r| r.epoch),
        Some(1),
        "the record outlives the last explicit leave"
    );

    let err = mallory
        .open_room(&own_key(&room.routing, Epoch(1)), &room.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::RoomConflict), "{err}");
    let err = mallory
        .open_room(&own_key(&room.routing, Epoch(9)), &room.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::WrongEpoch), "{err}");
    alice.open_room(&room.auth(), &room.routing).await.unwrap();
    leave(&alice, &room.routing).await;

    // The idle ttl passes (the sweep, run here directly): the routing id is free, and
    // a past member can take it. This is the documented residual risk.
    assert_eq!(store.expire_rooms(u64::MAX, &|_| false).unwrap(), 1);
    mallory
        .open_room(&own_key(&room.routing, Epoch(9)), &room.routing)
        .await
        .unwrap();
    let err = alice
        .open_room(&room.auth(), &room.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::WrongEpoch), "{err}");
}
