//! The protocol client: a connection that speaks the control protocol request by
//! request, on the SDK's transport and the crypto core, without the SDK's client
//! logic. Server tests use it to send exactly the requests they mean, including the
//! ones the SDK never would.
//!
//! * [`TestClient`] (here): connect, Hello, register or authenticate, requests and
//!   events; rooms and media ([`rooms`]); directory, prekeys and mailbox ([`mailbox`]).
//! * [`raw::RawControl`]: the control stream byte by byte (oversized length prefixes,
//!   half frames, a client that stops reading).

pub mod mailbox;
pub mod raw;
pub mod rooms;

use std::net::SocketAddr;
use std::sync::Mutex;

use conclave_core::identity::{DeviceIdentity, UserPublicKey};
use conclave_proto::frame::CONTROL_PROTOCOL_VERSION;
use conclave_proto::v1::{self, client_frame::Request, response};
use conclave_sdk::transport::{ControlConnection, EventStream, ServerTrust, TransportError};

use crate::clock::WAIT;
use crate::identity::User;
use crate::sfu::TestSfu;

/// A connected client that has said Hello.
pub struct TestClient {
    /// The control connection (requests, datagrams, the QUIC connection).
    pub conn: ControlConnection,
    /// Events the server pushes.
    pub events: EventStream,
    /// The server's authentication challenge from Hello.
    pub challenge: Vec<u8>,
    /// The device this connection registered or authenticated as.
    pub device: Mutex<Option<Vec<u8>>>,
}

impl TestClient {
    /// Connects to `server` and sends Hello.
    pub async fn connect(server: &TestSfu) -> Self {
        Self::connect_to(server.addr, &server.trust).await
    }

    /// Connects to the server at `addr`, trusted as `trust`, and sends Hello.
    pub async fn connect_to(addr: SocketAddr, trust: &ServerTrust) -> Self {
        let config = conclave_sdk::transport::client_config(trust).expect("a client config");
        let connected =
            tokio::time::timeout(WAIT, ControlConnection::connect(addr, "localhost", config))
                .await
                .expect("connect in bounded time")
                .expect("connect");
        Self::hello(connected).await
    }

    /// Connects to `server` with an initial connection ID that starts with
    /// `connection_id_byte` (which steers the connection to one of its shards), and
    /// sends Hello.
    pub async fn connect_steered(server: &TestSfu, connection_id_byte: u8) -> Self {
        let connected = tokio::time::timeout(
            WAIT,
            ControlConnection::connect_steered(
                server.addr,
                "localhost",
                &server.trust,
                conclave_sdk::transport::DEFAULT_IDLE_TIMEOUT,
                Some(connection_id_byte),
            ),
        )
        .await
        .expect("connect in bounded time")
        .expect("connect");
        Self::hello(connected).await
    }

    async fn hello((conn, events): (ControlConnection, EventStream)) -> Self {
        let mut client = TestClient {
            conn,
            events,
            challenge: Vec::new(),
            device: Mutex::new(None),
        };
        let hello = client.request(hello()).await.expect("Hello");
        let response::Result::Hello(hello) = hello else {
            panic!("expected HelloOk, got {hello:?}");
        };
        client.challenge = hello.challenge;
        client
    }

    /// Connects to `server` and registers a fresh device of `user`.
    pub async fn registered(server: &TestSfu, user: &User) -> (Self, DeviceIdentity) {
        let client = Self::connect(server).await;
        let device = user.device();
        client.register(user, &device).await.expect("Register");
        (client, device)
    }

    /// Sends `request` and waits (bounded) for its response.
    pub async fn request(&self, request: Request) -> Result<response::Result, TransportError> {
        tokio::time::timeout(WAIT, self.conn.request(request))
            .await
            .expect("response in bounded time")
    }

    /// This connection's proof that it holds `device`'s key.
    pub fn auth_signature(&self, device: &DeviceIdentity) -> Vec<u8> {
        auth_signature(device, self.conn.tls_binding(), &self.challenge)
    }

