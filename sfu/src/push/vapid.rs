//! VAPID (RFC 8292): the operator's P-256 key and the signed `Authorization` header of
//! each push request.
//!
//! The header is `vapid t=<JWT>, k=<public key>`, where the JWT (RFC 7515 compact form,
//! ES256) claims the push service's origin (`aud`), an expiry at most 24 hours ahead
//! (`exp`) and the operator's contact (`sub`). The JWT has one fixed header and three
//! claims, so it is written here with the RustCrypto ECDSA signer rather than through a
//! general JWT library (whose other algorithms, RSA among them, we would not use).

use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use super::PushSetupError;

/// The longest validity RFC 8292 allows a token.
const MAX_VALIDITY_SECS: u64 = 24 * 3600;

/// The operator's VAPID key.
pub struct VapidKey {
    signing: SigningKey,
    public: [u8; 65],
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &Base64UrlUnpadded::encode_string(&self.public))
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// Reads a PEM file holding a P-256 private key (PKCS#8 or SEC1).
    pub fn load(path: &Path) -> Result<VapidKey, PushSetupError> {
        let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            PushSetupError::KeyFile {
                path: path.to_path_buf(),
                source,
            }
        })?);
        let secret = p256::SecretKey::from_pkcs8_pem(&pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(&pem))
            .map_err(|_| PushSetupError::KeyFormat {
                path: path.to_path_buf(),
            })?;
        Ok(VapidKey::from_secret(&secret))
    }

    /// A new random key, as PKCS#8 PEM (for `conclave-sfu --generate-vapid-key`).
    /// The text wipes itself when dropped.
    pub fn generate_pem() -> Result<Zeroizing<String>, PushSetupError> {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| PushSetupError::KeyEncoding)
    }

    fn from_secret(secret: &p256::SecretKey) -> VapidKey {
        let point = secret.public_key().to_encoded_point(false);
        let mut public = [0u8; 65];
        // An uncompressed P-256 point is 65 bytes by definition.
        public.copy_from_slice(point.as_bytes());
        VapidKey {
            signing: SigningKey::from(secret),
            public,
        }
    }

    /// The public key, an uncompressed point: the application server key devices
    /// subscribe with.
    pub fn public_key(&self) -> [u8; 65] {
        self.public
    }

    /// [`VapidKey::public_key`] in base64url without padding (how web apps pass it as
    /// `applicationServerKey`).
    pub fn public_key_base64url(&self) -> String {
        Base64UrlUnpadded::encode_string(&self.public)
    }

    /// The `Authorization` header for a request to `endpoint`, valid for
    /// `validity_secs` (at most 24 hours) from `now_unix_secs`.
    pub(crate) fn authorization(
        &self,
        endpoint: &reqwest::Url,
        contact: &str,
        now_unix_secs: u64,
        validity_secs: u64,
    ) -> String {
        let header = Base64UrlUnpadded::encode_string(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": endpoint.origin().ascii_serialization(),
            "exp": now_unix_secs.saturating_add(validity_secs.min(MAX_VALIDITY_SECS)),
            "sub": contact,
        });
        let claims = Base64UrlUnpadded::encode_string(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{claims}");
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        let signature = Base64UrlUnpadded::encode_string(&signature.to_bytes());
        let key = Base64UrlUnpadded::encode_string(&self.public);
        format!("vapid t={signing_input}.{signature}, k={key}")
    }
}

/// Signed `Authorization` headers per push service origin, reused while at least half
/// their validity remains (one ECDSA signature per origin per half hour instead of one
/// per request). At most [`TokenCache::MAX_ORIGINS`] origins; when full it starts over.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: std::sync::Mutex<std::collections::HashMap<String, (String, u64)>>,
}

impl TokenCache {
    /// Origins kept at most (wildcard entries allow many subdomains).
    const MAX_ORIGINS: usize = 1_024;

