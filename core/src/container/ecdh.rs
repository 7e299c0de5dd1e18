//! P-384 ECDH for the containers' key wraps, computed by aws-lc-rs.
//!
//! Keys stay `p384` types everywhere else (parsing, encoding, storage, the public
//! API); only the scalar multiplication of each agreement runs in aws-lc, whose P-384
//! is several times faster than the RustCrypto one (`docs/benchmarks.md`, "Container
//! crypto"), which matters because a Rekey to 99 devices costs 198 agreements and each
//! receiver two. The result is the same x-coordinate (SEC 1 ECDH), so the wire format
//! and the test vectors are unchanged.
//!
//! Secrets: the scalar is copied into aws-lc's key from a zeroizing buffer; aws-lc
//! cleanses its allocations when it frees them; the shared secret comes back in a
//! zeroizing buffer (and aws-lc-rs scrubs its own copy). [`EcdhKey`] prints no secret.

use aws_lc_rs::agreement::{self, ECDH_P384, PrivateKey, UnparsedPublicKey};
use p384::elliptic_curve::sec1::ToEncodedPoint;
use zeroize::Zeroizing;

use super::ContainerError;

/// Length of a P-384 shared secret (the x-coordinate).
const SHARED_LEN: usize = 48;

/// The x-coordinate of a P-384 shared point; zeroized on drop.
pub(crate) type SharedSecret = Zeroizing<[u8; SHARED_LEN]>;

/// A P-384 private key ready for any number of agreements.
pub(crate) struct EcdhKey(PrivateKey);

impl core::fmt::Debug for EcdhKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("EcdhKey(P-384, secret)")
    }
}

impl EcdhKey {
    /// The aws-lc form of `secret`.
    pub(crate) fn new(secret: &p384::SecretKey) -> Result<Self, ContainerError> {
        let scalar = Zeroizing::new(secret.to_bytes());
        PrivateKey::from_private_key(&ECDH_P384, scalar.as_slice())
            .map(EcdhKey)
            .map_err(|_| ContainerError::KeyAgreement)
    }

    /// This key's public point.
    pub(crate) fn public_key(&self) -> Result<p384::PublicKey, ContainerError> {
        let public = self
            .0
            .compute_public_key()
            .map_err(|_| ContainerError::KeyAgreement)?;
        p384::PublicKey::from_sec1_bytes(public.as_ref()).map_err(|_| ContainerError::KeyAgreement)
    }

    /// ECDH with `peer`: the shared point's x-coordinate.
    pub(crate) fn agree(&self, peer: &p384::PublicKey) -> Result<SharedSecret, ContainerError> {
        let point = peer.to_encoded_point(false);
        agreement::agree(
            &self.0,
            UnparsedPublicKey::new(&ECDH_P384, point.as_bytes()),
            ContainerError::KeyAgreement,
            |shared| {
                let mut out = Zeroizing::new([0u8; SHARED_LEN]);
                if shared.len() != SHARED_LEN {
                    return Err(ContainerError::KeyAgreement);
                }
                out.copy_from_slice(shared);
                Ok(out)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    /// The same x-coordinate as RustCrypto's `p384` ECDH, both ways round.
    #[test]
    fn agreements_match_the_rustcrypto_implementation() {
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        for _ in 0..8 {
            let a = p384::SecretKey::random(&mut rng);
            let b = p384::SecretKey::random(&mut rng);
            let expected =
                p384::ecdh::diffie_hellman(a.to_nonzero_scalar(), b.public_key().as_affine());
            let ka = EcdhKey::new(&a).unwrap();
            let kb = EcdhKey::new(&b).unwrap();
            assert_eq!(ka.public_key().unwrap(), a.public_key());
            let ab = ka.agree(&b.public_key()).unwrap();
            let ba = kb.agree(&a.public_key()).unwrap();
            assert_eq!(ab.as_slice(), expected.raw_secret_bytes().as_slice());
            assert_eq!(ab, ba);
        }
    }

    #[test]
    fn the_key_prints_no_secret() {
        let mut rng = ChaCha20Rng::seed_from_u64(18);
        let key = EcdhKey::new(&p384::SecretKey::random(&mut rng)).unwrap();
        assert_eq!(format!("{key:?}"), "EcdhKey(P-384, secret)");
    }
}
