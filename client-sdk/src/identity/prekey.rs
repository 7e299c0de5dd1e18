use std::collections::BTreeMap;
use std::fmt;

use conclave_proto::{Message, v1};
use rand_core::CryptoRngCore;

use super::signed::{self, SignedKind};
use super::{DeviceIdentity, IdentityError, VerifiedDevice};
use crate::{DeviceId, UnixMillis};

const PREKEY: SignedKind = SignedKind {
    domain: b"conclave.prekey.v1",
    version: 1,
    what: "prekey",
};
const WHAT: &str = PREKEY.what;

/// Default prekey lifetime: 60 days, longer than the default container ttl (30 days) so
/// that mail sealed to a prekey just before it was handed out can still be opened.
pub const DEFAULT_PREKEY_TTL_MS: u64 = 60 * crate::time::DAY_MS;

/// Most unused prekeys one device holds at once.
pub const MAX_PREKEYS_HELD: usize = 1000;

/// A one-time prekey whose signature by its device was verified.
#[derive(Clone)]
pub struct VerifiedPrekey {
    device_id: DeviceId,
    prekey_id: u64,
    public_key: p384::PublicKey,
    expires_at: UnixMillis,
}

impl VerifiedPrekey {
    /// Verifies `prekey` as belonging to `device`: size, Ed25519 signature by the
    /// device's signing key over the received body, version, device id, key encoding and
    /// expiry at `now`.
    pub fn verify(
        prekey: &v1::SignedPrekey,
        device: &VerifiedDevice,
        now: UnixMillis,
    ) -> Result<Self, IdentityError> {
        let body: v1::SignedPrekeyBody = signed::verify_and_decode(
            &PREKEY,
            device.signing_key(),
            &prekey.body,
            &prekey.signature,
            |b: &v1::SignedPrekeyBody| b.version,
        )?;
        let device_id = DeviceId::from_slice(&body.device_id)
            .ok_or_else(|| IdentityError::malformed(WHAT, "device id is not 16 bytes"))?;
        if device_id != device.device_id() {
            return Err(IdentityError::WrongDevice);
        }
        if body.prekey_id == 0 {
            return Err(IdentityError::malformed(WHAT, "prekey ids start at 1"));
        }
        let public_key = signed::p384_public(&body.public_key, WHAT)?;
        let expires_at = UnixMillis(body.expires_at_ms);
        if now >= expires_at {
            return Err(IdentityError::Expired {
                what: WHAT,
                expired_at: expires_at,
                now,
            });
        }
        Ok(VerifiedPrekey {
            device_id,
            prekey_id: body.prekey_id,
            public_key,
            expires_at,
        })
    }

    /// The owning device.
    #[must_use]
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The prekey id.
    #[must_use]
    pub fn prekey_id(&self) -> u64 {
        self.prekey_id
    }

    /// The P-384 public key.
    #[must_use]
    pub fn public_key(&self) -> &p384::PublicKey {
        &self.public_key
    }

    /// When the prekey expires.
    #[must_use]
    pub fn expires_at(&self) -> UnixMillis {
        self.expires_at
    }
}

