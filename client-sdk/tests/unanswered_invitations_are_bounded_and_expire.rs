//! Security review L8: unanswered invitations (each holding a meeting key) used to
//! pile up without bound and never go away. Now one inviting user can have at most
//! four pending at a device, and an invitation is dropped, key and all, when it
//! expires; the app hears of it. Review L2: opening a container tells the app to save
//! its prekey pool again, so that used prekeys leave storage too.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use conclave_sdk::client::{ClientError, ClientEvent, MediaKind, MessageRefusal};
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_keep_more_than_four_invitations_pending() {
    let sfu = TestSfu::start_for_clients().await;
    let ([_mallory, bob], [m, mut b]) = connect_users(&sfu, ["mallory", "bob"]).await;
    for _ in 0..6 {
        m.client
            .start_meeting(&[bob.id()], &[MediaKind::Audio])
            .await
            .unwrap();
    }
    let (mut invited, mut refused) = (0, 0);
    while invited + refused < 6 {
        match b
            .wait_for(|e| {
                matches!(
                    e,
                    ClientEvent::Invited(_) | ClientEvent::MessageRefused { .. }
                )
            })
            .await
        {
            ClientEvent::Invited(_) => invited += 1,
            ClientEvent::MessageRefused { reason, .. } => {
                assert!(
                    matches!(reason, MessageRefusal::TooManyInvitationsFromUser(_)),
                    "{reason}"
                );
                refused += 1;
            }
            _ => unreachable!(),
        }
    }
    assert_eq!((invited, refused), (4, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invitation_is_dropped_and_reported() {
    let sfu = TestSfu::start_for_clients().await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut config = sfu.client_config();
    // A short ring: the invitation stops ringing five seconds after it went out (long
    // enough to arrive first, even on a busy machine).
    config.ring_timeout = Duration::from_secs(5);
    let a = alice.connect_with(config).await;
    let mut b = bob.connect(&sfu).await;
    let (meeting, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let invitation = b.invitation().await;
    assert_eq!(invitation.meeting_id, meeting.id());
    // Opening the invitation used a one-time prekey: the app is told to save its pool.
    let consumed = b
        .wait_for(|e| matches!(e, ClientEvent::PrekeysConsumed { .. }))
        .await;
    assert!(matches!(
        consumed,
        ClientEvent::PrekeysConsumed { count: 1 }
    ));
    let missed = b
        .wait_for(|e| matches!(e, ClientEvent::MissedCall(_)))
        .await;
    let ClientEvent::MissedCall(missed) = missed else {
        unreachable!()
    };
    assert_eq!(missed.meeting_id, meeting.id());
    assert_eq!(missed.from.user_id, alice.id());
    let err = b
        .client
        .accept(&invitation, &[MediaKind::Audio])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NoInvitation), "{err}");
}
