use std::fmt;
use std::sync::OnceLock;

use conclave_proto::{Message, v1};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::signed::{self, SignedKind};
use super::{IdentityError, MalformedReason, UserIdentity, UserSigningKey};
use crate::container::ContainerError;
use crate::container::ecdh::EcdhKey;
use crate::time::MAX_CLOCK_SKEW_MS;
use crate::{DeviceId, UnixMillis, UserId};

const CERT: SignedKind = SignedKind {
    domain: b"conclave.device-cert.v1",
    version: 1,
    what: "device certificate",
};
const WHAT: &str = CERT.what;

/// The public, verified view of a device: obtained only by checking its certificate
/// against the owning user's trusted key.
#[derive(Clone)]
pub struct VerifiedDevice {
    user_id: UserId,
    device_id: DeviceId,
    signing_key: VerifyingKey,
    device_key: p384::PublicKey,
    created_at: UnixMillis,
    expires_at: UnixMillis,
    certificate: v1::DeviceCertificate,
}

impl VerifiedDevice {
    /// Verifies `certificate` as a device of `user`: size, Ed25519 signature by the
    /// user's trusted key over the received body bytes, version, user id, key encodings
    /// and validity period at `now`.
    pub fn verify(
        certificate: &v1::DeviceCertificate,
        user: &UserIdentity,
        now: UnixMillis,
    ) -> Result<Self, IdentityError> {
        let body: v1::DeviceCertificateBody = signed::verify_and_decode(
            &CERT,
            &user.key.0,
            &certificate.body,
            &certificate.signature,
            |b: &v1::DeviceCertificateBody| b.version,
        )?;
        let user_id = UserId::from_slice(&body.user_id).ok_or_else(|| {
            IdentityError::malformed(
                WHAT,
                MalformedReason::FieldLength {
                    field: "user id",
                    expected: UserId::LEN,
                },
            )
        })?;
        if user_id != user.user_id {
            return Err(IdentityError::WrongUser);
        }
        let device_id = DeviceId::from_slice(&body.device_id).ok_or_else(|| {
            IdentityError::malformed(
                WHAT,
                MalformedReason::FieldLength {
                    field: "device id",
                    expected: DeviceId::LEN,
                },
            )
        })?;
        let signing_key = signed::ed25519_public(&body.signing_public_key, WHAT)?;
        let device_key = signed::p384_public(&body.device_public_key, WHAT)?;
        let created_at = UnixMillis(body.created_at_ms);
        let expires_at = UnixMillis(body.expires_at_ms);
        if created_at >= expires_at {
            return Err(IdentityError::malformed(
                WHAT,
                MalformedReason::ExpiresBeforeCreated,
            ));
        }
        if now >= expires_at {
            return Err(IdentityError::Expired {
                what: WHAT,
                expired_at: expires_at,
                now,
            });
        }
        if created_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(IdentityError::NotYetValid {
                what: WHAT,
                created_at,
                now,
            });
        }
        Ok(VerifiedDevice {
            user_id,
            device_id,
            signing_key,
            device_key,
            created_at,
            expires_at,
            certificate: certificate.clone(),
        })
    }

    /// The owning user.
    #[must_use]
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// The device.
    #[must_use]
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The device's Ed25519 signing public key.
    #[must_use]
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing_key
    }

    /// The device's static P-384 device key.
    #[must_use]
    pub fn device_key(&self) -> &p384::PublicKey {
        &self.device_key
    }

    /// When the certificate was issued.
    #[must_use]
    pub fn created_at(&self) -> UnixMillis {
        self.created_at
    }

    /// When the certificate expires.
    #[must_use]
    pub fn expires_at(&self) -> UnixMillis {
        self.expires_at
    }

    /// The certificate as received.
    #[must_use]
    pub fn certificate(&self) -> &v1::DeviceCertificate {
        &self.certificate
    }
}

/// Two verified devices are equal when they were verified from the same certificate
/// (body and signature bytes), which fixes every other field.
impl PartialEq for VerifiedDevice {
    fn eq(&self, other: &Self) -> bool {
        self.certificate == other.certificate
    }
}

impl Eq for VerifiedDevice {}

impl VerifiedDevice {
    /// Whether `other` names the same device with the same keys (signing key and P-384
    /// device key), whatever its validity period: a renewed certificate of the same
    /// device keys matches, a substituted one does not.
    #[must_use]
    pub fn same_keys(&self, other: &VerifiedDevice) -> bool {
        self.user_id == other.user_id
            && self.device_id == other.device_id
            && self.signing_key == other.signing_key
            && self.device_key == other.device_key
    }
}

