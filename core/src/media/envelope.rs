//! The media envelope: what a sender says about a frame *inside* the encryption.
//!
//! Every media frame's SFrame plaintext starts with a [`MediaEnvelope`], then the
//! encoded media:
//!
//! ```text
//! version (u8, 1) || sequence (u32, big-endian) || capture timestamp (u64 µs, big-endian) || media
//! ```
//!
//! * `sequence` counts the sender's frames of one media kind (its audio stream, its
//!   video stream), from 0, +1 per frame, wrapping at 2³²; it goes on across rekeys.
//!   A gap tells a jitter buffer that frames were lost; a repeat or step back, that they
//!   came out of order.
//! * `capture timestamp` is the sender's capture time of the frame in microseconds on
//!   a clock of the sender's choosing (its origin means nothing to a receiver): compare
//!   only timestamps of one sender, across its audio and video, to space playout and
//!   to sync lips with voice.
//!
//! Both are encrypted and authenticated with the frame: the SFU sees neither. (The
//! datagram header's frame number, which the SFU needs for reassembly, counts all of a
//! sender's frames together and is visible to it.) Sans-IO: no clock here; the sender
//! passes the timestamp.

use super::MediaError;

/// The envelope's format version.
pub const ENVELOPE_VERSION: u8 = 1;

/// Length of the envelope in bytes, at the front of every frame's plaintext.
pub const ENVELOPE_LEN: usize = 13;

/// What the sender says about a frame, carried inside the encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaEnvelope {
    /// The frame's number in its sender's stream of that media kind.
    pub sequence: u32,
    /// The sender's capture time of the frame, in microseconds on the sender's clock.
    pub capture_us: u64,
}

impl MediaEnvelope {
    /// The envelope's bytes, to put before the media (e.g. with
    /// `SframeSender::encrypt_parts(metadata, &[&envelope.encode(), media])`).
    #[must_use]
    pub fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let mut out = [0u8; ENVELOPE_LEN];
        let (version, rest) = out.split_at_mut(1);
        let (sequence, capture) = rest.split_at_mut(4);
        version.copy_from_slice(&[ENVELOPE_VERSION]);
        sequence.copy_from_slice(&self.sequence.to_be_bytes());
        capture.copy_from_slice(&self.capture_us.to_be_bytes());
        out
    }

    /// `envelope || media`, the plaintext to encrypt, as one buffer.
    #[must_use]
    pub fn wrap(&self, media: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_LEN + media.len());
        out.extend_from_slice(&self.encode());
        out.extend_from_slice(media);
        out
    }

    /// Splits a decrypted plaintext into its envelope and the media, removing the
    /// envelope from `plaintext` in place (the media stays in the same allocation).
    ///
    /// # Errors
    /// [`MediaError::Envelope`] if the plaintext is shorter than [`ENVELOPE_LEN`] or
    /// carries another version.
    pub fn unwrap(plaintext: &mut Vec<u8>) -> Result<Self, MediaError> {
        let (envelope, _) = Self::split(plaintext)?;
        plaintext.drain(..ENVELOPE_LEN);
        Ok(envelope)
    }

    /// Splits a decrypted plaintext into its envelope and the media, borrowing the
    /// media (for a receiver that decrypts into a reused buffer and copies the media
    /// out once).
    ///
    /// # Errors
    /// As [`MediaEnvelope::unwrap`].
    pub fn split(plaintext: &[u8]) -> Result<(Self, &[u8]), MediaError> {
        let (head, media) = plaintext
            .split_first_chunk::<ENVELOPE_LEN>()
            .ok_or(MediaError::Envelope)?;
        let [version, s0, s1, s2, s3, c0, c1, c2, c3, c4, c5, c6, c7] = *head;
        if version != ENVELOPE_VERSION {
            return Err(MediaError::Envelope);
        }
        let envelope = MediaEnvelope {
            sequence: u32::from_be_bytes([s0, s1, s2, s3]),
            capture_us: u64::from_be_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
        };
        Ok((envelope, media))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_envelope_round_trips_and_leaves_the_media() {
        let env = MediaEnvelope {
            sequence: 0xDEAD_BEEF,
            capture_us: 1_234_567_890_123,
        };
        let mut plaintext = env.wrap(b"opus");
        assert_eq!(plaintext.len(), ENVELOPE_LEN + 4);
        assert_eq!(MediaEnvelope::unwrap(&mut plaintext).unwrap(), env);
        assert_eq!(plaintext, b"opus");
    }

    #[test]
    fn split_borrows_the_media_and_checks_like_unwrap() {
        let env = MediaEnvelope {
            sequence: 7,
            capture_us: 9,
        };
        let plaintext = env.wrap(b"opus");
        assert_eq!(
            MediaEnvelope::split(&plaintext).unwrap(),
            (env, &b"opus"[..])
        );
        assert!(MediaEnvelope::split(&plaintext[..ENVELOPE_LEN - 1]).is_err());
        let mut other_version = plaintext.clone();
        other_version[0] = ENVELOPE_VERSION + 1;
        assert!(MediaEnvelope::split(&other_version).is_err());
    }

    #[test]
    fn an_empty_frame_still_carries_its_envelope() {
        let env = MediaEnvelope {
            sequence: 1,
            capture_us: 2,
        };
        let mut plaintext = env.wrap(b"");
        assert_eq!(MediaEnvelope::unwrap(&mut plaintext).unwrap(), env);
        assert!(plaintext.is_empty());
    }

    #[test]
    fn short_or_unknown_envelopes_are_refused() {
        for len in 0..ENVELOPE_LEN {
            let mut short = vec![ENVELOPE_VERSION; len];
            assert_eq!(MediaEnvelope::unwrap(&mut short), Err(MediaError::Envelope));
        }
        let mut other = vec![2u8; 20];
        assert_eq!(MediaEnvelope::unwrap(&mut other), Err(MediaError::Envelope));
    }
}
