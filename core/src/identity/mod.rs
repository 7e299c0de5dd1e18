//! Identity: user signing keys, device identities and certificates, one-time prekeys.
//!
//! ```text
//!  UserSigningKey (Ed25519) ──signs──▶ DeviceCertificate {user_id, device_id,
//!                                        signing_pub, device_key_pub, created, expires}
//!  DeviceIdentity: device signing key (Ed25519) ──signs──▶ SignedPrekey {device_id,
//!                                        prekey_id, pub (P-384), expires}
//!                  device key (P-384, static) — the second wrap layer of containers
//! ```
//!
//! Verification is the only way to obtain the public views used for encryption:
//! [`VerifiedDevice::verify`] checks a certificate against the user's trusted key, and
//! [`VerifiedPrekey::verify`] checks a prekey against a verified device. Containers can
//! only be sealed to a [`crate::container::Recipient`] built from both, so a directory
//! that substitutes a key not signed by the right owner is detected before anything is
//! encrypted to it.
//!
//! Signed objects travel as `body` bytes plus a signature over
//! `domain separator || body`; verification runs over the received bytes and decoding
//! happens after, never a re-encoding.

mod device;
mod error;
mod prekey;
mod signed;
mod user;

pub use device::{DeviceIdentity, DeviceSecrets, MAX_AUTH_INPUT_LEN, VerifiedDevice};
pub use error::{IdentityError, IdentityProblem, MalformedReason};
pub use prekey::{
    DEFAULT_PREKEY_TTL_MS, LAST_RESORT_OVERLAP_MS, LAST_RESORT_ROTATION_MS, MAX_PREKEYS_HELD,
    PrekeyPool, VerifiedPrekey,
};
pub use user::{UserIdentity, UserPublicKey, UserSigningKey};

/// P-384 public keys travel as SEC1 compressed points of this many bytes.
pub const P384_COMPRESSED_LEN: usize = 49;

pub(crate) use prekey::PrekeyLookup;
pub(crate) use signed::{p384_compressed, p384_public};
