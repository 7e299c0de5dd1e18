//! Room access control at the SFU without revealing the meeting.
//!
//! Each epoch's meeting key derives an Ed25519 *room-auth key*. The SFU stores only the
//! routing id and the current room-auth public key. To join, a device signs the SFU's
//! challenge; to move the room to a new epoch, a holder of the current key signs the
//! next public key. Only holders of the epoch's meeting key can do either, so a removed
//! participant, who never receives the new key, loses routing as well as decryption.
//!
//! ```text
//! join     = Ed25519(room-auth key of epoch e, "conclave.room-join.v1" || routing_id
//!                    || u64be(e) || u16be(len(tls_binding)) || tls_binding || challenge)
//! rotation = Ed25519(room-auth key of epoch e, "conclave.room-rotate.v1" || routing_id
//!                    || u64be(e') || public key of epoch e')          with e' > e
//! ```
//!
//! `tls_binding` is keying material exported from the client's TLS session (RFC 5705),
//! so a join proof cannot be relayed to another connection or node. The SFU accepts a
//! rotation only to a strictly greater epoch.
//!
//! Limit: every holder of epoch `e` can sign a rotation. A participant about to be
//! removed could race the key leader's rotation with one of its own; the SFU therefore
//! also requires that rotations come from one of the room's leader devices, which the
//! key leader lists (see `docs/protocol.md`, section 4.1).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::{MeetingError, RoutingId};

const JOIN_DOMAIN: &[u8] = b"conclave.room-join.v1";
const ROTATE_DOMAIN: &[u8] = b"conclave.room-rotate.v1";

/// Longest SFU challenge (and TLS binding) accepted, in bytes.
pub const MAX_CHALLENGE_LEN: usize = 256;

fn rotation_message(routing_id: &RoutingId, next_epoch: u64, next: &RoomAuthPublic) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ROTATE_DOMAIN.len() + 32 + 8 + 32);
    msg.extend_from_slice(ROTATE_DOMAIN);
    msg.extend_from_slice(routing_id.as_bytes());
    msg.extend_from_slice(&next_epoch.to_be_bytes());
    msg.extend_from_slice(next.0.as_bytes());
    msg
}

fn join_message(
    routing_id: &RoutingId,
    epoch: u64,
    tls_binding: &[u8],
    challenge: &[u8],
) -> Result<Vec<u8>, MeetingError> {
    if challenge.len() > MAX_CHALLENGE_LEN || tls_binding.len() > MAX_CHALLENGE_LEN {
        return Err(MeetingError::MalformedRoomAuth(
            "challenge or TLS binding (longer than 256 bytes)",
        ));
    }
    // Invariant: checked just above that the length fits in a u16.
    let binding_len = u16::try_from(tls_binding.len()).expect("at most 256 bytes");
    let mut msg =
        Vec::with_capacity(JOIN_DOMAIN.len() + 32 + 8 + 2 + tls_binding.len() + challenge.len());
    msg.extend_from_slice(JOIN_DOMAIN);
    msg.extend_from_slice(routing_id.as_bytes());
    msg.extend_from_slice(&epoch.to_be_bytes());
    msg.extend_from_slice(&binding_len.to_be_bytes());
    msg.extend_from_slice(tls_binding);
    msg.extend_from_slice(challenge);
    Ok(msg)
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

    /// Answers the SFU's join challenge on the TLS session `tls_binding` identifies.
    pub fn sign_join(
        &self,
        tls_binding: &[u8],
        challenge: &[u8],
    ) -> Result<[u8; 64], MeetingError> {
        let msg = join_message(&self.routing_id, self.epoch, tls_binding, challenge)?;
        Ok(self.signing.sign(&msg).to_bytes())
    }

    /// Authorizes moving the room to `next`, the room-auth key of epoch `next.epoch()`,
    /// which must be later than this key's epoch.
    pub fn sign_rotation(&self, next: &RoomAuthKey) -> Result<[u8; 64], MeetingError> {
        if next.epoch <= self.epoch || next.routing_id != self.routing_id {
            return Err(MeetingError::MalformedRoomAuth(
                "rotation (must move the same room to a later epoch)",
            ));
        }
        let msg = rotation_message(&self.routing_id, next.epoch, &next.public());
        Ok(self.signing.sign(&msg).to_bytes())
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

    /// Checks a join answer in room `routing_id`, whose current epoch is `epoch`, for
    /// `challenge` on the TLS session `tls_binding` identifies (run by the SFU).
    pub fn verify_join(
        &self,
        routing_id: &RoutingId,
        epoch: u64,
        tls_binding: &[u8],
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<(), MeetingError> {
        let msg = join_message(routing_id, epoch, tls_binding, challenge)?;
        self.verify(&msg, signature)
    }

    /// Checks that this (current) key authorized moving room `routing_id` to `next` at
    /// epoch `next_epoch` (run by the SFU, which must also check that `next_epoch` is
    /// greater than the room's current epoch).
    pub fn verify_rotation(
        &self,
        routing_id: &RoutingId,
        next_epoch: u64,
        next: &RoomAuthPublic,
        signature: &[u8],
    ) -> Result<(), MeetingError> {
        self.verify(&rotation_message(routing_id, next_epoch, next), signature)
    }
}

impl fmt::Debug for RoomAuthPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::ids::fmt_truncated(f, "RoomAuthPublic", self.0.as_bytes())
    }
}
