//! Any user who can send a device a container (through an honest or a hostile server)
//! sends it an `EpochSwitch` that claims other users' devices joined a meeting the
//! device is not in. Before, the device looked those users up in the directory and
//! pinned their keys (trust on first use, `ClientEvent::UserPinned`, which apps
//! persist) before anything checked the meeting: a stranger could fill the device's
//! trust store, and a hostile directory could plant keys for users the device had
//! not asked about (review C1 pins users only on explicit lookups). Now only the key
//! leader of a meeting the device is in, or invited to, gets its joiners looked up.

#![allow(clippy::unwrap_used)]

use conclave_proto::Message as _;
use conclave_proto::v1::{self, container_payload::Body};
use conclave_sdk::client::{ClientEvent, DeviceCredentials};
use conclave_testkit::hostile::deliver_forged;
use conclave_testkit::prelude::*;
use rand_core::{OsRng, RngCore};

fn random32() -> Vec<u8> {
    let mut b = vec![0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

/// `device`'s certificate as the directory holds it.
fn certificate(sfu: &TestSfu, device: &Device) -> v1::DeviceCertificate {
    let record = sfu.store.device(device.id().as_bytes()).unwrap().unwrap();
    v1::DeviceCertificate::decode(record.certificate.as_slice()).unwrap()
}

fn entry(user: &User, device: &Device, cert: v1::DeviceCertificate, index: u32) -> v1::RosterEntry {
    v1::RosterEntry {
        user_id: user.id().as_bytes().to_vec(),
        device_id: device.id().as_bytes().to_vec(),
        sender_index: index,
        identity_key: user.key.public_key().to_bytes().to_vec(),
        certificate: Some(cert),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_make_a_device_pin_users_it_never_met() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (mallory, victim, carol) = (
        User::new("mallory"),
        User::new("victim"),
        User::new("carol"),
    );
    let c = carol.connect(&sfu).await;
    let mut v = victim.connect(&sfu).await;
    let creds = mallory.credentials();
    let copy = DeviceCredentials::restore(
        &mallory.name,
        creds.user_public_key(),
        creds.certificate(),
        &creds.export_secrets(),
        now(),
    )
    .unwrap();
    let m = mallory.connect_credentials(&sfu, creds).await;

    // Mallory claims Carol's device joined some meeting of hers.
    let switch = v1::ContainerPayload {
        body: Some(Body::EpochSwitch(v1::EpochSwitch {
            meeting_id: random32(),
            epoch: 2,
            joined: vec![entry(&carol, &c, certificate(&sfu, &c), 2)],
        })),
        ..Default::default()
    };
    deliver_forged(&sfu, &copy, &victim, v.id(), &switch);
    // Then an invitation of her own, which the victim shows: containers are processed
    // in order, so by then the switch was handled.
    let mallory_cert = copy.certificate().clone();
    let invite = v1::ContainerPayload {
        body: Some(Body::MeetingInvite(v1::MeetingInvite {
            meeting_id: random32(),
            epoch: 0,
            meeting_key: random32(),
            media_kinds: vec![v1::MediaKind::Audio as i32],
            roster: vec![
                entry(&mallory, &m, mallory_cert, 0),
                entry(&victim, &v, certificate(&sfu, &v), 1),
            ],
            key_leader_device_id: m.id().as_bytes().to_vec(),
            expires_at_ms: now().0 + 3_600_000,
            caller: None,
        })),
        ..Default::default()
    };
    deliver_forged(&sfu, &copy, &victim, v.id(), &invite);

    let mut pinned = Vec::new();
    while let ClientEvent::UserPinned(user) = v
        .wait_for(|e| matches!(e, ClientEvent::Invited(_) | ClientEvent::UserPinned(_)))
        .await
    {
        pinned.push(user.user_id);
    }
    assert!(
        !pinned.contains(&carol.id()),
        "the victim pinned Carol, whom it never asked about"
    );
    assert!(
        pinned.contains(&mallory.id()),
        "the sender is looked up to open its containers"
    );
}
