//! Web Push wake-ups, device side: the keys a device registers for push, and the
//! decryption of the wake-up messages the server sends it while it is offline.
//!
//! # Data flow
//!
//! ```text
//! device:  PushKeys::generate ── public_key() (p256dh) + auth_secret() ──▶ server (SetPushSubscription)
//!          PushKeys::to_bytes ──▶ the app's secure storage ──▶ PushKeys::from_bytes on later starts
//! server:  WakeUp::encode ── RFC 8291 encrypt to (p256dh, auth) ──▶ push service ──▶ device
//! device:  open_wake_up(keys, body) ──▶ WakeUp { pending, urgent } ──▶ action() = ConnectAndFetch
//! ```
//!
//! # Decryption (RFC 8291 over RFC 8188 `aes128gcm`)
//!
//! ```text
//! body        = salt (16) || u32be(rs) || idlen (1) || keyid (idlen) || records
//! as_public   = keyid: the server's ephemeral P-256 key, uncompressed (idlen = 65)
//! ecdh_secret = ECDH(ua_private, as_public)
//! IKM         = HKDF-SHA256(salt = auth_secret, IKM = ecdh_secret,
//!                           info = "WebPush: info" || 0x00 || ua_public || as_public, L = 32)
//! CEK         = HKDF-SHA256(salt, IKM, info = "Content-Encoding: aes128gcm" || 0x00, L = 16)
//! NONCE       = HKDF-SHA256(salt, IKM, info = "Content-Encoding: nonce" || 0x00, L = 12)
//! record i    = AES-128-GCM(CEK, NONCE XOR u96be(i)) of (data || delimiter || 0x00*)
//!               (records are rs bytes, the last may be shorter; delimiter 0x02 in the
//!               last record, 0x01 in the others)
//! ```
//!
//! The plaintext is a protobuf `PushWakeUp` (version 1, kind `MAILBOX`). It carries
//! nothing the server may not know (no sender, meeting or container), so a wake-up
//! only ever asks the app to connect and fetch its mailbox: acting on a forged one is
//! harmless, and one that does not open can be ignored.
//!
//! # Invariants
//!
//! * Sans-IO: [`PushKeys::generate`] takes the `rng`; nothing here reads a clock or
//!   does I/O.
//! * Bodies over [`MAX_PUSH_BODY_BYTES`] are refused before any cryptography; no input
//!   bytes can make this module panic, every failure is a [`PushError`].
//! * The sender's key must be a valid P-256 point (RFC 8291 §3.1); every record must
//!   authenticate and carry the right padding delimiter, so a truncated or altered
//!   body is [`PushError::Undecryptable`].
//! * The private scalar, the auth secret and every derived key and plaintext buffer
//!   are zeroized on drop (best effort: the `hkdf` crate does not wipe its HMAC state);
//!   `Debug` shows only the start of the public key.
//!
//! The decryption is written here on the RustCrypto primitives (P-256, HKDF, AES-GCM)
//! rather than delegated to `web_push_native::decrypt`: that function (through
//! `ece-native`) panics on a header whose record size is 0 and, on 32-bit targets such
//! as `armeabi-v7a`, on every message (it copies a 4-byte `usize` into an 8-byte
//! sequence-number slot). The tests check this code against the RFC 8291 and RFC 8188
//! examples and against `web_push_native::encrypt`.

#[cfg(test)]
mod tests;

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Key, KeyInit, Nonce, Tag};
use conclave_proto::Message;
use conclave_proto::v1::{PushWakeUp, WakeKind, WakeUrgency};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use thiserror::Error;
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
use zeroize::{Zeroize, Zeroizing};

/// The largest push message body we accept (RFC 8030 push services carry at least
/// 4,096 bytes).
pub const MAX_PUSH_BODY_BYTES: usize = 4096;

/// Length of an uncompressed SEC1 P-256 point (the `p256dh` and the sender's `keyid`).
const PUBLIC_KEY_LEN: usize = 65;
/// Length of a P-256 private scalar.
const SCALAR_LEN: usize = 32;
/// Length of the Web Push authentication secret (RFC 8291 §3.2).
const AUTH_LEN: usize = 16;
/// Version byte of [`PushKeys::to_bytes`].
const KEYS_VERSION: u8 = 1;
/// Length of [`PushKeys::to_bytes`]: version, scalar, auth secret.
const KEYS_LEN: usize = 1 + SCALAR_LEN + AUTH_LEN;

