//! The tokio shell around [`ClientCore`]: it moves bytes and time, and decides nothing.
//!
//! One task owns the core and its connections (the primary one, and in a cluster one
//! rooms-only connection per other node that owns a room of this device's meetings).
//! It waits on three sources (app commands, server events on any connection, the
//! core's timer), hands each to the core (server events that are already waiting on
//! the same connection go with it, in one step), then carries out what the core asks
//! (connect, close, send a request and feed back its answer, link a room's media,
//! deliver replies and events) until the core waits again. Each step of the
//! core runs on tokio's blocking pool: sealing and opening containers costs P-384
//! operations that must not stall the runtime's workers. A media reader task per
//! connection hands datagrams to their meetings; media never passes through the core.

mod bootstrap;
mod media;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use tokio::sync::{mpsc, oneshot};

use super::client_core::{
    Action, AppEvent, ClientCore, Command as CoreCommand, CommandId, ConnectionId, MeetingParts,
    OutgoingRequest, Reply, ServerTarget,
};
use super::{
    ClientConfig, ClientError, ClientEvent, DeviceCredentials, InviteReport, MediaKind, Meeting,
};
use crate::UnixMillis;
use crate::UserId;
use crate::client::network::Traffic;
use crate::client::shared::RoomLink;
use crate::identity::UserIdentity;
use crate::meeting::MeetingId;
use crate::transport::{ClosedReason, ControlConnection, EventStream, TransportError};
use media::Rooms;

/// Commands queued by the app before the shell stops taking more.
const COMMAND_QUEUE: usize = 256;
/// Client events buffered for the app.
const EVENT_QUEUE: usize = 1024;
/// Most server events handed to the core in one step.
const EVENTS_PER_STEP: usize = 64;

type ReplyTo<T> = oneshot::Sender<Result<T, ClientError>>;

/// A request from the app, with where its answer goes.
#[derive(Debug)]
pub(crate) enum Command {
    Start {
        invitees: Vec<UserId>,
        media_kinds: Vec<MediaKind>,
        reply: ReplyTo<(Meeting, InviteReport)>,
    },
    Accept {
        meeting: MeetingId,
        media_kinds: Vec<MediaKind>,
        reply: ReplyTo<Meeting>,
    },
    Reject {
        meeting: MeetingId,
        reply: ReplyTo<()>,
    },
    Leave {
        meeting: MeetingId,
        reply: ReplyTo<()>,
    },
    RequestKeyframe {
        meeting: MeetingId,
        sender_index: u32,
        reply: ReplyTo<()>,
    },
    SendMessage {
        meeting: MeetingId,
        delivery: crate::meeting::messages::Delivery,
        topic: String,
        body: Vec<u8>,
        reply: ReplyTo<()>,
    },
    Remove {
        meeting: MeetingId,
        users: Vec<UserId>,
        reply: ReplyTo<()>,
    },
    Invite {
        meeting: MeetingId,
        users: Vec<UserId>,
        media_kinds: Vec<MediaKind>,
        reply: ReplyTo<InviteReport>,
    },
    PinnedUsers {
        reply: ReplyTo<Vec<UserIdentity>>,
    },
    ExportPrekeys {
        reply: ReplyTo<zeroize::Zeroizing<Vec<u8>>>,
    },
    ExportCredentials {
        reply: ReplyTo<zeroize::Zeroizing<Vec<u8>>>,
    },
    PushServerKey {
        reply: ReplyTo<[u8; 65]>,
    },
    RegisterPush {
        endpoint: String,
        p256dh: [u8; 65],
        auth: [u8; 16],
        reply: ReplyTo<()>,
    },
    UnregisterPush {
        reply: ReplyTo<bool>,
    },
    Close {
        reply: ReplyTo<()>,
    },
}

/// Where a command's reply goes, by the kind of answer it expects.
enum Pending {
    Start(ReplyTo<(Meeting, InviteReport)>),
    Accept(ReplyTo<Meeting>),
    Done(ReplyTo<()>),
    Invite(ReplyTo<InviteReport>),
    Pinned(ReplyTo<Vec<UserIdentity>>),
    Exported(ReplyTo<zeroize::Zeroizing<Vec<u8>>>),
    PushKey(ReplyTo<[u8; 65]>),
    Unregistered(ReplyTo<bool>),
}

