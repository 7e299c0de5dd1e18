//! The meeting key schedule.
//!
//! ```text
//! meeting_id  = SHA-256("conclave.meeting.v1" || initiator user id || initiator device id
//!                       || u64be(start ms) || u32be(participant count) || 32 random bytes)
//! routing_id  = SHA-256("conclave.route.v1" || meeting_id)      — all the SFU ever sees
//! MeetingKey  = (epoch, 32 bytes from the OS CSPRNG)             — one per epoch
//!   ├─ sframe base key(sender i) = HKDF-SHA256(key, info = "conclave.sframe.v1" || u32be(i))
//!   ├─ room-auth key             = Ed25519 seed HKDF-SHA256(key, info = "conclave.room-auth.v1"
//!   │                              || routing_id || u64be(epoch))
//!   ├─ epoch commitment          = HMAC-SHA256(key, "conclave.epoch-commit.v1" || meeting_id
//!   │                              || u64be(epoch))  — public; feeds the safety code
//!   ├─ message base key(mode, i) = HKDF-SHA256(key, info = "conclave.message.v1" || mode
//!   │                              || u32be(i))  — in-meeting messages ([`messages`])
//!   └─ ratchet (join)            = (epoch + 1, HKDF-SHA256(key, info = "conclave.ratchet.v1"))
//! ```
//!
//! Per-sender base keys mean no two senders ever share an SFrame key and nonce space.
//! The ratchet is one-way: a participant joining mid-meeting receives the ratcheted key
//! and cannot compute earlier epochs' keys. Rekeys after a departure use a *fresh* random
//! key instead, so departed participants cannot follow. Meeting keys zeroize on drop and
//! never appear in `Debug` output.

mod epoch;
mod key;
pub mod messages;
pub mod rekey;
mod room_auth;

use std::fmt;

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use epoch::Epoch;
pub use key::{EpochCommitment, MeetingKey, SFRAME_SUITE};
pub use room_auth::{MAX_CHALLENGE_LEN, RoomAuthKey, RoomAuthPublic};

use crate::{DeviceId, UnixMillis, UserId};

/// Why a meeting key operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MeetingError {
    /// A meeting key field did not hold exactly 32 bytes.
    #[error("meeting key must be 32 bytes, got {len}; the invite or rekey is malformed")]
    InvalidKeyLength {
        /// Bytes found.
        len: usize,
    },
    /// The epoch counter cannot advance further.
    #[error("meeting epoch {epoch} cannot advance; start a new meeting")]
    EpochExhausted {
        /// The last epoch.
        epoch: u64,
    },
    /// The epoch does not fit in the SFrame key id.
    #[error("epoch {epoch} exceeds the largest epoch an SFrame key id can carry")]
    EpochOutOfRange {
        /// The epoch.
        epoch: u64,
    },
    /// The sender index does not fit in the SFrame key id.
    #[error("sender index {index} exceeds the largest index an SFrame key id can carry")]
    SenderIndexOutOfRange {
        /// The index.
        index: u32,
    },
    /// A room-auth signature did not verify.
    #[error(
        "room-auth signature does not verify: the signer does not hold this epoch's meeting key"
    )]
    BadRoomAuthSignature,
    /// A room-auth public key or signature had the wrong shape.
    #[error("malformed room-auth {0}")]
    MalformedRoomAuth(&'static str),
    /// An SFrame context could not be built.
    #[error(transparent)]
    Sframe(#[from] crate::sframe::SframeError),
}

macro_rules! digest_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps the 32 raw bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// Parses exactly 32 bytes.
            #[must_use]
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 32]>::try_from(bytes).ok().map(Self)
            }

            /// The raw bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::ids::fmt_truncated(f, stringify!($name), &self.0)
            }
        }
    };
}

digest_id!(
    /// The meeting's real identifier. Known to participants only; never sent to the SFU.
    MeetingId
);
digest_id!(
    /// `SHA-256("conclave.route.v1" || meeting_id)`: the only meeting identifier the SFU
    /// sees.
    RoutingId
);

impl MeetingId {
    /// Derives a meeting id from its initiator, start time, participant count and 32
    /// random bytes.
    #[must_use]
    pub fn derive(
        initiator_user: &UserId,
        initiator_device: &DeviceId,
        started_at: UnixMillis,
        participant_count: u32,
        random: &[u8; 32],
    ) -> Self {
        let digest = Sha256::new()
            .chain_update(b"conclave.meeting.v1")
            .chain_update(initiator_user.as_bytes())
            .chain_update(initiator_device.as_bytes())
            .chain_update(started_at.0.to_be_bytes())
            .chain_update(participant_count.to_be_bytes())
            .chain_update(random)
            .finalize();
        MeetingId(digest.into())
    }

    /// Derives a meeting id with 32 fresh random bytes from `rng`.
    pub fn generate(
        initiator_user: &UserId,
        initiator_device: &DeviceId,
        started_at: UnixMillis,
        participant_count: u32,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        Self::derive(
            initiator_user,
            initiator_device,
            started_at,
            participant_count,
            &random,
        )
    }

    /// The routing id the SFU knows this meeting by.
    #[must_use]
    pub fn routing_id(&self) -> RoutingId {
        let digest = Sha256::new()
            .chain_update(b"conclave.route.v1")
            .chain_update(self.0)
            .finalize();
        RoutingId(digest.into())
    }
}

#[cfg(test)]
mod tests;
