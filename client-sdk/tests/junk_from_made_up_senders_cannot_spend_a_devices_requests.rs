//! Security review M8: a container names its sender in the clear, and the receiver must
//! look that user up before it can check anything. A hostile server (registered users
//! can no longer: the SFU refuses a container whose sender user is not the sending
//! device's) pushes a flood of containers, each claiming a new made-up user. Before,
//! each one cost the victim a directory request, until its own requests were refused
//! with RATE_LIMITED. Now lookups for unknown senders are bounded and users the
//! directory does not know are remembered, so the victim keeps working.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conclave_proto::Message as _;
use conclave_proto::v1::{self, client_frame::Request};
use conclave_sdk::client::{ClientEvent, MediaKind};
use conclave_sdk::{DeviceId, UserId};
use conclave_testkit::prelude::*;
use rand_core::{OsRng, RngCore};

/// A user id nobody registered.
fn made_up_user() -> UserId {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    UserId::from_bytes(bytes)
}

/// A container that decodes and claims `user` as its sender, and nothing more.
fn junk_claiming(user: UserId) -> Vec<u8> {
    let body = v1::DeviceCertificateBody {
        user_id: user.as_bytes().to_vec(),
        device_id: DeviceId::random(&mut OsRng).as_bytes().to_vec(),
        ..Default::default()
    };
    v1::Container {
        header: vec![1; 64],
        ciphertext: vec![2; 64],
        signature: vec![3; 64],
        sender_certificate: Some(v1::DeviceCertificate {
            body: body.encode_to_vec(),
            signature: vec![4; 64],
        }),
    }
    .encode_to_vec()
}

/// Flooding junk that claims made-up users costs the victim at most a small burst of
/// lookups (not one per container), the same made-up user is looked up once, and the
/// victim can still start a meeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_containers_from_made_up_users_costs_a_bounded_number_of_lookups() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ([_alice, bob], [mut a, mut b]) = connect_users(&sfu, ["alice", "bob"]).await;
    let victim = *a.id().as_bytes();
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&lookups);
    sfu.adversary().on_requests(Box::new(move |device, frame| {
        if device == Some(victim) && matches!(frame.request, Some(Request::FetchBundles(_))) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        true
    }));

    const FLOOD: usize = 300;
    let repeated = made_up_user();
    for n in 0..FLOOD {
        let user = if n % 2 == 0 { repeated } else { made_up_user() };
        let delivery = v1::MailboxDelivery {
            mailbox_id: 1_000_000 + n as u64,
            container: junk_claiming(user).into(),
            stored_at_ms: now().0,
        };
        assert!(
            sfu.adversary()
                .inject(&victim, v1::event::Event::Mailbox(delivery))
        );
    }
    // Every container the victim looked at is refused and reported; wait until the
    // flood has been worked through (the refusal of the last one, or the budget).
    let mut refused = 0;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(e) = a.events.recv().await {
            if matches!(e, ClientEvent::MessageRefused { .. }) {
                refused += 1;
            }
        }
    })
    .await;
    let spent = lookups.load(Ordering::SeqCst);
    assert!(refused > 0, "the junk was looked at");
    // The burst, plus one per second of the test at most.
    assert!(
        spent <= 20 + 10,
        "{spent} directory lookups for {FLOOD} junk containers"
    );

    // The victim's own requests still go through.
    let (_meeting, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .expect("the victim can still start a meeting");
    let _ = b.invitation().await;
}
