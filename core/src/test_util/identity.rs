//! Users, devices, prekey pools and recipients for tests, built from seeds (the same
//! keys every run) or from any RNG the caller passes.

use conclave_proto::v1;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

use super::NOW;
use crate::container::Recipient;
use crate::identity::{
    DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey, VerifiedDevice, VerifiedPrekey,
};
use crate::time::DAY_MS;
use crate::{UnixMillis, UserId};

/// How long a seeded device's certificate is valid from [`NOW`].
pub const SEEDED_DEVICE_VALIDITY_MS: u64 = 30 * DAY_MS;
/// How long a seeded prekey is valid from [`NOW`].
pub const SEEDED_PREKEY_TTL_MS: u64 = 7 * DAY_MS;

/// A fresh user signing key for `username` and the identity peers pin for it.
pub fn user(
    rng: &mut (impl RngCore + CryptoRng),
    username: &str,
) -> (UserSigningKey, UserIdentity) {
    let key = UserSigningKey::generate(rng);
    let identity = UserIdentity {
        user_id: UserId::from_username(username).expect("a valid test username"),
        key: key.public_key(),
    };
    (key, identity)
}

/// A device of the user of `key`, certified from `now` for `validity_ms`.
pub fn device(
    key: &UserSigningKey,
    user: &UserIdentity,
    now: UnixMillis,
    validity_ms: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> DeviceIdentity {
    DeviceIdentity::create(key, user.user_id, now, validity_ms, rng).expect("device creation")
}

/// A user with one device, both built from one seed.
pub struct SeededDevice {
    /// The user's signing key (to play a user whose key is compromised).
    pub key: UserSigningKey,
    /// The user as peers trust it.
    pub user: UserIdentity,
    /// The device, certified at [`NOW`] for [`SEEDED_DEVICE_VALIDITY_MS`].
    pub device: DeviceIdentity,
}

/// The user `username` and its device, the same for the same `seed` every run.
pub fn seeded_device(seed: u64, username: &str) -> SeededDevice {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (key, user) = user(&mut rng, username);
    let device = device(&key, &user, NOW, SEEDED_DEVICE_VALIDITY_MS, &mut rng);
    SeededDevice { key, user, device }
}

/// `count` prekeys of `device` made at [`NOW`] from `seed`: the pool holding their
/// private halves and the signed prekeys the device would publish. Building it again
/// from the same seed gives back prekeys that an open consumed.
pub fn seeded_prekeys(
    device: &DeviceIdentity,
    seed: u64,
    count: usize,
) -> (PrekeyPool, Vec<v1::SignedPrekey>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut pool = PrekeyPool::new(device);
    let published = pool
        .generate(device, count, NOW, SEEDED_PREKEY_TTL_MS, &mut rng)
        .expect("prekey generation");
    (pool, published)
}

/// What a sender seals to: `device` of `user` with `prekey`, both verified at `now`.
pub fn recipient_at(
    user: &UserIdentity,
    device: &DeviceIdentity,
    prekey: &v1::SignedPrekey,
    now: UnixMillis,
) -> Recipient {
    let verified =
        VerifiedDevice::verify(device.certificate(), user, now).expect("certificate verifies");
    let prekey = VerifiedPrekey::verify(prekey, &verified, now).expect("prekey verifies");
    Recipient::new(verified, prekey).expect("recipient")
}

/// [`recipient_at`] at [`NOW`].
pub fn recipient(
    user: &UserIdentity,
    device: &DeviceIdentity,
    prekey: &v1::SignedPrekey,
) -> Recipient {
    recipient_at(user, device, prekey, NOW)
}
