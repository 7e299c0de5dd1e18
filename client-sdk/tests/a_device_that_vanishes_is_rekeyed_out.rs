//! A device vanishes without a word (its process dies: no `Leave`, no QUIC close).
//! Once the SFU's idle timeout notices and the drop window passes, the meeting rekeys
//! without it. If it was the key leader, the remaining device with the lowest sender
//! index takes over and rekeys.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use conclave_sdk::client::{MediaKind, Meeting};
use conclave_sfu::store::MemoryStore;
use conclave_testkit::prelude::*;

/// A server whose QUIC idle timeout is short (the clients' keep-alive, 5 s, still
/// keeps live connections open).
async fn sfu() -> TestSfu {
    let mut config = client_test_config();
    config.timing.idle_timeout_secs = 6;
    TestSfu::start_with(config, Arc::new(MemoryStore::new())).await
}

/// The device's own runtime: shutting it down kills the device mid-meeting.
fn doomed_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Both survivors move past `epoch` to the same new one, with two participants left.
async fn rekeyed_to_two(x: &Meeting, y: &Meeting, epoch: Epoch) -> Epoch {
    let new_epoch = wait_epoch_above(x, epoch).await;
    assert_eq!(wait_epoch_above(y, epoch).await, new_epoch);
    wait_participants(x, 2).await;
    wait_participants(y, 2).await;
    new_epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_leader_that_vanishes_is_succeeded_by_the_lowest_sender_index() {
    let sfu = sfu().await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let doomed = doomed_runtime();
    let a = alice.connect_on(doomed.handle(), sfu.client_config()).await;
    let mut b = bob.connect(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    // Everyone has heard alice (that is how a device's presence is tracked).
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"alice to bob",
        &mut meeting_b,
    )
    .await;
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"alice to carol",
        &mut meeting_c,
    )
    .await;
    let epoch = meeting_b.sending_epoch();
    let successor = meeting_b
        .participants()
        .into_iter()
        .filter(|p| p.user_id != alice.id())
        .min_by_key(|p| p.sender_index)
        .unwrap();

    doomed.shutdown_background();
    drop((meeting_a, a));

    let new_epoch = rekeyed_to_two(&meeting_b, &meeting_c, epoch).await;
    for m in [&meeting_b, &meeting_c] {
        let ps = m.participants();
        assert!(ps.iter().all(|p| p.user_id != alice.id()));
        let leader = ps.into_iter().find(|p| p.is_leader).unwrap();
        assert_eq!(leader.device_id, successor.device_id);
    }
    // Media flows both ways on the new epoch, also past the SFU's rotation grace.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let f = deliver(&meeting_b, MediaKind::Audio, b"bob after", &mut meeting_c).await;
    assert_eq!(f.epoch, new_epoch);
    let f = deliver(&meeting_c, MediaKind::Audio, b"carol after", &mut meeting_b).await;
    assert_eq!(f.epoch, new_epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_vanishes_is_rekeyed_out_by_the_leader() {
    let sfu = sfu().await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let doomed = doomed_runtime();
    let a = alice.connect(&sfu).await;
    let mut b = bob.connect(&sfu).await;
    let mut c = carol.connect_on(doomed.handle(), sfu.client_config()).await;
    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    deliver(
        &meeting_c,
        MediaKind::Audio,
        b"carol to alice",
        &mut meeting_a,
    )
    .await;
    let epoch = meeting_a.sending_epoch();

    doomed.shutdown_background();
    drop((meeting_c, c));

    let new_epoch = rekeyed_to_two(&meeting_a, &meeting_b, epoch).await;
    assert!(meeting_a.is_leader());
    for m in [&meeting_a, &meeting_b] {
        assert!(m.participants().iter().all(|p| p.user_id != carol.id()));
    }
    let f = deliver(&meeting_a, MediaKind::Audio, b"alice after", &mut meeting_b).await;
    assert_eq!(f.epoch, new_epoch);
}