/// Length of the fixed part of the RFC 8188 header: salt, record size, key id length.
const HEADER_LEN: usize = 16 + 4 + 1;
/// Smallest valid RFC 8188 record size (a tag and one delimiter octet, plus one).
const MIN_RECORD_SIZE: u32 = 18;
/// Length of the AES-GCM tag.
const TAG_LEN: usize = 16;
/// Padding delimiter of every record but the last (RFC 8188 §2).
const DELIMITER: u8 = 0x01;
/// Padding delimiter of the last record (RFC 8188 §2).
const LAST_DELIMITER: u8 = 0x02;

/// HKDF `info` prefix for the RFC 8291 key combination.
const WEBPUSH_INFO: &[u8] = b"WebPush: info\0";
/// HKDF `info` for the RFC 8188 content encryption key.
const CEK_INFO: &[u8] = b"Content-Encoding: aes128gcm\0";
/// HKDF `info` for the RFC 8188 nonce.
const NONCE_INFO: &[u8] = b"Content-Encoding: nonce\0";

/// The `PushWakeUp.version` this SDK reads and writes.
const WAKE_UP_VERSION: u32 = 1;

/// A device's Web Push subscription keys: a P-256 key pair and a 16-byte
/// authentication secret (RFC 8291 §3).
///
/// Zeroized on drop; `Debug` shows only the first bytes of the public key.
pub struct PushKeys {
    /// The user agent's private key (`ua_private`); zeroizes itself on drop.
    secret: p256::SecretKey,
    /// Its public half (`ua_public`), kept to avoid recomputing it per message.
    public: p256::PublicKey,
    /// The authentication secret (`auth_secret`).
    auth: Zeroizing<[u8; AUTH_LEN]>,
}

impl PushKeys {
    /// Generates a fresh key pair and authentication secret from `rng` (use the OS
    /// CSPRNG in production). Register [`Self::public_key`] and [`Self::auth_secret`]
    /// with the server and keep [`Self::to_bytes`] in the app's secure storage.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let secret = p256::SecretKey::random(rng);
        let mut auth = Zeroizing::new([0u8; AUTH_LEN]);
        rng.fill_bytes(auth.as_mut_slice());
        Self::from_parts(secret, auth)
    }

    fn from_parts(secret: p256::SecretKey, auth: Zeroizing<[u8; AUTH_LEN]>) -> Self {
        let public = secret.public_key();
        PushKeys {
            secret,
            public,
            auth,
        }
    }

    /// Uncompressed SEC1 public key (65 bytes): the subscription's `p256dh`.
    #[must_use]
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
            .to_encoded_point(false)
            .as_bytes()
            .try_into()
            .expect("an uncompressed SEC1 P-256 point is 65 bytes")
    }

    /// The auth secret (16 bytes) the server needs to encrypt to this device.
    #[must_use]
    pub fn auth_secret(&self) -> [u8; AUTH_LEN] {
        *self.auth
    }

    /// The keys for the app to store (encrypted at rest, like the device's other
    /// secrets): one version byte (1), the 32-byte private scalar and the 16-byte
    /// auth secret. [`Self::from_bytes`] restores them.
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(KEYS_LEN));
        out.push(KEYS_VERSION);
        out.extend_from_slice(&Zeroizing::new(self.secret.to_bytes()));
        out.extend_from_slice(self.auth.as_slice());
        out
    }

    /// Restores keys saved with [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PushError> {
        let bad = |reason| PushError::BadKeys { reason };
        let (&version, rest) = bytes
            .split_first()
            .ok_or(bad(BadKeysReason::WrongLength { len: bytes.len() }))?;
        if version != KEYS_VERSION {
            return Err(bad(BadKeysReason::UnknownVersion { version }));
        }
        let (scalar, auth) = rest
            .split_first_chunk::<SCALAR_LEN>()
            .filter(|(_, auth)| auth.len() == AUTH_LEN)
            .ok_or(bad(BadKeysReason::WrongLength { len: bytes.len() }))?;
        let secret =
            p256::SecretKey::from_slice(scalar).map_err(|_| bad(BadKeysReason::InvalidScalar))?;
        let mut auth_secret = Zeroizing::new([0u8; AUTH_LEN]);
        auth_secret.copy_from_slice(auth);
        Ok(Self::from_parts(secret, auth_secret))
    }
}

impl fmt::Debug for PushKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Public<'a>(&'a [u8]);
        impl fmt::Debug for Public<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::ids::fmt_truncated(f, "P256", self.0)
            }
        }
        f.debug_struct("PushKeys")
            .field("public", &Public(&self.public_key()))
            .finish_non_exhaustive()
    }
}

/// What a wake-up asks of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WakeAction {
    /// Connect to the server now; containers are waiting in the device's mailbox.
    ConnectAndFetch,
}

