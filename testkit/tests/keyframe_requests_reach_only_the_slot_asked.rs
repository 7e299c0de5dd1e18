//! `RequestKeyframe` relays a keyframe request to the one member connection holding the
//! named slot of a room the requester is in, saying nothing of who asked: never to
//! another member, never into another room, never from a connection that is not a
//! member, and `NOT_FOUND` for a slot nobody else holds.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::v1::{self, ErrorCode, client_frame::Request, event::Event, response};
use conclave_testkit::media::member;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::TestRoom;
use conclave_testkit::sfu::TestSfu;

async fn ask(
    client: &TestClient,
    handle: u32,
    slot: u32,
) -> Result<response::Result, conclave_sdk::transport::TransportError> {
    client
        .request(Request::RequestKeyframe(v1::RequestKeyframe {
            room_handle: handle,
            slot,
        }))
        .await
}

/// The next keyframe request or room message (the marker that ends a check).
async fn next(client: &mut TestClient) -> Event {
    client
        .event(|e| match e {
            Event::KeyframeRequested(_) | Event::RoomMessage(_) => Some(e),
            _ => None,
        })
        .await
}

async fn marker(from: &TestClient, handle: u32) {
    let sent = from
        .request(Request::SendRoomMessage(v1::SendRoomMessage {
            room_handle: handle,
            payload: b"marker".to_vec(),
        }))
        .await
        .unwrap();
    assert!(matches!(sent, response::Result::RoomMessageSent(_)));
}

#[tokio::test]
async fn a_keyframe_request_reaches_the_slot_asked_and_no_one_else() {
    let server = TestSfu::start().await;
    let mut alice = member(&server, "alice").await;
    let bob = member(&server, "bob").await;
    let mut carol = member(&server, "carol").await;
    let dave = member(&server, "dave").await;
    let (one, two) = (TestRoom::new(), TestRoom::new());
    let ja = alice.open_room(&one.auth(), &one.routing).await.unwrap();
    let jb = bob.join_room(&one.auth(), &one.routing).await.unwrap();
    let jc = carol.join_room(&one.auth(), &one.routing).await.unwrap();
    dave.open_room(&two.auth(), &two.routing).await.unwrap();

    // Bob asks Alice's slot: Alice is told, with nothing about who asked.
    let sent = ask(&bob, jb.room_handle, ja.slot).await.unwrap();
    assert!(matches!(sent, response::Result::KeyframeRequestSent(_)));
    match next(&mut alice).await {
        Event::KeyframeRequested(k) => assert_eq!(k.room_handle, ja.room_handle),
        other => panic!("expected a keyframe request, got {other:?}"),
    }
    // Carol, the other member, saw no request: the next thing she sees is a marker.
    marker(&bob, jb.room_handle).await;
    assert!(matches!(next(&mut carol).await, Event::RoomMessage(_)));

    // A slot nobody else holds (the asker's own included) is NOT_FOUND.
    for slot in [jb.slot, 9_999] {
        let err = ask(&bob, jb.room_handle, slot).await.unwrap_err();
        assert_eq!(err.server_code(), Some(ErrorCode::NotFound), "{err}");
    }
    // Dave is not in room one: he cannot ask anyone there.
    let err = ask(&dave, jc.room_handle, ja.slot).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
    // Alice's next event is the marker, not Dave's request.
    marker(&carol, jc.room_handle).await;
    assert!(matches!(next(&mut alice).await, Event::RoomMessage(_)));
}
