//! Who the app is: the user's signing key and a device's credentials.
//!
//! Both are secrets. They leave Rust only through [`UserKey::export`] and
//! [`Credentials::export`] (and the client's own export calls), as buffers the app
//! must encrypt at rest (Keychain, Android Keystore, the OS credential store).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use conclave_sdk::client::DeviceCredentials;
use conclave_sdk::identity::UserSigningKey;
use conclave_sdk::{OsRng, UnixMillis, UserId};
use zeroize::Zeroizing;

use crate::ConclaveError;
use crate::ids::{device_hex, user_hex};

/// The wall clock as the SDK takes it (certificates are checked against it when
/// credentials are created or read back).
pub(crate) fn wall_clock() -> UnixMillis {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixMillis(ms)
}

/// The user id (hex) of `username`, after the SDK's normalization (so `" Alice "` and
/// `"alice"` are the same user). Use it to name invitees.
///
/// # Errors
/// [`ConclaveError::InvalidArgument`] for an empty or overlong username.
#[uniffi::export]
pub fn user_id_for_username(username: String) -> Result<String, ConclaveError> {
    UserId::from_username(&username)
        .map(|id| user_hex(&id))
        .map_err(|e| ConclaveError::InvalidArgument {
            what: "username".to_string(),
            reason: e.to_string(),
        })
}

/// A user's identity signing key: it certifies the user's devices. Keep it where the
/// app keeps its most protected secret; it is needed only to add devices.
#[derive(uniffi::Object)]
pub struct UserKey {
    key: UserSigningKey,
}

impl core::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("UserKey(secret)")
    }
}

#[uniffi::export]
impl UserKey {
    /// A fresh key from the operating system's random number generator.
    #[uniffi::constructor]
    pub fn generate() -> Arc<Self> {
        Arc::new(UserKey {
            key: UserSigningKey::generate(&mut OsRng),
        })
    }

    /// Reads a key written by [`Self::export`].
    ///
    /// # Errors
    /// [`ConclaveError::Credentials`] unless `secret` is 32 bytes.
    #[uniffi::constructor]
    pub fn restore(secret: Vec<u8>) -> Result<Arc<Self>, ConclaveError> {
        let secret = Zeroizing::new(secret);
        let bytes: Zeroizing<[u8; 32]> =
            Zeroizing::new(secret.as_slice().try_into().map_err(|_| {
                ConclaveError::Credentials {
                    detail: format!("a user key is 32 bytes, not {}", secret.len()),
                }
            })?);
        Ok(Arc::new(UserKey {
            key: UserSigningKey::from_secret_bytes(&bytes),
        }))
    }

    /// The secret key's 32 bytes, for the app to store encrypted.
    pub fn export(&self) -> Vec<u8> {
        self.key.to_secret_bytes().to_vec()
    }

    /// The public identity key (32 bytes): what other users pin.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().to_bytes().to_vec()
    }
}

/// A device's credentials: username, user identity key, the device's keys and
/// certificate, and its prekey pool. The one object the app stores per device.
#[derive(uniffi::Object)]
pub struct Credentials {
    inner: Mutex<DeviceCredentials>,
}

impl core::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    fn lock(&self) -> MutexGuard<'_, DeviceCredentials> {
        // A panic while holding the lock cannot leave the credentials half-changed:
        // nothing mutates them in place.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy for a client to own, read back from the stored form.
    pub(crate) fn to_sdk(&self) -> Result<DeviceCredentials, ConclaveError> {
        let stored = self.lock().export();
        Ok(DeviceCredentials::import(&stored, wall_clock())?)
    }
}

#[uniffi::export]
impl Credentials {
    /// Certifies a new device of `username` with the user's key (the user's first
    /// device, or another one).
    ///
    /// # Errors
    /// [`ConclaveError::Credentials`] for an unusable username.
    #[uniffi::constructor]
    pub fn create(username: String, user_key: Arc<UserKey>) -> Result<Arc<Self>, ConclaveError> {
        let creds = DeviceCredentials::create(&username, &user_key.key, wall_clock(), &mut OsRng)?;
        Ok(Arc::new(Credentials {
            inner: Mutex::new(creds),
        }))
    }

    /// Reads credentials written by [`Self::export`] or `Client::export_credentials`,
    /// checking that the certificate still verifies and names the stored keys.
    ///
    /// # Errors
    /// [`ConclaveError::Credentials`] if they are damaged, not credentials, from a
    /// newer SDK, or no longer valid.
    #[uniffi::constructor]
    pub fn restore(stored: Vec<u8>) -> Result<Arc<Self>, ConclaveError> {
        let stored = Zeroizing::new(stored);
        let creds = DeviceCredentials::import(&stored, wall_clock())?;
        Ok(Arc::new(Credentials {
            inner: Mutex::new(creds),
        }))
    }

    /// The stored form (contains secret keys: encrypt it at rest). Once a client runs,
    /// store `Client::export_credentials` instead: it has the current prekey pool.
    pub fn export(&self) -> Vec<u8> {
        self.lock().export().to_vec()
    }

    /// The username.
    pub fn username(&self) -> String {
        self.lock().username().to_string()
    }

    /// The user id (hex).
    pub fn user_id(&self) -> String {
        user_hex(&self.lock().user().user_id)
    }

    /// This device's id (hex).
    pub fn device_id(&self) -> String {
        device_hex(&self.lock().device_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_export_and_import() {
        let key = UserKey::generate();
        let creds = Credentials::create("Alice".into(), Arc::clone(&key)).expect("created");
        let back = Credentials::restore(creds.export()).expect("imported");
        assert_eq!(back.device_id(), creds.device_id());
        assert_eq!(
            back.user_id(),
            user_id_for_username("alice".into()).expect("valid")
        );
        let key_back = UserKey::restore(key.export()).expect("imported");
        assert_eq!(key_back.public_key(), key.public_key());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let key = UserKey::generate();
        let creds = Credentials::create("bob".into(), Arc::clone(&key)).expect("created");
        let secret_hex = hex::encode(key.export());
        for shown in [format!("{key:?}"), format!("{creds:?}")] {
            assert!(!shown.contains(&secret_hex), "{shown}");
        }
        assert_eq!(format!("{key:?}"), "UserKey(secret)");
    }

    #[test]
    fn damaged_credentials_are_a_typed_error() {
        assert!(matches!(
            Credentials::restore(b"not credentials".to_vec()),
            Err(ConclaveError::Credentials { .. })
        ));
        assert!(matches!(
            UserKey::restore(vec![1, 2, 3]),
            Err(ConclaveError::Credentials { .. })
        ));
    }
}
