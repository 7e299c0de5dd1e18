//! Directory, prekeys and mailbox for the protocol client, and the sender's and
//! receiver's side of a text container with the crypto core.

use conclave_core::DeviceId;
use conclave_core::container::{self, ContainerError, Recipient, ReplayCache, SealedContainer};
use conclave_core::identity::{
    DeviceIdentity, PrekeyPool, UserIdentity, VerifiedDevice, VerifiedPrekey,
};
use conclave_core::time::DAY_MS;
use conclave_proto::Message as _;
use conclave_proto::v1::{self, client_frame::Request, response};
use conclave_sdk::transport::TransportError;
use rand_core::{OsRng, RngCore as _};

use super::TestClient;
use crate::clock::now;
use crate::fixtures::containers::text_payload;
use crate::identity::{User, fresh_prekeys};

impl TestClient {
    /// Uploads `count` fresh prekeys of `device` (kept in `pool`); returns how many
    /// the server now holds.
    pub async fn upload_prekeys(
        &self,
        device: &DeviceIdentity,
        pool: &mut PrekeyPool,
        count: usize,
    ) -> Result<u32, TransportError> {
        match self
            .request(Request::UploadPrekeys(v1::UploadPrekeys {
                prekeys: fresh_prekeys(device, pool, count),
                replace: false,
                last_resort: None,
            }))
            .await?
        {
            response::Result::PrekeysUploaded(r) => Ok(r.prekeys_held),
            other => panic!("expected PrekeysUploaded, got {other:?}"),
        }
    }

    /// Fetches the directory bundles of `users`.
    pub async fn fetch_bundles(&self, users: &[&User]) -> Result<v1::Bundles, TransportError> {
        match self
            .request(Request::FetchBundles(v1::FetchBundles {
                user_ids: users
                    .iter()
                    .map(|u| u.identity.user_id.as_bytes().to_vec())
                    .collect(),
                ..Default::default()
            }))
            .await?
        {
            response::Result::Bundles(b) => Ok(b),
            other => panic!("expected Bundles, got {other:?}"),
        }
    }

    /// Sends a serialized container to the listed device ids.
    pub async fn send_container(
        &self,
        recipients: &[Vec<u8>],
        container: Vec<u8>,
    ) -> Result<v1::ContainerSent, TransportError> {
        match self
            .request(Request::SendContainer(v1::SendContainer {
                recipient_device_ids: recipients.to_vec(),
                container,
                ..Default::default()
            }))
            .await?
        {
            response::Result::ContainerSent(s) => Ok(s),
            other => panic!("expected ContainerSent, got {other:?}"),
        }
    }

    /// Acknowledges mailbox entries; returns how many the server deleted.
    pub async fn ack(&self, mailbox_ids: &[u64]) -> Result<u32, TransportError> {
        match self
            .request(Request::AckContainers(v1::AckContainers {
                mailbox_ids: mailbox_ids.to_vec(),
                handled_bytes: 0,
            }))
            .await?
        {
            response::Result::ContainersAcked(a) => Ok(a.deleted),
            other => panic!("expected ContainersAcked, got {other:?}"),
        }
    }

    /// Waits for the next mailbox delivery; other events are passed over.
    pub async fn mailbox_delivery(&mut self) -> v1::MailboxDelivery {
        self.event(|e| match e {
            v1::event::Event::Mailbox(m) => Some(m),
            _ => None,
        })
        .await
    }
}

