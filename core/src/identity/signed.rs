//! The `domain || body` signature convention shared by certificates and prekeys.

use conclave_proto::Message;
use conclave_proto::limits::MAX_SIGNED_OBJECT_BYTES;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::{IdentityError, MalformedReason};

/// How one kind of signed object is checked: its domain separator, its format version
/// and its name in errors.
pub(super) struct SignedKind {
    pub(super) domain: &'static [u8],
    pub(super) version: u32,
    pub(super) what: &'static str,
}

/// Bounds the size, verifies the signature over the received `body` bytes, then decodes
/// the body and checks its version (read by `version_of`). Nothing is decoded before the
/// signature verified.
pub(super) fn verify_and_decode<M: Message + Default>(
    kind: &SignedKind,
    key: &VerifyingKey,
    body: &[u8],
    signature: &[u8],
    version_of: impl Fn(&M) -> u32,
) -> Result<M, IdentityError> {
    let len = body.len().saturating_add(signature.len());
    if len > MAX_SIGNED_OBJECT_BYTES {
        return Err(IdentityError::TooLarge {
            what: kind.what,
            len,
            max: MAX_SIGNED_OBJECT_BYTES,
        });
    }
    verify(key, kind.domain, body, signature, kind.what)?;
    let decoded = M::decode(body)
        .map_err(|e| IdentityError::malformed(kind.what, MalformedReason::Encoding(e)))?;
    let version = version_of(&decoded);
    if version != kind.version {
        return Err(IdentityError::UnsupportedVersion {
            what: kind.what,
            version,
        });
    }
    Ok(decoded)
}

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
fn verify(
    key: &VerifyingKey,
    domain: &[u8],
    body: &[u8],
    signature: &[u8],
    what: &'static str,
) -> Result<(), IdentityError> {
    let signature = Signature::from_slice(signature).map_err(|_| {
        IdentityError::malformed(
            what,
            MalformedReason::FieldLength {
                field: "signature",
                expected: 64,
            },
        )
    })?;
    key.verify_strict(&signing_input(domain, body), &signature)
        .map_err(|_| IdentityError::BadSignature { what })
}

/// Parses a 32-byte Ed25519 public key field.
pub(crate) fn ed25519_public(
    bytes: &[u8],
    what: &'static str,
) -> Result<VerifyingKey, IdentityError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| {
        IdentityError::malformed(
            what,
            MalformedReason::FieldLength {
                field: "Ed25519 public key",
                expected: 32,
            },
        )
    })?;
    VerifyingKey::from_bytes(&arr).map_err(|_| {
        IdentityError::malformed(
            what,
            MalformedReason::InvalidKey {
                key: "Ed25519 public key",
            },
        )
    })
}

/// Parses a SEC1 compressed P-384 public key field.
pub(crate) fn p384_public(
    bytes: &[u8],
    what: &'static str,
) -> Result<p384::PublicKey, IdentityError> {
    if bytes.len() != super::P384_COMPRESSED_LEN {
        return Err(IdentityError::malformed(
            what,
            MalformedReason::FieldLength {
                field: "compressed P-384 public key",
                expected: super::P384_COMPRESSED_LEN,
            },
        ));
    }
    p384::PublicKey::from_sec1_bytes(bytes).map_err(|_| {
        IdentityError::malformed(
            what,
            MalformedReason::InvalidKey {
                key: "P-384 public key",
            },
        )
    })
}

/// Encodes a P-384 public key as a SEC1 compressed point.
pub(crate) fn p384_compressed(key: &p384::PublicKey) -> Vec<u8> {
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    key.to_encoded_point(true).as_bytes().to_vec()
}
