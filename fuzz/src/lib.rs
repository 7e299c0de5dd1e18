//! Shared pieces of Conclave's fuzz targets: the deterministic fixture (users, devices,
//! prekeys and genuinely sealed containers, built once per process) and the signing
//! helpers that play a dishonest signer, both from `conclave_core::test_util` (the
//! fixtures core's tests use too), and a data-driven mutation engine that edits bytes
//! and protobuf fields.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use conclave_core::UnixMillis;
use conclave_core::container::{ContainerError, ReplayCache, SealedContainer};
use conclave_core::identity::{
    DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey, VerifiedPrekey,
};
use conclave_core::test_util::containers::{
    Parties, TTL_MS as CONTAINER_TTL_MS, resign_certificate, resign_container, sign_prekey_body,
};
use conclave_core::test_util::protobuf::{
    drop_field, fields, read_varint, repeat_field, replace_field, swap_fields,
    write_length_delimited, write_varint,
};
use conclave_core::time::DAY_MS;
use conclave_proto::v1::ContainerPayload;
use conclave_proto::v1::{self, container_payload::Body};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};

/// The fixed "server master clock" of the fixture.
pub const NOW: UnixMillis = conclave_core::test_util::NOW;
/// Time to live of the fixture's containers.
pub const TTL_MS: u64 = CONTAINER_TTL_MS;

/// Everything the targets need, built once and deterministically (the parties and
/// containers of `conclave_core::test_util::containers`).
pub struct Fixture {
    /// The sender's user signing key (to play a sender whose user key is compromised).
    pub sender_user_key: UserSigningKey,
    /// The sender as the recipient trusts it.
    pub sender: UserIdentity,
    /// The sender's device.
    pub sender_device: DeviceIdentity,
    /// The recipient user.
    pub me_user: UserIdentity,
    /// The recipient device that opens containers.
    pub me: DeviceIdentity,
    /// The genuine container's plaintext.
    pub payload: ContainerPayload,
    /// A genuinely sealed container to `me` (prekey 1) and a decoy device.
    pub genuine: Vec<u8>,
    /// `genuine`, decoded.
    pub genuine_wire: v1::Container,
    /// Another container from the same sender to `me` (another prekey, another
    /// plaintext): the donor for splices.
    pub donor: Vec<u8>,
    /// `donor`, decoded.
    pub donor_wire: v1::Container,
    /// One of `me`'s published prekeys (for the prekey verification target).
    pub me_prekey: v1::SignedPrekey,
}

thread_local! {
    /// `me`'s prekey pool. A successful open consumes prekey 1; it is then rebuilt
    /// identically from its seed, so every input meets the same state.
    static PREKEYS: RefCell<Option<PrekeyPool>> = const { RefCell::new(None) };
}

