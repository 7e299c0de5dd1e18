//! Shared helpers for the SFU integration tests: a real server on 127.0.0.1:0 and real
//! QUIC clients built on the SDK's transport and crypto core.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use conclave_proto::datagram::{DatagramHeader, MediaKind};
use conclave_proto::v1::{self, client_frame::Request, response};
use conclave_sdk::identity::{
    DEFAULT_PREKEY_TTL_MS, DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey,
};
use conclave_sdk::meeting::{MeetingId, MeetingKey, RoomAuthKey, RoutingId};
use conclave_sdk::time::DAY_MS;
use conclave_sdk::transport::{ControlConnection, EventStream, ServerTrust, TransportError};
use conclave_sdk::{UnixMillis, UserId};
use conclave_sfu::config::Config;
use conclave_sfu::embedded::EmbeddedSfu;
use conclave_sfu::store::{MemoryStore, Store};
use rand_core::{OsRng, RngCore};

pub mod raw;

/// Upper bound for anything a test waits for; tests never assert on timing.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn now() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

/// A config suitable for tests: fast sweeps and grace windows, no metrics listener.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.metrics_listen = None;
    config.timing.rotation_grace_ms = 500;
    config.timing.sweep_interval_secs = 1;
    config
}

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub trust: ServerTrust,
    pub store: Arc<dyn Store>,
    server: Option<EmbeddedSfu>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_config(), Arc::new(MemoryStore::new())).await
    }

    pub async fn start_with(config: Config, store: Arc<dyn Store>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = conclave_sfu::tls::load_or_generate_dev(dir.path()).unwrap();
        let server = EmbeddedSfu::start(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            config,
            Arc::clone(&store),
        )
        .unwrap();
        TestServer {
            addr: server.addr(),
            trust: ServerTrust::PinnedSha256(server.fingerprint_sha256()),
            store,
            server: Some(server),
            _dir: dir,
        }
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), conclave_sfu::SfuError> {
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), server.stop())
            .await
            .expect("server stops in bounded time")
    }
}

/// A user with one or more devices (the crypto identities only).
pub struct TestUser {
    pub username: String,
    pub key: UserSigningKey,
    pub identity: UserIdentity,
}

impl TestUser {
    pub fn new(username: &str) -> Self {
        let key = UserSigningKey::generate(&mut OsRng);
        let identity = UserIdentity {
            user_id: UserId::from_username(username).unwrap(),
            key: key.public_key(),
        };
        TestUser {
            username: username.to_string(),
            key,
            identity,
        }
    }

    pub fn device(&self) -> DeviceIdentity {
        DeviceIdentity::create(
            &self.key,
            self.identity.user_id,
            now(),
            365 * DAY_MS,
            &mut OsRng,
        )
        .unwrap()
    }
}

/// A connected client.
pub struct TestClient {
    pub conn: ControlConnection,
    pub events: EventStream,
    pub challenge: Vec<u8>,
    /// The device this connection registered or authenticated as.
    pub device: std::sync::Mutex<Option<Vec<u8>>>,
}

impl TestClient {
    /// Connects and sends Hello.
    pub async fn connect(server: &TestServer) -> Self {
        Self::connect_to(server.addr, &server.trust).await
    }

    pub async fn connect_to(addr: SocketAddr, trust: &ServerTrust) -> Self {
        let config = conclave_sdk::transport::client_config(trust).unwrap();
        let (conn, events) =
            tokio::time::timeout(WAIT, ControlConnection::connect(addr, "localhost", config))
                .await
                .expect("connect in bounded time")
                .expect("connect");
        let hello = conn
            .request(Request::Hello(v1::Hello {
                protocol_version: 1,
            }))
            .await
            .unwrap();
        let response::Result::Hello(hello) = hello else {
            panic!("expected HelloOk, got {hello:?}");
        };
        TestClient {
            conn,
            events,
            challenge: hello.challenge,
            device: std::sync::Mutex::new(None),
        }
    }

    pub async fn request(&self, r: Request) -> Result<response::Result, TransportError> {
        tokio::time::timeout(WAIT, self.conn.request(r))
            .await
            .expect("response in bounded time")
    }

