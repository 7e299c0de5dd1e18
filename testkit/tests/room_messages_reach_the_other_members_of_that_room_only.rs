//! `SendRoomMessage` relays a small opaque payload to the other member connections of a
//! room the sender is in (the SDK runs its safety-words round over it): never back to
//! the sender, never into another room, never from a connection that is not a member,
//! never above 5 KiB, and never faster than the relay budget (payload × recipients).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::v1::{self, ErrorCode, client_frame::Request, event::Event, response};
use conclave_testkit::media::member;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::TestRoom;
use conclave_testkit::sfu::TestSfu;

async fn send(
    client: &TestClient,
    handle: u32,
    payload: &[u8],
) -> Result<response::Result, conclave_sdk::transport::TransportError> {
    client
        .request(Request::SendRoomMessage(v1::SendRoomMessage {
            room_handle: handle,
            payload: payload.to_vec(),
        }))
        .await
}

async fn next_message(client: &mut TestClient) -> v1::RoomMessage {
    client
        .event(|e| match e {
            Event::RoomMessage(m) => Some(m),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn a_room_message_reaches_the_other_members_of_that_room_only() {
    let server = TestSfu::start().await;
    let alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    let mut carol = member(&server, "carol").await;
    let (one, two) = (TestRoom::new(), TestRoom::new());
    let ja = alice.open_room(&one.auth(), &one.routing).await.unwrap();
    bob.join_room(&one.auth(), &one.routing).await.unwrap();
    let jc = carol.open_room(&two.auth(), &two.routing).await.unwrap();
    bob.join_room(&two.auth(), &two.routing).await.unwrap();

    let sent = send(&alice, ja.room_handle, b"for room one").await.unwrap();
    assert!(matches!(
        sent,
        response::Result::RoomMessageSent(v1::RoomMessageSent { recipients: 1 })
    ));
    let got = next_message(&mut bob).await;
    assert_eq!(
        (got.room_handle, got.slot, got.payload.as_slice()),
        (ja.room_handle, ja.slot, b"for room one".as_slice())
    );

    // Carol is not in room one: she cannot post to it, and what she posts to room two
    // is the first room message she or Bob sees there (nothing of room one leaked).
    let err = send(&carol, ja.room_handle, b"intrusion")
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
    send(&carol, jc.room_handle, b"for room two").await.unwrap();
    let got = next_message(&mut bob).await;
    assert_eq!(got.payload, b"for room two");
    send(&alice, ja.room_handle, b"marker").await.unwrap();
    assert_eq!(next_message(&mut bob).await.payload, b"marker");
    // Carol's own stream never carried a room message.
    send(&bob, jc.room_handle, b"to carol").await.unwrap();
    assert_eq!(next_message(&mut carol).await.payload, b"to carol");

    let largest = conclave_proto::limits::MAX_ROOM_MESSAGE_BYTES;
    send(&alice, ja.room_handle, &vec![0u8; largest])
        .await
        .unwrap();
    let err = send(&alice, ja.room_handle, &vec![0u8; largest + 1])
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::LimitExceeded), "{err}");
}

/// A member that floods a room with messages is refused once it has had relayed its
/// budget of bytes (payload × recipients), with a retry-after: one connection cannot
/// make the server fan out without bound.
#[tokio::test]
async fn a_flood_of_room_messages_is_refused_once_its_relay_budget_is_spent() {
    let server = TestSfu::start_edited(|c| {
        // Almost no refill: the burst is the budget, however long the loop takes.
        c.limits.room_message_bytes_per_second = 1;
        c.limits.room_message_burst_bytes = 20_000;
        c.limits.max_members_per_room = 4;
        c.limits.requests_per_second = 10_000;
        c.limits.request_burst = 10_000;
    })
    .await;
    let alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    let carol = member(&server, "carol").await;
    let room = TestRoom::new();
    let ja = alice.open_room(&room.auth(), &room.routing).await.unwrap();
    bob.join_room(&room.auth(), &room.routing).await.unwrap();
    carol.join_room(&room.auth(), &room.routing).await.unwrap();
    // Two recipients: each 1,000-byte message costs 2,000 bytes of the 20,000 burst.
    let mut sent = 0;
    let err = loop {
        match send(&alice, ja.room_handle, &[7u8; 1_000]).await {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 10, "the budget holds");
    };
    assert_eq!(sent, 10, "the cost counts every recipient");
    assert_eq!(err.server_code(), Some(ErrorCode::RateLimited), "{err}");
    for _ in 0..10 {
        assert_eq!(next_message(&mut bob).await.payload.len(), 1_000);
    }
}
