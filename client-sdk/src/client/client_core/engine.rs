//! The engine: the protocol state and the straight-line code that moves it. One input
//! at a time to completion, so protocol state needs no locks; it waits only on the
//! [`port`](super::port). Media never passes through it: the media path and
//! `send_frame` use the meetings' shared state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_proto::datagram::RoomHandle;
use conclave_proto::frame::TLS_EXPORTER_LEN;
use conclave_proto::v1::{self, client_frame::Request, response};
use rand_core::CryptoRngCore;

use super::port::{Input, PortHandle};
use super::{Action, AppEvent, Command, CommandId, ConnectionId, Reply};
use crate::UnixMillis;
use crate::client::directory::TrustStore;
use crate::client::presence::Presence;
use crate::client::protocol::acks::AckBatcher;
use crate::client::protocol::clock::ServerClock;
use crate::client::protocol::invitations::Invitations;
use crate::client::protocol::outbox::Outbox;
use crate::client::protocol::prepared::Preparations;
use crate::client::protocol::rotations::Rotations;
use crate::client::shared::MeetingShared;
use crate::client::{ClientConfig, ClientError, ClientEvent, ConnectionProblem, DeviceCredentials};
use crate::container::{DEFAULT_REPLAY_CAPACITY, ReplayCache};
use crate::identity::{DEFAULT_PREKEY_TTL_MS, MAX_PREKEYS_HELD, PrekeyPool};
use crate::meeting::rekey::MeetingState;
use crate::meeting::{Epoch, MeetingId};
use crate::transport::TransportError;

/// Prekeys per upload (the server's default `max_prekeys_per_upload`).
const PREKEY_UPLOAD_BATCH: usize = 100;

/// `d` in whole milliseconds, saturating (protocol time is kept in ms).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A meeting this device takes part in (accepted or started).
pub(super) struct Entry {
    pub state: MeetingState,
    pub shared: Arc<MeetingShared>,
    /// The room's handle on the current connection, once joined.
    pub room: Option<RoomHandle>,
    /// The room epoch this connection has proven (joined or rotated to).
    pub proven: Option<Epoch>,
    /// An epoch to join as soon as the room reaches it (our join came early).
    pub wanted: Option<Epoch>,
    pub presence: Presence,
    /// Highest sender index ever used, so a leader never reuses one.
    pub next_index: u32,
    /// When this meeting last told the app a keyframe was requested (coalescing).
    pub last_keyframe_request: Option<Instant>,
    /// Whether another user's device was on the roster since this device was last
    /// alone: [`MeetingEvent::Alone`](crate::client::MeetingEvent::Alone) fires once
    /// when the last one goes.
    pub had_others: bool,
    /// (epoch, sender index) pairs whose receive key is registered.
    pub installed: std::collections::BTreeSet<(Epoch, u32)>,
    /// The safety code last computed, with the sending epoch and roster version it
    /// was computed for (`meetings::current_safety_code`).
    pub safety: Option<((Epoch, u64), crate::safety::SafetyCode)>,
    /// The safety-words round of the sending epoch (review M4).
    pub sas: Option<crate::safety::round::SasRound>,
    /// When that round starts (its epoch settled) and resends.
    pub sas_timing: crate::client::protocol::sas_timing::SasTiming,
    /// Round messages of an epoch whose round has not started here yet.
    pub sas_early: crate::client::protocol::sas_early::EarlyRoundMessages,
    /// Reliable meeting messages of an epoch whose key has not arrived yet.
    pub early_messages: crate::client::protocol::early_messages::EarlyMessages,
    /// When to try joining the room again: the node answered `UNAVAILABLE` (its
    /// owner is failing over, or the node is between leases), `INTERNAL` or
    /// `RATE_LIMITED`.
    pub rejoin_at: Option<Instant>,
    /// Transient join refusals in a row (the backoff grows with them).
    pub rejoin_failures: u32,
    /// The cluster node a `WRONG_NODE` redirect named as the room's owner: its room
    /// lives on a rooms-only connection there. `None`: on the primary connection.
    pub node: Option<super::ServerTarget>,
    /// Redirects followed in a row for this room (bounded by
    /// `meetings::MAX_REDIRECTS`; reset by a successful join).
    pub redirects: u32,
    /// The room was lost (its connection ended, or it moved) and has not been joined
    /// again yet: the app was told media is interrupted.
    pub interrupted: bool,
}

