//! Bounded randomized test: random bytes and thousands of mutations of a genuinely
//! sealed container go through `SealedContainer::decode` and the full `open`; each is
//! refused with an error (never a panic), or, when the mutation happens to be a semantic
//! no-op, yields exactly the original payload. Failed attempts leave no state behind:
//! the genuine container still opens afterwards.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use conclave_core::container::{ContainerError, Recipient, ReplayCache, SealedContainer, seal};
use conclave_core::identity::{
    DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey, VerifiedDevice, VerifiedPrekey,
};
use conclave_core::time::DAY_MS;
use conclave_core::{UnixMillis, UserId};
use conclave_proto::v1::{self, container_payload::Body};
use conclave_proto::{Message, limits::MAX_CONTAINER_BYTES};

#[path = "support/protobuf_fields.rs"]
mod protobuf_fields;
use protobuf_fields::{
    Field, drop_field, fields, read_varint, repeat_field, replace_field, swap_fields, write_varint,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
const RANDOM_INPUTS: usize = 2_000;
const FRAMED_RANDOM_INPUTS: usize = 200;
const MUTATED_INPUTS: usize = 3_000;
const RESIGNED_INPUTS: usize = 250;

// Seeds: every party is rebuilt identically from its own stream.
const SENDER_SEED: u64 = 1;
const RECIPIENT_DEVICE_SEED: u64 = 2;
const RECIPIENT_PREKEY_SEED: u64 = 3;
const DECOY_SEED: u64 = 4;
const SEAL_SEED: u64 = 5;
const MUTATION_SEED: u64 = 6;
const RESIGN_SEED: u64 = 7;

fn user(rng: &mut ChaCha20Rng, name: &str) -> (UserSigningKey, UserIdentity) {
    let key = UserSigningKey::generate(rng);
    let identity = UserIdentity {
        user_id: UserId::from_username(name).unwrap(),
        key: key.public_key(),
    };
    (key, identity)
}

fn device(seed: u64, name: &str) -> (UserIdentity, DeviceIdentity) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (key, identity) = user(&mut rng, name);
    let device =
        DeviceIdentity::create(&key, identity.user_id, NOW, 30 * DAY_MS, &mut rng).unwrap();
    (identity, device)
}

/// The recipient's prekey pool, regenerated identically from its seed (a successful
/// open consumes the prekey; rebuilding is the only way to get it back).
fn prekey_pool(
    device: &DeviceIdentity,
    seed: u64,
    count: usize,
) -> (PrekeyPool, Vec<v1::SignedPrekey>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut pool = PrekeyPool::new(device);
    let published = pool
        .generate(device, count, NOW, 7 * DAY_MS, &mut rng)
        .unwrap();
    (pool, published)
}

fn recipient(
    identity: &UserIdentity,
    device: &DeviceIdentity,
    prekey: &v1::SignedPrekey,
) -> Recipient {
    let verified = VerifiedDevice::verify(device.certificate(), identity, NOW).unwrap();
    let prekey = VerifiedPrekey::verify(prekey, &verified, NOW).unwrap();
    Recipient::new(verified, prekey).unwrap()
}

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
    sender: UserIdentity,
    sender_device: DeviceIdentity,
    me: DeviceIdentity,
    prekeys: PrekeyPool,
    replay: ReplayCache,
    payload: v1::ContainerPayload,
    /// Sealed to `me` (prekey 1, the only one in `prekeys`) and to a decoy device.
    genuine: Vec<u8>,
    /// Another container from the same sender to `me` (prekey 2), another plaintext:
    /// the donor for splices.
    other: Vec<u8>,
    /// How many inputs ended in each outcome (error variant, or `Opened`).
    outcomes: BTreeMap<String, usize>,
}

impl Fixture {
    fn new() -> Self {
        let (sender, sender_device) = device(SENDER_SEED, "alice");
        let (me_identity, me) = device(RECIPIENT_DEVICE_SEED, "bob");
        let (decoy_identity, decoy) = device(DECOY_SEED, "carol");
        let (prekeys, published) = prekey_pool(&me, RECIPIENT_PREKEY_SEED, 1);
        // Prekeys whose private halves are not kept: for the decoy recipient and for
        // the splice donor (which uses another prekey id of `me`).
        let (_, decoy_prekeys) = prekey_pool(&decoy, DECOY_SEED + 100, 1);
        let (_, spare_prekeys) = prekey_pool(&me, RECIPIENT_PREKEY_SEED + 100, 2);

        let mut rng = ChaCha20Rng::seed_from_u64(SEAL_SEED);
        let payload = invite();
        let genuine = seal(
            &sender_device,
            &[
                recipient(&me_identity, &me, &published[0]),
                recipient(&decoy_identity, &decoy, &decoy_prekeys[0]),
            ],
            &payload,
            NOW,
            DAY_MS,
            &mut rng,
        )
        .unwrap();
        let other = seal(
            &sender_device,
            &[recipient(&me_identity, &me, &spare_prekeys[1])],
            &v1::ContainerPayload {
                body: Some(Body::Text(v1::TextMessage {
                    text: "a different plaintext".into(),
                })),
                ..Default::default()
            },
            NOW,
            DAY_MS,
            &mut rng,
        )
        .unwrap();
        Fixture {
            sender,
            sender_device,
            me,
            prekeys,
            replay: ReplayCache::default(),
            payload,
            genuine,
            other,
            outcomes: BTreeMap::new(),
        }
    }

