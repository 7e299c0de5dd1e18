//! SFrame cipher suites (RFC 9605 §4.5): only the AES-GCM suites are offered.
//!
//! The AES-CTR-HMAC suites 0x0001–0x0003 exist for codecs that need short tags; Conclave
//! never needs them, and leaving them out keeps one AEAD construction in the code.

use super::SframeError;

/// AES-GCM nonce length in bytes (`Nn`), the same for every offered suite.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes (`Nt`), the same for every offered suite.
pub(crate) const TAG_LEN: usize = 16;

/// An SFrame cipher suite from the IANA "SFrame Cipher Suites" registry.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// `AES_128_GCM_SHA256_128` (0x0004): AES-128-GCM, HKDF-SHA-256, 16-byte tag.
    Aes128GcmSha256Tag128,
    /// `AES_256_GCM_SHA512_128` (0x0005): AES-256-GCM, HKDF-SHA-512, 16-byte tag.
    /// This is the suite Conclave meetings use.
    Aes256GcmSha512Tag128,
}

impl CipherSuite {
    /// The IANA identifier of the suite, as it appears in the key-derivation labels.
    #[must_use]
    pub const fn id(self) -> u16 {
        match self {
            Self::Aes128GcmSha256Tag128 => 0x0004,
            Self::Aes256GcmSha512Tag128 => 0x0005,
        }
    }

    /// Looks a suite up by its IANA identifier.
    ///
    /// # Errors
    /// [`SframeError::UnsupportedCipherSuite`] for every identifier other than 0x0004 and
    /// 0x0005, including the AES-CTR-HMAC suites this implementation does not offer.
    pub const fn from_id(id: u16) -> Result<Self, SframeError> {
        match id {
            0x0004 => Ok(Self::Aes128GcmSha256Tag128),
            0x0005 => Ok(Self::Aes256GcmSha512Tag128),
            _ => Err(SframeError::UnsupportedCipherSuite { id }),
        }
    }

    /// AEAD key length in bytes (`Nk`).
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128GcmSha256Tag128 => 16,
            Self::Aes256GcmSha512Tag128 => 32,
        }
    }

    /// AEAD nonce length in bytes (`Nn`): always 12.
    #[must_use]
    pub const fn nonce_len(self) -> usize {
        NONCE_LEN
    }

    /// AEAD tag length in bytes (`Nt`): always 16.
    #[must_use]
    pub const fn tag_len(self) -> usize {
        TAG_LEN
    }
}

impl core::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Aes128GcmSha256Tag128 => "AES_128_GCM_SHA256_128",
            Self::Aes256GcmSha512Tag128 => "AES_256_GCM_SHA512_128",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_ids_round_trip() {
        for suite in [
            CipherSuite::Aes128GcmSha256Tag128,
            CipherSuite::Aes256GcmSha512Tag128,
        ] {
            assert_eq!(CipherSuite::from_id(suite.id()), Ok(suite));
        }
    }

    #[test]
    fn suite_lengths_match_rfc_table() {
        let s4 = CipherSuite::Aes128GcmSha256Tag128;
        let s5 = CipherSuite::Aes256GcmSha512Tag128;
        assert_eq!((s4.key_len(), s4.nonce_len(), s4.tag_len()), (16, 12, 16));
        assert_eq!((s5.key_len(), s5.nonce_len(), s5.tag_len()), (32, 12, 16));
    }

    #[test]
    fn aes_ctr_hmac_and_unknown_suites_are_not_offered() {
        for id in [0x0000, 0x0001, 0x0002, 0x0003, 0x0006, 0xffff] {
            assert_eq!(
                CipherSuite::from_id(id),
                Err(SframeError::UnsupportedCipherSuite { id })
            );
        }
    }
}
