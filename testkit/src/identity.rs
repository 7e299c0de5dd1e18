//! Users and devices with fresh random keys (the deterministic, seeded fixtures are in
//! [`crate::fixtures`]), and prekeys made for upload.

use conclave_core::UserId;
use conclave_core::identity::{
    DEFAULT_PREKEY_TTL_MS, DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey,
};
use conclave_core::time::DAY_MS;
use conclave_proto::v1;
use rand_core::OsRng;

use crate::clock::now;
use crate::fixtures::identity::{device, user};

/// How long a test device's certificate is valid from its creation.
pub const DEVICE_VALIDITY_MS: u64 = 365 * DAY_MS;

/// A user: its signing key and the identity peers pin. Its devices are made with
/// [`User::device`] (crypto only) or connected as SDK clients (see
/// [`crate::clients`]).
pub struct User {
    /// The username.
    pub name: String,
    /// The user signing key, which certifies the user's devices.
    pub key: UserSigningKey,
    /// The user id and public key, as peers trust them.
    pub identity: UserIdentity,
}

impl User {
    /// A user called `name` with a fresh signing key.
    pub fn new(name: &str) -> Self {
        let (key, identity) = user(&mut OsRng, name);
        User {
            name: name.to_string(),
            key,
            identity,
        }
    }

    /// The hashed user id.
    pub fn id(&self) -> UserId {
        self.identity.user_id
    }

    /// A fresh device of this user, certified now for [`DEVICE_VALIDITY_MS`].
    pub fn device(&self) -> DeviceIdentity {
        device(
            &self.key,
            &self.identity,
            now(),
            DEVICE_VALIDITY_MS,
            &mut OsRng,
        )
    }
}

/// `count` fresh prekeys of `device`, made now with the default time to live; `pool`
/// keeps their private halves. Returns the signed prekeys to upload.
pub fn fresh_prekeys(
    device: &DeviceIdentity,
    pool: &mut PrekeyPool,
    count: usize,
) -> Vec<v1::SignedPrekey> {
    pool.generate(device, count, now(), DEFAULT_PREKEY_TTL_MS, &mut OsRng)
        .expect("prekey generation")
}
