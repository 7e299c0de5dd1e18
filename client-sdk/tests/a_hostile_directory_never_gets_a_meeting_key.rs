//! Security review C1: the directory is part of the adversary. A hostile server that
//! rewrites directory answers (extra users, a fabricated user reusing a roster device's
//! id, a substituted device certificate) must never receive a meeting key, and the app
//! must be told. Each test runs a real SFU made hostile through its adversary hook and
//! checks every container that passed through it with the keys the server controls.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use conclave_sdk::client::{ClientEvent, MediaKind, RefusalReason};
use conclave_testkit::hostile::{Forged, rewrite_bundles, server_can_open, shared};
use conclave_testkit::prelude::*;

/// A directory answer to the key leader's rekey fetch leaves Bob's idle tablet out of
/// Bob's bundle and adds an unrequested user whose certificate reuses the tablet's
/// device id. The Rekey must not be sealed to the fabricated device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fabricated_user_reusing_a_roster_device_id_gets_no_rekey() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let mut a = alice.connect_with(unprepared(&sfu)).await;
    let mut phone = bob.connect(&sfu).await;
    let tablet = bob.connect(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    let tablet_id = tablet.id();
    tablet.client.close().await; // idle: offline, its invite waits in the mailbox

    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = phone.accept_next(&[MediaKind::Audio]).await;
    let meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"epoch 0", &mut meeting_b).await;
    assert_eq!(meeting_a.participants().len(), 4);

    let forged = shared(Forged::user("mallory-fabricated", Some(tablet_id)));
    let rule = forged.clone();
    let bob_id = *bob.id().as_bytes();
    rewrite_bundles(sfu.adversary(), a.id(), move |bundles| {
        for user in &mut bundles.users {
            if user.user_id == bob_id {
                user.devices.retain(|d| !certificate_names(d, &tablet_id));
            }
        }
        bundles.users.push(rule.lock().unwrap().user_bundle());
    });

    meeting_c.leave().await.unwrap();
    wait_epoch_above(&meeting_a, Epoch(0)).await;
    deliver(&meeting_a, MediaKind::Audio, b"epoch 1", &mut meeting_b).await;

    assert!(
        !server_can_open(sfu.adversary(), &forged, &[alice.identity]),
        "a container carrying a meeting key was sealed to a device the server controls"
    );
    a.wait_for(|e| {
        matches!(e, ClientEvent::DirectoryRefused(r)
            if r.reason == RefusalReason::NotRequested && r.device_id.is_none())
    })
    .await;
}

fn certificate_names(
    device: &conclave_proto::v1::DeviceBundle,
    id: &conclave_sdk::DeviceId,
) -> bool {
    use conclave_proto::Message as _;
    device
        .certificate
        .as_ref()
        .and_then(|c| conclave_proto::v1::DeviceCertificateBody::decode(c.body.as_slice()).ok())
        .is_some_and(|b| b.device_id == id.as_bytes())
}

/// Alice asks the directory for Bob; the answer also carries a user the server made
/// up. Only Bob is invited; the extra user is reported and gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_user_in_a_start_meeting_answer_is_not_invited() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ([alice, bob], [mut a, mut b]) = connect_users(&sfu, ["alice", "bob"]).await;
    let forged = shared(Forged::user("eve-injected", None));
    let rule = forged.clone();
    rewrite_bundles(sfu.adversary(), a.id(), move |bundles| {
        bundles.users.push(rule.lock().unwrap().user_bundle());
    });

    let (meeting_a, report) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    assert_eq!(report.invited, vec![(bob.id(), b.id())]);
    let eve = forged.lock().unwrap().user.user_id;
    assert!(
        report
            .refused
            .iter()
            .all(|r| r.user_id != eve || r.reason == RefusalReason::NotRequested)
    );
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"just us", &mut meeting_b).await;
    assert_eq!(meeting_a.participants().len(), 2);
    assert!(meeting_a.participants().iter().all(|p| p.user_id != eve));
    assert!(
        !server_can_open(sfu.adversary(), &forged, &[alice.identity, bob.identity]),
        "the invite was sealed to the injected user"
    );
    a.wait_for(|e| {
        matches!(e, ClientEvent::DirectoryRefused(r)
            if r.user_id == eve && r.reason == RefusalReason::NotRequested)
    })
    .await;
}

/// Between the invite and a rekey, the directory hands out a new certificate for
/// Bob's device: valid under Bob's own user key (say the server obtained a signature
/// from it) but with device keys the server holds. The leader seals only to the keys
/// pinned when the device joined, refuses the new certificate and tells the app. Here
/// the key leader wraps each Rekey when the participant leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_substituted_between_invite_and_rekey_is_refused() {
    substituted_certificate(false).await;
}

/// The same substitution, answered to the fetch with which the key leader prepares its
/// next Rekey while the meeting is steady (protocol 4.0, "Prepared Rekeys"): the
/// preparation refuses Bob's substituted certificate as the Rekey would, holds no
/// entry for him, and the Rekey that follows fetches for him again and refuses again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_substituted_in_the_preparations_fetch_is_refused() {
    substituted_certificate(true).await;
}

/// Alice leads a meeting with Bob and Carol; the directory substitutes Bob's device
/// certificate in every answer to Alice from then on; Carol leaves. With `prepared`,
/// Alice prepares her next Rekey first (under the substitution).
async fn substituted_certificate(prepared: bool) {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let config = if prepared {
        sfu.client_config()
    } else {
        unprepared(&sfu)
    };
    let mut a = alice.connect_with(config).await;
    let mut b = bob.connect(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"epoch 0", &mut meeting_b).await;

    // A certificate for Bob's device id, signed by Bob's real user key, with new keys.
    let mut substitute = Forged::device_of(bob.id(), Some(b.id()));
    substitute.device = conclave_sdk::identity::DeviceIdentity::create_with_id(
        &bob.key,
        bob.id(),
        b.id(),
        now(),
        conclave_sdk::time::DAY_MS,
        &mut rand_core::OsRng,
    )
    .unwrap();
    substitute.pool = conclave_sdk::identity::PrekeyPool::new(&substitute.device);
    let forged = shared(substitute);
    let rule = forged.clone();
    let bob_id = *bob.id().as_bytes();
    rewrite_bundles(sfu.adversary(), a.id(), move |bundles| {
        for user in &mut bundles.users {
            if user.user_id == bob_id {
                user.devices = vec![rule.lock().unwrap().device_bundle()];
            }
        }
    });
    let b_id = b.id();
    let refused = |e: &ClientEvent| {
        matches!(e, ClientEvent::DirectoryRefused(r)
            if r.device_id == Some(b_id) && r.reason == RefusalReason::DeviceKeysChanged)
    };
    if prepared {
        // The preparation's fetch is refused for Bob; Carol's entry is wrapped.
        a.wait_for(refused).await;
        tokio::time::timeout(WAIT, async {
            while meeting_a.prepared_rekey_devices() != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the preparation holds Carol's entry alone");
    }

    meeting_c.leave().await.unwrap();
    wait_epoch_above(&meeting_a, Epoch(0)).await;
    assert!(
        !server_can_open(sfu.adversary(), &forged, &[alice.identity]),
        "the rekey was sealed to the substituted device keys"
    );
    a.wait_for(refused).await;
}

/// The client configuration for `sfu` with Rekeys wrapped at the departure, so that
/// the Rekey's own directory fetch is the one a test rewrites.
fn unprepared(sfu: &TestSfu) -> conclave_sdk::client::ClientConfig {
    let mut config = sfu.client_config();
    config.prepare_rekeys_after = None;
    config
}