    /// The header for `endpoint` at `now_unix_secs`, valid for `validity_secs`: a
    /// cached one if it is still valid for at least half of that, else a new one.
    pub(crate) fn authorization(
        &self,
        key: &VapidKey,
        endpoint: &reqwest::Url,
        contact: &str,
        now_unix_secs: u64,
        validity_secs: u64,
    ) -> String {
        let origin = endpoint.origin().ascii_serialization();
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((header, expires)) = tokens.get(&origin)
            && expires.saturating_sub(now_unix_secs) >= validity_secs / 2
        {
            return header.clone();
        }
        let header = key.authorization(endpoint, contact, now_unix_secs, validity_secs);
        if tokens.len() >= Self::MAX_ORIGINS {
            tokens.clear();
        }
        let expires = now_unix_secs.saturating_add(validity_secs.min(MAX_VALIDITY_SECS));
        tokens.insert(origin, (header.clone(), expires));
        header
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;

    use super::*;

    fn key() -> VapidKey {
        let pem = VapidKey::generate_pem().expect("a fresh key encodes");
        let secret = p256::SecretKey::from_pkcs8_pem(&pem).expect("our own PEM reads back");
        VapidKey::from_secret(&secret)
    }

    #[test]
    fn the_token_verifies_under_the_public_key_and_claims_the_origin() {
        let key = key();
        let url = reqwest::Url::parse("https://push.example.net:8443/wpush/v2/abc?x=1")
            .expect("a valid URL");
        let header = key.authorization(&url, "mailto:ops@example.com", 1_000, 99_999);
        let rest = header.strip_prefix("vapid t=").expect("vapid scheme");
        let (token, k) = rest.split_once(", k=").expect("t and k");
        assert_eq!(
            Base64UrlUnpadded::decode_vec(k).unwrap(),
            key.public_key().to_vec()
        );
        let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
        let verifying = VerifyingKey::from_sec1_bytes(&key.public_key()).unwrap();
        let signature =
            Signature::from_slice(&Base64UrlUnpadded::decode_vec(signature).unwrap()).unwrap();
        verifying
            .verify(signing_input.as_bytes(), &signature)
            .expect("the token verifies");
        let (_, claims) = signing_input.split_once('.').unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(claims).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net:8443");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        // Capped at 24 hours.
        assert_eq!(claims["exp"], 1_000 + 24 * 3600);
    }

    #[test]
    fn pkcs8_and_sec1_files_load_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let pkcs8 = dir.path().join("pkcs8.pem");
        std::fs::write(
            &pkcs8,
            secret.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let sec1 = dir.path().join("sec1.pem");
        std::fs::write(
            &sec1,
            secret.to_sec1_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let a = VapidKey::load(&pkcs8).unwrap();
        let b = VapidKey::load(&sec1).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = VapidKey::load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.pem"), "{err}");
        let err = VapidKey::load(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[test]
    fn tokens_are_reused_per_origin_while_half_their_validity_remains() {
        let key = key();
        let cache = TokenCache::default();
        let a = reqwest::Url::parse("https://push.example.net/a").unwrap();
        let b = reqwest::Url::parse("https://push.example.net/b").unwrap();
        let other = reqwest::Url::parse("https://push.example.org/a").unwrap();
        let first = cache.authorization(&key, &a, "mailto:o@example.com", 1_000, 3_600);
        // Same origin, another path, within half the validity: the same token.
        let second = cache.authorization(&key, &b, "mailto:o@example.com", 2_800, 3_600);
        assert_eq!(first, second);
        // Another origin: its own token.
        let third = cache.authorization(&key, &other, "mailto:o@example.com", 2_800, 3_600);
        assert_ne!(first, third);
        // Less than half left: a fresh one.
        let fourth = cache.authorization(&key, &a, "mailto:o@example.com", 2_801, 3_600);
        assert_ne!(first, fourth);
    }

    #[test]
    fn debug_shows_the_public_key_only() {
        let key = key();
        let debug = format!("{key:?}");
        assert!(debug.contains(&Base64UrlUnpadded::encode_string(&key.public_key())));
        let secret = Base64UrlUnpadded::encode_string(&key.signing.to_bytes());
        assert!(!debug.contains(&secret));
        assert!(!debug.contains(&hex::encode(key.signing.to_bytes())));
    }
}
