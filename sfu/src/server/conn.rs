//! One connection: handshake, control stream, event writer and datagram forwarding.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use conclave_proto::Message;
use conclave_proto::frame::{self, FrameError, PREFIX_LEN, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use conclave_proto::v1::{self, ServerFrame, server_frame};
use metrics::{counter, gauge};
use rand_core::{OsRng, RngCore};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, watch};
use tracing::{debug, info, warn};

use super::session::Session;
use super::{Shared, close_code};
use crate::media::{ConnMedia, Forwarder};
use crate::rooms::ConnId;
use crate::telemetry::{self, MediaCounters};

/// Free send buffer below which video is dropped: half the configured buffer.
const VIDEO_HEADROOM: usize = crate::DATAGRAM_SEND_BUFFER / 2;

/// What the control stream writer sends.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame, holding its share of the connection's queued-bytes budget until it is
    /// written (or dropped with the queue).
    Frame(ServerFrame, OwnedSemaphorePermit),
    /// Everything before this was written: finish the stream.
    Finish,
}

/// A live connection as other tasks see it.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) id: ConnId,
    pub(crate) connection: quinn::Connection,
    /// Frames for the control stream writer, at most `max_queued_events`.
    pub(crate) outbound: mpsc::Sender<Outbound>,
    /// Bytes of queued frames: `max_queued_event_bytes` permits, one per byte. A frame
    /// larger than the whole budget takes all of it (it waits for an empty queue).
    queued_bytes: Arc<Semaphore>,
    max_queued_bytes: u32,
    pub(crate) media: ConnMedia<quinn::Connection>,
    /// The device, once authenticated.
    pub(crate) device: std::sync::OnceLock<crate::store::DeviceIdBytes>,
}

/// Why a connection's outbound queue refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Frames,
    Bytes,
}

impl ConnHandle {
    /// Permits `frame` takes of the queued-bytes budget: its encoded size, capped at
    /// the whole budget.
    fn cost(&self, frame: &ServerFrame) -> u32 {
        let len = frame.encoded_len().saturating_add(PREFIX_LEN);
        u32::try_from(len)
            .unwrap_or(u32::MAX)
            .min(self.max_queued_bytes)
    }

    /// Reserves `frame`'s bytes, waiting until the writer has made room. `None` once
    /// the connection is gone.
    pub(crate) async fn reserve(&self, frame: &ServerFrame) -> Option<OwnedSemaphorePermit> {
        let cost = self.cost(frame);
        Arc::clone(&self.queued_bytes)
            .acquire_many_owned(cost)
            .await
            .ok()
    }

    /// Queues an event without waiting. A queue over its frame or byte bound closes
    /// the connection (`TOO_SLOW`): the client reconnects and fetches its mailbox.
    pub(crate) fn push_event(&self, event: v1::event::Event) -> bool {
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Event(v1::Event { event: Some(event) })),
        };
        let cost = self.cost(&frame);
        let permit = match Arc::clone(&self.queued_bytes).try_acquire_many_owned(cost) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                self.cut_slow_client(Overflow::Bytes);
                return false;
            }
            Err(TryAcquireError::Closed) => return false,
        };
        match self.outbound.try_send(Outbound::Frame(frame, permit)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut_slow_client(Overflow::Frames);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn cut_slow_client(&self, overflow: Overflow) {
        let (bound, reason): (&str, &[u8]) = match overflow {
            Overflow::Frames => (
                "frames",
                b"event queue over max_queued_events: reconnect and fetch your mailbox",
            ),
            Overflow::Bytes => (
                "bytes",
                b"event queue over max_queued_event_bytes: reconnect and fetch your mailbox",
            ),
        };
        warn!(
            conn = self.id,
            bound, "control event queue full; disconnecting slow client"
        );
        counter!(telemetry::SLOW_CLIENTS_CUT, "bound" => bound).increment(1);
        self.connection.close(close_code::TOO_SLOW.into(), reason);
    }

    /// Lets the client send full-size frames: called once it has authenticated.
    pub(crate) fn open_receive_window(&self, max_frame_bytes: usize) {
        self.connection
            .set_receive_window(crate::tls::control_receive_window(max_frame_bytes));
    }
}

/// Decrements the open-connection count when a connection task ends.
struct OpenGuard<'a>(&'a Shared);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let open = self.0.open_connections.fetch_sub(1, Ordering::Relaxed) - 1;
        gauge!(telemetry::CONNECTIONS).set(open as f64);
    }
}

