//! A participant added mid-meeting gets the ratcheted key of the next epoch: it never
//! holds the key of the epoch before it joined, so it cannot decrypt earlier media.

use conclave_sdk::client::MediaKind;
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_cannot_decrypt_earlier_frames() {
    let sfu = TestSfu::start_for_clients().await;
    let ([_alice, bob, dave], [a, mut b, mut d]) =
        connect_users(&sfu, ["alice", "bob", "dave"]).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let early = deliver(&meeting_a, MediaKind::Audio, b"before dave", &mut meeting_b).await;
    let early_epoch = early.epoch;

    let report = meeting_a
        .invite(&[dave.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    assert_eq!(report.invited.len(), 1);
    let invitation = d.invitation().await;
    assert!(invitation.participants.len() == 3);
    let mut meeting_d = d
        .client
        .accept(&invitation, &[MediaKind::Audio])
        .await
        .unwrap();

    // Dave starts on the ratcheted epoch and never held an earlier key.
    assert!(meeting_d.sending_epoch() > early_epoch);
    assert!(meeting_d.held_epochs().iter().all(|e| *e > early_epoch));
    // Everyone moved to the ratcheted epoch, and Dave hears them.
    let joined_epoch = meeting_d.sending_epoch();
    assert_eq!(
        wait_epoch_above(&meeting_b, early_epoch).await,
        joined_epoch
    );
    let f = deliver(
        &meeting_a,
        MediaKind::Audio,
        b"welcome dave",
        &mut meeting_d,
    )
    .await;
    assert_eq!(f.epoch, joined_epoch);
    deliver(&meeting_b, MediaKind::Audio, b"hi dave", &mut meeting_d).await;
    deliver(&meeting_d, MediaKind::Audio, b"hi all", &mut meeting_b).await;
    // Every frame Dave decrypted is from an epoch he was given.
    assert_eq!(meeting_d.stats().decrypt_failures, 0);
    while let Some(f) = meeting_d.try_recv_frame() {
        assert!(f.epoch >= joined_epoch);
    }
    wait_participants(&meeting_b, 3).await;
}
