//! Per-KID key derivation (RFC 9605 §4.4.2) and the AES-GCM key object.
//!
//! ```text
//! secret = HKDF-Extract(salt = "", IKM = base_key)
//! key    = HKDF-Expand(secret, "SFrame 1.0 Secret key "  || u64be(KID) || u16be(suite), Nk)
//! salt   = HKDF-Expand(secret, "SFrame 1.0 Secret salt " || u64be(KID) || u16be(suite), Nn)
//! nonce  = salt XOR u64be(CTR) left-padded to Nn bytes
//! ```
//!
//! HKDF uses SHA-256 for suite 0x0004 and SHA-512 for suite 0x0005. The derived key goes
//! straight into the AES-GCM cipher; the HKDF secret and the key bytes are zeroized as soon
//! as derivation ends, the salt and the cipher's key schedule when the [`SframeKey`] drops.
//!
//! Wiping is best effort, as everywhere in Rust: the `hkdf`/`hmac` crates do not zeroize
//! their internal HMAC state, and constructing a cipher may leave a transient copy of its
//! key schedule on the stack before it is moved into its box.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hkdf::{Hkdf, InvalidLength};
use sha2::{Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

use super::suite::{NONCE_LEN, TAG_LEN};
use super::{CipherSuite, Kid};

/// HKDF-Expand label prefix for the AEAD key.
const KEY_LABEL: &[u8] = b"SFrame 1.0 Secret key ";
/// HKDF-Expand label prefix for the nonce salt.
const SALT_LABEL: &[u8] = b"SFrame 1.0 Secret salt ";

/// Intermediate values of the key schedule; every field wipes itself on drop.
pub(crate) struct KeyMaterial {
    /// The HKDF-Extract output (`sframe_secret`), kept only for test-vector checks.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) secret: Zeroizing<Vec<u8>>,
    /// The AEAD key (`sframe_key`).
    pub(crate) key: Zeroizing<Vec<u8>>,
    /// The nonce salt (`sframe_salt`).
    pub(crate) salt: Zeroizing<[u8; NONCE_LEN]>,
}

/// Runs the RFC 9605 key schedule for `kid` under `suite`.
pub(crate) fn derive_material(suite: CipherSuite, base_key: &[u8], kid: u64) -> KeyMaterial {
    match suite {
        CipherSuite::Aes128GcmSha256Tag128 => {
            let (mut prk, hkdf) = Hkdf::<Sha256>::extract(Some(&[]), base_key);
            expand_material(suite, kid, prk.as_mut_slice(), |info, okm| {
                hkdf.expand_multi_info(info, okm)
            })
        }
        CipherSuite::Aes256GcmSha512Tag128 => {
            let (mut prk, hkdf) = Hkdf::<Sha512>::extract(Some(&[]), base_key);
            expand_material(suite, kid, prk.as_mut_slice(), |info, okm| {
                hkdf.expand_multi_info(info, okm)
            })
        }
    }
}

/// Expands key and salt with `expand` (HKDF-Expand over the extracted `prk`), keeping a
/// zeroizing copy of `prk` as the secret and wiping the original.
fn expand_material(
    suite: CipherSuite,
    kid: u64,
    prk: &mut [u8],
    expand: impl Fn(&[&[u8]], &mut [u8]) -> Result<(), InvalidLength>,
) -> KeyMaterial {
    let secret = Zeroizing::new(prk.to_vec());
    prk.zeroize();

    let kid_be = kid.to_be_bytes();
    let suite_be = suite.id().to_be_bytes();
    let mut key = Zeroizing::new(vec![0u8; suite.key_len()]);
    let mut salt = Zeroizing::new([0u8; NONCE_LEN]);
    expand(&[KEY_LABEL, &kid_be, &suite_be], key.as_mut_slice())
        .expect("an AEAD key (at most 32 bytes) is far below HKDF's 255 * HashLen output limit");
    expand(&[SALT_LABEL, &kid_be, &suite_be], salt.as_mut_slice())
        .expect("a 12-byte salt is far below HKDF's 255 * HashLen output limit");
    KeyMaterial { secret, key, salt }
}

/// The AES-GCM key of one suite, in AWS-LC (through aws-lc-rs, which rustls and quinn
/// already use for QUIC's packet protection): its AES-NI/VAES and CLMUL code runs an
/// audio frame's AEAD several times faster than the portable implementation we used
/// before (docs/benchmarks.md, "SFrame on AWS-LC"). The key schedule lives in an
/// allocation of AWS-LC's own, so moving an [`SframeKey`] never copies it, and AWS-LC
/// wipes every allocation it frees (`OPENSSL_free` cleanses it), so the round keys are
/// gone when the key is dropped.
fn gcm(suite: CipherSuite, key: &[u8]) -> LessSafeKey {
    const KEY_LEN: &str = "the key schedule derives exactly suite.key_len() bytes";
    let algorithm = match suite {
        CipherSuite::Aes128GcmSha256Tag128 => &AES_128_GCM,
        CipherSuite::Aes256GcmSha512Tag128 => &AES_256_GCM,
    };
    LessSafeKey::new(UnboundKey::new(algorithm, key).expect(KEY_LEN))
}

/// Why an AEAD operation failed: for sealing, only an impossibly large buffer; for
/// opening, a tag mismatch.
#[derive(Debug)]
pub(crate) struct AeadFailure;

/// The AES-GCM key and nonce salt derived for one (suite, KID).
///
/// Create it with [`SframeKey::derive`]. The salt is zeroized on drop and the cipher's key
/// schedule is overwritten; `Debug` shows only the suite and KID.
pub struct SframeKey {
    suite: CipherSuite,
    kid: Kid,
    cipher: LessSafeKey,
    salt: Zeroizing<[u8; NONCE_LEN]>,
}

impl SframeKey {
    /// Derives the key and salt for `kid` from `base_key` (RFC 9605 §4.4.2).
    #[must_use]
    pub fn derive(suite: CipherSuite, base_key: &[u8], kid: u64) -> Self {
        let material = derive_material(suite, base_key, kid);
        Self {
            suite,
            kid: Kid::new(kid),
            cipher: gcm(suite, &material.key),
            salt: material.salt.clone(),
        }
    }

    /// The cipher suite this key belongs to.
    #[must_use]
    pub const fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The KID this key was derived for.
    #[must_use]
    pub const fn kid(&self) -> Kid {
        self.kid
    }

    /// `salt XOR ctr`, with the counter big-endian and left-padded to the nonce length.
    pub(crate) fn nonce(&self, ctr: u64) -> Zeroizing<[u8; NONCE_LEN]> {
        let mut nonce = Zeroizing::new(*self.salt);
        for (byte, ctr_byte) in nonce
            .iter_mut()
            .rev()
            .zip(ctr.to_be_bytes().into_iter().rev())
        {
            *byte ^= ctr_byte;
        }
        nonce
    }

    /// Encrypts `buffer` in place and returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        ctr: u64,
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadFailure> {
        let nonce = Nonce::assume_unique_for_key(*self.nonce(ctr));
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buffer)
            .map_err(|_| AeadFailure)?;
        tag.as_ref().try_into().map_err(|_| AeadFailure)
    }

    /// Verifies `tag` and, only if it matches, decrypts `buffer` in place.
    pub(crate) fn open_in_place(
        &self,
        ctr: u64,
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadFailure> {
        let nonce = Nonce::assume_unique_for_key(*self.nonce(ctr));
        self.cipher
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, buffer)
            .map(|_| ())
            .map_err(|_| AeadFailure)
    }

    /// Whether `other` holds the same key material (same suite, KID and derived salt; the
    /// salt comparison is constant-time).
    #[cfg(test)]
    pub(crate) fn same_key_as(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.suite == other.suite
            && self.kid == other.kid
            && bool::from(self.salt.as_slice().ct_eq(other.salt.as_slice()))
    }
}

