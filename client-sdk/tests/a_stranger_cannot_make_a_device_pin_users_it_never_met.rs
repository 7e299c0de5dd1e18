//! Any user who can send a device a container (through an honest or a hostile server)
//! sends it an `EpochSwitch` that claims other users' devices joined a meeting the
//! device is not in. Before, the device looked those users up in the directory and
//! pinned their keys (trust on first use, `ClientEvent::UserPinned`, which apps
//! persist) before anything checked the meeting: a stranger could fill the device's
//! trust store, and a hostile directory could plant keys for users the device had
//! not asked about (review C1 pins users only on explicit lookups). Now only the key
//! leader of a meeting the device is in, or invited to, gets its joiners looked up.
//!
//! The same holds for an invitation's roster: its users are looked up and checked
//! when the invitation arrives, but pinned only if it is accepted, so invitations that
//! are refused or left to ring out leave the trust store as it was.

#![allow(clippy::unwrap_used, clippy::panic)]

use conclave_proto::Message as _;
use conclave_proto::v1::{self, container_payload::Body};
use conclave_sdk::UserId;
use conclave_sdk::client::{ClientError, ClientEvent, DeviceCredentials, Invitation, MediaKind};
use conclave_testkit::hostile::{
    Forged, deliver_forged, deliver_sealed_by, rewrite_bundles, shared,
};
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

/// A hostile server, Mallory (whose credentials the test keeps, to seal containers in
/// her name), her victim and Carol, all connected.
struct Cast {
    sfu: TestSfu,
    mallory: User,
    victim: User,
    carol: User,
    m: Device,
    copy: DeviceCredentials,
    v: Device,
    c: Device,
}

