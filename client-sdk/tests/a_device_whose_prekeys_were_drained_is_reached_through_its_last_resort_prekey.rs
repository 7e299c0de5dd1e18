//! Security review H2: one-time prekeys can be drained, by one attacker or many. A
//! device that is offline cannot replenish, so without a fallback nobody could invite
//! it until it came back. Every device therefore keeps a signed last-resort prekey on
//! the directory, handed out (and never deleted) when its one-time prekeys are gone or
//! withheld by the directory's pop rate limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_proto::v1::{self, client_frame::Request, response};
use conclave_sdk::client::{Client, DeviceCredentials, MediaKind};
use conclave_sdk::identity::VerifiedPrekey;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::hostile::raw_device;
use conclave_testkit::prelude::*;

/// The directory's entry for `target`'s only device, as `fetcher` gets it.
async fn fetch_one(fetcher: &TestClient, target: &User) -> v1::DeviceBundle {
    let answer = fetcher
        .request(Request::FetchBundles(v1::FetchBundles {
            user_ids: vec![target.id().as_bytes().to_vec()],
            ..Default::default()
        }))
        .await
        .unwrap();
    let response::Result::Bundles(bundles) = answer else {
        panic!("expected Bundles");
    };
    let mut devices: Vec<v1::DeviceBundle> =
        bundles.users.into_iter().flat_map(|u| u.devices).collect();
    assert_eq!(devices.len(), 1);
    devices.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_whose_one_time_prekeys_were_all_popped_still_gets_the_invite() {
    let config = drain_test_config();
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let (alice, victim, mallory) = (
        User::new("alice"),
        User::new("victim"),
        User::new("mallory"),
    );
    let a = alice.connect(&sfu).await;

    // The victim connects once (uploading its prekeys and its last-resort prekey), its
    // app saves what it must, and it goes offline.
    let credentials = victim.credentials();
    let device = credentials.device().public().clone();
    let stored_certificate = credentials.certificate().clone();
    let stored_secrets = credentials.export_secrets();
    let (client, _events) = Client::connect(sfu.client_config(), credentials)
        .await
        .unwrap();
    let saved_prekeys = client.export_prekeys().await.unwrap();
    client.close().await;

    // Mallory pops every one-time prekey the victim has.
    let attacker = raw_device(&sfu, &mallory.credentials()).await;
    let mut popped = 0;
    let exhausted = loop {
        let bundle = fetch_one(&attacker, &victim).await;
        if bundle.prekeys_exhausted {
            break bundle;
        }
        assert!(bundle.prekey.is_some() && !bundle.last_resort);
        popped += 1;
        assert!(popped <= 10_000, "the victim's prekeys never ran out");
    };
    assert!(popped > 0);

    // What is left is the signed last-resort prekey, handed out again and again.
    assert!(exhausted.last_resort);
    let last_resort = exhausted.prekey.clone().expect("the last-resort prekey");
    let verified = VerifiedPrekey::verify(&last_resort, &device, now()).unwrap();
    assert!(verified.is_last_resort());
    for _ in 0..3 {
        let again = fetch_one(&attacker, &victim).await;
        assert!(again.prekeys_exhausted && again.last_resort && !again.prekey_rate_limited);
        assert_eq!(again.prekey.as_ref(), Some(&last_resort));
    }

    // Alice invites the drained, offline victim: the invite is sealed to the
    // last-resort prekey and waits in the mailbox.
    let (meeting_a, report) = a
        .client
        .start_meeting(&[victim.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    assert_eq!(report.invited, vec![(victim.id(), device.device_id())]);

    // The victim's app restarts from storage and gets the invitation.
    let restored = DeviceCredentials::restore(
        &victim.name,
        victim.key.public_key(),
        &stored_certificate,
        &stored_secrets,
        now(),
    )
    .unwrap()
    .with_saved_prekeys(&saved_prekeys)
    .unwrap();
    let (client, events) = Client::connect(sfu.client_config(), restored)
        .await
        .unwrap();
    let mut v = Device { client, events };
    let invitation = v.invitation().await;
    assert_eq!(invitation.meeting_id, meeting_a.id());
    let mut meeting_v = v
        .client
        .accept(&invitation, &[MediaKind::Audio])
        .await
        .unwrap();
    deliver(&meeting_a, MediaKind::Audio, b"still here", &mut meeting_v).await;
}

/// When the directory withholds a device's one-time prekey (its drain protection:
/// here the per-target budget is spent by an attacker), senders get the last-resort
/// prekey at once instead of waiting for the limit to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_prekey_is_replaced_by_the_last_resort_prekey_without_delay() {
    let mut config = drain_test_config();
    config.limits.prekey_pops_per_target_burst = 5;
    config.limits.prekey_pops_per_target_per_minute = 1;
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let (alice, victim, mallory) = (
        User::new("alice"),
        User::new("victim"),
        User::new("mallory"),
    );
    let a = alice.connect(&sfu).await;
    let mut v = victim.connect(&sfu).await;

    // Mallory spends the victim's whole per-target budget.
    let attacker = raw_device(&sfu, &mallory.credentials()).await;
    let withheld = loop {
        let bundle = fetch_one(&attacker, &victim).await;
        if bundle.prekey_rate_limited {
            break bundle;
        }
    };
    // Withheld, not exhausted: the last-resort prekey comes instead.
    assert!(!withheld.prekeys_exhausted);
    assert!(withheld.last_resort && withheld.prekey.is_some());
    assert!(withheld.prekey_retry_after_ms > 10_000);

    let started = Instant::now();
    let (_meeting, report) = a
        .client
        .start_meeting(&[victim.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    assert_eq!(report.invited, vec![(victim.id(), v.id())]);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    v.invitation().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the invite waited for the rate limit"
    );
}
