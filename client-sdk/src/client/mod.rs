//! The async client: what an app embeds to hold encrypted meetings.
//!
//! [`Client::connect`] authenticates this device to an SFU (registering it on first
//! use), keeps its one-time prekeys stocked, opens incoming containers (invites,
//! rekeys, ...) and acknowledges them once processed. [`Client::start_meeting`] and
//! [`Client::accept`] give a [`Meeting`]: send media frames (SFrame-encrypted and
//! fragmented to the path's datagram size), receive decrypted, reassembled frames with
//! their sender, and follow the roster as participants leave, are removed or reject,
//! each of which rekeys the meeting.
//!
//! # Tasks and data flow
//! ```text
//!  app ──Client / MeetingHandle calls──▶ command queue ──▶ shell task ──▶ control stream
//!   ▲                                                     │ ▲  ▲
//!   │ ClientEvents (invites, connection)                  │ │  └── server events (mailbox,
//!   │ Meeting::next_event (frames, roster, epochs)        ▼ │      prekeys low, rooms)
//!   │                                  ClientCore (sans-IO, on the blocking pool):
//!   │                                  MeetingState per meeting, outbox, acks, ...
//!   └──── frames ◀── media reader task ◀── QUIC datagrams
//!  send_frame ─────────────(encrypt, fragment)──▶ datagrams
//! ```
//! All protocol state and every protocol decision live in the sans-IO
//! [`ClientCore`](client_core::ClientCore): the prekey pool, the replay cache, pinned
//! identities and one [`MeetingState`](crate::meeting::rekey::MeetingState) per
//! meeting, whose outputs it carries out (seal containers, rotate or join the room,
//! install and drop keys). One **shell task** per client moves bytes and time: it
//! hands the core app commands, server events and timer ticks, performs the requests
//! and connects the core asks for, and runs each core step on tokio's blocking pool
//! (sealing and opening cost P-384 operations). A **media reader task** per
//! connection reassembles and decrypts datagrams. [`MeetingHandle::send_frame`]
//! encrypts on the caller's thread. If the connection drops, the core reconnects with
//! backoff, re-authenticates and rejoins every room at the meeting's current epoch;
//! media resumes by itself.
//!
//! In a cluster the client holds one **primary connection** (directory, mailbox, the
//! rooms its node owns) and one rooms-only connection per other node that owns the room
//! of one of its meetings (a `WRONG_NODE` redirect names it); each meeting's room lives
//! on exactly one of them, and losing one pauses only the meetings on it.
//!
//! # Trust
//! A user's identity key is pinned the first time this device looks the user up in the
//! directory (trust on first use) or when the app passes it in
//! [`ClientConfig::pinned_users`]; a later different key is refused: the user is
//! reported in [`InviteReport::refused`] with [`RefusalReason::IdentityChanged`], and
//! containers claiming to come from it are reported as [`ClientEvent::MessageRefused`].
//! Only users this device asked for are taken from a directory answer. Every device
//! certificate and prekey from the directory is verified against the pinned key before
//! anything is sealed to it; devices that fail are reported in
//! [`InviteReport::refused`] and never receive the meeting key. A meeting's roster
//! carries each device's certificate, which must verify under the pinned key of its
//! user; later meeting keys are sealed only to those pinned device keys, and a
//! directory answer with other keys is refused ([`ClientEvent::DirectoryRefused`]).
//! Safety codes cover the identity keys, device keys and sender indices of the roster,
//! so participants whose codes match hold the same keys.

mod address;
pub mod client_core;
mod credentials;
mod directory;
mod driver;
mod error;
mod frames;
mod lookups;
mod network;
mod presence;
mod profile;
mod protocol;
mod refusal;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use address::ServerAddress;
pub use conclave_core::meeting::messages::{
    Delivery, MAX_LOSSY_BODY_BYTES, MAX_RELIABLE_BODY_BYTES, MAX_TOPIC_BYTES, MessageError,
    ReceivedMessage,
};
pub use conclave_proto::datagram::MediaKind;
pub use credentials::{
    CREDENTIALS_MAGIC, CREDENTIALS_VERSION, CredentialsError, DEFAULT_DEVICE_VALIDITY_MS,
    DeviceCredentials, MAX_STORED_CREDENTIALS_BYTES,
};
pub use directory::{RefusalReason, RefusedDevice};
pub use error::{ClientError, ConnectionProblem, DisconnectReason, ProtocolViolation};
pub use network::NetworkStats;
pub use profile::{CallerProfile, MAX_AVATAR_BYTES, MAX_DISPLAY_NAME_BYTES, ProfileError};
pub use refusal::MessageRefusal;

use crate::identity::UserIdentity;
use crate::meeting::rekey::{EndReason, RekeyConfig};
use crate::meeting::{Epoch, MeetingId};
use crate::safety::{SafetyCode, SafetyWords};
use crate::transport::ServerTrust;
use crate::{DeviceId, UnixMillis, UserId};
use driver::Command;
use frames::FrameSource;
use shared::MeetingShared;

