//! A hostile server announces the same member joining the meeting's room over and over
//! (a meeting whose members come and go for hours does much the same). Each
//! announcement may bring one resend of the safety-words round, nothing more. Before,
//! each one also doubled the interval of the round's periodic resends; after about 62
//! announcements `Instant + Duration` overflowed and the client core panicked, which
//! stopped the client (the load test found it at 10 meetings × 100 participants).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::v1::{self, event::Event, server_frame};
use conclave_sdk::client::{ClientError, Delivery, MediaKind, Meeting, MeetingEvent};
use conclave_testkit::prelude::*;

/// More announcements than it took to overflow the resend interval.
const REPLAYS: usize = 80;
/// Apart by more than the client's join coalescing window (100 ms), so that every
/// announcement counts as a join of its own.
const REPLAY_GAP: Duration = Duration::from_millis(150);

/// The `MemberJoined` event in `frame`, if it is one.
fn member_joined(frame: &v1::ServerFrame) -> Option<&v1::MemberJoined> {
    match &frame.kind {
        Some(server_frame::Kind::Event(v1::Event {
            event: Some(Event::MemberJoined(joined)),
        })) => Some(joined),
        _ => None,
    }
}

/// Sends a reliable message, retrying while the sender's room is still being joined.
async fn send(meeting: &Meeting, body: &[u8]) {
    tokio::time::timeout(WAIT, async {
        loop {
            match meeting.send_message(Delivery::Reliable, "chat", body).await {
                Ok(()) => return,
                Err(ClientError::NotJoined) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("send_message: {e}"),
            }
        }
    })
    .await
    .expect("the message is sent within the wait bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_replaying_member_joins_cannot_stop_a_client() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (users, devices) = connect_users(&sfu, ["alice", "bob"]).await;
    let alice = *devices[0].id().as_bytes();
    let bob = *devices[1].id().as_bytes();
    // The server keeps what it tells Alice about Bob joining her room.
    let told = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&told);
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if to == Some(alice)
            && let Some(joined) = member_joined(frame)
            && joined.device_id == bob
        {
            record.lock().unwrap().push(joined.clone());
        }
        true
    }));
    let pair = Group::meet(users, devices, &[MediaKind::Audio]).await;
    let [meeting_a, mut meeting_b] = pair.meetings;
    deliver(&meeting_a, MediaKind::Audio, b"joined?", &mut meeting_b).await;
    // Bob's announcement counts once Alice's safety-words round runs.
    tokio::time::timeout(WAIT, async {
        while meeting_a.safety_words().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("Alice's safety-words round runs");
    let joined = told
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("Alice was told that Bob joined her room");

    for i in 0..REPLAYS {
        assert!(
            sfu.adversary()
                .inject(&alice, Event::MemberJoined(joined.clone())),
            "Alice's client went offline after {i} replayed joins"
        );
        tokio::time::sleep(REPLAY_GAP).await;
    }

    // Alice's client still works: her message reaches Bob.
    send(&meeting_a, b"still here").await;
    let received =
        wait_meeting_event(&mut meeting_b, |e| matches!(e, MeetingEvent::Message(_))).await;
    let MeetingEvent::Message(message) = received else {
        unreachable!("picked a message")
    };
    assert_eq!(message.body, b"still here");
    assert!(meeting_a.safety_words().is_some());
}