    pub fn auth_signature(&self, device: &DeviceIdentity) -> Vec<u8> {
        device
            .sign_auth_challenge(self.conn.tls_binding(), &self.challenge)
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    pub async fn register(
        &self,
        user: &TestUser,
        device: &DeviceIdentity,
    ) -> Result<v1::Registered, TransportError> {
        *self.device.lock().unwrap() = Some(device.device_id().as_bytes().to_vec());
        let r = self
            .request(Request::Register(v1::Register {
                user_public_key: user.identity.key.to_bytes().to_vec(),
                certificate: Some(device.certificate().clone()),
                auth_signature: self.auth_signature(device),
            }))
            .await?;
        match r {
            response::Result::Registered(r) => Ok(r),
            other => panic!("expected Registered, got {other:?}"),
        }
    }

    pub async fn authenticate(
        &self,
        device: &DeviceIdentity,
    ) -> Result<v1::Authenticated, TransportError> {
        *self.device.lock().unwrap() = Some(device.device_id().as_bytes().to_vec());
        let r = self
            .request(Request::Authenticate(v1::Authenticate {
                device_id: device.device_id().as_bytes().to_vec(),
                auth_signature: self.auth_signature(device),
            }))
            .await?;
        match r {
            response::Result::Authenticated(r) => Ok(r),
            other => panic!("expected Authenticated, got {other:?}"),
        }
    }

    /// Connects and registers a fresh device of `user`.
    pub async fn registered(server: &TestServer, user: &TestUser) -> (Self, DeviceIdentity) {
        let client = Self::connect(server).await;
        let device = user.device();
        client.register(user, &device).await.unwrap();
        (client, device)
    }

    pub async fn upload_prekeys(
        &self,
        device: &DeviceIdentity,
        pool: &mut PrekeyPool,
        count: usize,
    ) -> Result<u32, TransportError> {
        let prekeys = pool
            .generate(device, count, now(), DEFAULT_PREKEY_TTL_MS, &mut OsRng)
            .unwrap();
        match self
            .request(Request::UploadPrekeys(v1::UploadPrekeys {
                prekeys,
                replace: false,
                last_resort: None,
            }))
            .await?
        {
            response::Result::PrekeysUploaded(r) => Ok(r.prekeys_held),
            other => panic!("expected PrekeysUploaded, got {other:?}"),
        }
    }

    pub async fn fetch_bundles(&self, users: &[&TestUser]) -> Result<v1::Bundles, TransportError> {
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

    /// Waits for the first event matching `pick`, skipping others.
    pub async fn event<T>(&mut self, mut pick: impl FnMut(v1::event::Event) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let e = self.events.recv().await.expect("event stream open");
                if let Some(t) = pick(e) {
                    return t;
                }
            }
        })
        .await
        .expect("expected event within the wait bound")
    }

    /// This connection's join proof for `key`'s epoch.
    pub fn join_signature(&self, key: &RoomAuthKey) -> Vec<u8> {
        key.sign_join(self.conn.tls_binding(), &self.challenge)
            .unwrap()
            .to_vec()
    }

    async fn room_request(&self, r: Request) -> Result<v1::RoomJoined, TransportError> {
        match self.request(r).await? {
            response::Result::RoomJoined(j) => Ok(j),
            other => panic!("expected RoomJoined, got {other:?}"),
        }
    }

    /// This connection's device id (after register or authenticate).
    pub fn device_id(&self) -> Vec<u8> {
        self.device.lock().unwrap().clone().expect("registered")
    }

    /// Opens (or joins) a room with `key`; this device alone may rotate it.
    pub async fn open_room(
        &self,
        key: &RoomAuthKey,
        routing: &RoutingId,
    ) -> Result<v1::RoomJoined, TransportError> {
        self.open_room_listing(key, routing, Vec::new()).await
    }

    /// Opens (or joins) a room with `key`, listing the devices that may rotate it.
    pub async fn open_room_listing(
        &self,
        key: &RoomAuthKey,
        routing: &RoutingId,
        leaders: Vec<Vec<u8>>,
    ) -> Result<v1::RoomJoined, TransportError> {
        self.room_request(Request::OpenRoom(v1::OpenRoom {
            routing_id: routing.as_bytes().to_vec(),
            epoch: key.epoch(),
            room_auth_public_key: key.public().to_bytes().to_vec(),
            join_signature: self.join_signature(key),
            leader_device_ids: leaders,
        }))
        .await
    }

    pub async fn join_room(
        &self,
        key: &RoomAuthKey,
        routing: &RoutingId,
    ) -> Result<v1::RoomJoined, TransportError> {
        self.room_request(Request::JoinRoom(v1::JoinRoom {
            routing_id: routing.as_bytes().to_vec(),
            epoch: key.epoch(),
            join_signature: self.join_signature(key),
        }))
        .await
    }

    pub async fn rotate_room(
        &self,
        current: &RoomAuthKey,
        next: &RoomAuthKey,
        routing: &RoutingId,
    ) -> Result<u64, TransportError> {
        let rotation = current.sign_rotation(next).unwrap();
        let join = next
            .sign_join(self.conn.tls_binding(), &self.challenge)
            .unwrap();
        match self
            .request(Request::RotateRoom(v1::RotateRoom {
                routing_id: routing.as_bytes().to_vec(),
                next_epoch: next.epoch(),
                next_room_auth_public_key: next.public().to_bytes().to_vec(),
                rotation_signature: rotation.to_vec(),
                join_signature: join.to_vec(),
                next_leader_device_ids: Vec::new(),
            }))
            .await?
        {
            response::Result::RoomRotated(r) => Ok(r.epoch),
            other => panic!("expected RoomRotated, got {other:?}"),
        }
    }

    /// Sends a media datagram with `payload` in room `handle`, claiming `slot`.
    pub fn send_media(&self, handle: u32, slot: u16, kind: MediaKind, frame: u32, payload: &[u8]) {
        let header = DatagramHeader {
            room_handle: handle,
            sender_slot: slot,
            media_kind: kind,
            keyframe: false,
            frame_number: frame,
            fragment_index: 0,
            fragment_count: 1,
        };
        let mut d = header.encode().unwrap().to_vec();
        d.extend_from_slice(payload);
        self.conn.send_datagram(Bytes::from(d)).unwrap();
    }

    /// Receives a datagram within `within`, or `None`.
    pub async fn recv_media(&self, within: Duration) -> Option<(DatagramHeader, Vec<u8>)> {
        let d = tokio::time::timeout(within, self.conn.read_datagram())
            .await
            .ok()?
            .ok()?;
        let (h, p) = DatagramHeader::decode(&d).unwrap();
        Some((h, p.to_vec()))
    }
}