/// How a [`Client`] connects and behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The SFU's address: a socket address or `host:port` (resolved on every connect).
    pub server: ServerAddress,
    /// More addresses of the same service, `host:port` each: the other nodes of a
    /// cluster, or a DNS name with one record per node (resolved on every connect; it
    /// stands for all its addresses). A connect tries them after `server`, one more
    /// every 250 ms while none has answered, starting after the node reached last, so
    /// a node that died is tried last. All must pass the one `trust` setting as
    /// `server_name`. Default empty.
    pub more_servers: Vec<String>,
    /// How long a connection may hear nothing from the server before it counts as
    /// lost and the client reconnects (keep-alives go out every sixth of it, so a
    /// healthy connection never idles that long). This is how fast a dead node is
    /// noticed; raise it for networks that often go silent for seconds. Default 2.5 s
    /// ([`crate::transport::DEFAULT_IDLE_TIMEOUT`]), at least 600 ms.
    pub idle_timeout: Duration,
    /// The name the server certificate must be valid for (ignored with a pinned
    /// fingerprint). Default: the host of a `host:port` server address, else
    /// `"localhost"`.
    pub server_name: String,
    /// How long a connect (resolving names, then the staggered handshakes with every
    /// address) may take before it fails with
    /// [`TransportError::ConnectTimedOut`](crate::transport::TransportError::ConnectTimedOut).
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// How to authenticate the server.
    pub trust: ServerTrust,
    /// Rekey timers (coalescing window, grace window for the previous epoch).
    pub rekey: RekeyConfig,
    /// How long a meeting this device leads as key leader must stay at one epoch
    /// before the next Rekey's entries are wrapped ahead of time (a directory fetch and
    /// two P-384 agreements per participant, done while nothing waits for them), so
    /// that a departure costs only the encryption and signature. `None`: never; each
    /// Rekey is wrapped when it is needed. The prepared key sits in memory until used,
    /// at most 10 minutes (`docs/security.md`). Default 1 s.
    pub prepare_rekeys_after: Option<Duration>,
    /// Prekeys kept on the server: replenished up to this many when the server reports
    /// its pool low. Default 100.
    pub prekey_target: u32,
    /// How long an invitation rings: the deadline this device sets in the invitations
    /// it sends. An invitee that has not answered by then is rekeyed out as if it had
    /// rejected ([`MeetingEvent::Unanswered`]), and its own app shows a missed call
    /// ([`ClientEvent::MissedCall`]); it can no longer join with that invitation.
    /// Default 45 s ([`DEFAULT_RING_TIMEOUT`]); clamped to
    /// [`MIN_RING_TIMEOUT`]..=[`MAX_RING_TIMEOUT`].
    pub ring_timeout: Duration,
    /// How long an invitation waits in the server's mailbox for an invitee that is
    /// offline, so that it can still show the missed call when it comes back (it can
    /// join only until [`ClientConfig::ring_timeout`]). Default 1 day.
    pub invite_ttl: Duration,
    /// How long the key leader waits for a participant whose connection left the room
    /// to come back before rekeying it out. Default 15 s.
    pub drop_after: Duration,
    /// First reconnect delay, doubled per failed attempt up to
    /// [`ClientConfig::max_reconnect_backoff`]. Default 100 ms.
    pub reconnect_backoff: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub max_reconnect_backoff: Duration,
    /// Received frames buffered per meeting before new ones are dropped (counted in
    /// [`MediaStats::frames_dropped_queue_full`]), including a batch the app has taken
    /// but not read to its end. Default 1024.
    pub frame_queue: usize,
    /// Media bytes buffered per meeting before new frames are dropped, counted like
    /// [`ClientConfig::frame_queue`] (a single frame larger than this still passes into
    /// an empty queue). Default 8 MiB.
    pub frame_queue_bytes: usize,
    /// Bytes of server events one connection may hold before this device handles
    /// them: read from the network and not handed on yet, and again inside the client
    /// while it waits for an answer, so a hostile server can make it hold at most
    /// twice this plus two frames (2 MiB each at most). A server that sends more is
    /// cut off and the client reconnects
    /// ([`ClosedReason::FellBehind`](crate::transport::ClosedReason::FellBehind)).
    /// The server is asked to keep stored mailbox deliveries within a quarter of it, so
    /// a large backlog streams through instead. Default 16 MiB
    /// ([`crate::transport::DEFAULT_EVENT_QUEUE_BYTES`]), at least 4 MiB (so that the
    /// window holds the largest container, 1 MiB, and a delivery of one never crowds
    /// out the other events).
    pub event_queue_bytes: usize,
    /// Identity keys the app already trusts (stored from earlier runs, or verified by
    /// safety code). Others are pinned on first use.
    pub pinned_users: Vec<UserIdentity>,
    /// How far the server's clock may be from this device's. Certificates, prekeys
    /// and containers are checked at the server's time (device clocks are often
    /// wrong), but a compromised server could otherwise move time freely: back, so that
    /// expired device certificates (the only revocation) verify again, or forward, to
    /// expire prekeys and containers. A larger offset is clamped to this bound, with a
    /// warning in the log (security review L3). Default 24 h.
    pub max_clock_offset: Duration,
    /// How this user presents themself in the invitations this device sends (display
    /// name, avatar reference), sealed inside them. Default `None`.
    pub profile: Option<CallerProfile>,
    /// Whether the invitations this device sends ask the server to wake offline
    /// invitees at high push urgency (RFC 8030 `Urgency: high`, what a ringing call
    /// needs on a phone). This is the one bit the server learns about a container from
    /// its sender: that it is probably an invitation. Default `true`; with `false`,
    /// invitees are woken at normal urgency, like for any other container.
    pub urgent_invitations: bool,
}

/// The shortest time between two [`MeetingEvent::KeyframeRequested`] of one meeting:
/// requests arriving sooner are merged into the last one (a keyframe answers them
/// all), so neither many receivers nor a hostile one can make the encoder produce
/// only keyframes.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