impl fmt::Debug for VerifiedPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedPrekey")
            .field("device_id", &self.device_id)
            .field("prekey_id", &self.prekey_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

const POOL_MAGIC: &[u8; 4] = b"cpk1";
const POOL_HEADER_LEN: usize = 4 + DeviceId::LEN + 8 + 4;
const POOL_ENTRY_LEN: usize = 8 + 8 + 48;

struct PrekeySecret {
    /// Zeroized on drop by `p384::SecretKey`.
    secret: p384::SecretKey,
    expires_at: UnixMillis,
}

/// Where a prekey id stands in this device's pool.
pub(crate) enum PrekeyLookup<'a> {
    /// Held and unexpired.
    Available(&'a p384::SecretKey),
    /// Issued by this pool earlier and already consumed (or purged after expiry).
    Consumed,
    /// Held but expired.
    Expired(UnixMillis),
    /// Never issued by this pool.
    Unknown,
}

/// The private halves of this device's unused one-time prekeys.
///
/// Prekey ids increase monotonically, so the pool can tell a consumed prekey (id below
/// the next id, no longer held) from one it never issued. A private half is deleted (and
/// zeroized) as soon as a container using it has been opened successfully.
pub struct PrekeyPool {
    device_id: DeviceId,
    next_id: u64,
    secrets: BTreeMap<u64, PrekeySecret>,
}

impl PrekeyPool {
    /// An empty pool for `device`.
    #[must_use]
    pub fn new(device: &DeviceIdentity) -> Self {
        PrekeyPool {
            device_id: device.device_id(),
            next_id: 1,
            secrets: BTreeMap::new(),
        }
    }

    /// Generates `count` fresh prekeys valid until `now + ttl_ms`, keeps their private
    /// halves, and returns the signed public halves to upload to the directory.
    pub fn generate(
        &mut self,
        device: &DeviceIdentity,
        count: usize,
        now: UnixMillis,
        ttl_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<v1::SignedPrekey>, IdentityError> {
        if device.device_id() != self.device_id {
            return Err(IdentityError::InvalidArgument(
                "prekey pool belongs to another device",
            ));
        }
        if ttl_ms == 0 {
            return Err(IdentityError::InvalidArgument(
                "prekey ttl must be positive",
            ));
        }
        let held = self.secrets.len();
        if held.saturating_add(count) > MAX_PREKEYS_HELD {
            return Err(IdentityError::PrekeyPoolFull {
                held,
                max: MAX_PREKEYS_HELD,
            });
        }
        let expires_at = now.saturating_add(ttl_ms);
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let prekey_id = self.next_id;
            self.next_id = self.next_id.saturating_add(1);
            let secret = p384::SecretKey::random(rng);
            let body = v1::SignedPrekeyBody {
                version: PREKEY.version,
                device_id: self.device_id.as_bytes().to_vec(),
                prekey_id,
                public_key: signed::p384_compressed(&secret.public_key()),
                expires_at_ms: expires_at.0,
            }
            .encode_to_vec();
            let signature = signed::sign(device.signing_key(), PREKEY.domain, &body);
            self.secrets
                .insert(prekey_id, PrekeySecret { secret, expires_at });
            out.push(v1::SignedPrekey { body, signature });
        }
        Ok(out)
    }

    /// Deletes the `count` oldest unconsumed prekeys (lowest ids first) and returns how
    /// many were deleted.
    ///
    /// The directory hands out a device's prekeys lowest id first, so when this pool
    /// holds more private halves than the directory holds public ones, the oldest are
    /// the ones somebody fetched and never used (a prekey-draining attacker, say). A
    /// client makes room this way when the pool is full rather than stop replenishing,
    /// so draining cannot leave the directory without prekeys for this device. The
    /// cost: a container sealed to an evicted prekey and still in flight can no longer
    /// be opened (the sender resends to a fresh one).
    pub fn evict_oldest(&mut self, count: usize) -> usize {
        let doomed: Vec<u64> = self.secrets.keys().take(count).copied().collect();
        for id in &doomed {
            self.secrets.remove(id);
        }
        doomed.len()
    }

    /// Number of unused prekeys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether no unused prekey is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Serializes the pool (private halves included) for the app to store encrypted at
    /// rest, so containers sealed to prekeys uploaded before a restart can still be
    /// opened. The buffer zeroizes on drop.
    ///
    /// Format: `"cpk1" || device_id (16) || next_id u64be || count u32be ||
    /// count × (prekey_id u64be || expires_at u64be || P-384 scalar (48))`.
    #[must_use]
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
            POOL_HEADER_LEN + self.secrets.len() * POOL_ENTRY_LEN,
        ));
        out.extend_from_slice(POOL_MAGIC);
        out.extend_from_slice(self.device_id.as_bytes());
        out.extend_from_slice(&self.next_id.to_be_bytes());
        // At most MAX_PREKEYS_HELD entries: fits in a u32.
        out.extend_from_slice(
            &u32::try_from(self.secrets.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (id, s) in &self.secrets {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&s.expires_at.0.to_be_bytes());
            out.extend_from_slice(&zeroize::Zeroizing::new(s.secret.to_bytes()));
        }
        out
    }

    /// Restores a pool saved with [`Self::to_bytes`] for `device`.
    pub fn from_bytes(device: &DeviceIdentity, bytes: &[u8]) -> Result<Self, IdentityError> {
        let bad = |reason: &str| IdentityError::malformed("prekey pool", reason);
        let (header, mut rest) = bytes
            .split_at_checked(POOL_HEADER_LEN)
            .ok_or_else(|| bad("shorter than its header"))?;
        let (magic, header) = header.split_at(POOL_MAGIC.len());
        if magic != POOL_MAGIC {
            return Err(bad("not a saved prekey pool (wrong magic)"));
        }
        let (device_id, header) = header.split_at(DeviceId::LEN);
        if device_id != device.device_id().as_bytes().as_slice() {
            return Err(IdentityError::InvalidArgument(
                "saved prekey pool belongs to another device",
            ));
        }
        let (next_id, count) = header.split_at(8);
        let next_id = u64::from_be_bytes(next_id.try_into().map_err(|_| bad("next id"))?);
        let count = u32::from_be_bytes(count.try_into().map_err(|_| bad("count"))?);
        let count = usize::try_from(count).map_err(|_| bad("count"))?;
        if count > MAX_PREKEYS_HELD || rest.len() != count * POOL_ENTRY_LEN {
            return Err(bad("entry count does not match its length"));
        }
        let mut secrets = BTreeMap::new();
        while let Some((entry, tail)) = rest.split_at_checked(POOL_ENTRY_LEN) {
            rest = tail;
            let (id, entry) = entry.split_at(8);
            let (expires, scalar) = entry.split_at(8);
            let id = u64::from_be_bytes(id.try_into().map_err(|_| bad("prekey id"))?);
            let expires = u64::from_be_bytes(expires.try_into().map_err(|_| bad("expiry"))?);
            if id == 0 || id >= next_id {
                return Err(bad("prekey id outside the issued range"));
            }
            let secret =
                p384::SecretKey::from_slice(scalar).map_err(|_| bad("invalid P-384 scalar"))?;
            secrets.insert(
                id,
                PrekeySecret {
                    secret,
                    expires_at: UnixMillis(expires),
                },
            );
        }
        Ok(PrekeyPool {
            device_id: device.device_id(),
            next_id,
            secrets,
        })
    }

    /// Deletes every prekey expired at `now`; returns how many were deleted.
    pub fn purge_expired(&mut self, now: UnixMillis) -> usize {
        let before = self.secrets.len();
        self.secrets.retain(|_, s| s.expires_at > now);
        before - self.secrets.len()
    }

    pub(crate) fn lookup(&self, prekey_id: u64, now: UnixMillis) -> PrekeyLookup<'_> {
        match self.secrets.get(&prekey_id) {
            Some(s) if s.expires_at <= now => PrekeyLookup::Expired(s.expires_at),
            Some(s) => PrekeyLookup::Available(&s.secret),
            None if prekey_id != 0 && prekey_id < self.next_id => PrekeyLookup::Consumed,
            None => PrekeyLookup::Unknown,
        }
    }

    /// Deletes a prekey's private half (zeroized on drop).
    pub(crate) fn consume(&mut self, prekey_id: u64) {
        self.secrets.remove(&prekey_id);
    }
}

