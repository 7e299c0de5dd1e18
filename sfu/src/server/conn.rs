//! One connection: handshake, control stream, event writer and datagram forwarding.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use conclave_proto::frame::{self, FrameError, PREFIX_LEN, TLS_EXPORTER_LABEL, TLS_EXPORTER_LEN};
use metrics::{counter, gauge};
use rand_core::{OsRng, RngCore};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::handle::{ConnHandle, Outbound};
use super::session::Session;
use super::{Shared, close_code};
use crate::media::Forwarder;
use crate::media::pacer::Pacer;
use crate::telemetry::{self, MediaCounters};

/// Capacity of the control read buffer kept between frames (bytes).
const KEPT_READ_BUFFER: usize = 2 * 1024;

/// Free send buffer below which video is dropped: half the configured buffer.
const VIDEO_HEADROOM: usize = crate::DATAGRAM_SEND_BUFFER / 2;

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
    shard: usize,
    pacer: Arc<Pacer<quinn::Connection>>,
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
    let handle = Arc::new(ConnHandle::new(
        id,
        shard,
        connection.clone(),
        &pacer,
        tx.clone(),
        max_queued_bytes,
    ));
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
                // Its calls go on until the client has moved, at most the drain grace.
                let grace = shared.config.timing.drain_grace();
                let _ = tokio::time::timeout(grace, connection.closed()).await;
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
        // Most frames are a few hundred bytes; a prekey upload or a large container
        // grows the buffer, and an idle connection must not keep that size.
        if buf.capacity() > KEPT_READ_BUFFER {
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
                // Handed to quinn as they are (no copy into its send buffer); a
                // delivered container is the buffer every recipient's frame shares.
                let Ok(mut chunks) = frame::encode_server_chunks(&frame) else {
                    continue;
                };
                if send.write_all_chunks(&mut chunks).await.is_err() {
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
