//! The one object an app stores for a device: [`DeviceCredentials::export`] and
//! [`DeviceCredentials::import`].
//!
//! # Format (version 1)
//!
//! `"CCRD" || version (one byte, 1) || StoredCredentials` (protobuf, defined in
//! `identity.proto`): the username, the user's identity public key, the device
//! certificate, the device's two secret keys and its prekey pool. At most
//! [`MAX_STORED_CREDENTIALS_BYTES`] bytes. A reader refuses other magic bytes
//! ([`CredentialsError::NotCredentials`]) and versions newer than its own
//! ([`CredentialsError::NewerVersion`]); a future version 2 will still read version 1.
//!
//! Every buffer that holds a secret (the encoding, the decoded key bytes) is zeroized
//! when dropped.

use conclave_proto::{Message, v1};
use zeroize::{Zeroize, Zeroizing};

use super::DeviceCredentials;
use crate::UnixMillis;
use crate::identity::{DeviceSecrets, IdentityError, PrekeyPool, UserPublicKey};

/// The magic bytes at the front of stored credentials.
pub const CREDENTIALS_MAGIC: &[u8; 4] = b"CCRD";

/// The format version this SDK writes, and the newest it reads.
pub const CREDENTIALS_VERSION: u8 = 1;

/// The largest stored credentials accepted, in bytes. A full prekey pool is about
/// 64 bytes per held prekey; this leaves room for thousands.
pub const MAX_STORED_CREDENTIALS_BYTES: usize = 1 << 20;

/// Why stored credentials could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The bytes do not start with the credentials magic: not the output of
    /// `export` (another file, or still encrypted by the app's storage layer).
    #[error(
        "these bytes are not Conclave credentials (no \"CCRD\" prefix): pass exactly what \
         DeviceCredentials::export or Client::export_credentials returned, after decrypting it"
    )]
    NotCredentials,
    /// The credentials were written by a newer SDK, in a format this one cannot read.
    #[error(
        "credentials in format version {found}, but this SDK reads up to version {supported}: \
         upgrade the SDK (the credentials are fine; do not overwrite them)"
    )]
    NewerVersion {
        /// The version found.
        found: u8,
        /// The newest version this SDK reads.
        supported: u8,
    },
    /// The stored bytes exceed [`MAX_STORED_CREDENTIALS_BYTES`].
    #[error("stored credentials of {len} bytes exceed the {max}-byte limit: not credentials")]
    TooLarge {
        /// Their length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are damaged: a field is missing or does not decode.
    #[error(
        "stored credentials are damaged ({field}): restore them from a backup, or register this \
         device again"
    )]
    Damaged {
        /// The field (or `encoding`) that is wrong.
        field: &'static str,
    },
    /// The parts decode but do not form a valid device: the certificate does not verify
    /// under the stored user key, names other keys than the stored secrets, has expired,
    /// or the prekey pool belongs to another device.
    #[error("stored credentials are not a valid device: {0}")]
    Invalid(#[source] IdentityError),
}

