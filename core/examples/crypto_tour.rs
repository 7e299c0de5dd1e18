//! A tour of the Conclave crypto core, end to end, with no network:
//! Alice invites Bob and Carol (two devices) to a meeting, everyone opens the invite,
//! exchanges SFrame-encrypted media, and compares safety codes. Then Alice removes
//! Carol and rekeys; Carol can no longer decrypt.
//!
//! Run: `cargo run -p conclave-core --example crypto_tour`
#![allow(clippy::print_stdout)]

use std::time::{SystemTime, UNIX_EPOCH};

use conclave_core::container::{self, Recipient, ReplayCache, SealedContainer};
use conclave_core::identity::{
    DEFAULT_PREKEY_TTL_MS, DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey,
    VerifiedDevice, VerifiedPrekey,
};
use conclave_core::meeting::{Epoch, MeetingId, MeetingKey, SFRAME_SUITE};
use conclave_core::safety::{RosterIdentity, SafetyCode};
use conclave_core::sframe::SframeReceiver;
use conclave_core::time::DAY_MS;
use conclave_core::{UnixMillis, UserId};
use conclave_proto::v1::{self, container_payload::Body};
use rand_core::OsRng;

/// One participant: a user with one device, its prekeys and its replay cache.
struct Participant {
    identity: UserIdentity,
    device: DeviceIdentity,
    prekeys: PrekeyPool,
    published: Vec<v1::SignedPrekey>,
    replay: ReplayCache,
    sender_index: u32,
}

impl Participant {
    fn new(name: &'static str, sender_index: u32, now: UnixMillis) -> anyhow::Result<Self> {
        let user_key = UserSigningKey::generate(&mut OsRng);
        let identity = UserIdentity {
            user_id: UserId::from_username(name)?,
            key: user_key.public_key(),
        };
        let device =
            DeviceIdentity::create(&user_key, identity.user_id, now, 365 * DAY_MS, &mut OsRng)?;
        let mut prekeys = PrekeyPool::new(&device);
        let published = prekeys.generate(&device, 10, now, DEFAULT_PREKEY_TTL_MS, &mut OsRng)?;
        Ok(Participant {
            identity,
            device,
            prekeys,
            published,
            replay: ReplayCache::default(),
            sender_index,
        })
    }

    /// What a sender does with a directory bundle: verify certificate and prekey.
    fn as_recipient(&mut self, now: UnixMillis) -> anyhow::Result<Recipient> {
        let device = VerifiedDevice::verify(self.device.certificate(), &self.identity, now)?;
        let prekey = VerifiedPrekey::verify(&self.published.remove(0), &device, now)?;
        Ok(Recipient::new(device, prekey)?)
    }

    fn roster_entry(&self) -> v1::RosterEntry {
        v1::RosterEntry {
            user_id: self.identity.user_id.as_bytes().to_vec(),
            device_id: self.device.device_id().as_bytes().to_vec(),
            sender_index: self.sender_index,
            identity_key: self.identity.key.to_bytes().to_vec(),
            certificate: Some(self.device.certificate().clone()),
        }
    }

    fn open_key(
        &mut self,
        bytes: &[u8],
        from: &UserIdentity,
        now: UnixMillis,
    ) -> anyhow::Result<MeetingKey> {
        let opened = SealedContainer::decode(bytes)?.open(
            from,
            &self.device,
            &mut self.prekeys,
            &mut self.replay,
            now,
        )?;
        match &opened.payload().body {
            Some(Body::MeetingInvite(i)) => {
                Ok(MeetingKey::from_slice(Epoch(i.epoch), &i.meeting_key)?)
            }
            Some(Body::Rekey(r)) => Ok(MeetingKey::from_slice(Epoch(r.epoch), &r.meeting_key)?),
            _ => anyhow::bail!("expected a meeting key payload"),
        }
    }
}

fn receiver_for(key: &MeetingKey, senders: &[&Participant]) -> anyhow::Result<SframeReceiver> {
    let mut rx = SframeReceiver::new();
    for p in senders {
        rx.add_key(
            key.sframe_kid(p.sender_index)?,
            SFRAME_SUITE,
            key.sframe_base_key(p.sender_index).as_slice(),
        )?;
    }
    Ok(rx)
}

fn safety_code(id: &MeetingId, key: &MeetingKey, roster: &[&Participant]) -> SafetyCode {
    let identities: Vec<RosterIdentity> = roster
        .iter()
        .map(|p| {
            RosterIdentity::new(
                &p.identity.key.to_bytes(),
                p.device.public(),
                p.sender_index,
            )
        })
        .collect();
    SafetyCode::compute(
        id.as_bytes(),
        key.epoch(),
        &key.commitment(id).0,
        &identities,
    )
}

