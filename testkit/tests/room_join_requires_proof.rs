//! Joining a room takes a proof: a signature by the room's current room-auth key over
//! this connection's TLS exporter and challenge. Without one a connection is not a
//! member, and its datagrams go nowhere even if it guesses the room's handle.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::datagram::Slot;
use conclave_proto::v1::{self, ErrorCode, client_frame::Request};
use conclave_sdk::meeting::Epoch;
use conclave_sdk::meeting::MeetingKey;
use conclave_sdk::transport::TransportError;
use conclave_testkit::media::{
    assert_exactly, assert_quiet, collect_until_markers, member, send_burst, send_marker,
};
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::{TestRoom, handle_of, slot_of};
use conclave_testkit::sfu::TestSfu;
use rand_core::{OsRng, RngCore};

const BURST: u32 = 20;

/// Sends a `JoinRoom` with an arbitrary epoch and signature.
async fn join_raw(
    client: &TestClient,
    room: &TestRoom,
    epoch: u64,
    signature: &[u8],
) -> Result<v1::response::Result, TransportError> {
    client
        .request(Request::JoinRoom(v1::JoinRoom {
            routing_id: room.routing.as_bytes().to_vec(),
            epoch,
            join_signature: signature.to_vec(),
        }))
        .await
}

fn expect_code(result: Result<v1::response::Result, TransportError>, code: ErrorCode, what: &str) {
    match result {
        Err(e) => assert_eq!(e.server_code(), Some(code), "{what}: {e}"),
        Ok(ok) => panic!("{what}: expected {code:?}, the server answered {ok:?}"),
    }
}

#[tokio::test]
async fn joins_without_a_valid_proof_for_this_connection_and_epoch_are_refused() {
    let server = TestSfu::start().await;
    let alice = member(&server, "alice").await;
    let mallory = member(&server, "mallory").await;
    let bystander = member(&server, "bystander").await;
    let room = TestRoom::new();
    let key = room.auth();
    alice.open_room(&key, &room.routing).await.unwrap();

    // Garbage of the right length, and of the wrong length.
    let mut garbage = [0u8; 64];
    OsRng.fill_bytes(&mut garbage);
    expect_code(
        join_raw(&mallory, &room, 1, &garbage).await,
        ErrorCode::BadProof,
        "garbage signature",
    );
    expect_code(
        join_raw(&mallory, &room, 1, &garbage[..17]).await,
        ErrorCode::BadProof,
        "truncated signature",
    );
    expect_code(
        join_raw(&mallory, &room, 1, &[]).await,
        ErrorCode::BadProof,
        "empty signature",
    );

    // A genuine proof, but made for another connection (its TLS exporter and
    // challenge), or mixing another connection's exporter or challenge with ours.
    let theirs = key
        .sign_join(bystander.conn.tls_binding(), &bystander.challenge)
        .unwrap();
    expect_code(
        join_raw(&mallory, &room, 1, &theirs).await,
        ErrorCode::BadProof,
        "proof made for another connection",
    );
    let their_binding = key
        .sign_join(bystander.conn.tls_binding(), &mallory.challenge)
        .unwrap();
    expect_code(
        join_raw(&mallory, &room, 1, &their_binding).await,
        ErrorCode::BadProof,
        "proof over another connection's TLS exporter",
    );
    let their_challenge = key
        .sign_join(mallory.conn.tls_binding(), &bystander.challenge)
        .unwrap();
    expect_code(
        join_raw(&mallory, &room, 1, &their_challenge).await,
        ErrorCode::BadProof,
        "proof over another connection's challenge",
    );

    // A key of another epoch: naming that epoch is WRONG_EPOCH; claiming the current
    // epoch with it does not verify.
    let epoch2 = MeetingKey::generate(Epoch(2), &mut OsRng).room_auth_key(&room.routing);
    let err = mallory.join_room(&epoch2, &room.routing).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::WrongEpoch), "{err}");
    let err = mallory.open_room(&epoch2, &room.routing).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::WrongEpoch), "{err}");
    let sig = epoch2
        .sign_join(mallory.conn.tls_binding(), &mallory.challenge)
        .unwrap();
    expect_code(
        join_raw(&mallory, &room, 1, &sig).await,
        ErrorCode::BadProof,
        "epoch-2 key presented for epoch 1",
    );
    // The same meeting's key for epoch 1, but another meeting key altogether.
    let stranger = MeetingKey::generate(Epoch(1), &mut OsRng).room_auth_key(&room.routing);
    let sig = stranger
        .sign_join(mallory.conn.tls_binding(), &mallory.challenge)
        .unwrap();
    expect_code(
        join_raw(&mallory, &room, 1, &sig).await,
        ErrorCode::BadProof,
        "a key that is not the room's",
    );
    // Opening the live room with another key at its epoch is a conflict, not a join.
    let err = mallory
        .open_room(&stranger, &room.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::RoomConflict), "{err}");

    // The failures left nothing behind: the genuine proof still works.
    let joined = mallory.join_room(&key, &room.routing).await.unwrap();
    assert!(!joined.leader);
}

