use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::signed;
use crate::UserId;

/// A user's Ed25519 signing key: issues the certificates of the user's devices.
///
/// Zeroized on drop; `Debug` shows only the public key.
pub struct UserSigningKey {
    key: SigningKey,
}

impl UserSigningKey {
    /// Generates a fresh key from `rng` (use the OS CSPRNG in production).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        UserSigningKey {
            key: SigningKey::generate(rng),
        }
    }

    /// Restores a key from its 32-byte secret (as stored by the app).
    #[must_use]
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        UserSigningKey {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret, for the app to store encrypted at rest.
    #[must_use]
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public half.
    #[must_use]
    pub fn public_key(&self) -> UserPublicKey {
        UserPublicKey(self.key.verifying_key())
    }

    pub(super) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for UserSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSigningKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// A user's Ed25519 public identity key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UserPublicKey(pub(crate) VerifyingKey);

impl UserPublicKey {
    /// Parses a 32-byte Ed25519 public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, super::IdentityError> {
        signed::ed25519_public(bytes, "user public key").map(UserPublicKey)
    }

    /// The 32 key bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl fmt::Debug for UserPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::ids::fmt_truncated(f, "UserPublicKey", self.0.as_bytes())
    }
}

/// A user id together with the identity key the caller trusts for it (pinned on first
/// use, or confirmed with a safety code). Certificates are verified against this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIdentity {
    /// The hashed user id.
    pub user_id: UserId,
    /// The user's trusted signing public key.
    pub key: UserPublicKey,
}
