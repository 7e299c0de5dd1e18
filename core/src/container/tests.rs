//! Tests that try to break containers. Attackers come in two strengths: a network or
//! server attacker who can only alter bytes (caught by the signature), and a dishonest
//! sender who re-signs what it alters (caught by the inner layers).

use conclave_proto::Message;
use conclave_proto::v1::{self, container_payload::Body};
use ed25519_dalek::Signer;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

use super::seal::{SealSecrets, seal_with};
use super::*;
use crate::UserId;
use crate::identity::{
    DeviceIdentity, IdentityError, PrekeyPool, UserIdentity, UserSigningKey, VerifiedPrekey,
};
use crate::time::DAY_MS;

pub(super) const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
pub(super) const TTL: u64 = DAY_MS;

pub(super) struct Party {
    user_key: UserSigningKey,
    identity: UserIdentity,
    pub(super) device: DeviceIdentity,
    prekeys: PrekeyPool,
    published: Vec<v1::SignedPrekey>,
    replay: ReplayCache,
}

impl Party {
    pub(super) fn new(name: &str, rng: &mut ChaCha20Rng) -> Self {
        let user_key = UserSigningKey::generate(rng);
        let identity = UserIdentity {
            user_id: UserId::from_username(name).unwrap(),
            key: user_key.public_key(),
        };
        let device =
            DeviceIdentity::create(&user_key, identity.user_id, NOW, 30 * DAY_MS, rng).unwrap();
        let mut prekeys = PrekeyPool::new(&device);
        let published = prekeys.generate(&device, 4, NOW, 7 * DAY_MS, rng).unwrap();
        Party {
            user_key,
            identity,
            device,
            prekeys,
            published,
            replay: ReplayCache::default(),
        }
    }

    /// What a sender builds from the directory's bundle: verified device + prekey `i`.
    pub(super) fn recipient(&self, i: usize) -> Recipient {
        let device =
            VerifiedDevice::verify(self.device.certificate(), &self.identity, NOW).unwrap();
        let prekey = VerifiedPrekey::verify(&self.published[i], &device, NOW).unwrap();
        Recipient::new(device, prekey).unwrap()
    }

    pub(super) fn open(
        &mut self,
        bytes: &[u8],
        sender: &Party,
    ) -> Result<OpenedContainer, ContainerError> {
        self.open_at(bytes, sender, NOW)
    }

    pub(super) fn open_at(
        &mut self,
        bytes: &[u8],
        sender: &Party,
        now: UnixMillis,
    ) -> Result<OpenedContainer, ContainerError> {
        SealedContainer::decode(bytes)?.open(
            &sender.identity,
            &self.device,
            &mut self.prekeys,
            &mut self.replay,
            now,
        )
    }
}

pub(super) fn text(s: &str) -> v1::ContainerPayload {
    v1::ContainerPayload {
        body: Some(Body::Text(v1::TextMessage { text: s.into() })),
        ..Default::default()
    }
}

