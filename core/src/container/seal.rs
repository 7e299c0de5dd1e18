use std::collections::HashSet;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use conclave_proto::limits::{MAX_CONTAINER_BYTES, MAX_CONTAINER_RECIPIENTS};
use conclave_proto::{Message, v1};
use ed25519_dalek::Signer;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::ecdh::EcdhKey;
use super::wrap::{EntryContext, Key256, commitment};
use super::{
    CONTAINER_VERSION, ContainerError, MAX_TTL_MS, PAYLOAD_NONCE_LEN, Recipient, payload_kind,
    signing_input,
};
use crate::identity::DeviceIdentity;
use crate::{ContainerId, UnixMillis};

/// Seals `payload` for `recipients`, signed by `sender`, created at `now` (server master
/// clock) and valid for `ttl_ms`. Returns the serialized container.
///
/// Each recipient's prekey is used once: do not seal twice to the same prekey (the
/// recipient would refuse the second container).
pub fn seal(
    sender: &DeviceIdentity,
    recipients: &[Recipient],
    payload: &v1::ContainerPayload,
    now: UnixMillis,
    ttl_ms: u64,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, ContainerError> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut_slice());
    let secrets = SealSecrets {
        payload_key: &key,
        entry_keys: None,
        declared_kind: None,
        container_id: None,
    };
    seal_with(sender, recipients, payload, now, ttl_ms, rng, &secrets)
}

/// What an honest sender derives itself, made explicit so tests can play a dishonest
/// sender.
pub(super) struct SealSecrets<'k> {
    /// Encrypts the payload and is committed to in the header.
    pub(super) payload_key: &'k Key256,
    /// Key wrapped for recipient `i`; `None` wraps `payload_key` for everyone.
    pub(super) entry_keys: Option<&'k [Key256]>,
    /// A payload kind written into the clear header, as a careless sender would;
    /// `None` (honest) writes none: the kind is only inside the encrypted payload.
    pub(super) declared_kind: Option<v1::PayloadKind>,
    /// Container id; `None` draws a random one.
    pub(super) container_id: Option<ContainerId>,
}

pub(super) fn seal_with(
    sender: &DeviceIdentity,
    recipients: &[Recipient],
    payload: &v1::ContainerPayload,
    now: UnixMillis,
    ttl_ms: u64,
    rng: &mut impl CryptoRngCore,
    secrets: &SealSecrets<'_>,
) -> Result<Vec<u8>, ContainerError> {
    let payload_key = secrets.payload_key;
    check_recipients(recipients, now)?;
    check_message(payload, ttl_ms)?;
    let container_id = secrets
        .container_id
        .unwrap_or_else(|| ContainerId::random(rng));
    let ephemeral = Ephemeral::new(rng)?;
    let sender_user_id = sender.user_id();
    let sender_device_id = sender.device_id();
    let ids = EntryIds {
        container_id: &container_id,
        sender_user_id: &sender_user_id,
        sender_device_id: &sender_device_id,
        ephemeral_public_key: &ephemeral.public_key,
    };
    let entries = wrap_entries(&ephemeral.key, &ids, recipients, |i| entry_key(secrets, i))?;
    let parts = HeaderParts {
        container_id: &container_id,
        ephemeral_public_key: &ephemeral.public_key,
        entries,
        payload_key,
        clear_kind: secrets
            .declared_kind
            .unwrap_or(v1::PayloadKind::Unspecified),
    };
    assemble(sender, parts, payload, now, ttl_ms, rng)
}

/// The time to live is within bounds and the payload has a body.
pub(super) fn check_message(
    payload: &v1::ContainerPayload,
    ttl_ms: u64,
) -> Result<(), ContainerError> {
    if ttl_ms == 0 || ttl_ms > MAX_TTL_MS {
        return Err(ContainerError::InvalidTtl {
            ttl_ms,
            max_ms: MAX_TTL_MS,
        });
    }
    if payload_kind(payload) == v1::PayloadKind::Unspecified {
        return Err(ContainerError::EmptyPayload);
    }
    Ok(())
}

/// A container's one ephemeral P-384 key, drawn from the caller's RNG (no hidden
/// randomness), zeroized on drop; the agreements run in aws-lc (`ecdh`).
pub(super) struct Ephemeral {
    pub(super) key: EcdhKey,
    /// Its public point, compressed, as the header carries it.
    pub(super) public_key: Vec<u8>,
}