impl fmt::Debug for VerifiedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedDevice")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The secret halves of a device's keys, as stored by the app. Zeroized on drop;
/// `Debug` prints nothing secret.
pub struct DeviceSecrets {
    /// The Ed25519 device signing key seed.
    pub signing_key: Zeroizing<[u8; 32]>,
    /// The P-384 device key scalar, big-endian.
    pub device_key: Zeroizing<[u8; 48]>,
}

impl fmt::Debug for DeviceSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecrets { .. }")
    }
}

/// This device's own identity: its signing key, its static P-384 device key and the
/// certificate the user signing key issued for them. Secrets zeroize on drop and never
/// appear in `Debug` output.
pub struct DeviceIdentity {
    signing: SigningKey,
    device_key: p384::SecretKey,
    /// `device_key` in aws-lc's form, made when the device is created (its public point
    /// comes from it) or, for a restored device, at the first container it opens, and
    /// kept: loading a P-384 key computes its public point (124 µs, against 176 µs for
    /// an agreement), and every container this device opens needs one agreement with
    /// it. aws-lc cleanses the key when it is freed.
    device_ecdh: OnceLock<EcdhKey>,
    public: VerifiedDevice,
}

impl DeviceIdentity {
    /// Creates a new device for `user_id`: fresh device id, signing key and device key,
    /// and a certificate signed by `user_key`, valid from `now` for `validity_ms`.
    pub fn create(
        user_key: &UserSigningKey,
        user_id: UserId,
        now: UnixMillis,
        validity_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, IdentityError> {
        let device_id = DeviceId::random(rng);
        Self::create_with_id(user_key, user_id, device_id, now, validity_ms, rng)
    }

    /// [`Self::create`] with a device id chosen by the caller. Apps use [`Self::create`]
    /// (a random id); this exists for tests and tools that must reproduce an id, such
    /// as a hostile directory forging a certificate for a device id it saw.
    pub fn create_with_id(
        user_key: &UserSigningKey,
        user_id: UserId,
        device_id: DeviceId,
        now: UnixMillis,
        validity_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, IdentityError> {
        if validity_ms == 0 {
            return Err(IdentityError::InvalidArgument(
                "validity_ms must be positive",
            ));
        }
        let signing = SigningKey::generate(rng);
        let device_key = p384::SecretKey::random(rng);
        // The public point from aws-lc (a fifth of RustCrypto's cost); the key is
        // then kept for the device's agreements.
        let computation = |_| IdentityError::KeyComputation { what: "device key" };
        let device_ecdh = EcdhKey::new(&device_key).map_err(computation)?;
        let device_public = device_ecdh.public_key().map_err(computation)?;
        let expires_at = now.saturating_add(validity_ms);
        let body = v1::DeviceCertificateBody {
            version: CERT.version,
            user_id: user_id.as_bytes().to_vec(),
            device_id: device_id.as_bytes().to_vec(),
            signing_public_key: signing.verifying_key().to_bytes().to_vec(),
            device_public_key: signed::p384_compressed(&device_public),
            created_at_ms: now.0,
            expires_at_ms: expires_at.0,
        }
        .encode_to_vec();
        let signature = signed::sign(user_key.signing_key(), CERT.domain, &body);
        let certificate = v1::DeviceCertificate { body, signature };
        let public = VerifiedDevice {
            user_id,
            device_id,
            signing_key: signing.verifying_key(),
            device_key: device_public,
            created_at: now,
            expires_at,
            certificate,
        };
        Ok(DeviceIdentity {
            signing,
            device_key,
            device_ecdh: OnceLock::from(device_ecdh),
            public,
        })
    }

    /// The device's secret keys, for the app to store encrypted at rest together with
    /// [`Self::certificate`]. Both zeroize on drop.
    #[must_use]
    pub fn export_secrets(&self) -> DeviceSecrets {
        let mut device_key = Zeroizing::new([0u8; 48]);
        device_key.copy_from_slice(&self.device_key.to_bytes());
        DeviceSecrets {
            signing_key: Zeroizing::new(self.signing.to_bytes()),
            device_key,
        }
    }

    /// Restores a device from its stored secrets and certificate. The certificate must
    /// verify for `user` at `now` and name exactly these keys.
    pub fn restore(
        secrets: &DeviceSecrets,
        certificate: &v1::DeviceCertificate,
        user: &UserIdentity,
        now: UnixMillis,
    ) -> Result<Self, IdentityError> {
        let public = VerifiedDevice::verify(certificate, user, now)?;
        let signing = SigningKey::from_bytes(&secrets.signing_key);
        let device_key =
            p384::SecretKey::from_slice(secrets.device_key.as_slice()).map_err(|_| {
                IdentityError::malformed(
                    "device secrets",
                    MalformedReason::InvalidKey {
                        key: "P-384 private key",
                    },
                )
            })?;
        if signing.verifying_key() != public.signing_key
            || device_key.public_key() != public.device_key
        {
            return Err(IdentityError::malformed(
                "device secrets",
                MalformedReason::KeysDoNotMatchCertificate,
            ));
        }
        Ok(DeviceIdentity {
            signing,
            device_key,
            device_ecdh: OnceLock::new(),
            public,
        })
    }

    /// The owning user.
    #[must_use]
    pub fn user_id(&self) -> UserId {
        self.public.user_id
    }

    /// This device's id.
    #[must_use]
    pub fn device_id(&self) -> DeviceId {
        self.public.device_id
    }

    /// The certificate to publish in the directory.
    #[must_use]
    pub fn certificate(&self) -> &v1::DeviceCertificate {
        &self.public.certificate
    }

    /// This device's public view.
    #[must_use]
    pub fn public(&self) -> &VerifiedDevice {
        &self.public
    }

    /// Proves possession of this device's signing key to a server: signs
    /// `"conclave.device-auth.v1" || u16be(len(tls_binding)) || tls_binding || challenge`,
    /// where `tls_binding` is keying material exported from the TLS session (RFC 5705),
    /// so the proof cannot be relayed to another connection.
    ///
    /// The device signing key signs nothing else than prekeys, containers and these
    /// proofs, each under its own domain separator, so no signature can be replayed as
    /// another kind.
    pub fn sign_auth_challenge(
        &self,
        tls_binding: &[u8],
        challenge: &[u8],
    ) -> Result<Signature, IdentityError> {
        Ok(self.signing.sign(&auth_message(tls_binding, challenge)?))
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The device key ready for agreements (made once, then kept).
    pub(crate) fn device_ecdh(&self) -> Result<&EcdhKey, ContainerError> {
        if let Some(key) = self.device_ecdh.get() {
            return Ok(key);
        }
        let key = EcdhKey::new(&self.device_key)?;
        Ok(self.device_ecdh.get_or_init(|| key))
    }
}

const AUTH_DOMAIN: &[u8] = b"conclave.device-auth.v1";
/// Longest TLS binding or challenge accepted by the device-auth proof, in bytes.
pub const MAX_AUTH_INPUT_LEN: usize = 256;

fn auth_message(tls_binding: &[u8], challenge: &[u8]) -> Result<Vec<u8>, IdentityError> {
    if tls_binding.len() > MAX_AUTH_INPUT_LEN || challenge.len() > MAX_AUTH_INPUT_LEN {
        return Err(IdentityError::InvalidArgument(
            "TLS binding and challenge must be at most 256 bytes each",
        ));
    }
    // Invariant: checked just above that the length fits in a u16.
    let binding_len = u16::try_from(tls_binding.len()).expect("at most 256 bytes");
    let mut msg = Vec::with_capacity(AUTH_DOMAIN.len() + 2 + tls_binding.len() + challenge.len());
    msg.extend_from_slice(AUTH_DOMAIN);
    msg.extend_from_slice(&binding_len.to_be_bytes());
    msg.extend_from_slice(tls_binding);
    msg.extend_from_slice(challenge);
    Ok(msg)
}

impl VerifiedDevice {
    /// Checks a device's answer to a server challenge (run by the server; see
    /// [`DeviceIdentity::sign_auth_challenge`]).
    pub fn verify_auth_challenge(
        &self,
        tls_binding: &[u8],
        challenge: &[u8],
        signature: &[u8],
    ) -> Result<(), IdentityError> {
        let what = "device auth proof";
        let signature = Signature::from_slice(signature).map_err(|_| {
            IdentityError::malformed(
                what,
                MalformedReason::FieldLength {
                    field: "signature",
                    expected: 64,
                },
            )
        })?;
        self.signing_key
            .verify_strict(&auth_message(tls_binding, challenge)?, &signature)
            .map_err(|_| IdentityError::BadSignature { what })
    }
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::time::DAY_MS;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    fn user(rng: &mut ChaCha20Rng, name: &str) -> (UserSigningKey, UserIdentity) {
        let key = UserSigningKey::generate(rng);
        let identity = UserIdentity {
            user_id: UserId::from_username(name).unwrap(),
            key: key.public_key(),
        };
        (key, identity)
    }

    #[test]
    fn issued_certificate_verifies_for_its_user() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (key, alice) = user(&mut rng, "alice");
        let device = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let verified = VerifiedDevice::verify(device.certificate(), &alice, NOW).unwrap();
        assert_eq!(verified.device_id(), device.device_id());
        assert_eq!(verified.device_key(), device.public().device_key());
    }

    #[test]
    fn certificate_signed_by_a_different_user_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (_alice_key, alice) = user(&mut rng, "alice");
        let (mallory_key, _) = user(&mut rng, "mallory");
        // Mallory issues a certificate claiming to be a device of Alice.
        let forged =
            DeviceIdentity::create(&mallory_key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let err = VerifiedDevice::verify(forged.certificate(), &alice, NOW).unwrap_err();
        assert!(matches!(err, IdentityError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn certificate_for_another_user_id_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (key, alice) = user(&mut rng, "alice");
        let bob_id = UserId::from_username("bob").unwrap();
        let device = DeviceIdentity::create(&key, bob_id, NOW, DAY_MS, &mut rng).unwrap();
        let err = VerifiedDevice::verify(device.certificate(), &alice, NOW).unwrap_err();
        assert!(matches!(err, IdentityError::WrongUser), "{err}");
    }

    #[test]
    fn expired_and_future_certificates_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (key, alice) = user(&mut rng, "alice");
        let device = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let later = NOW.saturating_add(DAY_MS);
        assert!(matches!(
            VerifiedDevice::verify(device.certificate(), &alice, later),
            Err(IdentityError::Expired { .. })
        ));
        let earlier = UnixMillis(NOW.0 - MAX_CLOCK_SKEW_MS - 1);
        assert!(matches!(
            VerifiedDevice::verify(device.certificate(), &alice, earlier),
            Err(IdentityError::NotYetValid { .. })
        ));
    }

    #[test]
    fn tampered_certificate_body_is_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (key, alice) = user(&mut rng, "alice");
        let device = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let mut cert = device.certificate().clone();
        if let Some(b) = cert.body.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            VerifiedDevice::verify(&cert, &alice, NOW),
            Err(IdentityError::BadSignature { .. })
        ));
    }