/// [`ClientConfig::ring_timeout`]'s default: how long a call rings.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(45);
/// The shortest ring [`ClientConfig::ring_timeout`] allows.
pub const MIN_RING_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest ring [`ClientConfig::ring_timeout`] allows (a scheduled meeting's
/// invitees join within minutes of its start or are called again).
pub const MAX_RING_TIMEOUT: Duration = Duration::from_secs(600);

/// [`ClientConfig::connect_timeout`]'s default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// [`ClientConfig::prepare_rekeys_after`]'s default.
pub const DEFAULT_PREPARE_REKEYS_AFTER: Duration = Duration::from_secs(1);

impl ClientConfig {
    /// Defaults for `server` (a [`SocketAddr`](std::net::SocketAddr) or a `"host:port"` string),
    /// authenticated with `trust`.
    #[must_use]
    pub fn new(server: impl Into<ServerAddress>, trust: ServerTrust) -> Self {
        let server = server.into();
        let server_name = server.host().unwrap_or("localhost").to_string();
        ClientConfig {
            server,
            more_servers: Vec::new(),
            idle_timeout: crate::transport::DEFAULT_IDLE_TIMEOUT,
            server_name,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            trust,
            rekey: RekeyConfig::default(),
            prepare_rekeys_after: Some(DEFAULT_PREPARE_REKEYS_AFTER),
            prekey_target: 100,
            ring_timeout: DEFAULT_RING_TIMEOUT,
            invite_ttl: Duration::from_millis(crate::time::DAY_MS),
            drop_after: Duration::from_secs(15),
            reconnect_backoff: Duration::from_millis(100),
            max_reconnect_backoff: Duration::from_secs(5),
            frame_queue: 1024,
            frame_queue_bytes: 8 << 20,
            event_queue_bytes: crate::transport::DEFAULT_EVENT_QUEUE_BYTES,
            pinned_users: Vec::new(),
            max_clock_offset: Duration::from_millis(crate::time::DAY_MS),
            profile: None,
            urgent_invitations: true,
        }
    }

    /// [`ClientConfig::event_queue_bytes`], at least its floor.
    pub(crate) fn event_budget(&self) -> crate::transport::EventBudget {
        crate::transport::EventBudget {
            bytes: self.event_queue_bytes.max(MIN_EVENT_QUEUE_BYTES),
        }
    }

    /// The mailbox window this device asks of the server: a quarter of its event
    /// budget, so that a stored backlog never fills the budget while the client waits
    /// for an answer behind it (docs/protocol.md 10.4).
    pub(crate) fn mailbox_window_bytes(&self) -> u32 {
        u32::try_from(self.event_budget().bytes / 4).unwrap_or(u32::MAX)
    }
}

/// The least [`ClientConfig::event_queue_bytes`] taken: four of the largest
/// containers, so that the mailbox window (a quarter) holds one.
const MIN_EVENT_QUEUE_BYTES: usize = 4 * conclave_proto::limits::MAX_CONTAINER_BYTES;

/// Something that happened to the client as a whole.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An invitation arrived (live or from the mailbox) and rings until its
    /// `expires_at`. Answer it with [`Client::accept`] or [`Client::reject`].
    Invited(Invitation),
    /// A call was missed: an invitation stopped ringing unanswered, or one arrived
    /// from the mailbox after its ring deadline (it never rang). Its meeting key is
    /// gone and it can no longer be accepted; stop ringing, show who called and when
    /// (the caller's meeting rekeyed this device out).
    MissedCall(Invitation),
    /// The primary connection (directory, mailbox, and the rooms its node owns)
    /// dropped; the client is reconnecting. The media of meetings whose rooms were on it
    /// pauses ([`MeetingEvent::MediaInterrupted`]); meetings whose rooms live on other
    /// cluster nodes go on.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The client reconnected and rejoined its meetings.
    Reconnected,
    /// `meeting`'s room is served by another cluster node, or by another shard of a
    /// node, and the client joins it there on a connection of its own (the app does
    /// nothing; the meeting goes on).
    RoomRedirected {
        /// The meeting.
        meeting: MeetingId,
        /// The node's address, as the server gave it (empty: the node this client is
        /// connected to, on another of its shards).
        address: String,
    },
    /// Fresh prekeys were uploaded.
    PrekeysUploaded {
        /// Prekeys the server now holds for this device.
        held: u32,
    },
    /// Opening containers used up `count` one-time prekeys: save the pool again
    /// ([`Client::export_prekeys`]) so that their private halves are gone from storage
    /// too, which is what gives those containers forward secrecy (security review L2).
    /// Sent at most once per batch of acknowledgements.
    PrekeysConsumed {
        /// Prekeys used since the last such event.
        count: u32,
    },
    /// A user's identity key was pinned for the first time (store it and pass it in
    /// [`ClientConfig::pinned_users`] next time). An invitation's participants are
    /// checked when it arrives and pinned only when it is accepted.
    UserPinned(UserIdentity),
    /// The directory answered something it should not have: a user this device did
    /// not ask for, a duplicate, a key that differs from the pinned one, or a meeting
    /// participant's device certificate with other keys than the one pinned when it
    /// joined. Nothing was sealed to it. Repeated events of this kind mean the server
    /// (or someone who controls it) is trying to obtain meeting keys: tell the user,
    /// and compare safety codes.
    DirectoryRefused(RefusedDevice),
    /// A received container was refused (forged, replayed, expired, from a changed
    /// identity, ...). It has been acknowledged and deleted.
    MessageRefused {
        /// The user it claims to come from.
        claimed_sender: Option<UserId>,
        /// Why it was refused.
        reason: MessageRefusal,
    },
}

/// A meeting invitation.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// The meeting.
    pub meeting_id: MeetingId,
    /// Who invited (the key leader).
    pub from: Participant,
    /// The media the inviter will send.
    pub media_kinds: Vec<MediaKind>,
    /// Everyone invited, this device included.
    pub participants: Vec<Participant>,
    /// When the invitation stops ringing (server clock): the caller's ring deadline.
    /// Accept it before then.
    pub expires_at: UnixMillis,
    /// How the inviting user presents themself ("Alice is calling"), if they set a
    /// profile: their own claim, sealed in the invite (the server never saw it). The
    /// verified identity is `from.user_id`.
    pub caller: Option<CallerProfile>,
}

