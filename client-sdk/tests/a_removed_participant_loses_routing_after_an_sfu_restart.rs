//! Security review M1: SFU room leadership used to belong to the connection that opened
//! the room. After an SFU restart, whichever member reconnected first re-opened the room
//! and became its leader, so the key leader's later rotations were refused and a removed
//! participant kept its routing. Now the room records its leader *devices*: after a
//! restart, the key leader still rotates, and a removed participant that stays in the
//! room (here the hostile SFU withholds its `Remove`) is evicted.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use conclave_proto::v1::{event::Event, server_frame};
use conclave_sdk::client::MediaKind;
use conclave_testkit::prelude::*;

/// From now on the server withholds every container from `device` (so it never learns
/// it was removed and stays in the room); the flag is set when the SFU evicts it.
fn withhold_containers_and_watch_eviction(
    sfu: &TestSfu,
    device: conclave_sdk::DeviceId,
) -> Arc<AtomicBool> {
    let device_id = *device.as_bytes();
    let evicted = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&evicted);
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if to != Some(device_id) {
            return true;
        }
        match &frame.kind {
            Some(server_frame::Kind::Event(e)) => match &e.event {
                Some(Event::Mailbox(_)) => false,
                Some(Event::RoomEvicted(_)) => {
                    seen.store(true, Ordering::SeqCst);
                    true
                }
                _ => true,
            },
            _ => true,
        }
    }));
    evicted
}

/// Waits (bounded) until `flag` is set.
async fn wait_until(flag: &AtomicBool) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(WAIT, async {
        while !flag.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_participant_is_evicted_from_the_room_after_an_sfu_restart() {
    let mut config = client_test_config();
    config.timing.shutdown_reconnect_after_ms = 50;
    let sfu = TestSfu::start_hostile(config).await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    // Carol comes back first after the restart (alice and bob back off longer), so on
    // the old code she re-opened the room and became its leader.
    let slow = |sfu: &TestSfu| {
        let mut c = sfu.client_config();
        c.reconnect_backoff = Duration::from_millis(1_500);
        c.max_reconnect_backoff = Duration::from_millis(1_500);
        c
    };
    let mut fast = sfu.client_config();
    fast.reconnect_backoff = Duration::from_millis(20);
    fast.max_reconnect_backoff = Duration::from_millis(50);
    let a = alice.connect_with(slow(&sfu)).await;
    let mut b = bob.connect_with(slow(&sfu)).await;
    let mut c = carol.connect_with(fast).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"before", &mut meeting_c).await;

    let sfu = sfu.restart_after(Duration::from_millis(300)).await;
    deliver(&meeting_a, MediaKind::Audio, b"back", &mut meeting_b).await;
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"back to carol",
        &mut meeting_c,
    )
    .await;

    let evicted = withhold_containers_and_watch_eviction(&sfu, c.id());

    let epoch = meeting_a.sending_epoch();
    meeting_a.remove(&[carol.id()]).await.unwrap();
    wait_epoch_above(&meeting_a, epoch).await;
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"without carol",
        &mut meeting_b,
    )
    .await;
    wait_until(&evicted)
        .await
        .expect("the SFU evicts the removed participant from the room after the rotation");
}