impl Ephemeral {
    pub(super) fn new(rng: &mut impl CryptoRngCore) -> Result<Self, ContainerError> {
        let key = EcdhKey::new(&p384::SecretKey::random(rng))?;
        let public_key = crate::identity::p384_compressed(&key.public_key()?);
        Ok(Ephemeral { key, public_key })
    }
}

/// What the header holds besides the sender's ids and the times.
pub(super) struct HeaderParts<'a> {
    pub(super) container_id: &'a ContainerId,
    pub(super) ephemeral_public_key: &'a [u8],
    pub(super) entries: Vec<v1::RecipientEntry>,
    /// Encrypts the payload; committed to in the header.
    pub(super) payload_key: &'a Key256,
    /// The payload kind written in the clear (honest senders: `Unspecified`).
    pub(super) clear_kind: v1::PayloadKind,
}

/// Serializes the header, encrypts the padded payload under the payload key, signs
/// both and returns the wire container (steps 3 to 5 of sealing).
pub(super) fn assemble(
    sender: &DeviceIdentity,
    parts: HeaderParts<'_>,
    payload: &v1::ContainerPayload,
    now: UnixMillis,
    ttl_ms: u64,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, ContainerError> {
    let header = v1::ContainerHeader {
        version: CONTAINER_VERSION,
        container_id: parts.container_id.as_bytes().to_vec(),
        sender_user_id: sender.user_id().as_bytes().to_vec(),
        sender_device_id: sender.device_id().as_bytes().to_vec(),
        created_at_ms: now.0,
        ttl_ms,
        ephemeral_public_key: parts.ephemeral_public_key.to_vec(),
        entries: parts.entries,
        key_commitment: commitment(parts.payload_key, parts.container_id).to_vec(),
        payload_kind: parts.clear_kind.into(),
    }
    .encode_to_vec();

    let plaintext = padded(payload);
    if plaintext.len() > MAX_CONTAINER_BYTES {
        return Err(ContainerError::TooLarge {
            len: plaintext.len(),
            max: MAX_CONTAINER_BYTES,
        });
    }
    let mut nonce = [0u8; PAYLOAD_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let sealed = Aes256Gcm::new(parts.payload_key.as_slice().into())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &header,
            },
        )
        .map_err(|_| ContainerError::TooLarge {
            len: plaintext.len(),
            max: MAX_CONTAINER_BYTES,
        })?;
    let mut ciphertext = Vec::with_capacity(PAYLOAD_NONCE_LEN + sealed.len());
    ciphertext.extend_from_slice(&nonce);
    ciphertext.extend_from_slice(&sealed);

    let signature = sender
        .signing_key()
        .sign(&signing_input(&header, &ciphertext)?)
        .to_bytes()
        .to_vec();
    let wire = v1::Container {
        header,
        ciphertext,
        signature,
        sender_certificate: Some(sender.certificate().clone()),
    }
    .encode_to_vec();
    if wire.len() > MAX_CONTAINER_BYTES {
        return Err(ContainerError::TooLarge {
            len: wire.len(),
            max: MAX_CONTAINER_BYTES,
        });
    }
    Ok(wire)
}

/// What every entry of one container binds.
pub(super) struct EntryIds<'a> {
    pub(super) container_id: &'a ContainerId,
    pub(super) sender_user_id: &'a crate::UserId,
    pub(super) sender_device_id: &'a crate::DeviceId,
    pub(super) ephemeral_public_key: &'a [u8],
}

/// Below this many recipients per thread, entries are wrapped on the calling thread.
const ENTRIES_PER_THREAD: usize = 16;

/// Wraps the key for every recipient (two P-384 ECDH each: the dominant cost of a
/// large container), on up to one scoped thread per CPU. Entries come out in
/// recipient order whatever the thread count.
/// `key_of(i)` is the key wrapped for recipient `i`.
pub(super) fn wrap_entries<'k>(
    ephemeral: &EcdhKey,
    ids: &EntryIds<'_>,
    recipients: &[Recipient],
    key_of: impl Fn(usize) -> &'k Key256 + Sync,
) -> Result<Vec<v1::RecipientEntry>, ContainerError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(recipients.len() / ENTRIES_PER_THREAD)
        .max(1);
    let wrap_range = |start: usize, part: &[Recipient]| -> Result<Vec<_>, ContainerError> {
        part.iter()
            .enumerate()
            .map(|(j, r)| wrap_entry(ephemeral, ids, r, key_of(start + j)))
            .collect()
    };
    if threads == 1 {
        return wrap_range(0, recipients);
    }
    let chunk = recipients.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = Vec::with_capacity(threads);
        for (c, part) in recipients.chunks(chunk).enumerate() {
            let start = c * chunk;
            let spawned = std::thread::Builder::new()
                .name("conclave-seal".into())
                .spawn_scoped(scope, move || wrap_range(start, part));
            // A thread that cannot be started: wrap that part here instead.
            parts.push(spawned.map_err(|_| wrap_range(start, part)));
        }
        let mut entries = Vec::with_capacity(recipients.len());
        for part in parts {
            let done = match part {
                // Wrapping does not panic (every input was checked before); should a
                // thread panic all the same, the panic goes on here, as it would have
                // on the calling thread.
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(done) => done,
            };
            entries.extend(done?);
        }
        Ok(entries)
    })
}