/// Every field wipes itself on drop: the salt is `Zeroizing`, and AWS-LC cleanses the
/// cipher's key schedule when it frees it.
impl zeroize::ZeroizeOnDrop for SframeKey {}

impl core::fmt::Debug for SframeKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SframeKey")
            .field("suite", &self.suite)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_vectors::{gcm_vectors, hex};
    use super::*;

    /// Guards the workspace's `aes`/`ghash` `zeroize` features: without them the AES
    /// round keys would outlive the key (this stops compiling).
    #[test]
    fn aes_key_schedules_zeroize_on_drop() {
        fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes_on_drop::<aes::Aes128>();
        zeroizes_on_drop::<aes::Aes256>();
        zeroizes_on_drop::<SframeKey>();
    }

    #[test]
    fn key_schedule_reproduces_rfc_gcm_vectors() {
        let mut checked = 0;
        for v in gcm_vectors() {
            let suite = CipherSuite::from_id(v.cipher_suite).unwrap();
            let material = derive_material(suite, &hex(&v.base_key), v.kid);
            assert_eq!(*material.secret, hex(&v.sframe_secret), "suite {suite}");
            assert_eq!(*material.key, hex(&v.sframe_key), "suite {suite}");
            assert_eq!(material.salt.to_vec(), hex(&v.sframe_salt), "suite {suite}");

            let label =
                |prefix: &[u8]| [prefix, &v.kid.to_be_bytes(), &suite.id().to_be_bytes()].concat();
            assert_eq!(label(KEY_LABEL), hex(&v.sframe_key_label));
            assert_eq!(label(SALT_LABEL), hex(&v.sframe_salt_label));

            let key = SframeKey::derive(suite, &hex(&v.base_key), v.kid);
            assert_eq!(key.nonce(v.ctr).to_vec(), hex(&v.nonce), "suite {suite}");
            checked += 1;
        }
        assert_eq!(checked, 2, "one vector each for suites 0x0004 and 0x0005");
    }

    #[test]
    fn nonce_xors_counter_into_low_bytes_of_salt() {
        let key = SframeKey::derive(CipherSuite::Aes256GcmSha512Tag128, b"base", 1);
        let salt = *key.salt;
        assert_eq!(*key.nonce(0), salt);
        let nonce = key.nonce(u64::MAX);
        assert_eq!(nonce[..4], salt[..4]);
        assert!(nonce[4..].iter().zip(&salt[4..]).all(|(n, s)| *n == !*s));
    }

    #[test]
    fn keys_differ_per_kid_and_base_key() {
        let suite = CipherSuite::Aes256GcmSha512Tag128;
        let a = SframeKey::derive(suite, b"base key", 1);
        assert!(a.same_key_as(&SframeKey::derive(suite, b"base key", 1)));
        assert!(!a.same_key_as(&SframeKey::derive(suite, b"base key", 2)));
        assert!(!a.same_key_as(&SframeKey::derive(suite, b"other key", 1)));
    }

    #[test]
    fn key_debug_never_prints_key_material() {
        for v in gcm_vectors() {
            let suite = CipherSuite::from_id(v.cipher_suite).unwrap();
            let key = SframeKey::derive(suite, &hex(&v.base_key), v.kid);
            let debug = format!("{key:?}");
            assert!(debug.contains("kid"), "{debug}");
            for secret in [&v.sframe_key, &v.sframe_salt, &v.sframe_secret, &v.base_key] {
                assert!(!debug.to_lowercase().contains(secret.as_str()), "{debug}");
            }
            assert!(!debug.contains(&format!("{:?}", hex(&v.sframe_key))));
        }
    }
}