impl Cast {
    async fn start() -> Self {
        let sfu = TestSfu::start_hostile(client_test_config()).await;
        let (mallory, victim, carol) = (
            User::new("mallory"),
            User::new("victim"),
            User::new("carol"),
        );
        let c = carol.connect(&sfu).await;
        let v = victim.connect(&sfu).await;
        let (m, copy) = mallory.connect_keeping_a_copy(&sfu).await;
        Cast {
            sfu,
            mallory,
            victim,
            carol,
            m,
            copy,
            v,
            c,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_make_a_device_pin_users_it_never_met() {
    let Cast {
        sfu,
        mallory,
        victim,
        carol,
        m,
        copy,
        mut v,
        c,
    } = Cast::start().await;

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
    let invite = invitation_with_carol(&sfu, &copy, (&mallory, &m), (&victim, &v), (&carol, &c));
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

/// An invitation from `m` (Mallory, sealed with her credentials `copy`) to the victim
/// `v`, whose roster also lists Carol's device `c`.
fn invitation_with_carol(
    sfu: &TestSfu,
    copy: &DeviceCredentials,
    (mallory, m): (&User, &Device),
    (victim, v): (&User, &Device),
    (carol, c): (&User, &Device),
) -> v1::ContainerPayload {
    v1::ContainerPayload {
        body: Some(Body::MeetingInvite(v1::MeetingInvite {
            meeting_id: random32(),
            epoch: 0,
            meeting_key: random32(),
            media_kinds: vec![v1::MediaKind::Audio as i32],
            roster: vec![
                entry(mallory, m, copy.certificate().clone(), 0),
                entry(victim, v, certificate(sfu, v), 1),
                entry(carol, c, certificate(sfu, c), 2),
            ],
            key_leader_device_id: m.id().as_bytes().to_vec(),
            expires_at_ms: now().0 + 3_600_000,
            caller: None,
        })),
        ..Default::default()
    }
}

/// The next invitation `device` is shown, and the users it pinned before it.
async fn next_invitation(device: &mut Device) -> (Invitation, Vec<UserId>) {
    let mut pinned = Vec::new();
    loop {
        match device
            .wait_for(|e| matches!(e, ClientEvent::Invited(_) | ClientEvent::UserPinned(_)))
            .await
        {
            ClientEvent::UserPinned(user) => pinned.push(user.user_id),
            ClientEvent::Invited(invitation) => return (invitation, pinned),
            _ => unreachable!("picked an invitation or a pin"),
        }
    }
}

async fn pinned_users(device: &Device) -> Vec<UserId> {
    let pinned = tokio::time::timeout(WAIT, device.client.pinned_users())
        .await
        .expect("the client answers")
        .unwrap();
    pinned.into_iter().map(|u| u.user_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_pins_its_roster_only_when_accepted() {
    let Cast {
        sfu,
        mallory,
        victim,
        carol,
        m,
        copy,
        mut v,
        c,
    } = Cast::start().await;

    // Refused: Carol's key was checked, not pinned.
    let first = invitation_with_carol(&sfu, &copy, (&mallory, &m), (&victim, &v), (&carol, &c));
    deliver_forged(&sfu, &copy, &victim, v.id(), &first);
    let (invitation, pinned) = next_invitation(&mut v).await;
    assert!(!pinned.contains(&carol.id()), "pinned Carol on arrival");
    assert_eq!(invitation.participants.len(), 3);
    tokio::time::timeout(WAIT, v.client.reject(&invitation))
        .await
        .expect("the client answers")
        .unwrap();
    assert!(!pinned_users(&v).await.contains(&carol.id()));

    // Accepted: now Carol is pinned, and the app is told.
    let second = invitation_with_carol(&sfu, &copy, (&mallory, &m), (&victim, &v), (&carol, &c));
    deliver_forged(&sfu, &copy, &victim, v.id(), &second);
    let (invitation, pinned) = next_invitation(&mut v).await;
    assert!(!pinned.contains(&carol.id()), "pinned Carol on arrival");
    let _meeting = tokio::time::timeout(WAIT, v.client.accept(&invitation, &[MediaKind::Audio]))
        .await
        .expect("the client answers")
        .unwrap();
    let told = v
        .wait_for(|e| matches!(e, ClientEvent::UserPinned(u) if u.user_id == carol.id()))
        .await;
    assert!(matches!(told, ClientEvent::UserPinned(_)));
    assert!(pinned_users(&v).await.contains(&carol.id()));
}

/// The inviter itself (the key leader of the invitation) adds Carol to the meeting
/// while the invitation still rings: Carol is checked, and pinned only on accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inviters_joiners_are_pinned_only_when_the_invitation_is_accepted() {
    let Cast {
        sfu,
        mallory,
        victim,
        carol,
        m,
        copy,
        mut v,
        c,
    } = Cast::start().await;
    let meeting_id = random32();
    let invite = v1::ContainerPayload {
        body: Some(Body::MeetingInvite(v1::MeetingInvite {
            meeting_id: meeting_id.clone(),
            epoch: 0,
            meeting_key: random32(),
            media_kinds: vec![v1::MediaKind::Audio as i32],
            roster: vec![
                entry(&mallory, &m, copy.certificate().clone(), 0),
                entry(&victim, &v, certificate(&sfu, &v), 1),
            ],
            key_leader_device_id: m.id().as_bytes().to_vec(),
            expires_at_ms: now().0 + 3_600_000,
            caller: None,
        })),
        ..Default::default()
    };
    deliver_forged(&sfu, &copy, &victim, v.id(), &invite);
    let (invitation, _) = next_invitation(&mut v).await;
    let switch = v1::ContainerPayload {
        body: Some(Body::EpochSwitch(v1::EpochSwitch {
            meeting_id,
            epoch: 1,
            joined: vec![entry(&carol, &c, certificate(&sfu, &c), 2)],
        })),
        ..Default::default()
    };
    deliver_forged(&sfu, &copy, &victim, v.id(), &switch);
    // A second invitation marks the point where the switch was handled.
    let marker = invitation_with_carol(&sfu, &copy, (&mallory, &m), (&victim, &v), (&carol, &c));
    deliver_forged(&sfu, &copy, &victim, v.id(), &marker);
    let (_, pinned) = next_invitation(&mut v).await;
    assert!(
        !pinned.contains(&carol.id()),
        "pinned Carol before accepting"
    );
    assert!(!pinned_users(&v).await.contains(&carol.id()));

    tokio::time::timeout(WAIT, v.client.accept(&invitation, &[MediaKind::Audio]))
        .await
        .expect("the client answers")
        .unwrap();
    assert!(
        pinned_users(&v).await.contains(&carol.id()),
        "Carol joined the accepted meeting: pinned now"
    );
}

/// A container that claims to come from Carol but was sealed by a device she never
/// certified does not open, and pins nobody. Before, the claimed sender was looked up
/// and pinned before the container was opened, so anyone who could deliver a container
/// made the device pin any existing user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_does_not_open_pins_nobody() {
    let Cast {
        sfu,
        mallory,
        victim,
        carol,
        m,
        copy,
        mut v,
        c,
    } = Cast::start().await;
    let fake_carol = Forged::device_of(carol.id(), None);
    let leave = v1::ContainerPayload {
        body: Some(Body::Leave(v1::Leave {
            meeting_id: random32(),
            epoch: 1,
        })),
        ..Default::default()
    };
    deliver_sealed_by(&sfu, &fake_carol.device, &victim, v.id(), &leave);
    let marker = invitation_with_carol(&sfu, &copy, (&mallory, &m), (&victim, &v), (&carol, &c));
    deliver_forged(&sfu, &copy, &victim, v.id(), &marker);
    let (_, pinned) = next_invitation(&mut v).await;
    assert!(
        !pinned.contains(&carol.id()),
        "a container claiming Carol that did not open pinned her"
    );
    assert!(!pinned_users(&v).await.contains(&carol.id()));
}

/// Between an invitation's arrival (Carol's key checked against the directory's
/// answer, not pinned) and its acceptance, the directory answers an explicit lookup of
/// Carol with another key, which the device pins (trust on first use). Accepting then
/// fails with `RosterKeyChanged` and leaves the invitation pending, to be rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_pinned_to_another_key_meanwhile_stops_the_accept() {
    let Cast {
        sfu,
        mallory,
        victim,
        carol,
        m,
        copy,
        mut v,
        c,
    } = Cast::start().await;
    let invite = invitation_with_carol(&sfu, &copy, (&mallory, &m), (&victim, &v), (&carol, &c));
    deliver_forged(&sfu, &copy, &victim, v.id(), &invite);
    let (invitation, _) = next_invitation(&mut v).await;

    // From now on the directory names Carol under a key it made up.
    let fake_carol = shared(Forged::device_of(carol.id(), None));
    let carol_id = *carol.id().as_bytes();
    rewrite_bundles(sfu.adversary(), v.id(), move |bundles| {
        for user in &mut bundles.users {
            if user.user_id == carol_id {
                *user = fake_carol.lock().unwrap().user_bundle();
            }
        }
    });
    // The app calls Carol: the directory's answer is pinned.
    let _ = tokio::time::timeout(
        WAIT,
        v.client.start_meeting(&[carol.id()], &[MediaKind::Audio]),
    )
    .await
    .expect("the client answers");
    assert!(pinned_users(&v).await.contains(&carol.id()));

    let refused = tokio::time::timeout(WAIT, v.client.accept(&invitation, &[MediaKind::Audio]))
        .await
        .expect("the client answers");
    match refused {
        Err(ClientError::RosterKeyChanged(user)) => assert_eq!(user, carol.id()),
        other => panic!(
            "accepted despite Carol's changed key: {:?}",
            other.map(|_| ())
        ),
    }
    // Still pending: it can be rejected.
    tokio::time::timeout(WAIT, v.client.reject(&invitation))
        .await
        .expect("the client answers")
        .unwrap();
}