/// An authenticated connection: the primary one, or a rooms-only one.
pub(super) struct Link {
    pub conn: ConnectionId,
    pub tls_binding: [u8; TLS_EXPORTER_LEN],
    pub challenge: Vec<u8>,
    /// Room handle on this connection → meeting.
    pub rooms: HashMap<RoomHandle, MeetingId>,
    /// `None`: the primary connection (to a configured server). Else the cluster node
    /// it reaches, as a redirect named it (a rooms-only connection).
    pub node: Option<super::ServerTarget>,
}

impl Link {
    /// The meeting whose room has `handle` on this connection.
    pub(super) fn meeting_of(&self, handle: RoomHandle) -> Option<MeetingId> {
        self.rooms.get(&handle).copied()
    }
}

pub(super) struct Engine {
    pub(super) config: ClientConfig,
    pub(super) creds: DeviceCredentials,
    pub(super) rng: Box<dyn CryptoRngCore + Send>,
    pub(super) port: PortHandle,
    pub(super) prekeys: PrekeyPool,
    pub(super) replay: ReplayCache,
    pub(super) trust: TrustStore,
    /// Lookups that containers from unknown senders may cost (review M8).
    pub(super) sender_lookups: crate::client::lookups::SenderLookups,
    pub(super) clock: ServerClock,
    /// The primary connection: directory, mailbox, and the rooms its node owns.
    pub(super) link: Option<Link>,
    /// Rooms-only connections, one per other cluster node that owns the room of one
    /// of this device's meetings (at most `links::MAX_ROOM_LINKS`).
    pub(super) room_links: Vec<Link>,
    /// When to try reconnecting (while `link` is `None`), and the current backoff.
    pub(super) reconnect_at: Option<Instant>,
    pub(super) backoff_ms: u64,
    /// The pool was not restored from storage: the server's prekeys (if any) are
    /// unusable and the next upload replaces them.
    pub(super) replace_prekeys: bool,
    /// An upper bound on the prekeys the server holds for this device: its count at
    /// authentication or after this device's last upload (it only loses prekeys since).
    pub(super) server_prekeys: usize,
    /// The server holds this device's current last-resort prekey: uploaded by this
    /// engine since it started and since the last rotation.
    pub(super) last_resort_uploaded: bool,
    pub(super) meetings: HashMap<MeetingId, Entry>,
    pub(super) invitations: Invitations,
    /// Meeting messages waiting for the connection, and resends.
    pub(super) outbox: Outbox,
    /// Room rotations to try again.
    pub(super) rotations: Rotations,
    /// The next Rekey of each meeting this device leads, wrapped ahead of time.
    pub(super) prepared: Preparations,
    /// Processed mailbox entries not acknowledged yet.
    pub(super) acks: AckBatcher,
    /// Monotonic origin of the presence clock.
    /// clock are measured from here.
    pub(super) origin: Instant,
}

impl Engine {
    pub(super) fn new(
        config: ClientConfig,
        mut creds: DeviceCredentials,
        rng: Box<dyn CryptoRngCore + Send>,
        port: PortHandle,
        now: Instant,
    ) -> Self {
        let (prekeys, restored) = creds.take_prekeys();
        let trust = TrustStore::new(config.pinned_users.iter().copied().chain([*creds.user()]));
        let prepared = Preparations::new(config.prepare_rekeys_after.map(ms));
        Engine {
            config,
            creds,
            rng,
            port,
            prekeys,
            replay: ReplayCache::new(DEFAULT_REPLAY_CAPACITY),
            sender_lookups: crate::client::lookups::SenderLookups::new(0),
            trust,
            clock: ServerClock::default(),
            link: None,
            room_links: Vec::new(),
            reconnect_at: None,
            backoff_ms: 0,
            replace_prekeys: !restored,
            server_prekeys: 0,
            last_resort_uploaded: false,
            meetings: HashMap::new(),
            invitations: Invitations::default(),
            outbox: Outbox::default(),
            rotations: Rotations::default(),
            prepared,
            acks: AckBatcher::default(),
            origin: now,
        }
    }