/// The mailbox deliveries among `events` (e.g. [`TestClient::received_events`]).
pub fn mailbox_events(events: Vec<v1::event::Event>) -> Vec<v1::MailboxDelivery> {
    events
        .into_iter()
        .filter_map(|e| match e {
            v1::event::Event::Mailbox(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// What a sending client does with fetched bundles: checks that each user's bundle
/// carries the trusted (pinned) user key, verifies every device certificate against
/// it and every prekey against its certificate, and pairs them as recipients. Panics
/// if a bundle does not verify or a device has no prekey.
pub fn recipients_from(bundles: &v1::Bundles, users: &[&User]) -> Vec<Recipient> {
    let now = now();
    let mut out = Vec::new();
    for user in users {
        let bundle = bundles
            .users
            .iter()
            .find(|b| b.user_id.as_slice() == user.identity.user_id.as_bytes())
            .unwrap_or_else(|| panic!("no bundle for {}", user.name));
        assert_eq!(
            bundle.user_public_key,
            user.identity.key.to_bytes().to_vec(),
            "the directory returns the pinned user key of {}",
            user.name
        );
        for device in &bundle.devices {
            let certificate = device.certificate.as_ref().expect("a certificate");
            let verified = VerifiedDevice::verify(certificate, &user.identity, now)
                .expect("device certificate verifies against the trusted user key");
            let prekey = device
                .prekey
                .as_ref()
                .unwrap_or_else(|| panic!("{} has a device without prekeys", user.name));
            let prekey = VerifiedPrekey::verify(prekey, &verified, now)
                .expect("prekey verifies against the device certificate");
            out.push(Recipient::new(verified, prekey).expect("a recipient"));
        }
    }
    out
}

/// Seals a text message from `sender` to `recipients` with the crypto core.
pub fn seal_text(
    sender: &DeviceIdentity,
    recipients: &[Recipient],
    text: &str,
    ttl_ms: u64,
) -> Vec<u8> {
    container::seal(
        sender,
        recipients,
        &text_payload(text),
        now(),
        ttl_ms,
        &mut OsRng,
    )
    .expect("seal")
}

/// Opens a container from `sender` addressed to `me` and returns its text and the
/// sending device (panics if the payload is not text).
pub fn open_text(
    container: &[u8],
    sender: &UserIdentity,
    me: &DeviceIdentity,
    pool: &mut PrekeyPool,
    replay: &mut ReplayCache,
) -> Result<(String, DeviceId), ContainerError> {
    let opened = SealedContainer::decode(container)?.open(sender, me, pool, replay, now())?;
    match &opened.payload().body {
        Some(v1::container_payload::Body::Text(t)) => {
            Ok((t.text.clone(), opened.sender().device_id()))
        }
        other => panic!("expected a text payload, got {other:?}"),
    }
}

/// The delivery status the server reported for `device`.
pub fn status_for(sent: &v1::ContainerSent, device: &[u8]) -> v1::DeliveryStatus {
    let result = sent
        .results
        .iter()
        .find(|r| r.device_id == device)
        .expect("a result for every recipient");
    v1::DeliveryStatus::try_from(result.status).expect("a known status")
}

/// A container the server accepts from `sender` (a well-formed header naming the
/// sending device, a day's ttl) whose ciphertext is `len`-ish bytes of garbage: what an
/// attacker stores, since the server cannot check the ciphertext. At most `len` bytes
/// serialized, and within a few bytes of it.
pub fn junk_container(sender: &DeviceIdentity, len: usize) -> Vec<u8> {
    let mut container_id = vec![0u8; 16];
    OsRng.fill_bytes(&mut container_id);
    let header = v1::ContainerHeader {
        version: 1,
        container_id,
        sender_user_id: sender.user_id().as_bytes().to_vec(),
        sender_device_id: sender.device_id().as_bytes().to_vec(),
        created_at_ms: now().0,
        ttl_ms: DAY_MS,
        ..Default::default()
    }
    .encode_to_vec();
    let mut container = v1::Container {
        header,
        ciphertext: Vec::new(),
        signature: vec![0; 64],
        sender_certificate: None,
    };
    // The ciphertext fills the rest; its length prefix grows with it, so trim once
    // more if that took the container over `len`.
    let mut ciphertext = len.saturating_sub(container.encoded_len() + 4);
    container.ciphertext = vec![0x5a; ciphertext];
    while container.encoded_len() > len && ciphertext > 0 {
        ciphertext -= (container.encoded_len() - len).min(ciphertext);
        container.ciphertext = vec![0x5a; ciphertext];
    }
    container.encode_to_vec()
}
