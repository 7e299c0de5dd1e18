//! Security review H1: a meeting roster binds user ids to device ids, and that binding
//! must be proven by the user's key. Mallory, a registered user, invites a victim to a
//! meeting whose roster lists her own device under the CEO's user id and identity key.
//! The victim must refuse the invitation with a clear reason, never show "invited by
//! the CEO". The forged container reaches the victim through a real, hostile SFU.

#![allow(clippy::unwrap_used)]

use conclave_proto::Message as _;
use conclave_proto::v1::{self, container_payload::Body};
use conclave_sdk::UserId;
use conclave_sdk::client::ClientEvent;
use conclave_testkit::hostile::deliver_forged;
use conclave_testkit::prelude::*;
use rand_core::{OsRng, RngCore};

fn random32() -> Vec<u8> {
    let mut b = vec![0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_listing_her_device_under_another_users_id_is_refused() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (ceo, mallory, victim) = (User::new("ceo"), User::new("mallory"), User::new("victim"));
    let _c = ceo.connect(&sfu).await;
    let mut v = victim.connect(&sfu).await;
    let (m, copy) = mallory.connect_keeping_a_copy(&sfu).await;

    let roster = vec![
        v1::RosterEntry {
            user_id: ceo.id().as_bytes().to_vec(),
            device_id: m.id().as_bytes().to_vec(),
            sender_index: 0,
            identity_key: ceo.key.public_key().to_bytes().to_vec(),
            certificate: Some(copy.certificate().clone()),
        },
        v1::RosterEntry {
            user_id: victim.id().as_bytes().to_vec(),
            device_id: v.id().as_bytes().to_vec(),
            sender_index: 1,
            identity_key: victim.key.public_key().to_bytes().to_vec(),
            certificate: Some(v_certificate(&sfu, &v)),
        },
    ];
    let invite = v1::ContainerPayload {
        body: Some(Body::MeetingInvite(v1::MeetingInvite {
            meeting_id: random32(),
            epoch: 0,
            meeting_key: random32(),
            media_kinds: vec![v1::MediaKind::Audio as i32],
            roster,
            key_leader_device_id: m.id().as_bytes().to_vec(),
            expires_at_ms: now().0 + 3_600_000,
            caller: None,
        })),
        ..Default::default()
    };
    deliver_forged(&sfu, &copy, &victim, v.id(), &invite);

    let event = v
        .wait_for(|e| {
            matches!(
                e,
                ClientEvent::Invited(_) | ClientEvent::MessageRefused { .. }
            )
        })
        .await;
    match event {
        ClientEvent::MessageRefused {
            claimed_sender,
            reason,
        } => {
            assert_eq!(
                claimed_sender,
                Some(UserId::from_username("mallory").unwrap())
            );
            assert!(
                reason.is_roster_problem(),
                "the reason names the roster problem: {reason}"
            );
        }
        other => panic!("the victim was shown a forged invitation: {other:?}"),
    }
}

fn v_certificate(sfu: &TestSfu, device: &Device) -> v1::DeviceCertificate {
    let record = sfu.store.device(device.id().as_bytes()).unwrap().unwrap();
    v1::DeviceCertificate::decode(record.certificate.as_slice()).unwrap()
}