    /// The engine's life: connect (reporting the outcome of the first attempt), then
    /// handle inputs until `Close`.
    pub(super) async fn run(mut self) {
        if let Err(e) = self.establish().await {
            self.port.emit(AppEvent::ConnectFailed(e));
            return;
        }
        self.port.emit(AppEvent::Ready);
        loop {
            let wake = self.next_wake();
            self.port.with(|p| p.timeout = wake);
            match self.port.next_input().await {
                Input::Command(id, Command::Close) => {
                    self.shutdown().await;
                    self.command_done(id, Ok(Reply::Done));
                    // Commands queued behind the close are answered, not lost.
                    let queued: Vec<Input> = self.port.with(|p| {
                        p.input_bytes = 0;
                        p.inputs.drain(..).collect()
                    });
                    for input in queued {
                        if let Input::Command(id, _) = input {
                            self.command_done(id, Err(ClientError::Closed));
                        }
                    }
                    return;
                }
                Input::Command(id, command) => self.on_command(id, command).await,
                Input::Event(conn, event) => {
                    if self.is_current(conn) {
                        self.on_server_event(conn, event).await;
                    } else if self.is_room_link(conn) {
                        self.on_room_link_event(conn, event).await;
                    }
                }
                Input::Disconnected(conn, reason) => {
                    if self.is_current(conn) {
                        self.connection_lost(reason).await;
                    } else if self.is_room_link(conn) {
                        tracing::info!(error = %reason, "a room node's connection ended");
                        self.room_link_lost(conn, None).await;
                    }
                }
                Input::Timeout => self.on_timers().await,
            }
        }
    }

    fn is_current(&self, conn: ConnectionId) -> bool {
        self.link.as_ref().is_some_and(|l| l.conn == conn)
    }

    pub(super) fn command_done(&self, command: CommandId, result: Result<Reply, ClientError>) {
        self.port.emit(AppEvent::Reply { command, result });
    }

    /// Now, on the monotonic clock.
    pub(super) fn instant(&self) -> Instant {
        self.port.now()
    }

    /// This device's wall clock, ms since the Unix epoch.
    pub(super) fn local_ms(&self) -> u64 {
        self.port.wall_ms()
    }

    /// How long this device's invitations ring: the configured time, within bounds.
    pub(super) fn ring_timeout(&self) -> Duration {
        self.config.ring_timeout.clamp(
            crate::client::MIN_RING_TIMEOUT,
            crate::client::MAX_RING_TIMEOUT,
        )
    }

    /// The server's time now.
    pub(super) fn now(&self) -> UnixMillis {
        self.clock.at(self.local_ms(), self.mono_ms())
    }

    /// The local instant at which the server's clock reads `at`.
    pub(super) fn instant_of(&self, at: UnixMillis) -> Instant {
        self.instant() + Duration::from_millis(at.0.saturating_sub(self.now().0))
    }

    /// The media path's clock, ms since the engine started.
    pub(super) fn mono_ms(&self) -> u64 {
        let elapsed = self.instant().saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn emit(&self, event: ClientEvent) {
        self.port.emit(AppEvent::Client(event));
    }

    pub(super) fn next_wake(&self) -> Option<Instant> {
        let mut wake = self.reconnect_at;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        };
        consider(self.acks.due_at());
        if let Some(expiry) = self.invitations.next_expiry() {
            consider(Some(self.instant_of(expiry)));
        }
        // Resends and rotations wait for a connection (a reconnect wakes the loop).
        if self.link.is_some() {
            consider(self.outbox.next_resend());
            consider(self.rotations.next_at());
            consider(self.prepared.next_at().map(|at| self.instant_of(at)));
            // A long-lived connection rotates the last-resort prekey on time too.
            let rotation = self.prekeys.last_resort_rotation_at();
            consider(rotation.map(|at| self.instant_of(at)));
        }
        for entry in self.meetings.values() {
            consider(entry.sas_timing.next_wake());
            if self.can_join(entry) {
                consider(entry.rejoin_at);
            }
            consider(entry.state.poll_timeout().map(|t| self.instant_of(t)));
            let mono = self.mono_ms();
            consider(
                entry
                    .presence
                    .next_deadline()
                    .map(|d| self.instant() + Duration::from_millis(d.saturating_sub(mono))),
            );
        }
        wake
    }

