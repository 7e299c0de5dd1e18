//! A device's rooms-only connection (`Authenticate.role = ROOMS`, what the SDK opens to
//! the cluster node that owns one of its meetings' rooms): it replaces no other
//! connection of the device, nothing but room events is pushed on it, and directory
//! and mailbox requests on it are refused. Rooms work on it as on any connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use conclave_proto::v1::{self, ErrorCode};
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::{junk_container, mailbox_events};
use conclave_testkit::protocol::rooms::TestRoom;
use conclave_testkit::protocol::{TestClient, device_id_bytes};
use conclave_testkit::sfu::TestSfu;

#[tokio::test]
async fn a_rooms_only_connection_carries_rooms_and_nothing_else() {
    let server = TestSfu::start().await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let (mut primary, device) = TestClient::registered(&server, &alice).await;
    let mut rooms = TestClient::connect(&server).await;
    rooms
        .authenticate_as(&device, v1::ConnectionRole::Rooms)
        .await
        .unwrap();

    // The primary connection was not replaced (a second primary one would close it).
    primary.round_trip().await;

    // A container for the device is pushed on the primary connection only.
    let (sender, bob_device) = TestClient::registered(&server, &bob).await;
    let sent = sender
        .send_container(&[device_id_bytes(&device)], junk_container(&bob_device, 64))
        .await
        .unwrap();
    assert_eq!(sent.results.len(), 1);
    let delivery = primary.mailbox_delivery().await;
    rooms.round_trip().await;
    assert!(mailbox_events(rooms.received_events()).is_empty());

    // Directory and mailbox requests belong on the primary connection.
    let refused = [
        rooms.fetch_bundles(&[&bob]).await.unwrap_err(),
        rooms.ack(&[delivery.mailbox_id]).await.unwrap_err(),
        rooms
            .send_container(&[device_id_bytes(&bob_device)], junk_container(&device, 64))
            .await
            .unwrap_err(),
    ];
    for err in refused {
        assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
        assert!(err.to_string().contains("rooms only"), "{err}");
    }

    // Rooms work on it: bob's join reaches alice there as a room event.
    let room = TestRoom::new();
    rooms.open_room(&room.auth(), &room.routing).await.unwrap();
    sender.join_room(&room.auth(), &room.routing).await.unwrap();
    let joined = rooms
        .event(|e| match e {
            v1::event::Event::MemberJoined(j) => Some(j),
            _ => None,
        })
        .await;
    assert_eq!(joined.device_id, device_id_bytes(&bob_device));

    // An unknown role is refused.
    let other = TestClient::connect(&server).await;
    let err = other
        .request(v1::client_frame::Request::Authenticate(v1::Authenticate {
            device_id: device_id_bytes(&device),
            auth_signature: other.auth_signature(&device),
            role: 7,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
}
