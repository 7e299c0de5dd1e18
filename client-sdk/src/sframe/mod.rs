//! SFrame (RFC 9605) end-to-end media encryption.
//!
//! # Data flow
//!
//! ```text
//! sender:   base key --HKDF--> (AES-GCM key, salt) for (suite, KID)
//!           frame = header(KID, CTR) || AES-GCM(key, nonce = salt XOR CTR,
//!                                               aad = header || metadata, plaintext) || tag
//! receiver: header --KID--> key + replay window --> check CTR --> open --> accept CTR
//! ```
//!
//! * [`SframeHeader`] is the canonical §4.3 header codec.
//! * [`SframeKey`] derives the per-KID key and salt (§4.4.2) and holds the cipher.
//! * [`encrypt`] / [`decrypt`] are the stateless frame operations (§4.4.3, §4.4.4).
//! * [`SframeSender`] owns one key and a monotonically increasing counter.
//! * [`SframeReceiver`] holds keys by KID, each with a [`ReplayWindow`].
//!
//! # Invariants
//!
//! * A nonce is never reused: a sender's counter only grows, and at its end the sender
//!   returns [`SframeError::CounterExhausted`] instead of wrapping. In Conclave every
//!   (epoch, sender) pair has its own base key and KID ([`Kid::for_sender`]), so senders
//!   never share a nonce space.
//! * The header is authenticated (it is part of the AAD) and decoded only in its canonical
//!   form; the receiver marks a counter as seen only after the frame authenticated.
//! * Every input is bounded ([`MAX_PLAINTEXT_LEN`], [`MAX_RECEIVER_KEYS`]) and every failure
//!   is an [`SframeError`]; no input bytes can cause a panic.
//! * Derived keys, salts and the HKDF secret are zeroized when dropped, and no `Debug`
//!   output contains key material.
//! * Only the AES-GCM suites are offered; the AES-CTR-HMAC suites are deliberately absent.
//!
//! The module is sans-IO: no I/O, clock or randomness.

mod error;
mod frame;
mod header;
mod key;
mod kid;
mod replay;
mod suite;
#[cfg(test)]
mod test_vectors;

pub use error::SframeError;
pub use frame::{MAX_FRAME_LEN, decrypt, encrypt};
pub use header::SframeHeader;
pub use key::SframeKey;
pub use kid::{Kid, MAX_EPOCH, MAX_SENDER_INDEX, SENDER_INDEX_BITS};
pub use replay::{REPLAY_WINDOW_SIZE, ReplayWindow};
pub use suite::CipherSuite;

/// Largest plaintext (and therefore ciphertext body) accepted, in bytes: 1 MiB.
pub const MAX_PLAINTEXT_LEN: usize = 1 << 20;

/// Most keys one [`SframeReceiver`] holds: 4096 senders in each of four epochs.
pub const MAX_RECEIVER_KEYS: usize = 4096 * 4;
