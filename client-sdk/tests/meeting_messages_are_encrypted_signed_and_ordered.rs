//! In-meeting messages (issue 19, docs/protocol.md 11): chat reaches everyone in order
//! across a rekey, lossy data travels as datagrams, limits give clear errors, and a
//! hostile server can neither read, alter nor replay a message, nor make a late joiner
//! read one sent before it joined.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::v1::{self, client_frame::Request, event::Event, server_frame};
use conclave_sdk::DeviceId;
use conclave_sdk::client::{
    ClientError, Delivery, MAX_LOSSY_BODY_BYTES, MAX_RELIABLE_BODY_BYTES, MAX_TOPIC_BYTES,
    MediaKind, Meeting, MeetingEvent, MessageError, ReceivedMessage,
};
use conclave_sdk::meeting::rekey::EndReason;
use conclave_testkit::prelude::*;

/// Sends a message, retrying while the sender's room is still being joined.
async fn send(meeting: &Meeting, delivery: Delivery, topic: &str, body: &[u8]) {
    tokio::time::timeout(WAIT, async {
        loop {
            match meeting.send_message(delivery, topic, body).await {
                Ok(()) => return,
                Err(ClientError::NotJoined) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("send_message: {e}"),
            }
        }
    })
    .await
    .expect("the message is sent within the wait bound");
}

/// Sends the reliable chat lines "m{i}" for `lines`, in order.
async fn send_lines(meeting: &Meeting, lines: std::ops::Range<u32>) {
    for i in lines {
        send(
            meeting,
            Delivery::Reliable,
            "chat",
            format!("m{i}").as_bytes(),
        )
        .await;
    }
}

/// The next message `meeting` receives.
async fn next_message(meeting: &mut Meeting) -> ReceivedMessage {
    match wait_meeting_event(meeting, |e| matches!(e, MeetingEvent::Message(_))).await {
        MeetingEvent::Message(m) => m,
        _ => unreachable!("picked a message"),
    }
}

