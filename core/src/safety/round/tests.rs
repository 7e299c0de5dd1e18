//! Rounds of several devices wired together in memory.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;
use crate::identity::UserSigningKey;
use crate::safety::{RosterIdentity, SafetyCode, SafetyWords};
use crate::{UnixMillis, UserId};

const MEETING: [u8; 32] = [9; 32];

fn device(n: u8) -> DeviceIdentity {
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(n));
    let key = UserSigningKey::generate(&mut rng);
    DeviceIdentity::create_with_id(
        &key,
        UserId::from_bytes([n; 32]),
        DeviceId::from_bytes([n; 16]),
        UnixMillis(0),
        u64::MAX / 2,
        &mut rng,
    )
    .unwrap()
}

fn members(devices: &[DeviceIdentity]) -> Vec<(DeviceId, VerifyingKey)> {
    devices
        .iter()
        .map(|d| (d.device_id(), *d.public().signing_key()))
        .collect()
}

/// Rounds for `devices`, nonces from `rng`.
fn rounds(devices: &[DeviceIdentity], rng: &mut ChaCha20Rng) -> Vec<SasRound> {
    devices
        .iter()
        .map(|d| {
            let mut nonce = [0u8; 32];
            rng.fill_bytes(&mut nonce);
            SasRound::new(&MEETING, Epoch(5), d.device_id(), members(devices), nonce)
        })
        .collect()
}

/// Delivers every queued message to every other round until quiet.
fn settle(devices: &[DeviceIdentity], rounds: &mut [SasRound]) {
    loop {
        let mut sent = Vec::new();
        for (i, r) in rounds.iter_mut().enumerate() {
            while let Some(m) = r.poll_message(&devices[i]) {
                sent.push((i, m));
            }
        }
        if sent.is_empty() {
            return;
        }
        for (from, m) in sent {
            for (i, r) in rounds.iter_mut().enumerate() {
                if i != from {
                    r.on_message(&m).unwrap();
                }
            }
        }
    }
}

