use thiserror::Error;

use crate::UnixMillis;

/// Why an identity object (certificate, prekey, username) was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The username is empty or too long after normalization.
    #[error("username must be 1..=256 bytes after normalization (got {len})")]
    InvalidUsername {
        /// Normalized length in bytes.
        len: usize,
    },
    /// The serialized object exceeds its size bound.
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Which object.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a well-formed object.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which object.
        what: &'static str,
        /// What is wrong with it.
        #[source]
        reason: MalformedReason,
    },
    /// The signature does not verify under the key that must have made it.
    #[error(
        "{what} signature does not verify: it was not signed by the expected key (forged, substituted or corrupted); do not use it"
    )]
    BadSignature {
        /// Which object.
        what: &'static str,
    },
    /// The object's format version is unknown.
    #[error("{what} has unsupported version {version}; upgrade the SDK or re-issue it")]
    UnsupportedVersion {
        /// Which object.
        what: &'static str,
        /// Version found.
        version: u32,
    },
    /// A certificate names a different user than the one it was verified for.
    #[error("device certificate is for another user than the one expected; refusing it")]
    WrongUser,
    /// A prekey names a different device than the one it was verified for.
    #[error("prekey belongs to another device than the one expected; refusing it")]
    WrongDevice,
    /// The object has expired.
    #[error("{what} expired at {expired_at:?} (now {now:?}); fetch or issue a fresh one")]
    Expired {
        /// Which object.
        what: &'static str,
        /// Its expiry.
        expired_at: UnixMillis,
        /// The time it was checked at.
        now: UnixMillis,
    },
    /// The object's creation time lies too far in the future.
    #[error("{what} was created at {created_at:?}, in the future (now {now:?}); check clocks")]
    NotYetValid {
        /// Which object.
        what: &'static str,
        /// Claimed creation time.
        created_at: UnixMillis,
        /// The time it was checked at.
        now: UnixMillis,
    },
    /// The device's prekey pool is full; wait for prekeys to be consumed.
    #[error("prekey pool already holds {held} unused prekeys (max {max}); upload fewer")]
    PrekeyPoolFull {
        /// Prekeys held.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// An argument was out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The crypto library (aws-lc) failed to compute a P-384 key from a valid scalar,
    /// which it only does when it cannot allocate; nothing was changed.
    #[error("the crypto library could not compute a P-384 {what}; nothing was changed, retry")]
    KeyComputation {
        /// Which key.
        what: &'static str,
    },
}

/// What is wrong with a malformed identity object (see [`IdentityError::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MalformedReason {
    /// The bytes do not decode.
    #[error("does not decode: {0}")]
    Encoding(#[source] conclave_proto::prost::DecodeError),
    /// A fixed-size field has another length.
    #[error("{field} is not {expected} bytes")]
    FieldLength {
        /// The field.
        field: &'static str,
        /// Its required length.
        expected: usize,
    },
    /// A key field has the right length but is not a valid key.
    #[error("{key} is not valid")]
    InvalidKey {
        /// Which key (for example "Ed25519 public key").
        key: &'static str,
    },
    /// The object expires before it was created.
    #[error("expires before it was created")]
    ExpiresBeforeCreated,
    /// Saved secret keys do not match the certificate saved with them.
    #[error("keys do not match the certificate")]
    KeysDoNotMatchCertificate,
    /// An id is outside its valid range (prekey ids start at 1 and stay below the
    /// pool's next id).
    #[error("{what} id is out of range")]
    IdOutOfRange {
        /// Which id.
        what: &'static str,
    },
    /// Saved bytes are cut short or their counts disagree with their length.
    #[error("cut short, or its counts do not match its length")]
    Truncated,
    /// Saved bytes continue after the last entry.
    #[error("trailing bytes after the last entry")]
    TrailingBytes,
    /// The bytes do not start with the expected magic (not this kind of object).
    #[error("wrong magic: not this kind of saved object")]
    WrongMagic,
    /// A flags field holds values this version does not know.
    #[error("unknown flags")]
    UnknownFlags,
    /// Two entries share an id.
    #[error("two entries share an id")]
    DuplicateId,
}

/// What kind of problem an [`IdentityError`] is, without its details (times, sizes,
/// parse errors): for reports that are copied and compared, such as a refused
/// directory entry. [`IdentityError::problem`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityProblem {
    /// See [`IdentityError::InvalidUsername`].
    InvalidUsername,
    /// See [`IdentityError::TooLarge`].
    TooLarge,
    /// See [`IdentityError::Malformed`].
    Malformed,
    /// See [`IdentityError::BadSignature`].
    BadSignature,
    /// See [`IdentityError::UnsupportedVersion`].
    UnsupportedVersion,
    /// See [`IdentityError::WrongUser`].
    WrongUser,
    /// See [`IdentityError::WrongDevice`].
    WrongDevice,
    /// See [`IdentityError::Expired`].
    Expired,
    /// See [`IdentityError::NotYetValid`].
    NotYetValid,
    /// See [`IdentityError::PrekeyPoolFull`].
    PrekeyPoolFull,
    /// See [`IdentityError::InvalidArgument`].
    InvalidArgument,
    /// See [`IdentityError::KeyComputation`].
    KeyComputation,
}

impl core::fmt::Display for IdentityProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IdentityProblem::InvalidUsername => "invalid username",
            IdentityProblem::TooLarge => "too large",
            IdentityProblem::Malformed => "malformed",
            IdentityProblem::BadSignature => {
                "the signature does not verify under the expected key (forged or substituted)"
            }
            IdentityProblem::UnsupportedVersion => "unsupported version",
            IdentityProblem::WrongUser => "issued for another user",
            IdentityProblem::WrongDevice => "issued for another device",
            IdentityProblem::Expired => "expired",
            IdentityProblem::NotYetValid => "created in the future",
            IdentityProblem::PrekeyPoolFull => "prekey pool full",
            IdentityProblem::InvalidArgument => "invalid argument",
            IdentityProblem::KeyComputation => "the crypto library could not compute a key",
        })
    }
}

impl IdentityError {
    /// The kind of problem, without its details.
    #[must_use]
    pub fn problem(&self) -> IdentityProblem {
        match self {
            IdentityError::InvalidUsername { .. } => IdentityProblem::InvalidUsername,
            IdentityError::TooLarge { .. } => IdentityProblem::TooLarge,
            IdentityError::Malformed { .. } => IdentityProblem::Malformed,
            IdentityError::BadSignature { .. } => IdentityProblem::BadSignature,
            IdentityError::UnsupportedVersion { .. } => IdentityProblem::UnsupportedVersion,
            IdentityError::WrongUser => IdentityProblem::WrongUser,
            IdentityError::WrongDevice => IdentityProblem::WrongDevice,
            IdentityError::Expired { .. } => IdentityProblem::Expired,
            IdentityError::NotYetValid { .. } => IdentityProblem::NotYetValid,
            IdentityError::PrekeyPoolFull { .. } => IdentityProblem::PrekeyPoolFull,
            IdentityError::InvalidArgument(_) => IdentityProblem::InvalidArgument,
            IdentityError::KeyComputation { .. } => IdentityProblem::KeyComputation,
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: MalformedReason) -> Self {
        IdentityError::Malformed { what, reason }
    }
}