/// A participating device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Its user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// Its SFrame sender index in the meeting.
    pub sender_index: u32,
    /// Whether it is the key leader.
    pub is_leader: bool,
    /// Whether it is this device.
    pub is_me: bool,
}

/// Who was invited and who was refused when starting or growing a meeting.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct InviteReport {
    /// Devices the invite was sealed and sent to.
    pub invited: Vec<(UserId, DeviceId)>,
    /// Devices not invited, with the reason (failed verification, no prekeys, unknown
    /// user, changed identity key).
    pub refused: Vec<RefusedDevice>,
}

/// A decrypted, reassembled media frame.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaFrame {
    /// The user of the sender slot whose SFrame key decrypted the frame. Only meeting
    /// participants hold those keys, but every participant holds every sender's key,
    /// so a participant can make a frame that looks like another's (`docs/security.md`,
    /// M5).
    pub user_id: UserId,
    /// The sending device.
    pub device_id: DeviceId,
    /// The sender's index in the meeting.
    pub sender_index: u32,
    /// Audio or video (authenticated as SFrame metadata).
    pub kind: MediaKind,
    /// Whether the sender marked it a keyframe.
    pub keyframe: bool,
    /// The epoch it was encrypted under.
    pub epoch: Epoch,
    /// Its number in the sender's stream of this media kind: +1 per frame from 0,
    /// wrapping at 2³², going on across rekeys. Gaps mean lost frames. Encrypted with
    /// the frame (the SFU never sees it).
    pub sequence: u32,
    /// When the sender captured it, in microseconds on the sender's clock
    /// ([`MeetingHandle::send_frame_at`]): compare only values of one sender (its
    /// audio with its video, for lip sync; consecutive frames, for playout spacing).
    /// Encrypted with the frame.
    pub capture_us: u64,
    /// The media.
    pub data: Vec<u8>,
}

impl core::fmt::Debug for MediaFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MediaFrame")
            .field("device_id", &self.device_id)
            .field("kind", &self.kind)
            .field("epoch", &self.epoch)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Media counters of one meeting on this device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaStats {
    /// Frames this device sent.
    pub frames_sent: u64,
    /// Frames received and decrypted.
    pub frames_received: u64,
    /// Decrypted frames dropped because the app did not read them fast enough.
    pub frames_dropped_queue_full: u64,
    /// Lossy in-meeting messages dropped because the meeting's event queue was more
    /// than half full (the app reads events too slowly, or a participant floods).
    pub lossy_messages_dropped: u64,
    /// Frames under a key this device does not hold (an epoch it was not given, or
    /// one already dropped).
    pub unknown_key: u64,
    /// Frames that failed authentication or were malformed.
    pub decrypt_failures: u64,
    /// Replayed or too old frames.
    pub replayed: u64,
    /// Frames whose fragments never all arrived.
    pub incomplete_frames: u64,
}

/// Something that happened in a meeting.
#[derive(Debug)]
#[non_exhaustive]
pub enum MeetingEvent {
    /// A media frame.
    Frame(MediaFrame),
    /// The participants changed ([`MeetingHandle::participants`]; the safety code too).
    ParticipantsChanged,
    /// This device now sends on `epoch` (after a rekey or a join).
    EpochChanged {
        /// The new sending epoch.
        epoch: Epoch,
    },
    /// The room moved to `room_epoch`, whose key has not reached this device (a lost
    /// Rekey, or one a hostile server withheld): sending is paused, since the current
    /// key may be held by a removed participant, and the key leader has been asked for
    /// the key. [`MeetingEvent::EpochChanged`] follows once it arrives; until then
    /// [`MeetingHandle::send_frame`] fails with
    /// [`ClientError::SendingPaused`]. Tell the user if it lasts.
    SendingPaused {
        /// The epoch the room announced.
        room_epoch: Epoch,
    },
    /// An in-meeting message from another participant ([`MeetingHandle::send_message`]):
    /// its sender device is verified by signature, and it was readable only by the
    /// participants of its epoch. Reliable messages of one sender arrive in the order
    /// sent, also across rekeys; lossy ones may be lost or reordered.
    Message(ReceivedMessage),
    /// The safety words of `epoch` are ready ([`MeetingHandle::safety_words`]): every
    /// participant's device committed to and revealed its nonce.
    SafetyWords(SafetyWords),
    /// (Key leader) an invitee answered.
    Reply {
        /// The answering device.
        from: Participant,
        /// Whether it accepted.
        accepted: bool,
        /// The media it will send.
        media_kinds: Vec<MediaKind>,
    },
    /// (Key leader) an invitee did not answer by the ring deadline
    /// ([`ClientConfig::ring_timeout`]): the meeting rekeys without it, as for a
    /// reject. [`MeetingEvent::ParticipantsChanged`] follows.
    Unanswered {
        /// The invited device.
        participant: Participant,
    },
    /// (Key leader) the SFU room could not be moved to `epoch` after several attempts.
    /// Media keeps flowing, but the room still admits devices that hold only the old
    /// epoch's key, so a removed participant may keep receiving (undecryptable) media
    /// and the room is not what the meeting's keys say. Tell the user; leaving and
    /// starting a new meeting restores a clean room.
    RoomRotationFailed {
        /// The epoch the room should have moved to.
        epoch: Epoch,
    },
    /// Another participant asked this device for a video keyframe
    /// ([`MeetingHandle::request_keyframe`]): have the encoder produce one and send it
    /// with `keyframe = true`. Requests are coalesced: at most one such event per
    /// [`KEYFRAME_REQUEST_INTERVAL`].
    KeyframeRequested,
    /// Every other user's devices have left the meeting (left, removed, rejected,
    /// dropped, or their invitations lapsed): this device is alone with, at most, other
    /// devices of its own user. The meeting stays open (keys held, room joined) and
    /// inviting someone makes it a call again; a one-to-one call app usually ends the
    /// call here ([`Meeting::leave`]). Sent once each time the meeting becomes empty of
    /// others, after the [`MeetingEvent::ParticipantsChanged`] that emptied it; not while
    /// the invitees of a new meeting have yet to answer (they are on the roster).
    Alone,
    /// The meeting's media stopped flowing: the connection its room was on ended, or
    /// the room moved to another node. The client joins it again without the app's
    /// help; [`MeetingEvent::MediaResumed`] follows. Frames sent meanwhile are lost.
    MediaInterrupted,
    /// The meeting's room was joined again after [`MeetingEvent::MediaInterrupted`]:
    /// media flows again.
    MediaResumed,
    /// The meeting ended for this device; every key is gone.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// A connected client. Cheap to clone; every clone drives the same connection.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    user_id: UserId,
    device_id: DeviceId,
    datagrams: Arc<AtomicU64>,
    traffic: Arc<network::Traffic>,
}