/// A meeting's room keys (the crypto core's derivation; no invites needed here).
pub struct TestRoom {
    pub routing: RoutingId,
    pub key: MeetingKey,
}

impl TestRoom {
    pub fn new() -> Self {
        let meeting = MeetingId::generate(
            &UserId::from_username("room-owner").unwrap(),
            &conclave_sdk::DeviceId::random(&mut OsRng),
            now(),
            2,
            &mut OsRng,
        );
        TestRoom {
            routing: meeting.routing_id(),
            key: MeetingKey::generate(1, &mut OsRng),
        }
    }

    pub fn auth(&self) -> RoomAuthKey {
        self.key.room_auth_key(&self.routing)
    }

    /// Moves to a fresh key at the next epoch; returns the old auth key.
    pub fn rekey(&mut self) -> RoomAuthKey {
        let old = self.auth();
        self.key = MeetingKey::generate(self.key.epoch() + 1, &mut OsRng);
        old
    }
}

// ----- Directory and mailbox helpers ---------------------------------------------

/// A TextMessage payload.
pub fn text_payload(text: &str) -> v1::ContainerPayload {
    v1::ContainerPayload {
        body: Some(v1::container_payload::Body::Text(v1::TextMessage {
            text: text.to_string(),
        })),
        ..Default::default()
    }
}

/// What a sending client does with fetched bundles: checks that each user's bundle
/// carries the trusted (pinned) user key, verifies every device certificate against
/// it and every prekey against its certificate, and pairs them as recipients. Panics
/// if a bundle does not verify or a device has no prekey.
pub fn recipients_from(
    bundles: &v1::Bundles,
    users: &[&TestUser],
) -> Vec<conclave_sdk::container::Recipient> {
    use conclave_sdk::identity::{VerifiedDevice, VerifiedPrekey};
    let now = now();
    let mut out = Vec::new();
    for user in users {
        let bundle = bundles
            .users
            .iter()
            .find(|b| b.user_id.as_slice() == user.identity.user_id.as_bytes())
            .unwrap_or_else(|| panic!("no bundle for {}", user.username));
        assert_eq!(
            bundle.user_public_key,
            user.identity.key.to_bytes().to_vec(),
            "the directory returns the pinned user key of {}",
            user.username
        );
        for device in &bundle.devices {
            let verified =
                VerifiedDevice::verify(device.certificate.as_ref().unwrap(), &user.identity, now)
                    .expect("device certificate verifies against the trusted user key");
            let prekey = device
                .prekey
                .as_ref()
                .unwrap_or_else(|| panic!("{} has a device without prekeys", user.username));
            let prekey = VerifiedPrekey::verify(prekey, &verified, now)
                .expect("prekey verifies against the device certificate");
            out.push(conclave_sdk::container::Recipient::new(verified, prekey).unwrap());
        }
    }
    out
}

