//! The hostile server's tools: fabricated identities whose private keys the "server"
//! holds, rules that rewrite directory answers, and the check that matters: can any
//! container that passed through the server be opened with keys the server controls?

use std::sync::{Arc, Mutex};

use conclave_core::container::{self, Recipient, ReplayCache, SealedContainer};
use conclave_core::identity::{
    DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey, VerifiedDevice, VerifiedPrekey,
};
use conclave_core::time::DAY_MS;
use conclave_core::{DeviceId, UserId};
use conclave_proto::Message as _;
use conclave_proto::v1::{self, response, server_frame};
use conclave_sdk::client::DeviceCredentials;
use conclave_sfu::server::hooks::Adversary;
use rand_core::OsRng;

use crate::clock::now;
use crate::identity::User;
use crate::protocol::TestClient;
use crate::sfu::TestSfu;

/// A user (or a device of a real user) fabricated by the server: it holds every
/// private key, so whatever is sealed to this device, the server reads.
pub struct Forged {
    /// The identity the server presents for the user.
    pub user: UserIdentity,
    /// The fabricated user signing key.
    pub key: UserSigningKey,
    /// The fabricated device.
    pub device: DeviceIdentity,
    /// The device's prekeys, private halves included.
    pub pool: PrekeyPool,
}

impl Forged {
    /// A fabricated user `username` with one device (reusing `device_id` if given).
    pub fn user(username: &str, device_id: Option<DeviceId>) -> Self {
        let user_id = UserId::from_username(username).expect("a valid username");
        Self::device_of(user_id, device_id)
    }

    /// A device certificate for `user_id`, signed by a key the server made up (for a
    /// real user it cannot verify under the user's pinned key).
    pub fn device_of(user_id: UserId, device_id: Option<DeviceId>) -> Self {
        let key = UserSigningKey::generate(&mut OsRng);
        let device_id = device_id.unwrap_or_else(|| DeviceId::random(&mut OsRng));
        let device =
            DeviceIdentity::create_with_id(&key, user_id, device_id, now(), DAY_MS, &mut OsRng)
                .expect("device creation");
        let pool = PrekeyPool::new(&device);
        Forged {
            user: UserIdentity {
                user_id,
                key: key.public_key(),
            },
            key,
            device,
            pool,
        }
    }

    /// A directory entry for this device with a fresh prekey.
    pub fn device_bundle(&mut self) -> v1::DeviceBundle {
        let prekey = self
            .pool
            .generate(&self.device, 1, now(), DAY_MS, &mut OsRng)
            .expect("prekey generation")
            .remove(0);
        v1::DeviceBundle {
            certificate: Some(self.device.certificate().clone()),
            prekey: Some(prekey),
            prekeys_exhausted: false,
            ..Default::default()
        }
    }

    /// A whole user bundle under the fabricated key.
    pub fn user_bundle(&mut self) -> v1::UserBundle {
        v1::UserBundle {
            user_id: self.user.user_id.as_bytes().to_vec(),
            user_public_key: self.user.key.to_bytes().to_vec(),
            devices: vec![self.device_bundle()],
        }
    }

    /// Whether any of `containers` opens with this device's keys, given the identities
    /// of the honest senders (the containers' signatures verify under them). `true`
    /// means the server learned what was sealed, e.g. a meeting key.
    pub fn opens_any(
        &mut self,
        containers: &[([u8; 16], Vec<u8>)],
        senders: &[UserIdentity],
    ) -> bool {
        let mut replay = ReplayCache::new(10_000);
        containers.iter().any(|(_, bytes)| {
            let Ok(sealed) = SealedContainer::decode(bytes) else {
                return false;
            };
            let Some(sender) = senders
                .iter()
                .find(|u| u.user_id == sealed.claimed_sender())
            else {
                return false;
            };
            sealed
                .open(sender, &self.device, &mut self.pool, &mut replay, now())
                .is_ok()
        })
    }
}

/// Rewrites every directory answer (`Bundles`) the server writes to device `to`.
pub fn rewrite_bundles(
    adversary: &Adversary,
    to: DeviceId,
    rewrite: impl Fn(&mut v1::Bundles) + Send + Sync + 'static,
) {
    let to = *to.as_bytes();
    adversary.on_frames(Box::new(move |device, frame| {
        if device != Some(to) {
            return true;
        }
        if let Some(server_frame::Kind::Response(v1::Response {
            result: Some(response::Result::Bundles(bundles)),
            ..
        })) = &mut frame.kind
        {
            rewrite(bundles);
        }
        true
    }));
}

/// A forged identity shared between a rewrite rule and the test's final check.
pub type Shared = Arc<Mutex<Forged>>;

/// Shares `forged` between a rewrite rule and the test.
pub fn shared(forged: Forged) -> Shared {
    Arc::new(Mutex::new(forged))
}

/// Whether any container the server saw opens with `forged`'s keys.
pub fn server_can_open(adversary: &Adversary, forged: &Shared, senders: &[UserIdentity]) -> bool {
    forged
        .lock()
        .expect("unpoisoned")
        .opens_any(&adversary.containers(), senders)
}

/// A device of `credentials` registered over a protocol client, to send requests the
/// SDK never would (an attacker's client).
pub async fn raw_device(sfu: &TestSfu, credentials: &DeviceCredentials) -> TestClient {
    let client = TestClient::connect(sfu).await;
    client
        .register_key(&credentials.user_public_key(), credentials.device())
        .await
        .expect("Register");
    client
}

/// Seals `payload` from `sender` to `device` of `user` with a prekey taken straight from
/// the server's store, and pushes it to the device as a mailbox delivery.
pub fn deliver_forged(
    sfu: &TestSfu,
    sender: &DeviceCredentials,
    user: &User,
    device: DeviceId,
    payload: &v1::ContainerPayload,
) {
    deliver_sealed_by(sfu, sender.device(), user, device, payload);
}

/// [`deliver_forged`] from any device identity, e.g. a [`Forged`] one whose
/// certificate its claimed user never signed.
pub fn deliver_sealed_by(
    sfu: &TestSfu,
    sender: &DeviceIdentity,
    user: &User,
    device: DeviceId,
    payload: &v1::ContainerPayload,
) {
    let id = *device.as_bytes();
    let record = sfu
        .store
        .device(&id)
        .expect("a store lookup")
        .expect("a registered device");
    let cert =
        v1::DeviceCertificate::decode(record.certificate.as_slice()).expect("a stored certificate");
    let verified = VerifiedDevice::verify(&cert, &user.identity, now()).expect("it verifies");
    let taken = sfu
        .store
        .take_prekeys(&[id], now().0)
        .expect("a store pop")
        .remove(0);
    let signed = taken.prekey.expect("a stored prekey").signed;
    let prekey = v1::SignedPrekey::decode(signed.as_slice()).expect("a stored prekey");
    let prekey = VerifiedPrekey::verify(&prekey, &verified, now()).expect("it verifies");
    let recipient = Recipient::new(verified, prekey).expect("a recipient");
    let sealed =
        container::seal(sender, &[recipient], payload, now(), 60_000, &mut OsRng).expect("seal");
    assert!(sfu.adversary().inject(
        &id,
        v1::event::Event::Mailbox(v1::MailboxDelivery {
            mailbox_id: u64::MAX - 1,
            container: sealed.into(),
            stored_at_ms: now().0,
        }),
    ));
}
