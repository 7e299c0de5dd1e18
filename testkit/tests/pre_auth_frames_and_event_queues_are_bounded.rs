//! M6: a connection cannot make the server hold much memory. Before authentication
//! only small control frames are accepted (an announced length above
//! `max_frame_bytes_before_auth` closes the connection at once, before anything is
//! allocated for it); after it, the full `max_frame_bytes`. Events queued for a client
//! that does not read are bounded in bytes as well as in frames.

// Test helpers may panic on unexpected failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};
use conclave_sfu::server::close_code;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::junk_container;
use conclave_testkit::protocol::raw::RawControl;
use conclave_testkit::protocol::{TestClient, device_id_bytes};
use conclave_testkit::sfu::{TestSfu, test_config};

/// The error the server sends for request id 0 before it closes the connection.
async fn framing_error(raw: &mut RawControl) -> v1::Error {
    let r = raw.response().await;
    assert_eq!(r.request_id, 0, "{r:?}");
    match r.result {
        Some(response::Result::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unauthenticated_connection_announcing_a_frame_above_the_pre_auth_limit_is_closed() {
    let server = TestSfu::start_edited(|_| {}).await;
    assert_eq!(test_config().limits.max_frame_bytes_before_auth, 8192);
    let mut raw = RawControl::connect(&server).await;

    // 8 KiB + 1, far below max_frame_bytes (2 MiB), announced and never sent.
    raw.write(&8193u32.to_be_bytes()).await;
    let e = framing_error(&mut raw).await;
    assert_eq!(e.code, ErrorCode::BadRequest as i32, "{e:?}");
    for part in [
        "8193",
        "8192",
        "before authentication",
        "max_frame_bytes_before_auth",
    ] {
        assert!(
            e.message.contains(part),
            "{:?} should mention {part}",
            e.message
        );
    }
    assert!(
        raw.next_frame().await.is_none(),
        "the server finishes its side of the control stream"
    );
    let (code, reason) = raw.closed_by_server().await;
    assert_eq!(code, close_code::PROTOCOL_VIOLATION, "{reason}");
    assert!(reason.contains("before authentication"), "{reason}");

    // Other clients are served as usual.
    TestClient::registered(&server, &User::new("bob")).await;
}

#[tokio::test]
async fn after_authentication_the_full_frame_limit_applies() {
    let server = TestSfu::start_edited(|_| {}).await;
    let mut raw = RawControl::connect(&server).await;
    let user = User::new("alice");
    let device = user.device();
    // Register is well under the pre-authentication limit.
    raw.register(&user, &device).await;

    // A 100 kB container is accepted once authenticated.
    let container = junk_container(&device, 100_000);
    let sent = raw
        .call(
            3,
            Request::SendContainer(v1::SendContainer {
                recipient_device_ids: vec![device_id_bytes(&device)],
                container,
                ..Default::default()
            }),
        )
        .await;
    assert!(
        matches!(sent, response::Result::ContainerSent(_)),
        "{sent:?}"
    );

    // Above max_frame_bytes it is still a framing violation.
    let max = test_config().limits.max_frame_bytes;
    raw.write(&u32::try_from(max + 1).unwrap().to_be_bytes())
        .await;
    let e = framing_error(&mut raw).await;
    assert!(e.message.contains("max_frame_bytes"), "{e:?}");
    assert!(!e.message.contains("before authentication"), "{e:?}");
    let (code, _) = raw.closed_by_server().await;
    assert_eq!(code, close_code::PROTOCOL_VIOLATION);
}

#[tokio::test]
async fn a_connection_that_does_not_read_its_events_is_cut_when_queued_bytes_exceed_the_bound() {
    const BOUND: usize = 64 * 1024;
    const CONTAINER: usize = 16 * 1024;
    let server = TestSfu::start_edited(|c| c.limits.max_queued_event_bytes = BOUND).await;

    // The victim registers, then never reads its control stream again. Its QUIC
    // receive window is small, so little sits in flight.
    let mut victim = RawControl::connect_with_window(&server, Some(16 * 1024)).await;
    let victim_user = User::new("victim");
    let victim_device = victim_user.device();
    victim.register(&victim_user, &victim_device).await;
    let victim_id = device_id_bytes(&victim_device);

    let alice = User::new("alice");
    let (alice_client, alice_device) = TestClient::registered(&server, &alice).await;
    // 64 containers of 16 KiB are 1 MiB: far below the frame-count bound (1024
    // events), far above the byte bound of 64 KiB.
    let mut sent = 0;
    while victim.conn.close_reason().is_none() && sent < 64 {
        alice_client
            .send_container(
                std::slice::from_ref(&victim_id),
                junk_container(&alice_device, CONTAINER),
            )
            .await
            .unwrap();
        sent += 1;
    }
    let (code, reason) = victim.closed_by_server().await;
    eprintln!("cut after {sent} containers of {CONTAINER} bytes: {reason}");
    assert_eq!(code, close_code::TOO_SLOW, "{reason}");
    assert!(reason.contains("max_queued_event_bytes"), "{reason}");
    // Cut after about BOUND + what the victim's window holds, not after 1024 events.
    assert!(
        sent * CONTAINER <= 4 * BOUND,
        "cut only after {sent} containers of {CONTAINER} bytes"
    );

    // Nothing was lost: every container waits in the victim's mailbox, and the
    // sender goes on working.
    let victim_key = *victim_device.device_id().as_bytes();
    assert_eq!(server.store.mailbox_count(&victim_key).unwrap(), sent);
    let bob = User::new("bob");
    let (mut bob_client, bob_device) = TestClient::registered(&server, &bob).await;
    alice_client
        .send_container(
            &[device_id_bytes(&bob_device)],
            junk_container(&alice_device, CONTAINER),
        )
        .await
        .unwrap();
    bob_client.mailbox_delivery().await;
}
