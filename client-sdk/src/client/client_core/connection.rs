//! The connection: establishing it (hello, authenticate or register), losing it, and
//! reconnecting with backoff.

use std::time::Duration;

use conclave_proto::frame::CONTROL_PROTOCOL_VERSION;
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};

use super::Action;
use super::engine::{Engine, Link, ms};
use super::port::Input;
use crate::client::protocol::clock::REWIND_TOLERANCE_MS;
use crate::client::{ClientError, ClientEvent, DisconnectReason};
use crate::meeting::MeetingId;
use crate::transport::TransportError;

impl Engine {
    /// Asks for a connection, says hello, authenticates (registering on first use)
    /// and stocks prekeys.
    pub(super) async fn establish(&mut self) -> Result<(), ClientError> {
        let (conn, outcome) = self.port.connect(None).await;
        let tls_binding = outcome?;
        match self.authenticate(conn, tls_binding).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.port.act(Action::Close { conn });
                Err(e)
            }
        }
    }

    /// Says hello on `conn`; returns the server's answer (with the challenge) and this
    /// device's auth proof over the connection's TLS exporter and that challenge.
    async fn hello(
        &mut self,
        conn: super::ConnectionId,
        tls_binding: &[u8; conclave_proto::frame::TLS_EXPORTER_LEN],
    ) -> Result<(v1::HelloOk, Vec<u8>), ClientError> {
        let hello = self
            .port
            .request(
                conn,
                Request::Hello(v1::Hello {
                    protocol_version: CONTROL_PROTOCOL_VERSION,
                    mailbox_window_bytes: self.config.mailbox_window_bytes(),
                }),
            )
            .await?;
        let response::Result::Hello(hello) = hello else {
            return Err(ClientError::unexpected_answer("Hello"));
        };
        let signature = self
            .creds
            .device()
            .sign_auth_challenge(tls_binding, &hello.challenge)?
            .to_bytes()
            .to_vec();
        Ok((hello, signature))
    }

    /// Authenticates an already registered device on `conn` with `role`; returns the
    /// server's hello. (The primary connection uses [`Self::authenticate`], which
    /// also registers on first use.)
    pub(super) async fn authenticate_as(
        &mut self,
        conn: super::ConnectionId,
        tls_binding: [u8; conclave_proto::frame::TLS_EXPORTER_LEN],
        role: v1::ConnectionRole,
    ) -> Result<v1::HelloOk, ClientError> {
        let (hello, signature) = self.hello(conn, &tls_binding).await?;
        let authenticate = Request::Authenticate(v1::Authenticate {
            device_id: self.creds.device_id().as_bytes().to_vec(),
            auth_signature: signature,
            role: role as i32,
        });
        match self.port.request(conn, authenticate).await? {
            response::Result::Authenticated(_) => Ok(hello),
            _ => Err(ClientError::unexpected_answer("Authenticate")),
        }
    }

    async fn authenticate(
        &mut self,
        conn: super::ConnectionId,
        tls_binding: [u8; conclave_proto::frame::TLS_EXPORTER_LEN],
    ) -> Result<(), ClientError> {
        let (hello, signature) = self.hello(conn, &tls_binding).await?;
        let max_offset_ms = ms(self.config.max_clock_offset);
        let synced = self.clock.sync(
            hello.server_time_ms,
            self.local_ms(),
            self.mono_ms(),
            max_offset_ms,
        );
        if synced.behind_ms > REWIND_TOLERANCE_MS {
            tracing::warn!(
                server_ms = hello.server_time_ms,
                behind_ms = synced.behind_ms,
                "the server's clock is behind what it said before; the time here moves back by the tolerance at most, so no deadline moves out further"
            );
        }
        if synced.clamped {
            tracing::warn!(
                server_ms = hello.server_time_ms,
                max_offset_ms,
                "the server's clock is further from this device's than allowed; using the bound (check this device's clock, or distrust the server)"
            );
        }
        self.clock = synced.clock;
        let authenticate = Request::Authenticate(v1::Authenticate {
            device_id: self.creds.device_id().as_bytes().to_vec(),
            auth_signature: signature.clone(),
            role: v1::ConnectionRole::Primary as i32,
        });
        let held = match self.port.request(conn, authenticate).await {
            Ok(response::Result::Authenticated(a)) => a.prekeys_held,
            Err(e) if e.server_code() == Some(ErrorCode::NotFound) => {
                let register = Request::Register(v1::Register {
                    user_public_key: self.creds.user_public_key().to_bytes().to_vec(),
                    certificate: Some(self.creds.certificate().clone()),
                    auth_signature: signature,
                });
                match self.port.request(conn, register).await? {
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
        self.acks.new_connection();
        self.link = Some(Link {
            conn,
            tls_binding,
            challenge: hello.challenge,
            rooms: std::collections::HashMap::new(),
            node: None,
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
        let Some(conn) = self.link.as_ref().map(|l| l.conn) else {
            return;
        };
        self.port.with(|p| {
            p.inputs.retain(|input| {
                !matches!(input, Input::Event(c, v1::event::Event::PrekeysLow(_)) if *c == conn)
            });
            p.recount_inputs();
        });
    }

    /// Drops the primary connection (if any): the media of the meetings whose rooms
    /// were on it pauses, and those rooms must be rejoined (meetings on rooms-only
    /// connections to other nodes go on).
    pub(super) async fn drop_link(&mut self, reason: DisconnectReason) {
        let Some(link) = self.link.take() else {
            return;
        };
        self.port.act(Action::Close { conn: link.conn });
        for entry in self.meetings.values_mut().filter(|e| e.node.is_none()) {
            super::links::lose_room(entry);
        }
        self.prepared.connection_lost();
        let ids: Vec<_> = self.meetings.keys().copied().collect();
        for id in ids {
            self.show_prepared(id);
        }
        tracing::info!(%reason, "disconnected from the server");
        self.emit(ClientEvent::Disconnected { reason });
    }

    /// The server announced that it is shutting down: drop the link and reconnect after
    /// the delay it asked for (bounded to 50 ms ..= 30 s).
    pub(super) async fn server_shutting_down(&mut self, reconnect_after_ms: u64) {
        if self.link.is_none() {
            return;
        }
        let delay = Duration::from_millis(reconnect_after_ms.clamp(50, 30_000));
        self.drop_link(DisconnectReason::ServerShuttingDown {
            reconnect_after: delay,
        })
        .await;
        self.reconnect_at = Some(self.instant() + delay);
    }

    /// The connection broke: drop it and schedule a reconnect.
    pub(super) async fn connection_lost(&mut self, reason: TransportError) {
        if self.link.is_none() {
            return;
        }
        self.drop_link(DisconnectReason::Transport(reason)).await;
        self.backoff_ms = ms(self.config.reconnect_backoff);
        self.reconnect_at = Some(self.instant() + Duration::from_millis(self.backoff_ms));
    }

    /// One reconnect attempt; on success every meeting without a room rejoins it.
    pub(super) async fn reconnect(&mut self) {
        match self.establish().await {
            // Lost again while stocking prekeys: `connection_lost` has scheduled the
            // next attempt.
            Ok(()) if self.link.is_none() => {}
            Ok(()) => {
                self.reconnect_at = None;
                self.backoff_ms = 0;
                let ids: Vec<MeetingId> = self.meetings.keys().copied().collect();
                for id in ids {
                    let epoch = self
                        .meetings
                        .get(&id)
                        .filter(|e| e.room.is_none())
                        .map(|e| e.state.sending_epoch());
                    if let Some(epoch) = epoch {
                        self.join_room(id, epoch).await;
                    }
                    self.pump(id).await;
                }
                // Lost again while rejoining: the next attempt is scheduled.
                if self.link.is_none() {
                    return;
                }
                self.flush_outbox().await;
                self.emit(ClientEvent::Reconnected);
            }
            Err(e) => {
                self.backoff_ms = self
                    .backoff_ms
                    .saturating_mul(2)
                    .max(ms(self.config.reconnect_backoff))
                    .min(ms(self.config.max_reconnect_backoff));
                tracing::info!(error = %e, retry_in_ms = self.backoff_ms, "reconnect failed");
                self.reconnect_at = Some(self.instant() + Duration::from_millis(self.backoff_ms));
            }
        }
    }
}