impl DeviceCredentials {
    /// Serializes everything this device needs to come back as itself (username, user
    /// key, certificate, secret keys, and the prekey pool added with
    /// [`Self::with_saved_prekeys`], if any) as one versioned object (format in
    /// `docs/sdk.md`, "Storing credentials"). The buffer zeroizes on drop.
    ///
    /// While a client runs, its prekey pool changes: store
    /// [`Client::export_credentials`](super::super::Client::export_credentials) instead,
    /// whenever [`ClientEvent::PrekeysConsumed`](super::super::ClientEvent::PrekeysConsumed)
    /// arrives and before the app exits.
    ///
    /// The bytes contain secret keys: the app must encrypt them at rest (Keychain on
    /// Apple platforms, Android Keystore, the OS credential store or a key it keeps
    /// there on desktops).
    #[must_use]
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let pool = self.prekeys.as_ref().map(PrekeyPool::to_bytes);
        self.export_with_pool(pool.as_ref().map(|p| p.as_slice()))
    }

    /// [`Self::export`] with the given serialized prekey pool (the running client's).
    pub(crate) fn export_with_pool(&self, pool: Option<&[u8]>) -> Zeroizing<Vec<u8>> {
        let secrets = self.device.export_secrets();
        let mut stored = v1::StoredCredentials {
            username: self.username.clone(),
            user_public_key: self.user.key.to_bytes().to_vec(),
            certificate: Some(self.device.certificate().clone()),
            device_signing_key: secrets.signing_key.to_vec(),
            device_key: secrets.device_key.to_vec(),
            prekey_pool: pool.map(<[u8]>::to_vec).unwrap_or_default(),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(5 + stored.encoded_len()));
        out.extend_from_slice(CREDENTIALS_MAGIC);
        out.push(CREDENTIALS_VERSION);
        stored.encode_raw(&mut *out);
        wipe(&mut stored);
        out
    }

    /// Reads credentials written by [`Self::export`] or
    /// [`Client::export_credentials`](super::super::Client::export_credentials) and
    /// checks them at `now` (wall clock): the certificate must verify under the stored
    /// user key, be valid at `now` and name exactly the stored keys; the prekey pool
    /// must belong to this device.
    pub fn import(bytes: &[u8], now: UnixMillis) -> Result<Self, CredentialsError> {
        if bytes.len() > MAX_STORED_CREDENTIALS_BYTES {
            return Err(CredentialsError::TooLarge {
                len: bytes.len(),
                max: MAX_STORED_CREDENTIALS_BYTES,
            });
        }
        let (magic, rest) = bytes
            .split_at_checked(CREDENTIALS_MAGIC.len())
            .ok_or(CredentialsError::NotCredentials)?;
        if magic != CREDENTIALS_MAGIC {
            return Err(CredentialsError::NotCredentials);
        }
        let (&version, body) = rest
            .split_first()
            .ok_or(CredentialsError::Damaged { field: "version" })?;
        if version > CREDENTIALS_VERSION {
            return Err(CredentialsError::NewerVersion {
                found: version,
                supported: CREDENTIALS_VERSION,
            });
        }
        if version == 0 {
            return Err(CredentialsError::Damaged { field: "version" });
        }
        let mut stored = v1::StoredCredentials::decode(body)
            .map_err(|_| CredentialsError::Damaged { field: "encoding" })?;
        let result = restore_from(&stored, now);
        wipe(&mut stored);
        result
    }
}

fn restore_from(
    stored: &v1::StoredCredentials,
    now: UnixMillis,
) -> Result<DeviceCredentials, CredentialsError> {
    let damaged = |field| CredentialsError::Damaged { field };
    let user_key = UserPublicKey::from_bytes(&stored.user_public_key)
        .map_err(|_| damaged("user_public_key"))?;
    let certificate = stored
        .certificate
        .as_ref()
        .ok_or_else(|| damaged("certificate"))?;
    let secrets = DeviceSecrets {
        signing_key: Zeroizing::new(
            stored
                .device_signing_key
                .as_slice()
                .try_into()
                .map_err(|_| damaged("device_signing_key"))?,
        ),
        device_key: Zeroizing::new(
            stored
                .device_key
                .as_slice()
                .try_into()
                .map_err(|_| damaged("device_key"))?,
        ),
    };
    let credentials =
        DeviceCredentials::restore_parts(&stored.username, user_key, certificate, &secrets, now)
            .map_err(CredentialsError::Invalid)?;
    if stored.prekey_pool.is_empty() {
        return Ok(credentials);
    }
    let pool = PrekeyPool::from_bytes(credentials.device(), &stored.prekey_pool)
        .map_err(CredentialsError::Invalid)?;
    Ok(DeviceCredentials {
        prekeys: Some(pool),
        ..credentials
    })
}