/// A decrypted wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WakeUp {
    /// Containers waiting in the device's mailbox when the server sent the wake-up (a
    /// hint: more may arrive, some may have expired).
    pub pending: u32,
    /// Whether the server sent it at high urgency (RFC 8030 `Urgency: high`; e.g. an
    /// incoming call). Unknown urgencies from newer servers read as `false`.
    pub urgent: bool,
}

impl WakeUp {
    /// A wake-up for `pending` waiting containers.
    #[must_use]
    pub fn new(pending: u32, urgent: bool) -> Self {
        WakeUp { pending, urgent }
    }

    /// What the app should do.
    #[must_use]
    pub fn action(&self) -> WakeAction {
        WakeAction::ConnectAndFetch
    }

    /// The plaintext the server encrypts (protobuf `PushWakeUp`, version 1, kind
    /// `MAILBOX`).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let urgency = if self.urgent {
            WakeUrgency::High
        } else {
            WakeUrgency::Normal
        };
        PushWakeUp {
            version: WAKE_UP_VERSION,
            kind: WakeKind::Mailbox.into(),
            pending: self.pending,
            urgency: urgency.into(),
        }
        .encode_to_vec()
    }
}

/// Decrypts and parses a push message body addressed to `keys`.
pub fn open_wake_up(keys: &PushKeys, body: &[u8]) -> Result<WakeUp, PushError> {
    let plaintext = decrypt_push_body(keys, body)?;
    let message = PushWakeUp::decode(plaintext.as_slice()).map_err(PushError::Malformed)?;
    if message.version != WAKE_UP_VERSION {
        return Err(PushError::UnsupportedVersion(message.version));
    }
    match WakeKind::try_from(message.kind) {
        Ok(WakeKind::Mailbox) => {}
        Ok(WakeKind::Unspecified) | Err(_) => return Err(PushError::UnknownKind(message.kind)),
    }
    Ok(WakeUp {
        pending: message.pending,
        urgent: message.urgency == i32::from(WakeUrgency::High),
    })
}

/// The RFC 8291 decryption of `body` for `keys`: the raw plaintext, before any
/// protobuf decoding.
pub(crate) fn decrypt_push_body(
    keys: &PushKeys,
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, PushError> {
    if body.len() > MAX_PUSH_BODY_BYTES {
        return Err(PushError::TooLarge {
            len: body.len(),
            max: MAX_PUSH_BODY_BYTES,
        });
    }
    let header = Header::parse(body).ok_or(PushError::Undecryptable)?;
    // RFC 8291 §4: the key id is the sender's ephemeral key, uncompressed.
    if header.keyid.len() != PUBLIC_KEY_LEN {
        return Err(PushError::Undecryptable);
    }
    // Rejects points not on the curve (RFC 8291 §3.1, invalid-curve attacks).
    let sender =
        p256::PublicKey::from_sec1_bytes(header.keyid).map_err(|_| PushError::Undecryptable)?;
    let scalar = Zeroizing::new(keys.secret.to_nonzero_scalar());
    let shared = p256::ecdh::diffie_hellman(&*scalar, sender.as_affine());

    // RFC 8291 §3.4: IKM = HKDF(auth_secret, ecdh_secret, key_info, 32).
    let (mut prk_key, hkdf) =
        Hkdf::<Sha256>::extract(Some(keys.auth.as_slice()), shared.raw_secret_bytes());
    prk_key.zeroize();
    let mut ikm = Zeroizing::new([0u8; 32]);
    hkdf.expand_multi_info(
        &[WEBPUSH_INFO, &keys.public_key(), header.keyid],
        ikm.as_mut_slice(),
    )
    .expect("32 bytes is far below HKDF-SHA256's 8,160-byte output limit");

    aes128gcm_records(&header, ikm.as_slice()).ok_or(PushError::Undecryptable)
}

/// RFC 8188 decryption of a whole `aes128gcm` body with input keying material `ikm`
/// (for the RFC 8188 examples; push bodies go through [`decrypt_push_body`]).
#[cfg(test)]
pub(crate) fn aes128gcm_decrypt(ikm: &[u8], body: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    aes128gcm_records(&Header::parse(body)?, ikm)
}

/// An RFC 8188 §2.1 content-coding header and the records that follow it.
struct Header<'a> {
    salt: &'a [u8; 16],
    record_size: u32,
    keyid: &'a [u8],
    records: &'a [u8],
}

impl<'a> Header<'a> {
    /// Splits `body`; `None` when it is too short for its header or the record size is
    /// invalid.
    fn parse(body: &'a [u8]) -> Option<Self> {
        let (fixed, rest) = body.split_first_chunk::<HEADER_LEN>()?;
        let (salt, fixed) = fixed.split_first_chunk::<16>()?;
        let (record_size, idlen) = fixed.split_first_chunk::<4>()?;
        let record_size = u32::from_be_bytes(*record_size);
        let (keyid, records) = rest.split_at_checked(usize::from(*idlen.first()?))?;
        (record_size >= MIN_RECORD_SIZE).then_some(Header {
            salt,
            record_size,
            keyid,
            records,
        })
    }
}