impl Fixture {
    /// The process-wide fixture.
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Fixture::build)
    }

    fn build() -> Fixture {
        let parties = Parties::new();
        let (me_user, me) = (&parties.me.user, &parties.me.device);
        let payload = ContainerPayload {
            body: Some(Body::MeetingInvite(v1::MeetingInvite {
                meeting_id: vec![7; 32],
                epoch: 3,
                meeting_key: vec![0x5a; 32],
                media_kinds: vec![1, 2],
                roster: vec![v1::RosterEntry {
                    user_id: me_user.user_id.as_bytes().to_vec(),
                    device_id: me.device_id().as_bytes().to_vec(),
                    sender_index: 1,
                    identity_key: me_user.key.to_bytes().to_vec(),
                    certificate: Some(me.certificate().clone()),
                }],
                key_leader_device_id: parties.sender.device.device_id().as_bytes().to_vec(),
                expires_at_ms: NOW.0 + DAY_MS,
                caller: None,
            })),
            ..Default::default()
        };
        let sealed = parties.seal(payload, "another plaintext");
        let genuine_wire = sealed.genuine_wire();
        let donor_wire = sealed.donor_wire();
        let fixture = Fixture {
            sender_user_key: sealed.parties.sender.key,
            sender: sealed.parties.sender.user,
            sender_device: sealed.parties.sender.device,
            me_user: sealed.parties.me.user,
            me: sealed.parties.me.device,
            payload: sealed.payload,
            genuine: sealed.genuine,
            genuine_wire,
            donor: sealed.donor,
            donor_wire,
            me_prekey: sealed.my_prekey,
        };
        fixture.self_check();
        fixture
    }

    /// The fixture is only useful if the genuine container opens and re-signing
    /// reproduces valid signatures; check both once.
    fn self_check(&self) {
        let opened = self
            .open(&self.genuine, NOW)
            .expect("genuine container opens");
        assert_eq!(opened, self.payload);
        let mut wire = self.genuine_wire.clone();
        wire.signature.clear();
        if let Some(cert) = wire.sender_certificate.as_mut() {
            cert.signature.clear();
            self.resign_certificate(cert);
        }
        self.resign_container(&mut wire);
        assert_eq!(wire, self.genuine_wire, "re-signing must be deterministic");
        let prekey = self.sign_prekey_body(self.me_prekey.body.clone());
        assert_eq!(prekey, self.me_prekey);
        VerifiedPrekey::verify(&prekey, self.me.public(), NOW).expect("prekey verifies");
    }

    /// Decodes and opens `bytes` as `me` at `now` with a fresh replay cache and the
    /// standard prekey pool (rebuilt after every successful open).
    pub fn open(&self, bytes: &[u8], now: UnixMillis) -> Result<ContainerPayload, ContainerError> {
        self.open_with(bytes, now, &mut ReplayCache::default())
    }

    /// Like [`Self::open`] with a caller-chosen replay cache.
    pub fn open_with(
        &self,
        bytes: &[u8],
        now: UnixMillis,
        replay: &mut ReplayCache,
    ) -> Result<ContainerPayload, ContainerError> {
        let sealed = SealedContainer::decode(bytes)?;
        let _ = sealed.claimed_sender();
        let _ = format!("{sealed:?}");
        PREKEYS.with(|cell| {
            let mut slot = cell.borrow_mut();
            let prekeys = slot.get_or_insert_with(|| Parties::new().my_prekeys());
            let result = sealed.open(&self.sender, &self.me, prekeys, replay, now);
            match result {
                Ok(opened) => {
                    let _ = format!("{opened:?}");
                    if trace() {
                        eprintln!("conclave-fuzz outcome: opened");
                    }
                    let payload = opened.payload().clone();
                    // Spent: rebuild identically for the next input.
                    *slot = None;
                    Ok(payload)
                }
                Err(err) => {
                    assert_eq!(prekeys.len(), 1, "a failed open burnt a prekey: {err}");
                    let message = err.to_string();
                    if trace() {
                        eprintln!("conclave-fuzz outcome: {message}");
                    }
                    Err(err)
                }
            }
        })
    }

    /// Re-signs a container as the sender device (a dishonest sender, or one whose
    /// device key leaked).
    pub fn resign_container(&self, wire: &mut v1::Container) {
        resign_container(&self.sender_device, wire);
    }

    /// Re-signs a device certificate with the sender's user key.
    pub fn resign_certificate(&self, cert: &mut v1::DeviceCertificate) {
        resign_certificate(&self.sender_user_key, cert);
    }

    /// Signs a prekey body with `me`'s device signing key.
    pub fn sign_prekey_body(&self, body: Vec<u8>) -> v1::SignedPrekey {
        sign_prekey_body(&self.me, body)
    }
}

/// Whether `CONCLAVE_FUZZ_TRACE` is set: then every open prints its outcome, to see
/// which checks a corpus reaches (`cargo fuzz run container_open corpus -- -runs=0`).
pub fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CONCLAVE_FUZZ_TRACE").is_some())
}

/// A clock value chosen by the input: mostly the fixture's, sometimes near the edges
/// of the containers' and certificates' validity, sometimes anything.
pub fn choose_now(u: &mut Unstructured<'_>) -> UnixMillis {
    match u.int_in_range(0u8..=7).unwrap_or(0) {
        0..=3 => NOW,
        4 => NOW.saturating_add(TTL_MS - 1),
        5 => NOW.saturating_add(TTL_MS),
        6 => UnixMillis(NOW.0.saturating_sub(10 * 60_000)),
        _ => UnixMillis(u.arbitrary().unwrap_or(0)),
    }
}

fn index(u: &mut Unstructured<'_>, len: usize) -> ArbResult<usize> {
    if len == 0 { Ok(0) } else { u.choose_index(len) }
}

/// A range inside `0..len`, at most `max` long (empty only if `len == 0`).
fn range(u: &mut Unstructured<'_>, len: usize, max: usize) -> ArbResult<Range<usize>> {
    if len == 0 {
        return Ok(0..0);
    }
    let start = index(u, len)?;
    let n = u.int_in_range(1..=max.min(len - start))?;
    Ok(start..start + n)
}

