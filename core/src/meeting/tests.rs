use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::sframe::{SframeError, SframeReceiver};

fn ids() -> (UserId, DeviceId) {
    (
        UserId::from_username("alice").unwrap(),
        DeviceId::from_bytes([9; 16]),
    )
}

fn meeting(rng: &mut ChaCha20Rng) -> (MeetingId, MeetingKey) {
    let (user, device) = ids();
    let id = MeetingId::generate(&user, &device, UnixMillis(1_000), 3, rng);
    (id, MeetingKey::generate(Epoch(0), rng))
}

#[test]
fn meeting_id_depends_on_every_input() {
    let (user, device) = ids();
    let base = MeetingId::derive(&user, &device, UnixMillis(1), 3, &[0; 32]);
    let other_user = UserId::from_username("bob").unwrap();
    let variants = [
        MeetingId::derive(&other_user, &device, UnixMillis(1), 3, &[0; 32]),
        MeetingId::derive(
            &user,
            &DeviceId::from_bytes([1; 16]),
            UnixMillis(1),
            3,
            &[0; 32],
        ),
        MeetingId::derive(&user, &device, UnixMillis(2), 3, &[0; 32]),
        MeetingId::derive(&user, &device, UnixMillis(1), 4, &[0; 32]),
        MeetingId::derive(&user, &device, UnixMillis(1), 3, &[1; 32]),
    ];
    for v in variants {
        assert_ne!(v, base);
    }
    assert_eq!(
        base,
        MeetingId::derive(&user, &device, UnixMillis(1), 3, &[0; 32])
    );
}

#[test]
fn routing_id_is_a_domain_separated_hash_of_the_meeting_id() {
    let id = MeetingId::from_bytes([3; 32]);
    let mut input = b"conclave.route.v1".to_vec();
    input.extend_from_slice(&[3; 32]);
    let expected: [u8; 32] = Sha256::digest(&input).into();
    assert_eq!(id.routing_id().as_bytes(), &expected);
    assert_ne!(id.routing_id().as_bytes(), id.as_bytes());
}

#[test]
fn ratchet_advances_the_epoch_one_way() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (_, key) = meeting(&mut rng);
    let next = key.ratchet().unwrap();
    assert_eq!(next.epoch(), Epoch(1));
    assert_ne!(next.expose_secret(), key.expose_secret());
    // Deterministic: every existing participant ratchets to the same key.
    assert_eq!(key.ratchet().unwrap(), next);
    // The ratchet of the ratchet never comes back to the original.
    assert_ne!(next.ratchet().unwrap().expose_secret(), key.expose_secret());
    let last = MeetingKey::from_slice(Epoch(u64::MAX), key.expose_secret()).unwrap();
    assert!(matches!(
        last.ratchet(),
        Err(MeetingError::EpochExhausted { .. })
    ));
}

#[test]
fn sframe_base_keys_differ_per_sender_and_epoch() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (_, key) = meeting(&mut rng);
    let next = key.ratchet().unwrap();
    let a0 = key.sframe_base_key(0);
    assert_ne!(*a0, *key.sframe_base_key(1));
    assert_ne!(*a0, *next.sframe_base_key(0));
    assert_eq!(*a0, *key.sframe_base_key(0));
}

#[test]
fn sframe_key_ids_encode_epoch_and_sender() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (_, key) = meeting(&mut rng);
    let key = MeetingKey::from_slice(Epoch(5), key.expose_secret()).unwrap();
    let kid = key.sframe_kid(17).unwrap();
    assert_eq!((kid.epoch(), kid.sender_index()), (5, 17));
    assert!(matches!(
        key.sframe_kid(1 << crate::sframe::SENDER_INDEX_BITS),
        Err(MeetingError::SenderIndexOutOfRange { .. })
    ));
    assert!(matches!(
        key.sframe_kid(u32::MAX),
        Err(MeetingError::SenderIndexOutOfRange { .. })
    ));
    let huge = MeetingKey::from_slice(Epoch(u64::MAX), key.expose_secret()).unwrap();
    assert!(matches!(
        huge.sframe_kid(0),
        Err(MeetingError::EpochOutOfRange { .. })
    ));
}

#[test]
fn media_from_the_meeting_key_round_trips_and_other_epochs_fail() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (_, key) = meeting(&mut rng);
    let mut sender = key.sframe_sender(2).unwrap();
    let frame = sender.encrypt(b"", b"audio frame").unwrap();

    let mut receiver = SframeReceiver::new();
    let kid = key.sframe_kid(2).unwrap();
    receiver
        .add_key(kid, SFRAME_SUITE, key.sframe_base_key(2).as_slice())
        .unwrap();
    let got = receiver.decrypt(b"", &frame).unwrap();
    assert_eq!(got.plaintext, b"audio frame");

    // A late joiner holding only the ratcheted key has no key for epoch 0.
    let next = key.ratchet().unwrap();
    let mut joiner = SframeReceiver::new();
    joiner
        .add_key(
            next.sframe_kid(2).unwrap(),
            SFRAME_SUITE,
            next.sframe_base_key(2).as_slice(),
        )
        .unwrap();
    assert!(matches!(
        joiner.decrypt(b"", &frame),
        Err(SframeError::UnknownKid { .. })
    ));
}

