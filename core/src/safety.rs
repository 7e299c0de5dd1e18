//! Meeting safety codes: what participants compare to detect a substituted key.
//!
//! Every participant of a meeting derives, for each epoch, the same [`SafetyCode`]
//! from public values it already holds: the meeting id, the epoch number, the epoch's
//! key commitment and, for every device on the roster, its user's identity key, its
//! sender index and its device keys (the Ed25519 signing key and the P-384 device key
//! of its certificate, which are what meeting keys are sealed to). Participants
//! read the code to each other (or compare it on screen); if a server or attacker
//! substituted an identity key or a device key, added a hidden device, gave
//! participants different sender-index assignments or different epoch keys, their
//! codes differ.
//!
//! Participants compare two things:
//! * the **60-digit safety number** ([`SafetyCode`]) in 12 groups of 5 digits, for a
//!   thorough comparison (the same presentation as Signal's safety numbers), derived
//!   below from public values alone;
//! * two **safety words** ([`SafetyWords`]) from the [PGP word list] (the first from the
//!   two-syllable "even" list, the second from the three-syllable "odd" list), quick to
//!   say aloud at the start of a call. Sixteen bits could be ground offline by a
//!   participant in the middle who chooses a meeting id or key (security review M4),
//!   so the words also depend on a random nonce from *every* device, each committed
//!   to before any is revealed ([`round`], protocol 7.1): nobody can choose them.
//!
//! # Derivation (protocol `conclave.safety.v2`)
//!
//! This derivation is part of the protocol: every client must implement it bit for
//! bit, and changing it requires a new version label.
//!
//! 1. **Canonical roster.** Sort the roster entries by their encoding below
//!    (`user_id || device_id || identity_key || u32be(sender_index) ||
//!    device_signing_key || device_key`), compared as unsigned bytes,
//!    lexicographically, then remove exact duplicates. Every participant therefore
//!    hashes the same input whatever order it learned the roster in. Entries that
//!    differ in any field are all kept, so two different keys or indices announced
//!    for the same device both enter the code.
//! 2. **Transcript.** With `||` meaning concatenation and `n` the number of canonical
//!    entries:
//!    ```text
//!    transcript = "conclave.safety.v2"            (18 ASCII bytes, no terminator)
//!              || meeting_id                      (32 bytes)
//!              || u64be(epoch)                    (8 bytes)
//!              || key_commitment                  (32 bytes)
//!              || u32be(n)                        (4 bytes)
//!              || for each canonical entry, in order:
//!                     user_id (32) || device_id (16) || identity_key (32)
//!                  || u32be(sender_index) (4) || device_signing_key (32)
//!                  || device_key (49, SEC1 compressed P-384)
//!    ```
//! 3. **Key derivation.** `ikm = SHA-512(transcript)`, then HKDF-SHA512 (RFC 5869)
//!    with no salt (that is, 64 zero bytes), `info = "conclave.safety.v2 code"`, expanded
//!    to 62 bytes `okm[0..62]`.
//! 4. `okm[0..2]` is not used (until security review 1 it chose two words; the words
//!    now come from [`SafetyWords`]).
//! 5. **Number.** `okm[2..62]` is split into 12 groups of 5 bytes. Each group is read
//!    as a 40-bit big-endian unsigned integer, reduced modulo 100 000 and written as 5
//!    decimal digits with leading zeros. The 12 groups in order form the 60 digits.
//!
//! The derivation uses no clock, randomness or I/O; equal inputs always give equal
//! codes.
//!
//! [PGP word list]: pgp_words

pub mod pgp_words;
pub mod round;

use core::cmp::Ordering;
use core::fmt;

use hkdf::Hkdf;
use sha2::{Digest, Sha512};
use subtle::{Choice, ConstantTimeEq};

use crate::identity::{VerifiedDevice, p384_compressed};
use crate::meeting::Epoch;

