//! Containers whose recipient entries are wrapped before their payload is known.
//!
//! A key leader's `Rekey` to N devices costs 2N P-384 agreements, the dominant cost of
//! a rekey (tens of milliseconds for 100 devices on a laptop core, far more on a
//! phone). None of that work depends on the payload: an entry wraps the container's
//! *payload key* under KEKs derived from the container id, the one ephemeral key and
//! the recipient's keys. So a [`PreparedSeal`] draws the container id, the payload key
//! and the ephemeral key ahead of time and wraps the payload key for every device that
//! may receive the next Rekey; [`PreparedSeal::seal`] later puts only the entries of
//! the devices named then into the header, encrypts the payload, and signs. The
//! result is an ordinary container, built by the same steps as
//! [`seal`](super::seal) in another order: receivers cannot tell and need nothing new.
//!
//! # Invariants
//! * **One container.** `seal` consumes the preparation: a payload key, ephemeral key
//!   and container id are used for exactly one container, and each prepared prekey
//!   for at most one entry of it.
//! * **Left-out devices learn nothing.** An entry not named at `seal` never leaves
//!   this value: its device cannot unwrap the payload key, and it never sees the
//!   ephemeral key or the container id. Dropping a departed participant is a matter of
//!   not naming it.
//! * **Secrets.** The payload key and the ephemeral key zeroize on drop (aws-lc
//!   cleanses its copy when freed); `Debug` prints neither. Holding a preparation means
//!   holding the key that will protect the next Rekey: whoever reads this device's
//!   memory before it is used can read that Rekey. Callers bound how long one is kept
//!   (the SDK: [`PreparedSeal::made_at`] plus a few minutes).
//! * **Expiry.** Each entry is usable while its device certificate and its prekey are
//!   valid; `seal` refuses an expired one, as [`seal`](super::seal) does.

use std::collections::HashSet;
use std::fmt;

use conclave_proto::limits::MAX_CONTAINER_RECIPIENTS;
use conclave_proto::v1;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::seal::{
    EntryIds, Ephemeral, HeaderParts, assemble, check_message, check_recipients, wrap_entries,
};
use super::wrap::Key256;
use super::{ContainerError, Recipient};
use crate::identity::DeviceIdentity;
use crate::{ContainerId, DeviceId, UnixMillis, UserId};

/// One recipient's wrapped payload key, ready to go into a header.
struct PreparedEntry {
    device_id: DeviceId,
    /// The earlier of the device certificate's and the prekey's expiry.
    usable_until: UnixMillis,
    entry: v1::RecipientEntry,
}

/// The entries of one future container, wrapped ahead of its payload (module docs).
pub struct PreparedSeal {
    container_id: ContainerId,
    payload_key: Key256,
    ephemeral: Ephemeral,
    sender_user_id: UserId,
    sender_device_id: DeviceId,
    made_at: UnixMillis,
    entries: Vec<PreparedEntry>,
}

