//! [`ClientCore`]: everything a client decides, without IO.
//!
//! The core owns the device's protocol state (credentials, prekey pool, replay cache,
//! pinned identities, the server clock, the outbox, ack batching, room rotations,
//! invitations and one [`MeetingState`](crate::meeting::rekey::MeetingState) per
//! meeting) and the rules that move it. It never touches a socket, a task or the
//! system clock: it is told what happened and when, and says what to do. The async
//! [`Client`](super::Client) is a thin shell around it; tests drive several cores and
//! an in-memory server in virtual time.
//!
//! # Inputs and outputs
//! * In: [`handle_command`](ClientCore::handle_command) (what the app asks),
//!   [`handle_connected`](ClientCore::handle_connected) /
//!   [`handle_connect_failed`](ClientCore::handle_connect_failed) (the outcome of an
//!   [`Action::Connect`]), [`handle_response`](ClientCore::handle_response) (the
//!   answer to an [`OutgoingRequest`]), [`handle_event`](ClientCore::handle_event)
//!   and [`handle_disconnected`](ClientCore::handle_disconnected) (what the server
//!   pushed, or that its connection ended), [`handle_timeout`](ClientCore::handle_timeout).
//! * Out: [`poll_action`](ClientCore::poll_action) (connect, close, link a meeting's
//!   media to a room), [`poll_request`](ClientCore::poll_request) (control requests,
//!   one in flight at a time), [`poll_app_event`](ClientCore::poll_app_event) (command
//!   replies and [`ClientEvent`]s), [`poll_timeout`](ClientCore::poll_timeout).
//!
//! Every input is handled to completion before the next one, as a single-threaded
//! server would: a command that needs the directory's answer before it can seal a
//! container holds later inputs back (they queue inside the core) until its requests
//! are answered. So a drive loop, after each input, carries out every action, performs
//! the request in flight and feeds its answer back, until the core waits for new input.
//! Meeting events and received frames go to each meeting's own queues
//! ([`MeetingParts`]), not through [`poll_app_event`](ClientCore::poll_app_event).
//!
//! # The run loop
//! ```no_run
//! use std::time::Instant;
//! use conclave_sdk::client::client_core::{Action, AppEvent, ClientCore, OutgoingRequest};
//! # use conclave_sdk::client::client_core::ConnectionId;
//! # use conclave_sdk::transport::{ClosedReason, TransportError};
//! # use conclave_proto::v1::response;
//! # fn connect(_: ConnectionId) -> Result<[u8; 32], TransportError> {
//! #     Err(TransportError::Handshake(quinn::ConnectionError::TimedOut))
//! # }
//! # fn send(_: OutgoingRequest) -> Result<response::Result, TransportError> {
//! #     Err(TransportError::Closed(ClosedReason::Gone))
//! # }
//! # fn wait_for_input_until(_: Option<Instant>) {}
//!
//! fn drive(core: &mut ClientCore) {
//!     while !core.is_finished() {
//!         while let Some(action) = core.poll_action() {
//!             if let Action::Connect { conn, .. } = action {
//!                 match connect(conn) {
//!                     Ok(tls_binding) => core.handle_connected(conn, tls_binding, Instant::now()),
//!                     Err(e) => core.handle_connect_failed(conn, e, Instant::now()),
//!                 }
//!             } // Close and the room links: close the connection, update the media table.
//!         }
//!         if let Some(request) = core.poll_request() {
//!             let id = request.id;
//!             core.handle_response(id, send(request), Instant::now());
//!             continue; // the answer may lead to more actions and requests
//!         }
//!         while let Some(event) = core.poll_app_event() {
//!             if let AppEvent::Client(event) = event { println!("{event:?}"); }
//!         }
//!         // Wait for a command, a server event or the timer, and hand it over:
//!         wait_for_input_until(core.poll_timeout());
//!         core.handle_timeout(Instant::now());
//!     }
//! }
//! ```
//! The shell in this crate runs the core on tokio's blocking pool: sealing and opening a
//! container costs P-384 operations (milliseconds), which must not stall the runtime's
//! workers.
//!
//! # How the engine is written
//! Inside, the protocol logic is straight-line `async` code over a port of queues (`port.rs`):
//! awaiting a request's answer suspends it, and the compiler turns each such suspension
//! into the continuation a hand-written job stack would keep. The core polls it with a
//! no-op waker after every input; it can never wait on anything but the port, and it
//! reads time only from the inputs.

