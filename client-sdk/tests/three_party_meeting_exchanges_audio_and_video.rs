//! Three users meet: the initiator sends audio and video, the others reply with other
//! media kinds, and every frame arrives decrypted with its sender and kind.

use conclave_sdk::client::{MediaKind, MeetingEvent};
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_party_meeting_exchanges_audio_and_video() {
    let sfu = TestSfu::start_for_clients().await;
    let ([alice, bob, carol], [a, mut b, mut c]) =
        connect_users(&sfu, ["alice", "bob", "carol"]).await;

    let (mut meeting_a, report) = a
        .client
        .start_meeting(
            &[bob.id(), carol.id()],
            &[MediaKind::Audio, MediaKind::Video],
        )
        .await
        .unwrap();
    assert_eq!(report.invited.len(), 2);
    assert!(report.refused.is_empty());

    let invitation = b.invitation().await;
    assert_eq!(invitation.from.user_id, alice.id());
    assert_eq!(
        invitation.media_kinds,
        vec![MediaKind::Audio, MediaKind::Video]
    );
    assert_eq!(invitation.participants.len(), 3);
    let mut meeting_b = b
        .client
        .accept(&invitation, &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_c = c.accept_next(&[MediaKind::Video]).await;

    // The leader hears both replies, with the media each will send.
    let mut replies = Vec::new();
    while replies.len() < 2 {
        if let Some(MeetingEvent::Reply {
            from,
            accepted,
            media_kinds,
        }) = meeting_a.next_event().await
        {
            assert!(accepted);
            replies.push((from.user_id, media_kinds));
        }
    }
    assert!(replies.contains(&(bob.id(), vec![MediaKind::Audio])));
    assert!(replies.contains(&(carol.id(), vec![MediaKind::Video])));

    // Alice's audio and video reach Bob and Carol.
    let f = deliver(&meeting_a, MediaKind::Audio, b"alice audio", &mut meeting_b).await;
    assert_eq!(
        (f.user_id, f.device_id, f.kind),
        (alice.id(), a.id(), MediaKind::Audio)
    );
    let video = vec![7u8; 5_000]; // several datagrams
    let f = deliver(&meeting_a, MediaKind::Video, &video, &mut meeting_c).await;
    assert_eq!((f.user_id, f.kind), (alice.id(), MediaKind::Video));
    assert_eq!(f.data, video);
    // Bob's audio reaches Alice and Carol; Carol's video reaches Alice and Bob.
    let f = deliver(&meeting_b, MediaKind::Audio, b"bob audio", &mut meeting_a).await;
    assert_eq!((f.user_id, f.device_id), (bob.id(), b.id()));
    deliver(
        &meeting_b,
        MediaKind::Audio,
        b"bob to carol",
        &mut meeting_c,
    )
    .await;
    let f = deliver(&meeting_c, MediaKind::Video, b"carol video", &mut meeting_a).await;
    assert_eq!((f.user_id, f.kind), (carol.id(), MediaKind::Video));
    deliver(
        &meeting_c,
        MediaKind::Video,
        b"carol to bob",
        &mut meeting_b,
    )
    .await;

    for m in [&meeting_a, &meeting_b, &meeting_c] {
        assert_eq!(m.participants().len(), 3);
        let stats = m.stats();
        assert_eq!(stats.decrypt_failures, 0);
    }
    assert!(meeting_a.is_leader() && !meeting_b.is_leader());
}