/// The client's event stream.
#[derive(Debug)]
pub struct ClientEvents {
    rx: mpsc::Receiver<ClientEvent>,
}

impl ClientEvents {
    /// The next event; `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        self.rx.try_recv().ok()
    }
}

impl Client {
    /// Connects to the server, authenticates this device (registering it and its user
    /// on first use) and starts the client's tasks on the current tokio runtime.
    /// Invitations waiting in the mailbox arrive as [`ClientEvent::Invited`].
    ///
    /// # Errors
    /// [`ClientError::Certificate`] if the server's certificate is refused,
    /// [`ClientError::Connection`] if it cannot be reached, [`ClientError::Server`] if
    /// it refuses the device (for example `USER_KEY_MISMATCH`: the username is taken by
    /// another identity key).
    pub async fn connect(
        config: ClientConfig,
        credentials: DeviceCredentials,
    ) -> Result<(Client, ClientEvents), ClientError> {
        let user_id = credentials.user().user_id;
        let device_id = credentials.device_id();
        let datagrams = Arc::default();
        let traffic = Arc::default();
        let (commands, events) = driver::start(
            config,
            credentials,
            Arc::clone(&datagrams),
            Arc::clone(&traffic),
        )
        .await?;
        Ok((
            Client {
                commands,
                user_id,
                device_id,
                datagrams,
                traffic,
            },
            ClientEvents { rx: events },
        ))
    }

    /// This client's user.
    #[must_use]
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// This client's device.
    #[must_use]
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// Media datagrams this client received from the SFU so far, for any room
    /// (including rooms it no longer takes part in).
    #[must_use]
    pub fn datagrams_received(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }

    /// What this client's connections carried on the network so far, from QUIC's
    /// counters (UDP datagrams and bytes each way, packets lost), over every
    /// connection it opened. Cheap enough to read once a second for a quality
    /// indicator.
    #[must_use]
    pub fn network_stats(&self) -> NetworkStats {
        self.traffic.stats()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        call(&self.commands, make).await
    }

    /// Starts a meeting as key leader and invites every verified device of `invitees`
    /// (by user id, e.g. [`UserId::from_username`]). `media_kinds` is what this device
    /// will send. Returns the meeting and who was invited or refused.
    ///
    /// # Errors
    /// [`ClientError::NobodyToInvite`] if no invitee has a device that verified.
    pub async fn start_meeting(
        &self,
        invitees: &[UserId],
        media_kinds: &[MediaKind],
    ) -> Result<(Meeting, InviteReport), ClientError> {
        let invitees = invitees.to_vec();
        let media_kinds = media_kinds.to_vec();
        self.call(|reply| Command::Start {
            invitees,
            media_kinds,
            reply,
        })
        .await
    }

    /// Accepts an invitation, telling the key leader which media this device will send,
    /// and joins the meeting's room.
    pub async fn accept(
        &self,
        invitation: &Invitation,
        media_kinds: &[MediaKind],
    ) -> Result<Meeting, ClientError> {
        let meeting = invitation.meeting_id;
        let media_kinds = media_kinds.to_vec();
        self.call(|reply| Command::Accept {
            meeting,
            media_kinds,
            reply,
        })
        .await
    }

    /// Rejects an invitation; the key leader rekeys the meeting without this device.
    pub async fn reject(&self, invitation: &Invitation) -> Result<(), ClientError> {
        let meeting = invitation.meeting_id;
        self.call(|reply| Command::Reject { meeting, reply }).await
    }

    /// Identity keys pinned so far (store them; see [`ClientConfig::pinned_users`]).
    pub async fn pinned_users(&self) -> Result<Vec<UserIdentity>, ClientError> {
        self.call(|reply| Command::PinnedUsers { reply }).await
    }

    /// The prekey pool's private halves, serialized (zeroized on drop). Store it
    /// encrypted whenever [`ClientEvent::PrekeysUploaded`] arrives and before closing,
    /// and pass it to [`DeviceCredentials::with_saved_prekeys`] on the next start.
    pub async fn export_prekeys(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
        self.call(|reply| Command::ExportPrekeys { reply }).await
    }

    /// This device's credentials with the current prekey pool, as the one object the
    /// app stores (encrypted at rest) and reads back with [`DeviceCredentials::import`].
    /// Store it again after every [`ClientEvent::PrekeysConsumed`] and before the app
    /// exits: a stale copy lacks the prekeys generated since, and still holds the
    /// private halves of used ones. The buffer zeroizes on drop.
    pub async fn export_credentials(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
        self.call(|reply| Command::ExportCredentials { reply })
            .await
    }