mod connection;
mod engine;
mod inbox;
mod keyframes;
mod links;
mod meetings;
mod messages;
mod port;
mod prepare;
mod push;
mod words;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use conclave_proto::datagram::RoomHandle;
use conclave_proto::frame::TLS_EXPORTER_LEN;
use conclave_proto::v1::{self, client_frame::Request, response};
use rand_core::CryptoRngCore;
use tokio::sync::mpsc;

use super::shared::MeetingShared;
use super::{
    ClientConfig, ClientError, ClientEvent, DeviceCredentials, InviteReport, MediaKind,
    MeetingEvent,
};
use crate::identity::UserIdentity;
use crate::meeting::MeetingId;
use crate::transport::TransportError;
use crate::{UnixMillis, UserId};
use port::{Input, PortHandle};

/// The `tracing` target of the rekey's milestones (debug level): container opened,
/// bundles fetched, sealed, sent, rotating room, room rotated, room epoch announced,
/// sending epoch; the key leader's "rekey prepared".
/// `RUST_LOG=conclave::rekey=debug` shows where a rekey's time goes.
pub const REKEY_TRACE: &str = "conclave::rekey";

/// Inputs that may wait inside the core while it handles one (server events and
/// commands, bounded further by the shell's own queues).
pub const MAX_QUEUED_INPUTS: usize = 4_096;

/// Client events held for the app before new ones are dropped (command replies are
/// never dropped).
pub const MAX_QUEUED_APP_EVENTS: usize = 4_096;

/// Room left in the core's input queue ([`ClientCore::input_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRoom {
    /// Inputs.
    pub inputs: usize,
    /// Encoded bytes of server events.
    pub bytes: usize,
}

impl InputRoom {
    /// Whether `taken` events of `taken_bytes` in all still leave room for another
    /// (exact in events; in bytes the last one taken may go past the room).
    #[must_use]
    pub fn admits(&self, taken: usize, taken_bytes: usize) -> bool {
        taken < self.inputs && taken_bytes < self.bytes
    }
}

/// One connection attempt of the core's. A new one per attempt, so news about an
/// earlier connection is never taken for the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

/// A control request, matched with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

/// The caller's tag for a command, returned with its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// A control request for the server, on connection `conn`.
#[derive(Debug)]
pub struct OutgoingRequest {
    /// Pass it back with the answer.
    pub id: RequestId,
    /// The connection it belongs on. If that connection is gone, answer with
    /// [`TransportError::Closed`].
    pub conn: ConnectionId,
    /// The request.
    pub request: Request,
}

/// A server to connect to other than the configured one, as a `WRONG_NODE` redirect
/// named it: the node of a cluster that owns a meeting's room, or the shard of a node
/// that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// `host:port` (an IP address or a DNS name); empty: the server the primary
    /// connection reached (the same address and server name).
    pub address: String,
    /// The TLS server name to verify it as (empty with an empty `address`).
    pub server_name: String,
    /// The first byte of the new connection's initial destination connection ID,
    /// which steers it to the node's shard that serves the room; `None`: any.
    pub connection_id_byte: Option<u8>,
}

/// Something the driver of the core carries out.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Open a new connection to the server (TLS and QUIC), then report its TLS
    /// exporter with [`ClientCore::handle_connected`], or the failure.
    Connect {
        /// The attempt.
        conn: ConnectionId,
        /// Where to connect: `None` for the configured server, else the cluster node a
        /// redirect named (verified with the same trust setting as any server).
        to: Option<ServerTarget>,
    },
    /// Close this connection (media stops; its events no longer matter).
    Close {
        /// The connection.
        conn: ConnectionId,
    },
    /// Media datagrams of room `handle` on `conn` belong to `meeting`, and its frames
    /// go out there (replaces any other room of that meeting).
    LinkRoom {
        /// The connection.
        conn: ConnectionId,
        /// The room's handle on that connection.
        handle: RoomHandle,
        /// The meeting's media state.
        meeting: MeetingMedia,
    },
    /// Room `handle` on `conn` is left: drop its datagrams.
    UnlinkRoom {
        /// The connection.
        conn: ConnectionId,
        /// The room's handle.
        handle: RoomHandle,
    },
}

