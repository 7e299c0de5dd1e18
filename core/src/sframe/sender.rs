//! The sending side: one key, one strictly increasing counter.
//!
//! The counter starts at 0 and advances only when a frame was actually produced. When every
//! 64-bit counter value has been used the sender refuses with
//! [`SframeError::CounterExhausted`] instead of wrapping, because wrapping would reuse
//! nonces. (At 1000 frames per second that takes 584 million years; the meeting rekeys long
//! before.)

use super::frame::seal_append_parts;
use super::suite::TAG_LEN;
use super::{CipherSuite, Kid, SframeError, SframeHeader, SframeKey};

/// Encrypts the outgoing frames of one sender for one KID.
pub struct SframeSender {
    key: SframeKey,
    /// The next counter to use; `None` once every counter value has been used.
    next_ctr: Option<u64>,
    /// Reused buffer for `header || metadata`, so steady-state sending does not allocate it.
    aad: Vec<u8>,
}

impl SframeSender {
    /// Derives the key for `kid` from `base_key` and starts the counter at 0.
    ///
    /// In Conclave `base_key` is the sender's per-epoch base key and `kid` comes from
    /// [`Kid::for_sender`]; a (base key, KID) pair must have only one sender, ever.
    #[must_use]
    pub fn new(suite: CipherSuite, base_key: &[u8], kid: Kid) -> Self {
        Self {
            key: SframeKey::derive(suite, base_key, kid.value()),
            next_ctr: Some(0),
            aad: Vec::new(),
        }
    }

    /// The KID written into every frame.
    #[must_use]
    pub const fn kid(&self) -> Kid {
        self.key.kid()
    }

    /// The cipher suite in use.
    #[must_use]
    pub const fn suite(&self) -> CipherSuite {
        self.key.suite()
    }

    /// The counter the next frame will carry, or `None` if the counter is exhausted.
    #[must_use]
    pub const fn next_counter(&self) -> Option<u64> {
        self.next_ctr
    }

    /// Encrypts one frame and returns `header || ciphertext || tag`.
    ///
    /// `metadata` is authenticated but not encrypted or included in the output; the
    /// receiver must pass the same bytes.
    ///
    /// # Errors
    /// [`SframeError::FrameTooLarge`] if `plaintext` exceeds
    /// [`MAX_PLAINTEXT_LEN`](super::MAX_PLAINTEXT_LEN); [`SframeError::CounterExhausted`]
    /// once every counter has been used.
    pub fn encrypt(&mut self, metadata: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SframeError> {
        let mut frame = Vec::with_capacity(SframeHeader::MAX_LEN + plaintext.len() + TAG_LEN);
        self.encrypt_into(metadata, plaintext, &mut frame)?;
        Ok(frame)
    }

    /// Like [`encrypt`](Self::encrypt), but appends the frame to `out`.
    ///
    /// Existing contents of `out` are kept (so a routing header can be written first);
    /// call `out.clear()` to reuse a buffer for the next frame. On error `out` is unchanged
    /// and the counter does not advance.
    ///
    /// # Errors
    /// As for [`encrypt`](Self::encrypt).
    pub fn encrypt_into(
        &mut self,
        metadata: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SframeError> {
        self.seal(metadata, &[plaintext], out)
    }

    /// Like [`encrypt`](Self::encrypt), with the plaintext given as the concatenation
    /// of `parts` (a media envelope and the encoded frame, say), copied once.
    ///
    /// # Errors
    /// As for [`encrypt`](Self::encrypt).
    pub fn encrypt_parts(
        &mut self,
        metadata: &[u8],
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, SframeError> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        let mut frame = Vec::with_capacity(SframeHeader::MAX_LEN + len + TAG_LEN);
        self.seal(metadata, parts, &mut frame)?;
        Ok(frame)
    }

    /// Seals the concatenation of `parts` under the next counter, appending to `out`;
    /// the counter advances only on success.
    fn seal(
        &mut self,
        metadata: &[u8],
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), SframeError> {
        let ctr = self.next_ctr.ok_or(SframeError::CounterExhausted)?;
        seal_append_parts(&self.key, ctr, metadata, parts, out, &mut self.aad)?;
        self.next_ctr = ctr.checked_add(1);
        Ok(())
    }

    /// Test hook: continue from counter `ctr`.
    #[cfg(test)]
    pub(crate) fn set_next_counter(&mut self, ctr: u64) {
        self.next_ctr = Some(ctr);
    }
}

impl core::fmt::Debug for SframeSender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SframeSender")
            .field("key", &self.key)
            .field("next_ctr", &self.next_ctr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_PLAINTEXT_LEN, decrypt};
    use super::*;

    fn sender() -> SframeSender {
        let kid = Kid::for_sender(4, 9).unwrap();
        SframeSender::new(CipherSuite::Aes256GcmSha512Tag128, b"sender base key", kid)
    }

    #[test]
    fn sender_counter_starts_at_zero_and_increments() {
        let mut sender = sender();
        let key = SframeKey::derive(
            CipherSuite::Aes256GcmSha512Tag128,
            b"sender base key",
            sender.kid().value(),
        );
        for expected in 0..5 {
            assert_eq!(sender.next_counter(), Some(expected));
            let frame = sender.encrypt(b"meta", b"frame").unwrap();
            let (header, plaintext) = decrypt(&key, b"meta", &frame).unwrap();
            assert_eq!(header, SframeHeader::new(sender.kid().value(), expected));
            assert_eq!(plaintext, b"frame");
        }
    }

    #[test]
    fn parts_encrypt_exactly_as_their_concatenation() {
        let (mut a, mut b) = (sender(), sender());
        let joined = a.encrypt(b"meta", b"envelopeframe").unwrap();
        let parts = b
            .encrypt_parts(b"meta", &[b"envelope", b"", b"frame"])
            .unwrap();
        assert_eq!(joined, parts);
        assert_eq!(b.next_counter(), Some(1));
    }

    #[test]
    fn sender_reports_counter_exhausted_instead_of_wrapping() {
        let mut sender = sender();
        sender.set_next_counter(u64::MAX - 1);
        sender.encrypt(b"", b"second to last").unwrap();
        sender.encrypt(b"", b"last").unwrap();
        assert_eq!(sender.next_counter(), None);
        assert_eq!(
            sender.encrypt(b"", b"one too many"),
            Err(SframeError::CounterExhausted)
        );
        let mut out = Vec::new();
        assert_eq!(
            sender.encrypt_into(b"", b"still too many", &mut out),
            Err(SframeError::CounterExhausted)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn sender_failed_encryption_does_not_consume_a_counter() {
        let mut sender = sender();
        let huge = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            sender.encrypt(b"", &huge),
            Err(SframeError::FrameTooLarge { .. })
        ));
        assert_eq!(sender.next_counter(), Some(0));
    }

    #[test]
    fn sender_encrypt_into_appends_and_matches_encrypt() {
        let mut a = sender();
        let mut b = sender();
        let mut out = b"routing".to_vec();
        a.encrypt_into(b"meta", b"payload", &mut out).unwrap();
        let frame = b.encrypt(b"meta", b"payload").unwrap();
        assert_eq!(&out[..7], b"routing");
        assert_eq!(&out[7..], frame.as_slice());

        out.clear();
        a.encrypt_into(b"meta", b"payload", &mut out).unwrap();
        assert_eq!(out, b.encrypt(b"meta", b"payload").unwrap());
    }
}
