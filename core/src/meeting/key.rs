use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Epoch, MeetingError, MeetingId, RoomAuthKey, RoutingId};
use crate::sframe::{CipherSuite, Kid, SframeSender};

/// The SFrame cipher suite of Conclave media: AES_256_GCM_SHA512_128.
pub const SFRAME_SUITE: CipherSuite = CipherSuite::Aes256GcmSha512Tag128;

/// A 256-bit meeting key and its epoch. Zeroized on drop; `Debug` shows only the epoch.
#[derive(Clone)]
pub struct MeetingKey {
    epoch: Epoch,
    key: Zeroizing<[u8; 32]>,
}

/// `HMAC-SHA256(meeting key, "conclave.epoch-commit.v1" || meeting_id || u64be(epoch))`:
/// a public commitment to an epoch's key. Participants holding different keys for the
/// same epoch get different commitments, hence different safety codes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochCommitment(pub [u8; 32]);

impl fmt::Debug for EpochCommitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::ids::fmt_truncated(f, "EpochCommitment", &self.0)
    }
}

impl MeetingKey {
    /// A fresh key for `epoch` from `rng` (the OS CSPRNG in production).
    pub fn generate(epoch: Epoch, rng: &mut impl CryptoRngCore) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut_slice());
        MeetingKey { epoch, key }
    }

    /// Restores a key received in an invite or rekey payload.
    pub fn from_slice(epoch: Epoch, bytes: &[u8]) -> Result<Self, MeetingError> {
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(MeetingError::InvalidKeyLength { len: bytes.len() });
        }
        key.copy_from_slice(bytes);
        Ok(MeetingKey { epoch, key })
    }

    /// The epoch this key belongs to.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The raw key, to place in an invite or rekey payload sealed in a container. Copy
    /// it only into zeroizing storage.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.key
    }

    pub(super) fn expand(&self, info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(None, self.key.as_slice());
        let mut out = Zeroizing::new([0u8; 32]);
        // Invariant: 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
        hk.expand_multi_info(info, out.as_mut_slice())
            .expect("HKDF-SHA256 can always expand 32 bytes");
        out
    }

    /// The key of the next epoch for a participant joining mid-meeting: one-way, so the
    /// joiner cannot decrypt earlier media.
    pub fn ratchet(&self) -> Result<MeetingKey, MeetingError> {
        let epoch = self.epoch.next().ok_or(MeetingError::EpochExhausted {
            epoch: self.epoch.get(),
        })?;
        Ok(MeetingKey {
            epoch,
            key: self.expand(&[b"conclave.ratchet.v1"]),
        })
    }

    /// The SFrame base key of sender `sender_index` in this epoch.
    #[must_use]
    pub fn sframe_base_key(&self, sender_index: u32) -> Zeroizing<[u8; 32]> {
        self.expand(&[b"conclave.sframe.v1", &sender_index.to_be_bytes()])
    }

    /// The SFrame key id of `sender_index` in this epoch.
    pub fn sframe_kid(&self, sender_index: u32) -> Result<Kid, MeetingError> {
        let index =
            u16::try_from(sender_index).map_err(|_| MeetingError::SenderIndexOutOfRange {
                index: sender_index,
            })?;
        Kid::for_sender(self.epoch.get(), index).map_err(|_| {
            if u64::from(index) >> crate::sframe::SENDER_INDEX_BITS != 0 {
                MeetingError::SenderIndexOutOfRange {
                    index: sender_index,
                }
            } else {
                MeetingError::EpochOutOfRange {
                    epoch: self.epoch.get(),
                }
            }
        })
    }

    /// An SFrame sender context for `sender_index` in this epoch.
    ///
    /// # Nonce safety
    /// Create **one** sender per (epoch, sender index) and keep it for the whole epoch,
    /// for audio and video alike: each new context starts its counter at 0, so a second
    /// one would reuse AES-GCM nonces under the same key.
    pub fn sframe_sender(&self, sender_index: u32) -> Result<SframeSender, MeetingError> {
        let kid = self.sframe_kid(sender_index)?;
        Ok(SframeSender::new(
            SFRAME_SUITE,
            self.sframe_base_key(sender_index).as_slice(),
            kid,
        ))
    }

    /// This epoch's room-auth signing key for the room `routing_id`.
    #[must_use]
    pub fn room_auth_key(&self, routing_id: &RoutingId) -> RoomAuthKey {
        let seed = self.expand(&[
            b"conclave.room-auth.v1",
            routing_id.as_bytes(),
            &self.epoch.get().to_be_bytes(),
        ]);
        RoomAuthKey::from_seed(&seed, *routing_id, self.epoch.get())
    }

    /// The public commitment to this epoch's key (input to the safety code).
    #[must_use]
    pub fn commitment(&self, meeting_id: &MeetingId) -> EpochCommitment {
        // Invariant: HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice())
            .expect("HMAC accepts any key length");
        mac.update(b"conclave.epoch-commit.v1");
        mac.update(meeting_id.as_bytes());
        mac.update(&self.epoch.get().to_be_bytes());
        EpochCommitment(mac.finalize().into_bytes().into())
    }
}

impl PartialEq for MeetingKey {
    /// Constant-time in the key bytes.
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch && bool::from(self.key.ct_eq(&*other.key))
    }
}

impl Eq for MeetingKey {}

impl fmt::Debug for MeetingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeetingKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}