/// Version label that starts the transcript.
const TRANSCRIPT_LABEL: &[u8] = b"conclave.safety.v2";
/// HKDF `info` for the code bytes.
const HKDF_INFO: &[u8] = b"conclave.safety.v2 code";
/// Bytes of derived output used per digit group.
const GROUP_BYTES: usize = 5;
/// Decimal digits per group.
const GROUP_DIGITS: usize = 5;
/// Number of digit groups.
const GROUPS: usize = 12;
/// Total HKDF output: two word bytes followed by the digit groups.
const OKM_LEN: usize = 2 + GROUPS * GROUP_BYTES;

const _: () = assert!(OKM_LEN == 62);
// HKDF-Expand accepts at most 255 * HashLen bytes (64 for SHA-512).
const _: () = assert!(OKM_LEN <= 255 * 64);

/// One participant device's identity as it enters the safety code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RosterIdentity {
    /// The user's identifier.
    pub user_id: [u8; 32],
    /// The device's identifier, unique within the user.
    pub device_id: [u8; 16],
    /// The user's Ed25519 identity public key, as this participant knows it.
    pub identity_key: [u8; 32],
    /// The device's SFrame sender index in the meeting.
    pub sender_index: u32,
    /// The device's Ed25519 signing public key (from its certificate).
    pub device_signing_key: [u8; 32],
    /// The device's static P-384 device key, SEC1 compressed (from its certificate).
    pub device_key: [u8; 49],
}

impl RosterIdentity {
    /// The entry of `device` (whose certificate verified under `identity_key`) at
    /// `sender_index`.
    #[must_use]
    pub fn new(identity_key: &[u8; 32], device: &VerifiedDevice, sender_index: u32) -> Self {
        RosterIdentity {
            user_id: *device.user_id().as_bytes(),
            device_id: *device.device_id().as_bytes(),
            identity_key: *identity_key,
            sender_index,
            device_signing_key: device.signing_key().to_bytes(),
            device_key: p384_compressed(device.device_key())
                .as_slice()
                .try_into()
                .expect("a SEC1 compressed P-384 point is 49 bytes"),
        }
    }

    /// The entry's bytes in the transcript (step 2 of the module docs).
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        let parts: [&[u8]; 6] = [
            &self.user_id,
            &self.device_id,
            &self.identity_key,
            &self.sender_index.to_be_bytes(),
            &self.device_signing_key,
            &self.device_key,
        ];
        let mut at = 0;
        for part in parts {
            if let Some(slot) = out.get_mut(at..at + part.len()) {
                slot.copy_from_slice(part);
            }
            at += part.len();
        }
        out
    }

    /// The canonical order of the transcript: the encodings, compared bytewise.
    fn canonical_cmp(&self, other: &Self) -> Ordering {
        self.encode().cmp(&other.encode())
    }
}

/// Bytes of one encoded roster entry.
const ENTRY_LEN: usize = 32 + 16 + 32 + 4 + 32 + 49;

/// The safety number of one meeting epoch: 60 digits.
///
/// Equality ([`PartialEq`] and [`ConstantTimeEq`]) compares the digits in constant
/// time.
#[derive(Clone)]
pub struct SafetyCode {
    /// Exactly [`SafetyCode::NUMBER_DIGITS`] ASCII digits.
    number: String,
}

impl SafetyCode {
    /// Number of decimal digits in [`SafetyCode::number`].
    pub const NUMBER_DIGITS: usize = GROUPS * GROUP_DIGITS;
    /// Number of 5-digit groups yielded by [`SafetyCode::number_groups`].
    pub const NUMBER_GROUPS: usize = GROUPS;

