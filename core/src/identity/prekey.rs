use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use conclave_proto::{Message, v1};
use rand_core::CryptoRngCore;

use super::signed::{self, SignedKind};
use super::{DeviceIdentity, IdentityError, MalformedReason, VerifiedDevice};
use crate::container::ContainerError;
use crate::container::ecdh::EcdhKey;
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

/// Age at which a device replaces its last-resort prekey: 7 days.
pub const LAST_RESORT_ROTATION_MS: u64 = 7 * crate::time::DAY_MS;

/// How long a device keeps its previous last-resort prekey after replacing it, so that
/// containers sealed to it and still in flight can be opened: 7 days.
pub const LAST_RESORT_OVERLAP_MS: u64 = 7 * crate::time::DAY_MS;

/// A prekey (one-time or last-resort) whose signature by its device was verified.
#[derive(Clone)]
pub struct VerifiedPrekey {
    device_id: DeviceId,
    prekey_id: u64,
    public_key: p384::PublicKey,
    expires_at: UnixMillis,
    last_resort: bool,
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
        let device_id = DeviceId::from_slice(&body.device_id).ok_or_else(|| {
            IdentityError::malformed(
                WHAT,
                MalformedReason::FieldLength {
                    field: "device id",
                    expected: DeviceId::LEN,
                },
            )
        })?;
        if device_id != device.device_id() {
            return Err(IdentityError::WrongDevice);
        }
        if body.prekey_id == 0 {
            return Err(IdentityError::malformed(
                WHAT,
                MalformedReason::IdOutOfRange { what: "prekey" },
            ));
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
            last_resort: body.last_resort,
        })
    }

    /// Whether the device signed this as its last-resort prekey: handed out only when
    /// it has no one-time prekey left (or the directory withholds them), and not
    /// deleted on use, so containers sealed to it have weaker forward secrecy until
    /// the device rotates it.
    #[must_use]
    pub fn is_last_resort(&self) -> bool {
        self.last_resort
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
            .field("last_resort", &self.last_resort)
            .finish_non_exhaustive()
    }
}

/// Saved pools before last-resort prekeys (still read).
const POOL_MAGIC_V1: &[u8; 4] = b"cpk1";
/// Saved pools with a last-resort section.
const POOL_MAGIC: &[u8; 4] = b"cpk2";
const POOL_HEADER_LEN: usize = 4 + DeviceId::LEN + 8 + 4;
const POOL_ENTRY_LEN: usize = 8 + 8 + 48;
const POOL_LAST_RESORT_LEN: usize = 8 + 8 + 8 + 48;
/// Bits of the last-resort section's flag byte.
const HAS_CURRENT: u8 = 1;
const HAS_PREVIOUS: u8 = 2;

pub(crate) struct PrekeySecret {
    /// What the pool saves. Zeroized on drop by `p384::SecretKey`.
    secret: p384::SecretKey,
    /// The same key in aws-lc's form, which the prekey's agreement and public point
    /// need: made when the prekey is generated (aws-lc computes the public point in a
    /// fifth of RustCrypto's time, `docs/benchmarks.md`, "Prekeys from aws-lc"), or
    /// at first use for a restored pool; kept so that opening does not load it again.
    /// aws-lc cleanses it when it is freed.
    ecdh: OnceLock<EcdhKey>,
    expires_at: UnixMillis,
}

impl PrekeySecret {
    /// A fresh prekey from `rng`, expiring at `expires_at`.
    fn generate(
        rng: &mut impl CryptoRngCore,
        expires_at: UnixMillis,
    ) -> Result<Self, IdentityError> {
        let secret = p384::SecretKey::random(rng);
        let ecdh =
            EcdhKey::new(&secret).map_err(|_| IdentityError::KeyComputation { what: "prekey" })?;
        Ok(PrekeySecret {
            secret,
            ecdh: OnceLock::from(ecdh),
            expires_at,
        })
    }

    /// A prekey read back from a saved pool.
    fn restored(secret: p384::SecretKey, expires_at: UnixMillis) -> Self {
        PrekeySecret {
            secret,
            ecdh: OnceLock::new(),
            expires_at,
        }
    }

