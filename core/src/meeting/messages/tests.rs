use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::test_util::identity::{SeededDevice, seeded_device};

const ID: [u8; 32] = [7; 32];

struct Party {
    me: SeededDevice,
    index: u32,
    crypto: MessageCrypto,
}

fn member(p: &Party) -> (u32, UserId, DeviceId, VerifyingKey) {
    (
        p.index,
        p.me.user.user_id,
        p.me.device.device_id(),
        *p.me.device.public().signing_key(),
    )
}

/// Parties `names` (sender indices 0, 1, ...), all holding `key`.
fn parties(names: &[&str], key: &MeetingKey) -> Vec<Party> {
    let mut all: Vec<Party> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let index = u32::try_from(i).expect("few parties");
            Party {
                me: seeded_device(100 + u64::from(index), name),
                index,
                crypto: MessageCrypto::new(MeetingId(ID), index),
            }
        })
        .collect();
    install(&mut all, key);
    all
}

/// Every party in `all` sends and receives on `key`.
fn install(all: &mut [Party], key: &MeetingKey) {
    let members: Vec<_> = all.iter().map(member).collect();
    for p in all.iter_mut() {
        p.crypto.set_sending_key(key).expect("sending key");
        p.crypto
            .add_receive_keys(key, members.clone())
            .expect("receive keys");
    }
}

fn key(epoch: u64, seed: u64) -> MeetingKey {
    MeetingKey::generate(Epoch(epoch), &mut ChaCha20Rng::seed_from_u64(seed))
}

fn seal(p: &mut Party, delivery: Delivery, topic: &str, body: &[u8]) -> SealedMessage {
    p.crypto
        .seal(&p.me.device, delivery, topic, body)
        .expect("seal")
}

#[test]
fn a_message_reaches_the_other_participants_with_its_sender_and_sequence() {
    let mut all = parties(&["alice", "bob", "carol"], &key(1, 1));
    for n in 0..3u64 {
        let sealed = seal(&mut all[0], Delivery::Reliable, "chat", b"hello");
        assert_eq!(sealed.epoch, Epoch(1));
        for receiver in 1..3 {
            let got = all[receiver]
                .crypto
                .open(Delivery::Reliable, &sealed.frame)
                .expect("open");
            assert_eq!(got.device_id, all[0].me.device.device_id());
            assert_eq!(got.user_id, all[0].me.user.user_id);
            assert_eq!(got.sequence, n);
            assert_eq!(got.topic, "chat");
            assert_eq!(got.body, b"hello");
            assert_eq!(got.epoch, Epoch(1));
        }
    }
}

#[test]
fn the_two_modes_have_their_own_keys_and_sequences() {
    let mut all = parties(&["alice", "bob"], &key(1, 1));
    let lossy = seal(&mut all[0], Delivery::Lossy, "cursor", b"1,2");
    let reliable = seal(&mut all[0], Delivery::Reliable, "chat", b"hi");
    // A lossy frame presented as reliable (and the reverse) does not decrypt.
    assert!(matches!(
        all[1].crypto.open(Delivery::Reliable, &lossy.frame),
        Err(MessageError::Frame(_))
    ));
    assert!(matches!(
        all[1].crypto.open(Delivery::Lossy, &reliable.frame),
        Err(MessageError::Frame(_))
    ));
    let got = all[1].crypto.open(Delivery::Lossy, &lossy.frame).unwrap();
    assert_eq!((got.sequence, got.delivery), (0, Delivery::Lossy));
    let got = all[1]
        .crypto
        .open(Delivery::Reliable, &reliable.frame)
        .unwrap();
    assert_eq!((got.sequence, got.delivery), (0, Delivery::Reliable));
}

#[test]
fn a_replayed_message_is_refused() {
    let mut all = parties(&["alice", "bob"], &key(1, 1));
    let sealed = seal(&mut all[0], Delivery::Reliable, "chat", b"once");
    all[1]
        .crypto
        .open(Delivery::Reliable, &sealed.frame)
        .unwrap();
    assert!(matches!(
        all[1].crypto.open(Delivery::Reliable, &sealed.frame),
        Err(MessageError::Frame(SframeError::Replayed { .. }))
    ));
}