/// One recipient's entry: the key under KEK1 (ephemeral × prekey), then KEK2
/// (ephemeral × device key).
fn wrap_entry(
    ephemeral: &EcdhKey,
    ids: &EntryIds<'_>,
    r: &Recipient,
    key: &Key256,
) -> Result<v1::RecipientEntry, ContainerError> {
    let recipient_device_id = r.device.device_id();
    let ctx = EntryContext {
        container_id: ids.container_id,
        sender_user_id: ids.sender_user_id,
        sender_device_id: ids.sender_device_id,
        recipient_device_id: &recipient_device_id,
        prekey_id: r.prekey.prekey_id(),
        ephemeral_public_key: ids.ephemeral_public_key,
    };
    let prekey_shared = ephemeral.agree(r.prekey.public_key())?;
    let device_shared = ephemeral.agree(r.device.device_key())?;
    let (kek1, kek2) = ctx.keks(prekey_shared.as_slice(), device_shared.as_slice());
    Ok(v1::RecipientEntry {
        recipient_device_id: recipient_device_id.as_bytes().to_vec(),
        prekey_id: r.prekey.prekey_id(),
        wrapped_key: ctx.wrap(&kek1, &kek2, key),
    })
}

fn entry_key<'k>(secrets: &SealSecrets<'k>, i: usize) -> &'k Key256 {
    secrets
        .entry_keys
        .and_then(|keys| keys.get(i))
        .unwrap_or(secrets.payload_key)
}

pub(super) fn check_recipients(
    recipients: &[Recipient],
    now: UnixMillis,
) -> Result<(), ContainerError> {
    if recipients.is_empty() {
        return Err(ContainerError::NoRecipients);
    }
    if recipients.len() > MAX_CONTAINER_RECIPIENTS {
        return Err(ContainerError::TooManyRecipients {
            count: recipients.len(),
            max: MAX_CONTAINER_RECIPIENTS,
        });
    }
    let mut seen = HashSet::with_capacity(recipients.len());
    for r in recipients {
        let device_id = r.device.device_id();
        if !seen.insert(device_id) {
            return Err(ContainerError::DuplicateRecipient { device_id });
        }
        if r.device.expires_at() <= now || r.prekey.expires_at() <= now {
            return Err(ContainerError::RecipientExpired { device_id });
        }
    }
    Ok(())
}

/// The payload's encoding, padded (with its `padding` field) to a multiple of
/// [`PAYLOAD_PADDING_BLOCK`] bytes, so that the ciphertext's length does not tell the
/// server a reply from a leave, a key request or a short text (protocol 3.6). Larger
/// payloads (invites and Rekeys, which carry a roster) still reveal their size class,
/// about as much as the header's recipient count already does.
fn padded(payload: &v1::ContainerPayload) -> Zeroizing<Vec<u8>> {
    let mut plaintext = Zeroizing::new(payload.encode_to_vec());
    if payload.padding.is_empty() {
        let len = plaintext.len();
        // The field costs a one-byte key and a varint length; find the smallest pad
        // that lands on a block boundary.
        let pad = (0..PAYLOAD_PADDING_BLOCK)
            .find(|n| {
                let field = 1 + conclave_proto::prost::length_delimiter_len(*n) + n;
                (len + field) % PAYLOAD_PADDING_BLOCK == 0
            })
            .unwrap_or(0);
        let zeros = vec![0u8; pad];
        conclave_proto::prost::encoding::bytes::encode(PADDING_FIELD, &zeros, &mut *plaintext);
    }
    plaintext
}

/// Payloads are padded to a multiple of this many bytes.
pub const PAYLOAD_PADDING_BLOCK: usize = 256;

/// The field number of `ContainerPayload.padding`.
const PADDING_FIELD: u32 = 15;
