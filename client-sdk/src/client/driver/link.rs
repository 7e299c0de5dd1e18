//! The connection: establishing it (hello, authenticate or register), losing it,
//! reconnecting with backoff, and the media reader task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use conclave_proto::datagram::DatagramHeader;
use conclave_proto::frame::CONTROL_PROTOCOL_VERSION;
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};

use super::{Driver, local_ms};
use crate::client::protocol::clock::ServerClock;
use crate::client::shared::MeetingShared;
use crate::client::{ClientError, ClientEvent};
use crate::meeting::MeetingId;
use crate::transport::{ControlConnection, EventStream};

/// Room handle → meeting, read by the media reader for every datagram.
pub(crate) type Rooms = Arc<RwLock<HashMap<u32, Arc<MeetingShared>>>>;

/// One live connection.
pub(crate) struct Link {
    pub conn: Arc<ControlConnection>,
    pub events: EventStream,
    /// Events read while connecting, handled before the stream's next ones.
    pub backlog: std::collections::VecDeque<v1::event::Event>,
    pub challenge: Vec<u8>,
    pub rooms: Rooms,
    reader: tokio::task::JoinHandle<()>,
}

impl Link {
    /// The meeting whose room has `handle` on this connection.
    pub(crate) fn meeting_of(&self, handle: u32) -> Option<MeetingId> {
        self.rooms
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&handle)
            .map(|m| m.id)
    }

    pub(crate) fn set_room(&self, handle: u32, meeting: Option<Arc<MeetingShared>>) {
        let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
        match meeting {
            Some(m) => {
                rooms.retain(|_, existing| existing.id != m.id);
                rooms.insert(handle, m);
            }
            None => {
                rooms.remove(&handle);
            }
        }
    }

    pub(crate) async fn close(self) {
        self.reader.abort();
        self.conn.quic().close(0u32.into(), b"bye");
    }
}

impl Driver {
    /// Connects, says hello, authenticates (registering on first use) and starts the
    /// media reader.
    pub(super) async fn establish(&mut self) -> Result<(), ClientError> {
        let (conn, events) = ControlConnection::connect_trusting(
            self.config.server,
            &self.config.server_name,
            &self.config.trust,
        )
        .await?;
        let hello = conn
            .request(Request::Hello(v1::Hello {
                protocol_version: CONTROL_PROTOCOL_VERSION,
            }))
            .await?;
        let response::Result::Hello(hello) = hello else {
            return Err(ClientError::unexpected_answer("Hello"));
        };
        let max_offset_ms = super::ms(self.config.max_clock_offset);
        let (clock, clamped) = ServerClock::sync(hello.server_time_ms, local_ms(), max_offset_ms);
        if clamped {
            tracing::warn!(
                server_ms = hello.server_time_ms,
                max_offset_ms,
                "the server's clock is further from this device's than allowed; using the bound (check this device's clock, or distrust the server)"
            );
        }
        self.clock = clock;
        let signature = self
            .creds
            .device()
            .sign_auth_challenge(conn.tls_binding(), &hello.challenge)?
            .to_bytes()
            .to_vec();
        let held = match conn
            .request(Request::Authenticate(v1::Authenticate {
                device_id: self.creds.device_id().as_bytes().to_vec(),
                auth_signature: signature.clone(),
            }))
            .await
        {
            Ok(response::Result::Authenticated(a)) => a.prekeys_held,
            Err(e) if e.server_code() == Some(ErrorCode::NotFound) => {
                match conn
                    .request(Request::Register(v1::Register {
                        user_public_key: self.creds.user_public_key().to_bytes().to_vec(),
                        certificate: Some(self.creds.certificate().clone()),
                        auth_signature: signature,
                    }))
                    .await?
                {
                    response::Result::Registered(r) => r.prekeys_held,
                    _ => return Err(ClientError::unexpected_answer("Register")),
                }
            }
            Ok(_) => return Err(ClientError::unexpected_answer("Authenticate")),
            Err(e) => return Err(e.into()),
        };
        // A fresh pool's first upload replaces what the server holds.
        self.server_prekeys = if self.replace_prekeys {
            0
        } else {
            usize::try_from(held).unwrap_or(usize::MAX)
        };
        let conn = Arc::new(conn);
        let rooms: Rooms = Arc::default();
        let reader = tokio::spawn(read_media(
            conn.quic().clone(),
            Arc::clone(&rooms),
            self.epoch,
            Arc::clone(&self.datagrams),
        ));
        self.link = Some(Link {
            conn,
            events,
            backlog: std::collections::VecDeque::new(),
            challenge: hello.challenge,
            rooms,
            reader,
        });
        // Stock prekeys (and the last-resort prekey, when not uploaded yet or due for
        // rotation) before `connect` returns, so this device can be invited at once (a
        // fresh pool also replaces stale server prekeys).
        self.replenish(held).await;
        Ok(())
    }