/// A frame under sender `index`'s reliable key with counter `ctr` and `plaintext`, as
/// any participant (who holds the epoch's meeting key) can make one.
fn raw_frame(k: &MeetingKey, index: u32, skip_to: u64, plaintext: &[u8]) -> Vec<u8> {
    let mut sender = SframeSender::new(
        SFRAME_SUITE,
        &*base_key(k, Delivery::Reliable, index),
        k.sframe_kid(index).unwrap(),
    );
    for _ in 0..skip_to {
        sender.encrypt(&[], b"").unwrap();
    }
    sender.encrypt(&[], plaintext).unwrap()
}

/// Test helper: the signed plaintext of a genuine frame of sender `index`.
fn plaintext_of(k: &MeetingKey, index: u32, frame: &[u8]) -> v1::MeetingMessage {
    let mut receiver = SframeReceiver::new();
    receiver
        .add_key(
            k.sframe_kid(index).unwrap(),
            SFRAME_SUITE,
            &*base_key(k, Delivery::Reliable, index),
        )
        .unwrap();
    let plain = receiver.decrypt(&[], frame).unwrap().plaintext;
    v1::MeetingMessage::decode(plain.as_slice()).unwrap()
}

/// Every participant can derive every sender's message key, so a participant can
/// encrypt under another's index; the signature is what names the sender.
#[test]
fn a_participant_cannot_send_in_another_participants_name() {
    let k = key(1, 1);
    let mut all = parties(&["alice", "bob", "carol"], &k);
    // Carol seals under Alice's index 0 (she can derive its key), signing with her own
    // device key.
    let mut forger = MessageCrypto::new(MeetingId(ID), 0);
    forger.set_sending_key(&k).unwrap();
    let forged = forger
        .seal(&all[2].me.device, Delivery::Reliable, "chat", b"I am alice")
        .unwrap();
    assert!(matches!(
        all[1].crypto.open(Delivery::Reliable, &forged.frame),
        Err(MessageError::BadSignature)
    ));
    // Alice's genuine messages (counter 0 included, which the forgery used) still
    // reach Bob.
    let genuine = seal(&mut all[0], Delivery::Reliable, "chat", b"pay 10");
    assert_eq!(
        all[1]
            .crypto
            .open(Delivery::Reliable, &genuine.frame)
            .unwrap()
            .body,
        b"pay 10"
    );
    // The same body altered and re-encrypted with Alice's signature fails.
    let mut altered = plaintext_of(&k, 0, &genuine.frame);
    altered.body = b"pay 99".to_vec();
    let frame = raw_frame(&k, 0, 5, &altered.encode_to_vec());
    assert!(matches!(
        all[1].crypto.open(Delivery::Reliable, &frame),
        Err(MessageError::BadSignature)
    ));
}

/// Frames that fail the signature do not move the replay window: a participant cannot
/// silence another by burning its counters (the next ones, or the largest).
#[test]
fn forged_frames_cannot_burn_another_senders_counters() {
    let k = key(1, 1);
    let mut all = parties(&["alice", "bob", "carol"], &k);
    let junk = v1::MeetingMessage {
        sequence: 0,
        topic: "chat".into(),
        body: b"junk".to_vec(),
        signature: vec![0; 64],
    }
    .encode_to_vec();
    for ctr in [0, 1, 2, 3, 1_000, u64::MAX - 1] {
        let frame = raw_frame_at(&k, 0, ctr, &junk);
        assert!(matches!(
            all[1].crypto.open(Delivery::Reliable, &frame),
            Err(MessageError::BadSignature)
        ));
    }
    for n in 0..3u64 {
        let genuine = seal(&mut all[0], Delivery::Reliable, "chat", b"still here");
        let got = all[1]
            .crypto
            .open(Delivery::Reliable, &genuine.frame)
            .expect("Alice's messages still open");
        assert_eq!(got.sequence, n);
    }
}