impl PreparedSeal {
    /// Draws the container id, payload key and ephemeral key from `rng` and wraps the
    /// payload key for `recipients` (each prekey is spent on this container). `now` is
    /// the server master clock; recipients must be valid then.
    pub fn new(
        sender: &DeviceIdentity,
        recipients: &[Recipient],
        now: UnixMillis,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ContainerError> {
        let mut payload_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(payload_key.as_mut_slice());
        let mut prepared = PreparedSeal {
            container_id: ContainerId::random(rng),
            payload_key,
            ephemeral: Ephemeral::new(rng)?,
            sender_user_id: sender.user_id(),
            sender_device_id: sender.device_id(),
            made_at: now,
            entries: Vec::new(),
        };
        if !recipients.is_empty() {
            prepared.add(sender, recipients, now)?;
        }
        Ok(prepared)
    }

    /// Wraps the payload key for more devices (participants who joined since). A
    /// device already prepared is refused ([`ContainerError::DuplicateRecipient`]), as
    /// is going past the per-container limit.
    pub fn add(
        &mut self,
        sender: &DeviceIdentity,
        recipients: &[Recipient],
        now: UnixMillis,
    ) -> Result<(), ContainerError> {
        self.check_sender(sender)?;
        check_recipients(recipients, now)?;
        let count = self.entries.len().saturating_add(recipients.len());
        if count > MAX_CONTAINER_RECIPIENTS {
            return Err(ContainerError::TooManyRecipients {
                count,
                max: MAX_CONTAINER_RECIPIENTS,
            });
        }
        if let Some(r) = recipients.iter().find(|r| self.has(&r.device.device_id())) {
            return Err(ContainerError::DuplicateRecipient {
                device_id: r.device.device_id(),
            });
        }
        let ids = EntryIds {
            container_id: &self.container_id,
            sender_user_id: &self.sender_user_id,
            sender_device_id: &self.sender_device_id,
            ephemeral_public_key: &self.ephemeral.public_key,
        };
        let payload_key = &self.payload_key;
        let wrapped = wrap_entries(&self.ephemeral.key, &ids, recipients, |_| payload_key)?;
        self.entries.extend(
            recipients
                .iter()
                .zip(wrapped)
                .map(|(r, entry)| PreparedEntry {
                    device_id: r.device.device_id(),
                    usable_until: r.device.expires_at().min(r.prekey.expires_at()),
                    entry,
                }),
        );
        Ok(())
    }

    /// Whether an entry for `device` is prepared.
    #[must_use]
    pub fn has(&self, device: &DeviceId) -> bool {
        self.entries.iter().any(|e| e.device_id == *device)
    }

    /// The prepared devices, each with the time its entry stops being usable (the
    /// earlier of its certificate's and its prekey's expiry).
    pub fn devices(&self) -> impl Iterator<Item = (DeviceId, UnixMillis)> + '_ {
        self.entries.iter().map(|e| (e.device_id, e.usable_until))
    }

    /// When the preparation was made (server master clock).
    #[must_use]
    pub fn made_at(&self) -> UnixMillis {
        self.made_at
    }

    /// Forgets the entries of devices `keep` rejects (they will not be sealed to); their
    /// prekeys stay spent.
    pub fn retain(&mut self, mut keep: impl FnMut(&DeviceId) -> bool) {
        self.entries.retain(|e| keep(&e.device_id));
    }

    /// Seals `payload` to exactly `recipients`, each of which must be prepared and
    /// still usable at `now`; the other entries are left out (and dropped with the
    /// preparation). Signed by `sender`, which must be the device that prepared it.
    pub fn seal(
        self,
        sender: &DeviceIdentity,
        recipients: &[DeviceId],
        payload: &v1::ContainerPayload,
        now: UnixMillis,
        ttl_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, ContainerError> {
        self.check_sender(sender)?;
        check_message(payload, ttl_ms)?;
        if recipients.is_empty() {
            return Err(ContainerError::NoRecipients);
        }
        let mut seen = HashSet::with_capacity(recipients.len());
        let mut entries = Vec::with_capacity(recipients.len());
        for device_id in recipients {
            if !seen.insert(*device_id) {
                return Err(ContainerError::DuplicateRecipient {
                    device_id: *device_id,
                });
            }
            let prepared = self
                .entries
                .iter()
                .find(|e| e.device_id == *device_id)
                .ok_or(ContainerError::NotPrepared {
                    device_id: *device_id,
                })?;
            if prepared.usable_until <= now {
                return Err(ContainerError::RecipientExpired {
                    device_id: *device_id,
                });
            }
            entries.push(prepared.entry.clone());
        }
        let parts = HeaderParts {
            container_id: &self.container_id,
            ephemeral_public_key: &self.ephemeral.public_key,
            entries,
            payload_key: &self.payload_key,
            clear_kind: v1::PayloadKind::Unspecified,
        };
        assemble(sender, parts, payload, now, ttl_ms, rng)
    }

    fn check_sender(&self, sender: &DeviceIdentity) -> Result<(), ContainerError> {
        if sender.user_id() != self.sender_user_id || sender.device_id() != self.sender_device_id {
            return Err(ContainerError::PreparedByAnotherDevice);
        }
        Ok(())
    }
}

impl fmt::Debug for PreparedSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload key and the ephemeral key are secrets; the container id would
        // let a log reader link the container to this preparation.
        f.debug_struct("PreparedSeal")
            .field("entries", &self.entries.len())
            .field("made_at", &self.made_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "prepared_tests.rs"]
mod tests;