    /// The key ready for agreements (made once, then kept).
    pub(crate) fn ecdh(&self) -> Result<&EcdhKey, ContainerError> {
        if let Some(key) = self.ecdh.get() {
            return Ok(key);
        }
        let key = EcdhKey::new(&self.secret)?;
        Ok(self.ecdh.get_or_init(|| key))
    }

    /// The public half, as uploaded.
    fn public_key(&self) -> Result<p384::PublicKey, IdentityError> {
        self.ecdh()
            .and_then(EcdhKey::public_key)
            .map_err(|_| IdentityError::KeyComputation { what: "prekey" })
    }
}

/// A last-resort prekey's private half.
struct LastResort {
    prekey_id: u64,
    /// When it was generated: it is replaced [`LAST_RESORT_ROTATION_MS`] later, and its
    /// predecessor is deleted [`LAST_RESORT_OVERLAP_MS`] after that.
    created_at: UnixMillis,
    key: PrekeySecret,
}

/// Where a prekey id stands in this device's pool.
pub(crate) enum PrekeyLookup<'a> {
    /// Held and unexpired.
    Available(&'a PrekeySecret),
    /// Issued by this pool earlier and already consumed (or purged after expiry).
    Consumed,
    /// Held but expired.
    Expired(UnixMillis),
    /// Never issued by this pool.
    Unknown,
}

/// The private halves of this device's unused one-time prekeys, and of its last-resort
/// prekeys.
///
/// Prekey ids increase monotonically, so the pool can tell a consumed prekey (id below
/// the next id, no longer held) from one it never issued. A one-time private half is
/// deleted (and zeroized) as soon as a container using it has been opened successfully.
///
/// The last-resort prekey (one id from the same sequence) is what the directory hands
/// out when this device has no one-time prekey left, so that draining them cannot make
/// the device unreachable. It is never deleted on use: the pool keeps the current one
/// and, for [`LAST_RESORT_OVERLAP_MS`] after a rotation, the previous one
/// ([`Self::rotate_last_resort`]).
pub struct PrekeyPool {
    device_id: DeviceId,
    next_id: u64,
    secrets: BTreeMap<u64, PrekeySecret>,
    last_resort: Option<LastResort>,
    previous_last_resort: Option<LastResort>,
}

impl PrekeyPool {
    /// An empty pool for `device`.
    #[must_use]
    pub fn new(device: &DeviceIdentity) -> Self {
        PrekeyPool {
            device_id: device.device_id(),
            next_id: 1,
            secrets: BTreeMap::new(),
            last_resort: None,
            previous_last_resort: None,
        }
    }