    pub(super) async fn on_timers(&mut self) {
        tracing::trace!(device = ?self.creds.device_id(), "timers");
        if self.link.is_none() && self.reconnect_at.is_some_and(|at| at <= self.instant()) {
            self.reconnect().await;
        }
        if self.acks.is_due(self.instant()) {
            self.flush_acks().await;
        }
        if self.link.is_some() && self.outbox.resend_due(self.instant()) {
            self.resend_due().await;
        }
        if self.link.is_some()
            && self
                .rotations
                .next_at()
                .is_some_and(|at| at <= self.instant())
        {
            self.rotations_due().await;
        }
        self.sas_timers_due().await;
        self.rejoins_due().await;
        self.prepare_due().await;
        let now = self.now();
        if self.link.is_some()
            && self
                .prekeys
                .last_resort_rotation_at()
                .is_some_and(|at| at <= now)
        {
            // Rotates, and uploads the new one (the server's count is only an upper
            // bound here; a low count is reported by `PrekeysLow` anyway).
            let held = u32::try_from(self.server_prekeys).unwrap_or(u32::MAX);
            self.replenish(held).await;
        }
        self.purge_invitations(now);
        let mono = self.mono_ms();
        let ids: Vec<MeetingId> = self.meetings.keys().copied().collect();
        for id in ids {
            let Some(entry) = self.meetings.get_mut(&id) else {
                continue;
            };
            if entry.state.poll_timeout().is_some_and(|t| t <= now) {
                entry.state.handle_timeout(now, &mut self.rng);
            }
            let dropped = entry.presence.dropped(mono);
            for device in dropped {
                tracing::info!(device = ?device, "participant dropped out");
                entry.state.device_dropped(device, now);
            }
            self.pump(id).await;
        }
    }

    async fn on_command(&mut self, id: CommandId, command: Command) {
        tracing::debug!(device = ?self.creds.device_id(), ?command, "command");
        let result = match command {
            Command::StartMeeting {
                invitees,
                media_kinds,
            } => self
                .start_meeting(&invitees, &media_kinds)
                .await
                .map(|(meeting, report)| Reply::Started(meeting, report)),
            Command::Accept {
                meeting,
                media_kinds,
            } => self
                .accept(meeting, &media_kinds)
                .await
                .map(Reply::Accepted),
            Command::Reject { meeting } => self.reject(meeting).await.map(|()| Reply::Done),
            Command::Leave { meeting } => self.leave(meeting).await.map(|()| Reply::Done),
            Command::RequestKeyframe {
                meeting,
                sender_index,
            } => self
                .request_keyframe(meeting, sender_index)
                .await
                .map(|()| Reply::Done),
            Command::SendMessage {
                meeting,
                delivery,
                topic,
                body,
            } => self
                .send_message(meeting, delivery, &topic, &body)
                .await
                .map(|()| Reply::Done),
            Command::Remove { meeting, users } => {
                self.remove(meeting, &users).await.map(|()| Reply::Done)
            }
            Command::Invite {
                meeting,
                users,
                media_kinds,
            } => self
                .invite_more(meeting, &users, &media_kinds)
                .await
                .map(Reply::Invited),
            Command::PinnedUsers => Ok(Reply::PinnedUsers(self.trust.all())),
            Command::ExportPrekeys => Ok(Reply::Exported(self.prekeys.to_bytes())),
            Command::ExportCredentials => Ok(Reply::Exported(
                self.creds
                    .export_with_pool(Some(self.prekeys.to_bytes().as_slice())),
            )),
            Command::PushServerKey => self.push_server_key().await.map(Reply::PushKey),
            Command::RegisterPush {
                endpoint,
                p256dh,
                auth,
            } => self
                .register_push(endpoint, p256dh, auth)
                .await
                .map(|()| Reply::Done),
            Command::UnregisterPush => self.unregister_push().await.map(Reply::Unregistered),
            // Handled by the run loop.
            Command::Close => Ok(Reply::Done),
        };
        self.command_done(id, result);
    }

