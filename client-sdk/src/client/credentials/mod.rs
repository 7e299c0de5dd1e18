//! A device's long-term identity, as the app stores it.

mod stored;

use conclave_proto::v1;
use rand_core::CryptoRngCore;

pub use self::stored::{
    CREDENTIALS_MAGIC, CREDENTIALS_VERSION, CredentialsError, MAX_STORED_CREDENTIALS_BYTES,
};
use super::ClientError;
use crate::identity::{
    DeviceIdentity, DeviceSecrets, IdentityError, PrekeyPool, UserIdentity, UserPublicKey,
    UserSigningKey,
};
use crate::{DeviceId, UnixMillis, UserId};

/// How long a new device certificate is valid by default: two years.
pub const DEFAULT_DEVICE_VALIDITY_MS: u64 = 730 * crate::time::DAY_MS;

/// Who this device is: the user (username, identity key) and the device's own keys
/// and certificate.
///
/// **The app stores one object**, encrypted at rest:
/// [`Client::export_credentials`](super::Client::export_credentials) while a client runs
/// (it includes the current prekey pool), or [`Self::export`] before the first connect,
/// and reads it back with [`Self::import`]. The format is versioned; an SDK refuses a
/// newer version with [`CredentialsError::NewerVersion`] rather than misreading it. The
/// *user signing key* is needed only to certify new devices ([`Self::create`]); keep it
/// wherever the app keeps its most protected secret, not necessarily on every device.
///
/// [`Self::restore`] and [`Self::with_saved_prekeys`] rebuild credentials from separate
/// parts, for apps that stored them that way before the single object existed.
///
/// `Debug` shows the user and device ids only.
pub struct DeviceCredentials {
    username: String,
    user: UserIdentity,
    device: DeviceIdentity,
    prekeys: Option<PrekeyPool>,
}

impl core::fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("user_id", &self.user.user_id)
            .field("device_id", &self.device.device_id())
            .finish_non_exhaustive()
    }
}

impl DeviceCredentials {
    /// Certifies a new device of `username` with the user's signing key. Use it for a
    /// user's first device and for every further device (the server accepts a new
    /// device whose certificate verifies under the user key it pinned).
    pub fn create(
        username: &str,
        user_key: &UserSigningKey,
        now: UnixMillis,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ClientError> {
        let user = UserIdentity {
            user_id: UserId::from_username(username)?,
            key: user_key.public_key(),
        };
        let device =
            DeviceIdentity::create(user_key, user.user_id, now, DEFAULT_DEVICE_VALIDITY_MS, rng)?;
        Ok(DeviceCredentials {
            username: username.to_string(),
            user,
            device,
            prekeys: None,
        })
    }

    /// Restores credentials stored as separate parts; the certificate must verify under
    /// the user key at `now` and name exactly the stored keys. New apps store one object
    /// instead ([`Self::export`], [`Self::import`]).
    pub fn restore(
        username: &str,
        user_public_key: UserPublicKey,
        certificate: &v1::DeviceCertificate,
        secrets: &DeviceSecrets,
        now: UnixMillis,
    ) -> Result<Self, ClientError> {
        Ok(Self::restore_parts(
            username,
            user_public_key,
            certificate,
            secrets,
            now,
        )?)
    }

    fn restore_parts(
        username: &str,
        user_public_key: UserPublicKey,
        certificate: &v1::DeviceCertificate,
        secrets: &DeviceSecrets,
        now: UnixMillis,
    ) -> Result<Self, IdentityError> {
        let user = UserIdentity {
            user_id: UserId::from_username(username)?,
            key: user_public_key,
        };
        let device = DeviceIdentity::restore(secrets, certificate, &user, now)?;
        Ok(DeviceCredentials {
            username: username.to_string(),
            user,
            device,
            prekeys: None,
        })
    }

    /// The username.
    #[must_use]
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The user's id and identity key.
    #[must_use]
    pub fn user(&self) -> &UserIdentity {
        &self.user
    }

    /// The user's identity public key (store it).
    #[must_use]
    pub fn user_public_key(&self) -> UserPublicKey {
        self.user.key
    }

    /// The device's identity.
    #[must_use]
    pub fn device(&self) -> &DeviceIdentity {
        &self.device
    }

    /// This device's id.
    #[must_use]
    pub fn device_id(&self) -> DeviceId {
        self.device.device_id()
    }

    /// The device certificate (store it).
    #[must_use]
    pub fn certificate(&self) -> &v1::DeviceCertificate {
        self.device.certificate()
    }

    /// The device's secret keys (store them encrypted; they zeroize on drop).
    #[must_use]
    pub fn export_secrets(&self) -> DeviceSecrets {
        self.device.export_secrets()
    }

    /// Adds the prekey pool saved with [`Client::export_prekeys`](super::Client::export_prekeys),
    /// so containers sealed to prekeys uploaded before a restart (mailbox invites)
    /// can be opened.
    pub fn with_saved_prekeys(mut self, saved: &[u8]) -> Result<Self, ClientError> {
        self.prekeys = Some(PrekeyPool::from_bytes(&self.device, saved)?);
        Ok(self)
    }

    /// The saved pool if one was added (and `true`), else an empty one.
    pub(crate) fn take_prekeys(&mut self) -> (PrekeyPool, bool) {
        match self.prekeys.take() {
            Some(pool) => (pool, true),
            None => (PrekeyPool::new(&self.device), false),
        }
    }
}
