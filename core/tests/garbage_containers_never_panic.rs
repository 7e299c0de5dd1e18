//! Bounded randomized test: random bytes and thousands of mutations of a genuinely
//! sealed container go through `SealedContainer::decode` and the full `open`; each is
//! refused with an error (never a panic), or, when the mutation happens to be a semantic
//! no-op, yields exactly the original payload. Failed attempts leave no state behind:
//! the genuine container still opens afterwards.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use conclave_core::container::{ContainerError, ReplayCache, SealedContainer};
use conclave_core::identity::PrekeyPool;
use conclave_core::test_util::NOW;
use conclave_core::test_util::containers::{Parties, SealedContainers, resign_container};
use conclave_core::test_util::protobuf::{
    Field, drop_field, fields, read_varint, repeat_field, replace_field, swap_fields,
    write_length_delimited, write_varint,
};
use conclave_core::time::DAY_MS;
use conclave_proto::v1::{self, container_payload::Body};
use conclave_proto::{Message, limits::MAX_CONTAINER_BYTES};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const RANDOM_INPUTS: usize = 2_000;
const FRAMED_RANDOM_INPUTS: usize = 200;
const MUTATED_INPUTS: usize = 3_000;
const RESIGNED_INPUTS: usize = 250;

// Seeds of the mutation streams (the parties have their own, in `test_util`).
const MUTATION_SEED: u64 = 6;
const RESIGN_SEED: u64 = 7;

fn invite() -> v1::ContainerPayload {
    v1::ContainerPayload {
        body: Some(Body::MeetingInvite(v1::MeetingInvite {
            meeting_id: vec![7; 32],
            epoch: 3,
            meeting_key: vec![0x5a; 32],
            media_kinds: vec![1, 2],
            key_leader_device_id: vec![9; 16],
            expires_at_ms: NOW.0 + DAY_MS,
            ..Default::default()
        })),
        ..Default::default()
    }
}

struct Fixture {
    /// `genuine` is sealed to `me` (prekey 1, the only one in `prekeys`) and to a decoy
    /// device; `donor`, from the same sender to `me` (prekey 2), carries another
    /// plaintext: the donor for splices.
    sealed: SealedContainers,
    prekeys: PrekeyPool,
    replay: ReplayCache,
    /// How many inputs ended in each outcome (error variant, or `Opened`).
    outcomes: BTreeMap<String, usize>,
}

impl Fixture {
    fn new() -> Self {
        let sealed = Parties::new().seal(invite(), "a different plaintext");
        Fixture {
            prekeys: sealed.parties.my_prekeys(),
            sealed,
            replay: ReplayCache::default(),
            outcomes: BTreeMap::new(),
        }
    }

    /// Decode and the full open, with the fixture's persistent pool and replay cache.
    fn try_open(&mut self, bytes: &[u8]) -> Result<v1::ContainerPayload, ContainerError> {
        let sealed = SealedContainer::decode(bytes)?;
        let parties = &self.sealed.parties;
        let opened = sealed.open(
            &parties.sender.user,
            &parties.me.device,
            &mut self.prekeys,
            &mut self.replay,
            NOW,
        )?;
        Ok(opened.payload().clone())
    }

    /// Runs one hostile input and checks the outcome. Returns whether it opened, and
    /// counts the outcome by error variant.
    fn check(&mut self, bytes: &[u8]) -> bool {
        match self.try_open(bytes) {
            Ok(payload) => {
                // Only a semantic no-op may open: same signed bytes, same plaintext.
                assert_eq!(
                    payload, self.sealed.payload,
                    "a mutation opened to another payload"
                );
                let wire = v1::Container::decode(bytes).unwrap();
                let genuine = self.sealed.genuine_wire();
                assert_eq!(wire.header, genuine.header);
                assert_eq!(wire.ciphertext, genuine.ciphertext);
                // The open spent prekey 1 and recorded the id: give the state back.
                assert!(self.prekeys.is_empty());
                assert_eq!(self.replay.len(), 1);
                self.prekeys = self.sealed.parties.my_prekeys();
                self.replay = ReplayCache::default();
                *self.outcomes.entry("Opened".into()).or_default() += 1;
                true
            }
            Err(err) => {
                assert!(!err.to_string().is_empty());
                // A failure leaves no state behind.
                assert_eq!(self.prekeys.len(), 1, "a failed open burnt a prekey: {err}");
                assert!(self.replay.is_empty(), "a failed open was recorded: {err}");
                let debug = format!("{err:?}");
                let variant = debug
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or_default();
                *self.outcomes.entry(variant.to_owned()).or_default() += 1;
                false
            }
        }
    }
}

