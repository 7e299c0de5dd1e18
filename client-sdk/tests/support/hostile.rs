//! The hostile server's tools: fabricated identities whose private keys the "server"
//! holds, rules that rewrite directory answers, and the check that matters: can any
//! container that passed through the server be opened with keys the server controls?

use std::sync::{Arc, Mutex};

use conclave_proto::Message as _;
use conclave_proto::v1::{self, response, server_frame};
use conclave_sdk::client::DeviceCredentials;
use conclave_sdk::container::{self, Recipient, ReplayCache, SealedContainer};
use conclave_sdk::identity::{
    DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey, VerifiedDevice, VerifiedPrekey,
};
use conclave_sdk::time::DAY_MS;
use conclave_sdk::{DeviceId, UserId};
use conclave_sfu::server::hooks::Adversary;
use rand_core::OsRng;

use super::{Sfu, User, now};

/// A user (or a device of a real user) fabricated by the server: it holds every
/// private key, so whatever is sealed to this device, the server reads.
pub struct Forged {
    pub user: UserIdentity,
    pub key: UserSigningKey,
    pub device: DeviceIdentity,
    pub pool: PrekeyPool,
}

impl Forged {
    /// A fabricated user `username` with one device (reusing `device_id` if given).
    pub fn user(username: &str, device_id: Option<DeviceId>) -> Self {
        Self::device_of(UserId::from_username(username).unwrap(), device_id)
    }

    /// A device certificate for `user_id`, signed by a key the server made up (for a
    /// real user it cannot verify under the user's pinned key).
    pub fn device_of(user_id: UserId, device_id: Option<DeviceId>) -> Self {
        let key = UserSigningKey::generate(&mut OsRng);
        let device_id = device_id.unwrap_or_else(|| DeviceId::random(&mut OsRng));
        let device =
            DeviceIdentity::create_with_id(&key, user_id, device_id, now(), DAY_MS, &mut OsRng)
                .unwrap();
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
            .unwrap()
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

pub fn shared(forged: Forged) -> Shared {
    Arc::new(Mutex::new(forged))
}

/// Whether any container the server saw opens with `forged`'s keys.
pub fn server_can_open(adversary: &Adversary, forged: &Shared, senders: &[UserIdentity]) -> bool {
    forged
        .lock()
        .unwrap()
        .opens_any(&adversary.containers(), senders)
}

/// A device of `credentials` registered over a raw control connection, to send
/// requests the SDK never would (an attacker's client).
pub async fn raw_device(
    sfu: &Sfu,
    credentials: &DeviceCredentials,
) -> conclave_sdk::transport::ControlConnection {
    use conclave_proto::v1::client_frame::Request;
    let (conn, _events) = conclave_sdk::transport::ControlConnection::connect_trusting(
        sfu.addr,
        "localhost",
        &sfu.trust,
    )
    .await
    .unwrap();
    let response::Result::Hello(hello) = conn
        .request(Request::Hello(v1::Hello {
            protocol_version: conclave_proto::frame::CONTROL_PROTOCOL_VERSION,
        }))
        .await
        .unwrap()
    else {
        panic!("expected HelloOk");
    };
    let proof = credentials
        .device()
        .sign_auth_challenge(conn.tls_binding(), &hello.challenge)
        .unwrap();
    conn.request(Request::Register(v1::Register {
        user_public_key: credentials.user_public_key().to_bytes().to_vec(),
        certificate: Some(credentials.certificate().clone()),
        auth_signature: proof.to_bytes().to_vec(),
    }))
    .await
    .unwrap();
    conn
}

/// Seals `payload` from `sender` to `device` of `user` with a prekey taken straight from
/// the server's store, and pushes it to the device as a mailbox delivery.
pub fn deliver_forged(
    sfu: &Sfu,
    sender: &DeviceCredentials,
    user: &User,
    device: DeviceId,
    payload: &v1::ContainerPayload,
) {
    let id = *device.as_bytes();
    let record = sfu.store.device(&id).unwrap().unwrap();
    let cert = v1::DeviceCertificate::decode(record.certificate.as_slice()).unwrap();
    let verified = VerifiedDevice::verify(&cert, &user.identity(), now()).unwrap();
    let taken = sfu.store.take_prekeys(&[id], now().0).unwrap().remove(0);
    let prekey = v1::SignedPrekey::decode(taken.prekey.unwrap().signed.as_slice()).unwrap();
    let prekey = VerifiedPrekey::verify(&prekey, &verified, now()).unwrap();
    let recipient = Recipient::new(verified, prekey).unwrap();
    let sealed = container::seal(
        sender.device(),
        &[recipient],
        payload,
        now(),
        60_000,
        &mut OsRng,
    )
    .unwrap();
    assert!(sfu.adversary().inject(
        &id,
        v1::event::Event::Mailbox(v1::MailboxDelivery {
            mailbox_id: u64::MAX - 1,
            container: sealed,
            stored_at_ms: now().0,
        }),
    ));
}