fn invite_payload() -> v1::ContainerPayload {
    v1::ContainerPayload {
        body: Some(Body::MeetingInvite(v1::MeetingInvite {
            meeting_id: vec![7; 32],
            epoch: 0,
            meeting_key: vec![0x5a; 32],
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub(super) fn setup() -> (ChaCha20Rng, Party, Party, Party) {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let alice = Party::new("alice", &mut rng);
    let bob = Party::new("bob", &mut rng);
    let carol = Party::new("carol", &mut rng);
    (rng, alice, bob, carol)
}

fn seal_to(alice: &Party, to: &[Recipient], rng: &mut ChaCha20Rng) -> Vec<u8> {
    seal(&alice.device, to, &text("hello"), NOW, TTL, rng).unwrap()
}

/// A dishonest sender (or anyone holding its device key) edits the header and re-signs.
fn resign_with(
    bytes: &[u8],
    signer: &DeviceIdentity,
    edit_header: impl FnOnce(&mut v1::ContainerHeader),
    edit_ciphertext: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut wire = v1::Container::decode(bytes).unwrap();
    let mut header = v1::ContainerHeader::decode(wire.header.as_slice()).unwrap();
    edit_header(&mut header);
    wire.header = header.encode_to_vec();
    edit_ciphertext(&mut wire.ciphertext);
    wire.signature = signer
        .signing_key()
        .sign(&signing_input(&wire.header, &wire.ciphertext).unwrap())
        .to_bytes()
        .to_vec();
    wire.encode_to_vec()
}

fn edit_wire(bytes: &[u8], edit: impl FnOnce(&mut v1::Container)) -> Vec<u8> {
    let mut wire = v1::Container::decode(bytes).unwrap();
    edit(&mut wire);
    wire.encode_to_vec()
}

#[test]
fn every_recipient_opens_the_same_payload() {
    let (mut rng, alice, mut bob, mut carol) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0), carol.recipient(0)], &mut rng);
    for party in [&mut bob, &mut carol] {
        let opened = party.open(&bytes, &alice).unwrap();
        assert_eq!(opened.payload(), &text("hello"));
        assert_eq!(opened.sender().device_id(), alice.device.device_id());
        assert_eq!(opened.expires_at(), NOW.saturating_add(TTL));
    }
}

#[test]
fn a_large_container_wrapped_on_several_threads_opens_for_every_recipient_in_order() {
    let mut rng = ChaCha20Rng::seed_from_u64(43);
    let alice = Party::new("alice", &mut rng);
    // Enough recipients for several wrapping threads on any machine with two CPUs.
    let mut parties: Vec<Party> = (0..40)
        .map(|i| Party::new(&format!("p{i}"), &mut rng))
        .collect();
    let to: Vec<Recipient> = parties.iter().map(|p| p.recipient(0)).collect();
    let bytes = seal_to(&alice, &to, &mut rng);
    let expected: Vec<DeviceId> = parties.iter().map(|p| p.device.device_id()).collect();
    for party in &mut parties {
        let opened = party.open(&bytes, &alice).unwrap();
        assert_eq!(opened.payload(), &text("hello"));
        assert_eq!(opened.recipients(), expected, "entries in recipient order");
    }
}

#[test]
fn opening_deletes_the_prekey_private_half() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(1)], &mut rng);
    assert_eq!(bob.prekeys.len(), 4);
    bob.open(&bytes, &alice).unwrap();
    assert_eq!(bob.prekeys.len(), 3);
}

#[test]
fn tampered_header_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let tampered = edit_wire(&bytes, |w| {
        let mut h = v1::ContainerHeader::decode(w.header.as_slice()).unwrap();
        h.ttl_ms += 1;
        w.header = h.encode_to_vec();
    });
    assert!(matches!(
        bob.open(&tampered, &alice),
        Err(ContainerError::BadSignature)
    ));
    // A header byte flipped at random is caught the same way.
    let flipped = edit_wire(&bytes, |w| w.header[5] ^= 0x40);
    assert!(bob.open(&flipped, &alice).is_err());
}

#[test]
fn tampered_entry_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    // On the wire: the signature covers the entries.
    let tampered = edit_wire(&bytes, |w| {
        let mut h = v1::ContainerHeader::decode(w.header.as_slice()).unwrap();
        h.entries[0].wrapped_key[0] ^= 1;
        w.header = h.encode_to_vec();
    });
    assert!(matches!(
        bob.open(&tampered, &alice),
        Err(ContainerError::BadSignature)
    ));
    // Re-signed: the outer (device key) AEAD layer catches it.
    let resigned = resign_with(
        &bytes,
        &alice.device,
        |h| h.entries[0].wrapped_key[0] ^= 1,
        |_| {},
    );
    assert!(matches!(
        bob.open(&resigned, &alice),
        Err(ContainerError::UnwrapFailed {
            layer: "device key"
        })
    ));
    // Re-signed with a different prekey id: the KEKs are bound to it.
    let resigned = resign_with(
        &bytes,
        &alice.device,
        |h| h.entries[0].prekey_id = 2,
        |_| {},
    );
    assert!(matches!(
        bob.open(&resigned, &alice),
        Err(ContainerError::UnwrapFailed { .. })
    ));
    // None of the failures spent the prekey: the genuine container still opens.
    bob.open(&bytes, &alice).unwrap();
}

#[test]
fn tampered_payload_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let tampered = edit_wire(&bytes, |w| {
        let last = w.ciphertext.len() - 1;
        w.ciphertext[last] ^= 1;
    });
    assert!(matches!(
        bob.open(&tampered, &alice),
        Err(ContainerError::BadSignature)
    ));
    let resigned = resign_with(&bytes, &alice.device, |_| {}, |c| c[20] ^= 1);
    assert!(matches!(
        bob.open(&resigned, &alice),
        Err(ContainerError::PayloadDecryptFailed)
    ));
}

#[test]
fn tampered_signature_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let tampered = edit_wire(&bytes, |w| w.signature[10] ^= 1);
    assert!(matches!(
        bob.open(&tampered, &alice),
        Err(ContainerError::BadSignature)
    ));
    let truncated = edit_wire(&bytes, |w| w.signature.truncate(63));
    assert!(matches!(
        bob.open(&truncated, &alice),
        Err(ContainerError::Malformed(_))
    ));
}