/// Something for the app.
#[derive(Debug)]
#[non_exhaustive]
pub enum AppEvent {
    /// The first connection is authenticated and stocked with prekeys.
    Ready,
    /// The first connection failed; the core has stopped.
    ConnectFailed(ClientError),
    /// News for the app.
    Client(ClientEvent),
    /// The outcome of a command.
    Reply {
        /// The command's tag.
        command: CommandId,
        /// Its outcome.
        result: Result<Reply, ClientError>,
    },
}

/// What the app asks of the core.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Start a meeting as key leader and invite `invitees`' verified devices.
    StartMeeting {
        /// Who to invite.
        invitees: Vec<UserId>,
        /// What this device will send.
        media_kinds: Vec<MediaKind>,
    },
    /// Accept an invitation.
    Accept {
        /// Its meeting.
        meeting: MeetingId,
        /// What this device will send.
        media_kinds: Vec<MediaKind>,
    },
    /// Reject an invitation.
    Reject {
        /// Its meeting.
        meeting: MeetingId,
    },
    /// Leave a meeting.
    Leave {
        /// The meeting.
        meeting: MeetingId,
    },
    /// Ask a sender of a meeting for a video keyframe.
    RequestKeyframe {
        /// The meeting.
        meeting: MeetingId,
        /// The sender's index.
        sender_index: u32,
    },
    /// Send an in-meeting message (chat or app data).
    SendMessage {
        /// The meeting.
        meeting: MeetingId,
        /// Reliable (in order, on the control channel) or lossy (a datagram).
        delivery: crate::meeting::messages::Delivery,
        /// The app's label, at most 64 bytes.
        topic: String,
        /// The app's bytes.
        body: Vec<u8>,
    },
    /// (Leader) remove users from a meeting.
    Remove {
        /// The meeting.
        meeting: MeetingId,
        /// Who to remove.
        users: Vec<UserId>,
    },
    /// (Leader) invite more users.
    Invite {
        /// The meeting.
        meeting: MeetingId,
        /// Who to invite.
        users: Vec<UserId>,
        /// What the new participants will receive.
        media_kinds: Vec<MediaKind>,
    },
    /// The identity keys pinned so far.
    PinnedUsers,
    /// The prekey pool's private halves, serialized.
    ExportPrekeys,
    /// The device's credentials with the current prekey pool, serialized.
    ExportCredentials,
    /// The server's VAPID public key.
    PushServerKey,
    /// Register (or replace) this device's Web Push subscription.
    RegisterPush {
        /// The push service's URL for this subscription.
        endpoint: String,
        /// The subscription's P-256 public key, uncompressed.
        p256dh: [u8; 65],
        /// The subscription's auth secret.
        auth: [u8; 16],
    },
    /// Remove this device's push subscription.
    UnregisterPush,
    /// Leave every meeting, close the connection and stop.
    Close,
}

/// A command's result.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// The meeting started.
    Started(MeetingParts, InviteReport),
    /// The invitation is accepted.
    Accepted(MeetingParts),
    /// Done (reject, leave, remove, close).
    Done,
    /// More users were invited.
    Invited(InviteReport),
    /// The pinned identity keys.
    PinnedUsers(Vec<UserIdentity>),
    /// Serialized secrets: the prekey pool or the credentials (zeroized on drop).
    Exported(zeroize::Zeroizing<Vec<u8>>),
    /// The server's VAPID public key.
    PushKey([u8; 65]),
    /// Whether a push subscription was removed.
    Unregistered(bool),
}

