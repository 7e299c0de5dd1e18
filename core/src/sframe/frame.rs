//! Stateless frame encryption and decryption (RFC 9605 §4.4.3, §4.4.4).
//!
//! A frame is `header || ciphertext || tag`. The AAD is `header || metadata`, where the
//! header bytes are exactly those on the wire (decoding is canonical, so there is no
//! second encoding of the same values). Decryption verifies the tag before releasing any
//! plaintext.

use super::header::SframeHeader;
use super::key::SframeKey;
use super::suite::TAG_LEN;
use super::{MAX_PLAINTEXT_LEN, SframeError};

/// Longest frame accepted for decryption: largest header, plaintext limit and tag.
pub const MAX_FRAME_LEN: usize = SframeHeader::MAX_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;

/// Encrypts one frame with counter `ctr` and returns `header || ciphertext || tag`.
///
/// The caller must never use the same `ctr` twice with one key;
/// [`SframeSender`](super::SframeSender) manages the counter for you.
///
/// # Errors
/// [`SframeError::FrameTooLarge`] if `plaintext` exceeds [`MAX_PLAINTEXT_LEN`].
pub fn encrypt(
    key: &SframeKey,
    ctr: u64,
    metadata: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SframeError> {
    let mut frame = Vec::with_capacity(SframeHeader::MAX_LEN + plaintext.len() + TAG_LEN);
    let mut aad = Vec::with_capacity(SframeHeader::MAX_LEN + metadata.len());
    seal_append(key, ctr, metadata, plaintext, &mut frame, &mut aad)?;
    Ok(frame)
}

/// Decrypts one frame and returns its header and plaintext.
///
/// # Errors
/// [`SframeError::FrameTooLarge`], [`SframeError::Truncated`] or
/// [`SframeError::MalformedHeader`] for unusable input; [`SframeError::KeyMismatch`] if the
/// frame's KID is not `key`'s KID; [`SframeError::AuthenticationFailed`] if the tag does not
/// verify. This function keeps no replay state; use [`SframeReceiver`](super::SframeReceiver)
/// for that.
pub fn decrypt(
    key: &SframeKey,
    metadata: &[u8],
    sframe_ciphertext: &[u8],
) -> Result<(SframeHeader, Vec<u8>), SframeError> {
    let frame = ParsedFrame::parse(sframe_ciphertext)?;
    let key_kid = key.kid().value();
    if frame.header.kid != key_kid {
        return Err(SframeError::KeyMismatch {
            frame_kid: frame.header.kid,
            key_kid,
        });
    }
    let mut aad = Vec::with_capacity(SframeHeader::MAX_LEN + metadata.len());
    let plaintext = frame.open(key, metadata, &mut aad)?;
    Ok((frame.header, plaintext))
}

/// Appends the frame for (`key`, `ctr`) to `out`, using `aad` as scratch space. On error
/// `out` is left as it was.
pub(crate) fn seal_append(
    key: &SframeKey,
    ctr: u64,
    metadata: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
    aad: &mut Vec<u8>,
) -> Result<(), SframeError> {
    seal_append_parts(key, ctr, metadata, &[plaintext], out, aad)
}

/// [`seal_append`] of the concatenation of `parts`, without first copying them into
/// one buffer (they are copied once, into `out`, and encrypted there).
pub(crate) fn seal_append_parts(
    key: &SframeKey,
    ctr: u64,
    metadata: &[u8],
    parts: &[&[u8]],
    out: &mut Vec<u8>,
    aad: &mut Vec<u8>,
) -> Result<(), SframeError> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    if len > MAX_PLAINTEXT_LEN {
        return Err(SframeError::FrameTooLarge {
            len,
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let mut header_buf = [0u8; SframeHeader::MAX_LEN];
    let header_len = SframeHeader::new(key.kid().value(), ctr).encode_into(&mut header_buf);
    let header = header_buf
        .get(..header_len)
        .expect("encode_into returns at most SframeHeader::MAX_LEN");
    build_aad(aad, header, metadata);

    let start = out.len();
    out.reserve(header_len + len + TAG_LEN);
    out.extend_from_slice(header);
    for part in parts {
        out.extend_from_slice(part);
    }
    let body = out
        .get_mut(start + header_len..)
        .expect("the header was just appended at `start`");
    match key.seal_in_place(ctr, aad, body) {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(SframeError::FrameTooLarge {
                len,
                max: MAX_PLAINTEXT_LEN,
            })
        }
    }
}

/// A frame split into its parts, not yet authenticated.
pub(crate) struct ParsedFrame<'a> {
    /// The decoded header.
    pub(crate) header: SframeHeader,
    header_bytes: &'a [u8],
    body: &'a [u8],
    tag: &'a [u8; TAG_LEN],
}

impl<'a> ParsedFrame<'a> {
    /// Checks the size, decodes the header and locates ciphertext and tag.
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, SframeError> {
        if data.len() > MAX_FRAME_LEN {
            return Err(SframeError::FrameTooLarge {
                len: data.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let (header, header_len) = SframeHeader::decode(data)?;
        let truncated = SframeError::Truncated {
            what: "frame",
            needed: header_len + TAG_LEN,
            available: data.len(),
        };
        let (header_bytes, rest) = data.split_at_checked(header_len).ok_or(truncated.clone())?;
        let (body, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or(truncated)?;
        if body.len() > MAX_PLAINTEXT_LEN {
            return Err(SframeError::FrameTooLarge {
                len: body.len(),
                max: MAX_PLAINTEXT_LEN,
            });
        }
        Ok(Self {
            header,
            header_bytes,
            body,
            tag,
        })
    }

    /// Authenticates and decrypts with `key` (whose KID the caller has matched), using
    /// `aad` as scratch space.
    pub(crate) fn open(
        &self,
        key: &SframeKey,
        metadata: &[u8],
        aad: &mut Vec<u8>,
    ) -> Result<Vec<u8>, SframeError> {
        let mut plaintext = Vec::new();
        self.open_into(key, metadata, aad, &mut plaintext)?;
        Ok(plaintext)
    }

    /// [`Self::open`] into `plaintext` (cleared first, its allocation reused). On error
    /// `plaintext` is left empty: nothing unauthenticated is released.
    pub(crate) fn open_into(
        &self,
        key: &SframeKey,
        metadata: &[u8],
        aad: &mut Vec<u8>,
        plaintext: &mut Vec<u8>,
    ) -> Result<(), SframeError> {
        build_aad(aad, self.header_bytes, metadata);
        plaintext.clear();
        plaintext.extend_from_slice(self.body);
        key.open_in_place(self.header.ctr, aad, plaintext, self.tag)
            .map_err(|_| {
                plaintext.clear();
                SframeError::AuthenticationFailed {
                    kid: self.header.kid,
                    ctr: self.header.ctr,
                }
            })
    }
}

/// `aad = header || metadata`, reusing the buffer's allocation.
fn build_aad(aad: &mut Vec<u8>, header: &[u8], metadata: &[u8]) {
    aad.clear();
    aad.extend_from_slice(header);
    aad.extend_from_slice(metadata);
}

#[cfg(test)]
mod tests {
    use super::super::CipherSuite;
    use super::super::test_vectors::{gcm_vectors, hex};
    use super::*;

    fn test_key() -> SframeKey {
        SframeKey::derive(CipherSuite::Aes256GcmSha512Tag128, b"test base key", 0x2003)
    }

    fn test_frame(key: &SframeKey) -> Vec<u8> {
        encrypt(key, 42, b"routing metadata", b"a video frame").unwrap()
    }

    #[test]
    fn frame_encrypt_reproduces_rfc_gcm_vectors_and_decrypts_back() {
        let mut checked = 0;
        for v in gcm_vectors() {
            let suite = CipherSuite::from_id(v.cipher_suite).unwrap();
            let key = SframeKey::derive(suite, &hex(&v.base_key), v.kid);
            let (metadata, pt, ct) = (hex(&v.metadata), hex(&v.pt), hex(&v.ct));

            let frame = encrypt(&key, v.ctr, &metadata, &pt).unwrap();
            assert_eq!(frame, ct, "suite {suite}");

            let frame = ParsedFrame::parse(&ct).unwrap();
            let mut aad = Vec::new();
            build_aad(&mut aad, frame.header_bytes, &metadata);
            assert_eq!(aad, hex(&v.aad), "suite {suite}");

            let (header, plaintext) = decrypt(&key, &metadata, &ct).unwrap();
            assert_eq!(header, SframeHeader::new(v.kid, v.ctr));
            assert_eq!(plaintext, pt);
            checked += 1;
        }
        assert_eq!(checked, 2);
    }

    #[test]
    fn frame_round_trips_empty_plaintext_and_metadata() {
        let key = test_key();
        let frame = encrypt(&key, 0, b"", b"").unwrap();
        assert_eq!(frame.len(), 3 + TAG_LEN);
        let (header, plaintext) = decrypt(&key, b"", &frame).unwrap();
        assert_eq!(header, SframeHeader::new(0x2003, 0));
        assert!(plaintext.is_empty());
    }

    #[test]
    fn decrypt_rejects_tampered_ciphertext_header_tag_and_metadata() {
        let key = test_key();
        let frame = test_frame(&key);
        let (_, header_len) = SframeHeader::decode(&frame).unwrap();
        for index in 0..frame.len() {
            let mut tampered = frame.clone();
            tampered[index] ^= 0x01;
            let result = decrypt(&key, b"routing metadata", &tampered);
            assert!(result.is_err(), "flipped byte {index} was accepted");
            if index >= header_len {
                // Body and tag bytes: the header still names this key and counter.
                assert_eq!(
                    result,
                    Err(SframeError::AuthenticationFailed {
                        kid: 0x2003,
                        ctr: 42
                    })
                );
            }
        }
        assert_eq!(
            decrypt(&key, b"routing metadatA", &frame),
            Err(SframeError::AuthenticationFailed {
                kid: 0x2003,
                ctr: 42
            })
        );
    }

    #[test]
    fn decrypt_rejects_tampered_header_counter() {
        let key = test_key();
        let frame = test_frame(&key);
        // Re-encode the header with the next counter, keeping ciphertext and tag.
        let (header, header_len) = SframeHeader::decode(&frame).unwrap();
        let mut forged = [0u8; SframeHeader::MAX_LEN];
        let forged_len = SframeHeader::new(header.kid, header.ctr + 1).encode_into(&mut forged);
        let mut tampered = forged[..forged_len].to_vec();
        tampered.extend_from_slice(&frame[header_len..]);
        assert_eq!(
            decrypt(&key, b"routing metadata", &tampered),
            Err(SframeError::AuthenticationFailed {
                kid: 0x2003,
                ctr: 43
            })
        );
    }

    #[test]
    fn decrypt_rejects_frame_for_another_kid() {
        let key = test_key();
        let other = SframeKey::derive(CipherSuite::Aes256GcmSha512Tag128, b"test base key", 7);
        assert_eq!(
            decrypt(&other, b"routing metadata", &test_frame(&key)),
            Err(SframeError::KeyMismatch {
                frame_kid: 0x2003,
                key_kid: 7
            })
        );
    }

    #[test]
    fn decrypt_of_every_prefix_of_a_valid_frame_fails_without_panicking() {
        let key = test_key();
        let frame = test_frame(&key);
        for cut in 0..frame.len() {
            let result = decrypt(&key, b"routing metadata", &frame[..cut]);
            assert!(result.is_err(), "prefix of {cut} bytes was accepted");
        }
        assert!(decrypt(&key, b"routing metadata", &frame).is_ok());
    }

    #[test]
    fn encrypt_rejects_oversized_plaintext() {
        let key = test_key();
        let plaintext = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert_eq!(
            encrypt(&key, 0, b"", &plaintext),
            Err(SframeError::FrameTooLarge {
                len: MAX_PLAINTEXT_LEN + 1,
                max: MAX_PLAINTEXT_LEN
            })
        );
        assert!(encrypt(&key, 0, b"", &plaintext[1..]).is_ok());
    }

    #[test]
    fn decrypt_rejects_oversized_frame_before_any_work() {
        let key = test_key();
        let data = vec![0u8; MAX_FRAME_LEN + 1];
        assert!(matches!(
            decrypt(&key, b"", &data),
            Err(SframeError::FrameTooLarge {
                max: MAX_FRAME_LEN,
                ..
            })
        ));
    }

    #[test]
    fn seal_append_keeps_existing_bytes_and_restores_them_on_error() {
        let key = test_key();
        let mut out = b"prefix".to_vec();
        let mut aad = Vec::new();
        seal_append(&key, 1, b"m", b"payload", &mut out, &mut aad).unwrap();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(decrypt(&key, b"m", &out[6..]).unwrap().1, b"payload");

        let before = out.clone();
        let huge = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert!(seal_append(&key, 2, b"m", &huge, &mut out, &mut aad).is_err());
        assert_eq!(out, before);
    }
}