/// Review M1: a rotation the SFU refuses is retried (here the first two attempts are
/// refused) instead of being only logged, so the removed participant still loses
/// routing; one refused every time is reported to the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rotation_is_retried_and_reported_when_it_keeps_failing() {
    use conclave_proto::v1::client_frame::Request;
    use conclave_sdk::client::MeetingEvent;
    use std::sync::atomic::AtomicUsize;

    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ThreeParty {
        users: [_alice, _bob, carol],
        devices: [a, _b, c],
        meetings: [mut meeting_a, mut meeting_b, mut meeting_c],
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"hello", &mut meeting_c).await;

    // The server spoils Alice's rotations: the first two, then (later) all of them.
    let alice_device = *a.id().as_bytes();
    let refused = Arc::new(AtomicUsize::new(0));
    let refuse_all = Arc::new(AtomicBool::new(false));
    let (count, all) = (Arc::clone(&refused), Arc::clone(&refuse_all));
    sfu.adversary().on_requests(Box::new(move |device, frame| {
        if device == Some(alice_device)
            && let Some(Request::RotateRoom(rotate)) = &mut frame.request
            && (all.load(Ordering::SeqCst) || count.load(Ordering::SeqCst) < 2)
        {
            count.fetch_add(1, Ordering::SeqCst);
            rotate.rotation_signature = vec![0; 64];
        }
        true
    }));
    let evicted = withhold_containers_and_watch_eviction(&sfu, c.id());

    meeting_a.remove(&[carol.id()]).await.unwrap();
    wait_until(&evicted)
        .await
        .expect("the rotation is retried until the SFU takes it, and Carol is evicted");
    assert!(refused.load(Ordering::SeqCst) >= 2);
    deliver(&meeting_a, MediaKind::Audio, b"two of us", &mut meeting_b).await;
    drop(meeting_c);

    // Now every rotation is refused: Bob leaves, Alice rekeys, and after its retries
    // the meeting tells the app that the room could not be rotated.
    refuse_all.store(true, Ordering::SeqCst);
    meeting_b.leave().await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            match meeting_a.next_event().await {
                Some(MeetingEvent::RoomRotationFailed { epoch }) => return epoch,
                Some(_) => continue,
                None => panic!("the meeting ended without reporting the failure"),
            }
        }
    })
    .await
    .expect("a rotation that keeps failing is reported");
    assert!(failed >= Epoch(2));
}

/// A rotation that the SFU keeps refusing (here: every rotation to the first new
/// epoch) must not make the next one fail too: the next rotation is signed from the
/// epoch the room is really at, not from the one it never reached. (Before, it was
/// signed by the unreached epoch's key and refused until the SDK gave up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_after_a_refused_one_starts_from_the_rooms_real_epoch() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let Group {
        users: [_alice, _bob, carol, dave],
        devices: [a, _b, _c, _d],
        meetings: [mut meeting_a, meeting_b, _meeting_c, _meeting_d],
    } = Group::start(&sfu, ["alice", "bob", "carol", "dave"], &[MediaKind::Audio]).await;
    deliver(&meeting_b, MediaKind::Audio, b"hello", &mut meeting_a).await;
    let first = meeting_a.sending_epoch();

    // Every rotation to the next epoch is spoiled; later ones pass.
    let alice_device = *a.id().as_bytes();
    let spoiled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&spoiled);
    sfu.adversary().on_requests(Box::new(move |device, frame| {
        if device == Some(alice_device)
            && let Some(conclave_proto::v1::client_frame::Request::RotateRoom(rotate)) =
                &mut frame.request
            && rotate.next_epoch == first.get() + 1
        {
            count.fetch_add(1, Ordering::SeqCst);
            rotate.rotation_signature = vec![0; 64];
        }
        true
    }));
    let rotated = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&rotated);
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if to == Some(alice_device)
            && let Some(server_frame::Kind::Response(r)) = &frame.kind
            && let Some(conclave_proto::v1::response::Result::RoomRotated(done)) = &r.result
            && done.epoch > first.get() + 1
        {
            seen.store(true, Ordering::SeqCst);
        }
        true
    }));

    meeting_a.remove(&[carol.id()]).await.unwrap();
    wait_epoch_above(&meeting_a, first).await;
    tokio::time::timeout(WAIT, async {
        while spoiled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first rotation was attempted");
    meeting_a.remove(&[dave.id()]).await.unwrap();
    wait_until(&rotated)
        .await
        .expect("the second rotation goes through from the room's real epoch");
    let mut meeting_b = meeting_b;
    deliver(&meeting_a, MediaKind::Audio, b"still here", &mut meeting_b).await;
}
