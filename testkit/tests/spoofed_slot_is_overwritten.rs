//! Clients may write any sender slot into a datagram header; the SFU stamps the slot it
//! assigned to the sending connection over it, so nobody can speak as another member.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::datagram::{MediaKind, Slot};
use conclave_testkit::media::{Tag, collect_until_markers, member, send_marker};
use conclave_testkit::protocol::rooms::{TestRoom, handle_of, slot_of};
use conclave_testkit::sfu::TestSfu;

#[tokio::test]
async fn receivers_see_the_senders_assigned_slot_whatever_the_header_claims() {
    let server = TestSfu::start().await;
    let alice = member(&server, "alice").await;
    let bob = member(&server, "bob").await;
    let carol = member(&server, "carol").await;
    let (a, c) = (1u8, 3u8);

    let room = TestRoom::new();
    let ja = alice.open_room(&room.auth(), &room.routing).await.unwrap();
    let jb = bob.join_room(&room.auth(), &room.routing).await.unwrap();
    let jc = carol.join_room(&room.auth(), &room.routing).await.unwrap();
    let handle = handle_of(&ja);
    let (sa, sb, sc) = (slot_of(&ja), slot_of(&jb), slot_of(&jc));
    assert!(
        sa != sb && sb != sc && sa != sc,
        "slots are unique in a room"
    );

    // Alice claims Bob's slot, Carol's, her own and arbitrary ones, in audio and
    // video, with varied frame numbers: only the slot may change on the way.
    let claims = [
        sb,
        sc,
        sa,
        Slot(0),
        Slot(1),
        Slot(2),
        Slot(0x00ff),
        Slot(0x1234),
        Slot(0x8000),
        Slot(u16::MAX),
    ];
    let mut sent = Vec::new();
    for (seq, claimed) in (0u32..).zip(claims.iter().copied().cycle().take(40)) {
        let kind = if seq % 2 == 0 {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let payload = Tag {
            sender: a,
            seq,
            marker: false,
        }
        .encode();
        let frame = seq.wrapping_mul(0x9e37_79b9);
        alice.send_media(handle, claimed, kind, frame, &payload);
        sent.push((seq, kind, frame, payload));
    }
    send_marker(&alice, handle, a);
    // Carol claims Alice's slot.
    carol.send_media(
        handle,
        sa,
        MediaKind::Audio,
        7,
        &Tag {
            sender: c,
            seq: 0,
            marker: false,
        }
        .encode(),
    );
    send_marker(&carol, handle, c);

    for (client, who, from_carol) in [(&bob, "bob", true), (&carol, "carol", false)] {
        let mut markers = vec![(handle, a)];
        if from_carol {
            markers.push((handle, c));
        }
        let got = collect_until_markers(client, &markers).await;
        let from_alice: Vec<_> = got
            .iter()
            .filter(|g| g.tag.is_some_and(|t| t.sender == a))
            .collect();
        assert_eq!(from_alice.len(), sent.len(), "{who}");
        for g in &from_alice {
            assert_eq!(g.header.sender_slot, sa, "{who}: {g:?}");
            assert_eq!(g.header.room_handle, handle);
            let seq = g.tag.unwrap().seq;
            let (_, kind, frame, payload) = &sent[seq as usize];
            assert_eq!(g.header.media_kind, *kind);
            assert_eq!(g.header.frame_number, *frame);
            assert_eq!((g.header.fragment_index, g.header.fragment_count), (0, 1));
            assert!(!g.header.keyframe);
            assert_eq!(&g.payload, payload, "{who}: the payload is untouched");
        }
        let mut seqs: Vec<u32> = from_alice.iter().map(|g| g.tag.unwrap().seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..sent.len() as u32).collect::<Vec<_>>(), "{who}");
        if from_carol {
            let from_c: Vec<_> = got
                .iter()
                .filter(|g| g.tag.is_some_and(|t| t.sender == c))
                .collect();
            assert_eq!(from_c.len(), 1, "{who}");
            assert_eq!(from_c[0].header.sender_slot, sc, "{who}: carol's own slot");
        }
    }
    // Alice got Carol's datagram with Carol's slot, not her own.
    let got = collect_until_markers(&alice, &[(handle, c)]).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header.sender_slot, sc);
}
