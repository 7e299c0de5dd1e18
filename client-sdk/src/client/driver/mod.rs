//! The driver task: owns the connection and every meeting's state machine.
//!
//! It waits on three sources (app commands, server events, timers) and handles one
//! input at a time to completion, so protocol state needs no locks. Media never passes
//! through it: the reader task and `send_frame` use the meetings' shared state.

mod inbox;
mod link;
mod meetings;
mod words;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conclave_proto::v1::{self, client_frame::Request, response};
use rand_core::OsRng;
use tokio::sync::{mpsc, oneshot};

use super::directory::TrustStore;
use super::presence::Presence;
use super::protocol::acks::AckBatcher;
use super::protocol::clock::ServerClock;
use super::protocol::invitations::Invitations;
use super::protocol::outbox::Outbox;
use super::protocol::rotations::Rotations;
use super::shared::MeetingShared;
use super::{
    ClientConfig, ClientError, ClientEvent, ConnectionProblem, DeviceCredentials, InviteReport,
    MediaKind, Meeting,
};
use crate::container::{DEFAULT_REPLAY_CAPACITY, ReplayCache};
use crate::identity::{DEFAULT_PREKEY_TTL_MS, MAX_PREKEYS_HELD, PrekeyPool, UserIdentity};
use crate::meeting::MeetingId;
use crate::meeting::rekey::MeetingState;
use crate::transport::TransportError;
use crate::{UnixMillis, UserId};
use link::Link;

/// Commands queued by the app before the driver stops taking more.
const COMMAND_QUEUE: usize = 256;
/// Client events buffered for the app.
const EVENT_QUEUE: usize = 1024;
/// Prekeys per upload (the server's default `max_prekeys_per_upload`).
const PREKEY_UPLOAD_BATCH: usize = 100;

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// A request from the app.
#[derive(Debug)]
pub(crate) enum Command {
    Start {
        invitees: Vec<UserId>,
        media_kinds: Vec<MediaKind>,
        reply: Reply<(Meeting, InviteReport)>,
    },
    Accept {
        meeting: MeetingId,
        media_kinds: Vec<MediaKind>,
        reply: Reply<Meeting>,
    },
    Reject {
        meeting: MeetingId,
        reply: Reply<()>,
    },
    Leave {
        meeting: MeetingId,
        reply: Reply<()>,
    },
    Remove {
        meeting: MeetingId,
        users: Vec<UserId>,
        reply: Reply<()>,
    },
    Invite {
        meeting: MeetingId,
        users: Vec<UserId>,
        media_kinds: Vec<MediaKind>,
        reply: Reply<InviteReport>,
    },
    PinnedUsers {
        reply: Reply<Vec<UserIdentity>>,
    },
    ExportPrekeys {
        reply: Reply<zeroize::Zeroizing<Vec<u8>>>,
    },
    Close {
        reply: Reply<()>,
    },
}

/// `d` in whole milliseconds, saturating (protocol time is kept in ms).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// This machine's clock, ms since the Unix epoch.
fn local_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A meeting this device takes part in (accepted or started).
pub(crate) struct Entry {
    pub state: MeetingState,
    pub shared: Arc<MeetingShared>,
    /// The room epoch this connection has proven (joined or rotated to).
    pub proven: Option<u64>,
    /// An epoch to join as soon as the room reaches it (our join came early).
    pub wanted: Option<u64>,
    pub presence: Presence,
    /// Highest sender index ever used, so a leader never reuses one.
    pub next_index: u32,
    /// (epoch, sender index) pairs whose receive key is registered.
    pub installed: std::collections::BTreeSet<(u64, u32)>,
    /// The safety-words round of the sending epoch (review M4).
    pub sas: Option<crate::safety::round::SasRound>,
    /// When to resend this device's round messages next, and resends left.
    pub sas_resend: Option<(Instant, u32)>,
}