/// A meeting this device takes part in, as the core hands it out: its media state and
/// its event and frame queues. The [`Client`](super::Client) wraps it in a
/// [`Meeting`](super::Meeting); [`MeetingParts::into_detached_meeting`] does so for
/// code that drives a core directly.
#[derive(Debug)]
pub struct MeetingParts {
    pub(crate) shared: Arc<MeetingShared>,
    pub(crate) events: mpsc::Receiver<MeetingEvent>,
    pub(crate) frames: super::frames::FrameSource,
}

impl MeetingParts {
    /// The meeting.
    #[must_use]
    pub fn id(&self) -> MeetingId {
        self.shared.id
    }

    /// A [`Meeting`](super::Meeting) over these parts whose commands (leave, remove,
    /// invite) fail with [`ClientError::Closed`]: for code that drives the
    /// [`ClientCore`] itself and sends those commands through
    /// [`ClientCore::handle_command`]. Reading events, frames, participants and safety
    /// codes works as usual.
    #[must_use]
    pub fn into_detached_meeting(self) -> super::Meeting {
        let (commands, _) = mpsc::channel(1);
        super::Meeting::new(self.shared, commands, self.events, self.frames)
    }
}

/// A meeting's media state, for the media path: datagrams of its room go to
/// [`MeetingMedia`]'s meeting, and its frames go out on the linked room.
#[derive(Debug, Clone)]
pub struct MeetingMedia(pub(crate) Arc<MeetingShared>);

impl MeetingMedia {
    /// The meeting.
    #[must_use]
    pub fn id(&self) -> MeetingId {
        self.0.id
    }
}

/// The sans-IO client. See the [module docs](self) for its run loop.
pub struct ClientCore {
    port: PortHandle,
    engine: Pin<Box<dyn Future<Output = ()> + Send>>,
    finished: bool,
    /// Encoded bytes of server events that may wait inside the core
    /// ([`ClientConfig::event_queue_bytes`]).
    max_input_bytes: usize,
}

