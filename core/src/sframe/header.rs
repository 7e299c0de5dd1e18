//! The SFrame header codec (RFC 9605 §4.3).
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
//! |X|  K  |Y|  C  |   KID (0-8 bytes)         |   CTR (0-8 bytes)         |
//! +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
//! ```
//!
//! A value below 8 travels inline in `K` / `C` with its flag (`X` / `Y`) clear. Otherwise the
//! flag is set, the 3-bit field holds `length - 1`, and the value follows in the minimum
//! number of big-endian bytes. Decoding accepts only this canonical form, so every
//! `(kid, ctr)` pair has exactly one encoding; anything else is rejected with an error.

use super::SframeError;

/// A decoded SFrame header: the key identifier and the frame counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SframeHeader {
    /// Key identifier (see [`Kid`](super::Kid) for Conclave's layout).
    pub kid: u64,
    /// Frame counter, unique per KID; the nonce is derived from it.
    pub ctr: u64,
}

/// Values below this travel inline in the config byte.
const INLINE_LIMIT: u64 = 8;
/// Flag bit (`X` or `Y`) inside a 4-bit half of the config byte.
const EXTENDED: u8 = 0b1000;
/// The 3-bit value / length field inside a 4-bit half of the config byte.
const FIELD: u8 = 0b0111;

impl SframeHeader {
    /// Longest possible encoding: config byte plus two 8-byte values.
    pub const MAX_LEN: usize = 17;

    /// Creates a header.
    #[must_use]
    pub const fn new(kid: u64, ctr: u64) -> Self {
        Self { kid, ctr }
    }

    /// Length in bytes of this header's encoding (1 to 17).
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        1 + extra_len(self.kid) + extra_len(self.ctr)
    }

    /// Writes the canonical encoding into `out` and returns its length. Never allocates.
    pub fn encode_into(&self, out: &mut [u8; Self::MAX_LEN]) -> usize {
        let config = (nibble(self.kid) << 4) | nibble(self.ctr);
        let bytes = core::iter::once(config)
            .chain(value_bytes(self.kid))
            .chain(value_bytes(self.ctr));
        let mut written = 0;
        for (slot, byte) in out.iter_mut().zip(bytes) {
            *slot = byte;
            written += 1;
        }
        written
    }

    /// Decodes a header from the start of `data`, returning it and its encoded length; the
    /// rest of `data` (ciphertext and tag) is not examined.
    ///
    /// # Errors
    /// [`SframeError::Truncated`] if `data` ends inside the header,
    /// [`SframeError::MalformedHeader`] if a value is not minimally encoded.
    pub fn decode(data: &[u8]) -> Result<(Self, usize), SframeError> {
        let (&config, rest) = data.split_first().ok_or(SframeError::Truncated {
            what: "header",
            needed: 1,
            available: 0,
        })?;
        let kid_half = config >> 4;
        let ctr_half = config & 0x0f;
        let header_len = 1 + field_len(kid_half) + field_len(ctr_half);
        let truncated = SframeError::Truncated {
            what: "header",
            needed: header_len,
            available: data.len(),
        };
        let (kid_bytes, rest) = rest
            .split_at_checked(field_len(kid_half))
            .ok_or(truncated.clone())?;
        let ctr_bytes = rest.get(..field_len(ctr_half)).ok_or(truncated)?;
        let kid = read_value(kid_half, kid_bytes, "the KID is not minimally encoded")?;
        let ctr = read_value(ctr_half, ctr_bytes, "the CTR is not minimally encoded")?;
        Ok((Self { kid, ctr }, header_len))
    }
}

/// Number of bytes a value needs after the config byte (0 when it fits inline).
const fn extra_len(value: u64) -> usize {
    if value < INLINE_LIMIT {
        0
    } else {
        8 - (value.leading_zeros() / 8) as usize
    }
}

/// The 4-bit half of the config byte describing `value`.
const fn nibble(value: u64) -> u8 {
    match extra_len(value) {
        // Inline: the value itself, which is below 8.
        0 => value as u8,
        // Extended: flag plus `length - 1`, which is at most 7.
        len => EXTENDED | (len - 1) as u8,
    }
}

