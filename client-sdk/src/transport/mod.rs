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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use conclave_proto::frame::{self, PREFIX_LEN, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response, server_frame};
use tokio::sync::{mpsc, oneshot};

pub use error::{ClosedReason, ConnectProblem, ProtocolProblem, TransportError};
pub use tls::{
    CertificateProblem, DEFAULT_IDLE_TIMEOUT, ServerTrust, client_config, rustls_client_config,
};

/// Server events a connection holds, read and not yet taken, at most; one more
/// closes the connection (see [`EventBudget`]).
const EVENT_QUEUE: usize = 4096;

/// Bytes of server events a connection may hold, read and not yet taken from its
/// [`EventStream`], unless the connect says otherwise: 16 MiB.
pub const DEFAULT_EVENT_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// What one connection may hold of server events it has read and nobody has taken:
/// at most `bytes` (encoded frame bytes) and 4,096 events.
///
/// The reader never waits for room: the control stream carries the answers to
/// requests behind the events, and whoever waits for an answer may not be taking
/// events meanwhile, so waiting could stall the connection for good. A server that
/// sends more than the budget (a hostile one, or a burst this device cannot keep up
/// with) has the connection closed instead ([`ClosedReason::FellBehind`]); the client
/// reconnects, and its mailbox entries, still unacknowledged, come again. Stored
/// mailbox entries cannot cause it: the client asks the server to keep them within a
/// window well below the budget (`Hello.mailbox_window_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBudget {
    /// Encoded bytes of held events, at most (a single event larger than this is
    /// still taken into an empty queue).
    pub bytes: usize,
}

impl Default for EventBudget {
    fn default() -> Self {
        EventBudget {
            bytes: DEFAULT_EVENT_QUEUE_BYTES,
        }
    }
}

/// Requests waiting for their response; `None` once the server's control stream has
/// ended, so that a request sent after that fails at once instead of waiting for the
/// connection to close.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<response::Result>>>>>;

/// Server events, in the order the server sent them.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<(v1::event::Event, usize)>,
    held: Arc<Held>,
}

/// What a connection's reader holds for its [`EventStream`], shared by both.
#[derive(Debug, Default)]
struct Held {
    /// Encoded bytes of the events in the queue.
    bytes: AtomicUsize,
    /// Set when the reader closed the connection over the budget.
    fell_behind: Mutex<Option<ClosedReason>>,
}