#[test]
fn container_signed_by_another_device_is_rejected() {
    let (mut rng, alice, mut bob, carol) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    // Carol re-signs Alice's container but keeps Alice's certificate attached.
    let forged = resign_with(&bytes, &carol.device, |_| {}, |_| {});
    assert!(matches!(
        bob.open(&forged, &alice),
        Err(ContainerError::BadSignature)
    ));
}

#[test]
fn recipient_not_in_header_is_rejected() {
    let (mut rng, alice, bob, mut carol) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let err = carol.open(&bytes, &alice).unwrap_err();
    assert!(matches!(err, ContainerError::NotARecipient { .. }), "{err}");
}

#[test]
fn wrong_recipient_cannot_unwrap_another_devices_entry() {
    let (mut rng, alice, mut bob, mut carol) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0), carol.recipient(0)], &mut rng);
    // Swap the two entries' recipient ids (and re-sign): each device now finds the
    // other's wrapped key under its own id and must fail to unwrap it.
    let swapped = resign_with(
        &bytes,
        &alice.device,
        |h| {
            let (a, b) = h.entries.split_at_mut(1);
            std::mem::swap(&mut a[0].recipient_device_id, &mut b[0].recipient_device_id);
        },
        |_| {},
    );
    for party in [&mut bob, &mut carol] {
        let err = party.open(&swapped, &alice).unwrap_err();
        assert!(matches!(err, ContainerError::UnwrapFailed { .. }), "{err}");
    }
}

#[test]
fn sender_certificate_signed_by_a_different_user_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let mallory = Party::new("mallory", &mut rng);
    // Mallory certifies a device under Alice's user id and sends from it.
    let fake_alice = DeviceIdentity::create(
        &mallory.user_key,
        alice.identity.user_id,
        NOW,
        DAY_MS,
        &mut rng,
    )
    .unwrap();
    let bytes = seal(
        &fake_alice,
        &[bob.recipient(0)],
        &text("hi"),
        NOW,
        TTL,
        &mut rng,
    )
    .unwrap();
    let sealed = SealedContainer::decode(&bytes).unwrap();
    assert_eq!(sealed.claimed_sender(), alice.identity.user_id);
    let err = bob.open(&bytes, &alice).unwrap_err();
    assert!(
        matches!(
            err,
            ContainerError::SenderCertificate(IdentityError::BadSignature { .. })
        ),
        "{err}"
    );
}

#[test]
fn header_naming_another_sender_is_rejected() {
    let (mut rng, alice, mut bob, carol) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let relabeled = resign_with(
        &bytes,
        &alice.device,
        |h| h.sender_device_id = carol.device.device_id().as_bytes().to_vec(),
        |_| {},
    );
    assert!(matches!(
        bob.open(&relabeled, &alice),
        Err(ContainerError::SenderMismatch)
    ));
}

#[test]
fn expired_container_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let err = bob
        .open_at(&bytes, &alice, NOW.saturating_add(TTL))
        .unwrap_err();
    assert!(matches!(err, ContainerError::Expired { .. }), "{err}");
    // One millisecond earlier it is still valid.
    bob.open_at(&bytes, &alice, NOW.saturating_add(TTL - 1))
        .unwrap();
}

#[test]
fn container_from_the_future_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    // Created 20 minutes ahead of the receiver's clock (beyond the 5-minute skew).
    let created = NOW.saturating_add(20 * 60_000);
    let bytes = seal(
        &alice.device,
        &[bob.recipient(0)],
        &text("x"),
        created,
        TTL,
        &mut rng,
    )
    .unwrap();
    let err = bob
        .open_at(&bytes, &alice, NOW.saturating_add(60_000))
        .unwrap_err();
    assert!(matches!(err, ContainerError::FromFuture { .. }), "{err}");
}

#[test]
fn replayed_container_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    bob.open(&bytes, &alice).unwrap();
    let err = bob.open(&bytes, &alice).unwrap_err();
    assert!(matches!(err, ContainerError::Replayed { .. }), "{err}");
}

#[test]
fn another_sender_reusing_a_container_id_cannot_suppress_the_original() {
    let (mut rng, alice, mut bob, _) = setup();
    let mallory = Party::new("mallory", &mut rng);
    let genuine = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let wire = v1::Container::decode(genuine.as_slice()).unwrap();
    let header = v1::ContainerHeader::decode(wire.header.as_slice()).unwrap();
    // Mallory copies the clear container id into a valid container of her own, and a
    // colluding server delivers hers first.
    let key = Zeroizing::new([9u8; 32]);
    let secrets = SealSecrets {
        payload_key: &key,
        entry_keys: None,
        declared_kind: None,
        container_id: ContainerId::from_slice(&header.container_id),
    };
    let decoy = seal_with(
        &mallory.device,
        &[bob.recipient(1)],
        &text("decoy"),
        NOW,
        TTL,
        &mut rng,
        &secrets,
    )
    .unwrap();
    bob.open(&decoy, &mallory).unwrap();
    assert_eq!(
        bob.open(&genuine, &alice).unwrap().payload(),
        &text("hello")
    );
}

