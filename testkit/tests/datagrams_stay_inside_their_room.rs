//! The media plane forwards a datagram to exactly the other members of the room its
//! header names, and only if the sender is a member of that room: never back to the
//! sender, never into another room, even for a client that is in both rooms.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::datagram::Slot;
use conclave_testkit::media::{
    assert_exactly, assert_quiet, collect_until_markers, member, send_burst, send_marker,
};
use conclave_testkit::protocol::rooms::{TestRoom, handle_of, slot_of};
use conclave_testkit::sfu::TestSfu;

const BURST: u32 = 25;

#[tokio::test]
async fn every_datagram_reaches_exactly_the_other_members_of_its_room() {
    let server = TestSfu::start().await;
    // Room 1: Alice, Bob, Xavier. Room 2: Xavier, Dave, Erin. Xavier is in both.
    let alice = member(&server, "alice").await;
    let bob = member(&server, "bob").await;
    let xavier = member(&server, "xavier").await;
    let dave = member(&server, "dave").await;
    let erin = member(&server, "erin").await;
    let (a, b, x1, x2, d, e) = (1u8, 2u8, 3u8, 4u8, 5u8, 6u8);

    let one = TestRoom::new();
    let two = TestRoom::new();
    let ja = alice.open_room(&one.auth(), &one.routing).await.unwrap();
    let jb = bob.join_room(&one.auth(), &one.routing).await.unwrap();
    let jx1 = xavier.join_room(&one.auth(), &one.routing).await.unwrap();
    let jd = dave.open_room(&two.auth(), &two.routing).await.unwrap();
    let jx2 = xavier.join_room(&two.auth(), &two.routing).await.unwrap();
    let je = erin.join_room(&two.auth(), &two.routing).await.unwrap();
    let (h1, h2) = (handle_of(&ja), handle_of(&jd));
    assert_ne!(h1, h2, "room handles are unique across the server");
    assert_eq!((handle_of(&jb), handle_of(&jx1)), (h1, h1));
    assert_eq!((handle_of(&jx2), handle_of(&je)), (h2, h2));

    // Every membership sends a burst and then its marker, in its own room.
    for (client, handle, sender) in [
        (&alice, h1, a),
        (&bob, h1, b),
        (&xavier, h1, x1),
        (&xavier, h2, x2),
        (&dave, h2, d),
        (&erin, h2, e),
    ] {
        send_burst(client, handle, Slot(0), sender, BURST);
        send_marker(client, handle, sender);
    }

    let (sa, sb, sx1) = (slot_of(&ja), slot_of(&jb), slot_of(&jx1));
    let (sx2, sd, se) = (slot_of(&jx2), slot_of(&jd), slot_of(&je));
    let got = collect_until_markers(&alice, &[(h1, b), (h1, x1)]).await;
    assert_exactly(&got, &[(h1, b, sb), (h1, x1, sx1)], BURST, "alice");
    let got = collect_until_markers(&bob, &[(h1, a), (h1, x1)]).await;
    assert_exactly(&got, &[(h1, a, sa), (h1, x1, sx1)], BURST, "bob");
    let got = collect_until_markers(&xavier, &[(h1, a), (h1, b), (h2, d), (h2, e)]).await;
    assert_exactly(
        &got,
        &[(h1, a, sa), (h1, b, sb), (h2, d, sd), (h2, e, se)],
        BURST,
        "xavier",
    );
    // Dave and Erin got room 2's traffic...
    let got_d = collect_until_markers(&dave, &[(h2, x2), (h2, e)]).await;
    let got_e = collect_until_markers(&erin, &[(h2, x2), (h2, d)]).await;
    // ... and, once Alice's and Bob's markers reached their room (so their datagrams
    // were all forwarded), a final marker from Xavier in room 2 shows that nothing of
    // room 1 was queued for Dave or Erin before it.
    send_marker(&xavier, h2, 100);
    let more_d = collect_until_markers(&dave, &[(h2, 100)]).await;
    let more_e = collect_until_markers(&erin, &[(h2, 100)]).await;
    assert_exactly(
        &[got_d, more_d].concat(),
        &[(h2, x2, sx2), (h2, e, se)],
        BURST,
        "dave",
    );
    assert_exactly(
        &[got_e, more_e].concat(),
        &[(h2, x2, sx2), (h2, d, sd)],
        BURST,
        "erin",
    );
    for (client, who) in [
        (&alice, "alice"),
        (&bob, "bob"),
        (&xavier, "xavier"),
        (&dave, "dave"),
        (&erin, "erin"),
    ] {
        assert_quiet(client, who).await;
    }
}

#[tokio::test]
async fn a_member_of_one_room_cannot_write_into_another_by_naming_its_handle() {
    let server = TestSfu::start().await;
    let alice = member(&server, "alice").await;
    let bob = member(&server, "bob").await;
    let xavier = member(&server, "xavier").await;
    let dave = member(&server, "dave").await;
    let (a, x) = (1u8, 3u8);

    let one = TestRoom::new();
    let two = TestRoom::new();
    let ja = alice.open_room(&one.auth(), &one.routing).await.unwrap();
    bob.join_room(&one.auth(), &one.routing).await.unwrap();
    xavier.join_room(&one.auth(), &one.routing).await.unwrap();
    let jd = dave.open_room(&two.auth(), &two.routing).await.unwrap();
    let jx2 = xavier.join_room(&two.auth(), &two.routing).await.unwrap();
    let (h1, h2) = (handle_of(&ja), handle_of(&jd));

    // Alice, in room 1 only, writes room 2's handle, claiming the slots in use there
    // and others; then her marker in room 1.
    for claimed in [
        slot_of(&jd),
        slot_of(&jx2),
        slot_of(&ja),
        Slot(0),
        Slot(u16::MAX),
    ] {
        send_burst(&alice, h2, claimed, a, BURST);
    }
    send_marker(&alice, h1, a);
    // Her room-1 marker reaching Bob and Xavier means her room-2 writes were handled.
    let got = collect_until_markers(&bob, &[(h1, a)]).await;
    assert_exactly(&got, &[], BURST, "bob");
    let got = collect_until_markers(&xavier, &[(h1, a)]).await;
    assert_exactly(&got, &[], BURST, "xavier (in room 2 as well)");
    // Then Xavier's marker in room 2 reaches Dave after anything Alice could have
    // caused there.
    send_marker(&xavier, h2, x);
    let got = collect_until_markers(&dave, &[(h2, x)]).await;
    assert_exactly(&got, &[], BURST, "dave");
    for (client, who) in [(&bob, "bob"), (&xavier, "xavier"), (&dave, "dave")] {
        assert_quiet(client, who).await;
    }
}
