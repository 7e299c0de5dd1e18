//! Genuinely sealed containers between seeded parties, and the signing helpers that
//! play a dishonest sender or a compromised key, for tests and fuzz targets that
//! mutate containers and check that opening refuses every edit.

use conclave_proto::Message as _;
use conclave_proto::v1::{self, container_payload::Body};
use ed25519_dalek::Signer as _;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::NOW;
use super::identity::{SeededDevice, recipient, seeded_device, seeded_prekeys};
use crate::container::seal;
use crate::identity::{DeviceIdentity, PrekeyPool, UserSigningKey};
use crate::time::DAY_MS;

/// Signature domain of containers, as specified in `proto/conclave/v1/*.proto`.
pub const CONTAINER_DOMAIN: &[u8] = b"conclave.container.v1";
/// Signature domain of device certificates.
pub const CERT_DOMAIN: &[u8] = b"conclave.device-cert.v1";
/// Signature domain of signed prekeys.
pub const PREKEY_DOMAIN: &[u8] = b"conclave.prekey.v1";

/// Time to live of the sealed containers.
pub const TTL_MS: u64 = DAY_MS;

// Seeds: every party is rebuilt identically from its own stream.
const SENDER_SEED: u64 = 1;
const RECIPIENT_SEED: u64 = 2;
const RECIPIENT_PREKEY_SEED: u64 = 3;
const DECOY_SEED: u64 = 4;
const SEAL_SEED: u64 = 5;
/// Seed offset of prekeys whose private halves nobody keeps.
const SPARE: u64 = 100;

/// The three seeded parties: "alice" sends, "bob" (`me`) opens, "carol" is a decoy
/// recipient whose entry `me` must skip.
pub struct Parties {
    /// The sender.
    pub sender: SeededDevice,
    /// The recipient that opens containers.
    pub me: SeededDevice,
    /// Another recipient of the genuine container.
    pub decoy: SeededDevice,
}

impl Parties {
    /// Builds the parties from their fixed seeds.
    pub fn new() -> Self {
        Parties {
            sender: seeded_device(SENDER_SEED, "alice"),
            me: seeded_device(RECIPIENT_SEED, "bob"),
            decoy: seeded_device(DECOY_SEED, "carol"),
        }
    }

    /// `me`'s prekey pool as it was published: exactly the one prekey that the genuine
    /// container is sealed to. An open consumes it; call this again to get it back.
    pub fn my_prekeys(&self) -> PrekeyPool {
        seeded_prekeys(&self.me.device, RECIPIENT_PREKEY_SEED, 1).0
    }

    /// Seals `payload` from the sender to `me` and the decoy (the genuine container),
    /// and `donor_payload` from the sender to `me` under another prekey (the donor for
    /// splices).
    pub fn seal(self, payload: v1::ContainerPayload, donor_text: &str) -> SealedContainers {
        let (_, published) = seeded_prekeys(&self.me.device, RECIPIENT_PREKEY_SEED, 1);
        let (_, spare) = seeded_prekeys(&self.me.device, RECIPIENT_PREKEY_SEED + SPARE, 2);
        let (_, decoy_prekeys) = seeded_prekeys(&self.decoy.device, DECOY_SEED + SPARE, 1);
        let mut rng = ChaCha20Rng::seed_from_u64(SEAL_SEED);
        let genuine = seal(
            &self.sender.device,
            &[
                recipient(&self.me.user, &self.me.device, &published[0]),
                recipient(&self.decoy.user, &self.decoy.device, &decoy_prekeys[0]),
            ],
            &payload,
            NOW,
            TTL_MS,
            &mut rng,
        )
        .expect("seal");
        let donor = seal(
            &self.sender.device,
            &[recipient(&self.me.user, &self.me.device, &spare[1])],
            &text_payload(donor_text),
            NOW,
            TTL_MS,
            &mut rng,
        )
        .expect("seal");
        let my_prekey = published[0].clone();
        SealedContainers {
            parties: self,
            payload,
            genuine,
            donor,
            my_prekey,
        }
    }
}

impl Default for Parties {
    fn default() -> Self {
        Self::new()
    }
}

/// Two containers genuinely sealed by [`Parties::seal`].
pub struct SealedContainers {
    /// Who sealed them and to whom.
    pub parties: Parties,
    /// The genuine container's plaintext.
    pub payload: v1::ContainerPayload,
    /// Sealed to `me` (its one published prekey) and to the decoy.
    pub genuine: Vec<u8>,
    /// Sealed to `me` under another prekey, with another plaintext.
    pub donor: Vec<u8>,
    /// `me`'s published prekey that `genuine` is sealed to.
    pub my_prekey: v1::SignedPrekey,
}

impl SealedContainers {
    /// The genuine container, decoded.
    pub fn genuine_wire(&self) -> v1::Container {
        v1::Container::decode(self.genuine.as_slice()).expect("own container")
    }

    /// The donor container, decoded.
    pub fn donor_wire(&self) -> v1::Container {
        v1::Container::decode(self.donor.as_slice()).expect("own container")
    }
}

/// A payload carrying a text message.
pub fn text_payload(text: &str) -> v1::ContainerPayload {
    v1::ContainerPayload {
        body: Some(Body::Text(v1::TextMessage { text: text.into() })),
        ..Default::default()
    }
}

/// The device's signing key, from its exported secrets: a test that plays the
/// device's owner (or a dishonest sender) signs whatever it likes with it.
pub fn device_signing_key(device: &DeviceIdentity) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&device.export_secrets().signing_key)
}

/// Re-signs a container as `sender` (a dishonest sender, or one whose device key
/// leaked): the signature over `domain || u32be(len(header)) || header || ciphertext`.
pub fn resign_container(sender: &DeviceIdentity, wire: &mut v1::Container) {
    let header_len = u32::try_from(wire.header.len()).unwrap_or(u32::MAX);
    let mut msg =
        Vec::with_capacity(CONTAINER_DOMAIN.len() + 4 + wire.header.len() + wire.ciphertext.len());
    msg.extend_from_slice(CONTAINER_DOMAIN);
    msg.extend_from_slice(&header_len.to_be_bytes());
    msg.extend_from_slice(&wire.header);
    msg.extend_from_slice(&wire.ciphertext);
    wire.signature = device_signing_key(sender).sign(&msg).to_bytes().to_vec();
}

/// Re-signs a device certificate with `user_key`.
pub fn resign_certificate(user_key: &UserSigningKey, cert: &mut v1::DeviceCertificate) {
    let key = ed25519_dalek::SigningKey::from_bytes(&user_key.to_secret_bytes());
    let mut msg = CERT_DOMAIN.to_vec();
    msg.extend_from_slice(&cert.body);
    cert.signature = key.sign(&msg).to_bytes().to_vec();
}

/// Signs a prekey body with `device`'s signing key.
pub fn sign_prekey_body(device: &DeviceIdentity, body: Vec<u8>) -> v1::SignedPrekey {
    let mut msg = PREKEY_DOMAIN.to_vec();
    msg.extend_from_slice(&body);
    let signature = device_signing_key(device).sign(&msg).to_bytes().to_vec();
    v1::SignedPrekey { body, signature }
}