impl fmt::Debug for PrekeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrekeyPool")
            .field("device_id", &self.device_id)
            .field("held", &self.secrets.len())
            .field("next_id", &self.next_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::UserId;
    use crate::identity::UserSigningKey;
    use crate::time::DAY_MS;

    #[test]
    fn a_saved_pool_restores_and_rejects_tampering() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let user = UserSigningKey::generate(&mut rng);
        let id = UserId::from_username("pool").unwrap();
        let now = UnixMillis(1_767_225_600_000);
        let device = DeviceIdentity::create(&user, id, now, DAY_MS, &mut rng).unwrap();
        let other = DeviceIdentity::create(&user, id, now, DAY_MS, &mut rng).unwrap();
        let mut pool = PrekeyPool::new(&device);
        pool.generate(&device, 3, now, DAY_MS, &mut rng).unwrap();
        pool.consume(2);
        let saved = pool.to_bytes();
        let restored = PrekeyPool::from_bytes(&device, &saved).unwrap();
        assert_eq!(restored.len(), 2);
        assert!(matches!(
            restored.lookup(1, now),
            PrekeyLookup::Available(_)
        ));
        assert!(matches!(restored.lookup(2, now), PrekeyLookup::Consumed));
        assert!(matches!(restored.lookup(4, now), PrekeyLookup::Unknown));
        assert!(PrekeyPool::from_bytes(&other, &saved).is_err());
        for cut in 0..saved.len() {
            assert!(PrekeyPool::from_bytes(&device, &saved[..cut]).is_err());
        }
        let mut bad = saved.to_vec();
        bad[0] ^= 1;
        assert!(PrekeyPool::from_bytes(&device, &bad).is_err());
    }

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    fn device(rng: &mut ChaCha20Rng, name: &str) -> DeviceIdentity {
        let key = UserSigningKey::generate(rng);
        DeviceIdentity::create(&key, UserId::from_username(name).unwrap(), NOW, DAY_MS, rng)
            .unwrap()
    }

    #[test]
    fn generated_prekeys_verify_for_their_device() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        let prekeys = pool.generate(&dev, 3, NOW, DAY_MS, &mut rng).unwrap();
        assert_eq!(pool.len(), 3);
        let ids: Vec<u64> = prekeys
            .iter()
            .map(|p| {
                VerifiedPrekey::verify(p, dev.public(), NOW)
                    .unwrap()
                    .prekey_id()
            })
            .collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn prekey_signed_by_a_different_device_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let alice = device(&mut rng, "alice");
        let mallory = device(&mut rng, "mallory");
        // Mallory's device signs a prekey body naming Alice's device.
        let body = v1::SignedPrekeyBody {
            version: PREKEY.version,
            device_id: alice.device_id().as_bytes().to_vec(),
            prekey_id: 1,
            public_key: signed::p384_compressed(&p384::SecretKey::random(&mut rng).public_key()),
            expires_at_ms: NOW.0 + DAY_MS,
        }
        .encode_to_vec();
        let signature = signed::sign(mallory.signing_key(), PREKEY.domain, &body);
        let forged = v1::SignedPrekey { body, signature };
        let err = VerifiedPrekey::verify(&forged, alice.public(), NOW).unwrap_err();
        assert!(matches!(err, IdentityError::BadSignature { .. }), "{err}");

        // And Mallory's genuine prekey presented as Alice's is refused too.
        let mut pool = PrekeyPool::new(&mallory);
        let genuine = pool.generate(&mallory, 1, NOW, DAY_MS, &mut rng).unwrap();
        assert!(VerifiedPrekey::verify(&genuine[0], alice.public(), NOW).is_err());
    }

    #[test]
    fn expired_prekey_is_rejected_and_purged() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        let prekeys = pool.generate(&dev, 2, NOW, 1000, &mut rng).unwrap();
        let later = NOW.saturating_add(1000);
        assert!(matches!(
            VerifiedPrekey::verify(&prekeys[0], dev.public(), later),
            Err(IdentityError::Expired { .. })
        ));
        assert!(matches!(pool.lookup(1, later), PrekeyLookup::Expired(_)));
        assert_eq!(pool.purge_expired(later), 2);
        assert!(matches!(pool.lookup(1, later), PrekeyLookup::Consumed));
        assert!(matches!(pool.lookup(99, later), PrekeyLookup::Unknown));
    }

    #[test]
    fn evicting_removes_the_oldest_prekeys_first() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        pool.generate(&dev, 5, NOW, DAY_MS, &mut rng).unwrap();
        assert_eq!(pool.evict_oldest(2), 2);
        assert!(matches!(pool.lookup(1, NOW), PrekeyLookup::Consumed));
        assert!(matches!(pool.lookup(2, NOW), PrekeyLookup::Consumed));
        assert!(matches!(pool.lookup(3, NOW), PrekeyLookup::Available(_)));
        assert_eq!(pool.evict_oldest(10), 3);
        assert!(pool.is_empty());
    }

    #[test]
    fn pool_is_bounded() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        let err = pool
            .generate(&dev, MAX_PREKEYS_HELD + 1, NOW, DAY_MS, &mut rng)
            .unwrap_err();
        assert!(matches!(err, IdentityError::PrekeyPoolFull { .. }));
    }
}