    /// Drops every `PrekeysLow` received so far. The server answers in order and
    /// queues a request's events before its answer, so after an upload's answer every
    /// `PrekeysLow` already received carries a count the upload made stale (acting on
    /// a backlog of them would upload, and evict, far more than needed). Every other
    /// event is kept, in order.
    pub(super) fn drop_stale_prekeys_low(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.backlog
            .retain(|e| !matches!(e, v1::event::Event::PrekeysLow(_)));
        while let Some(event) = link.events.try_recv() {
            if !matches!(event, v1::event::Event::PrekeysLow(_)) {
                link.backlog.push_back(event);
            }
        }
    }

    /// Drops the current connection (if any): media pauses, rooms must be rejoined.
    pub(super) async fn drop_link(&mut self, reason: &str) {
        let Some(link) = self.link.take() else {
            return;
        };
        link.close().await;
        for entry in self.meetings.values_mut() {
            entry.shared.set_room(None);
            entry.proven = None;
            entry.wanted = None;
        }
        tracing::info!(reason, "disconnected from the server");
        self.emit(ClientEvent::Disconnected {
            reason: reason.to_string(),
        });
    }

    /// The connection broke: drop it and schedule a reconnect.
    pub(super) async fn connection_lost(&mut self, reason: &str) {
        if self.link.is_none() {
            return;
        }
        self.drop_link(reason).await;
        self.backoff_ms = super::ms(self.config.reconnect_backoff);
        self.reconnect_at = Some(Instant::now() + Duration::from_millis(self.backoff_ms));
    }

    /// One reconnect attempt; on success every meeting rejoins its room.
    pub(super) async fn reconnect(&mut self) {
        match self.establish().await {
            Ok(()) => {
                self.reconnect_at = None;
                self.backoff_ms = 0;
                let ids: Vec<MeetingId> = self.meetings.keys().copied().collect();
                for id in ids {
                    let epoch = self.meetings.get(&id).map(|e| e.state.sending_epoch());
                    if let Some(epoch) = epoch {
                        self.join_room(id, epoch).await;
                    }
                    self.pump(id).await;
                }
                self.flush_outbox().await;
                self.emit(ClientEvent::Reconnected);
            }
            Err(e) => {
                self.backoff_ms = self
                    .backoff_ms
                    .saturating_mul(2)
                    .max(super::ms(self.config.reconnect_backoff))
                    .min(super::ms(self.config.max_reconnect_backoff));
                tracing::info!(error = %e, retry_in_ms = self.backoff_ms, "reconnect failed");
                self.reconnect_at = Some(Instant::now() + Duration::from_millis(self.backoff_ms));
            }
        }
    }
}

/// Reads media datagrams until the connection closes and hands each to its meeting.
async fn read_media(
    conn: quinn::Connection,
    rooms: Rooms,
    origin: Instant,
    received: Arc<AtomicU64>,
) {
    while let Ok(datagram) = conn.read_datagram().await {
        received.fetch_add(1, Ordering::Relaxed);
        let Ok((header, payload)) = DatagramHeader::decode(&datagram) else {
            continue;
        };
        // Handled under the read lock (only the driver writes, when a room is joined
        // or left), so the per-datagram path clones nothing.
        let rooms = rooms.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(meeting) = rooms.get(&header.room_handle) {
            let now_ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
            meeting.on_datagram(&header, payload, now_ms);
        }
    }
}