    /// Derives the safety code of `epoch` of meeting `meeting_id`, whose epoch key
    /// commitment is `key_commitment`, for the devices in `roster`.
    ///
    /// The order of `roster` does not matter and exact duplicate entries are ignored;
    /// see the [module documentation](self) for the exact derivation. An empty roster
    /// is accepted and gives a well-defined code.
    ///
    /// The `identity_key` of each roster entry must be the key this participant has
    /// pinned locally for that user (its own real key for itself), never a value taken
    /// from a received roster: otherwise a server substituting keys on both sides could
    /// make the codes match.
    #[must_use]
    pub fn compute(
        meeting_id: &[u8; 32],
        epoch: Epoch,
        key_commitment: &[u8; 32],
        roster: &[RosterIdentity],
    ) -> SafetyCode {
        let ikm = transcript_hash(meeting_id, epoch, key_commitment, roster);
        let hkdf = Hkdf::<Sha512>::new(None, &ikm);
        let mut okm = [0u8; OKM_LEN];
        // HKDF-Expand fails only when asked for more than 255 * 64 bytes; OKM_LEN is
        // 62, checked at compile time above, so this cannot fail.
        #[allow(clippy::expect_used)]
        hkdf.expand(HKDF_INFO, &mut okm)
            .expect("62 bytes is within the HKDF-SHA512 output limit");
        Self::from_okm(okm)
    }

    /// Formats the derived bytes as digits.
    fn from_okm(okm: [u8; OKM_LEN]) -> SafetyCode {
        let [_, _, groups @ ..] = okm;
        let mut number = String::with_capacity(Self::NUMBER_DIGITS);
        for group in groups.chunks_exact(GROUP_BYTES) {
            let value = group
                .iter()
                .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
            // 2^40 = 10 995 116 * 10^5 + 27 776, so a residue occurs either 10 995 117
            // or 10 995 116 times: a relative bias below 1e-7, which is negligible.
            number.push_str(&format!("{:05}", value % 100_000));
        }
        SafetyCode { number }
    }

    /// The safety number: exactly 60 ASCII digits, without separators.
    #[must_use]
    pub fn number(&self) -> &str {
        &self.number
    }

    /// The safety number as 12 groups of 5 digits, in order.
    pub fn number_groups(&self) -> impl Iterator<Item = &str> {
        (0..GROUPS).filter_map(move |group| {
            self.number
                .get(group * GROUP_DIGITS..(group + 1) * GROUP_DIGITS)
        })
    }
}

impl ConstantTimeEq for SafetyCode {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.number.as_bytes().ct_eq(other.number.as_bytes())
    }
}

impl PartialEq for SafetyCode {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for SafetyCode {}

/// `"07380 94396 …"`: the 12 digit groups separated by spaces.
impl fmt::Display for SafetyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for group in self.number_groups() {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(group)?;
            first = false;
        }
        Ok(())
    }
}

impl fmt::Debug for SafetyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetyCode")
            .field("number", &self.number)
            .finish()
    }
}

/// Label of the safety-words transcript.
const WORDS_LABEL: &[u8] = b"conclave.safety-words.v1";
/// HKDF `info` for the word bytes.
const WORDS_INFO: &[u8] = b"conclave.safety-words.v1 words";

/// The two safety words of one meeting epoch, from a completed commitment round
/// ([`round::SasRound`]); compare them aloud. Every participant that completed the
/// round with the same roster and the same nonces gets the same words.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SafetyWords {
    bytes: [u8; 2],
    epoch: Epoch,
}