#[tokio::test]
async fn joining_or_opening_without_a_proof_for_an_unknown_room_is_refused() {
    let server = TestSfu::start().await;
    let alice = member(&server, "alice").await;
    let nowhere = TestRoom::new();
    let err = alice
        .join_room(&nowhere.auth(), &nowhere.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotFound), "{err}");

    // Opening needs a proof as well.
    let mut garbage = [0u8; 64];
    OsRng.fill_bytes(&mut garbage);
    let result = alice
        .request(Request::OpenRoom(v1::OpenRoom {
            routing_id: nowhere.routing.as_bytes().to_vec(),
            epoch: 1,
            room_auth_public_key: nowhere.auth().public().to_bytes().to_vec(),
            join_signature: garbage.to_vec(),
            leader_device_ids: Vec::new(),
        }))
        .await;
    expect_code(result, ErrorCode::BadProof, "open with a garbage proof");
    // Still unknown afterwards.
    let err = alice
        .join_room(&nowhere.auth(), &nowhere.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotFound), "{err}");
}

#[tokio::test]
async fn a_non_members_datagrams_are_not_forwarded_and_a_valid_join_opens_both_directions() {
    let server = TestSfu::start().await;
    let alice = member(&server, "alice").await;
    let bob = member(&server, "bob").await;
    let mallory = member(&server, "mallory").await;
    let (a, m) = (1u8, 3u8);

    let room = TestRoom::new();
    let ja = alice.open_room(&room.auth(), &room.routing).await.unwrap();
    let jb = bob.join_room(&room.auth(), &room.routing).await.unwrap();
    let handle = handle_of(&ja);

    // Mallory fails to join, then writes the room's handle (known or guessed) anyway,
    // claiming Alice's slot and others.
    let mut garbage = [0u8; 64];
    OsRng.fill_bytes(&mut garbage);
    expect_code(
        join_raw(&mallory, &room, 1, &garbage).await,
        ErrorCode::BadProof,
        "garbage signature",
    );
    // A second room where Mallory is a legitimate member with Alice and Bob carries
    // her marker: her datagrams are forwarded in order, so once Alice and Bob hold
    // the marker, anything of hers in the first room would have arrived.
    let side = TestRoom::new();
    let jm_side = mallory
        .open_room(&side.auth(), &side.routing)
        .await
        .unwrap();
    alice.join_room(&side.auth(), &side.routing).await.unwrap();
    bob.join_room(&side.auth(), &side.routing).await.unwrap();
    for claimed in [slot_of(&ja), slot_of(&jb), Slot(0), Slot(7), Slot(u16::MAX)] {
        send_burst(&mallory, handle, claimed, m, BURST);
    }
    send_marker(&mallory, handle_of(&jm_side), m);
    for (client, who) in [(&alice, "alice"), (&bob, "bob")] {
        let got = collect_until_markers(client, &[(handle_of(&jm_side), m)]).await;
        assert_exactly(&got, &[], BURST, who);
        assert_quiet(client, who).await;
    }

    // With a valid proof Mallory is a member: datagrams flow both ways.
    let jm = mallory
        .join_room(&room.auth(), &room.routing)
        .await
        .unwrap();
    assert_eq!(handle_of(&jm), handle);
    let mut others = jm.member_slots.clone();
    others.sort_unstable();
    assert_eq!(others, {
        let mut s = vec![ja.slot, jb.slot];
        s.sort_unstable();
        s
    });
    send_burst(&mallory, handle, Slot(0), m, BURST);
    send_marker(&mallory, handle, m);
    send_burst(&alice, handle, Slot(0), a, BURST);
    send_marker(&alice, handle, a);
    let got = collect_until_markers(&mallory, &[(handle, a)]).await;
    assert_exactly(&got, &[(handle, a, slot_of(&ja))], BURST, "mallory");
    let got = collect_until_markers(&bob, &[(handle, a), (handle, m)]).await;
    assert_exactly(
        &got,
        &[(handle, a, slot_of(&ja)), (handle, m, slot_of(&jm))],
        BURST,
        "bob",
    );
    let got = collect_until_markers(&alice, &[(handle, m)]).await;
    assert_exactly(&got, &[(handle, m, slot_of(&jm))], BURST, "alice");
}
