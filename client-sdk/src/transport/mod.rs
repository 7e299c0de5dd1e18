//! The network layer: one QUIC connection to an SFU, its control stream and datagrams.
//!
//! [`ControlConnection`] is deliberately thin: it frames [`v1::ClientFrame`] requests,
//! matches [`v1::Response`]s to them by request id, hands server events to an
//! [`EventStream`], and exposes the QUIC datagram path and the TLS exporter value that
//! device and room proofs are bound to. Meeting logic lives above it.
//!
//! Tasks: one reader task per connection (spawned on the current tokio runtime) reads
//! server frames; writes happen on the caller's task under an async lock.

mod error;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use conclave_proto::frame::{self, PREFIX_LEN, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response, server_frame};
use tokio::sync::{mpsc, oneshot};

pub use error::{ClosedReason, ConnectProblem, ProtocolProblem, TransportError};
pub use tls::{
    CertificateProblem, DEFAULT_IDLE_TIMEOUT, ServerTrust, client_config, rustls_client_config,
};

/// Server events buffered before the reader stops reading (backpressure to the server).
const EVENT_QUEUE: usize = 4096;

/// Requests waiting for their response; `None` once the server's control stream has
/// ended, so that a request sent after that fails at once instead of waiting for the
/// connection to close.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<response::Result>>>>>;

/// Server events, in the order the server sent them.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<v1::event::Event>,
}

impl EventStream {
    /// The next event; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<v1::event::Event> {
        self.rx.recv().await
    }

    /// The next event if one is already queued.
    pub fn try_recv(&mut self) -> Option<v1::event::Event> {
        self.rx.try_recv().ok()
    }

    /// Polls for the next event (`Ready(None)` once the connection is gone), for
    /// drivers that wait on several connections at once.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<v1::event::Event>> {
        self.rx.poll_recv(cx)
    }
}

/// Length of a steered initial destination connection ID (RFC 9000 asks for at least
/// 8 bytes of unpredictable ID; the first byte is the steering byte).
const STEERED_CID_LEN: usize = 16;

/// A random initial destination connection ID that starts with `byte`.
fn steered_cid(byte: u8) -> quinn::ConnectionId {
    let mut id = [0u8; STEERED_CID_LEN];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let [first, ..] = &mut id;
    *first = byte;
    quinn::ConnectionId::new(&id)
}

/// A QUIC connection to an SFU with its control stream.
#[derive(Debug)]
pub struct ControlConnection {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: tokio::sync::Mutex<quinn::SendStream>,
    pending: Pending,
    next_id: AtomicU64,
    tls_binding: [u8; TLS_EXPORTER_LEN],
    reader: tokio::task::JoinHandle<()>,
}

impl ControlConnection {
    /// Connects to `server` (verifying it as `server_name` with `config`), opens the
    /// control stream and starts reading. Binds a fresh UDP socket on an unspecified
    /// address of the server's family.
    pub async fn connect(
        server: SocketAddr,
        server_name: &str,
        config: quinn::ClientConfig,
    ) -> Result<(Self, EventStream), TransportError> {
        Self::connect_inner(server, server_name, config, None).await
    }

    /// Connects like [`ControlConnection::connect`], verifying the server with `trust`;
    /// a refused certificate is reported as [`TransportError::Certificate`].
    pub async fn connect_trusting(
        server: SocketAddr,
        server_name: &str,
        trust: &ServerTrust,
    ) -> Result<(Self, EventStream), TransportError> {
        Self::connect_with_idle_timeout(server, server_name, trust, DEFAULT_IDLE_TIMEOUT).await
    }

    /// [`ControlConnection::connect_trusting`] with a connection that counts as lost
    /// after `idle_timeout` without a packet from the server (keep-alives every sixth
    /// of it). Also bounds how long a handshake with a silent address takes to fail.
    pub async fn connect_with_idle_timeout(
        server: SocketAddr,
        server_name: &str,
        trust: &ServerTrust,
        idle_timeout: std::time::Duration,
    ) -> Result<(Self, EventStream), TransportError> {
        Self::connect_steered(server, server_name, trust, idle_timeout, None).await
    }

    /// [`ControlConnection::connect_with_idle_timeout`] to one shard of a node: the
    /// initial destination connection ID starts with `connection_id_byte` (from a
    /// redirect), which the node's kernel uses to steer the connection's packets.
    /// `None` picks a random ID, as for any connection.
    pub async fn connect_steered(
        server: SocketAddr,
        server_name: &str,
        trust: &ServerTrust,
        idle_timeout: std::time::Duration,
        connection_id_byte: Option<u8>,
    ) -> Result<(Self, EventStream), TransportError> {
        let slot = tls::ProblemSlot::default();
        let mut config = tls::recording_client_config(trust, &slot, idle_timeout)?;
        if let Some(byte) = connection_id_byte {
            config.initial_dst_cid_provider(Arc::new(move || steered_cid(byte)));
        }
        Self::connect_inner(server, server_name, config, Some(slot)).await
    }