    /// Decode and the full open, with the fixture's persistent pool and replay cache.
    fn try_open(&mut self, bytes: &[u8]) -> Result<v1::ContainerPayload, ContainerError> {
        let sealed = SealedContainer::decode(bytes)?;
        let opened = sealed.open(
            &self.sender,
            &self.me,
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
                    payload, self.payload,
                    "a mutation opened to another payload"
                );
                let wire = v1::Container::decode(bytes).unwrap();
                let genuine = v1::Container::decode(self.genuine.as_slice()).unwrap();
                assert_eq!(wire.header, genuine.header);
                assert_eq!(wire.ciphertext, genuine.ciphertext);
                // The open spent prekey 1 and recorded the id: give the state back.
                assert!(self.prekeys.is_empty());
                assert_eq!(self.replay.len(), 1);
                self.prekeys = prekey_pool(&self.me, RECIPIENT_PREKEY_SEED, 1).0;
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

fn length_delimited(number: u64, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(&mut out, (number << 3) | 2);
    write_varint(&mut out, contents.len() as u64);
    out.extend_from_slice(contents);
    out
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
                out.extend(length_delimited(number, &junk));
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
            out.extend(length_delimited(pick.number, &inner));
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
    let genuine_wire = v1::Container::decode(fx.genuine.as_slice()).unwrap();
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
        let mut bytes = fx.genuine.clone();
        if attempts % 3 == 0 {
            match splice(&mut rng, &bytes, &fx.other, 0) {
                Some(spliced) => bytes = spliced,
                None => mutate_bytes(&mut rng, &mut bytes),
            }
        } else {
            mutate_bytes(&mut rng, &mut bytes);
        }
        // Each distinct mutation runs once: repeats would only re-test the same path.
        if bytes == fx.genuine || !seen.insert(bytes.clone()) {
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
    let payload = fx.try_open(&fx.genuine.clone()).unwrap();
    assert_eq!(payload, fx.payload);
    assert!(matches!(
        fx.try_open(&fx.genuine.clone()),
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

/// `sender` signs `domain || u32be(len(header)) || header || ciphertext` (the format in
/// `container.proto`), as a dishonest sender re-signing what it altered would.
fn resign(sender: &DeviceIdentity, wire: &mut v1::Container) {
    let mut msg = b"conclave.container.v1".to_vec();
    msg.extend_from_slice(&u32::try_from(wire.header.len()).unwrap().to_be_bytes());
    msg.extend_from_slice(&wire.header);
    msg.extend_from_slice(&wire.ciphertext);
    let key = ed25519_dalek::SigningKey::from_bytes(&sender.export_secrets().signing_key);
    wire.signature = ed25519_dalek::Signer::sign(&key, &msg).to_bytes().to_vec();
}

#[test]
fn resigned_mutations_by_a_dishonest_sender_never_panic() {
    let started = Instant::now();
    let mut fx = Fixture::new();
    let mut rng = ChaCha20Rng::seed_from_u64(RESIGN_SEED);
    let genuine = v1::Container::decode(fx.genuine.as_slice()).unwrap();
    let donor = v1::Container::decode(fx.other.as_slice()).unwrap();

    // Re-signing an unaltered container changes nothing: it opens (and checks that
    // `resign` matches the SDK's signing format, or the rest would prove little).
    let mut same = genuine.clone();
    resign(&fx.sender_device, &mut same);
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
        resign(&fx.sender_device, &mut wire);
        let bytes = wire.encode_to_vec();
        if bytes == fx.genuine || !seen.insert(bytes.clone()) {
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
    assert_eq!(fx.try_open(&fx.genuine.clone()).unwrap(), fx.payload);
    eprintln!(
        "{} re-signed mutations of {attempts} in {:?}; outcomes: {:?}",
        seen.len(),
        started.elapsed(),
        fx.outcomes
    );
}