#[test]
fn room_join_proof_verifies_only_for_the_epoch_key_session_and_challenge() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (id, key) = meeting(&mut rng);
    let routing = id.routing_id();
    let auth = key.room_auth_key(&routing);
    let public = auth.public();
    let sig = auth.sign_join(b"tls-a", b"challenge-1").unwrap();
    public
        .verify_join(&routing, 0, b"tls-a", b"challenge-1", &sig)
        .unwrap();
    for (epoch, tls, challenge) in [
        (0, &b"tls-a"[..], &b"challenge-2"[..]),
        (0, b"tls-b", b"challenge-1"),
        (1, b"tls-a", b"challenge-1"),
    ] {
        assert!(matches!(
            public.verify_join(&routing, epoch, tls, challenge, &sig),
            Err(MeetingError::BadRoomAuthSignature)
        ));
    }
    let other_room = MeetingId::from_bytes([1; 32]).routing_id();
    assert!(
        public
            .verify_join(&other_room, 0, b"tls-a", b"challenge-1", &sig)
            .is_err()
    );
    assert!(matches!(
        public.verify_join(&routing, 0, b"tls-a", b"challenge-1", &sig[..63]),
        Err(MeetingError::MalformedRoomAuth(_))
    ));
    assert!(auth.sign_join(&[0; 257], b"c").is_err());
    // Everyone holding the epoch key derives the same room-auth key.
    assert_eq!(key.room_auth_key(&routing).public(), public);
    assert_eq!(
        RoomAuthPublic::from_slice(&public.to_bytes()).unwrap(),
        public
    );
}

#[test]
fn removed_participant_cannot_prove_the_new_epoch() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (id, old) = meeting(&mut rng);
    let routing = id.routing_id();
    // Rekey after a removal: a fresh key, not a ratchet.
    let new = MeetingKey::generate(Epoch(1), &mut rng);
    let old_auth = old.room_auth_key(&routing);
    let new_auth = new.room_auth_key(&routing);
    // The remaining participants rotate the room; the SFU checks it against the old key.
    let rotation = old_auth.sign_rotation(&new_auth).unwrap();
    old_auth
        .public()
        .verify_rotation(&routing, 1, &new_auth.public(), &rotation)
        .unwrap();
    // The rotation names its epoch: it cannot be presented for another one.
    assert!(
        old_auth
            .public()
            .verify_rotation(&routing, 2, &new_auth.public(), &rotation)
            .is_err()
    );
    // Rotations only move forward.
    assert!(new_auth.sign_rotation(&old_auth).is_err());
    // The removed participant only has the old key: its join proof fails the new key.
    let stale = old_auth.sign_join(b"tls", b"fresh challenge").unwrap();
    assert!(matches!(
        new_auth
            .public()
            .verify_join(&routing, 1, b"tls", b"fresh challenge", &stale),
        Err(MeetingError::BadRoomAuthSignature)
    ));
    // And a rotation signed by a non-holder is refused.
    let outsider = MeetingKey::generate(Epoch(1), &mut rng).room_auth_key(&routing);
    let forged = MeetingKey::generate(Epoch(0), &mut rng)
        .room_auth_key(&routing)
        .sign_rotation(&outsider)
        .unwrap();
    assert!(
        old_auth
            .public()
            .verify_rotation(&routing, 1, &outsider.public(), &forged)
            .is_err()
    );
}

#[test]
fn epoch_commitment_separates_keys_epochs_and_meetings() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (id, key) = meeting(&mut rng);
    let c = key.commitment(&id);
    assert_eq!(c, key.clone().commitment(&id));
    assert_ne!(c, MeetingKey::generate(Epoch(0), &mut rng).commitment(&id));
    assert_ne!(c, key.ratchet().unwrap().commitment(&id));
    assert_ne!(c, key.commitment(&MeetingId::from_bytes([0; 32])));
}

#[test]
fn debug_output_never_shows_meeting_or_room_auth_secrets() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let (id, key) = meeting(&mut rng);
    let auth = key.room_auth_key(&id.routing_id());
    let dbg = format!("{key:?} {auth:?} {:?}", key.sframe_sender(0).unwrap());
    let secret_hex: String = key
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!dbg.contains(&secret_hex[..12]), "{dbg}");
    let decimal = format!("{:?}", &key.expose_secret()[..3]);
    assert!(!dbg.contains(decimal.trim_end_matches(']')), "{dbg}");
    assert!(dbg.contains("epoch: 0"), "{dbg}");
}

#[test]
fn meeting_key_must_be_32_bytes() {
    assert!(matches!(
        MeetingKey::from_slice(Epoch(0), &[0; 31]),
        Err(MeetingError::InvalidKeyLength { len: 31 })
    ));
}
