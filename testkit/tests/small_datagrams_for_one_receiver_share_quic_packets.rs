//! The SFU packs a receiver's small media datagrams: those forwarded to it within the
//! pack window (`timing.media_pack_ms`) leave together, in as few QUIC packets as fit,
//! instead of one packet each. Three speakers take turns sending one audio datagram, a
//! millisecond apart, so their datagrams reach the SFU one by one; the listener must
//! receive every one of them, in each speaker's order, in at most half as many UDP
//! datagrams (with the window at 0 it takes about one per datagram).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use conclave_proto::datagram::{MediaKind, Slot};
use conclave_testkit::media::{Tag, assert_exactly, collect_until_markers, member, send_marker};
use conclave_testkit::protocol::rooms::{TestRoom, handle_of, slot_of};
use conclave_testkit::sfu::TestSfu;

const ROUNDS: u32 = 20;

#[tokio::test]
async fn a_listener_gets_the_speakers_datagrams_packed_into_fewer_packets() {
    // The largest window, so that scheduling noise on a loaded machine cannot split
    // every round into packets of its own.
    let server = TestSfu::start_edited(|c| c.timing.media_pack_ms = 20).await;
    let listener = member(&server, "listener").await;
    let speakers = [
        member(&server, "one").await,
        member(&server, "two").await,
        member(&server, "three").await,
    ];
    let room = TestRoom::new();
    let opened = listener
        .open_room(&room.auth(), &room.routing)
        .await
        .unwrap();
    let handle = handle_of(&opened);
    let mut slots = Vec::new();
    for speaker in &speakers {
        slots.push(slot_of(
            &speaker
                .join_room(&room.auth(), &room.routing)
                .await
                .unwrap(),
        ));
    }

    let before = listener.conn.quic().stats().udp_rx.datagrams;
    for seq in 0..ROUNDS {
        for (sender, speaker) in (1u8..).zip(&speakers) {
            let tag = Tag {
                sender,
                seq,
                marker: false,
            };
            speaker.send_media(handle, Slot(0), MediaKind::Audio, seq, &tag.encode());
            // Apart, so that the SFU forwards them one by one (sent together, they
            // would reach it in one packet and leave in one without any window).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for (sender, speaker) in (1u8..).zip(&speakers) {
        send_marker(speaker, handle, sender);
    }
    let markers: Vec<_> = (1u8..=3).map(|sender| (handle, sender)).collect();
    let got = collect_until_markers(&listener, &markers).await;
    let packets = listener.conn.quic().stats().udp_rx.datagrams - before;

    let expected: Vec<_> = (1u8..)
        .zip(&slots)
        .map(|(sender, slot)| (handle, sender, *slot))
        .collect();
    assert_exactly(&got, &expected, ROUNDS, "listener");
    let datagrams = u64::from(ROUNDS + 1) * 3;
    assert!(
        packets * 2 <= datagrams,
        "{datagrams} datagrams arrived in {packets} UDP datagrams: not packed"
    );
}