    #[test]
    fn auth_proof_is_bound_to_challenge_tls_session_and_device() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (key, alice) = user(&mut rng, "alice");
        let device = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let other = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let sig = device
            .sign_auth_challenge(b"tls-1", b"nonce")
            .unwrap()
            .to_bytes();
        let public = device.public();
        public
            .verify_auth_challenge(b"tls-1", b"nonce", &sig)
            .unwrap();
        for (tls, challenge) in [(&b"tls-2"[..], &b"nonce"[..]), (b"tls-1", b"other")] {
            assert!(matches!(
                public.verify_auth_challenge(tls, challenge, &sig),
                Err(IdentityError::BadSignature { .. })
            ));
        }
        // Moving bytes between binding and challenge changes the message.
        assert!(
            public
                .verify_auth_challenge(b"tls-1n", b"once", &sig)
                .is_err()
        );
        assert!(
            other
                .public()
                .verify_auth_challenge(b"tls-1", b"nonce", &sig)
                .is_err()
        );
        assert!(device.sign_auth_challenge(&[0; 257], b"x").is_err());
    }

    #[test]
    fn device_restores_from_exported_secrets_and_refuses_foreign_keys() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (key, alice) = user(&mut rng, "alice");
        let device = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let secrets = device.export_secrets();
        let restored =
            DeviceIdentity::restore(&secrets, device.certificate(), &alice, NOW).unwrap();
        assert_eq!(restored.device_id(), device.device_id());
        let sig = restored.sign_auth_challenge(b"t", b"c").unwrap().to_bytes();
        device
            .public()
            .verify_auth_challenge(b"t", b"c", &sig)
            .unwrap();
        // Another device's certificate does not match these secrets.
        let other = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        assert!(DeviceIdentity::restore(&secrets, other.certificate(), &alice, NOW).is_err());
        assert_eq!(format!("{secrets:?}"), "DeviceSecrets { .. }");
    }

    #[test]
    fn debug_output_contains_no_secret_key_bytes() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let (key, alice) = user(&mut rng, "alice");
        let device = DeviceIdentity::create(&key, alice.user_id, NOW, DAY_MS, &mut rng).unwrap();
        let dbg = format!("{device:?} {key:?}");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        for secret in [
            hex(device.signing.as_bytes()),
            hex(&device.device_key.to_bytes()),
            hex(key.to_secret_bytes().as_slice()),
        ] {
            assert!(!dbg.contains(&secret[..16]), "secret leaked in {dbg}");
        }
        let decimal = format!("{:?}", &device.signing.as_bytes()[..4]);
        assert!(!dbg.contains(decimal.trim_end_matches(']')), "{dbg}");
    }
}