impl Command {
    fn split(self) -> (CoreCommand, Pending) {
        match self {
            Command::Start {
                invitees,
                media_kinds,
                reply,
            } => (
                CoreCommand::StartMeeting {
                    invitees,
                    media_kinds,
                },
                Pending::Start(reply),
            ),
            Command::Accept {
                meeting,
                media_kinds,
                reply,
            } => (
                CoreCommand::Accept {
                    meeting,
                    media_kinds,
                },
                Pending::Accept(reply),
            ),
            Command::Reject { meeting, reply } => {
                (CoreCommand::Reject { meeting }, Pending::Done(reply))
            }
            Command::Leave { meeting, reply } => {
                (CoreCommand::Leave { meeting }, Pending::Done(reply))
            }
            Command::RequestKeyframe {
                meeting,
                sender_index,
                reply,
            } => (
                CoreCommand::RequestKeyframe {
                    meeting,
                    sender_index,
                },
                Pending::Done(reply),
            ),
            Command::SendMessage {
                meeting,
                delivery,
                topic,
                body,
                reply,
            } => (
                CoreCommand::SendMessage {
                    meeting,
                    delivery,
                    topic,
                    body,
                },
                Pending::Done(reply),
            ),
            Command::Remove {
                meeting,
                users,
                reply,
            } => (CoreCommand::Remove { meeting, users }, Pending::Done(reply)),
            Command::Invite {
                meeting,
                users,
                media_kinds,
                reply,
            } => (
                CoreCommand::Invite {
                    meeting,
                    users,
                    media_kinds,
                },
                Pending::Invite(reply),
            ),
            Command::PinnedUsers { reply } => (CoreCommand::PinnedUsers, Pending::Pinned(reply)),
            Command::ExportPrekeys { reply } => {
                (CoreCommand::ExportPrekeys, Pending::Exported(reply))
            }
            Command::ExportCredentials { reply } => {
                (CoreCommand::ExportCredentials, Pending::Exported(reply))
            }
            Command::PushServerKey { reply } => {
                (CoreCommand::PushServerKey, Pending::PushKey(reply))
            }
            Command::RegisterPush {
                endpoint,
                p256dh,
                auth,
                reply,
            } => (
                CoreCommand::RegisterPush {
                    endpoint,
                    p256dh,
                    auth,
                },
                Pending::Done(reply),
            ),
            Command::UnregisterPush { reply } => {
                (CoreCommand::UnregisterPush, Pending::Unregistered(reply))
            }
            Command::Close { reply } => (CoreCommand::Close, Pending::Done(reply)),
        }
    }
}

/// This machine's clock, ms since the Unix epoch.
fn local_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A live connection.
struct Link {
    id: ConnectionId,
    conn: Arc<ControlConnection>,
    /// `None` once the stream ended (the core has been told).
    events: Option<EventStream>,
    rooms: Rooms,
    reader: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Closes the connection; what it carried stays in `traffic`'s totals.
    fn close(self, traffic: &Traffic) {
        self.reader.abort();
        self.conn.quic().close(0u32.into(), b"bye");
        traffic.closed(self.conn.quic());
    }
}

struct Shell {
    /// Taken while a step runs on the blocking pool.
    core: Option<Box<ClientCore>>,
    config: ClientConfig,
    /// The open connections (bounded by the core: one primary, a few rooms-only).
    links: Vec<Link>,
    /// Which connection's events are polled first next (so that none starves).
    poll_first: usize,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::WeakSender<Command>,
    events: mpsc::Sender<ClientEvent>,
    pending: HashMap<CommandId, Pending>,
    next_command: u64,
    /// The outcome of the first connection, once known.
    ready: Option<Result<(), ClientError>>,
    /// Origin of the media readers' clocks.
    origin: Instant,
    /// Media datagrams received on any connection, for any room.
    datagrams: Arc<AtomicU64>,
    /// The connections' network counters, read by the client.
    traffic: Arc<Traffic>,
    /// How the configured servers are tried.
    bootstrap: bootstrap::Bootstrap,
}

