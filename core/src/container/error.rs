use thiserror::Error;

use crate::identity::IdentityError;
use crate::{ContainerId, DeviceId, UnixMillis};

/// Which part of a container is not well formed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The bytes do not decode as a container.
    #[error("the bytes do not decode as a container: {0}")]
    Encoding(#[source] conclave_proto::prost::DecodeError),
    /// The container carries no sender certificate.
    #[error("sender certificate is missing")]
    MissingCertificate,
    /// The sender certificate's body does not decode.
    #[error("sender certificate does not decode: {0}")]
    CertificateEncoding(#[source] conclave_proto::prost::DecodeError),
    /// The sender certificate's user id is not 32 bytes.
    #[error("sender certificate user id is not 32 bytes")]
    CertificateUserId,
    /// The signature is not 64 bytes.
    #[error("signature is not 64 bytes")]
    SignatureLength,
    /// The header is longer than 4 GiB.
    #[error("header longer than 4 GiB")]
    HeaderTooLong,
    /// The (signed) header does not decode.
    #[error("header does not decode: {0}")]
    HeaderEncoding(#[source] conclave_proto::prost::DecodeError),
    /// The container id is not 16 bytes.
    #[error("header: container id is not 16 bytes")]
    ContainerId,
    /// The sender user id is not 32 bytes.
    #[error("header: sender user id is not 32 bytes")]
    SenderUserId,
    /// The sender device id is not 16 bytes.
    #[error("header: sender device id is not 16 bytes")]
    SenderDeviceId,
    /// The ephemeral key is not a 49-byte compressed point.
    #[error("header: ephemeral key is not a 49-byte compressed point")]
    EphemeralKeyLength,
    /// The ephemeral key is not a valid P-384 point.
    #[error("header: {0}")]
    EphemeralKey(#[source] IdentityError),
    /// The key commitment is not 32 bytes.
    #[error("header: key commitment is not 32 bytes")]
    KeyCommitment,
    /// No recipient entry, or more than the limit.
    #[error("header: recipient entry count out of range")]
    RecipientCount,
    /// The time to live is zero or above the limit.
    #[error("header: ttl out of range")]
    Ttl,
    /// Two entries address the same device.
    #[error("header: two entries for the same device")]
    DuplicateEntry,
    /// This device's wrapped key is not 64 bytes.
    #[error("header: wrapped key is not 64 bytes")]
    WrappedKeyLength,
    /// The ciphertext is shorter than its nonce.
    #[error("ciphertext shorter than its nonce")]
    CiphertextTooShort,
    /// The decrypted payload does not decode.
    #[error("payload does not decode: {0}")]
    PayloadEncoding(#[source] conclave_proto::prost::DecodeError),
}

impl From<Malformed> for ContainerError {
    fn from(part: Malformed) -> Self {
        ContainerError::Malformed(part)
    }
}

/// Why a container could not be sealed or opened.
///
/// Every failure to open is final for that container: the caller should drop it (and,
/// for a mailbox entry, acknowledge it so it is not redelivered).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The container exceeds the size bound.
    #[error("container of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a well-formed container.
    #[error("malformed container: {0}")]
    Malformed(#[source] Malformed),
    /// The container version is unknown.
    #[error("unsupported container version {version}; this SDK speaks version 1")]
    UnsupportedVersion {
        /// Version found.
        version: u32,
    },
    /// The sender's device certificate did not verify against the sender's trusted key.
    #[error("sender's device certificate is not valid: {0}")]
    SenderCertificate(#[source] IdentityError),
    /// The header names a different sender than the attached certificate.
    #[error("container header names a different sender than its certificate")]
    SenderMismatch,
    /// The signature over header and ciphertext does not verify.
    #[error(
        "container signature does not verify: it was altered in transit or not sent by the device its certificate names"
    )]
    BadSignature,
    /// The container's time to live has passed.
    #[error("container expired at {expired_at:?} (now {now:?})")]
    Expired {
        /// Expiry time.
        expired_at: UnixMillis,
        /// Time checked at.
        now: UnixMillis,
    },
    /// The container claims a creation time in the future.
    #[error("container was created at {created_at:?}, in the future (now {now:?}); check clocks")]
    FromFuture {
        /// Claimed creation time.
        created_at: UnixMillis,
        /// Time checked at.
        now: UnixMillis,
    },
    /// This container was already opened.
    #[error("container {container_id:?} was already received (replay); ignore it")]
    Replayed {
        /// The replayed container.
        container_id: ContainerId,
    },
    /// This device has no entry in the header.
    #[error("container is not addressed to this device ({device_id:?})")]
    NotARecipient {
        /// This device.
        device_id: DeviceId,
    },
    /// The entry uses a prekey id this device never issued.
    #[error("container uses prekey {prekey_id}, which this device never issued")]
    UnknownPrekey {
        /// The prekey id.
        prekey_id: u64,
    },
    /// The entry uses a prekey that was already consumed by another container.
    #[error(
        "container uses prekey {prekey_id}, already consumed by an earlier container (one-time prekeys are never reused)"
    )]
    PrekeyConsumed {
        /// The prekey id.
        prekey_id: u64,
    },
    /// The entry uses a prekey that has expired.
    #[error("container uses prekey {prekey_id}, which expired at {expired_at:?}")]
    PrekeyExpired {
        /// The prekey id.
        prekey_id: u64,
        /// Its expiry.
        expired_at: UnixMillis,
    },
    /// A wrap layer failed to authenticate.
    #[error("the {layer} wrap layer of this device's entry does not authenticate")]
    UnwrapFailed {
        /// Which layer failed.
        layer: &'static str,
    },
    /// The unwrapped key does not match the header's key commitment.
    #[error(
        "unwrapped key does not match the container's key commitment: the sender gave recipients different keys"
    )]
    CommitmentMismatch,
    /// The payload failed to decrypt under the committed key.
    #[error("container payload does not authenticate under its key")]
    PayloadDecryptFailed,
    /// The header names the payload's kind in the clear, which the server could read;
    /// the kind belongs inside the encrypted payload only (protocol 3.6). Refused so
    /// that no sender leaks it.
    #[error("the container header names its payload kind ({declared}) in the clear; refused")]
    PayloadKindInClear {
        /// Kind declared in the header.
        declared: i32,
    },
    /// The decrypted payload carries no payload this SDK knows (empty, or a kind from
    /// a newer protocol version).
    #[error("the container's payload is empty or of a kind this SDK does not know; update the SDK")]
    UnknownPayload,
    /// Sealing was asked for with no recipient.
    #[error("a container needs at least one recipient device")]
    NoRecipients,
    /// Sealing was asked for with too many recipients.
    #[error("{count} recipient devices exceed the per-container limit of {max}; split the message")]
    TooManyRecipients {
        /// Recipients asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The same device appears twice among the recipients.
    #[error("recipient device {device_id:?} is listed twice")]
    DuplicateRecipient {
        /// The duplicated device.
        device_id: DeviceId,
    },
    /// A recipient's certificate or prekey expired before sealing.
    #[error(
        "recipient device {device_id:?} has an expired certificate or prekey; fetch a fresh bundle"
    )]
    RecipientExpired {
        /// The recipient.
        device_id: DeviceId,
    },
    /// The prekey given for a recipient belongs to another device.
    #[error("prekey belongs to another device than the recipient it was paired with")]
    RecipientPrekeyMismatch,
    /// The time to live is zero or too long.
    #[error("container ttl of {ttl_ms} ms is outside 1..={max_ms} ms")]
    InvalidTtl {
        /// Requested ttl.
        ttl_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// The payload is empty.
    #[error("container payload has no body")]
    EmptyPayload,
    /// A prepared container was asked to seal to a device it has no entry for.
    #[error(
        "no entry was prepared for recipient device {device_id:?}; add it to the preparation first"
    )]
    NotPrepared {
        /// The device.
        device_id: DeviceId,
    },
    /// A prepared container was used by another device than the one that prepared it.
    #[error("this container was prepared by another device; prepare one with this device")]
    PreparedByAnotherDevice,
    /// The P-384 key agreement failed inside the crypto library (not expected for
    /// valid keys, which every key reaching it is).
    #[error("P-384 key agreement failed")]
    KeyAgreement,
}
