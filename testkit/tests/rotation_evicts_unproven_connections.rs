//! Rotating a room moves it to a new epoch: only its leader device may do it (or, once
//! the leader has been gone a while, the successor it listed); every other member must
//! prove the new epoch within the grace window or is evicted, loses the room's
//! datagrams, and cannot come back with the old key.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_sdk::meeting::Epoch;
use std::sync::Arc;

use conclave_proto::datagram::{RoomHandle, Slot};
use conclave_proto::v1::{self, ErrorCode, EvictReason, event::Event};
use conclave_sdk::meeting::MeetingKey;
use conclave_sdk::transport::TransportError;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::media::{
    assert_exactly, assert_quiet, collect_until_markers, member, send_burst, send_marker,
};
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::{TestRoom, handle_of, slot_of};
use conclave_testkit::sfu::{TestSfu, test_config};
use rand_core::OsRng;

/// The grace window of these tests. The member that re-proves does so right after the
/// rotation is answered; a generous window keeps a slow machine from turning that into
/// an eviction. The unproven member's eviction takes this long.
const GRACE_MS: u64 = 2_000;

const BURST: u32 = 20;

async fn server() -> TestSfu {
    let mut config = test_config();
    config.timing.rotation_grace_ms = GRACE_MS;
    TestSfu::start_with(config, Arc::new(MemoryStore::new())).await
}

async fn epoch_changed(client: &mut TestClient, handle: RoomHandle) -> v1::EpochChanged {
    client
        .event(|e| match e {
            Event::EpochChanged(c) if RoomHandle(c.room_handle) == handle => Some(c),
            _ => None,
        })
        .await
}

async fn member_left(client: &mut TestClient, handle: RoomHandle) -> u32 {
    client
        .event(|e| match e {
            Event::MemberLeft(l) if RoomHandle(l.room_handle) == handle => Some(l.slot),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn members_that_do_not_prove_the_new_epoch_are_evicted_and_lose_the_rooms_media() {
    let server = server().await;
    let mut alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    let mut carol = member(&server, "carol").await;
    let (a, c) = (1u8, 3u8);

    let mut room = TestRoom::new();
    let ja = alice.open_room(&room.auth(), &room.routing).await.unwrap();
    assert!(ja.leader, "the opener leads");
    let jb = bob.join_room(&room.auth(), &room.routing).await.unwrap();
    let jc = carol.join_room(&room.auth(), &room.routing).await.unwrap();
    assert!(!jb.leader && !jc.leader);
    let handle = handle_of(&ja);

    // A side room Carol stays in with Alice: it carries the markers that show what
    // Carol does (not) receive once evicted.
    let side = TestRoom::new();
    let js = alice.open_room(&side.auth(), &side.routing).await.unwrap();
    carol.join_room(&side.auth(), &side.routing).await.unwrap();

    // Members other than the leader may not rotate, even with valid signatures.
    let attempt = MeetingKey::generate(Epoch(2), &mut OsRng).room_auth_key(&room.routing);
    for (client, who) in [(&bob, "bob"), (&carol, "carol")] {
        let err = client
            .rotate_room(&room.auth(), &attempt, &room.routing)
            .await
            .unwrap_err();
        assert_eq!(
            err.server_code(),
            Some(ErrorCode::NotLeader),
            "{who}: {err}"
        );
    }

    // Alice rotates; Bob re-proves at once, Carol never does.
    let old = room.rekey();
    let new = room.auth();
    assert_eq!(
        alice.rotate_room(&old, &new, &room.routing).await.unwrap(),
        2
    );
    let again = bob.join_room(&new, &room.routing).await.unwrap();
    assert_eq!(
        (handle_of(&again), again.slot, again.epoch),
        (handle, jb.slot, 2),
        "re-proving keeps the handle and slot"
    );
    assert!(!again.leader);
    for (client, who) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        let changed = epoch_changed(client, handle).await;
        assert_eq!(
            (changed.epoch, changed.grace_ms),
            (2, GRACE_MS),
            "{who}: {changed:?}"
        );
    }

    let evicted = carol
        .event(|e| match e {
            Event::RoomEvicted(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(RoomHandle(evicted.room_handle), handle);
    assert_eq!(evicted.reason, EvictReason::EpochNotProven as i32);
    assert_eq!(member_left(&mut alice, handle).await, jc.slot);
    assert_eq!(member_left(&mut bob, handle).await, jc.slot);

    // Alice's datagrams reach Bob, not Carol. Her marker in the side room follows her
    // room datagrams through the same forwarding path to Carol.
    send_burst(&alice, handle, Slot(0), a, BURST);
    send_marker(&alice, handle, a);
    send_marker(&alice, handle_of(&js), a);
    let got = collect_until_markers(&bob, &[(handle, a)]).await;
    assert_exactly(&got, &[(handle, a, slot_of(&ja))], BURST, "bob");
    let got = collect_until_markers(&carol, &[(handle_of(&js), a)]).await;
    assert_exactly(&got, &[], BURST, "carol (evicted)");
    assert_quiet(&carol, "carol (evicted)").await;

    // Nor does anything Carol writes with the room's handle reach Alice or Bob.
    send_burst(&carol, handle, slot_of(&jc), c, BURST);
    send_marker(&carol, handle_of(&js), c);
    let got = collect_until_markers(&alice, &[(handle_of(&js), c)]).await;
    assert_exactly(&got, &[], BURST, "alice");
    assert_quiet(&bob, "bob").await;

    // The old key is worthless now: neither joining nor opening with it works.
    let err = carol.join_room(&old, &room.routing).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::WrongEpoch), "{err}");
    // The refusal names the room's epoch, so a device left behind (review M3) knows to
    // stop sending and ask its key leader.
    assert!(
        matches!(err, TransportError::Server { room_epoch: 2, .. }),
        "{err:?}"
    );
    let err = carol.open_room(&old, &room.routing).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::WrongEpoch), "{err}");
    // So is a rotation to an epoch that is not greater than the current one (here
    // signed by the old key, as a replayed or raced rotation would be).
    let stale = MeetingKey::generate(Epoch(2), &mut OsRng).room_auth_key(&room.routing);
    let err = alice
        .rotate_room(&old, &stale, &room.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::WrongEpoch), "{err}");
}