    async fn on_server_event(&mut self, conn: ConnectionId, event: v1::event::Event) {
        use v1::event::Event;
        tracing::debug!(device = ?self.creds.device_id(), ?event, "server event");
        match event {
            Event::Mailbox(delivery) => self.on_delivery(delivery).await,
            Event::PrekeysLow(low) => self.replenish(low.prekeys_held).await,
            Event::ShuttingDown(s) => self.server_shutting_down(s.reconnect_after_ms).await,
            room_event => self.on_room_event(conn, room_event).await,
        }
    }

    /// An event about a room on connection `conn` (primary or rooms-only).
    pub(super) async fn on_room_event(&mut self, conn: ConnectionId, event: v1::event::Event) {
        use v1::event::Event;
        match event {
            Event::MemberLeft(left) => {
                self.on_member_left(conn, RoomHandle(left.room_handle), &left.device_id);
            }
            Event::EpochChanged(changed) => {
                self.on_room_epoch(conn, RoomHandle(changed.room_handle), changed.epoch)
                    .await;
            }
            Event::RoomEvicted(evicted) => {
                self.on_evicted(conn, RoomHandle(evicted.room_handle)).await;
            }
            Event::MemberJoined(joined) => {
                let handle = RoomHandle(joined.room_handle);
                self.on_member_joined(conn, handle, &joined.device_id);
                self.resend_sas_soon(conn, handle, &joined.device_id);
            }
            Event::RoomMessage(message) => self.on_room_message(conn, message).await,
            Event::KeyframeRequested(request) => self.on_keyframe_requested(conn, &request),
            Event::Mailbox(_) | Event::PrekeysLow(_) | Event::ShuttingDown(_) => {
                tracing::debug!("a connection event outside a room ignored");
            }
        }
    }

    /// A `ShuttingDown` announcement for `conn` still queued behind an answer: the
    /// delay it asks for before reconnecting.
    pub(super) fn announced_shutdown(&self, conn: ConnectionId) -> Option<u64> {
        self.port.with(|p| {
            p.inputs.iter().find_map(|input| match input {
                Input::Event(c, v1::event::Event::ShuttingDown(s)) if *c == conn => {
                    Some(s.reconnect_after_ms)
                }
                _ => None,
            })
        })
    }

