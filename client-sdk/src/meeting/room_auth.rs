//! Room access control at the SFU without revealing the meeting.
//!
//! Each epoch's meeting key derives an Ed25519 *room-auth key*. The SFU stores only the
//! routing id and the current room-auth public key. To join, a device signs the SFU's
//! challenge; to move the room to a new epoch, a holder of the current key signs the
//! next public key. Only holders of the epoch's meeting key can do either, so a removed
//! participant, who never receives the new key, loses routing as well as decryption.
//!
//! ```text
//! join     = Ed25519(room-auth key, "conclave.room-join.v1"   || routing_id || challenge)
//! rotation = Ed25519(current key,   "conclave.room-rotate.v1" || routing_id || next public key)
//! ```

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::{MeetingError, RoutingId};

const JOIN_DOMAIN: &[u8] = b"conclave.room-join.v1";
const ROTATE_DOMAIN: &[u8] = b"conclave.room-rotate.v1";

/// Longest SFU challenge accepted, in bytes.
pub const MAX_CHALLENGE_LEN: usize = 256;

fn message(domain: &[u8], routing_id: &RoutingId, tail: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len() + 32 + tail.len());
    msg.extend_from_slice(domain);
    msg.extend_from_slice(routing_id.as_bytes());
    msg.extend_from_slice(tail);
    msg
}

/// An epoch's room-auth signing key (secret; zeroized on drop).
pub struct RoomAuthKey {
    signing: SigningKey,
    routing_id: RoutingId,
    epoch: u64,
}

impl RoomAuthKey {
    pub(super) fn from_seed(seed: &[u8; 32], routing_id: RoutingId, epoch: u64) -> Self {
        RoomAuthKey {
            signing: SigningKey::from_bytes(seed),
            routing_id,
            epoch,
        }
    }

    /// The public key to register at the SFU for this epoch.
    #[must_use]
    pub fn public(&self) -> RoomAuthPublic {
        RoomAuthPublic(self.signing.verifying_key())
    }

    /// The epoch this key belongs to.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Answers the SFU's join challenge.
    pub fn sign_join(&self, challenge: &[u8]) -> Result<[u8; 64], MeetingError> {
        if challenge.len() > MAX_CHALLENGE_LEN {
            return Err(MeetingError::MalformedRoomAuth("challenge (too long)"));
        }
        Ok(self
            .signing
            .sign(&message(JOIN_DOMAIN, &self.routing_id, challenge))
            .to_bytes())
    }

    /// Authorizes moving the room to `next` (the next epoch's public key).
    #[must_use]
    pub fn sign_rotation(&self, next: &RoomAuthPublic) -> [u8; 64] {
        self.signing
            .sign(&message(ROTATE_DOMAIN, &self.routing_id, next.0.as_bytes()))
            .to_bytes()
    }
}

impl fmt::Debug for RoomAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomAuthKey")
            .field("public", &self.public())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// A room-auth public key, as stored by the SFU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RoomAuthPublic(VerifyingKey);

impl RoomAuthPublic {
    /// Parses the 32-byte public key.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, MeetingError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| MeetingError::MalformedRoomAuth("public key (not 32 bytes)"))?;
        VerifyingKey::from_bytes(&arr)
            .map(RoomAuthPublic)
            .map_err(|_| MeetingError::MalformedRoomAuth("public key (not a curve point)"))
    }

    /// The 32 key bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), MeetingError> {
        let signature = Signature::from_slice(signature)
            .map_err(|_| MeetingError::MalformedRoomAuth("signature (not 64 bytes)"))?;
        self.0
            .verify_strict(msg, &signature)
            .map_err(|_| MeetingError::BadRoomAuthSignature)
    }

    /// Checks a join answer for `challenge` in room `routing_id` (run by the SFU).
    pub fn verify_join(
        &self,
        routing_id: &RoutingId,
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<(), MeetingError> {
        if challenge.len() > MAX_CHALLENGE_LEN {
            return Err(MeetingError::MalformedRoomAuth("challenge (too long)"));
        }
        self.verify(&message(JOIN_DOMAIN, routing_id, challenge), signature)
    }

    /// Checks that `next` was authorized by this (current) key (run by the SFU).
    pub fn verify_rotation(
        &self,
        routing_id: &RoutingId,
        next: &RoomAuthPublic,
        signature: &[u8],
    ) -> Result<(), MeetingError> {
        self.verify(
            &message(ROTATE_DOMAIN, routing_id, next.0.as_bytes()),
            signature,
        )
    }
}

impl fmt::Debug for RoomAuthPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::ids::fmt_truncated(f, "RoomAuthPublic", self.0.as_bytes())
    }
}