/// Sends a lossy message from `from` (device `sender`) until `to` receives one of
/// that sender; checks what arrived.
async fn lossy_until_received(
    from: &Meeting,
    sender: DeviceId,
    to: &mut Meeting,
) -> ReceivedMessage {
    let got = tokio::time::timeout(WAIT, async {
        loop {
            from.send_message(Delivery::Lossy, "cursor", b"x=10,y=20")
                .await
                .unwrap();
            let next = tokio::time::timeout(Duration::from_millis(100), next_message(to));
            if let Ok(m) = next.await
                && m.device_id == sender
            {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got.delivery, Delivery::Lossy);
    assert_eq!(
        (got.topic.as_str(), got.body.as_slice()),
        ("cursor", &b"x=10,y=20"[..])
    );
    got
}

/// Every participant's room is joined: media flows from the first to each other and back.
async fn all_joined(meetings: &mut [Meeting]) {
    let (first, others) = meetings.split_first_mut().unwrap();
    for other in others {
        deliver(first, MediaKind::Audio, b"joined?", other).await;
        deliver(other, MediaKind::Audio, b"joined!", first).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_everyone_in_order_across_a_rekey_and_not_the_removed_participant() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty {
        users: [_alice, _bob, carol],
        devices: [a, _b, _c],
        mut meetings,
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;
    all_joined(&mut meetings).await;
    let [meeting_a, mut meeting_b, mut meeting_c] = meetings;
    let first_epoch = meeting_a.sending_epoch();

    send_lines(&meeting_a, 0..10).await;
    meeting_a.remove(&[carol.id()]).await.unwrap();
    // Sent while the rekey runs: some go out on the new epoch before Bob holds its key.
    send_lines(&meeting_a, 10..20).await;
    let new_epoch = wait_epoch_above(&meeting_a, first_epoch).await;
    send(&meeting_a, Delivery::Reliable, "chat", b"m20").await;

    let mut epochs = Vec::new();
    for i in 0..21u64 {
        let m = next_message(&mut meeting_b).await;
        assert_eq!(m.body, format!("m{i}").as_bytes(), "in the order sent");
        assert_eq!(m.sequence, i);
        assert_eq!((m.device_id, m.topic.as_str()), (a.id(), "chat"));
        assert_eq!(m.delivery, Delivery::Reliable);
        epochs.push(m.epoch);
    }
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(epochs.first(), Some(&first_epoch));
    assert_eq!(
        epochs.last(),
        Some(&new_epoch),
        "the chat went on across the rekey"
    );

    // Carol read the chat of her epochs, nothing of the epoch that excluded her.
    let mut carol_read = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            match meeting_c.next_event().await {
                Some(MeetingEvent::Message(m)) => carol_read.push(m),
                Some(MeetingEvent::Ended { reason }) => {
                    assert_eq!(reason, EndReason::Removed);
                    return;
                }
                Some(_) => {}
                None => panic!("Carol's events closed without Ended"),
            }
        }
    })
    .await
    .unwrap();
    assert!(
        carol_read.len() >= 10,
        "Carol read the chat before her removal"
    );
    assert!(carol_read.iter().all(|m| m.epoch < new_epoch));
    assert!(matches!(
        meeting_c
            .send_message(Delivery::Reliable, "chat", b"x")
            .await,
        Err(ClientError::MeetingEnded)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_messages_travel_as_datagrams_and_name_their_sender() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty {
        devices: [a, b, _c],
        mut meetings,
        ..
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;
    all_joined(&mut meetings).await;
    let [meeting_a, mut meeting_b, mut meeting_c] = meetings;
    // Lossy: resend until one arrives (a datagram may be lost).
    lossy_until_received(&meeting_a, a.id(), &mut meeting_b).await;
    lossy_until_received(&meeting_b, b.id(), &mut meeting_c).await;
    // Lossy messages are not media: no frame, no decryption failure on the way.
    assert_eq!(meeting_b.stats().decrypt_failures, 0);
    assert_eq!(meeting_c.stats().decrypt_failures, 0);
    assert!(matches!(
        meeting_a.send_frame(MediaKind::Data, false, b"not media"),
        Err(ClientError::NotMedia)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_above_the_limits_are_refused_and_the_largest_get_through() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty { mut meetings, .. } =
        ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;
    all_joined(&mut meetings).await;
    let [meeting_a, mut meeting_b, _c] = meetings;
    let too_big = vec![1u8; MAX_RELIABLE_BODY_BYTES + 1];
    assert!(matches!(
        meeting_a
            .send_message(Delivery::Reliable, "chat", &too_big)
            .await,
        Err(ClientError::Message(MessageError::BodyTooLarge {
            max: 4_096,
            ..
        }))
    ));
    let too_big = vec![1u8; MAX_LOSSY_BODY_BYTES + 1];
    assert!(matches!(
        meeting_a
            .send_message(Delivery::Lossy, "cursor", &too_big)
            .await,
        Err(ClientError::Message(MessageError::BodyTooLarge {
            max: 900,
            ..
        }))
    ));
    let long_topic = "t".repeat(MAX_TOPIC_BYTES + 1);
    assert!(matches!(
        meeting_a
            .send_message(Delivery::Reliable, &long_topic, b"x")
            .await,
        Err(ClientError::Message(MessageError::TopicTooLong { .. }))
    ));
    // The largest reliable message passes the server's relay limit.
    let topic = "t".repeat(MAX_TOPIC_BYTES);
    let body = vec![0xa5; MAX_RELIABLE_BODY_BYTES];
    send(&meeting_a, Delivery::Reliable, &topic, &body).await;
    let got = next_message(&mut meeting_b).await;
    assert_eq!((got.topic, got.body), (topic, body));
}

/// The room message a server frame carries, if it is one.
fn room_message(frame: &mut v1::ServerFrame) -> Option<&mut v1::RoomMessage> {
    match &mut frame.kind {
        Some(server_frame::Kind::Event(v1::Event {
            event: Some(Event::RoomMessage(m)),
        })) => Some(m),
        _ => None,
    }
}

/// The server pushes `message` to `device` (whose meeting is `to`): the device reads
/// nothing of it, and `from`'s next message is the next one it reads.
async fn injected_message_is_ignored(
    sfu: &TestSfu,
    device: &[u8; 16],
    message: v1::RoomMessage,
    from: &Meeting,
    to: &mut Meeting,
) {
    assert!(sfu.adversary().inject(device, Event::RoomMessage(message)));
    send(from, Delivery::Reliable, "chat", b"marker").await;
    assert_eq!(
        next_message(to).await.body,
        b"marker",
        "the injected message was not read"
    );
}

/// What a hostile server saw and may replay: the payload of every `SendRoomMessage`,
/// and the room messages it relayed to one device.
#[derive(Default)]
struct Seen {
    sent: Vec<Vec<u8>>,
    relayed_to: Vec<v1::RoomMessage>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_cannot_read_alter_or_replay_a_message() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ThreeParty {
        devices: [_a, b, _c],
        mut meetings,
        ..
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;
    all_joined(&mut meetings).await;
    let [meeting_a, mut meeting_b, _c] = meetings;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let bob = *b.id().as_bytes();
    let record = Arc::clone(&seen);
    sfu.adversary().on_requests(Box::new(move |_, frame| {
        if let Some(Request::SendRoomMessage(r)) = &frame.request {
            record.lock().unwrap().sent.push(r.payload.clone());
        }
        true
    }));
    let record = Arc::clone(&seen);
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if let Some(m) = room_message(frame)
            && to == Some(bob)
        {
            record.lock().unwrap().relayed_to.push(m.clone());
        }
        true
    }));

    // Read: the server relays the message but its bytes do not hold the text.
    send(&meeting_a, Delivery::Reliable, "chat", b"the secret plan").await;
    assert_eq!(next_message(&mut meeting_b).await.body, b"the secret plan");
    let sent = seen.lock().unwrap().sent.clone();
    assert!(!sent.is_empty());
    for payload in &sent {
        assert!(
            !payload.windows(15).any(|w| w == b"the secret plan"),
            "the server read the text"
        );
    }

    // Alter: the server flips a byte of what it relays to Bob; he never sees it.
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if to == Some(bob)
            && let Some(last) = room_message(frame).and_then(|m| m.payload.last_mut())
        {
            *last ^= 1;
        }
        true
    }));
    send(&meeting_a, Delivery::Reliable, "chat", b"pay 10").await;
    // Honest again (the recording rules are installed anew).
    sfu.adversary().clear_rules();
    send(&meeting_a, Delivery::Reliable, "chat", b"after").await;
    assert_eq!(
        next_message(&mut meeting_b).await.body,
        b"after",
        "the altered message was dropped, the next one arrives"
    );

    // Replay: the server delivers the first message to Bob again; he ignores it.
    let first = seen.lock().unwrap().relayed_to[0].clone();
    injected_message_is_ignored(&sfu, &bob, first, &meeting_a, &mut meeting_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_cannot_read_a_message_sent_before_it_joined() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (users, devices) = connect_users(&sfu, ["alice", "bob", "dave"]).await;
    let [alice, bob, dave] = users;
    let [a, b, mut d] = devices;
    let mut pair = Group::meet([alice, bob], [a, b], &[MediaKind::Audio]).await;
    all_joined(&mut pair.meetings).await;
    let [meeting_a, mut meeting_b] = pair.meetings;

    // The server keeps what it relays to Bob and to Dave.
    let relayed: Arc<Mutex<Vec<(bool, v1::RoomMessage)>>> = Arc::default();
    let record = Arc::clone(&relayed);
    let bob_id = *pair.devices[1].id().as_bytes();
    let dave_id = *d.id().as_bytes();
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if let Some(m) = room_message(frame)
            && (to == Some(bob_id) || to == Some(dave_id))
        {
            record
                .lock()
                .unwrap()
                .push((to == Some(dave_id), m.clone()));
        }
        true
    }));
    send(&meeting_a, Delivery::Reliable, "chat", b"before dave").await;
    assert_eq!(next_message(&mut meeting_b).await.body, b"before dave");
    let before = relayed
        .lock()
        .unwrap()
        .iter()
        .find(|(to_dave, _)| !to_dave)
        .unwrap()
        .1
        .clone();

    meeting_a
        .invite(&[dave.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_d = d.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"hello dave", &mut meeting_d).await;
    send(&meeting_a, Delivery::Reliable, "chat", b"after dave").await;
    assert_eq!(next_message(&mut meeting_d).await.body, b"after dave");

    // The server hands Dave the earlier message, in his room: he cannot open it.
    let dave_room = relayed
        .lock()
        .unwrap()
        .iter()
        .find(|(to_dave, _)| *to_dave)
        .unwrap()
        .1
        .room_handle;
    let replay = v1::RoomMessage {
        room_handle: dave_room,
        ..before
    };
    injected_message_is_ignored(&sfu, &dave_id, replay, &meeting_a, &mut meeting_d).await;
}

/// Chat of a new epoch reaches a member before the key does (here the server withholds
/// the member's Rekey for a while): the member keeps it, sealed, and reads it in order
/// once the key arrives. Without that, reliable messages would be lost at every rekey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_that_arrives_before_its_key_waits_for_the_key() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ThreeParty {
        users: [_alice, _bob, carol],
        devices: [_a, b, _c],
        mut meetings,
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;
    all_joined(&mut meetings).await;
    let [meeting_a, mut meeting_b, _meeting_c] = meetings;
    let old_epoch = meeting_b.sending_epoch();

    // Containers for Bob (the Rekey among them) are withheld until released.
    let withhold = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let active = Arc::clone(&withhold);
    let bob = *b.id().as_bytes();
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        let mailbox = matches!(
            &frame.kind,
            Some(server_frame::Kind::Event(e)) if matches!(e.event, Some(Event::Mailbox(_)))
        );
        !(mailbox && to == Some(bob) && active.load(std::sync::atomic::Ordering::SeqCst))
    }));
    meeting_a.remove(&[carol.id()]).await.unwrap();
    let new_epoch = wait_epoch_above(&meeting_a, old_epoch).await;
    send_lines(&meeting_a, 0..5).await;
    // Bob cannot read them yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next_message(&mut meeting_b))
            .await
            .is_err()
    );
    withhold.store(false, std::sync::atomic::Ordering::SeqCst);
    for i in 0..5 {
        let m = next_message(&mut meeting_b).await;
        assert_eq!(m.body, format!("m{i}").as_bytes());
        assert_eq!(m.epoch, new_epoch);
    }
}