    /// Sends a request on the primary connection; a broken connection starts the
    /// reconnect cycle.
    pub(super) async fn request(
        &mut self,
        request: Request,
    ) -> Result<response::Result, ClientError> {
        let Some(link) = self.link.as_ref() else {
            return Err(ClientError::reconnecting());
        };
        let conn = link.conn;
        match self.port.request(conn, request).await {
            Ok(r) => Ok(r),
            Err(e @ TransportError::Closed(_)) => {
                // The server announces a shutdown, then ends the stream: when that
                // announcement is still queued behind this answer, honour it now.
                match self.announced_shutdown(conn) {
                    Some(after_ms) => self.server_shutting_down(after_ms).await,
                    None => self.connection_lost(e.clone()).await,
                }
                Err(ClientError::Connection(ConnectionProblem::Transport(e)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Tops the server's prekey pool up from `held` to the target, in uploads the
    /// server accepts, stopping once the server's own count (in each upload's answer)
    /// reaches the target: a stale `PrekeysLow` costs at most one batch. The first
    /// upload of a fresh pool (not restored from storage) replaces whatever the server
    /// held: those private halves are gone.
    ///
    /// A full local pool makes room by evicting its oldest prekeys. The server hands
    /// out lowest ids first and gains prekeys only from this device's uploads, so it
    /// holds at most [`Self::server_prekeys`] of them, all among the newest: evicting
    /// at most `pool - server_prekeys` of the oldest only drops private halves that
    /// somebody fetched and never used. Draining this device's prekeys (review H2)
    /// therefore never stops it from replenishing.
    ///
    /// It also rotates the last-resort prekey when due (none yet, or 7 days old) and
    /// uploads it with the first upload after this driver started and after each
    /// rotation, alone if no one-time prekey is needed: the directory hands it out when
    /// this device's one-time prekeys run out or are withheld.
    ///
    /// The server's count is its word, so it bounds nothing: one call makes at most
    /// enough uploads to fill the target from empty, plus one, and stops as soon as an
    /// upload leaves the server's count where it was. (Before, a server answering every
    /// upload with `prekeys_held: 0` kept this loop generating and uploading prekeys
    /// forever, and the client core never read another input.)
    pub(super) async fn replenish(&mut self, held: u32) {
        let mut held = if self.replace_prekeys {
            0
        } else {
            usize::try_from(held).unwrap_or(usize::MAX)
        };
        let target = usize::try_from(self.config.prekey_target).unwrap_or(MAX_PREKEYS_HELD);
        let now = self.now();
        self.prekeys.purge_expired(now);
        match self.prekeys.rotate_last_resort(
            self.creds.device(),
            now,
            DEFAULT_PREKEY_TTL_MS,
            &mut self.rng,
        ) {
            Ok(true) => self.last_resort_uploaded = false,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot rotate the last-resort prekey"),
        }
        if self.replace_prekeys {
            // Replacing deletes the server's last-resort prekey too.
            self.last_resort_uploaded = false;
        }
        let mut uploads_left = target.div_ceil(PREKEY_UPLOAD_BATCH) + 1;
        while held < target || !self.last_resort_uploaded {
            if uploads_left == 0 {
                tracing::warn!(
                    held,
                    target,
                    "the server's prekey count stays below the target after every upload \
                     this round allows; trying again at the next PrekeysLow"
                );
                return;
            }
            uploads_left -= 1;
            let mut batch = target.saturating_sub(held).min(PREKEY_UPLOAD_BATCH);
            let over = (self.prekeys.len() + batch).saturating_sub(MAX_PREKEYS_HELD);
            if over > 0 {
                let orphans = self.prekeys.len().saturating_sub(self.server_prekeys);
                let evicted = self.prekeys.evict_oldest(over.min(orphans));
                tracing::info!(
                    evicted,
                    "prekey pool full: evicted the oldest prekeys (fetched and never used)"
                );
                batch = batch.min(MAX_PREKEYS_HELD.saturating_sub(self.prekeys.len()));
                if batch == 0 && self.last_resort_uploaded {
                    tracing::warn!("prekey pool full of prekeys the server may still hold");
                    return;
                }
            }
            let mut last_resort_failed = false;
            let last_resort = if self.last_resort_uploaded {
                None
            } else {
                match self.prekeys.last_resort_prekey(self.creds.device()) {
                    Ok(lr) => lr,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot sign the last-resort prekey; trying again later");
                        last_resort_failed = true;
                        None
                    }
                }
            };
            if batch == 0 && last_resort.is_none() {
                return;
            }
            let prekeys = match self.prekeys.generate(
                self.creds.device(),
                batch,
                now,
                DEFAULT_PREKEY_TTL_MS,
                &mut self.rng,
            ) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot generate prekeys");
                    return;
                }
            };
            let upload = v1::UploadPrekeys {
                prekeys,
                replace: self.replace_prekeys,
                last_resort,
            };
            match self.request(Request::UploadPrekeys(upload)).await {
                Ok(response::Result::PrekeysUploaded(r)) => {
                    self.replace_prekeys = false;
                    // Sent now, or there is none to send (nothing to retry); not if it
                    // could not be signed (the next round tries again).
                    self.last_resort_uploaded = !last_resort_failed;
                    let before = held;
                    held = usize::try_from(r.prekeys_held).unwrap_or(usize::MAX);
                    self.server_prekeys = held;
                    self.drop_stale_prekeys_low();
                    self.emit(ClientEvent::PrekeysUploaded {
                        held: r.prekeys_held,
                    });
                    if batch > 0 && held <= before && held < target {
                        tracing::warn!(
                            held,
                            uploaded = batch,
                            "the server's prekey count did not rise with an upload; \
                             trying again at the next PrekeysLow"
                        );
                        return;
                    }
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to UploadPrekeys");
                    return;
                }
                Err(e) => {
                    // The server may have stored them after all: count them as held.
                    self.server_prekeys = self.server_prekeys.saturating_add(batch);
                    tracing::warn!(error = %e, "prekey upload failed");
                    return;
                }
            }
        }
    }

    async fn shutdown(&mut self) {
        let ids: Vec<MeetingId> = self.meetings.keys().copied().collect();
        for id in ids {
            let _ = self.leave(id).await;
        }
        if let Some(link) = self.link.take() {
            self.port.act(Action::Close { conn: link.conn });
        }
        for link in std::mem::take(&mut self.room_links) {
            self.port.act(Action::Close { conn: link.conn });
        }
    }
}