/// Zeroizes the secret fields of a decoded or encoded message.
fn wipe(stored: &mut v1::StoredCredentials) {
    stored.device_signing_key.zeroize();
    stored.device_key.zeroize();
    stored.prekey_pool.zeroize();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::identity::UserSigningKey;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn credentials(rng: &mut ChaCha20Rng) -> DeviceCredentials {
        let user_key = UserSigningKey::generate(rng);
        DeviceCredentials::create("alice", &user_key, NOW, rng).unwrap()
    }

    #[test]
    fn exported_credentials_come_back_as_the_same_device_with_their_prekeys() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let creds = credentials(&mut rng);
        let mut pool = PrekeyPool::new(creds.device());
        pool.generate(creds.device(), 5, NOW, crate::time::DAY_MS, &mut rng)
            .unwrap();
        let bytes = creds.export_with_pool(Some(&pool.to_bytes()));
        assert_eq!(&bytes[..4], CREDENTIALS_MAGIC);
        assert_eq!(bytes[4], CREDENTIALS_VERSION);

        let mut back = DeviceCredentials::import(&bytes, NOW).unwrap();
        assert_eq!(back.username(), "alice");
        assert_eq!(back.device_id(), creds.device_id());
        assert_eq!(back.user().user_id, creds.user().user_id);
        assert_eq!(back.certificate(), creds.certificate());
        let (restored_pool, saved) = back.take_prekeys();
        assert!(saved);
        assert_eq!(restored_pool.len(), 5);
        // Exported again, the bytes are the same: nothing was lost on the way.
        let again = DeviceCredentials::import(&bytes, NOW).unwrap().export();
        assert_eq!(*again, *bytes);
    }

    #[test]
    fn credentials_exported_before_connecting_have_no_pool() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let creds = credentials(&mut rng);
        let mut back = DeviceCredentials::import(&creds.export(), NOW).unwrap();
        assert!(!back.take_prekeys().1);
    }

    #[test]
    fn bytes_that_are_not_credentials_are_named_as_such() {
        for junk in [
            &b""[..],
            b"CCR",
            b"{\"username\":\"alice\"}",
            b"cpk2\x01\x02",
        ] {
            assert!(matches!(
                DeviceCredentials::import(junk, NOW),
                Err(CredentialsError::NotCredentials)
            ));
        }
    }

    #[test]
    fn a_newer_format_version_is_refused_with_both_versions() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut bytes = credentials(&mut rng).export();
        bytes[4] = CREDENTIALS_VERSION + 1;
        let err = DeviceCredentials::import(&bytes, NOW).err().unwrap();
        assert!(
            matches!(err, CredentialsError::NewerVersion { found, supported }
                if found == CREDENTIALS_VERSION + 1 && supported == CREDENTIALS_VERSION)
        );
        assert!(err.to_string().contains("upgrade the SDK"), "{err}");
    }

    #[test]
    fn damaged_or_truncated_credentials_are_refused_without_panicking() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let bytes = credentials(&mut rng).export();
        for len in 0..bytes.len() {
            assert!(DeviceCredentials::import(&bytes[..len], NOW).is_err());
        }
        for i in 5..bytes.len() {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 0x40;
            // Either refused or (for bytes no check covers, such as the username's
            // letters changing case) a device that still verifies: never a panic.
            let _ = DeviceCredentials::import(&flipped, NOW);
        }
        let mut zero = bytes.to_vec();
        zero[4] = 0;
        assert!(matches!(
            DeviceCredentials::import(&zero, NOW),
            Err(CredentialsError::Damaged { field: "version" })
        ));
    }

    #[test]
    fn secrets_of_another_device_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (a, b) = (credentials(&mut rng), credentials(&mut rng));
        let mut stored =
            v1::StoredCredentials::decode(&a.export()[5..]).expect("our own encoding decodes");
        let other = b.export_secrets();
        stored.device_key = other.device_key.to_vec();
        let mut bytes = b"CCRD\x01".to_vec();
        bytes.extend_from_slice(&stored.encode_to_vec());
        assert!(matches!(
            DeviceCredentials::import(&bytes, NOW),
            Err(CredentialsError::Invalid(_))
        ));
    }

    #[test]
    fn expired_credentials_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let bytes = credentials(&mut rng).export();
        let later = UnixMillis(NOW.0 + super::super::DEFAULT_DEVICE_VALIDITY_MS + 1);
        assert!(matches!(
            DeviceCredentials::import(&bytes, later),
            Err(CredentialsError::Invalid(IdentityError::Expired { .. }))
        ));
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let big = vec![0u8; MAX_STORED_CREDENTIALS_BYTES + 1];
        assert!(matches!(
            DeviceCredentials::import(&big, NOW),
            Err(CredentialsError::TooLarge { .. })
        ));
    }
}