pub(crate) struct Driver {
    config: ClientConfig,
    creds: DeviceCredentials,
    rng: OsRng,
    prekeys: PrekeyPool,
    replay: ReplayCache,
    trust: TrustStore,
    /// Lookups that containers from unknown senders may cost (review M8).
    sender_lookups: crate::client::lookups::SenderLookups,
    clock: ServerClock,
    link: Option<Link>,
    /// When to try reconnecting (while `link` is `None`), and the current backoff.
    reconnect_at: Option<Instant>,
    backoff_ms: u64,
    /// The pool was not restored from storage: the server's prekeys (if any) are
    /// unusable and the next upload replaces them.
    replace_prekeys: bool,
    /// An upper bound on the prekeys the server holds for this device: its count at
    /// authentication or after this device's last upload (it only loses prekeys since).
    server_prekeys: usize,
    /// The server holds this device's current last-resort prekey: uploaded by this
    /// driver since it started and since the last rotation.
    last_resort_uploaded: bool,
    meetings: HashMap<MeetingId, Entry>,
    invitations: Invitations,
    /// Meeting messages waiting for the connection, and resends.
    outbox: Outbox,
    /// Room rotations to try again.
    rotations: Rotations,
    /// Processed mailbox entries not acknowledged yet.
    acks: AckBatcher,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::WeakSender<Command>,
    events: mpsc::Sender<ClientEvent>,
    /// Monotonic origin of the media reader's clock (presence timestamps).
    epoch: Instant,
    /// Media datagrams received on any connection, for any room.
    datagrams: Arc<AtomicU64>,
}