impl EventStream {
    /// The next event; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<v1::event::Event> {
        let taken = self.rx.recv().await;
        self.taken(taken)
    }

    /// The next event if one is already queued.
    pub fn try_recv(&mut self) -> Option<v1::event::Event> {
        let taken = self.rx.try_recv().ok();
        self.taken(taken)
    }

    /// Polls for the next event (`Ready(None)` once the connection is gone), for
    /// drivers that wait on several connections at once.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<v1::event::Event>> {
        self.rx.poll_recv(cx).map(|taken| self.taken(taken))
    }

    /// Encoded bytes of the events read and not taken yet.
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.held.bytes.load(Ordering::Acquire)
    }

    /// Why the reader closed the connection, if it did because the server sent more
    /// events than the budget holds ([`ClosedReason::FellBehind`]).
    #[must_use]
    pub fn fell_behind(&self) -> Option<ClosedReason> {
        lock(&self.held.fell_behind).clone()
    }

    fn taken(&self, taken: Option<(v1::event::Event, usize)>) -> Option<v1::event::Event> {
        let (event, len) = taken?;
        self.held.bytes.fetch_sub(len, Ordering::AcqRel);
        Some(event)
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
    held: Arc<Held>,
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
        Self::connect_inner(server, server_name, config, None, EventBudget::default()).await
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
        Self::connect_with(
            server,
            server_name,
            trust,
            idle_timeout,
            connection_id_byte,
            EventBudget::default(),
        )
        .await
    }

    /// [`ControlConnection::connect_steered`] holding at most `budget` of unread server
    /// events.
    pub async fn connect_with(
        server: SocketAddr,
        server_name: &str,
        trust: &ServerTrust,
        idle_timeout: std::time::Duration,
        connection_id_byte: Option<u8>,
        budget: EventBudget,
    ) -> Result<(Self, EventStream), TransportError> {
        let slot = tls::ProblemSlot::default();
        let mut config = tls::recording_client_config(trust, &slot, idle_timeout)?;
        if let Some(byte) = connection_id_byte {
            config.initial_dst_cid_provider(Arc::new(move || steered_cid(byte)));
        }
        Self::connect_inner(server, server_name, config, Some(slot), budget).await
    }

    async fn connect_inner(
        server: SocketAddr,
        server_name: &str,
        config: quinn::ClientConfig,
        slot: Option<tls::ProblemSlot>,
        budget: EventBudget,
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
        let held = Arc::new(Held::default());
        let reader = tokio::spawn(read_frames(
            recv,
            Arc::clone(&pending),
            Events {
                tx: events_tx,
                held: Arc::clone(&held),
                budget,
                connection: connection.clone(),
            },
        ));
        Ok((
            ControlConnection {
                endpoint,
                connection,
                send: tokio::sync::Mutex::new(send),
                pending,
                next_id: AtomicU64::new(1),
                tls_binding,
                reader,
                held: Arc::clone(&held),
            },
            EventStream {
                rx: events_rx,
                held,
            },
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
            None => return Err(self.ended(self.connection.close_reason())),
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
        let result = tokio::select! {
            r = rx => r.map_err(|_| self.ended(self.connection.close_reason()))?,
            e = self.connection.closed() => {
                forget(&self.pending, request_id);
                return Err(self.ended(Some(e)));
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

    /// Why requests on this connection fail now that it ended (`reason`, if QUIC
    /// knows one): the reader's own reason first.
    fn ended(&self, reason: Option<quinn::ConnectionError>) -> TransportError {
        let fell_behind = lock(&self.held.fell_behind).clone();
        TransportError::Closed(
            fell_behind.unwrap_or_else(|| {
                reason.map_or(ClosedReason::StreamEnded, ClosedReason::Connection)
            }),
        )
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

/// The reader's end of the event queue.
struct Events {
    tx: mpsc::Sender<(v1::event::Event, usize)>,
    held: Arc<Held>,
    budget: EventBudget,
    connection: quinn::Connection,
}

/// QUIC application close code a client uses when the server sent more events than it
/// holds (the server's own codes stop at 6).
pub const CLOSE_FELL_BEHIND: u32 = 0x100;

impl Events {
    /// Queues `event` (`len` encoded bytes); `false` once the budget is exceeded and the
    /// connection closed. An event nobody listens for any more is dropped.
    fn queue(&self, event: v1::event::Event, len: usize) -> bool {
        let before = self.held.bytes.fetch_add(len, Ordering::AcqRel);
        let over_bytes = before > 0 && before.saturating_add(len) > self.budget.bytes;
        let sent = if over_bytes {
            Err(mpsc::error::TrySendError::Full((event, len)))
        } else {
            self.tx.try_send((event, len))
        };
        match sent {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.held.bytes.fetch_sub(len, Ordering::AcqRel);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.held.bytes.fetch_sub(len, Ordering::AcqRel);
                let reason = ClosedReason::FellBehind {
                    held_bytes: before,
                    held_events: EVENT_QUEUE - self.tx.capacity(),
                    budget_bytes: self.budget.bytes,
                };
                tracing::warn!(%reason, "closing the connection");
                *lock(&self.held.fell_behind) = Some(reason);
                self.connection.close(
                    CLOSE_FELL_BEHIND.into(),
                    b"the server sent more events than this client holds; reconnecting",
                );
                false
            }
        }
    }
}

/// Reads server frames until the stream ends: responses complete their requests,
/// events go to the event stream. Unmatched or undecodable frames are skipped.
async fn read_frames(mut recv: quinn::RecvStream, pending: Pending, events: Events) {
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
                let queued = events.queue(event, len);
                if !queued {
                    break;
                }
            }
            _ => {}
        }
    }
    // Fail every waiting request, and every later one.
    lock(&pending).take();
}