#[test]
fn reused_prekey_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    // A directory that hands out the same prekey twice: both containers use prekey 0.
    let first = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let second = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    bob.open(&first, &alice).unwrap();
    let err = bob.open(&second, &alice).unwrap_err();
    assert!(
        matches!(err, ContainerError::PrekeyConsumed { prekey_id: 1 }),
        "{err}"
    );
}

#[test]
fn unknown_and_expired_prekeys_are_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let unknown = resign_with(
        &bytes,
        &alice.device,
        |h| h.entries[0].prekey_id = 77,
        |_| {},
    );
    assert!(matches!(
        bob.open(&unknown, &alice),
        Err(ContainerError::UnknownPrekey { prekey_id: 77 })
    ));
    // Prekeys live 7 days; the container lives 1 day from NOW. Seal one later.
    let later = NOW.saturating_add(7 * DAY_MS);
    let late = seal(
        &alice.device,
        &[bob.recipient(1)],
        &text("x"),
        UnixMillis(later.0 - 1),
        TTL,
        &mut rng,
    )
    .unwrap();
    assert!(matches!(
        bob.open_at(&late, &alice, later),
        Err(ContainerError::PrekeyExpired { .. })
    ));
}

#[test]
fn commitment_mismatch_when_recipients_get_different_keys() {
    let (mut rng, alice, mut bob, mut carol) = setup();
    let real_key = Zeroizing::new([1u8; 32]);
    let entry_keys = [real_key.clone(), Zeroizing::new([2u8; 32])];
    // A dishonest sender wraps the real key for Bob and a different key for Carol.
    let secrets = SealSecrets {
        payload_key: &real_key,
        entry_keys: Some(&entry_keys),
        declared_kind: None,
        container_id: None,
    };
    let bytes = seal_with(
        &alice.device,
        &[bob.recipient(0), carol.recipient(0)],
        &text("split view"),
        NOW,
        TTL,
        &mut rng,
        &secrets,
    )
    .unwrap();
    bob.open(&bytes, &alice).unwrap();
    let err = carol.open(&bytes, &alice).unwrap_err();
    assert!(matches!(err, ContainerError::CommitmentMismatch), "{err}");
    // The failed open left Carol's prekey in place.
    assert_eq!(carol.prekeys.len(), 4);
}

/// Review (deviations): the header used to name the payload kind in the clear, so the
/// server could tell invites, rekeys, leaves and texts apart. Now nothing in the
/// header or the ciphertext's length tells small payloads apart.
#[test]
fn the_server_cannot_tell_the_payload_kind_from_the_container() {
    let (mut rng, alice, bob, _) = setup();
    let small = [
        text("hi"),
        v1::ContainerPayload {
            body: Some(Body::Leave(v1::Leave {
                meeting_id: vec![1; 32],
                epoch: 7,
            })),
            ..Default::default()
        },
        v1::ContainerPayload {
            body: Some(Body::KeyRequest(v1::KeyRequest {
                meeting_id: vec![1; 32],
                held_epoch: 3,
                room_epoch: 4,
            })),
            ..Default::default()
        },
        v1::ContainerPayload {
            body: Some(Body::InviteReply(v1::InviteReply {
                meeting_id: vec![1; 32],
                decision: v1::invite_reply::Decision::Accept.into(),
                media_kinds: vec![1, 2],
            })),
            ..Default::default()
        },
    ];
    let mut lengths = std::collections::BTreeSet::new();
    for payload in &small {
        let bytes = seal(
            &alice.device,
            &[bob.recipient(0)],
            payload,
            NOW,
            TTL,
            &mut rng,
        )
        .unwrap();
        let wire = v1::Container::decode(bytes.as_slice()).unwrap();
        let header = v1::ContainerHeader::decode(wire.header.as_slice()).unwrap();
        assert_eq!(header.payload_kind, 0, "no kind in the clear header");
        assert_eq!(wire.ciphertext.len() % PAYLOAD_PADDING_BLOCK, 12 + 16);
        lengths.insert(wire.ciphertext.len());
    }
    assert_eq!(
        lengths.len(),
        1,
        "small payloads all look alike: {lengths:?}"
    );
}

