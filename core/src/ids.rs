//! Identifiers: user ids (hashed usernames), device ids and container ids.
//!
//! Identifiers are not secret, but logs must not reveal them whole: their `Debug` and
//! `Display` forms show only the first four bytes.

use std::fmt;

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::identity::IdentityError;

/// Longest username accepted, in bytes after normalization.
pub const MAX_USERNAME_BYTES: usize = 256;

/// Writes the first four bytes of `bytes` as hex followed by an ellipsis.
pub(crate) fn fmt_truncated(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    write!(f, "{name}(")?;
    for b in bytes.iter().take(4) {
        write!(f, "{b:02x}")?;
    }
    write!(f, "…)")
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of this identifier in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw identifier bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// Parses an identifier from a slice of exactly [`Self::LEN`] bytes.
            #[must_use]
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }

            /// The raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_truncated(f, stringify!($name), &self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

id_type!(
    /// A user on the wire: `SHA-256("conclave.user.v1" || normalized username)`. The
    /// server stores only this hash, never the username.
    UserId,
    32
);
id_type!(
    /// A device: 16 random bytes chosen by the device when it is created.
    DeviceId,
    16
);
id_type!(
    /// A container: 16 random bytes, used for replay detection.
    ContainerId,
    16
);

impl UserId {
    /// Derives the user id of `username` after normalization (Unicode NFKC, lowercase,
    /// surrounding whitespace removed), so `" Alice "` and `"alice"` are the same user.
    pub fn from_username(username: &str) -> Result<Self, IdentityError> {
        let normalized: String = username.trim().nfkc().collect::<String>().to_lowercase();
        if normalized.is_empty() || normalized.len() > MAX_USERNAME_BYTES {
            return Err(IdentityError::InvalidUsername {
                len: normalized.len(),
            });
        }
        let digest = Sha256::new()
            .chain_update(b"conclave.user.v1")
            .chain_update(normalized.as_bytes())
            .finalize();
        Ok(UserId(digest.into()))
    }
}

impl DeviceId {
    /// A fresh random device id.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        DeviceId(bytes)
    }
}

impl ContainerId {
    /// A fresh random container id.
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        ContainerId(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_before_hashing() {
        let a = UserId::from_username("alice").unwrap();
        assert_eq!(a, UserId::from_username("  ALICE ").unwrap());
        // NFKC: the fullwidth 'ａ' folds to 'a'.
        assert_eq!(a, UserId::from_username("\u{ff41}lice").unwrap());
        assert_ne!(a, UserId::from_username("bob").unwrap());
    }

    #[test]
    fn user_id_is_domain_separated_sha256() {
        let expected: [u8; 32] = Sha256::digest(b"conclave.user.v1alice").into();
        assert_eq!(
            UserId::from_username("alice").unwrap().as_bytes(),
            &expected
        );
    }

    #[test]
    fn empty_and_huge_usernames_are_rejected() {
        assert!(UserId::from_username("   ").is_err());
        assert!(UserId::from_username(&"x".repeat(MAX_USERNAME_BYTES + 1)).is_err());
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let id = DeviceId::from_bytes([0xab; 16]);
        assert_eq!(format!("{id:?}"), "DeviceId(abababab…)");
    }
}