/// Seals a text message from `sender` to `recipients` with the crypto core.
pub fn seal_text(
    sender: &DeviceIdentity,
    recipients: &[conclave_sdk::container::Recipient],
    text: &str,
    ttl_ms: u64,
) -> Vec<u8> {
    conclave_sdk::container::seal(
        sender,
        recipients,
        &text_payload(text),
        now(),
        ttl_ms,
        &mut OsRng,
    )
    .unwrap()
}

/// Opens a container from `sender` addressed to `me` and returns its text and the
/// sending device (panics if the payload is not text).
pub fn open_text(
    container: &[u8],
    sender: &UserIdentity,
    me: &DeviceIdentity,
    pool: &mut PrekeyPool,
    replay: &mut conclave_sdk::container::ReplayCache,
) -> Result<(String, conclave_sdk::DeviceId), conclave_sdk::container::ContainerError> {
    let opened = conclave_sdk::container::SealedContainer::decode(container)?.open(
        sender,
        me,
        pool,
        replay,
        now(),
    )?;
    match &opened.payload().body {
        Some(v1::container_payload::Body::Text(t)) => {
            Ok((t.text.clone(), opened.sender().device_id()))
        }
        other => panic!("expected a text payload, got {other:?}"),
    }
}

/// The 16-byte id of a device as the control protocol carries it.
pub fn device_id_bytes(device: &DeviceIdentity) -> Vec<u8> {
    device.device_id().as_bytes().to_vec()
}

/// The delivery status the server reported for `device`.
pub fn status_for(sent: &v1::ContainerSent, device: &[u8]) -> v1::DeliveryStatus {
    let result = sent
        .results
        .iter()
        .find(|r| r.device_id == device)
        .expect("a result for every recipient");
    v1::DeliveryStatus::try_from(result.status).unwrap()
}

impl TestClient {
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
            }))
            .await?
        {
            response::Result::ContainersAcked(a) => Ok(a.deleted),
            other => panic!("expected ContainersAcked, got {other:?}"),
        }
    }

    /// Waits for the next mailbox delivery, skipping other events.
    pub async fn mailbox_delivery(&mut self) -> v1::MailboxDelivery {
        self.event(|e| match e {
            v1::event::Event::Mailbox(m) => Some(m),
            _ => None,
        })
        .await
    }

    /// A request round trip. The server answers requests in order and queues a
    /// request's follow-up events before it reads the next request, so once this
    /// returns every event caused by earlier requests has reached `events`.
    pub async fn round_trip(&self) {
        self.request(Request::GetTime(v1::GetTime {}))
            .await
            .unwrap();
    }

    /// Every event already received, without waiting.
    pub fn received_events(&mut self) -> Vec<v1::event::Event> {
        std::iter::from_fn(|| self.events.try_recv()).collect()
    }
}

impl TestServer {
    /// Stops the server gracefully and starts a new one (new port and certificate) on
    /// the same store. Devices that were connected before are then certainly offline:
    /// the new server has never seen a connection of theirs.
    pub async fn restart_with(self, config: Config) -> TestServer {
        let store = Arc::clone(&self.store);
        self.stop().await.unwrap();
        TestServer::start_with(config, store).await
    }
}

/// A container the server accepts from `sender` (a well-formed header naming the
/// sending device, a day's ttl) whose ciphertext is `len`-ish bytes of garbage: what an
/// attacker stores, since the server cannot check the ciphertext. At most `len` bytes
/// serialized, and within a few bytes of it.
pub fn junk_container(sender: &DeviceIdentity, len: usize) -> Vec<u8> {
    use conclave_proto::Message;
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