/// Review M1: leadership belongs to devices, not to the connection that opened the
/// room. When the leader leaves, a member that is not on the room's leader list can
/// never rotate (so it cannot move the room to an epoch of its own and brick it); the
/// listed successor can, once the leader has been gone for the succession grace.
#[tokio::test]
async fn when_the_leader_leaves_only_its_listed_successor_rotates_after_the_grace() {
    let mut config = test_config();
    config.timing.rotation_grace_ms = GRACE_MS;
    config.timing.leader_succession_ms = 300;
    let server = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    let mut carol = member(&server, "carol").await;

    let mut room = TestRoom::new();
    let leaders = vec![alice.device_id(), bob.device_id()];
    let ja = alice
        .open_room_listing(&room.auth(), &room.routing, leaders)
        .await
        .unwrap();
    assert!(ja.leader);
    let jb = bob.join_room(&room.auth(), &room.routing).await.unwrap();
    assert!(!jb.leader);
    carol.join_room(&room.auth(), &room.routing).await.unwrap();
    let handle = handle_of(&ja);

    // While Alice is in the room, not even her successor may rotate.
    let old = room.auth();
    let attempt = MeetingKey::generate(Epoch(2), &mut OsRng).room_auth_key(&room.routing);
    let err = bob
        .rotate_room(&old, &attempt, &room.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotLeader), "{err}");

    alice.leave_room(&room.routing).await.unwrap();
    assert_eq!(member_left(&mut bob, handle).await, ja.slot);
    assert_eq!(member_left(&mut carol, handle).await, ja.slot);

    // Carol holds the room's key, but is not on the list: never.
    let err = carol
        .rotate_room(&old, &attempt, &room.routing)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotLeader), "{err}");

    // Bob, the listed successor, once Alice has been gone for the grace (retrying
    // when told to, as the SDK does).
    let old = room.rekey();
    let new = room.auth();
    let rotated = tokio::time::timeout(conclave_testkit::WAIT, async {
        loop {
            match bob.rotate_room(&old, &new, &room.routing).await {
                Ok(epoch) => return epoch,
                Err(e) if e.server_code() == Some(ErrorCode::NotLeader) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
    })
    .await
    .expect("the successor may rotate once the grace has passed");
    assert_eq!(rotated, 2);
    let changed = epoch_changed(&mut carol, handle).await;
    assert_eq!(changed.epoch, 2);
    let proven = carol.join_room(&new, &room.routing).await.unwrap();
    assert!(!proven.leader, "carol is not the leader");
    assert!(bob.join_room(&new, &room.routing).await.unwrap().leader);
}
