//! Security review L7: when the key leader's Rekey container failed to go out (sealing
//! or sending failed, so it reached nobody), the leader still switched to the new key
//! and rotated the SFU room to it. No member held that key, so every member was evicted
//! from the room. Now a Rekey that reached nobody is resent, and the leader switches and
//! rotates only once it has reached someone.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use conclave_proto::v1::{self, client_frame::Request, response, server_frame};
use conclave_sdk::client::MediaKind;
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_rotates_the_room_only_after_its_rekey_reached_someone() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ThreeParty {
        users: [_alice, _bob, mallory],
        devices: [a, _b, _m],
        meetings: [mut meeting_a, meeting_b, _meeting_m],
    } = ThreeParty::start(&sfu, ["alice", "bob", "mallory"], &[MediaKind::Audio]).await;
    deliver(&meeting_b, MediaKind::Audio, b"before", &mut meeting_a).await;
    let old_epoch = meeting_a.sending_epoch();

    // From now on, Alice's first two container sends fail (the server answers with an
    // error): the Remove to Mallory and the first Rekey to Bob. Later ones go through.
    let alice_device = *a.id().as_bytes();
    let failures = Arc::new(AtomicUsize::new(0));
    let through = Arc::new(AtomicBool::new(false));
    let rotated_too_early = Arc::new(AtomicBool::new(false));
    let (f, t) = (Arc::clone(&failures), Arc::clone(&through));
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if to != Some(alice_device) {
            return true;
        }
        if let Some(server_frame::Kind::Response(r)) = &mut frame.kind
            && matches!(r.result, Some(response::Result::ContainerSent(_)))
        {
            if f.fetch_add(1, Ordering::SeqCst) < 2 {
                r.result = Some(response::Result::Error(v1::Error {
                    code: v1::ErrorCode::Internal as i32,
                    message: "storage failed (injected)".into(),
                    ..Default::default()
                }));
            } else {
                t.store(true, Ordering::SeqCst);
            }
        }
        true
    }));
    let (t, early) = (Arc::clone(&through), Arc::clone(&rotated_too_early));
    sfu.adversary().on_requests(Box::new(move |device, frame| {
        if device == Some(alice_device)
            && matches!(frame.request, Some(Request::RotateRoom(_)))
            && !t.load(Ordering::SeqCst)
        {
            early.store(true, Ordering::SeqCst);
        }
        true
    }));

    meeting_a.remove(&[mallory.id()]).await.unwrap();
    let new_epoch = wait_epoch_above(&meeting_a, old_epoch).await;
    assert!(failures.load(Ordering::SeqCst) >= 2);
    assert!(
        !rotated_too_early.load(Ordering::SeqCst),
        "the room was rotated to a key that had reached nobody"
    );
    // Bob got the resent Rekey and follows; media flows on the new key.
    assert_eq!(wait_epoch_above(&meeting_b, old_epoch).await, new_epoch);
    let mut meeting_b = meeting_b;
    deliver(&meeting_a, MediaKind::Audio, b"after", &mut meeting_b).await;
}