/// Applies up to eight edits chosen by `u` to `bytes`: bit flips, byte and run
/// overwrites, truncation, insertion, deletion, duplicated slices, slices of `donor`,
/// and protobuf-aware field edits.
pub fn mutate(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>, donor: &[u8]) -> ArbResult<()> {
    let count = u.int_in_range(1u8..=8)?;
    for _ in 0..count {
        if u.is_empty() {
            break;
        }
        let len = bytes.len();
        match u.int_in_range(0u8..=9)? {
            0 if len > 0 => {
                let i = index(u, len)?;
                bytes[i] ^= 1 << u.int_in_range(0u8..=7)?;
            }
            1 if len > 0 => {
                let i = index(u, len)?;
                bytes[i] = u.arbitrary()?;
            }
            2 if len > 0 => {
                let r = range(u, len, 16)?;
                for b in &mut bytes[r] {
                    *b = u.arbitrary()?;
                }
            }
            3 => {
                let keep = u.int_in_range(0..=len)?;
                bytes.truncate(keep);
            }
            4 => {
                let at = u.int_in_range(0..=len)?;
                let n = u.int_in_range(1usize..=16)?;
                let junk = u.bytes(n.min(u.len()))?.to_vec();
                bytes.splice(at..at, junk);
            }
            5 if len > 0 => {
                let r = range(u, len, 64)?;
                bytes.drain(r);
            }
            6 if len > 0 => {
                let r = range(u, len, 128)?;
                let slice = bytes[r].to_vec();
                let at = u.int_in_range(0..=len)?;
                bytes.splice(at..at, slice);
            }
            7 if !donor.is_empty() => {
                let r = range(u, donor.len(), 128)?;
                let at = u.int_in_range(0..=len)?;
                let end = if u.arbitrary()? {
                    (at + r.len()).min(len)
                } else {
                    at
                };
                bytes.splice(at..end, donor[r].iter().copied());
            }
            8 | 9 => {
                if let Some(spliced) = splice(u, bytes, donor, 0)? {
                    *bytes = spliced;
                }
            }
            _ => bytes.push(u.arbitrary()?),
        }
    }
    Ok(())
}

/// A protobuf-aware edit of `bytes` (`None` if it is not a well-formed message):
/// swap, repeat, drop or borrow (from `donor`) whole fields, add unknown fields, pad or
/// falsify lengths, change wire types, or recurse into a nested message.
fn splice(
    u: &mut Unstructured<'_>,
    bytes: &[u8],
    donor: &[u8],
    depth: u32,
) -> ArbResult<Option<Vec<u8>>> {
    let Some(own) = fields(bytes) else {
        return Ok(None);
    };
    if own.is_empty() {
        return Ok(None);
    }
    let pick = &own[index(u, own.len())?];
    let mut out = Vec::with_capacity(bytes.len() + 64);
    match u.int_in_range(0u8..=9)? {
        0 => match swap_fields(bytes, pick, &own[index(u, own.len())?]) {
            Some(swapped) => out = swapped,
            None => return Ok(None),
        },
        1 => out = repeat_field(bytes, pick),
        2 => out = drop_field(bytes, pick),
        3 => {
            let Some(from) = fields(donor)
                .into_iter()
                .flatten()
                .find(|f| f.number == pick.number)
            else {
                return Ok(None);
            };
            out = replace_field(bytes, pick, donor, &from);
        }
        4 => {
            let at = if u.arbitrary()? {
                pick.span.start
            } else {
                pick.span.end
            };
            out.extend_from_slice(&bytes[..at]);
            let number = u.int_in_range(1u64..=2000)?;
            if u.arbitrary()? {
                write_varint(&mut out, number << 3);
                write_varint(&mut out, u.arbitrary()?);
            } else {
                let n = u.int_in_range(0usize..=64)?;
                let junk = u.bytes(n.min(u.len()))?.to_vec();
                write_length_delimited(&mut out, number, &junk);
            }
            out.extend_from_slice(&bytes[at..]);
        }
        5 => {
            let Some(contents) = pick.contents.clone() else {
                return Ok(None);
            };
            out.extend_from_slice(&bytes[..pick.span.start]);
            write_varint(&mut out, (pick.number << 3) | 2);
            let mut len = contents.len() as u64;
            for _ in 0..u.int_in_range(1u8..=8)? {
                out.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend_from_slice(&bytes[contents]);
            out.extend_from_slice(&bytes[pick.span.end..]);
        }
        6 => {
            let mut pos = pick.span.start;
            let Some(key) = read_varint(bytes, &mut pos) else {
                return Ok(None);
            };
            out.extend_from_slice(&bytes[..pick.span.start]);
            write_varint(&mut out, (key & !7) | u64::from(u.int_in_range(0u8..=7)?));
            out.extend_from_slice(&bytes[pos..]);
        }
        7 => {
            let Some(contents) = pick.contents.clone() else {
                return Ok(None);
            };
            out.extend_from_slice(&bytes[..pick.span.start]);
            write_varint(&mut out, (pick.number << 3) | 2);
            write_varint(&mut out, u.arbitrary()?);
            out.extend_from_slice(&bytes[contents.start..]);
        }
        _ => {
            let Some(contents) = pick.contents.clone() else {
                return Ok(None);
            };
            if depth >= 4 {
                return Ok(None);
            }
            let donor_inner = fields(donor)
                .into_iter()
                .flatten()
                .find(|f| f.number == pick.number)
                .and_then(|f| f.contents)
                .map_or(&[][..], |r| &donor[r]);
            let Some(inner) = splice(u, &bytes[contents], donor_inner, depth + 1)? else {
                return Ok(None);
            };
            out.extend_from_slice(&bytes[..pick.span.start]);
            write_length_delimited(&mut out, pick.number, &inner);
            out.extend_from_slice(&bytes[pick.span.end..]);
        }
    }
    Ok(Some(out))
}