    async fn connect_inner(
        server: SocketAddr,
        server_name: &str,
        config: quinn::ClientConfig,
        slot: Option<tls::ProblemSlot>,
    ) -> Result<(Self, EventStream), TransportError> {
        let bind: SocketAddr = if server.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ConnectProblem::Bind(Arc::new(e)))?;
        endpoint.set_default_client_config(config);
        let connection = endpoint
            .connect(server, server_name)
            .map_err(ConnectProblem::Start)?
            .await
            .map_err(|e| match slot.as_ref().and_then(tls::ProblemSlot::take) {
                Some(problem) => TransportError::Certificate(problem),
                None => TransportError::Handshake(e),
            })?;
        let mut tls_binding = [0u8; TLS_EXPORTER_LEN];
        connection
            .export_keying_material(&mut tls_binding, TLS_EXPORTER_LABEL, b"")
            .map_err(|_| ProtocolProblem::NoTlsExporter)?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(ClosedReason::Connection)?;
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let reader = tokio::spawn(read_frames(recv, Arc::clone(&pending), events_tx));
        Ok((
            ControlConnection {
                endpoint,
                connection,
                send: tokio::sync::Mutex::new(send),
                pending,
                next_id: AtomicU64::new(1),
                tls_binding,
                reader,
            },
            EventStream { rx: events_rx },
        ))
    }

    /// The TLS exporter value device and room proofs on this connection must sign.
    #[must_use]
    pub fn tls_binding(&self) -> &[u8; TLS_EXPORTER_LEN] {
        &self.tls_binding
    }

    /// The underlying QUIC connection.
    #[must_use]
    pub fn quic(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Sends a request and waits for its response; a server error becomes
    /// [`TransportError::Server`].
    pub async fn request(&self, request: Request) -> Result<response::Result, TransportError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(waiting) => waiting.insert(request_id, tx),
            None => return Err(TransportError::Closed(ClosedReason::StreamEnded)),
        };
        let bytes = frame::encode(&v1::ClientFrame {
            request_id,
            request: Some(request),
        })
        .map_err(|e| ProtocolProblem::Frame(Arc::new(e)))?;
        if let Err(e) = self.write_raw(&bytes).await {
            forget(&self.pending, request_id);
            return Err(e);
        }
        // The reader fails every waiting request when the stream ends; a request
        // registered after that would wait forever, so also watch the connection.
        let closed = |reason: Option<quinn::ConnectionError>| {
            TransportError::Closed(
                reason.map_or(ClosedReason::StreamEnded, ClosedReason::Connection),
            )
        };
        let result = tokio::select! {
            r = rx => r.map_err(|_| closed(self.connection.close_reason()))?,
            e = self.connection.closed() => {
                forget(&self.pending, request_id);
                return Err(closed(Some(e)));
            }
        };
        match result {
            response::Result::Error(e) => Err(TransportError::Server {
                code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                message: e.message,
                retry_after_ms: e.retry_after_ms,
                room_epoch: e.room_epoch,
                redirect: e.redirect,
            }),
            ok => Ok(ok),
        }
    }

    /// Writes raw bytes to the control stream (for tests of the server's framing).
    pub async fn write_raw(&self, bytes: &[u8]) -> Result<(), TransportError> {
        self.send
            .lock()
            .await
            .write_all(bytes)
            .await
            .map_err(|e| TransportError::Closed(ClosedReason::Write(e)))
    }

    /// Queues a media datagram.
    pub fn send_datagram(&self, datagram: Bytes) -> Result<(), TransportError> {
        self.connection
            .send_datagram(datagram)
            .map_err(|e| TransportError::Closed(ClosedReason::Datagram(e)))
    }

    /// The next media datagram.
    pub async fn read_datagram(&self) -> Result<Bytes, TransportError> {
        self.connection
            .read_datagram()
            .await
            .map_err(|e| TransportError::Closed(ClosedReason::Connection(e)))
    }

    /// Closes the connection and waits (briefly) for the close to be sent.
    pub async fn close(self) {
        self.connection.close(0u32.into(), b"bye");
        self.reader.abort();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle())
            .await;
    }
}

/// Stops waiting for `request_id`'s response.
fn forget(pending: &Pending, request_id: u64) {
    if let Some(waiting) = lock(pending).as_mut() {
        waiting.remove(&request_id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads server frames until the stream ends: responses complete their requests,
/// events go to the event stream. Unmatched or undecodable frames are skipped.
async fn read_frames(
    mut recv: quinn::RecvStream,
    pending: Pending,
    events: mpsc::Sender<v1::event::Event>,
) {
    let mut buf = Vec::new();
    loop {
        let mut prefix = [0u8; PREFIX_LEN];
        if recv.read_exact(&mut prefix).await.is_err() {
            break;
        }
        let Ok(len) = frame::frame_len(prefix, frame::DEFAULT_MAX_FRAME_BYTES) else {
            break;
        };
        buf.clear();
        buf.resize(len, 0);
        if recv.read_exact(&mut buf).await.is_err() {
            break;
        }
        let Ok(server_frame) = frame::decode_server(&buf) else {
            tracing::warn!("undecodable frame from the server; skipped");
            continue;
        };
        match server_frame.kind {
            Some(server_frame::Kind::Response(r)) => {
                let waiter = lock(&pending)
                    .as_mut()
                    .and_then(|waiting| waiting.remove(&r.request_id));
                match (waiter, r.result) {
                    (Some(tx), Some(result)) => {
                        let _ = tx.send(result);
                    }
                    (None, Some(response::Result::Error(e))) => {
                        tracing::warn!(code = e.code, message = %e.message, "server error for no request");
                    }
                    _ => {}
                }
            }
            Some(server_frame::Kind::Event(v1::Event { event: Some(event) })) => {
                // If nobody listens for events, keep serving responses.
                let _ = events.send(event).await;
            }
            _ => {}
        }
    }
    // Fail every waiting request, and every later one.
    lock(&pending).take();
}
