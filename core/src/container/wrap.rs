//! Key wrapping: the two KEKs of a recipient entry, the double wrap, and key commitment.
//!
//! `KEKn = HKDF-SHA256(salt = container_id, ikm = ECDH shared x-coordinate,
//!   info = label || sender_user_id || sender_device_id || recipient_device_id ||
//!          u64be(prekey_id) || ephemeral_public_key)`
//! with label `"conclave.kek1.v1"` (ephemeral × prekey) or `"conclave.kek2.v1"`
//! (ephemeral × device key). All fields are fixed-length, so the concatenation is
//! unambiguous. Each KEK encrypts exactly one message (it depends on a fresh ephemeral
//! key and the container id), so the all-zero AES-GCM nonce is safe.
//!
//! `wrapped_key = AES-256-GCM(KEK2, AES-256-GCM(KEK1, K, aad), aad)`, 64 bytes, with
//! `aad = container_id || recipient_device_id || u64be(prekey_id)`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::ContainerError;
use crate::{ContainerId, DeviceId, UserId};

/// Length of a wrapped key: 32-byte key plus two 16-byte tags.
pub(crate) const WRAPPED_KEY_LEN: usize = 64;
/// Length of the key commitment.
pub(crate) const COMMITMENT_LEN: usize = 32;

const KEK1_LABEL: &[u8] = b"conclave.kek1.v1";
const KEK2_LABEL: &[u8] = b"conclave.kek2.v1";
const COMMIT_LABEL: &[u8] = b"conclave.commit.v1";

/// A 256-bit symmetric key that zeroizes on drop.
pub(crate) type Key256 = Zeroizing<[u8; 32]>;

/// The identifiers one recipient entry is bound to.
pub(crate) struct EntryContext<'a> {
    pub(crate) container_id: &'a ContainerId,
    pub(crate) sender_user_id: &'a UserId,
    pub(crate) sender_device_id: &'a DeviceId,
    pub(crate) recipient_device_id: &'a DeviceId,
    pub(crate) prekey_id: u64,
    pub(crate) ephemeral_public_key: &'a [u8],
}

impl EntryContext<'_> {
    fn kek(&self, label: &[u8], shared_secret: &[u8]) -> Key256 {
        let mut info = Vec::with_capacity(label.len() + 32 + 16 + 16 + 8 + 49);
        info.extend_from_slice(label);
        info.extend_from_slice(self.sender_user_id.as_bytes());
        info.extend_from_slice(self.sender_device_id.as_bytes());
        info.extend_from_slice(self.recipient_device_id.as_bytes());
        info.extend_from_slice(&self.prekey_id.to_be_bytes());
        info.extend_from_slice(self.ephemeral_public_key);
        let hk = Hkdf::<Sha256>::new(Some(self.container_id.as_bytes()), shared_secret);
        let mut out = Zeroizing::new([0u8; 32]);
        // Invariant: 32 bytes is far below HKDF-SHA256's 255 * 32 output limit.
        hk.expand(&info, out.as_mut_slice())
            .expect("HKDF-SHA256 can always expand 32 bytes");
        out
    }

    fn aad(&self) -> [u8; 40] {
        let mut aad = [0u8; 40];
        let (id, rest) = aad.split_at_mut(16);
        let (dev, prekey) = rest.split_at_mut(16);
        id.copy_from_slice(self.container_id.as_bytes());
        dev.copy_from_slice(self.recipient_device_id.as_bytes());
        prekey.copy_from_slice(&self.prekey_id.to_be_bytes());
        aad
    }

    /// Derives both KEKs from the two ECDH shared secrets.
    pub(crate) fn keks(&self, prekey_shared: &[u8], device_shared: &[u8]) -> (Key256, Key256) {
        (
            self.kek(KEK1_LABEL, prekey_shared),
            self.kek(KEK2_LABEL, device_shared),
        )
    }

    /// `AEAD(KEK2, AEAD(KEK1, K))`.
    pub(crate) fn wrap(&self, kek1: &Key256, kek2: &Key256, key: &Key256) -> Vec<u8> {
        let aad = self.aad();
        let inner = Zeroizing::new(aead_seal(kek1, key.as_slice(), &aad));
        aead_seal(kek2, &inner, &aad)
    }

    /// Removes the device-key layer, then the prekey layer; both must authenticate.
    pub(crate) fn unwrap(
        &self,
        kek1: &Key256,
        kek2: &Key256,
        wrapped: &[u8],
    ) -> Result<Key256, ContainerError> {
        let aad = self.aad();
        let inner = Zeroizing::new(aead_open(kek2, wrapped, &aad).ok_or(
            ContainerError::UnwrapFailed {
                layer: "device key",
            },
        )?);
        let key = Zeroizing::new(aead_open(kek1, &inner, &aad).ok_or(
            ContainerError::UnwrapFailed {
                layer: "one-time prekey",
            },
        )?);
        let mut out = Zeroizing::new([0u8; 32]);
        if key.len() != out.len() {
            return Err(ContainerError::UnwrapFailed {
                layer: "one-time prekey",
            });
        }
        out.copy_from_slice(&key);
        Ok(out)
    }
}

fn cipher(key: &Key256) -> Aes256Gcm {
    Aes256Gcm::new(key.as_slice().into())
}

fn aead_seal(key: &Key256, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    // Invariant: AES-GCM encryption only fails for plaintexts beyond 64 GiB; ours is at
    // most 48 bytes.
    cipher(key)
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encrypts a 48-byte plaintext")
}

fn aead_open(key: &Key256, ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    cipher(key)
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

fn commitment_mac(key: &Key256, container_id: &ContainerId) -> Hmac<Sha256> {
    // Invariant: HMAC accepts keys of any length.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).expect("HMAC accepts any key length");
    mac.update(COMMIT_LABEL);
    mac.update(container_id.as_bytes());
    mac
}

/// `HMAC-SHA256(K, "conclave.commit.v1" || container_id)`.
pub(crate) fn commitment(key: &Key256, container_id: &ContainerId) -> [u8; COMMITMENT_LEN] {
    commitment_mac(key, container_id)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks the commitment in constant time.
pub(crate) fn verify_commitment(
    key: &Key256,
    container_id: &ContainerId,
    expected: &[u8],
) -> Result<(), ContainerError> {
    commitment_mac(key, container_id)
        .verify_slice(expected)
        .map_err(|_| ContainerError::CommitmentMismatch)
}