    /// The server's VAPID public key (RFC 8292, an uncompressed P-256 point): the
    /// application server key to subscribe to a push service with, before
    /// [`Client::register_push`]. A `Server` error with `ErrorCode::NotOffered` when the
    /// server does not offer push.
    ///
    /// Not authenticated beyond the TLS connection: a server that lies here only makes
    /// its own wake-ups fail, which it could do anyway.
    pub async fn push_server_key(&self) -> Result<[u8; 65], ClientError> {
        self.call(|reply| Command::PushServerKey { reply }).await
    }

    /// Registers (or replaces) this device's Web Push subscription: while the device is
    /// not connected, the server wakes it through `endpoint` (the push service's URL
    /// for this subscription) when containers wait for it. The payload is encrypted to
    /// `keys` ([`PushKeys`](crate::push::PushKeys)); open it with
    /// [`open_wake_up`](crate::push::open_wake_up). A `Server` error with
    /// `ErrorCode::ForbiddenEndpoint` when the endpoint's host is not one of the
    /// server's allowed push services, `ErrorCode::NotOffered` when it offers none.
    pub async fn register_push(
        &self,
        endpoint: &str,
        keys: &crate::push::PushKeys,
    ) -> Result<(), ClientError> {
        let endpoint = endpoint.to_owned();
        let p256dh = keys.public_key();
        let auth = keys.auth_secret();
        self.call(|reply| Command::RegisterPush {
            endpoint,
            p256dh,
            auth,
            reply,
        })
        .await
    }

    /// Removes this device's push subscription; returns whether there was one.
    pub async fn unregister_push(&self) -> Result<bool, ClientError> {
        self.call(|reply| Command::UnregisterPush { reply }).await
    }

    /// Leaves every meeting, closes the connection and stops the client's tasks.
    pub async fn close(self) {
        let _ = self.call(|reply| Command::Close { reply }).await;
    }
}

async fn call<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
) -> Result<T, ClientError> {
    let (tx, rx) = oneshot::channel();
    commands
        .send(make(tx))
        .await
        .map_err(|_| ClientError::Closed)?;
    rx.await.map_err(|_| ClientError::Closed)?
}

/// A meeting this device takes part in: its handle plus its event queue.
#[derive(Debug)]
pub struct Meeting {
    handle: MeetingHandle,
    events: mpsc::Receiver<MeetingEvent>,
    frames: FrameSource,
    /// `Ended` has been handed out: after the queued frames, the stream is over.
    ended: bool,
}

impl Meeting {
    pub(crate) fn new(
        shared: Arc<MeetingShared>,
        commands: mpsc::Sender<Command>,
        events: mpsc::Receiver<MeetingEvent>,
        frames: FrameSource,
    ) -> Self {
        Meeting {
            handle: MeetingHandle { shared, commands },
            events,
            frames,
            ended: false,
        }
    }

    /// A cloneable handle (for sending media or leaving from another task).
    #[must_use]
    pub fn handle(&self) -> MeetingHandle {
        self.handle.clone()
    }

    /// The next event: roster and epoch changes first, then media frames. `None` once
    /// the meeting has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<MeetingEvent> {
        if self.ended {
            return self.frames.try_recv().map(MeetingEvent::Frame);
        }
        // Fast path: frames of a batch already taken, and no control event waiting.
        if self.frames.has_local() {
            let event = match self.events.try_recv() {
                Ok(e) => e,
                Err(_) => return self.frames.try_recv().map(MeetingEvent::Frame),
            };
            self.ended = matches!(event, MeetingEvent::Ended { .. });
            return Some(event);
        }
        let event = tokio::select! {
            biased;
            Some(e) = self.events.recv() => Some(e),
            Some(f) = self.frames.recv() => Some(MeetingEvent::Frame(f)),
            else => None,
        };
        if matches!(event, Some(MeetingEvent::Ended { .. })) {
            self.ended = true;
        }
        event
    }

    /// The next media frame (other events stay queued for [`Meeting::next_event`]);
    /// `None` once the meeting has ended and the queued frames were read.
    pub async fn recv_frame(&mut self) -> Option<MediaFrame> {
        self.frames.recv().await
    }

    /// Waits for media frames, then moves every queued frame, up to `max` (at least
    /// one), to the end of `out`; returns how many, 0 once the meeting has ended and the
    /// queued frames were read. The cheapest way to receive: frames that arrive
    /// together are handed over together, with one wake-up of the app (other events
    /// stay queued for [`Meeting::next_event`]).
    pub async fn recv_frames(&mut self, out: &mut Vec<MediaFrame>, max: usize) -> usize {
        self.frames.recv_many(out, max).await
    }

    /// A queued media frame, without waiting.
    pub fn try_recv_frame(&mut self) -> Option<MediaFrame> {
        self.frames.try_recv()
    }

    /// Moves queued media frames, up to `max`, to the end of `out` without waiting;
    /// returns how many.
    pub fn try_recv_frames(&mut self, out: &mut Vec<MediaFrame>, max: usize) -> usize {
        self.frames.try_recv_many(out, max)
    }

    /// A queued non-media event, without waiting.
    pub fn try_next_control_event(&mut self) -> Option<MeetingEvent> {
        self.events.try_recv().ok()
    }
}

/// The handle's calls, on the meeting itself (each is [`MeetingHandle`]'s).
impl Meeting {
    /// The meeting's id.
    #[must_use]
    pub fn id(&self) -> MeetingId {
        self.handle.id()
    }