impl SafetyWords {
    /// The words of `epoch` of meeting `meeting_id` for `roster` (as for
    /// [`SafetyCode::compute`]) and the revealed nonce of every roster device.
    ///
    /// ```text
    /// transcript = "conclave.safety-words.v1" || meeting_id || u64be(epoch)
    ///           || u32be(n) || canonical roster entries (as for the number)
    ///           || u32be(m) || for each nonce, by device id: device_id (16) || nonce (32)
    /// words      = HKDF-SHA512(ikm = SHA-512(transcript), no salt,
    ///                          info = "conclave.safety-words.v1 words", 2 bytes)
    /// ```
    /// `words[0]` selects the even-list word, `words[1]` the odd-list word.
    #[must_use]
    pub fn compute(
        meeting_id: &[u8; 32],
        epoch: Epoch,
        roster: &[RosterIdentity],
        nonces: &[([u8; 16], [u8; 32])],
    ) -> SafetyWords {
        let mut entries: Vec<[u8; ENTRY_LEN]> = roster.iter().map(RosterIdentity::encode).collect();
        entries.sort_unstable();
        entries.dedup();
        let mut nonces = nonces.to_vec();
        nonces.sort_unstable();
        nonces.dedup();
        let mut hash = Sha512::new();
        hash.update(WORDS_LABEL);
        hash.update(meeting_id);
        hash.update(epoch.get().to_be_bytes());
        hash.update(
            u32::try_from(entries.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for entry in &entries {
            hash.update(entry);
        }
        hash.update(
            u32::try_from(nonces.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (device, nonce) in &nonces {
            hash.update(device);
            hash.update(nonce);
        }
        let ikm = hash.finalize();
        let mut bytes = [0u8; 2];
        // Two bytes are far within the HKDF-SHA512 output limit.
        #[allow(clippy::expect_used)]
        Hkdf::<Sha512>::new(None, &ikm)
            .expand(WORDS_INFO, &mut bytes)
            .expect("2 bytes is within the HKDF-SHA512 output limit");
        SafetyWords { bytes, epoch }
    }

    /// The two words: the first from the even (two-syllable) list, the second from the
    /// odd (three-syllable) list.
    #[must_use]
    pub fn words(&self) -> [&'static str; 2] {
        let [even, odd] = self.bytes;
        [pgp_words::even_word(even), pgp_words::odd_word(odd)]
    }

    /// The meeting epoch these words belong to.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
}

/// `"brickyard backwater"`.
impl fmt::Display for SafetyWords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [even, odd] = self.words();
        write!(f, "{even} {odd}")
    }
}

impl fmt::Debug for SafetyWords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetyWords")
            .field("words", &self.words())
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// `SHA-512(transcript)` for the canonical roster (steps 1–3 of the module docs).
fn transcript_hash(
    meeting_id: &[u8; 32],
    epoch: Epoch,
    key_commitment: &[u8; 32],
    roster: &[RosterIdentity],
) -> [u8; 64] {
    let mut entries: Vec<&RosterIdentity> = roster.iter().collect();
    entries.sort_unstable_by(|a, b| a.canonical_cmp(b));
    entries.dedup();
    // A roster of 2^32 distinct devices (over 300 GiB of identities) cannot exist in
    // memory; saturating keeps this total without a panic path.
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);

    let mut hash = Sha512::new();
    hash.update(TRANSCRIPT_LABEL);
    hash.update(meeting_id);
    hash.update(epoch.get().to_be_bytes());
    hash.update(key_commitment);
    hash.update(count.to_be_bytes());
    for entry in entries {
        hash.update(entry.encode());
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEETING: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];
    const EPOCH: Epoch = Epoch(0x0102_0304_0506_0708);
    const COMMITMENT: [u8; 32] = [0xAB; 32];

    fn identity(user: u8, device: u8, key: u8) -> RosterIdentity {
        RosterIdentity {
            user_id: [user; 32],
            device_id: [device; 16],
            identity_key: [key; 32],
            sender_index: u32::from(device),
            device_signing_key: [key ^ 0x5A; 32],
            device_key: [key ^ 0xA5; 49],
        }
    }

    /// Three devices: two of user 1, one of user 2.
    fn roster() -> Vec<RosterIdentity> {
        vec![
            identity(2, 1, 0x10),
            identity(1, 2, 0x20),
            identity(1, 1, 0x30),
        ]
    }

    fn code(roster: &[RosterIdentity]) -> SafetyCode {
        SafetyCode::compute(&MEETING, EPOCH, &COMMITMENT, roster)
    }

    /// Values computed once with an independent implementation of the derivation in
    /// the module docs (Python `hashlib` and `hmac`, not this code). If this test
    /// fails, the protocol changed: that needs a new version label, not a new pin.
    #[test]
    fn known_answer_is_pinned() {
        let mut input = roster();
        input.push(identity(2, 1, 0x10)); // an exact duplicate, ignored
        let code = code(&input);
        assert_eq!(
            code.number(),
            "984406723814022699077543525259351763559706582472774804883181"
        );
        assert_eq!(
            code.to_string(),
            "98440 67238 14022 69907 75435 25259 35176 35597 06582 47277 48048 83181"
        );
    }

    #[test]
    fn empty_roster_does_not_panic_and_is_pinned() {
        let code = code(&[]);
        assert_eq!(
            code.number(),
            "409603061399827408121167672842500495905082274946080159460943"
        );
        assert_ne!(code, self::code(&roster()));
    }

    #[test]
    fn same_inputs_same_code_regardless_of_roster_order() {
        let base = roster();
        let expected = code(&base);
        let [a, b, c] = [base[0], base[1], base[2]];
        let orders = [
            [a, b, c],
            [a, c, b],
            [b, a, c],
            [b, c, a],
            [c, a, b],
            [c, b, a],
        ];
        for order in orders {
            assert_eq!(code(&order), expected, "order {order:?}");
        }
    }

    #[test]
    fn exact_duplicates_do_not_change_code() {
        let base = roster();
        let mut doubled = base.clone();
        doubled.extend_from_slice(&base);
        doubled.push(base[1]);
        assert_eq!(code(&doubled), code(&base));
    }

    #[test]
    fn different_epoch_changes_code() {
        let roster = roster();
        let a = SafetyCode::compute(&MEETING, EPOCH, &COMMITMENT, &roster);
        let b = SafetyCode::compute(&MEETING, Epoch(EPOCH.get() + 1), &COMMITMENT, &roster);
        assert_ne!(a, b);
        assert_ne!(a.number(), b.number());
    }

    #[test]
    fn different_commitment_changes_code() {
        let roster = roster();
        let mut other = COMMITMENT;
        other[31] ^= 1;
        let a = SafetyCode::compute(&MEETING, EPOCH, &COMMITMENT, &roster);
        let b = SafetyCode::compute(&MEETING, EPOCH, &other, &roster);
        assert_ne!(a, b);
        assert_ne!(a.number(), b.number());
    }

    #[test]
    fn different_meeting_changes_code() {
        let roster = roster();
        let mut other = MEETING;
        other[0] ^= 1;
        let a = SafetyCode::compute(&MEETING, EPOCH, &COMMITMENT, &roster);
        let b = SafetyCode::compute(&other, EPOCH, &COMMITMENT, &roster);
        assert_ne!(a, b);
    }

    /// A substituted identity key must change what users compare.
    #[test]
    fn different_identity_key_changes_code() {
        let honest = roster();
        let expected = code(&honest);
        for victim in 0..honest.len() {
            for bit in [0usize, 7, 255] {
                let mut attacked = honest.clone();
                attacked[victim].identity_key[bit / 8] ^= 1 << (bit % 8);
                let substituted = code(&attacked);
                assert_ne!(substituted, expected, "entry {victim}, bit {bit}");
                assert_ne!(substituted.number(), expected.number());
            }
        }
    }

    #[test]
    fn second_key_for_same_device_changes_code() {
        let honest = roster();
        let mut forked = honest.clone();
        let mut extra = honest[0];
        extra.identity_key = [0x99; 32];
        forked.push(extra);
        assert_ne!(code(&forked), code(&honest));
    }

    /// The device keys (what meeting keys are sealed to) and the sender indices are in
    /// the transcript (review M4): a leader cannot give participants different
    /// index-to-device mappings, nor a directory substitute a device key, with
    /// matching codes.
    #[test]
    fn device_keys_and_sender_indices_change_code() {
        let honest = roster();
        let expected = code(&honest);
        for victim in 0..honest.len() {
            let mut signing = honest.clone();
            signing[victim].device_signing_key[0] ^= 1;
            assert_ne!(code(&signing), expected, "signing key of entry {victim}");
            let mut device = honest.clone();
            device[victim].device_key[48] ^= 1;
            assert_ne!(code(&device), expected, "device key of entry {victim}");
            let mut index = honest.clone();
            index[victim].sender_index ^= 1;
            assert_ne!(code(&index), expected, "sender index of entry {victim}");
        }
        let mut swapped = honest.clone();
        let (a, b) = (swapped[0].sender_index, swapped[1].sender_index);
        swapped[0].sender_index = b;
        swapped[1].sender_index = a;
        assert_ne!(code(&swapped), expected, "two devices swap sender indices");
    }

    #[test]
    fn added_or_removed_device_changes_code() {
        let honest = roster();
        let mut added = honest.clone();
        added.push(identity(3, 1, 0x40));
        assert_ne!(code(&added), code(&honest));
        assert_ne!(code(&honest[..2]), code(&honest));
    }

    #[test]
    fn number_is_sixty_digits_in_twelve_groups() {
        let code = code(&roster());
        assert_eq!(code.number().len(), 60);
        assert_eq!(code.number().len(), SafetyCode::NUMBER_DIGITS);
        assert!(code.number().bytes().all(|b| b.is_ascii_digit()));

        let groups: Vec<&str> = code.number_groups().collect();
        assert_eq!(groups.len(), 12);
        assert_eq!(groups.len(), SafetyCode::NUMBER_GROUPS);
        assert!(groups.iter().all(|g| g.len() == 5));
        assert_eq!(groups.concat(), code.number());
    }

    #[test]
    fn words_come_from_even_then_odd_list() {
        for epoch in 0..64 {
            let words =
                SafetyWords::compute(&MEETING, Epoch(epoch), &roster(), &[([1; 16], [2; 32])]);
            let [first, second] = words.words();
            assert!(pgp_words::EVEN_WORDS.contains(&first), "{first}");
            assert!(pgp_words::ODD_WORDS.contains(&second), "{second}");
        }
    }

    #[test]
    fn words_depend_on_every_nonce_and_not_on_their_order() {
        let nonces = [([1; 16], [7; 32]), ([2; 16], [8; 32])];
        let a = SafetyWords::compute(&MEETING, Epoch(3), &roster(), &nonces);
        let swapped = [nonces[1], nonces[0]];
        assert_eq!(
            a,
            SafetyWords::compute(&MEETING, Epoch(3), &roster(), &swapped)
        );
        let differ = (0..=255u8)
            .filter(|n| {
                let other = [nonces[0], ([2; 16], [*n; 32])];
                SafetyWords::compute(&MEETING, Epoch(3), &roster(), &other) != a
            })
            .count();
        assert!(
            differ >= 250,
            "one device's nonce moves the words: {differ}"
        );
    }

    #[test]
    fn groups_are_zero_padded_forty_bit_values_mod_100000() {
        let mut okm = [0u8; OKM_LEN];
        // Group 0: 0x00_0000_0001 = 1 -> "00001".
        okm[6] = 1;
        // Group 1: 0xFF_FFFF_FFFF = 2^40 - 1 = 1 099 511 627 775 -> "27775".
        okm[7..12].copy_from_slice(&[0xFF; 5]);
        // Group 2: 0x01_0000_0000 = 2^32 = 4 294 967 296 -> "67296".
        okm[12] = 1;
        let code = SafetyCode::from_okm(okm);
        let groups: Vec<&str> = code.number_groups().collect();
        assert_eq!(&groups[..3], ["00001", "27775", "67296"]);
        assert!(groups[3..].iter().all(|g| *g == "00000"));
    }

    #[test]
    fn display_shows_the_groups() {
        let okm = [0u8; OKM_LEN];
        let code = SafetyCode::from_okm(okm);
        assert_eq!(code.to_string(), ["00000"; 12].join(" "));
        let words = SafetyWords {
            bytes: [0xFF, 0xFF],
            epoch: Epoch(1),
        };
        assert_eq!(words.to_string(), "Zulu Yucatan");
    }

    #[test]
    fn equality_compares_the_digits() {
        let a = code(&roster());
        assert_eq!(a, a.clone());
        assert!(bool::from(a.ct_eq(&a.clone())));

        let mut okm = [0u8; OKM_LEN];
        let zero = SafetyCode::from_okm(okm);
        okm[OKM_LEN - 1] = 1;
        let other_digit = SafetyCode::from_okm(okm);
        assert_ne!(zero, other_digit);
        assert!(!bool::from(zero.ct_eq(&other_digit)));
    }

    #[test]
    fn debug_shows_the_number() {
        let text = format!("{:?}", code(&roster()));
        assert!(text.contains("984406723814"), "{text}");
    }
}
