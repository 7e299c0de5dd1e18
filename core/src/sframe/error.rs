//! The single error type of the SFrame module.
//!
//! Every message states what went wrong and what the caller should do about it. Errors
//! caused by bytes from the network (truncated, malformed, unauthenticated, replayed or
//! unknown-key frames) mean "drop this frame"; they never indicate a local bug.

use super::MAX_RECEIVER_KEYS;
use super::replay::REPLAY_WINDOW_SIZE;

/// Everything that can go wrong while encoding, encrypting or decrypting SFrame data.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SframeError {
    /// The input ended before a complete header or authentication tag.
    #[error(
        "SFrame data truncated: the {what} needs {needed} bytes but only {available} are present; \
         the frame was cut short in transit or is not SFrame data, so drop it"
    )]
    Truncated {
        /// Which part was incomplete ("header" or "frame").
        what: &'static str,
        /// Minimum number of bytes required.
        needed: usize,
        /// Number of bytes actually present.
        available: usize,
    },

    /// The header is not in the canonical RFC 9605 §4.3 encoding.
    #[error(
        "malformed SFrame header: {reason}; the sender does not follow RFC 9605 §4.3 or the \
         frame is corrupted, so drop it"
    )]
    MalformedHeader {
        /// What exactly is wrong with the header.
        reason: &'static str,
    },

    /// The cipher suite identifier is unknown or deliberately not offered.
    #[error(
        "SFrame cipher suite 0x{id:04x} is not supported: only AES_128_GCM_SHA256_128 (0x0004) \
         and AES_256_GCM_SHA512_128 (0x0005) are offered; negotiate one of those"
    )]
    UnsupportedCipherSuite {
        /// The rejected IANA cipher suite identifier.
        id: u16,
    },

    /// No key is registered for the frame's KID.
    #[error(
        "no key for KID 0x{kid:x} (epoch {epoch}, sender index {sender_index}): frame is from an \
         epoch/sender this receiver does not hold (wrong epoch or not yet rekeyed); drop it, and \
         add the key if the rekey for that epoch is still on its way"
    )]
    UnknownKid {
        /// The KID carried in the frame header.
        kid: u64,
        /// Epoch part of the KID.
        epoch: u64,
        /// Sender-index part of the KID.
        sender_index: u16,
    },

    /// AES-GCM tag verification failed.
    #[error(
        "SFrame authentication failed for KID 0x{kid:x}, counter {ctr}: wrong key for this KID or \
         the frame, its header or its metadata was tampered with; drop the frame, and if every \
         frame from this sender fails, re-check the key distributed for this epoch"
    )]
    AuthenticationFailed {
        /// The KID carried in the frame header.
        kid: u64,
        /// The counter carried in the frame header.
        ctr: u64,
    },

    /// The counter was already accepted for this KID.
    #[error(
        "replayed SFrame: KID 0x{kid:x} counter {ctr} was already accepted; drop the duplicate"
    )]
    Replayed {
        /// The KID carried in the frame header.
        kid: u64,
        /// The repeated counter.
        ctr: u64,
    },

    /// The counter is too far behind the newest accepted counter to be checked for replay.
    #[error(
        "SFrame counter {ctr} for KID 0x{kid:x} is older than the {window}-frame replay window, \
         so it cannot be proven fresh; drop the late frame",
        window = REPLAY_WINDOW_SIZE
    )]
    TooOld {
        /// The KID carried in the frame header.
        kid: u64,
        /// The stale counter.
        ctr: u64,
    },

    /// The sender used every counter value of its key.
    #[error(
        "SFrame counter exhausted: every counter value of this key has been used and continuing \
         would reuse a nonce; rekey (move to a new epoch) before sending more media"
    )]
    CounterExhausted,

    /// Epoch or sender index do not fit the KID layout.
    #[error(
        "KID out of range: the sender index must be below 4096 and the epoch below 2^52 so that \
         both fit the 64-bit KID; check the roster's sender index and the epoch number"
    )]
    KidOutOfRange,

    /// The receiver already holds its maximum number of keys.
    #[error(
        "the SFrame receiver already holds the maximum of {max} keys; remove the keys of finished \
         epochs (remove_epoch) before adding more",
        max = MAX_RECEIVER_KEYS
    )]
    TooManyKeys,

    /// A plaintext or frame exceeds the size limit.
    #[error(
        "SFrame data of {len} bytes exceeds the {max}-byte limit; a sender must split the media \
         into smaller frames, a receiver should drop the frame"
    )]
    FrameTooLarge {
        /// Length of the offending input.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },

    /// A frame was given to a key that belongs to a different KID.
    #[error(
        "SFrame frame carries KID 0x{frame_kid:x} but the key given is for KID 0x{key_kid:x}; look \
         the key up by the frame's KID (SframeReceiver does this for you)"
    )]
    KeyMismatch {
        /// The KID carried in the frame header.
        frame_kid: u64,
        /// The KID the key was derived for.
        key_kid: u64,
    },

    /// A different key is already registered for this KID.
    #[error(
        "a different key is already registered for KID 0x{kid:x}; a new key should come with a \
         new epoch, but if this KID's key really changed, call remove_key first (this also resets \
         replay protection for the KID)"
    )]
    KeyConflict {
        /// The KID that already has a key.
        kid: u64,
    },
}
