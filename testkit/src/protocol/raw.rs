//! A client speaking the control protocol byte by byte: it can send what the SDK never
//! would (oversized length prefixes, half frames), stop reading its events, and see
//! every frame the server sends back, including responses to request id 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conclave_core::identity::DeviceIdentity;
use conclave_proto::frame::{self, PREFIX_LEN, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use conclave_proto::v1::{self, client_frame::Request, response, server_frame};

use super::{hello, register};
use crate::clock::WAIT;
use crate::identity::User;
use crate::sfu::TestSfu;

/// A control connection driven byte by byte.
pub struct RawControl {
    _endpoint: quinn::Endpoint,
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The control stream, client to server.
    pub send: quinn::SendStream,
    /// The control stream, server to client.
    pub recv: quinn::RecvStream,
    /// The connection's TLS exporter value (what proofs sign).
    pub binding: [u8; TLS_EXPORTER_LEN],
    /// The server's authentication challenge from Hello.
    pub challenge: Vec<u8>,
}

impl RawControl {
    /// Connects, opens the control stream and sends Hello.
    pub async fn connect(server: &TestSfu) -> Self {
        Self::connect_with_window(server, None).await
    }

    /// Like [`RawControl::connect`], with this client's QUIC receive windows (stream
    /// and connection) set to `window` bytes: a client that stops reading then
    /// buffers at most that much, so the server's queue fills up quickly.
    pub async fn connect_with_window(server: &TestSfu, window: Option<u32>) -> Self {
        let mut config =
            conclave_sdk::transport::client_config(&server.trust).expect("a client config");
        if let Some(window) = window {
            let mut transport = quinn::TransportConfig::default();
            transport
                .stream_receive_window(window.into())
                .receive_window(window.into())
                .keep_alive_interval(Some(Duration::from_secs(2)));
            config.transport_config(Arc::new(transport));
        }
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("a client endpoint");
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(server.addr, "localhost")
            .expect("a connection attempt");
        let conn = tokio::time::timeout(WAIT, connecting)
            .await
            .expect("handshake in bounded time")
            .expect("handshake");
        let mut binding = [0u8; TLS_EXPORTER_LEN];
        conn.export_keying_material(&mut binding, TLS_EXPORTER_LABEL, b"")
            .expect("a TLS exporter");
        let (send, recv) = conn.open_bi().await.expect("the control stream");
        let mut raw = RawControl {
            _endpoint: endpoint,
            conn,
            send,
            recv,
            binding,
            challenge: Vec::new(),
        };
        let hello = raw.call(1, hello()).await;
        let response::Result::Hello(hello) = hello else {
            panic!("expected HelloOk, got {hello:?}");
        };
        raw.challenge = hello.challenge;
        raw
    }

    /// Registers `device` of `user` on this connection.
    pub async fn register(&mut self, user: &User, device: &DeviceIdentity) {
        let request = register(&user.identity.key, device, &self.binding, &self.challenge);
        let registered = self.call(2, request).await;
        assert!(
            matches!(registered, response::Result::Registered(_)),
            "{registered:?}"
        );
    }

    /// Writes `bytes` to the control stream.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.send
            .write_all(bytes)
            .await
            .expect("write the control stream");
    }

    /// Sends one framed request.
    pub async fn send_request(&mut self, request_id: u64, request: Request) {
        let bytes = frame::encode(&v1::ClientFrame {
            request_id,
            request: Some(request),
        })
        .expect("a frame within the limits");
        self.write(&bytes).await;
    }

    /// The next server frame, or `None` once the server finished its stream.
    pub async fn next_frame(&mut self) -> Option<v1::ServerFrame> {
        tokio::time::timeout(WAIT, async {
            let mut prefix = [0u8; PREFIX_LEN];
            match self.recv.read_exact(&mut prefix).await {
                Ok(()) => {}
                Err(quinn::ReadExactError::FinishedEarly(0)) => return None,
                Err(e) => panic!("control stream failed: {e}"),
            }
            let len = frame::frame_len(prefix, frame::DEFAULT_MAX_FRAME_BYTES)
                .expect("the server sends frames within the limit");
            let mut body = vec![0u8; len];
            self.recv
                .read_exact(&mut body)
                .await
                .expect("a whole frame");
            Some(frame::decode_server(&body).expect("the server sends valid frames"))
        })
        .await
        .expect("a server frame within the wait bound")
    }

    /// The next response; events before it are passed over.
    pub async fn response(&mut self) -> v1::Response {
        loop {
            match self.next_frame().await {
                Some(v1::ServerFrame {
                    kind: Some(server_frame::Kind::Response(r)),
                }) => return r,
                Some(_) => {}
                None => panic!("the server finished the control stream"),
            }
        }
    }

    /// Sends a request and waits for its response's result.
    pub async fn call(&mut self, request_id: u64, request: Request) -> response::Result {
        self.send_request(request_id, request).await;
        let r = self.response().await;
        assert_eq!(r.request_id, request_id);
        r.result.expect("a response carries a result")
    }

    /// Waits until the server closes the connection and returns its application
    /// close code and reason.
    pub async fn closed_by_server(&self) -> (u32, String) {
        let closed = tokio::time::timeout(WAIT, self.conn.closed())
            .await
            .expect("the server closes the connection in bounded time");
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => (
                u32::try_from(close.error_code.into_inner()).expect("a 32-bit close code"),
                String::from_utf8_lossy(&close.reason).into_owned(),
            ),
            other => panic!("expected an application close, got {other:?}"),
        }
    }

    /// Sends a raw datagram on this connection.
    pub fn send_datagram(&self, bytes: Vec<u8>) {
        self.conn
            .send_datagram(bytes.into())
            .expect("send a datagram");
    }
}
