use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use conclave_proto::limits::{MAX_CONTAINER_BYTES, MAX_CONTAINER_RECIPIENTS};
use conclave_proto::{Message, v1};
use ed25519_dalek::Signature;
use zeroize::Zeroizing;

use super::wrap::{COMMITMENT_LEN, EntryContext, WRAPPED_KEY_LEN, verify_commitment};
use super::{
    CONTAINER_VERSION, ContainerError, MAX_TTL_MS, Malformed, OpenedContainer, PAYLOAD_NONCE_LEN,
    ReplayCache, payload_kind, signing_input,
};
use crate::identity::PrekeyLookup;
use crate::identity::{
    DeviceIdentity, P384_COMPRESSED_LEN, PrekeyPool, UserIdentity, VerifiedDevice, p384_public,
};
use crate::time::MAX_CLOCK_SKEW_MS;
use crate::{ContainerId, DeviceId, UnixMillis, UserId};

/// A decoded but not yet verified container.
///
/// Decode it, look up the trusted identity key of [`Self::claimed_sender`] (pinned on
/// first use or confirmed with a safety code), then [`Self::open`] it.
pub struct SealedContainer {
    wire: v1::Container,
    certificate: v1::DeviceCertificate,
    claimed_sender: UserId,
}

impl SealedContainer {
    /// Decodes container bytes from the network or a mailbox, within the size bound.
    /// Nothing is verified yet.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContainerError> {
        if bytes.len() > MAX_CONTAINER_BYTES {
            return Err(ContainerError::TooLarge {
                len: bytes.len(),
                max: MAX_CONTAINER_BYTES,
            });
        }
        let mut wire = v1::Container::decode(bytes).map_err(Malformed::Encoding)?;
        let certificate = wire
            .sender_certificate
            .take()
            .ok_or(Malformed::MissingCertificate)?;
        let body = v1::DeviceCertificateBody::decode(certificate.body.as_slice())
            .map_err(Malformed::CertificateEncoding)?;
        let claimed_sender =
            UserId::from_slice(&body.user_id).ok_or(Malformed::CertificateUserId)?;
        Ok(SealedContainer {
            wire,
            certificate,
            claimed_sender,
        })
    }

    /// The user the container *claims* to come from. Unverified: use it only to look up
    /// the trusted identity key to pass to [`Self::open`].
    #[must_use]
    pub fn claimed_sender(&self) -> UserId {
        self.claimed_sender
    }

    /// Verifies and decrypts the container for device `me`.
    ///
    /// `sender` is the caller's trusted identity for [`Self::claimed_sender`]; `now` is
    /// the server's master clock. On success the prekey used is deleted from `prekeys`
    /// and the container id is recorded in `replay`; on failure neither changes.
    pub fn open(
        &self,
        sender: &UserIdentity,
        me: &DeviceIdentity,
        prekeys: &mut PrekeyPool,
        replay: &mut ReplayCache,
        now: UnixMillis,
    ) -> Result<OpenedContainer, ContainerError> {
        // 1. The sender's certificate chain, before anything else.
        let sender_device = VerifiedDevice::verify(&self.certificate, sender, now)
            .map_err(ContainerError::SenderCertificate)?;

        // 2. The signature over exactly the received header and ciphertext bytes.
        let signature =
            Signature::from_slice(&self.wire.signature).map_err(|_| Malformed::SignatureLength)?;
        sender_device
            .signing_key()
            .verify_strict(
                &signing_input(&self.wire.header, &self.wire.ciphertext)?,
                &signature,
            )
            .map_err(|_| ContainerError::BadSignature)?;

        // 3. The header, now known to come from the sender.
        let header = v1::ContainerHeader::decode(self.wire.header.as_slice())
            .map_err(Malformed::HeaderEncoding)?;
        let parsed = ParsedHeader::parse(&header, &sender_device)?;
        let expires_at = parsed.check_time(now)?;

        // 4. Replay, then this device's entry and its prekey.
        replay.check(parsed.sender_device_id, &parsed.container_id, now)?;
        let entry = parsed.entry_for(&header, me.device_id())?;
        let prekey_secret = match prekeys.lookup(entry.prekey_id, now) {
            PrekeyLookup::Available(secret) => secret,
            PrekeyLookup::Consumed => {
                return Err(ContainerError::PrekeyConsumed {
                    prekey_id: entry.prekey_id,
                });
            }
            PrekeyLookup::Expired(expired_at) => {
                return Err(ContainerError::PrekeyExpired {
                    prekey_id: entry.prekey_id,
                    expired_at,
                });
            }
            PrekeyLookup::Unknown => {
                return Err(ContainerError::UnknownPrekey {
                    prekey_id: entry.prekey_id,
                });
            }
        };

        // 5. Unwrap: device-key layer, then prekey layer; then the key commitment.
        let ephemeral = p384_public(&header.ephemeral_public_key, "ephemeral key")
            .map_err(Malformed::EphemeralKey)?;
        // The agreements run in aws-lc (`ecdh`); the shared secrets zeroize on drop.
        let prekey_shared = prekey_secret.ecdh()?.agree(&ephemeral)?;
        let device_shared = me.device_ecdh()?.agree(&ephemeral)?;
        let my_device_id = me.device_id();
        let ctx = EntryContext {
            container_id: &parsed.container_id,
            sender_user_id: &parsed.sender_user_id,
            sender_device_id: &parsed.sender_device_id,
            recipient_device_id: &my_device_id,
            prekey_id: entry.prekey_id,
            ephemeral_public_key: &header.ephemeral_public_key,
        };
        let (kek1, kek2) = ctx.keks(prekey_shared.as_slice(), device_shared.as_slice());
        let key = ctx.unwrap(&kek1, &kek2, &entry.wrapped_key)?;
        verify_commitment(&key, &parsed.container_id, &header.key_commitment)?;

        // 6. The payload, authenticated against the header bytes.
        let (nonce, sealed) = self
            .wire
            .ciphertext
            .split_first_chunk::<PAYLOAD_NONCE_LEN>()
            .ok_or(Malformed::CiphertextTooShort)?;
        let plaintext = Zeroizing::new(
            Aes256Gcm::new(key.as_slice().into())
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &self.wire.header,
                    },
                )
                .map_err(|_| ContainerError::PayloadDecryptFailed)?,
        );
        let mut payload = v1::ContainerPayload::decode(plaintext.as_slice())
            .map_err(Malformed::PayloadEncoding)?;
        // Padding only hides the length on the wire (3.6); the app never sees it.
        payload.padding = Vec::new();
        let actual = payload_kind(&payload);
        let recipients = header
            .entries
            .iter()
            .filter_map(|e| DeviceId::from_slice(&e.recipient_device_id))
            .collect();
        let opened = OpenedContainer {
            recipients,
            container_id: parsed.container_id,
            sender: sender_device,
            created_at: parsed.created_at,
            expires_at,
            payload,
        };
        if header.payload_kind != 0 {
            return Err(ContainerError::PayloadKindInClear {
                declared: header.payload_kind,
            });
        }
        if actual == v1::PayloadKind::Unspecified {
            return Err(ContainerError::UnknownPayload);
        }

        // 7. Commit: the prekey is spent and the container id remembered.
        prekeys.consume(entry.prekey_id);
        replay.record(parsed.sender_device_id, parsed.container_id, expires_at);
        Ok(opened)
    }
}

