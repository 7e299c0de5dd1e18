//! Security review M3: a hostile server colluding with a removed participant withholds
//! one member's Rekey (and still reports it delivered to the key leader), so that the
//! member keeps sending on the old key, which the removed participant holds. Now the
//! member stops sending as soon as the room moves to an epoch whose key it lacks, tells
//! the app, and asks the key leader, who resends the key; sending then resumes on the
//! new epoch. (Before, the member sent on the old epoch forever and nobody noticed.)

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use conclave_proto::v1::{event::Event, server_frame};
use conclave_sdk::client::{ClientError, MediaKind, MeetingEvent};
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_rekey_is_withheld_stops_sending_until_the_leader_resends_the_key() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ThreeParty {
        users: [_alice, _bob, mallory],
        devices: [_a, b, _m],
        meetings: [meeting_a, mut meeting_b, _meeting_m],
    } = ThreeParty::start(&sfu, ["alice", "bob", "mallory"], &[MediaKind::Audio]).await;
    let mut meeting_a = meeting_a;
    deliver(&meeting_b, MediaKind::Audio, b"before", &mut meeting_a).await;
    let old_epoch = meeting_b.sending_epoch();

    // From now on every container for Bob is withheld: the Rekey that removes Mallory
    // never reaches him (nor, at first, the resent key).
    let withhold = Arc::new(AtomicBool::new(true));
    let active = Arc::clone(&withhold);
    let bob_device = *b.id().as_bytes();
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        let mailbox = matches!(
            &frame.kind,
            Some(server_frame::Kind::Event(e)) if matches!(e.event, Some(Event::Mailbox(_)))
        );
        !(mailbox && to == Some(bob_device) && active.load(Ordering::SeqCst))
    }));
    meeting_a.remove(&[mallory.id()]).await.unwrap();
    let new_epoch = wait_epoch_above(&meeting_a, old_epoch).await;

    // Bob sees the room move to an epoch he has no key for: he stops sending at once.
    let paused = tokio::time::timeout(WAIT, async {
        loop {
            match meeting_b.next_event().await {
                Some(MeetingEvent::SendingPaused { room_epoch }) => return room_epoch,
                Some(_) => continue,
                None => panic!("Bob's meeting ended"),
            }
        }
    })
    .await
    .expect("Bob is told that sending paused");
    assert_eq!(paused, new_epoch);
    assert!(matches!(
        meeting_b.send_frame(MediaKind::Audio, false, b"on the old key"),
        Err(ClientError::SendingPaused)
    ));
    assert_eq!(meeting_b.sending_epoch(), old_epoch, "no key to switch to");

    // The server stops withholding: Bob's next key request brings the key.
    withhold.store(false, Ordering::SeqCst);
    let resumed = wait_epoch_above(&meeting_b, old_epoch).await;
    assert_eq!(resumed, new_epoch);
    wait_participants(&meeting_b, 2).await;
    deliver(&meeting_b, MediaKind::Audio, b"after", &mut meeting_a).await;
}
