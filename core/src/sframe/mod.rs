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
mod receiver;
mod replay;
mod sender;
mod suite;
#[cfg(test)]
mod test_vectors;

pub use error::SframeError;
pub use frame::{MAX_FRAME_LEN, decrypt, encrypt};
pub use header::SframeHeader;
pub use key::SframeKey;
pub use kid::{Kid, MAX_EPOCH, MAX_SENDER_INDEX, SENDER_INDEX_BITS};
pub use receiver::{ReceivedFrame, SframeReceiver};
pub use replay::{REPLAY_WINDOW_SIZE, ReplayWindow};
pub use sender::SframeSender;
pub use suite::CipherSuite;

/// Largest plaintext (and therefore ciphertext body) accepted, in bytes: 1 MiB.
pub const MAX_PLAINTEXT_LEN: usize = 1 << 20;

/// Most keys one [`SframeReceiver`] holds: 4096 senders in each of four epochs.
pub const MAX_RECEIVER_KEYS: usize = 4096 * 4;

#[cfg(test)]
mod tests {
    use super::test_vectors::{gcm_vectors, hex};
    use super::*;

    #[test]
    fn debug_output_of_key_sender_and_receiver_never_contains_key_material() {
        for v in gcm_vectors() {
            let suite = CipherSuite::from_id(v.cipher_suite).unwrap();
            let base_key = hex(&v.base_key);
            let kid = Kid::new(v.kid);
            let key = SframeKey::derive(suite, &base_key, v.kid);
            let mut sender = SframeSender::new(suite, &base_key, kid);
            sender.encrypt(b"metadata", b"plaintext").unwrap();
            let mut receiver = SframeReceiver::new();
            receiver.add_key(kid, suite, &base_key).unwrap();

            let outputs = [
                format!("{key:?}"),
                format!("{key:#?}"),
                format!("{sender:?}"),
                format!("{sender:#?}"),
                format!("{receiver:?}"),
            ];
            let secrets = [&v.base_key, &v.sframe_secret, &v.sframe_key, &v.sframe_salt];
            for output in &outputs {
                let lower = output.to_lowercase();
                for secret in secrets {
                    assert!(!lower.contains(secret.as_str()), "{output} leaks {secret}");
                }
                // Nor as a list of decimal bytes.
                let key_bytes = format!("{:?}", hex(&v.sframe_key));
                let key_bytes = key_bytes.trim_matches(|c| c == '[' || c == ']');
                assert!(!output.contains(key_bytes), "{output}");
            }
            assert!(outputs[2].contains("next_ctr: Some(1)"), "{}", outputs[2]);
        }
    }
}
