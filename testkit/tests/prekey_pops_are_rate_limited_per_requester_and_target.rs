//! H2 (server part): nobody can drain another device's one-time prekeys. Pops are
//! rate limited per (requesting device, target device) and per target device; a
//! withheld prekey comes back as a bundle without prekey, marked `prekey_rate_limited`
//! (not `prekeys_exhausted`) with a retry hint, and the rest of the fetch is served.

// Test helpers may panic on unexpected failures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use conclave_proto::v1;
use conclave_sdk::identity::PrekeyPool;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::sfu::TestSfu;

/// A registered user whose single device holds `prekeys` prekeys.
async fn stocked(server: &TestSfu, name: &str, prekeys: usize) -> (User, [u8; 16]) {
    let user = User::new(name);
    let (client, device) = TestClient::registered(server, &user).await;
    let mut pool = PrekeyPool::new(&device);
    client
        .upload_prekeys(&device, &mut pool, prekeys)
        .await
        .unwrap();
    (user, *device.device_id().as_bytes())
}

/// The single device bundle of `user` in `bundles`.
fn device_of<'a>(bundles: &'a v1::Bundles, user: &User) -> &'a v1::DeviceBundle {
    let bundle = bundles
        .users
        .iter()
        .find(|b| b.user_id.as_slice() == user.identity.user_id.as_bytes())
        .expect("a bundle for every user asked for");
    assert_eq!(bundle.devices.len(), 1);
    &bundle.devices[0]
}

/// Asserts that `device` is a bundle whose prekey was withheld by the rate limit.
fn assert_withheld(device: &v1::DeviceBundle, max_wait_ms: u64) {
    assert!(device.certificate.is_some(), "the certificate is served");
    assert!(device.prekey.is_none(), "no prekey");
    assert!(device.prekey_rate_limited, "{device:?}");
    assert!(
        !device.prekeys_exhausted,
        "a rate limit is not an empty pool"
    );
    assert!(
        (1..=max_wait_ms).contains(&device.prekey_retry_after_ms),
        "retry hint {} ms",
        device.prekey_retry_after_ms
    );
}

#[tokio::test]
async fn one_requester_popping_a_victims_prekeys_in_a_loop_gets_at_most_its_burst() {
    const BURST: u32 = 5;
    let server = TestSfu::start_edited(|c| {
        c.limits.prekey_pops_per_pair_burst = BURST;
        c.limits.prekey_pops_per_pair_per_minute = 1;
    })
    .await;
    let (victim, victim_id) = stocked(&server, "victim", 50).await;
    let (carol, carol_id) = stocked(&server, "carol", 5).await;
    let (mallory_client, _) = TestClient::registered(&server, &User::new("mallory")).await;

    let started = Instant::now();
    let mut got = 0;
    for _ in 0..30 {
        let bundles = mallory_client.fetch_bundles(&[&victim]).await.unwrap();
        let device = device_of(&bundles, &victim);
        if device.prekey.is_some() {
            got += 1;
        } else {
            assert_withheld(device, 60_000);
        }
    }
    // One more token per minute; the loop takes well under one.
    let allowed = u64::from(BURST) + started.elapsed().as_secs() / 60;
    assert!(
        (u64::from(BURST)..=allowed).contains(&got),
        "popped {got} prekeys in a loop of 30 (burst {BURST})"
    );

    // The fetch as a whole still succeeds: Carol's device gets its prekey while the
    // victim's is withheld in the same answer.
    let bundles = mallory_client
        .fetch_bundles(&[&victim, &carol])
        .await
        .unwrap();
    assert_withheld(device_of(&bundles, &victim), 60_000);
    assert!(device_of(&bundles, &carol).prekey.is_some());

    // Another requester is not affected by Mallory's loop.
    let (alice_client, _) = TestClient::registered(&server, &User::new("alice")).await;
    let bundles = alice_client.fetch_bundles(&[&victim]).await.unwrap();
    let device = device_of(&bundles, &victim);
    assert!(device.prekey.is_some(), "{device:?}");
    assert!(!device.prekey_rate_limited);

    // Withheld prekeys stay with the directory.
    let popped = usize::try_from(got).unwrap() + 1;
    assert_eq!(server.store.prekey_count(&victim_id).unwrap(), 50 - popped);
    assert_eq!(server.store.prekey_count(&carol_id).unwrap(), 4);
}

#[tokio::test]
async fn all_requesters_together_are_limited_per_target() {
    let server = TestSfu::start_edited(|c| {
        c.limits.prekey_pops_per_target_burst = 4;
        c.limits.prekey_pops_per_target_per_minute = 1;
    })
    .await;
    let (victim, victim_id) = stocked(&server, "victim", 50).await;
    let (carol, _) = stocked(&server, "carol", 10).await;

    let mut served = 0;
    let mut withheld = 0;
    for name in ["r1", "r2", "r3"] {
        let (client, _) = TestClient::registered(&server, &User::new(name)).await;
        for _ in 0..2 {
            let bundles = client.fetch_bundles(&[&victim]).await.unwrap();
            let device = device_of(&bundles, &victim);
            if device.prekey.is_some() {
                served += 1;
            } else {
                assert_withheld(device, 60_000);
                withheld += 1;
            }
        }
    }
    assert_eq!((served, withheld), (4, 2));
    assert_eq!(server.store.prekey_count(&victim_id).unwrap(), 46);

    // A fresh requester is refused the victim too (the target's budget is shared),
    // while another target has its own.
    let (client, _) = TestClient::registered(&server, &User::new("r4")).await;
    let bundles = client.fetch_bundles(&[&victim, &carol]).await.unwrap();
    assert_withheld(device_of(&bundles, &victim), 60_000);
    assert!(device_of(&bundles, &carol).prekey.is_some());
}