/// A frame with counter `ctr` (written straight into the SFrame header) under sender
/// `index`'s reliable key.
fn raw_frame_at(k: &MeetingKey, index: u32, ctr: u64, plaintext: &[u8]) -> Vec<u8> {
    let key = crate::sframe::SframeKey::derive(
        SFRAME_SUITE,
        &*base_key(k, Delivery::Reliable, index),
        k.sframe_kid(index).unwrap().value(),
    );
    crate::sframe::encrypt(&key, ctr, &[], plaintext).unwrap()
}

/// A participant re-encrypts another's signed message under a fresh counter: the
/// signature covers the counter, so it is refused (the replay window alone would not
/// see it).
#[test]
fn a_participant_cannot_replay_another_participants_message_under_a_new_counter() {
    let k = key(1, 1);
    let mut all = parties(&["alice", "bob", "carol"], &k);
    let genuine = seal(&mut all[0], Delivery::Reliable, "chat", b"yes");
    all[1]
        .crypto
        .open(Delivery::Reliable, &genuine.frame)
        .unwrap();
    let signed = plaintext_of(&k, 0, &genuine.frame);
    let replayed = raw_frame(&k, 0, 7, &signed.encode_to_vec());
    assert!(matches!(
        all[1].crypto.open(Delivery::Reliable, &replayed),
        Err(MessageError::BadSignature)
    ));
}

/// Pausing keeps the epoch's contexts: resuming the same epoch goes on with the
/// counters (new contexts would repeat nonces), and an older epoch is refused.
#[test]
fn sending_contexts_are_never_made_twice_for_an_epoch() {
    let k1 = key(1, 1);
    let mut all = parties(&["alice", "bob"], &k1);
    let first = seal(&mut all[0], Delivery::Reliable, "chat", b"1");
    all[0].crypto.pause_sending();
    let Party { me, crypto, .. } = &mut all[0];
    assert!(matches!(
        crypto.seal(&me.device, Delivery::Reliable, "chat", b"x"),
        Err(MessageError::NotSending)
    ));
    all[0].crypto.set_sending_key(&k1).unwrap();
    let second = seal(&mut all[0], Delivery::Reliable, "chat", b"2");
    assert_ne!(
        first.frame.get(..4),
        second.frame.get(..4),
        "the counter went on"
    );
    for frame in [&first.frame, &second.frame] {
        all[1].crypto.open(Delivery::Reliable, frame).unwrap();
    }
    let k2 = key(2, 2);
    all[0].crypto.set_sending_key(&k2).unwrap();
    assert!(matches!(
        all[0].crypto.set_sending_key(&k1),
        Err(MessageError::EpochAlreadyUsed { epoch: 1 })
    ));
}

#[test]
fn a_message_of_an_epoch_not_held_yet_says_so_and_opens_once_its_key_arrives() {
    let k1 = key(1, 1);
    let mut all = parties(&["alice", "bob"], &k1);
    let k2 = key(2, 2);
    // Alice moved to epoch 2; Bob has not opened the rekey yet.
    let members: Vec<_> = all.iter().map(member).collect();
    all[0].crypto.set_sending_key(&k2).unwrap();
    let early = seal(&mut all[0], Delivery::Reliable, "chat", b"after the rekey");
    assert!(matches!(
        all[1].crypto.open(Delivery::Reliable, &early.frame),
        Err(MessageError::UnknownKey {
            epoch: 2,
            sender_index: 0
        })
    ));
    assert!(!all[1].crypto.holds_epoch(2));
    all[1].crypto.add_receive_keys(&k2, members).unwrap();
    assert!(all[1].crypto.holds_epoch(2));
    let got = all[1]
        .crypto
        .open(Delivery::Reliable, &early.frame)
        .unwrap();
    assert_eq!((got.epoch, got.sequence), (Epoch(2), 0));
}

