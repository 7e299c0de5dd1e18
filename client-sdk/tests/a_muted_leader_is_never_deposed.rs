//! Security review M2: Bob, next in line after the key leader Alice, sends Carol an
//! "early" Rekey that leaves Alice out and names Bob leader. Alice is muted (sends no
//! media) but stays in the room. Carol must hold Bob's Rekey and never apply it: a
//! leader's liveness is its presence in the room, not its media, and an early Rekey is
//! no evidence against it. (Before, Carol started Alice's drop timer on the early Rekey
//! and deposed her after the drop window of silence.)

#![allow(clippy::unwrap_used)]

use conclave_proto::Message as _;
use conclave_proto::v1::{self, container_payload::Body};
use conclave_sdk::client::MediaKind;
use conclave_testkit::hostile::deliver_forged;
use conclave_testkit::prelude::*;
use rand_core::{OsRng, RngCore};

/// The roster entry of `device` of `user` at `index`, certificate from the directory.
fn entry(
    sfu: &TestSfu,
    user: &User,
    device: conclave_sdk::DeviceId,
    index: u32,
) -> v1::RosterEntry {
    let record = sfu.store.device(device.as_bytes()).unwrap().unwrap();
    v1::RosterEntry {
        user_id: user.id().as_bytes().to_vec(),
        device_id: device.as_bytes().to_vec(),
        sender_index: index,
        identity_key: user.key.public_key().to_bytes().to_vec(),
        certificate: Some(v1::DeviceCertificate::decode(record.certificate.as_slice()).unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_rekey_does_not_depose_a_muted_leader() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let a = alice.connect(&sfu).await;
    let (mut b, bob_copy) = bob.connect_keeping_a_copy(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let _meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    // Alice is heard once, then mutes.
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"hello, then silence",
        &mut meeting_c,
    )
    .await;
    let epoch = meeting_c.sending_epoch();
    let index = |d: conclave_sdk::DeviceId| {
        meeting_c
            .participants()
            .iter()
            .find(|p| p.device_id == d)
            .unwrap()
            .sender_index
    };
    let (bob_index, carol_index) = (index(b.id()), index(c.id()));

    let mut key = vec![0u8; 32];
    OsRng.fill_bytes(&mut key);
    let early = v1::ContainerPayload {
        body: Some(Body::Rekey(v1::Rekey {
            meeting_id: meeting_c.id().as_bytes().to_vec(),
            epoch: epoch.get() + 1,
            meeting_key: key,
            roster: vec![
                entry(&sfu, &bob, b.id(), bob_index),
                entry(&sfu, &carol, c.id(), carol_index),
            ],
            key_leader_device_id: b.id().as_bytes().to_vec(),
            reason: v1::RekeyReason::LeaderChange as i32,
        })),
        ..Default::default()
    };
    deliver_forged(&sfu, &bob_copy, &carol, c.id(), &early);

    // Three drop windows of silence from Alice, who stays in the room.
    tokio::time::sleep(3 * sfu.client_config().drop_after).await;
    let leader = meeting_c
        .participants()
        .into_iter()
        .find(|p| p.is_leader)
        .unwrap();
    assert_eq!(leader.device_id, a.id(), "the muted leader was deposed");
    assert_eq!(meeting_c.sending_epoch(), epoch);
    assert_eq!(meeting_c.participants().len(), 3);
}
