//! Secure communication containers: one payload, readable only by chosen devices.
//!
//! # Sealing
//! 1. A fresh 256-bit message key `K`, a random 16-byte container id and one fresh
//!    ephemeral P-384 key for the whole container.
//! 2. Per recipient device: `KEK1` from ECDH(ephemeral, recipient's one-time prekey),
//!    `KEK2` from ECDH(ephemeral, recipient's static device key), each through HKDF with
//!    its own label bound to the container id, sender and recipient ids, prekey id and
//!    ephemeral key; the entry holds `AES-256-GCM(KEK2, AES-256-GCM(KEK1, K))`.
//! 3. The header (version, ids, times, ephemeral key, entries, key commitment
//!    `HMAC(K, "conclave.commit.v1" || container_id)`, payload kind) is serialized once.
//! 4. `ciphertext = nonce || AES-256-GCM(K, payload, aad = header bytes)`.
//! 5. The sender device signs `"conclave.container.v1" || u32be(len(header)) || header ||
//!    ciphertext` with Ed25519 and attaches its certificate.
//!
//! A [`PreparedSeal`] does step 2 ahead of time for devices that may receive a later
//! container (a key leader's next `Rekey`), and steps 3 to 5 once its payload and final
//! recipients are known (`prepared.rs`).
//!
//! # Opening (order matters)
//! Size bound → decode → **sender certificate chain** against the caller's trusted key
//! for the sender → signature over the received bytes → version, sender ids, expiry →
//! replay → find this device's entry → prekey lookup → unwrap device-key layer, then
//! prekey layer → key commitment → payload decryption → payload kind. Only when all of
//! that succeeds is the prekey's private half deleted and the container id recorded.
//! Failures before that leave no state behind, so forged containers cannot burn
//! prekeys.

pub(crate) mod ecdh;
mod error;
mod open;
mod prepared;
mod replay;
mod seal;
mod wrap;

use std::fmt;

use conclave_proto::v1::{self, PayloadKind, container_payload::Body};
use zeroize::Zeroize;

pub use error::{ContainerError, Malformed};
pub use open::SealedContainer;
pub use prepared::PreparedSeal;
pub use replay::{DEFAULT_REPLAY_CAPACITY, ReplayCache};
pub use seal::{PAYLOAD_PADDING_BLOCK, seal};

use crate::identity::{VerifiedDevice, VerifiedPrekey};
use crate::time::DAY_MS;
use crate::{ContainerId, DeviceId, UnixMillis};

/// The container format version this SDK writes and reads.
pub const CONTAINER_VERSION: u32 = 1;
/// Default time to live: 30 days, like the server mailbox.
pub const DEFAULT_TTL_MS: u64 = 30 * DAY_MS;
/// Longest time to live accepted.
pub const MAX_TTL_MS: u64 = 90 * DAY_MS;

const SIGNATURE_DOMAIN: &[u8] = b"conclave.container.v1";
const PAYLOAD_NONCE_LEN: usize = 12;

/// A recipient device with the one-time prekey fetched for it, both verified.
#[derive(Clone)]
pub struct Recipient {
    device: VerifiedDevice,
    prekey: VerifiedPrekey,
}

impl Recipient {
    /// Pairs a verified device with a verified prekey of that same device.
    pub fn new(device: VerifiedDevice, prekey: VerifiedPrekey) -> Result<Self, ContainerError> {
        if prekey.device_id() != device.device_id() {
            return Err(ContainerError::RecipientPrekeyMismatch);
        }
        Ok(Recipient { device, prekey })
    }

    /// The recipient device.
    #[must_use]
    pub fn device(&self) -> &VerifiedDevice {
        &self.device
    }

    /// The prekey the container will use.
    #[must_use]
    pub fn prekey(&self) -> &VerifiedPrekey {
        &self.prekey
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipient")
            .field("device", &self.device)
            .field("prekey", &self.prekey)
            .finish()
    }
}

/// A successfully opened container. Secret fields of the payload (meeting keys) are
/// zeroized when this is dropped; copy them into their own zeroizing types.
pub struct OpenedContainer {
    container_id: ContainerId,
    sender: VerifiedDevice,
    created_at: UnixMillis,
    expires_at: UnixMillis,
    payload: v1::ContainerPayload,
    recipients: Vec<DeviceId>,
}

impl OpenedContainer {
    /// The container id.
    #[must_use]
    pub fn container_id(&self) -> ContainerId {
        self.container_id
    }

    /// The verified sender device.
    #[must_use]
    pub fn sender(&self) -> &VerifiedDevice {
        &self.sender
    }

    /// Creation time (server master clock).
    #[must_use]
    pub fn created_at(&self) -> UnixMillis {
        self.created_at
    }

    /// Expiry time.
    #[must_use]
    pub fn expires_at(&self) -> UnixMillis {
        self.expires_at
    }

    /// The decrypted payload.
    #[must_use]
    pub fn payload(&self) -> &v1::ContainerPayload {
        &self.payload
    }

    /// Every device the sender addressed this container to (signed header entries).
    #[must_use]
    pub fn recipients(&self) -> &[DeviceId] {
        &self.recipients
    }
}

impl Drop for OpenedContainer {
    fn drop(&mut self) {
        zeroize_payload_secrets(&mut self.payload);
    }
}

impl fmt::Debug for OpenedContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedContainer")
            .field("container_id", &self.container_id)
            .field("sender", &self.sender)
            .field("kind", &payload_kind(&self.payload))
            .finish_non_exhaustive()
    }
}

/// Overwrites the secret fields of a payload (meeting keys) with zeros.
pub fn zeroize_payload_secrets(payload: &mut v1::ContainerPayload) {
    match &mut payload.body {
        Some(Body::MeetingInvite(invite)) => invite.meeting_key.zeroize(),
        Some(Body::Rekey(rekey)) => rekey.meeting_key.zeroize(),
        Some(Body::Text(text)) => text.text.zeroize(),
        _ => {}
    }
}

/// The header kind matching a payload's variant.
#[must_use]
pub fn payload_kind(payload: &v1::ContainerPayload) -> PayloadKind {
    match &payload.body {
        None => PayloadKind::Unspecified,
        Some(Body::MeetingInvite(_)) => PayloadKind::MeetingInvite,
        Some(Body::InviteReply(_)) => PayloadKind::InviteReply,
        Some(Body::Rekey(_)) => PayloadKind::Rekey,
        Some(Body::EpochSwitch(_)) => PayloadKind::EpochSwitch,
        Some(Body::Leave(_)) => PayloadKind::Leave,
        Some(Body::Remove(_)) => PayloadKind::Remove,
        Some(Body::Text(_)) => PayloadKind::Text,
        Some(Body::KeyRequest(_)) => PayloadKind::KeyRequest,
    }
}

/// `domain || u32be(len(header)) || header || ciphertext`.
fn signing_input(header: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, ContainerError> {
    let header_len = u32::try_from(header.len()).map_err(|_| Malformed::HeaderTooLong)?;
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 4 + header.len() + ciphertext.len());
    msg.extend_from_slice(SIGNATURE_DOMAIN);
    msg.extend_from_slice(&header_len.to_be_bytes());
    msg.extend_from_slice(header);
    msg.extend_from_slice(ciphertext);
    Ok(msg)
}

#[cfg(test)]
mod tests;