    /// Encrypts and sends a media frame: [`MeetingHandle::send_frame`].
    ///
    /// # Errors
    /// As [`MeetingHandle::send_frame`].
    pub fn send_frame(
        &self,
        kind: MediaKind,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.handle.send_frame(kind, keyframe, data)
    }

    /// Sends a frame with its capture time: [`MeetingHandle::send_frame_at`].
    ///
    /// # Errors
    /// As [`MeetingHandle::send_frame`].
    pub fn send_frame_at(
        &self,
        kind: MediaKind,
        keyframe: bool,
        capture_us: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.handle.send_frame_at(kind, keyframe, capture_us, data)
    }

    /// Asks a sender for a video keyframe: [`MeetingHandle::request_keyframe`].
    ///
    /// # Errors
    /// As [`MeetingHandle::request_keyframe`].
    pub async fn request_keyframe(&self, sender_index: u32) -> Result<(), ClientError> {
        self.handle.request_keyframe(sender_index).await
    }

    /// Sends a chat or data message to the meeting: [`MeetingHandle::send_message`].
    ///
    /// # Errors
    /// As [`MeetingHandle::send_message`].
    pub async fn send_message(
        &self,
        delivery: Delivery,
        topic: &str,
        body: &[u8],
    ) -> Result<(), ClientError> {
        self.handle.send_message(delivery, topic, body).await
    }

    /// The current participants.
    #[must_use]
    pub fn participants(&self) -> Vec<Participant> {
        self.handle.participants()
    }

    /// The safety number of the current epoch: [`MeetingHandle::safety_code`].
    #[must_use]
    pub fn safety_code(&self) -> Option<SafetyCode> {
        self.handle.safety_code()
    }

    /// The safety words of the current epoch: [`MeetingHandle::safety_words`].
    #[must_use]
    pub fn safety_words(&self) -> Option<SafetyWords> {
        self.handle.safety_words()
    }

    /// The epoch this device sends on.
    #[must_use]
    pub fn sending_epoch(&self) -> Epoch {
        self.handle.sending_epoch()
    }

    /// The epochs whose keys this device holds: [`MeetingHandle::held_epochs`].
    #[must_use]
    pub fn held_epochs(&self) -> Vec<Epoch> {
        self.handle.held_epochs()
    }

    /// [`MeetingHandle::prepared_rekey_devices`].
    #[must_use]
    pub fn prepared_rekey_devices(&self) -> usize {
        self.handle.prepared_rekey_devices()
    }

    /// Whether this device is the key leader.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.handle.is_leader()
    }

    /// Whether the meeting has ended for this device.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.handle.is_ended()
    }

    /// Media counters.
    #[must_use]
    pub fn stats(&self) -> MediaStats {
        self.handle.stats()
    }

    /// Leaves the meeting: [`MeetingHandle::leave`].
    ///
    /// # Errors
    /// As [`MeetingHandle::leave`].
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.handle.leave().await
    }

    /// (Key leader) removes every device of `users`: [`MeetingHandle::remove`].
    ///
    /// # Errors
    /// As [`MeetingHandle::remove`].
    pub async fn remove(&self, users: &[UserId]) -> Result<(), ClientError> {
        self.handle.remove(users).await
    }

    /// (Key leader) invites more users mid-meeting: [`MeetingHandle::invite`].
    ///
    /// # Errors
    /// As [`MeetingHandle::invite`].
    pub async fn invite(
        &self,
        users: &[UserId],
        media_kinds: &[MediaKind],
    ) -> Result<InviteReport, ClientError> {
        self.handle.invite(users, media_kinds).await
    }
}

/// A cloneable handle on a meeting: send media, read the roster, leave or remove.
#[derive(Debug, Clone)]
pub struct MeetingHandle {
    shared: Arc<MeetingShared>,
    commands: mpsc::Sender<Command>,
}

impl MeetingHandle {
    /// The meeting's id.
    #[must_use]
    pub fn id(&self) -> MeetingId {
        self.shared.id
    }

    /// Encrypts `data` with this epoch's SFrame key and sends it, split into as many
    /// datagrams as the path needs. Non-blocking; datagrams the network cannot take are
    /// dropped by QUIC (media is loss-tolerant).
    ///
    /// # Errors
    /// [`ClientError::NotJoined`] while the room is not joined (e.g. reconnecting),
    /// [`ClientError::FrameTooLarge`] for frames beyond 64 datagrams,
    /// [`ClientError::MeetingEnded`] after leaving.
    pub fn send_frame(
        &self,
        kind: MediaKind,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.shared.send_frame(kind, keyframe, None, data)
    }

    /// [`Self::send_frame`] with the frame's capture time, in microseconds on any clock
    /// of the app's that runs steadily (the capture device's, or a monotonic clock):
    /// receivers get it as [`MediaFrame::capture_us`]. Use it for every frame of a
    /// meeting, audio and video alike, so a receiver can sync them; `send_frame` stamps
    /// the time of sending on the SDK's own clock instead.
    ///
    /// # Errors
    /// As [`Self::send_frame`].
    pub fn send_frame_at(
        &self,
        kind: MediaKind,
        keyframe: bool,
        capture_us: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.shared
            .send_frame(kind, keyframe, Some(capture_us), data)
    }