/// Serves one incoming connection until it closes or the server stops.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    mut stop: watch::Receiver<bool>,
) {
    let open = shared.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = OpenGuard(&shared);
    gauge!(telemetry::CONNECTIONS).set(open as f64);
    if open > shared.config.limits.max_connections {
        counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "max_connections").increment(1);
        incoming.refuse();
        return;
    }
    let connection = match incoming.accept() {
        Ok(connecting) => match connecting.await {
            Ok(c) => c,
            Err(e) => {
                counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "handshake").increment(1);
                debug!(error = %e, "handshake failed");
                return;
            }
        },
        Err(e) => {
            counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "handshake").increment(1);
            debug!(error = %e, "incoming connection failed");
            return;
        }
    };
    counter!(telemetry::CONNECTIONS_ACCEPTED).increment(1);
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut binding = [0u8; TLS_EXPORTER_LEN];
    if connection
        .export_keying_material(&mut binding, TLS_EXPORTER_LABEL, b"")
        .is_err()
    {
        connection.close(
            close_code::PROTOCOL_VIOLATION.into(),
            b"TLS exporter unavailable",
        );
        return;
    }
    let mut challenge = [0u8; 32];
    OsRng.fill_bytes(&mut challenge);
    let limits = &shared.config.limits;
    let (tx, rx) = mpsc::channel(limits.max_queued_events.max(1));
    // Validated to fit in a u32 (the semaphore takes at most u32 permits at once).
    let max_queued_bytes = u32::try_from(limits.max_queued_event_bytes)
        .unwrap_or(u32::MAX)
        .max(1);
    let handle = Arc::new(ConnHandle {
        id,
        connection: connection.clone(),
        outbound: tx.clone(),
        queued_bytes: Arc::new(Semaphore::new(max_queued_bytes as usize)),
        max_queued_bytes,
        media: ConnMedia::default(),
        device: std::sync::OnceLock::new(),
    });
    shared.conns.insert(id, Arc::clone(&handle));
    shared.rooms().registry.connect(id, &binding, &challenge);
    debug!(conn = id, remote = %connection.remote_address(), "connection open");

    let media_task = tokio::spawn(forward_datagrams(Arc::clone(&shared), Arc::clone(&handle)));
    let mut session = Session::new(
        Arc::clone(&shared),
        Arc::clone(&handle),
        tx,
        binding,
        challenge,
    );
    control(&shared, &connection, &mut session, rx, &mut stop).await;

    // Cleanup: leave every room, forget the connection.
    {
        let mut plane = shared.rooms();
        plane.registry.disconnect(id, super::now_ms());
        plane.apply(&shared);
    }
    shared.conns.remove(&id);
    if let Some(device) = session.device_id() {
        shared.online.remove_if(&device, |_, conn| *conn == id);
    }
    media_task.abort();
    connection.close(close_code::NORMAL.into(), b"");
    debug!(conn = id, "connection closed");
}

