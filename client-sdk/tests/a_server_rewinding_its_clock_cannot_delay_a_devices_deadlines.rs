//! A hostile server tells a device to reconnect and answers the new connection's hello
//! with a clock a day behind the one it gave before. The device's deadlines are
//! server times (switching to a new epoch, dropping an old epoch's key, asking for a
//! withheld key, an invitation's ring deadline), so before, every pending deadline
//! moved a day out: a device could be kept sending on an epoch key that a removed
//! participant holds. Now the server's time seen by the device has a floor on its
//! monotonic clock (the furthest reading, run on, less 5 s), so a deadline moves out
//! by 5 s at most. Seen here through the simplest such deadline: an unanswered
//! invitation still stops ringing (5 s late at most), not a day later.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use conclave_proto::v1::{self, event::Event, response, server_frame};
use conclave_sdk::client::{ClientEvent, MediaKind};
use conclave_testkit::prelude::*;

/// How far the server rewinds its clock: the most the client accepts from any hello.
const DAY_MS: u64 = 24 * 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_rewinding_its_clock_at_a_reconnect_cannot_delay_a_devices_deadlines() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut config = sfu.client_config();
    // Alice's invitations stop ringing five seconds after they go out.
    config.ring_timeout = Duration::from_secs(5);
    let a = alice.connect_with(config).await;
    let mut b = bob.connect(&sfu).await;
    let bob_device = *b.id().as_bytes();
    let (meeting, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let invitation = b.invitation().await;
    assert_eq!(invitation.meeting_id, meeting.id());

    // From now on every hello answer is a day behind; Bob is told to reconnect.
    sfu.adversary().on_frames(Box::new(move |_, frame| {
        if let Some(server_frame::Kind::Response(r)) = &mut frame.kind
            && let Some(response::Result::Hello(hello)) = &mut r.result
        {
            hello.server_time_ms = hello.server_time_ms.saturating_sub(DAY_MS);
        }
        true
    }));
    assert!(sfu.adversary().inject(
        &bob_device,
        Event::ShuttingDown(v1::ShuttingDown {
            reconnect_after_ms: 50,
        }),
    ));
    b.wait_for(|e| matches!(e, ClientEvent::Reconnected)).await;

    // The invitation still stops ringing at its deadline (not a day later).
    let missed = b
        .wait_for(|e| matches!(e, ClientEvent::MissedCall(_)))
        .await;
    let ClientEvent::MissedCall(missed) = missed else {
        unreachable!("picked a missed call")
    };
    assert_eq!(missed.meeting_id, meeting.id());
}
