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

    /// Carol's device as a roster lists it (with the certificate the directory holds).
    fn carol_entry(&self, index: u32) -> v1::RosterEntry {
        entry(&self.carol, &self.c, certificate(&self.sfu, &self.c), index)
    }

    /// An invitation from Mallory to the victim for meeting `meeting_id`; its roster
    /// also lists Carol's device if `with_carol`.
    fn invitation(&self, meeting_id: Vec<u8>, with_carol: bool) -> v1::ContainerPayload {
        let mut roster = vec![
            entry(&self.mallory, &self.m, self.copy.certificate().clone(), 0),
            entry(&self.victim, &self.v, certificate(&self.sfu, &self.v), 1),
        ];
        if with_carol {
            roster.push(self.carol_entry(2));
        }
        v1::ContainerPayload {
            body: Some(Body::MeetingInvite(v1::MeetingInvite {
                meeting_id,
                epoch: 0,
                meeting_key: random32(),
                media_kinds: vec![v1::MediaKind::Audio as i32],
                roster,
                key_leader_device_id: self.m.id().as_bytes().to_vec(),
                expires_at_ms: now().0 + 3_600_000,
                caller: None,
            })),
            ..Default::default()
        }
    }

    /// Seals `payload` from Mallory's device to the victim's and delivers it.
    fn mallory_sends(&self, payload: &v1::ContainerPayload) {
        deliver_forged(&self.sfu, &self.copy, &self.victim, self.v.id(), payload);
    }

    /// Mallory invites the victim to a new meeting whose roster lists Carol too.
    fn invite_with_carol(&self) {
        self.mallory_sends(&self.invitation(random32(), true));
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
async fn a_stranger_cannot_make_a_device_pin_users_it_never_met() {
    let mut cast = Cast::start().await;

    // Mallory claims Carol's device joined some meeting of hers.
    cast.mallory_sends(&v1::ContainerPayload {
        body: Some(Body::EpochSwitch(v1::EpochSwitch {
            meeting_id: random32(),
            epoch: 2,
            joined: vec![cast.carol_entry(2)],
        })),
        ..Default::default()
    });
    // Then an invitation of her own, which the victim shows: containers are processed
    // in order, so by then the switch was handled.
    cast.invite_with_carol();

    let (_, pinned) = next_invitation(&mut cast.v).await;
    assert!(
        !pinned.contains(&cast.carol.id()),
        "the victim pinned Carol, whom it never asked about"
    );
    assert!(
        pinned.contains(&cast.mallory.id()),
        "the sender is looked up to open its containers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_pins_its_roster_only_when_accepted() {
    let mut cast = Cast::start().await;
    let carol = cast.carol.id();

    // Refused: Carol's key was checked, not pinned.
    cast.invite_with_carol();
    let (invitation, pinned) = next_invitation(&mut cast.v).await;
    assert!(!pinned.contains(&carol), "pinned Carol on arrival");
    assert_eq!(invitation.participants.len(), 3);
    tokio::time::timeout(WAIT, cast.v.client.reject(&invitation))
        .await
        .expect("the client answers")
        .unwrap();
    assert!(!pinned_users(&cast.v).await.contains(&carol));

    // Accepted: now Carol is pinned, and the app is told.
    cast.invite_with_carol();
    let (invitation, pinned) = next_invitation(&mut cast.v).await;
    assert!(!pinned.contains(&carol), "pinned Carol on arrival");
    let _meeting =
        tokio::time::timeout(WAIT, cast.v.client.accept(&invitation, &[MediaKind::Audio]))
            .await
            .expect("the client answers")
            .unwrap();
    let told = cast
        .v
        .wait_for(|e| matches!(e, ClientEvent::UserPinned(u) if u.user_id == carol))
        .await;
    assert!(matches!(told, ClientEvent::UserPinned(_)));
    assert!(pinned_users(&cast.v).await.contains(&carol));
}

/// The inviter itself (the key leader of the invitation) adds Carol to the meeting
/// while the invitation still rings: Carol is checked, and pinned only on accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inviters_joiners_are_pinned_only_when_the_invitation_is_accepted() {
    let mut cast = Cast::start().await;
    let carol = cast.carol.id();
    let meeting_id = random32();
    cast.mallory_sends(&cast.invitation(meeting_id.clone(), false));
    let (invitation, _) = next_invitation(&mut cast.v).await;
    cast.mallory_sends(&v1::ContainerPayload {
        body: Some(Body::EpochSwitch(v1::EpochSwitch {
            meeting_id,
            epoch: 1,
            joined: vec![cast.carol_entry(2)],
        })),
        ..Default::default()
    });
    // A second invitation marks the point where the switch was handled.
    cast.invite_with_carol();
    let (_, pinned) = next_invitation(&mut cast.v).await;
    assert!(!pinned.contains(&carol), "pinned Carol before accepting");
    assert!(!pinned_users(&cast.v).await.contains(&carol));

    tokio::time::timeout(WAIT, cast.v.client.accept(&invitation, &[MediaKind::Audio]))
        .await
        .expect("the client answers")
        .unwrap();
    assert!(
        pinned_users(&cast.v).await.contains(&carol),
        "Carol joined the accepted meeting: pinned now"
    );
}

/// A container that claims to come from Carol but was sealed by a device she never
/// certified does not open, and pins nobody. Before, the claimed sender was looked up
/// and pinned before the container was opened, so anyone who could deliver a container
/// made the device pin any existing user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_does_not_open_pins_nobody() {
    let mut cast = Cast::start().await;
    let carol = cast.carol.id();
    let fake_carol = Forged::device_of(carol, None);
    let leave = v1::ContainerPayload {
        body: Some(Body::Leave(v1::Leave {
            meeting_id: random32(),
            epoch: 1,
        })),
        ..Default::default()
    };
    deliver_sealed_by(
        &cast.sfu,
        &fake_carol.device,
        &cast.victim,
        cast.v.id(),
        &leave,
    );
    cast.invite_with_carol();
    let (_, pinned) = next_invitation(&mut cast.v).await;
    assert!(
        !pinned.contains(&carol),
        "a container claiming Carol that did not open pinned her"
    );
    assert!(!pinned_users(&cast.v).await.contains(&carol));
}