/// Runs the control stream: reads requests, answers them, stops on close, protocol
/// violation, authentication timeout or server shutdown.
async fn control(
    shared: &Shared,
    connection: &quinn::Connection,
    session: &mut Session,
    rx: mpsc::Receiver<Outbound>,
    stop: &mut watch::Receiver<bool>,
) {
    let auth_deadline =
        tokio::time::Instant::now() + Duration::from_secs(shared.config.timing.auth_timeout_secs);
    let (send, mut recv) = tokio::select! {
        stream = connection.accept_bi() => match stream {
            Ok(s) => s,
            Err(e) => { debug!(error = %e, "no control stream"); return; }
        },
        () = tokio::time::sleep_until(auth_deadline) => {
            connection.close(close_code::AUTH_TIMEOUT.into(), b"no control stream opened in time");
            return;
        }
        _ = stop.changed() => return,
    };
    let writer = tokio::spawn(write_frames(
        send,
        rx,
        shared.hooks.clone(),
        Arc::clone(&session.conn),
    ));
    let limits = &shared.config.limits;
    let mut buf = Vec::new();
    loop {
        // Until the device has authenticated only small frames are read (Hello,
        // Register and Authenticate need little), so an unauthenticated connection
        // cannot make the server hold a large buffer.
        let authenticated = session.is_authenticated();
        let max = if authenticated {
            limits.max_frame_bytes
        } else {
            limits.max_frame_bytes_before_auth
        };
        let read = tokio::select! {
            r = read_frame(&mut recv, max, &mut buf) => r,
            () = tokio::time::sleep_until(auth_deadline), if !session.is_authenticated() => {
                info!(conn = session.conn_id(), "closing: not authenticated in time");
                connection.close(close_code::AUTH_TIMEOUT.into(), b"authenticate within the auth timeout");
                break;
            }
            _ = stop.changed() => {
                session.shutting_down().await;
                // Let the writer flush the ShuttingDown event, then give the client a
                // moment to close by itself.
                let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), connection.closed()).await;
                connection.close(close_code::SHUTTING_DOWN.into(), b"server shutting down");
                return;
            }
        };
        match read {
            Ok(true) => {}
            Ok(false) => break,
            // An empty frame keeps the stream in step, like one that does not decode:
            // answer it and carry on. Only a frame too long to read breaks the framing.
            Err(ReadFrameError::Frame(e @ (FrameError::Decode(_) | FrameError::Empty))) => {
                session.malformed(&e.to_string()).await;
                continue;
            }
            Err(ReadFrameError::Frame(e)) => {
                let (message, reason): (String, &[u8]) = match e {
                    FrameError::TooLarge { len, max } if !authenticated => (
                        format!(
                            "control frame of {len} bytes exceeds the {max}-byte limit before \
                             authentication (max_frame_bytes_before_auth): send Hello, then \
                             Register or Authenticate, before larger requests"
                        ),
                        b"control frame too large before authentication",
                    ),
                    FrameError::TooLarge { len, max } => (
                        format!(
                            "control frame of {len} bytes exceeds the {max}-byte limit \
                             (max_frame_bytes)"
                        ),
                        b"control frame violates framing",
                    ),
                    e => (
                        format!("undecodable control frame: {e}"),
                        b"control frame violates framing",
                    ),
                };
                session.refuse_frame(message).await;
                let _ = session.finish().await;
                let _ = tokio::time::timeout(Duration::from_millis(500), connection.closed()).await;
                connection.close(close_code::PROTOCOL_VIOLATION.into(), reason);
                break;
            }
            Err(ReadFrameError::Stream) => break,
        }
        match frame::decode_client(&buf) {
            Ok(mut request) => {
                if shared.hooks.request(session.device_id(), &mut request) {
                    session.handle(request, Instant::now()).await;
                }
            }
            Err(e) => session.malformed(&e.to_string()).await,
        }
        if buf.capacity() > 64 * 1024 {
            buf = Vec::new();
        }
    }
    writer.abort();
}

#[derive(Debug)]
enum ReadFrameError {
    Frame(FrameError),
    Stream,
}

/// Reads one frame into `buf`; `Ok(false)` when the client finished the stream.
///
/// The announced length is checked against `max` before anything else, and the body
/// is appended as its bytes arrive: the buffer grows with what was received (at most
/// twice that, by `Vec`'s doubling), never to the announced length up front, so a
/// client that announces a large frame and sends nothing costs nothing.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<bool, ReadFrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(false),
        Err(_) => return Err(ReadFrameError::Stream),
    }
    let len = frame::frame_len(prefix, max).map_err(ReadFrameError::Frame)?;
    buf.clear();
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            // Finished or reset in the middle of a frame.
            Ok(None) | Err(_) => return Err(ReadFrameError::Stream),
        }
    }
    Ok(true)
}

/// Writes queued frames to the control stream until `Finish` or the queue closes.
async fn write_frames(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Outbound>,
    hooks: super::hooks::Hooks,
    conn: Arc<ConnHandle>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            // The permit goes back once the frame is written (end of this arm).
            Outbound::Frame(mut frame, _queued) => {
                if !hooks.outbound(conn.device.get().copied(), &mut frame) {
                    continue;
                }
                let Ok(bytes) = frame::encode(&frame) else {
                    continue;
                };
                if send.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Outbound::Finish => break,
        }
    }
    let _ = send.finish();
}

/// Reads this connection's datagrams and forwards them until the connection closes.
async fn forward_datagrams(shared: Arc<Shared>, handle: Arc<ConnHandle>) {
    let mut forwarder = Forwarder::new(
        handle.id,
        shared.config.limits.max_datagram_bytes,
        VIDEO_HEADROOM,
    );
    let mut counters = MediaCounters::new();
    while let Ok(datagram) = handle.connection.read_datagram().await {
        forwarder.forward(&datagram, &handle.media, &mut counters);
        counters.maybe_flush();
    }
}