fn random_bytes(rng: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Random bytes of a random length below `max_len`.
fn random_vec(rng: &mut ChaCha20Rng, max_len: usize) -> Vec<u8> {
    let len = below(rng, max_len);
    random_bytes(rng, len)
}

fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng.next_u32() as usize % n
    }
}

/// A protobuf-aware edit: reorders, duplicates, drops or borrows whole fields, adds
/// unknown fields, re-encodes lengths, or recurses into a nested message. Several of
/// these are semantic no-ops at the outer layer (prost ignores unknown fields, and the
/// last of repeated scalar fields wins), which must open to the same payload.
fn splice(rng: &mut ChaCha20Rng, bytes: &[u8], donor: &[u8], depth: u32) -> Option<Vec<u8>> {
    let own = fields(bytes)?;
    if own.is_empty() {
        return None;
    }
    let pick = &own[below(rng, own.len())];
    let mut out = Vec::with_capacity(bytes.len() + 64);
    // At the top, mostly recurse: the outer framing has only four fields, so most of
    // its edits are no-ops, and those are slow (they run the whole open).
    let op = if depth == 0 && below(rng, 3) != 0 {
        8
    } else {
        below(rng, 9)
    };
    match op {
        // Swap two fields.
        0 => out = swap_fields(bytes, pick, &own[below(rng, own.len())])?,
        // Repeat a field at the end.
        1 => out = repeat_field(bytes, pick),
        // Drop a field.
        2 => out = drop_field(bytes, pick),
        // Replace a field with the same-numbered field of the donor.
        3 => {
            let donor_fields = fields(donor)?;
            let same: Vec<&Field> = donor_fields
                .iter()
                .filter(|f| f.number == pick.number)
                .collect();
            let from = same.get(below(rng, same.len()))?;
            out = replace_field(bytes, pick, donor, from);
        }
        // An unknown field somewhere.
        4 => {
            let at = [pick.span.start, pick.span.end][below(rng, 2)];
            out.extend_from_slice(&bytes[..at]);
            let number = 16 + below(rng, 1000) as u64;
            if rng.next_u32() % 2 == 0 {
                write_varint(&mut out, number << 3);
                write_varint(&mut out, rng.next_u64());
            } else {
                let junk = random_vec(rng, 40);
                write_length_delimited(&mut out, number, &junk);
            }
            out.extend_from_slice(&bytes[at..]);
        }
        // Re-encode a length prefix with redundant continuation bytes.
        5 => {
            let contents = pick.contents.clone()?;
            out.extend_from_slice(&bytes[..pick.span.start]);
            write_varint(&mut out, (pick.number << 3) | 2);
            let mut len = contents.len() as u64;
            for _ in 0..7 {
                out.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend_from_slice(&bytes[contents.clone()]);
            out.extend_from_slice(&bytes[pick.span.end..]);
        }
        // Give a field another wire type.
        6 => {
            out.extend_from_slice(&bytes[..pick.span.start]);
            let mut pos = pick.span.start;
            let key = read_varint(bytes, &mut pos)?;
            write_varint(&mut out, (key & !7) | u64::from(rng.next_u32() % 8));
            out.extend_from_slice(&bytes[pos..]);
        }
        // Lie about a length.
        7 => {
            let contents = pick.contents.clone()?;
            out.extend_from_slice(&bytes[..pick.span.start]);
            write_varint(&mut out, (pick.number << 3) | 2);
            let lie = match rng.next_u32() % 3 {
                0 => contents.len() as u64 + 1 + below(rng, 8) as u64,
                1 => (contents.len() as u64).saturating_sub(1 + below(rng, 8) as u64),
                _ => rng.next_u64(),
            };
            write_varint(&mut out, lie);
            out.extend_from_slice(&bytes[contents.start..]);
        }
        // Recurse into a nested message (header, certificate, entries, ...) and splice
        // there against the donor's field of the same number.
        _ => {
            if depth >= 3 {
                return None;
            }
            let contents = pick.contents.clone()?;
            let donor_inner = fields(donor)
                .and_then(|d| d.into_iter().find(|f| f.number == pick.number))
                .and_then(|f| f.contents)
                .map_or(&[][..], |r| &donor[r]);
            let inner = splice(rng, &bytes[contents], donor_inner, depth + 1)?;
            out.extend_from_slice(&bytes[..pick.span.start]);
            write_length_delimited(&mut out, pick.number, &inner);
            out.extend_from_slice(&bytes[pick.span.end..]);
        }
    }
    Some(out)
}

/// Byte-level mutations: bit flips, overwrites, truncation, insertion, deletion and
/// duplicated slices.
fn mutate_bytes(rng: &mut ChaCha20Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + below(rng, 3) {
        let len = bytes.len();
        if len == 0 {
            bytes.push(rng.next_u32() as u8);
            continue;
        }
        match below(rng, 8) {
            // Length-preserving edits keep the framing intact, so they reach the
            // signature checks; the others mostly break the framing.
            0 | 1 => {
                for _ in 0..1 + below(rng, 4) {
                    let i = below(rng, len);
                    bytes[i] ^= 1 << below(rng, 8);
                }
            }
            2 => {
                let i = below(rng, len);
                bytes[i] = rng.next_u32() as u8;
            }
            3 => {
                let start = below(rng, len);
                let end = start + below(rng, (len - start).min(8)) + 1;
                rng.fill_bytes(&mut bytes[start..end]);
            }
            4 => bytes.truncate(below(rng, len)),
            5 => {
                let i = below(rng, len + 1);
                let n = 1 + below(rng, 16);
                let junk = random_bytes(rng, n);
                bytes.splice(i..i, junk);
            }
            6 => {
                let start = below(rng, len);
                let end = start + below(rng, (len - start).min(64)) + 1;
                bytes.drain(start..end);
            }
            _ => {
                let start = below(rng, len);
                let end = start + below(rng, (len - start).min(128)) + 1;
                let slice = bytes[start..end].to_vec();
                let at = below(rng, len + 1);
                bytes.splice(at..at, slice);
            }
        }
    }
}

#[test]
fn garbage_and_mutated_containers_never_panic() {
    let started = Instant::now();
    let mut fx = Fixture::new();
    let fixture_time = started.elapsed();
    let mut rng = ChaCha20Rng::seed_from_u64(MUTATION_SEED);

    // (a) Purely random byte strings.
    let phase = Instant::now();
    for _ in 0..RANDOM_INPUTS {
        let len = below(&mut rng, 4096);
        let bytes = random_bytes(&mut rng, len);
        assert!(!fx.check(&bytes), "random bytes opened");
    }
    // Random fields in a well-formed frame with the genuine certificate, so the
    // certificate check passes and the signature check is reached with garbage.
    let genuine_wire = fx.sealed.genuine_wire();
    for _ in 0..FRAMED_RANDOM_INPUTS {
        let signature_len = [64, 63, 65, 0][below(&mut rng, 4)];
        let wire = v1::Container {
            header: random_vec(&mut rng, 600),
            ciphertext: random_vec(&mut rng, 300),
            signature: random_bytes(&mut rng, signature_len),
            sender_certificate: genuine_wire.sender_certificate.clone(),
        };
        assert!(!fx.check(&wire.encode_to_vec()), "random fields opened");
    }
    let random_time = phase.elapsed();

    // (b) Mutations of the genuine container.
    let phase = Instant::now();
    let (mut opened, mut distinct) = (0usize, 0usize);
    let mut seen = HashSet::new();
    let mut attempts = 0usize;
    while distinct < MUTATED_INPUTS {
        attempts += 1;
        assert!(
            attempts < 2 * MUTATED_INPUTS,
            "too many duplicate mutations"
        );
        let mut bytes = fx.sealed.genuine.clone();
        if attempts % 3 == 0 {
            match splice(&mut rng, &bytes, &fx.sealed.donor, 0) {
                Some(spliced) => bytes = spliced,
                None => mutate_bytes(&mut rng, &mut bytes),
            }
        } else {
            mutate_bytes(&mut rng, &mut bytes);
        }
        // Each distinct mutation runs once: repeats would only re-test the same path.
        if bytes == fx.sealed.genuine || !seen.insert(bytes.clone()) {
            continue;
        }
        assert!(bytes.len() <= MAX_CONTAINER_BYTES);
        distinct += 1;
        opened += usize::from(fx.check(&bytes));
    }
    let mutation_time = phase.elapsed();
    // The splices include semantic no-ops (unknown fields, reordered or repeated
    // fields, padded lengths), so the success branch must have been exercised too.
    assert!(
        opened > 0,
        "no semantic no-op opened; the generator is too weak"
    );

    // The mutations must get past decoding into the cryptographic checks.
    for reached in ["SenderCertificate", "BadSignature", "Malformed"] {
        assert!(
            fx.outcomes.get(reached).copied().unwrap_or_default() > 50,
            "too few {reached} outcomes: {:?}",
            fx.outcomes
        );
    }
    assert!(
        opened < distinct / 10,
        "{opened} of {distinct} mutations opened: {:?}",
        fx.outcomes
    );

    // (c) None of the failures burnt the prekey or was recorded (each was also checked
    // on the spot; the state is rebuilt only after a semantic no-op opened): the
    // genuine container still opens, to the original payload, and only once.
    let payload = fx.try_open(&fx.sealed.genuine.clone()).unwrap();
    assert_eq!(payload, fx.sealed.payload);
    assert!(matches!(
        fx.try_open(&fx.sealed.genuine.clone()),
        Err(ContainerError::Replayed { .. })
    ));

    eprintln!(
        "fixture {fixture_time:?}; {} random inputs in {random_time:?}; \
         {distinct} distinct mutations of {attempts} ({opened} semantic no-ops opened) \
         in {mutation_time:?}",
        RANDOM_INPUTS + FRAMED_RANDOM_INPUTS
    );
    eprintln!("outcomes: {:?}", fx.outcomes);
}

#[test]
fn resigned_mutations_by_a_dishonest_sender_never_panic() {
    let started = Instant::now();
    let mut fx = Fixture::new();
    let mut rng = ChaCha20Rng::seed_from_u64(RESIGN_SEED);
    let genuine = fx.sealed.genuine_wire();
    let donor = fx.sealed.donor_wire();

    // Re-signing an unaltered container changes nothing: it opens (and checks that
    // `resign_container` matches the SDK's signing format, or the rest would prove little).
    let mut same = genuine.clone();
    resign_container(&fx.sealed.parties.sender.device, &mut same);
    assert_eq!(same.signature, genuine.signature);
    assert!(fx.check(&same.encode_to_vec()));

    // The signature now verifies, so the header checks, the replay check, the entry
    // lookup, both unwrap layers, the key commitment and the payload AEAD are what
    // must refuse the edits.
    let mut seen = HashSet::new();
    let mut attempts = 0usize;
    while seen.len() < RESIGNED_INPUTS {
        attempts += 1;
        assert!(
            attempts < 2 * RESIGNED_INPUTS,
            "too many duplicate mutations"
        );
        let mut wire = genuine.clone();
        // Ciphertext edits all end at the payload AEAD after two ECDHs (slow in debug
        // builds), so they are rarer than header edits.
        match below(&mut rng, 16) {
            0 => mutate_bytes(&mut rng, &mut wire.ciphertext),
            1..=6 => match splice(&mut rng, &wire.header, &donor.header, 1) {
                Some(spliced) => wire.header = spliced,
                None => mutate_bytes(&mut rng, &mut wire.header),
            },
            _ => mutate_bytes(&mut rng, &mut wire.header),
        }
        resign_container(&fx.sealed.parties.sender.device, &mut wire);
        let bytes = wire.encode_to_vec();
        if bytes == fx.sealed.genuine || !seen.insert(bytes.clone()) {
            continue;
        }
        fx.check(&bytes);
    }

    // Edits must be refused for many different reasons, not only one.
    let reasons: Vec<&String> = fx
        .outcomes
        .keys()
        .filter(|k| !matches!(k.as_str(), "Opened" | "Malformed"))
        .collect();
    assert!(
        reasons.len() >= 5,
        "re-signed edits reached too few checks: {:?}",
        fx.outcomes
    );
    for reached in ["UnwrapFailed", "PayloadDecryptFailed"] {
        assert!(
            fx.outcomes.contains_key(reached),
            "no {reached}: {:?}",
            fx.outcomes
        );
    }

    // The genuine container still opens once (it opened above; the pool was rebuilt).
    assert_eq!(
        fx.try_open(&fx.sealed.genuine.clone()).unwrap(),
        fx.sealed.payload
    );
    eprintln!(
        "{} re-signed mutations of {attempts} in {:?}; outcomes: {:?}",
        seen.len(),
        started.elapsed(),
        fx.outcomes
    );
}