#[test]
fn three_devices_agree_on_the_words_after_committing_and_revealing() {
    let devices: Vec<DeviceIdentity> = (1..=3).map(device).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut rounds = rounds(&devices, &mut rng);
    settle(&devices, &mut rounds);
    let all: Vec<_> = rounds.iter().map(|r| r.nonces().unwrap()).collect();
    assert!(all.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(all[0].len(), 3);
}

/// The defence: no device reveals its nonce while any roster device has not committed,
/// so whoever commits last has seen no nonce. (Revealing at once would let the last
/// device pick its nonce, and with it the words.)
#[test]
fn no_nonce_is_revealed_before_every_participant_has_committed() {
    let devices: Vec<DeviceIdentity> = (1..=3).map(device).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut rounds = rounds(&devices, &mut rng);
    // Devices 1 and 2 exchange everything they have; device 3 stays silent.
    for _ in 0..3 {
        let mut sent = Vec::new();
        for i in 0..2 {
            while let Some(m) = rounds[i].poll_message(&devices[i]) {
                sent.push((i, m));
            }
        }
        for (from, m) in sent {
            assert!(
                matches!(m.step, Some(Step::Commitment(_))),
                "device {from} revealed before device 3 committed"
            );
            rounds[1 - from].on_message(&m).unwrap();
        }
    }
    assert!(!rounds[0].is_complete());
    assert_eq!(
        rounds[0].waiting_for().len(),
        2,
        "still waiting for 2 and 3"
    );
    // Device 3 commits: now 1 and 2 reveal.
    let commit = rounds[2].poll_message(&devices[2]).unwrap();
    rounds[0].on_message(&commit).unwrap();
    let reveal = rounds[0].poll_message(&devices[0]).unwrap();
    assert!(matches!(reveal.step, Some(Step::Nonce(_))));
}

#[test]
fn forged_changed_or_mismatched_messages_are_refused() {
    let devices: Vec<DeviceIdentity> = (1..=3).map(device).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut rounds = rounds(&devices, &mut rng);
    let commit = rounds[1].poll_message(&devices[1]).unwrap();

    // Signed by another device.
    let mut forged = commit.clone();
    forged.device_id = devices[2].device_id().as_bytes().to_vec();
    assert_eq!(rounds[0].on_message(&forged), Err(SasError::BadSignature));
    // Another epoch.
    let mut other = commit.clone();
    other.epoch = 6;
    assert!(matches!(
        rounds[0].on_message(&other),
        Err(SasError::OtherEpoch { got: 6, current: 5 })
    ));
    // Not on the roster.
    let outsider = device(7);
    let mut stranger = SasRound::new(
        &MEETING,
        Epoch(5),
        outsider.device_id(),
        members(&[device(7)]),
        [1; 32],
    );
    let m = stranger.poll_message(&outsider).unwrap();
    assert_eq!(rounds[0].on_message(&m), Err(SasError::NotParticipant));
    // A nonce before its commitment.
    let from_3 = rounds[2].own_messages(&devices[2])[0].clone();
    let from_1 = rounds[0].own_messages(&devices[0])[0].clone();
    rounds[1].on_message(&from_3).unwrap();
    rounds[1].on_message(&from_1).unwrap();
    let reveal = rounds[1].poll_message(&devices[1]).unwrap();
    assert!(matches!(reveal.step, Some(Step::Nonce(_))));
    let mut fresh = SasRound::new(
        &MEETING,
        Epoch(5),
        devices[0].device_id(),
        members(&devices),
        [3; 32],
    );
    assert_eq!(fresh.on_message(&reveal), Err(SasError::BadReveal));
    // The genuine commitment, then a second, different one from the same device.
    fresh.on_message(&commit).unwrap();
    let mut again = SasRound::new(
        &MEETING,
        Epoch(5),
        devices[1].device_id(),
        members(&devices),
        [4; 32],
    );
    let second = again.poll_message(&devices[1]).unwrap();
    assert_eq!(fresh.on_message(&second), Err(SasError::Equivocation));
    // A nonce that does not match the commitment.
    let mut wrong = SasRound::new(
        &MEETING,
        Epoch(5),
        devices[1].device_id(),
        members(&devices),
        [4; 32],
    );
    for d in &devices {
        wrong.commitments.entry(d.device_id()).or_insert([0; 32]);
    }
    wrong.reveal_if_ready();
    let _ = wrong.poll_message(&devices[1]);
    let bad_reveal = wrong.poll_message(&devices[1]).unwrap();
    assert!(matches!(bad_reveal.step, Some(Step::Nonce(_))));
    assert_eq!(fresh.on_message(&bad_reveal), Err(SasError::BadReveal));
    // The genuine reveal is accepted.
    fresh.on_message(&reveal).unwrap();
}

/// Review M4: a key leader in the middle grinds its own choice (here the meeting id)
/// offline until the old, commitment-free words of its meeting with Bob equal the
/// words Alice sees. That works in about 65,536 tries. With the round, the words also
/// depend on Bob's nonce, revealed only after the attacker committed, so the ground
/// meeting id buys nothing.
#[test]
fn a_leader_grinding_the_meeting_id_cannot_choose_the_safety_words() {
    let target = [0x42u8, 0x17];
    let roster: Vec<RosterIdentity> = Vec::new();
    let old_words = |meeting: &[u8; 32]| -> [u8; 2] {
        // The pre-review words: the first two bytes of the safety number's derivation,
        // from public values the leader chooses.
        let mut okm = [0u8; 62];
        let ikm = super::super::transcript_hash(meeting, Epoch(1), &[0; 32], &roster);
        hkdf::Hkdf::<sha2::Sha512>::new(None, &ikm)
            .expand(b"conclave.safety.v2 code", &mut okm)
            .unwrap();
        [okm[0], okm[1]]
    };
    let mut meeting = [0u8; 32];
    let found = (0u32..1 << 20).find_map(|i| {
        meeting[..4].copy_from_slice(&i.to_be_bytes());
        (old_words(&meeting) == target).then_some(meeting)
    });
    let ground = found.expect("the old words are found by grinding");
    let _ = SafetyCode::compute(&ground, Epoch(1), &[0; 32], &roster);

    // Now the words take every device's revealed nonce; Bob's is random.
    let attacker_nonce = [5u8; 32];
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let hits = (0..64)
        .filter(|_| {
            let mut bob_nonce = [0u8; 32];
            rng.fill_bytes(&mut bob_nonce);
            let words = SafetyWords::compute(
                &ground,
                Epoch(1),
                &roster,
                &[([1; 16], attacker_nonce), ([2; 16], bob_nonce)],
            );
            words.bytes == target
        })
        .count();
    assert_eq!(hits, 0, "the ground meeting id no longer decides the words");
}

#[test]
fn a_resent_step_is_accepted_without_changing_the_round_and_a_changed_one_is_still_refused() {
    let devices: Vec<DeviceIdentity> = (1..=3).map(device).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut rounds = rounds(&devices, &mut rng);
    let commit = rounds[1].poll_message(&devices[1]).unwrap();
    rounds[0].on_message(&commit).unwrap();
    let before = rounds[0].waiting_for();
    // The same step again (a resend), even with its signature mangled: nothing new.
    let mut resent = commit.clone();
    resent.signature = vec![0; 64];
    assert_eq!(rounds[0].on_message(&resent), Ok(()));
    assert_eq!(rounds[0].waiting_for(), before);
    // A different commitment under a mangled signature is still a forgery.
    let mut changed = resent.clone();
    changed.step = Some(Step::Commitment(vec![7; 32]));
    assert_eq!(rounds[0].on_message(&changed), Err(SasError::BadSignature));
    // A nonce that does not match the held commitment is refused, whatever it carries.
    let mut early = resent;
    early.step = Some(Step::Nonce(vec![7; 32]));
    assert_eq!(rounds[0].on_message(&early), Err(SasError::BadReveal));
}

/// Only commitments are signature-checked: a nonce is authenticated by the signed
/// commitment it must match (only its device knows a preimage until it reveals it).
/// A genuine reveal stripped of its signature completes the round with the same
/// nonces; a nonce claimed for a device whose commitment it does not match, or one
/// for a device whose commitment has not arrived, is refused.
#[test]
fn a_nonce_is_authenticated_by_the_signed_commitment_it_matches() {
    let devices: Vec<DeviceIdentity> = (1..=3).map(device).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut rounds = rounds(&devices, &mut rng);
    let commits: Vec<_> = (0..3)
        .map(|i| rounds[i].poll_message(&devices[i]).unwrap())
        .collect();

    // Device 2 reveals; its nonce reaches device 1 before device 2's commitment does.
    rounds[1].on_message(&commits[0]).unwrap();
    rounds[1].on_message(&commits[2]).unwrap();
    let reveal_2 = rounds[1].poll_message(&devices[1]).unwrap();
    let Some(Step::Nonce(nonce_2)) = reveal_2.step.clone() else {
        panic!("device 2 reveals once it holds every commitment")
    };
    let mut unsigned = reveal_2.clone();
    unsigned.signature.clear();
    assert_eq!(rounds[0].on_message(&unsigned), Err(SasError::BadReveal));

    // With the commitments held: device 2's nonce claimed for device 3, or another
    // nonce for device 2 (validly signed by device 2), is refused.
    rounds[0].on_message(&commits[1]).unwrap();
    rounds[0].on_message(&commits[2]).unwrap();
    let mut as_device_3 = unsigned.clone();
    as_device_3.device_id = devices[2].device_id().as_bytes().to_vec();
    assert_eq!(rounds[0].on_message(&as_device_3), Err(SasError::BadReveal));
    let mut wrong = [0u8; 32];
    wrong.copy_from_slice(&nonce_2);
    wrong[0] ^= 1;
    let signature =
        devices[1]
            .signing_key()
            .sign(&rounds[1].signing_input(&devices[1].device_id(), 2, &wrong));
    let signed_wrong = v1::SasRoundMessage {
        step: Some(Step::Nonce(wrong.to_vec())),
        signature: signature.to_bytes().to_vec(),
        ..reveal_2.clone()
    };
    assert_eq!(
        rounds[0].on_message(&signed_wrong),
        Err(SasError::BadReveal)
    );
    // Claiming to be device 1 itself (to device 1) with a value it never sent: a
    // forgery, still refused as one.
    let mut as_me = signed_wrong.clone();
    as_me.device_id = devices[0].device_id().as_bytes().to_vec();
    assert_eq!(rounds[0].on_message(&as_me), Err(SasError::BadSignature));
    assert_eq!(rounds[0].waiting_for().len(), 2, "devices 2 and 3");

    // The genuine nonce without any signature is accepted; the round completes alike.
    assert_eq!(rounds[0].on_message(&unsigned), Ok(()));
    assert_eq!(rounds[0].waiting_for(), vec![devices[2].device_id()]);
    rounds[2].on_message(&commits[0]).unwrap();
    rounds[2].on_message(&commits[1]).unwrap();
    rounds[2].on_message(&reveal_2).unwrap();
    settle(&devices, &mut rounds);
    assert!(rounds.iter().all(SasRound::is_complete));
    assert_eq!(rounds[0].nonces(), rounds[1].nonces());
    assert_eq!(rounds[0].nonces(), rounds[2].nonces());
}