    /// Generates a new last-resort prekey valid until `now + ttl_ms` when the pool has
    /// none, or its current one is expired or at least [`LAST_RESORT_ROTATION_MS`] old;
    /// the current one is kept as the previous one (deleting an older previous one).
    /// Returns whether it rotated: then upload [`Self::last_resort_prekey`].
    pub fn rotate_last_resort(
        &mut self,
        device: &DeviceIdentity,
        now: UnixMillis,
        ttl_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<bool, IdentityError> {
        self.check_device(device, ttl_ms)?;
        self.retire_previous(now);
        let due = self.last_resort.as_ref().is_none_or(|current| {
            current.key.expires_at <= now
                || now >= current.created_at.saturating_add(LAST_RESORT_ROTATION_MS)
        });
        if !due {
            return Ok(false);
        }
        let key = PrekeySecret::generate(rng, now.saturating_add(ttl_ms))?;
        let prekey_id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let fresh = LastResort {
            prekey_id,
            created_at: now,
            key,
        };
        // The previous one's private half is dropped (zeroized) here.
        self.previous_last_resort = self.last_resort.replace(fresh);
        self.retire_previous(now);
        Ok(true)
    }

    /// The current last-resort prekey, signed, to upload; `None` if there is none.
    pub fn last_resort_prekey(
        &self,
        device: &DeviceIdentity,
    ) -> Result<Option<v1::SignedPrekey>, IdentityError> {
        if device.device_id() != self.device_id {
            return Err(IdentityError::InvalidArgument(
                "prekey pool belongs to another device",
            ));
        }
        // Ed25519 signatures are deterministic: re-signing gives the uploaded bytes.
        self.last_resort
            .as_ref()
            .map(|current| self.sign(device, current.prekey_id, &current.key, true))
            .transpose()
    }

    /// When [`Self::rotate_last_resort`] will next replace the last-resort prekey (its
    /// age limit or expiry, whichever comes first); `None` when the pool has none (due
    /// at once).
    #[must_use]
    pub fn last_resort_rotation_at(&self) -> Option<UnixMillis> {
        self.last_resort.as_ref().map(|current| {
            current
                .created_at
                .saturating_add(LAST_RESORT_ROTATION_MS)
                .min(current.key.expires_at)
        })
    }

    /// The current last-resort prekey's id, if any.
    #[must_use]
    pub fn last_resort_id(&self) -> Option<u64> {
        self.last_resort.as_ref().map(|c| c.prekey_id)
    }

    /// Deletes the previous last-resort prekey once its overlap is over (or expired).
    fn retire_previous(&mut self, now: UnixMillis) {
        let over = match (&self.last_resort, &self.previous_last_resort) {
            (_, None) => false,
            (Some(current), Some(previous)) => {
                now >= current.created_at.saturating_add(LAST_RESORT_OVERLAP_MS)
                    || previous.key.expires_at <= now
            }
            (None, Some(previous)) => previous.key.expires_at <= now,
        };
        if over {
            self.previous_last_resort = None;
        }
    }

    fn check_device(&self, device: &DeviceIdentity, ttl_ms: u64) -> Result<(), IdentityError> {
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
        Ok(())
    }

    fn sign(
        &self,
        device: &DeviceIdentity,
        prekey_id: u64,
        key: &PrekeySecret,
        last_resort: bool,
    ) -> Result<v1::SignedPrekey, IdentityError> {
        let body = v1::SignedPrekeyBody {
            version: PREKEY.version,
            device_id: self.device_id.as_bytes().to_vec(),
            prekey_id,
            public_key: signed::p384_compressed(&key.public_key()?),
            expires_at_ms: key.expires_at.0,
            last_resort,
        }
        .encode_to_vec();
        let signature = signed::sign(device.signing_key(), PREKEY.domain, &body);
        Ok(v1::SignedPrekey { body, signature })
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
        self.check_device(device, ttl_ms)?;
        let held = self.secrets.len();
        if held.saturating_add(count) > MAX_PREKEYS_HELD {
            return Err(IdentityError::PrekeyPoolFull {
                held,
                max: MAX_PREKEYS_HELD,
            });
        }
        let expires_at = now.saturating_add(ttl_ms);
        // The whole batch first, then into the pool: a failure leaves the pool as it
        // was (no private half kept whose public half was never handed out).
        let mut batch = Vec::with_capacity(count);
        let mut next_id = self.next_id;
        for _ in 0..count {
            let key = PrekeySecret::generate(rng, expires_at)?;
            let signed = self.sign(device, next_id, &key, false)?;
            batch.push((next_id, key, signed));
            next_id = next_id.saturating_add(1);
        }
        self.next_id = next_id;
        let mut out = Vec::with_capacity(count);
        for (prekey_id, key, signed) in batch {
            self.secrets.insert(prekey_id, key);
            out.push(signed);
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

    /// Number of unused one-time prekeys held (last-resort prekeys not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether no unused one-time prekey is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Serializes the pool (private halves included) for the app to store encrypted at
    /// rest, so containers sealed to prekeys uploaded before a restart can still be
    /// opened. The buffer zeroizes on drop.
    ///
    /// Format (version 2): `"cpk2" || device_id (16) || next_id u64be || count u32be ||
    /// count × (prekey_id u64be || expires_at u64be || P-384 scalar (48)) || flags u8
    /// || last-resort entries`, where `flags` has bit 0 set when the current
    /// last-resort prekey follows and bit 1 when the previous one follows (after it),
    /// each as `prekey_id u64be || created_at u64be || expires_at u64be || P-384
    /// scalar (48)`. Version 1 (`"cpk1"`, no flags byte and no last-resort entries) is
    /// still read.
    #[must_use]
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
            POOL_HEADER_LEN + self.secrets.len() * POOL_ENTRY_LEN + 1 + 2 * POOL_LAST_RESORT_LEN,
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
        let mut flags = 0;
        if self.last_resort.is_some() {
            flags |= HAS_CURRENT;
        }
        if self.previous_last_resort.is_some() {
            flags |= HAS_PREVIOUS;
        }
        out.push(flags);
        for lr in [&self.last_resort, &self.previous_last_resort]
            .into_iter()
            .flatten()
        {
            out.extend_from_slice(&lr.prekey_id.to_be_bytes());
            out.extend_from_slice(&lr.created_at.0.to_be_bytes());
            out.extend_from_slice(&lr.key.expires_at.0.to_be_bytes());
            out.extend_from_slice(&zeroize::Zeroizing::new(lr.key.secret.to_bytes()));
        }
        out
    }

    /// Restores a pool saved with [`Self::to_bytes`] for `device` (either format
    /// version).
    pub fn from_bytes(device: &DeviceIdentity, bytes: &[u8]) -> Result<Self, IdentityError> {
        let bad = |reason: MalformedReason| IdentityError::malformed("prekey pool", reason);
        let (header, mut rest) = bytes
            .split_at_checked(POOL_HEADER_LEN)
            .ok_or_else(|| bad(MalformedReason::Truncated))?;
        let (magic, header) = header.split_at(POOL_MAGIC.len());
        let with_last_resort = if magic == POOL_MAGIC {
            true
        } else if magic == POOL_MAGIC_V1 {
            false
        } else {
            return Err(bad(MalformedReason::WrongMagic));
        };
        let (device_id, header) = header.split_at(DeviceId::LEN);
        if device_id != device.device_id().as_bytes().as_slice() {
            return Err(IdentityError::InvalidArgument(
                "saved prekey pool belongs to another device",
            ));
        }
        let (next_id, count) = header.split_at(8);
        let next_id = u64::from_be_bytes(
            next_id
                .try_into()
                .map_err(|_| bad(MalformedReason::Truncated))?,
        );
        let count = u32::from_be_bytes(
            count
                .try_into()
                .map_err(|_| bad(MalformedReason::Truncated))?,
        );
        let count = usize::try_from(count).map_err(|_| bad(MalformedReason::Truncated))?;
        if count > MAX_PREKEYS_HELD {
            return Err(bad(MalformedReason::Truncated));
        }
        let (entries, tail) = rest
            .split_at_checked(count * POOL_ENTRY_LEN)
            .ok_or_else(|| bad(MalformedReason::Truncated))?;
        let mut secrets = BTreeMap::new();
        rest = entries;
        while let Some((entry, more)) = rest.split_at_checked(POOL_ENTRY_LEN) {
            rest = more;
            let (id, entry) = entry.split_at(8);
            let (expires, scalar) = entry.split_at(8);
            let id =
                u64::from_be_bytes(id.try_into().map_err(|_| bad(MalformedReason::Truncated))?);
            let expires = u64::from_be_bytes(
                expires
                    .try_into()
                    .map_err(|_| bad(MalformedReason::Truncated))?,
            );
            if id == 0 || id >= next_id {
                return Err(bad(MalformedReason::IdOutOfRange { what: "prekey" }));
            }
            let secret = p384::SecretKey::from_slice(scalar).map_err(|_| {
                bad(MalformedReason::InvalidKey {
                    key: "P-384 private key",
                })
            })?;
            secrets.insert(id, PrekeySecret::restored(secret, UnixMillis(expires)));
        }
        let (mut last_resort, mut previous_last_resort) = (None, None);
        if with_last_resort {
            let (&flags, mut rest) = tail
                .split_first()
                .ok_or_else(|| bad(MalformedReason::Truncated))?;
            if flags & !(HAS_CURRENT | HAS_PREVIOUS) != 0 {
                return Err(bad(MalformedReason::UnknownFlags));
            }
            let mut read = |present: bool| -> Result<Option<LastResort>, IdentityError> {
                if !present {
                    return Ok(None);
                }
                let (entry, more) = rest
                    .split_at_checked(POOL_LAST_RESORT_LEN)
                    .ok_or_else(|| bad(MalformedReason::Truncated))?;
                rest = more;
                let (id, entry) = entry.split_at(8);
                let (created, entry) = entry.split_at(8);
                let (expires, scalar) = entry.split_at(8);
                let id =
                    u64::from_be_bytes(id.try_into().map_err(|_| bad(MalformedReason::Truncated))?);
                let created = u64::from_be_bytes(
                    created
                        .try_into()
                        .map_err(|_| bad(MalformedReason::Truncated))?,
                );
                let expires = u64::from_be_bytes(
                    expires
                        .try_into()
                        .map_err(|_| bad(MalformedReason::Truncated))?,
                );
                if id == 0 || id >= next_id || secrets.contains_key(&id) {
                    return Err(bad(MalformedReason::IdOutOfRange {
                        what: "last-resort prekey",
                    }));
                }
                let secret = p384::SecretKey::from_slice(scalar).map_err(|_| {
                    bad(MalformedReason::InvalidKey {
                        key: "P-384 private key",
                    })
                })?;
                Ok(Some(LastResort {
                    prekey_id: id,
                    created_at: UnixMillis(created),
                    key: PrekeySecret::restored(secret, UnixMillis(expires)),
                }))
            };
            last_resort = read(flags & HAS_CURRENT != 0)?;
            previous_last_resort = read(flags & HAS_PREVIOUS != 0)?;
            if !rest.is_empty() {
                return Err(bad(MalformedReason::TrailingBytes));
            }
            let ids = |lr: &Option<LastResort>| lr.as_ref().map(|lr| lr.prekey_id);
            if last_resort.is_some() && ids(&last_resort) == ids(&previous_last_resort) {
                return Err(bad(MalformedReason::DuplicateId));
            }
        } else if !tail.is_empty() {
            return Err(bad(MalformedReason::Truncated));
        }
        Ok(PrekeyPool {
            device_id: device.device_id(),
            next_id,
            secrets,
            last_resort,
            previous_last_resort,
        })
    }

    /// Deletes every one-time prekey expired at `now`, and the previous last-resort
    /// prekey once expired or past its overlap; returns how many one-time prekeys were
    /// deleted. The current last-resort prekey is kept until it is rotated.
    pub fn purge_expired(&mut self, now: UnixMillis) -> usize {
        self.retire_previous(now);
        let before = self.secrets.len();
        self.secrets.retain(|_, s| s.expires_at > now);
        before - self.secrets.len()
    }

    pub(crate) fn lookup(&self, prekey_id: u64, now: UnixMillis) -> PrekeyLookup<'_> {
        let last_resort = [&self.last_resort, &self.previous_last_resort]
            .into_iter()
            .flatten()
            .find(|lr| lr.prekey_id == prekey_id)
            .map(|lr| &lr.key);
        match last_resort.or_else(|| self.secrets.get(&prekey_id)) {
            Some(s) if s.expires_at <= now => PrekeyLookup::Expired(s.expires_at),
            Some(s) => PrekeyLookup::Available(s),
            None if prekey_id != 0 && prekey_id < self.next_id => PrekeyLookup::Consumed,
            None => PrekeyLookup::Unknown,
        }
    }

    /// Deletes a one-time prekey's private half (zeroized on drop). A last-resort
    /// prekey is never deleted here (only by rotation), so that every container sealed
    /// to it can be opened; replays are stopped by the replay cache.
    pub(crate) fn consume(&mut self, prekey_id: u64) {
        self.secrets.remove(&prekey_id);
    }
}

impl fmt::Debug for PrekeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrekeyPool")
            .field("device_id", &self.device_id)
            .field("held", &self.secrets.len())
            .field("last_resort", &self.last_resort_id())
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
        // The public halves (computed by aws-lc) are those of the private halves held,
        // as RustCrypto computes them, and stay so once the pool is saved and restored.
        let restored = PrekeyPool::from_bytes(&dev, &pool.to_bytes()).unwrap();
        for p in &prekeys {
            let verified = VerifiedPrekey::verify(p, dev.public(), NOW).unwrap();
            for held in [&pool, &restored] {
                let PrekeyLookup::Available(secret) = held.lookup(verified.prekey_id(), NOW) else {
                    panic!("prekey {} is held", verified.prekey_id());
                };
                assert_eq!(&secret.secret.public_key(), verified.public_key());
                assert_eq!(&secret.public_key().unwrap(), verified.public_key());
            }
        }
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
            last_resort: false,
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
    fn a_last_resort_prekey_survives_consumption_and_one_time_prekeys_do_not() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        pool.generate(&dev, 1, NOW, DAY_MS, &mut rng).unwrap();
        assert!(
            pool.rotate_last_resort(&dev, NOW, DAY_MS, &mut rng)
                .unwrap()
        );
        let signed = pool.last_resort_prekey(&dev).unwrap().unwrap();
        let verified = VerifiedPrekey::verify(&signed, dev.public(), NOW).unwrap();
        assert!(verified.is_last_resort());
        assert_eq!(Some(verified.prekey_id()), pool.last_resort_id());
        let lr = verified.prekey_id();
        for _ in 0..3 {
            assert!(matches!(pool.lookup(lr, NOW), PrekeyLookup::Available(_)));
            pool.consume(lr);
        }
        assert!(matches!(pool.lookup(lr, NOW), PrekeyLookup::Available(_)));
        // Re-signing gives the same bytes (Ed25519 is deterministic).
        assert_eq!(pool.last_resort_prekey(&dev).unwrap().unwrap(), signed);
        // One-time prekeys are not flagged, and are deleted on use.
        let one_time = pool.generate(&dev, 1, NOW, DAY_MS, &mut rng).unwrap();
        let one_time = VerifiedPrekey::verify(&one_time[0], dev.public(), NOW).unwrap();
        assert!(!one_time.is_last_resort());
        pool.consume(one_time.prekey_id());
        assert!(matches!(
            pool.lookup(one_time.prekey_id(), NOW),
            PrekeyLookup::Consumed
        ));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.evict_oldest(10), 1);
        assert!(matches!(pool.lookup(lr, NOW), PrekeyLookup::Available(_)));
    }

    #[test]
    fn rotating_the_last_resort_prekey_keeps_the_previous_one_for_the_overlap() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        let ttl = 60 * DAY_MS;
        assert!(pool.rotate_last_resort(&dev, NOW, ttl, &mut rng).unwrap());
        let first = pool.last_resort_id().unwrap();
        // Not due yet.
        let day6 = NOW.saturating_add(6 * DAY_MS);
        assert!(!pool.rotate_last_resort(&dev, day6, ttl, &mut rng).unwrap());
        assert_eq!(pool.last_resort_id(), Some(first));
        // Due after LAST_RESORT_ROTATION_MS: a new one, the old one still opens.
        let day7 = NOW.saturating_add(LAST_RESORT_ROTATION_MS);
        assert_eq!(pool.last_resort_rotation_at(), Some(day7));
        assert!(pool.rotate_last_resort(&dev, day7, ttl, &mut rng).unwrap());
        let second = pool.last_resort_id().unwrap();
        assert_ne!(second, first);
        assert!(matches!(
            pool.lookup(first, day7),
            PrekeyLookup::Available(_)
        ));
        assert!(matches!(
            pool.lookup(second, day7),
            PrekeyLookup::Available(_)
        ));
        let almost = day7.saturating_add(LAST_RESORT_OVERLAP_MS - 1);
        pool.purge_expired(almost);
        assert!(matches!(
            pool.lookup(first, almost),
            PrekeyLookup::Available(_)
        ));
        // Deleted once the overlap is over.
        let over = day7.saturating_add(LAST_RESORT_OVERLAP_MS);
        pool.purge_expired(over);
        assert!(matches!(pool.lookup(first, over), PrekeyLookup::Consumed));
        assert!(matches!(
            pool.lookup(second, over),
            PrekeyLookup::Available(_)
        ));
        // An expired current one is replaced whatever its age.
        let mut short = PrekeyPool::new(&dev);
        assert!(short.rotate_last_resort(&dev, NOW, 1000, &mut rng).unwrap());
        let later = NOW.saturating_add(1000);
        assert!(
            short
                .rotate_last_resort(&dev, later, 1000, &mut rng)
                .unwrap()
        );
    }

    #[test]
    fn a_saved_pool_carries_its_last_resort_prekeys() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        pool.generate(&dev, 2, NOW, 60 * DAY_MS, &mut rng).unwrap();
        pool.rotate_last_resort(&dev, NOW, 60 * DAY_MS, &mut rng)
            .unwrap();
        let first = pool.last_resort_id().unwrap();
        let day7 = NOW.saturating_add(LAST_RESORT_ROTATION_MS);
        pool.rotate_last_resort(&dev, day7, 60 * DAY_MS, &mut rng)
            .unwrap();
        let second = pool.last_resort_id().unwrap();
        let signed = pool.last_resort_prekey(&dev).unwrap();
        let saved = pool.to_bytes();
        assert_eq!(&saved[..4], b"cpk2");
        let restored = PrekeyPool::from_bytes(&dev, &saved).unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(restored.last_resort_id(), Some(second));
        assert_eq!(restored.last_resort_prekey(&dev).unwrap(), signed);
        assert!(matches!(
            restored.lookup(first, day7),
            PrekeyLookup::Available(_)
        ));
        assert!(matches!(
            restored.lookup(1, day7),
            PrekeyLookup::Available(_)
        ));
        // The rotation time survives too: not due again before another 7 days.
        let mut restored = restored;
        let day13 = NOW.saturating_add(13 * DAY_MS);
        assert!(
            !restored
                .rotate_last_resort(&dev, day13, 60 * DAY_MS, &mut rng)
                .unwrap()
        );
        for cut in 0..saved.len() {
            assert!(PrekeyPool::from_bytes(&dev, &saved[..cut]).is_err());
        }
        let mut trailing = saved.to_vec();
        trailing.push(0);
        assert!(PrekeyPool::from_bytes(&dev, &trailing).is_err());
    }

    #[test]
    fn a_pool_saved_in_the_format_before_last_resort_prekeys_still_restores() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let dev = device(&mut rng, "alice");
        let mut pool = PrekeyPool::new(&dev);
        pool.generate(&dev, 3, NOW, DAY_MS, &mut rng).unwrap();
        pool.consume(2);
        // Version 1: the version-2 bytes without the last-resort flags byte.
        let mut v1 = pool.to_bytes().to_vec();
        assert_eq!(v1.pop(), Some(0));
        v1[..4].copy_from_slice(b"cpk1");
        let restored = PrekeyPool::from_bytes(&dev, &v1).unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(restored.last_resort_id(), None);
        assert!(matches!(
            restored.lookup(1, NOW),
            PrekeyLookup::Available(_)
        ));
        assert!(matches!(restored.lookup(2, NOW), PrekeyLookup::Consumed));
        // A version-1 pool carrying a version-2 tail is refused.
        let mut mixed = v1.clone();
        mixed.push(0);
        assert!(PrekeyPool::from_bytes(&dev, &mixed).is_err());
        // A restored old pool gets a last-resort prekey on its first rotation.
        let mut restored = restored;
        assert!(
            restored
                .rotate_last_resort(&dev, NOW, DAY_MS, &mut rng)
                .unwrap()
        );
        assert_eq!(restored.last_resort_id(), Some(4));
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
