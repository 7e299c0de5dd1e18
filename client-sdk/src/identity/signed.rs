//! The `domain || body` signature convention shared by certificates and prekeys.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::IdentityError;

fn signing_input(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len() + body.len());
    msg.extend_from_slice(domain);
    msg.extend_from_slice(body);
    msg
}

/// Signs `domain || body`.
pub(super) fn sign(key: &SigningKey, domain: &[u8], body: &[u8]) -> Vec<u8> {
    key.sign(&signing_input(domain, body)).to_bytes().to_vec()
}

/// Verifies a strict Ed25519 signature over `domain || body`.
pub(super) fn verify(
    key: &VerifyingKey,
    domain: &[u8],
    body: &[u8],
    signature: &[u8],
    what: &'static str,
) -> Result<(), IdentityError> {
    let signature = Signature::from_slice(signature)
        .map_err(|_| IdentityError::malformed(what, "signature is not 64 bytes"))?;
    key.verify_strict(&signing_input(domain, body), &signature)
        .map_err(|_| IdentityError::BadSignature { what })
}

/// Parses a 32-byte Ed25519 public key field.
pub(crate) fn ed25519_public(
    bytes: &[u8],
    what: &'static str,
) -> Result<VerifyingKey, IdentityError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| IdentityError::malformed(what, "Ed25519 public key is not 32 bytes"))?;
    VerifyingKey::from_bytes(&arr)
        .map_err(|_| IdentityError::malformed(what, "Ed25519 public key is not a valid point"))
}

/// Parses a SEC1 compressed P-384 public key field.
pub(crate) fn p384_public(
    bytes: &[u8],
    what: &'static str,
) -> Result<p384::PublicKey, IdentityError> {
    if bytes.len() != super::P384_COMPRESSED_LEN {
        return Err(IdentityError::malformed(
            what,
            "P-384 public key is not a 49-byte compressed point",
        ));
    }
    p384::PublicKey::from_sec1_bytes(bytes)
        .map_err(|_| IdentityError::malformed(what, "P-384 public key is not a valid point"))
}

/// Encodes a P-384 public key as a SEC1 compressed point.
pub(crate) fn p384_compressed(key: &p384::PublicKey) -> Vec<u8> {
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    key.to_encoded_point(true).as_bytes().to_vec()
}