    /// Registers `device` of `user` on this connection.
    pub async fn register(
        &self,
        user: &User,
        device: &DeviceIdentity,
    ) -> Result<v1::Registered, TransportError> {
        self.register_key(&user.identity.key, device).await
    }

    /// Registers `device` under the user key `user_key` on this connection.
    pub async fn register_key(
        &self,
        user_key: &UserPublicKey,
        device: &DeviceIdentity,
    ) -> Result<v1::Registered, TransportError> {
        *self.device.lock().expect("unpoisoned") = Some(device.device_id().as_bytes().to_vec());
        let request = register(user_key, device, self.conn.tls_binding(), &self.challenge);
        match self.request(request).await? {
            response::Result::Registered(r) => Ok(r),
            other => panic!("expected Registered, got {other:?}"),
        }
    }

    /// Authenticates as the already registered `device`.
    pub async fn authenticate(
        &self,
        device: &DeviceIdentity,
    ) -> Result<v1::Authenticated, TransportError> {
        self.authenticate_as(device, v1::ConnectionRole::Primary)
            .await
    }

    /// Authenticates `device` with `role` (a rooms-only connection is what the SDK
    /// opens to the cluster node owning one of its meetings' rooms).
    pub async fn authenticate_as(
        &self,
        device: &DeviceIdentity,
        role: v1::ConnectionRole,
    ) -> Result<v1::Authenticated, TransportError> {
        *self.device.lock().expect("unpoisoned") = Some(device.device_id().as_bytes().to_vec());
        let r = self
            .request(Request::Authenticate(v1::Authenticate {
                device_id: device.device_id().as_bytes().to_vec(),
                auth_signature: self.auth_signature(device),
                role: role as i32,
            }))
            .await?;
        match r {
            response::Result::Authenticated(r) => Ok(r),
            other => panic!("expected Authenticated, got {other:?}"),
        }
    }

    /// This connection's device id (after register or authenticate).
    pub fn device_id(&self) -> Vec<u8> {
        self.device
            .lock()
            .expect("unpoisoned")
            .clone()
            .expect("registered")
    }

    /// Waits for the first event matching `pick`; other events are passed over.
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

    /// A request round trip. The server answers requests in order and queues a
    /// request's follow-up events before it reads the next request, so once this
    /// returns every event caused by earlier requests has reached `events`.
    pub async fn round_trip(&self) {
        self.request(Request::GetTime(v1::GetTime {}))
            .await
            .expect("GetTime");
    }

    /// Every event already received, without waiting.
    pub fn received_events(&mut self) -> Vec<v1::event::Event> {
        std::iter::from_fn(|| self.events.try_recv()).collect()
    }
}

/// The Hello request of this protocol version, without a mailbox window (the raw
/// clients here report nothing handled, so the server must not wait for them).
pub fn hello() -> Request {
    Request::Hello(v1::Hello {
        protocol_version: CONTROL_PROTOCOL_VERSION,
        mailbox_window_bytes: 0,
    })
}

/// `device`'s signature over the connection's TLS `binding` and the server's
/// `challenge`.
pub fn auth_signature(device: &DeviceIdentity, binding: &[u8], challenge: &[u8]) -> Vec<u8> {
    device
        .sign_auth_challenge(binding, challenge)
        .expect("auth signature")
        .to_bytes()
        .to_vec()
}

/// The Register request of `device` under `user_key` on the connection with TLS
/// `binding` and the server's `challenge`.
pub fn register(
    user_key: &UserPublicKey,
    device: &DeviceIdentity,
    binding: &[u8],
    challenge: &[u8],
) -> Request {
    Request::Register(v1::Register {
        user_public_key: user_key.to_bytes().to_vec(),
        certificate: Some(device.certificate().clone()),
        auth_signature: auth_signature(device, binding, challenge),
    })
}

/// The 16-byte id of a device as the control protocol carries it.
pub fn device_id_bytes(device: &DeviceIdentity) -> Vec<u8> {
    device.device_id().as_bytes().to_vec()
}
