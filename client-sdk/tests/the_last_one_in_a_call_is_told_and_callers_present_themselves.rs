//! Call semantics a calling app needs: the device left alone in a meeting gets
//! `MeetingEvent::Alone` (once the last other user leaves, rejects or is removed, and
//! not before), and an invitation carries the caller's display name and avatar sealed
//! inside it, where the server never sees them.

#![allow(clippy::panic)]

use std::time::Duration;

use conclave_sdk::client::{CallerProfile, ClientConfig, MediaKind, Meeting, MeetingEvent};
use conclave_testkit::prelude::*;

/// Reads `meeting`'s events until `Alone`; panics if the meeting ends first.
async fn wait_alone(meeting: &mut Meeting) {
    wait_meeting_event(meeting, |e| matches!(e, MeetingEvent::Alone)).await;
}

/// Whether `Alone` is among the control events queued right now.
fn alone_queued(meeting: &mut Meeting) -> bool {
    let mut alone = false;
    while let Some(event) = meeting.try_next_control_event() {
        alone |= matches!(event, MeetingEvent::Alone);
    }
    alone
}

fn with_profile(sfu: &TestSfu, profile: CallerProfile) -> ClientConfig {
    let mut config = sfu.client_config();
    config.profile = Some(profile);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_alone_once_the_callee_hangs_up_and_sees_who_called() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let profile = CallerProfile::new("Alice Liddell")
        .unwrap()
        .with_avatar("https://avatars.example/wonderland-7f3a.png")
        .unwrap();
    let a = alice
        .connect_with(with_profile(&sfu, profile.clone()))
        .await;
    let mut b = bob.connect(&sfu).await;

    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let invitation = b.invitation().await;
    assert_eq!(invitation.caller.as_ref(), Some(&profile));
    assert_eq!(invitation.from.user_id, alice.id());
    let mut meeting_b = b
        .client
        .accept(&invitation, &[MediaKind::Audio])
        .await
        .unwrap();
    deliver(&meeting_a, MediaKind::Audio, b"hello", &mut meeting_b).await;
    // Two people in the call: nobody is alone.
    assert!(!alone_queued(&mut meeting_a));

    meeting_b.leave().await.unwrap();
    wait_alone(&mut meeting_a).await;
    assert!(meeting_a.participants().iter().all(|p| p.is_me));
    assert!(
        !meeting_a.is_ended(),
        "alone is not ended: the meeting stays open"
    );

    // The name and the avatar only ever crossed the server sealed.
    let adversary = sfu.adversary();
    let seen = adversary.containers();
    assert!(!seen.is_empty());
    for (_, bytes) in seen {
        for secret in [&b"Alice Liddell"[..], b"wonderland-7f3a"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "the server saw the caller's profile in the clear"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_call_leaves_the_caller_alone_and_a_plain_invite_has_no_caller() {
    let sfu = TestSfu::start_for_clients().await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.connect(&sfu).await;
    let mut b = bob.connect(&sfu).await;
    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let invitation = b.invitation().await;
    assert_eq!(invitation.caller, None);
    b.client.reject(&invitation).await.unwrap();
    wait_alone(&mut meeting_a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_only_the_last_departure_leaves_one_alone() {
    let sfu = TestSfu::start_for_clients().await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let a = alice.connect(&sfu).await;
    let mut b = bob.connect(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"all here", &mut meeting_c).await;

    // Bob leaves: Alice and Carol still have each other.
    meeting_b.leave().await.unwrap();
    wait_participants(&meeting_a, 2).await;
    wait_participants(&meeting_c, 2).await;
    deliver(&meeting_a, MediaKind::Audio, b"still two", &mut meeting_c).await;
    assert!(!alone_queued(&mut meeting_a));
    assert!(!alone_queued(&mut meeting_c));

    // The key leader leaves too: Carol, the one left, is told (and is the leader now).
    meeting_a.leave().await.unwrap();
    wait_alone(&mut meeting_c).await;
    assert_eq!(meeting_c.participants().len(), 1);
    assert!(meeting_c.is_leader());
    drop(meeting_b);
    // Alone does not repeat while nothing changes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!alone_queued(&mut meeting_c));
}