/// Connects, authenticates and spawns the shell's task.
pub(crate) async fn start(
    config: ClientConfig,
    creds: DeviceCredentials,
    datagrams: Arc<AtomicU64>,
    traffic: Arc<Traffic>,
) -> Result<(mpsc::Sender<Command>, mpsc::Receiver<ClientEvent>), ClientError> {
    let (command_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let now = Instant::now();
    let core = ClientCore::new(
        config.clone(),
        creds,
        Box::new(OsRng),
        now,
        UnixMillis(local_ms()),
    );
    let mut shell = Shell {
        core: Some(Box::new(core)),
        config,
        links: Vec::new(),
        poll_first: 0,
        commands,
        command_tx: command_tx.downgrade(),
        events,
        pending: HashMap::new(),
        next_command: 0,
        ready: None,
        origin: now,
        datagrams,
        traffic,
        bootstrap: bootstrap::Bootstrap::default(),
    };
    shell.carry_out().await;
    match shell.ready.take() {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(e),
        None => return Err(ClientError::Closed),
    }
    tokio::spawn(shell.run());
    Ok((command_tx, events_rx))
}

impl Shell {
    /// Open connection `conn`.
    fn link(&self, conn: ConnectionId) -> Option<&Link> {
        self.links.iter().find(|l| l.id == conn)
    }

    fn core(&self) -> &ClientCore {
        self.core
            .as_deref()
            .expect("the core is back in place after every step")
    }

    fn core_mut(&mut self) -> &mut ClientCore {
        self.core
            .as_deref_mut()
            .expect("the core is back in place after every step")
    }

    /// Runs `input` on the core, off the runtime's workers.
    async fn step(&mut self, input: impl FnOnce(&mut ClientCore, Instant) + Send + 'static) {
        let Some(mut core) = self.core.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            core.handle_wall_clock(UnixMillis(local_ms()), now);
            input(&mut core, now);
            core
        })
        .await
        {
            Ok(core) => self.core = Some(core),
            Err(e) => {
                // The core panicked, or the runtime is shutting down and cancelled the
                // step: nothing can go on. Pending replies see `Closed`.
                if e.is_cancelled() {
                    tracing::debug!("the client core stopped: its runtime is shutting down");
                } else {
                    tracing::error!(error = %e, "the client core stopped unexpectedly");
                }
                self.pending.clear();
            }
        }
    }

    async fn run(mut self) {
        while self.core.as_ref().is_some_and(|c| !c.is_finished()) {
            let wake = self.core().poll_timeout();
            self.poll_first = self.poll_first.wrapping_add(1);
            let server_event = next_server_event(&mut self.links, self.poll_first);
            tokio::select! {
                command = self.commands.recv() => {
                    let (command, pending) = match command {
                        Some(command) => {
                            let (command, pending) = command.split();
                            (command, Some(pending))
                        }
                        // Every handle is gone: leave and close.
                        None => (CoreCommand::Close, None),
                    };
                    let id = CommandId(self.next_command);
                    self.next_command += 1;
                    if let Some(pending) = pending {
                        self.pending.insert(id, pending);
                    }
                    self.step(move |core, now| core.handle_command(id, command, now)).await;
                }
                (conn, event) = server_event => match event {
                    Some(event) => {
                        let batch = self.ready_events(conn, event);
                        self.step(move |core, now| {
                            for event in batch {
                                core.handle_event(conn, event, now);
                            }
                        })
                        .await;
                    }
                    None => {
                        let link = self.links.iter_mut().find(|l| l.id == conn);
                        let closed = link.and_then(|link| {
                            let events = link.events.take();
                            events
                                .and_then(|e| e.fell_behind())
                                .or_else(|| link.conn.quic().close_reason().map(ClosedReason::Connection))
                        });
                        let reason =
                            TransportError::Closed(closed.unwrap_or(ClosedReason::StreamEnded));
                        self.step(move |core, now| core.handle_disconnected(conn, reason, now)).await;
                    }
                },
                () = sleep_until(wake) => {
                    self.step(ClientCore::handle_timeout).await;
                }
            }
            self.carry_out().await;
        }
        for link in self.links.drain(..) {
            link.close(&self.traffic);
        }
    }

    /// `first` and the events already waiting behind it on `conn`, to hand to the core
    /// in one step: a burst (a meeting's safety-words round, a rekey's room events)
    /// costs one trip to the blocking pool, not one per event. Bounded by
    /// [`EVENTS_PER_STEP`] and by the room left in the core's input queue.
    fn ready_events(
        &mut self,
        conn: ConnectionId,
        first: conclave_proto::v1::event::Event,
    ) -> Vec<conclave_proto::v1::event::Event> {
        let mut room = self.core().input_room();
        room.inputs = room.inputs.min(EVENTS_PER_STEP);
        let mut bytes = first.encoded_len();
        let mut batch = vec![first];
        if let Some(stream) = self
            .links
            .iter_mut()
            .find(|l| l.id == conn)
            .and_then(|l| l.events.as_mut())
        {
            while room.admits(batch.len(), bytes)
                && let Some(event) = stream.try_recv()
            {
                bytes = bytes.saturating_add(event.encoded_len());
                batch.push(event);
            }
        }
        batch
    }

    /// Carries out everything the core asks until it waits for input.
    async fn carry_out(&mut self) {
        while self.core.is_some() {
            let core = self.core_mut();
            if let Some(action) = core.poll_action() {
                self.act(action).await;
            } else if let Some(event) = core.poll_app_event() {
                self.deliver(event);
            } else if let Some(request) = core.poll_request() {
                self.perform(request).await;
            } else {
                return;
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Connect { conn, to } => {
                let connected = match to {
                    None => self.bootstrap.connect(&self.config).await,
                    Some(target) => {
                        connect_to_target(&target, self.bootstrap.last(), &self.config).await
                    }
                };
                match connected {
                    Ok((control, events)) => {
                        let binding = *control.tls_binding();
                        self.traffic.opened(control.quic());
                        let control = Arc::new(control);
                        let rooms = Rooms::default();
                        let reader = tokio::spawn(media::read_media(
                            control.quic().clone(),
                            Arc::clone(&rooms),
                            self.origin,
                            Arc::clone(&self.datagrams),
                        ));
                        self.links.push(Link {
                            id: conn,
                            conn: control,
                            events: Some(events),
                            rooms,
                            reader,
                        });
                        self.step(move |core, now| core.handle_connected(conn, binding, now))
                            .await;
                    }
                    Err(e) => {
                        self.step(move |core, now| core.handle_connect_failed(conn, e, now))
                            .await;
                    }
                }
            }
            Action::Close { conn } => {
                if let Some(at) = self.links.iter().position(|l| l.id == conn) {
                    let link = self.links.swap_remove(at);
                    // A room linked earlier in this step must not keep pointing at
                    // the closed connection.
                    media::unlink_all(&link.rooms);
                    link.close(&self.traffic);
                }
            }
            Action::LinkRoom {
                conn,
                handle,
                meeting,
            } => {
                if let Some(link) = self.link(conn) {
                    meeting.0.set_room(Some(RoomLink {
                        conn: link.conn.quic().clone(),
                        handle,
                    }));
                    media::link_room(&link.rooms, handle, meeting.0);
                }
            }
            Action::UnlinkRoom { conn, handle } => {
                if let Some(link) = self.link(conn) {
                    media::unlink_room(&link.rooms, handle);
                }
            }
        }
    }

    /// Sends `request` and feeds its answer back, with the server events that arrived
    /// before it (the server queues a request's events before its answer).
    async fn perform(&mut self, request: OutgoingRequest) {
        let OutgoingRequest { id, conn, request } = request;
        // Bounded by the room left in the core's input queue; the rest stay in the
        // transport's own bounded queue.
        let room = self.core().input_room();
        let (answer, events) = match self.links.iter_mut().find(|l| l.id == conn) {
            Some(link) => {
                let control = Arc::clone(&link.conn);
                let answer = control.request(request).await;
                let mut events = Vec::new();
                let mut bytes = 0usize;
                if let Some(stream) = link.events.as_mut() {
                    while room.admits(events.len(), bytes)
                        && let Some(event) = stream.try_recv()
                    {
                        bytes = bytes.saturating_add(event.encoded_len());
                        events.push(event);
                    }
                }
                (answer, events)
            }
            None => (Err(TransportError::Closed(ClosedReason::Gone)), Vec::new()),
        };
        self.step(move |core, now| {
            for event in events {
                core.handle_event(conn, event, now);
            }
            core.handle_response(id, answer, now);
        })
        .await;
    }

    fn deliver(&mut self, event: AppEvent) {
        match event {
            AppEvent::Ready => self.ready = Some(Ok(())),
            AppEvent::ConnectFailed(e) => self.ready = Some(Err(e)),
            AppEvent::Client(event) => match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        "client event queue full (the app reads too slowly); event dropped"
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!("client event dropped: the app no longer reads events");
                }
            },
            AppEvent::Reply { command, result } => {
                if let Some(pending) = self.pending.remove(&command) {
                    self.answer(pending, result);
                }
            }
        }
    }

    fn meeting(&self, parts: MeetingParts) -> Result<Meeting, ClientError> {
        let commands = self.command_tx.upgrade().ok_or(ClientError::Closed)?;
        Ok(Meeting::new(
            parts.shared,
            commands,
            parts.events,
            parts.frames,
        ))
    }

    /// Hands `result` to the app in the form its command expects.
    fn answer(&self, pending: Pending, result: Result<Reply, ClientError>) {
        let mismatch = || {
            tracing::error!("client core answered a command with the wrong kind of reply");
            ClientError::Closed
        };
        match pending {
            Pending::Start(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::Started(parts, report) => Ok((self.meeting(parts)?, report)),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
            Pending::Accept(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::Accepted(parts) => self.meeting(parts),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
            Pending::Done(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::Done => Ok(()),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
            Pending::Invite(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::Invited(report) => Ok(report),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
            Pending::Pinned(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::PinnedUsers(users) => Ok(users),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
            Pending::PushKey(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::PushKey(key) => Ok(key),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
            Pending::Unregistered(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::Unregistered(removed) => Ok(removed),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
            Pending::Exported(tx) => {
                let r = result.and_then(|r| match r {
                    Reply::Exported(bytes) => Ok(bytes),
                    _ => Err(mismatch()),
                });
                let _ = tx.send(r);
            }
        }
    }
}

/// The next event on any of `links` (from the `first`-th on, round robin), with its
/// connection; `None` as the event once that connection's stream ended.
async fn next_server_event(
    links: &mut [Link],
    first: usize,
) -> (ConnectionId, Option<conclave_proto::v1::event::Event>) {
    std::future::poll_fn(|cx| {
        let n = links.len().max(1);
        let (tail, head) = links.split_at_mut(first % n);
        for link in head.iter_mut().chain(tail.iter_mut()) {
            if let Some(events) = link.events.as_mut()
                && let std::task::Poll::Ready(event) = events.poll_recv(cx)
            {
                return std::task::Poll::Ready((link.id, event));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Connects to the node a redirect named: its address (resolved if it is a name) and
/// server name, verified with the client's one trust setting; an empty address is the
/// node the client last reached (`last`, as the configured server name). With a
/// connection ID byte, the connection lands on that shard of the node.
async fn connect_to_target(
    target: &ServerTarget,
    last: Option<std::net::SocketAddr>,
    config: &ClientConfig,
) -> Result<(ControlConnection, EventStream), TransportError> {
    let unresolved =
        || TransportError::Connect(crate::transport::ConnectProblem::UnresolvedAddress);
    let (addr, server_name) = if target.address.is_empty() {
        (last.ok_or_else(unresolved)?, config.server_name.as_str())
    } else {
        let addr = match target.address.parse::<std::net::SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => tokio::net::lookup_host(&target.address)
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(unresolved)?,
        };
        (addr, target.server_name.as_str())
    };
    ControlConnection::connect_with(
        addr,
        server_name,
        &config.trust,
        config.idle_timeout,
        target.connection_id_byte,
        config.event_budget(),
    )
    .await
}