/// Between an invitation's arrival (Carol's key checked against the directory's
/// answer, not pinned) and its acceptance, the directory answers an explicit lookup of
/// Carol with another key, which the device pins (trust on first use). Accepting then
/// fails with `RosterKeyChanged` and leaves the invitation pending, to be rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_pinned_to_another_key_meanwhile_stops_the_accept() {
    let mut cast = Cast::start().await;
    let carol = cast.carol.id();
    cast.invite_with_carol();
    let (invitation, _) = next_invitation(&mut cast.v).await;

    // From now on the directory names Carol under a key it made up.
    let fake_carol = shared(Forged::device_of(carol, None));
    let carol_id = *carol.as_bytes();
    rewrite_bundles(cast.sfu.adversary(), cast.v.id(), move |bundles| {
        for user in &mut bundles.users {
            if user.user_id == carol_id {
                *user = fake_carol.lock().unwrap().user_bundle();
            }
        }
    });
    let v = &cast.v;
    // The app calls Carol: the directory's answer is pinned.
    let _ = tokio::time::timeout(WAIT, v.client.start_meeting(&[carol], &[MediaKind::Audio]))
        .await
        .expect("the client answers");
    assert!(pinned_users(v).await.contains(&carol));

    let refused = tokio::time::timeout(WAIT, v.client.accept(&invitation, &[MediaKind::Audio]))
        .await
        .expect("the client answers");
    match refused {
        Err(ClientError::RosterKeyChanged(user)) => assert_eq!(user, carol),
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