fn main() -> anyhow::Result<()> {
    let now = UnixMillis(u64::try_from(
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
    )?);
    let alice = Participant::new("alice", 0, now)?;
    let mut bob = Participant::new("bob", 1, now)?;
    let mut carol = Participant::new("carol", 2, now)?;

    // Alice starts a meeting: meeting id, routing id, epoch-0 key.
    let meeting_id = MeetingId::generate(
        &alice.identity.user_id,
        &alice.device.device_id(),
        now,
        3,
        &mut OsRng,
    );
    let key0 = MeetingKey::generate(Epoch(0), &mut OsRng);
    println!(
        "meeting {meeting_id:?} → SFU routing id {:?}",
        meeting_id.routing_id()
    );

    let invite = v1::ContainerPayload {
        body: Some(Body::MeetingInvite(v1::MeetingInvite {
            meeting_id: meeting_id.as_bytes().to_vec(),
            epoch: key0.epoch().get(),
            meeting_key: key0.expose_secret().to_vec(),
            media_kinds: vec![v1::MediaKind::Audio.into(), v1::MediaKind::Video.into()],
            roster: vec![
                alice.roster_entry(),
                bob.roster_entry(),
                carol.roster_entry(),
            ],
            key_leader_device_id: alice.device.device_id().as_bytes().to_vec(),
            expires_at_ms: now.saturating_add(DAY_MS).0,
            // "Alice is calling": sealed with the key, so only the invitees read it.
            caller: Some(v1::CallerProfile {
                display_name: "Alice".into(),
                avatar: String::new(),
            }),
        })),
        ..Default::default()
    };
    let recipients = [bob.as_recipient(now)?, carol.as_recipient(now)?];
    let mut invite = invite;
    let sealed = container::seal(&alice.device, &recipients, &invite, now, DAY_MS, &mut OsRng)?;
    container::zeroize_payload_secrets(&mut invite); // the key now lives only in `key0`
    println!(
        "invite container: {} bytes for {} devices",
        sealed.len(),
        recipients.len()
    );

    let bob_key = bob.open_key(&sealed, &alice.identity, now)?;
    let carol_key = carol.open_key(&sealed, &alice.identity, now)?;
    assert!(bob_key == key0 && carol_key == key0);

    // Safety codes: everyone computes the same words and number.
    let roster = [&alice, &bob, &carol];
    let codes = [
        safety_code(&meeting_id, &key0, &roster),
        safety_code(&meeting_id, &bob_key, &roster),
        safety_code(&meeting_id, &carol_key, &roster),
    ];
    assert!(codes.iter().all(|c| c == &codes[0]));
    println!("safety code (all three agree): {}", codes[0]);

    // Media: Alice sends an SFrame-encrypted audio frame; Bob and Carol decrypt it.
    let mut alice_tx = key0.sframe_sender(alice.sender_index)?;
    let frame = alice_tx.encrypt(b"", b"20 ms of opus audio")?;
    let mut bob_rx = receiver_for(&bob_key, &[&alice, &carol])?;
    let mut carol_rx = receiver_for(&carol_key, &[&alice, &bob])?;
    println!(
        "epoch 0 frame ({} bytes): bob reads {:?}, carol reads {:?}",
        frame.len(),
        String::from_utf8_lossy(&bob_rx.decrypt(b"", &frame)?.plaintext),
        String::from_utf8_lossy(&carol_rx.decrypt(b"", &frame)?.plaintext),
    );

    // Alice removes Carol: a fresh epoch-1 key goes to Bob only.
    let key1 = MeetingKey::generate(Epoch(1), &mut OsRng);
    let rekey = v1::ContainerPayload {
        body: Some(Body::Rekey(v1::Rekey {
            meeting_id: meeting_id.as_bytes().to_vec(),
            epoch: key1.epoch().get(),
            meeting_key: key1.expose_secret().to_vec(),
            roster: vec![alice.roster_entry(), bob.roster_entry()],
            key_leader_device_id: alice.device.device_id().as_bytes().to_vec(),
            reason: v1::RekeyReason::Remove.into(),
        })),
        ..Default::default()
    };
    let sealed = container::seal(
        &alice.device,
        &[bob.as_recipient(now)?],
        &rekey,
        now,
        DAY_MS,
        &mut OsRng,
    )?;
    let bob_key1 = bob.open_key(&sealed, &alice.identity, now)?;
    match carol.open_key(&sealed, &alice.identity, now) {
        Err(e) => println!("carol cannot open the rekey: {e}"),
        Ok(_) => anyhow::bail!("carol must not receive the new key"),
    }
    let mut alice_tx = key1.sframe_sender(alice.sender_index)?;
    let frame = alice_tx.encrypt(b"", b"after the removal")?;
    bob_rx.add_key(
        bob_key1.sframe_kid(0)?,
        SFRAME_SUITE,
        bob_key1.sframe_base_key(0).as_slice(),
    )?;
    println!(
        "epoch 1 frame: bob reads {:?}; carol gets: {}",
        String::from_utf8_lossy(&bob_rx.decrypt(b"", &frame)?.plaintext),
        carol_rx
            .decrypt(b"", &frame)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    );
    println!(
        "new safety code for alice and bob: {}",
        safety_code(&meeting_id, &bob_key1, &[&alice, &bob])
    );
    Ok(())
}