/// Decrypts and unpads every record of `header` under `ikm`. `None` when any record
/// fails to authenticate, is too short, or has a wrong or missing delimiter, or when
/// there is no record at all.
fn aes128gcm_records(header: &Header<'_>, ikm: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if header.records.is_empty() {
        return None;
    }
    let (mut prk, hkdf) = Hkdf::<Sha256>::extract(Some(header.salt), ikm);
    prk.zeroize();
    let mut cek = Zeroizing::new([0u8; 16]);
    let mut nonce_base = Zeroizing::new([0u8; 12]);
    hkdf.expand(CEK_INFO, cek.as_mut_slice())
        .expect("16 bytes is far below HKDF-SHA256's 8,160-byte output limit");
    hkdf.expand(NONCE_INFO, nonce_base.as_mut_slice())
        .expect("12 bytes is far below HKDF-SHA256's 8,160-byte output limit");
    let cipher = Aes128Gcm::new(Key::<Aes128Gcm>::from_slice(cek.as_slice()));

    // A record size beyond the address space just means "one record".
    let record_size = usize::try_from(header.record_size).unwrap_or(usize::MAX);
    let mut buffer = Zeroizing::new(header.records.to_vec());
    let mut plaintext = Zeroizing::new(Vec::with_capacity(header.records.len()));
    let count = buffer.chunks(record_size).count();
    for (seq, record) in buffer.chunks_mut(record_size).enumerate() {
        let last = seq + 1 == count;
        let data_len = record.len().checked_sub(TAG_LEN)?;
        let (data, tag) = record.split_at_mut(data_len);
        let mut nonce = Zeroizing::new(*nonce_base);
        let seq_be = u64::try_from(seq).ok()?.to_be_bytes();
        for (n, s) in nonce.iter_mut().skip(4).zip(seq_be) {
            *n ^= s;
        }
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce.as_slice()),
                b"",
                data,
                Tag::from_slice(tag),
            )
            .ok()?;
        // RFC 8188 §2: data || delimiter || zero padding.
        let end = data.iter().rposition(|&b| b != 0)?;
        let (content, delimiter) = data.split_at(end);
        let expected = if last { LAST_DELIMITER } else { DELIMITER };
        if delimiter.first() != Some(&expected) {
            return None;
        }
        plaintext.extend_from_slice(content);
    }
    Some(plaintext)
}

/// Why a push message or stored push keys were refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PushError {
    /// The body is larger than any push service delivers.
    #[error(
        "push message body of {len} bytes exceeds the {max}-byte limit; it was not sent by a push service, ignore it"
    )]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit ([`MAX_PUSH_BODY_BYTES`]).
        max: usize,
    },
    /// The body does not decrypt with these keys.
    #[error(
        "the push message was not encrypted to this device's push keys, or was altered; ignore it (connecting anyway is harmless)"
    )]
    Undecryptable,
    /// The body decrypted but its plaintext is not a `PushWakeUp`.
    #[error(
        "the push message decrypted but is not a wake-up ({0}); connect anyway to fetch the mailbox, and report a server bug"
    )]
    Malformed(#[source] conclave_proto::prost::DecodeError),
    /// The wake-up has a format version this SDK does not know.
    #[error(
        "the wake-up has unsupported version {0}; upgrade the SDK (connecting to fetch the mailbox is still safe)"
    )]
    UnsupportedVersion(u32),
    /// The wake-up asks for something this SDK does not know.
    #[error(
        "the wake-up is of unknown kind {0}; upgrade the SDK (connecting to fetch the mailbox is still safe)"
    )]
    UnknownKind(i32),
    /// Stored push keys could not be restored.
    #[error(
        "stored push keys are unusable: {reason}; generate new push keys and register the new subscription with the server"
    )]
    BadKeys {
        /// What is wrong with them.
        #[source]
        reason: BadKeysReason,
    },
}

/// What is wrong with stored push keys (see [`PushError::BadKeys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BadKeysReason {
    /// The bytes are not as long as their version requires.
    #[error("{len} bytes, expected 49")]
    WrongLength {
        /// Bytes found.
        len: usize,
    },
    /// The version byte is not one this SDK wrote.
    #[error("unknown version {version}")]
    UnknownVersion {
        /// Version found.
        version: u8,
    },
    /// The private scalar is zero or not below the P-256 group order.
    #[error("the private key is not a valid P-256 scalar")]
    InvalidScalar,
}