    /// Sends `body` to every other participant of the meeting, labelled `topic` (the
    /// app's choice: "chat", "reaction", "cursor", ...; at most [`MAX_TOPIC_BYTES`]).
    /// Others get it as [`MeetingEvent::Message`]. It is encrypted under a key derived
    /// from the current epoch's meeting key (the server, removed participants and later
    /// joiners cannot read it) and signed by this device (receivers know which device
    /// sent it).
    ///
    /// * [`Delivery::Reliable`]: relayed by the server on the control channel; everyone
    ///   in the room gets it, in the order this device sent, also across rekeys. At most
    ///   [`MAX_RELIABLE_BODY_BYTES`]. Returns once the server has taken it.
    /// * [`Delivery::Lossy`]: one media datagram, no retransmission, dropped first under
    ///   congestion. At most [`MAX_LOSSY_BODY_BYTES`]. For cursor positions, captions.
    ///
    /// Participants whose connection is down when it is relayed do not get it later:
    /// keep the history in the app if late readers need it.
    ///
    /// # Errors
    /// [`ClientError::Message`] ([`MessageError::BodyTooLarge`],
    /// [`MessageError::TopicTooLong`]), [`ClientError::NotJoined`] while the room is not
    /// joined, [`ClientError::SendingPaused`], [`ClientError::MeetingEnded`],
    /// [`ClientError::Server`] if the server refused it (a rate limit).
    pub async fn send_message(
        &self,
        delivery: Delivery,
        topic: &str,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let meeting = self.shared.id;
        let (topic, body) = (topic.to_owned(), body.to_vec());
        call(&self.commands, |reply| Command::SendMessage {
            meeting,
            delivery,
            topic,
            body,
            reply,
        })
        .await
    }

    /// Asks the participant with `sender_index` ([`MediaFrame::sender_index`]) for a
    /// video keyframe, the role RTCP PLI plays in WebRTC: call it when video frames of
    /// that sender were lost and the decoder cannot go on. The request goes through the
    /// SFU, which learns only that this device asked that sender slot of the room; the
    /// sender gets [`MeetingEvent::KeyframeRequested`] (at most one per
    /// [`KEYFRAME_REQUEST_INTERVAL`], however many ask).
    ///
    /// # Errors
    /// [`ClientError::NoFramesFrom`] if no frame of that sender arrived yet (the SFU
    /// slot to ask is learnt from its frames), [`ClientError::NotJoined`] while the
    /// room is not joined, [`ClientError::Server`] if the SFU refused it.
    pub async fn request_keyframe(&self, sender_index: u32) -> Result<(), ClientError> {
        let meeting = self.shared.id;
        call(&self.commands, |reply| Command::RequestKeyframe {
            meeting,
            sender_index,
            reply,
        })
        .await
    }

    /// The current participants.
    #[must_use]
    pub fn participants(&self) -> Vec<Participant> {
        self.shared.info().participants
    }

    /// The safety number of the current epoch: participants whose numbers match hold
    /// the same meeting key and the same identity and device keys for everyone.
    #[must_use]
    pub fn safety_code(&self) -> Option<SafetyCode> {
        self.shared.info().safety_code
    }

    /// The two safety words of the current epoch, once every participant's device has
    /// taken part in the epoch's commitment round (a second or so after everyone is in
    /// the room; [`MeetingEvent::SafetyWords`] says when). `None` until then, or while
    /// a participant is offline. Equal words mean the same as equal safety numbers,
    /// with a 1 in 65,536 chance of a miss; nobody can choose them.
    #[must_use]
    pub fn safety_words(&self) -> Option<SafetyWords> {
        self.shared
            .info()
            .safety_words
            .filter(|w| w.epoch() == self.sending_epoch())
    }

    /// The epoch this device sends on.
    #[must_use]
    pub fn sending_epoch(&self) -> Epoch {
        self.shared.info().sending_epoch
    }

    /// The epochs whose keys this device holds right now (the sending epoch, a newer
    /// one being switched to, an older one within its grace window).
    #[must_use]
    pub fn held_epochs(&self) -> Vec<Epoch> {
        self.shared.info().held_epochs
    }

    /// How many participants' devices the next Rekey is already wrapped for: this
    /// device leads the meeting and prepared it while the meeting was steady
    /// ([`ClientConfig::prepare_rekeys_after`]). A departure then costs no directory
    /// round trip and no key agreement for them. 0 on other devices.
    #[must_use]
    pub fn prepared_rekey_devices(&self) -> usize {
        self.shared.info().prepared_rekey_devices
    }

    /// Whether this device is the key leader.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        let info = self.shared.info();
        info.participants
            .iter()
            .any(|p| p.is_me && Some(p.device_id) == info.leader)
    }

    /// Whether the meeting has ended for this device.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.shared.info().ended
    }

    /// Media counters.
    #[must_use]
    pub fn stats(&self) -> MediaStats {
        self.shared.stats()
    }

    /// Leaves the meeting: tells the others (the key leader rekeys without this
    /// device), leaves the room and drops every key.
    pub async fn leave(&self) -> Result<(), ClientError> {
        let meeting = self.shared.id;
        call(&self.commands, |reply| Command::Leave { meeting, reply }).await
    }

    /// (Key leader) removes every device of `users`; the meeting rekeys without them,
    /// and the SFU stops routing to them once the room rotates.
    pub async fn remove(&self, users: &[UserId]) -> Result<(), ClientError> {
        let meeting = self.shared.id;
        let users = users.to_vec();
        call(&self.commands, |reply| Command::Remove {
            meeting,
            users,
            reply,
        })
        .await
    }

    /// (Key leader) invites more users mid-meeting. The meeting moves to a ratcheted
    /// key, so they cannot decrypt anything sent before.
    pub async fn invite(
        &self,
        users: &[UserId],
        media_kinds: &[MediaKind],
    ) -> Result<InviteReport, ClientError> {
        let meeting = self.shared.id;
        let users = users.to_vec();
        let media_kinds = media_kinds.to_vec();
        call(&self.commands, |reply| Command::Invite {
            meeting,
            users,
            media_kinds,
            reply,
        })
        .await
    }
}