/// Connects, authenticates and spawns the driver.
pub(crate) async fn start(
    config: ClientConfig,
    mut creds: DeviceCredentials,
    datagrams: Arc<AtomicU64>,
) -> Result<(mpsc::Sender<Command>, mpsc::Receiver<ClientEvent>), ClientError> {
    let (command_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (prekeys, restored) = creds.take_prekeys();
    let trust = TrustStore::new(config.pinned_users.iter().copied().chain([*creds.user()]));
    let mut driver = Driver {
        config,
        creds,
        rng: OsRng,
        prekeys,
        replay: ReplayCache::new(DEFAULT_REPLAY_CAPACITY),
        sender_lookups: crate::client::lookups::SenderLookups::new(0),
        trust,
        clock: ServerClock::default(),
        link: None,
        reconnect_at: None,
        backoff_ms: 0,
        replace_prekeys: !restored,
        server_prekeys: 0,
        last_resort_uploaded: false,
        meetings: HashMap::new(),
        invitations: Invitations::default(),
        outbox: Outbox::default(),
        rotations: Rotations::default(),
        acks: AckBatcher::default(),
        commands,
        command_tx: command_tx.downgrade(),
        events,
        epoch: Instant::now(),
        datagrams: Arc::clone(&datagrams),
    };
    driver.establish().await?;
    tokio::spawn(driver.run());
    Ok((command_tx, events_rx))
}

impl Driver {
    /// The server's time now.
    fn now(&self) -> UnixMillis {
        self.clock.at(local_ms())
    }

    /// The local instant at which the server's clock reads `at`.
    fn instant_of(&self, at: UnixMillis) -> Instant {
        Instant::now() + Duration::from_millis(at.0.saturating_sub(self.now().0))
    }

    /// The media reader's clock, ms since the driver started.
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn emit(&self, event: ClientEvent) {
        if self.events.try_send(event).is_err() {
            tracing::warn!("client event queue full or closed; event dropped");
        }
    }

    async fn run(mut self) {
        loop {
            let wake = self.next_wake();
            let server_event = async {
                match self.link.as_mut() {
                    Some(link) => match link.backlog.pop_front() {
                        Some(event) => Some(event),
                        None => link.events.recv().await,
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        self.shutdown().await;
                        return;
                    };
                    if let Command::Close { reply } = command {
                        self.shutdown().await;
                        let _ = reply.send(Ok(()));
                        return;
                    }
                    self.on_command(command).await;
                }
                event = server_event => match event {
                    Some(event) => self.on_server_event(event).await,
                    None => self.connection_lost("the connection closed").await,
                },
                () = sleep_until(wake) => self.on_timers().await,
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
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
            // A long-lived connection rotates the last-resort prekey on time too.
            let rotation = self.prekeys.last_resort_rotation_at();
            consider(rotation.map(|at| self.instant_of(at)));
        }
        for entry in self.meetings.values() {
            if self.link.is_some() {
                consider(entry.sas_resend.map(|(at, _)| at));
            }
            consider(entry.state.poll_timeout().map(|t| self.instant_of(t)));
            let mono = self.mono_ms();
            consider(
                entry
                    .presence
                    .next_deadline()
                    .map(|d| Instant::now() + Duration::from_millis(d.saturating_sub(mono))),
            );
        }
        wake
    }

    async fn on_timers(&mut self) {
        tracing::trace!(device = ?self.creds.device_id(), "timers");
        if self.link.is_none() && self.reconnect_at.is_some_and(|at| at <= Instant::now()) {
            self.reconnect().await;
        }
        if self.acks.is_due(Instant::now()) {
            self.flush_acks().await;
        }
        if self.link.is_some() && self.outbox.resend_due(Instant::now()) {
            self.resend_due().await;
        }
        if self.link.is_some()
            && self
                .rotations
                .next_at()
                .is_some_and(|at| at <= Instant::now())
        {
            self.rotations_due().await;
        }
        if self.link.is_some() {
            self.sas_resends_due().await;
        }
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

    async fn on_command(&mut self, command: Command) {
        tracing::debug!(device = ?self.creds.device_id(), ?command, "command");
        match command {
            Command::Start {
                invitees,
                media_kinds,
                reply,
            } => {
                let r = self.start_meeting(&invitees, &media_kinds).await;
                let _ = reply.send(r);
            }
            Command::Accept {
                meeting,
                media_kinds,
                reply,
            } => {
                let r = self.accept(meeting, &media_kinds).await;
                let _ = reply.send(r);
            }
            Command::Reject { meeting, reply } => {
                let r = self.reject(meeting).await;
                let _ = reply.send(r);
            }
            Command::Leave { meeting, reply } => {
                let r = self.leave(meeting).await;
                let _ = reply.send(r);
            }
            Command::Remove {
                meeting,
                users,
                reply,
            } => {
                let r = self.remove(meeting, &users).await;
                let _ = reply.send(r);
            }
            Command::Invite {
                meeting,
                users,
                media_kinds,
                reply,
            } => {
                let r = self.invite_more(meeting, &users, &media_kinds).await;
                let _ = reply.send(r);
            }
            Command::PinnedUsers { reply } => {
                let _ = reply.send(Ok(self.trust.all()));
            }
            Command::ExportPrekeys { reply } => {
                let _ = reply.send(Ok(self.prekeys.to_bytes()));
            }
            Command::Close { reply } => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn on_server_event(&mut self, event: v1::event::Event) {
        use v1::event::Event;
        tracing::debug!(device = ?self.creds.device_id(), ?event, "server event");
        match event {
            Event::Mailbox(delivery) => self.on_delivery(delivery).await,
            Event::PrekeysLow(low) => self.replenish(low.prekeys_held).await,
            Event::MemberLeft(left) => self.on_member_left(left.room_handle, &left.device_id),
            Event::EpochChanged(changed) => {
                self.on_room_epoch(changed.room_handle, changed.epoch).await;
            }
            Event::RoomEvicted(evicted) => self.on_evicted(evicted.room_handle).await,
            Event::ShuttingDown(s) => {
                let delay = s.reconnect_after_ms.clamp(50, 30_000);
                self.drop_link("the server is shutting down").await;
                self.reconnect_at = Some(Instant::now() + Duration::from_millis(delay));
            }
            Event::MemberJoined(joined) => {
                self.on_member_joined(joined.room_handle, &joined.device_id);
                self.resend_sas_soon(joined.room_handle);
            }
            Event::RoomMessage(message) => self.on_room_message(message).await,
        }
    }

    /// Sends a request on the current connection; a broken connection starts the
    /// reconnect cycle.
    async fn request(&mut self, request: Request) -> Result<response::Result, ClientError> {
        let Some(link) = self.link.as_ref() else {
            return Err(ClientError::reconnecting());
        };
        let conn = Arc::clone(&link.conn);
        match conn.request(request).await {
            Ok(r) => Ok(r),
            Err(e @ TransportError::Closed(_)) => {
                self.connection_lost(&e.to_string()).await;
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
    async fn replenish(&mut self, held: u32) {
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
        while held < target || !self.last_resort_uploaded {
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
            let last_resort = if self.last_resort_uploaded {
                None
            } else {
                match self.prekeys.last_resort_prekey(self.creds.device()) {
                    Ok(lr) => lr,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot sign the last-resort prekey");
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
                    // Sent now, or there is none to send (nothing to retry).
                    self.last_resort_uploaded = true;
                    held = usize::try_from(r.prekeys_held).unwrap_or(usize::MAX);
                    self.server_prekeys = held;
                    self.drop_stale_prekeys_low();
                    self.emit(ClientEvent::PrekeysUploaded {
                        held: r.prekeys_held,
                    });
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
            link.close().await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