#[test]
fn sequences_go_on_across_epochs() {
    let mut all = parties(&["alice", "bob"], &key(1, 1));
    seal(&mut all[0], Delivery::Reliable, "chat", b"1");
    let k2 = key(2, 2);
    install(&mut all, &k2);
    let sealed = seal(&mut all[0], Delivery::Reliable, "chat", b"2");
    let got = all[1]
        .crypto
        .open(Delivery::Reliable, &sealed.frame)
        .unwrap();
    assert_eq!((got.epoch, got.sequence), (Epoch(2), 1));
}

/// A removed participant holds only the keys of the epochs it was in: a message of the
/// fresh epoch that followed its removal cannot be opened, even if a hostile server
/// relays it.
#[test]
fn a_removed_participant_cannot_read_messages_after_its_removal() {
    let k1 = key(1, 1);
    let mut all = parties(&["alice", "bob", "mallory"], &k1);
    let k2 = key(2, 99); // fresh, not ratcheted: sealed only to Alice and Bob
    let remaining: Vec<_> = all[..2].iter().map(member).collect();
    for p in &mut all[..2] {
        p.crypto.set_sending_key(&k2).unwrap();
        p.crypto.add_receive_keys(&k2, remaining.clone()).unwrap();
        p.crypto.drop_epoch(Epoch(1));
    }
    let sealed = seal(&mut all[0], Delivery::Reliable, "chat", b"mallory is gone");
    assert!(
        all[1]
            .crypto
            .open(Delivery::Reliable, &sealed.frame)
            .is_ok()
    );
    assert!(matches!(
        all[2].crypto.open(Delivery::Reliable, &sealed.frame),
        Err(MessageError::UnknownKey { epoch: 2, .. })
    ));
}

/// A participant that joined at a ratcheted epoch cannot read earlier messages.
#[test]
fn a_late_joiner_cannot_read_messages_sent_before_it_joined() {
    let k1 = key(1, 1);
    let mut all = parties(&["alice", "bob"], &k1);
    let before = seal(&mut all[0], Delivery::Reliable, "chat", b"before dave");
    let k2 = k1.ratchet().unwrap();
    let mut dave = Party {
        me: seeded_device(200, "dave"),
        index: 2,
        crypto: MessageCrypto::new(MeetingId(ID), 2),
    };
    let mut members: Vec<_> = all.iter().map(member).collect();
    members.push(member(&dave));
    dave.crypto.set_sending_key(&k2).unwrap();
    dave.crypto.add_receive_keys(&k2, members).unwrap();
    assert!(matches!(
        dave.crypto.open(Delivery::Reliable, &before.frame),
        Err(MessageError::UnknownKey { epoch: 1, .. })
    ));
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let mut all = parties(&["alice", "bob"], &key(1, 1));
    let Party { me, crypto, .. } = &mut all[0];
    let me = &me.device;
    let big = vec![0u8; MAX_RELIABLE_BODY_BYTES + 1];
    assert!(matches!(
        crypto.seal(me, Delivery::Reliable, "chat", &big),
        Err(MessageError::BodyTooLarge { max: 4_096, .. })
    ));
    let lossy = vec![0u8; MAX_LOSSY_BODY_BYTES + 1];
    assert!(matches!(
        crypto.seal(me, Delivery::Lossy, "cursor", &lossy),
        Err(MessageError::BodyTooLarge { max: 900, .. })
    ));
    let topic = "t".repeat(MAX_TOPIC_BYTES + 1);
    assert!(matches!(
        crypto.seal(me, Delivery::Reliable, &topic, b"x"),
        Err(MessageError::TopicTooLong { len: 65 })
    ));
    // The largest of each fits its transport.
    let sealed = crypto
        .seal(
            me,
            Delivery::Reliable,
            &"t".repeat(MAX_TOPIC_BYTES),
            &vec![0xff; MAX_RELIABLE_BODY_BYTES],
        )
        .unwrap();
    assert!(sealed.frame.len() <= MAX_SEALED_MESSAGE_BYTES);
    let sealed = crypto
        .seal(
            me,
            Delivery::Lossy,
            &"t".repeat(MAX_TOPIC_BYTES),
            &vec![0xff; MAX_LOSSY_BODY_BYTES],
        )
        .unwrap();
    // One datagram at QUIC's smallest MTU: 1,200 bytes less QUIC's short header,
    // datagram frame and packet tag (about 40), less the 14-byte media header.
    assert!(
        sealed.frame.len() <= 1_200 - 40 - 14,
        "{}",
        sealed.frame.len()
    );
    crypto.pause_sending();
    assert!(matches!(
        crypto.seal(me, Delivery::Reliable, "chat", b"x"),
        Err(MessageError::NotSending)
    ));
}

