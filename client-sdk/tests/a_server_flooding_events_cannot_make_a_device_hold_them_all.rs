//! A hostile server leaves one of a device's requests unanswered and pushes event after
//! event behind it: 192 junk mailbox deliveries of 256 KiB each. The client holds no more
//! of them than its event budget (4 MiB here), then closes the connection
//! (`ClosedReason::FellBehind`) and reconnects, and works on the new connection.
//! Before, it read every event into memory while it waited for the answer: up to 4,096
//! events of up to 2 MiB each on every connection, 8 GiB that the server chose.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use conclave_proto::v1::{self, client_frame::Request};
use conclave_sdk::client::{ClientEvent, DisconnectReason, MediaKind};
use conclave_sdk::transport::{ClosedReason, TransportError};
use conclave_testkit::meeting::start_and_accept;
use conclave_testkit::prelude::*;

/// The junk events and their size: together 12 times the client's budget.
const FLOOD: usize = 192;
const EVENT_BYTES: usize = 256 << 10;
const BUDGET: usize = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_flooding_events_cannot_make_a_device_hold_them_all() {
    let mut config = client_test_config();
    // The server itself queues the whole flood rather than cutting the client off
    // as too slow, as a hostile server would.
    config.limits.max_queued_event_bytes = 256 << 20;
    config.limits.max_queued_events = 4_096;
    let sfu = TestSfu::start_hostile(config).await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut client_config = sfu.client_config();
    client_config.event_queue_bytes = BUDGET;
    let mut a = alice.connect_with(client_config).await;
    let b = bob.connect(&sfu).await;
    let device = *a.id().as_bytes();

    // Alice's next directory lookup is never answered.
    let asked = Arc::new(AtomicBool::new(false));
    let noted = Arc::clone(&asked);
    sfu.adversary().on_requests(Box::new(move |from, frame| {
        let lookup =
            from == Some(device) && matches!(frame.request, Some(Request::FetchBundles(_)));
        if lookup {
            noted.store(true, Ordering::SeqCst);
        }
        !lookup
    }));
    let client = a.client.clone();
    let bob_id = bob.id();
    let start =
        tokio::spawn(async move { client.start_meeting(&[bob_id], &[MediaKind::Audio]).await });
    tokio::time::timeout(WAIT, async {
        while !asked.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("Alice looks Bob up");

    // While she waits, the server pushes the flood behind the missing answer.
    for n in 0..FLOOD {
        let queued = sfu.adversary().inject(
            &device,
            v1::event::Event::Mailbox(v1::MailboxDelivery {
                mailbox_id: u64::MAX - n as u64,
                container: vec![0x5a; EVENT_BYTES].into(),
                stored_at_ms: now().0,
            }),
        );
        if !queued {
            break;
        }
    }

    let reason = match a
        .wait_for(|e| matches!(e, ClientEvent::Disconnected { .. }))
        .await
    {
        ClientEvent::Disconnected { reason } => reason,
        _ => unreachable!("wait_for returns a matching event"),
    };
    match reason {
        DisconnectReason::Transport(TransportError::Closed(ClosedReason::FellBehind {
            budget_bytes,
            ..
        })) => assert_eq!(budget_bytes, BUDGET),
        other => panic!("disconnected for another reason: {other}"),
    }
    assert!(
        start.await.unwrap().is_err(),
        "the call waiting for the lookup fails with the connection"
    );

    // The server turns honest: Alice reconnects and calls Bob.
    sfu.adversary().clear_rules();
    a.wait_for(|e| matches!(e, ClientEvent::Reconnected)).await;
    let mut devices = [a, b];
    let [meeting_a, mut meeting_b] = <[_; 2]>::try_from(
        start_and_accept(&[alice, bob], &mut devices, &[MediaKind::Audio]).await,
    )
    .ok()
    .unwrap();
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"after the flood",
        &mut meeting_b,
    )
    .await;
}