impl fmt::Debug for SealedContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedContainer")
            .field("claimed_sender", &self.claimed_sender)
            .field("len", &self.wire.encoded_len())
            .finish_non_exhaustive()
    }
}

/// Header fields checked for shape and consistency with the sender's certificate.
struct ParsedHeader {
    container_id: ContainerId,
    sender_user_id: UserId,
    sender_device_id: DeviceId,
    created_at: UnixMillis,
    ttl_ms: u64,
}

impl ParsedHeader {
    fn parse(
        header: &v1::ContainerHeader,
        sender: &VerifiedDevice,
    ) -> Result<Self, ContainerError> {
        if header.version != CONTAINER_VERSION {
            return Err(ContainerError::UnsupportedVersion {
                version: header.version,
            });
        }
        let container_id =
            ContainerId::from_slice(&header.container_id).ok_or(Malformed::ContainerId)?;
        let sender_user_id =
            UserId::from_slice(&header.sender_user_id).ok_or(Malformed::SenderUserId)?;
        let sender_device_id =
            DeviceId::from_slice(&header.sender_device_id).ok_or(Malformed::SenderDeviceId)?;
        if sender_user_id != sender.user_id() || sender_device_id != sender.device_id() {
            return Err(ContainerError::SenderMismatch);
        }
        if header.ephemeral_public_key.len() != P384_COMPRESSED_LEN {
            return Err(Malformed::EphemeralKeyLength.into());
        }
        if header.key_commitment.len() != COMMITMENT_LEN {
            return Err(Malformed::KeyCommitment.into());
        }
        if header.entries.is_empty() || header.entries.len() > MAX_CONTAINER_RECIPIENTS {
            return Err(Malformed::RecipientCount.into());
        }
        if header.ttl_ms == 0 || header.ttl_ms > MAX_TTL_MS {
            return Err(Malformed::Ttl.into());
        }
        Ok(ParsedHeader {
            container_id,
            sender_user_id,
            sender_device_id,
            created_at: UnixMillis(header.created_at_ms),
            ttl_ms: header.ttl_ms,
        })
    }

    /// Rejects expired and future-dated containers; returns the expiry.
    fn check_time(&self, now: UnixMillis) -> Result<UnixMillis, ContainerError> {
        let expires_at = self.created_at.saturating_add(self.ttl_ms);
        if now >= expires_at {
            return Err(ContainerError::Expired {
                expired_at: expires_at,
                now,
            });
        }
        if self.created_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(ContainerError::FromFuture {
                created_at: self.created_at,
                now,
            });
        }
        Ok(expires_at)
    }

    /// The single entry addressed to `device_id`.
    fn entry_for<'h>(
        &self,
        header: &'h v1::ContainerHeader,
        device_id: DeviceId,
    ) -> Result<&'h v1::RecipientEntry, ContainerError> {
        let mut mine = header
            .entries
            .iter()
            .filter(|e| e.recipient_device_id.as_slice() == device_id.as_bytes());
        let entry = mine
            .next()
            .ok_or(ContainerError::NotARecipient { device_id })?;
        if mine.next().is_some() {
            return Err(Malformed::DuplicateEntry.into());
        }
        if entry.wrapped_key.len() != WRAPPED_KEY_LEN {
            return Err(Malformed::WrappedKeyLength.into());
        }
        Ok(entry)
    }
}