#[test]
fn a_payload_kind_named_in_the_clear_header_is_refused() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    // Labeling the kind after sealing changes the payload's AAD: the AEAD catches it.
    let relabeled = resign_with(
        &bytes,
        &alice.device,
        |h| h.payload_kind = v1::PayloadKind::MeetingInvite.into(),
        |_| {},
    );
    assert!(matches!(
        bob.open(&relabeled, &alice),
        Err(ContainerError::PayloadDecryptFailed)
    ));
    // A sender that names the kind in the clear is refused after decryption.
    let key = Zeroizing::new([3u8; 32]);
    let secrets = SealSecrets {
        payload_key: &key,
        entry_keys: None,
        declared_kind: Some(v1::PayloadKind::Text),
        container_id: None,
    };
    let sealed = seal_with(
        &alice.device,
        &[bob.recipient(1)],
        &text("x"),
        NOW,
        TTL,
        &mut rng,
        &secrets,
    )
    .unwrap();
    let err = bob.open(&sealed, &alice).unwrap_err();
    assert!(
        matches!(err, ContainerError::PayloadKindInClear { declared: 7 }),
        "{err}"
    );
    assert_eq!(
        bob.prekeys.len(),
        4,
        "a failed open must not spend the prekey"
    );
}

#[test]
fn unsupported_version_is_rejected() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal_to(&alice, &[bob.recipient(0)], &mut rng);
    let v2 = resign_with(&bytes, &alice.device, |h| h.version = 2, |_| {});
    assert!(matches!(
        bob.open(&v2, &alice),
        Err(ContainerError::UnsupportedVersion { version: 2 })
    ));
}

#[test]
fn sealing_validates_its_inputs() {
    let (mut rng, alice, bob, carol) = setup();
    let p = text("x");
    let d = &alice.device;
    assert!(matches!(
        seal(d, &[], &p, NOW, TTL, &mut rng),
        Err(ContainerError::NoRecipients)
    ));
    assert!(matches!(
        seal(
            d,
            &[bob.recipient(0), bob.recipient(1)],
            &p,
            NOW,
            TTL,
            &mut rng
        ),
        Err(ContainerError::DuplicateRecipient { .. })
    ));
    for ttl in [0, MAX_TTL_MS + 1] {
        assert!(matches!(
            seal(d, &[bob.recipient(0)], &p, NOW, ttl, &mut rng),
            Err(ContainerError::InvalidTtl { .. })
        ));
    }
    assert!(matches!(
        seal(
            d,
            &[bob.recipient(0)],
            &v1::ContainerPayload::default(),
            NOW,
            TTL,
            &mut rng
        ),
        Err(ContainerError::EmptyPayload)
    ));
    let expired_at = NOW.saturating_add(7 * DAY_MS);
    assert!(matches!(
        seal(d, &[bob.recipient(0)], &p, expired_at, TTL, &mut rng),
        Err(ContainerError::RecipientExpired { .. })
    ));
    let mismatched = Recipient::new(
        bob.recipient(0).device().clone(),
        carol.recipient(0).prekey().clone(),
    );
    assert!(matches!(
        mismatched,
        Err(ContainerError::RecipientPrekeyMismatch)
    ));
}

#[test]
fn oversized_and_garbage_bytes_are_rejected_without_panicking() {
    let big = vec![0u8; conclave_proto::limits::MAX_CONTAINER_BYTES + 1];
    assert!(matches!(
        SealedContainer::decode(&big),
        Err(ContainerError::TooLarge { .. })
    ));
    assert!(matches!(
        SealedContainer::decode(&[0xff; 40]),
        Err(ContainerError::Malformed(_))
    ));
    assert!(matches!(
        SealedContainer::decode(&[]),
        Err(ContainerError::Malformed(_))
    ));
}

#[test]
fn opened_container_debug_hides_the_meeting_key() {
    let (mut rng, alice, mut bob, _) = setup();
    let bytes = seal(
        &alice.device,
        &[bob.recipient(0)],
        &invite_payload(),
        NOW,
        TTL,
        &mut rng,
    )
    .unwrap();
    let opened = bob.open(&bytes, &alice).unwrap();
    let dbg = format!("{opened:?}");
    assert!(!dbg.contains("90, 90, 90"), "{dbg}");
    assert!(!dbg.contains("5a5a5a"), "{dbg}");
    let mut payload = opened.payload().clone();
    zeroize_payload_secrets(&mut payload);
    let Some(Body::MeetingInvite(invite)) = payload.body else {
        panic!("expected an invite");
    };
    assert!(invite.meeting_key.iter().all(|b| *b == 0));
}