#[test]
fn garbage_is_refused_without_panicking() {
    let mut all = parties(&["alice", "bob"], &key(1, 1));
    for bytes in [&[][..], &[0u8; 3], &[0xff; 64], &vec![0x11; 6_000]] {
        assert!(all[1].crypto.open(Delivery::Reliable, bytes).is_err());
        assert!(all[1].crypto.open(Delivery::Lossy, bytes).is_err());
    }
}

#[test]
fn debug_shows_no_body() {
    let mut all = parties(&["alice", "bob"], &key(1, 1));
    let sealed = seal(&mut all[0], Delivery::Reliable, "chat", b"secret plans");
    let got = all[1]
        .crypto
        .open(Delivery::Reliable, &sealed.frame)
        .unwrap();
    let shown = format!("{got:?} {:?}", all[1].crypto);
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("body_len: 12"), "{shown}");
}

/// Receive keys are derived at each sender's first message of an epoch, per mode, and
/// only for senders the epoch accepts; a second, different key for an epoch already
/// held is refused and the first one stays.
#[test]
fn a_senders_keys_are_derived_at_its_first_message_and_only_for_accepted_senders() {
    let k = key(1, 11);
    let mut all = parties(&["alice", "bob", "carol"], &k);
    let kid = |index: u32| k.sframe_kid(index).unwrap();
    let held = |p: &Party, delivery: Delivery, index: u32| {
        p.crypto.receivers.get(delivery).has_key(kid(index))
    };
    assert!(!held(&all[2], Delivery::Reliable, 0) && !held(&all[2], Delivery::Reliable, 1));

    let sealed = seal(&mut all[0], Delivery::Reliable, "chat", b"hi");
    all[2]
        .crypto
        .open(Delivery::Reliable, &sealed.frame)
        .expect("open");
    assert!(held(&all[2], Delivery::Reliable, 0));
    assert!(!held(&all[2], Delivery::Lossy, 0), "only the mode used");
    assert!(
        !held(&all[2], Delivery::Reliable, 1),
        "bob has sent nothing"
    );

    // A sender the epoch does not accept (index 3 sealing with the epoch's key) derives
    // nothing.
    let mut outsider = MessageCrypto::new(MeetingId(ID), 3);
    outsider.set_sending_key(&k).unwrap();
    let stranger = seeded_device(200, "mallory");
    let forged = outsider
        .seal(&stranger.device, Delivery::Reliable, "chat", b"x")
        .unwrap();
    assert!(matches!(
        all[2].crypto.open(Delivery::Reliable, &forged.frame),
        Err(MessageError::UnknownKey {
            sender_index: 3,
            ..
        })
    ));
    assert!(!held(&all[2], Delivery::Reliable, 3));

    // Another key for epoch 1: refused, and bob's first message (his key not derived
    // yet) still opens under the first key.
    let members: Vec<_> = all.iter().map(member).collect();
    assert!(matches!(
        all[2].crypto.add_receive_keys(&key(1, 12), members),
        Err(MessageError::Frame(SframeError::KeyConflict { .. }))
    ));
    let sealed = seal(&mut all[1], Delivery::Reliable, "chat", b"from bob");
    let got = all[2]
        .crypto
        .open(Delivery::Reliable, &sealed.frame)
        .expect("open");
    assert_eq!(got.body, b"from bob");

    // Dropping the epoch forgets its key with the derived ones.
    all[2].crypto.drop_epoch(Epoch(1));
    assert!(all[2].crypto.epoch_keys.is_empty());
    assert!(!held(&all[2], Delivery::Reliable, 0) && !held(&all[2], Delivery::Reliable, 1));
}