/// The minimal big-endian bytes of `value` that follow the config byte.
fn value_bytes(value: u64) -> impl Iterator<Item = u8> {
    value.to_be_bytes().into_iter().skip(8 - extra_len(value))
}

/// Number of bytes following the config byte for one 4-bit half.
const fn field_len(half: u8) -> usize {
    if half & EXTENDED == 0 {
        0
    } else {
        (half & FIELD) as usize + 1
    }
}

/// Reads one value given its config half and its (correctly sized) extension bytes.
fn read_value(half: u8, bytes: &[u8], non_minimal: &'static str) -> Result<u64, SframeError> {
    if half & EXTENDED == 0 {
        return Ok(u64::from(half & FIELD));
    }
    let value = bytes
        .iter()
        .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
    if extra_len(value) != bytes.len() {
        return Err(SframeError::MalformedHeader {
            reason: non_minimal,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::super::test_vectors::{hex, vectors};
    use super::*;

    fn encode(header: SframeHeader) -> Vec<u8> {
        let mut buf = [0u8; SframeHeader::MAX_LEN];
        let len = header.encode_into(&mut buf);
        buf[..len].to_vec()
    }

    #[test]
    fn header_rfc_vectors_encode_exactly_and_decode_back() {
        let cases = &vectors().header;
        assert_eq!(cases.len(), 289);
        for case in cases {
            let header = SframeHeader::new(case.kid, case.ctr);
            let expected = hex(&case.encoded);
            assert_eq!(
                encode(header),
                expected,
                "kid {} ctr {}",
                case.kid,
                case.ctr
            );
            assert_eq!(header.encoded_len(), expected.len());
            assert_eq!(
                SframeHeader::decode(&expected),
                Ok((header, expected.len()))
            );
        }
    }

    #[test]
    fn header_decode_rejects_every_truncated_rfc_vector() {
        for case in &vectors().header {
            let encoded = hex(&case.encoded);
            for cut in 0..encoded.len() {
                assert!(
                    matches!(
                        SframeHeader::decode(&encoded[..cut]),
                        Err(SframeError::Truncated { needed, available, .. })
                            if available == cut && needed > cut
                    ),
                    "prefix {cut} of {}",
                    case.encoded
                );
            }
        }
    }

    #[test]
    fn header_decode_reports_length_and_ignores_trailing_bytes() {
        let mut data = encode(SframeHeader::new(0x1234, 9));
        let len = data.len();
        data.extend_from_slice(b"ciphertext and tag");
        assert_eq!(
            SframeHeader::decode(&data),
            Ok((SframeHeader::new(0x1234, 9), len))
        );
    }

    #[test]
    fn header_extreme_values_round_trip() {
        for (kid, ctr) in [(0, 0), (7, 7), (8, 8), (u64::MAX, u64::MAX), (255, 256)] {
            let header = SframeHeader::new(kid, ctr);
            let bytes = encode(header);
            assert_eq!(SframeHeader::decode(&bytes), Ok((header, bytes.len())));
        }
        assert_eq!(
            encode(SframeHeader::new(u64::MAX, u64::MAX)).len(),
            SframeHeader::MAX_LEN
        );
    }

    #[test]
    fn header_decode_rejects_non_minimal_encodings() {
        // KID 5 extended to one byte instead of inline.
        let small_kid_extended = [0x80, 0x05];
        // CTR 0x0100 with a leading zero byte (3 bytes instead of 2).
        let ctr_leading_zero = [0x0a, 0x00, 0x01, 0x00];
        // KID 0x10 with a leading zero byte.
        let kid_leading_zero = [0x90, 0x00, 0x10];
        for bytes in [
            &small_kid_extended[..],
            &ctr_leading_zero[..],
            &kid_leading_zero[..],
        ] {
            assert!(matches!(
                SframeHeader::decode(bytes),
                Err(SframeError::MalformedHeader { .. })
            ));
        }
    }

    #[test]
    fn header_decode_of_every_config_byte_never_panics() {
        for config in 0..=u8::MAX {
            let mut data = vec![config];
            for extra in 0..=16u8 {
                let _ = SframeHeader::decode(&data);
                data.push(extra.wrapping_mul(37) | 1);
            }
        }
    }
}