impl core::fmt::Debug for ClientCore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientCore")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ClientCore {
    /// A core for `credentials`, at `now` (monotonic) and `wall` (this device's clock,
    /// ms since the Unix epoch; later readings come from
    /// [`handle_wall_clock`](Self::handle_wall_clock)). It asks to connect
    /// at once ([`Action::Connect`]). `rng` supplies every key, nonce and id.
    /// ([`ClientConfig::server`], `server_name` and `trust` are the shell's business.)
    pub fn new(
        config: ClientConfig,
        credentials: DeviceCredentials,
        rng: Box<dyn CryptoRngCore + Send>,
        now: Instant,
        wall: UnixMillis,
    ) -> Self {
        let port = PortHandle::new(now, wall.0);
        let max_input_bytes = config.event_budget().bytes;
        let engine = engine::Engine::new(config, credentials, rng, port.clone(), now);
        let mut core = ClientCore {
            port,
            engine: Box::pin(engine.run()),
            finished: false,
            max_input_bytes,
        };
        core.progress();
        core
    }

    /// Runs the engine until it waits for something the port does not hold yet.
    fn progress(&mut self) {
        if self.finished {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(()) = self.engine.as_mut().poll(&mut cx) {
            self.finished = true;
        }
    }

    fn set_now(&self, now: Instant) {
        self.port.with(|p| p.now = p.now.max(now));
    }

    /// Queues `input` and runs the engine. Beyond [`MAX_QUEUED_INPUTS`] the input is
    /// dropped with a warning. The bound in bytes is the driver's to keep, through
    /// [`ClientCore::input_room`]: the core takes every event it is handed within the
    /// count, since a dropped mailbox delivery would never be reported handled and
    /// would hold the server's mailbox window.
    fn input(&mut self, input: Input, now: Instant) {
        self.set_now(now);
        let bytes = input.bytes();
        let queued = self.port.with(|p| {
            if p.inputs.len() >= MAX_QUEUED_INPUTS {
                return false;
            }
            p.inputs.push_back(input);
            p.input_bytes = p.input_bytes.saturating_add(bytes);
            true
        });
        if !queued {
            tracing::warn!("client core input queue full; input dropped");
        }
        self.progress();
    }

    /// This device's clock read `wall` at `now`. Report it before each input (the shell
    /// does): a monotonic clock stops while a device sleeps and never follows a clock
    /// correction, so the wall clock cannot be derived from it for long. Between
    /// reports the core adds the monotonic time since the last one.
    pub fn handle_wall_clock(&mut self, wall: UnixMillis, now: Instant) {
        self.set_now(now);
        self.port.with(|p| p.wall = (wall.0, p.now));
    }

    /// The app asks for something; the outcome comes as [`AppEvent::Reply`] tagged `id`.
    pub fn handle_command(&mut self, id: CommandId, command: Command, now: Instant) {
        self.input(Input::Command(id, command), now);
    }

    /// Connection attempt `conn` succeeded; `tls_binding` is its TLS exporter value.
    pub fn handle_connected(
        &mut self,
        conn: ConnectionId,
        tls_binding: [u8; TLS_EXPORTER_LEN],
        now: Instant,
    ) {
        self.set_now(now);
        if self.port.connected(conn, Ok(tls_binding)) {
            self.progress();
        }
    }

    /// Connection attempt `conn` failed.
    pub fn handle_connect_failed(
        &mut self,
        conn: ConnectionId,
        error: TransportError,
        now: Instant,
    ) {
        self.set_now(now);
        if self.port.connected(conn, Err(error)) {
            self.progress();
        }
    }

    /// The answer to request `id` (a broken connection answers
    /// [`TransportError::Closed`]).
    pub fn handle_response(
        &mut self,
        id: RequestId,
        result: Result<response::Result, TransportError>,
        now: Instant,
    ) {
        self.set_now(now);
        if self.port.answer(id, result) {
            self.progress();
        } else {
            tracing::debug!(?id, "answer to a request not in flight ignored");
        }
    }

    /// The server pushed `event` on `conn`.
    pub fn handle_event(&mut self, conn: ConnectionId, event: v1::event::Event, now: Instant) {
        self.input(Input::Event(conn, event), now);
    }

    /// Connection `conn` ended (its event stream closed).
    pub fn handle_disconnected(
        &mut self,
        conn: ConnectionId,
        reason: TransportError,
        now: Instant,
    ) {
        self.input(Input::Disconnected(conn, reason), now);
    }

    /// Time passed: timers due by `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.set_now(now);
        let due = self.port.with(|p| {
            let due = p.timeout.is_some_and(|t| t <= p.now)
                && !p.inputs.iter().any(|i| matches!(i, Input::Timeout));
            if due {
                p.inputs.push_back(Input::Timeout);
            }
            due
        });
        if due {
            self.progress();
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.port.with(|p| p.actions.pop_front())
    }

    /// The next request to send (at most one is in flight).
    pub fn poll_request(&mut self) -> Option<OutgoingRequest> {
        self.port.with(|p| p.requests.pop_front())
    }

    /// The next event for the app.
    pub fn poll_app_event(&mut self) -> Option<AppEvent> {
        self.port.with(|p| p.app_events.pop_front())
    }

    /// When to call [`Self::handle_timeout`] next (none while the core waits for an
    /// answer: the answer comes first).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.port.is_waiting() {
            return None;
        }
        self.port.with(|p| p.timeout)
    }

    /// Whether the core waits for a request's answer or a connection attempt's outcome.
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        self.port.is_waiting()
    }

    /// Inputs waiting inside the core.
    #[must_use]
    pub fn queued_inputs(&self) -> usize {
        self.port.with(|p| p.inputs.len())
    }

    /// How many more inputs, and how many more bytes of server events, the core should
    /// be handed now (it handles everything it can before each call returns, so inputs
    /// wait only while the engine waits for an answer or a connection). A driver hands
    /// server events while [`InputRoom::admits`] says so, and leaves the rest with the
    /// transport: the core then holds at most [`ClientConfig::event_queue_bytes`] plus
    /// one event.
    #[must_use]
    pub fn input_room(&self) -> InputRoom {
        self.port.with(|p| InputRoom {
            inputs: MAX_QUEUED_INPUTS.saturating_sub(p.inputs.len()),
            bytes: self.max_input_bytes.saturating_sub(p.input_bytes),
        })
    }

    /// Whether the core has stopped (closed, or the first connection failed). Its
    /// remaining outputs can still be polled.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}
