//! The client's error type.

use conclave_proto::v1::ErrorCode;

use crate::UserId;
use crate::container::ContainerError;
use crate::identity::IdentityError;
use crate::meeting::MeetingError;
use crate::meeting::messages::MessageError;
use crate::meeting::rekey::RekeyError;
use crate::sframe::SframeError;
use crate::transport::{CertificateProblem, TransportError};

/// Why a [`Client`](super::Client) or [`Meeting`](super::Meeting) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server's certificate was refused (untrusted, expired, wrong name, not the
    /// pinned one). Nothing was sent to the server.
    #[error(transparent)]
    Certificate(CertificateProblem),
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the server: {0}")]
    Connection(#[source] ConnectionProblem),
    /// The server refused a request.
    #[error("the server refused the request ({code:?}): {message}")]
    Server {
        /// The protocol error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// For `WrongEpoch`: the room's current epoch as the server claims it (not
        /// trusted: it only ever makes this device stop sending and ask for a key).
        room_epoch: Option<u64>,
        /// For `RateLimited`: how long the server asks to wait before trying again.
        retry_after: Option<std::time::Duration>,
        /// For `WrongNode`: where the room is served (another cluster node, or another
        /// shard of this one), as the server claims it. The client follows it by
        /// itself when it joins a meeting's room.
        redirect: Option<Box<conclave_proto::v1::Redirect>>,
    },
    /// The server answered something this SDK cannot interpret (a version mismatch or a
    /// misbehaving server).
    #[error("protocol error: {0}")]
    Protocol(#[source] ProtocolViolation),
    /// No invitee could be reached: unknown users, or no device whose certificate and
    /// prekey verified.
    #[error("none of the invitees has a verified device to invite")]
    NobodyToInvite,
    /// The meeting has ended for this device (left, removed or excluded by a rekey).
    #[error("the meeting has ended for this device")]
    MeetingEnded,
    /// The meeting refused the call (only the key leader may remove or add
    /// participants; a rekey is in progress; ...).
    #[error(transparent)]
    MeetingRefused(#[from] RekeyError),
    /// This device has not joined the meeting's room yet (or is reconnecting): media
    /// cannot be sent right now.
    #[error("not connected to the meeting's room yet; retry once joined")]
    NotJoined,
    /// Sending is paused: the meeting's room moved to an epoch whose key has not
    /// reached this device, so its current key may be known to a participant who was
    /// removed. The key leader has been asked for the key; sending resumes on its own
    /// (watch for [`MeetingEvent::EpochChanged`](super::MeetingEvent::EpochChanged)).
    #[error(
        "sending paused: the meeting moved to a key this device has not received yet; it was requested"
    )]
    SendingPaused,
    /// A media frame is larger than fits in the datagrams of this path.
    #[error("media frame of {len} bytes is too large; at most {max} bytes fit this path")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The largest frame this path carries.
        max: usize,
    },
    /// [`MeetingHandle::send_frame`](super::MeetingHandle::send_frame) was given
    /// [`MediaKind::Data`](super::MediaKind::Data), which only in-meeting messages use:
    /// send those with [`MeetingHandle::send_message`](super::MeetingHandle::send_message).
    #[error("MediaKind::Data is for in-meeting messages: use send_message")]
    NotMedia,
    /// An in-meeting message was refused before sending (body or topic too long).
    #[error(transparent)]
    Message(#[from] MessageError),
    /// An identity operation failed (certificate creation, prekeys).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A container could not be sealed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A meeting-key operation failed (an epoch or sender index beyond what the key
    /// schedule and SFrame can carry).
    #[error(transparent)]
    KeySchedule(#[from] MeetingError),
    /// Media encryption failed (for example the SFrame counter is exhausted).
    #[error(transparent)]
    Media(#[from] SframeError),
    /// No frame of this sender has arrived yet, so the SFU slot to ask for a keyframe
    /// is unknown; ask again once its frames arrive.
    #[error("no frame from sender {sender_index} has arrived yet; nothing to ask a keyframe of")]
    NoFramesFrom {
        /// The sender index asked for.
        sender_index: u32,
    },
    /// The invitation is unknown or has already been answered.
    #[error("no pending invitation for this meeting")]
    NoInvitation,
    /// The invitation has expired; ask the inviter for a new one.
    #[error("the invitation has expired")]
    InvitationExpired,
    /// A user of the invitation's roster was pinned to another key after the
    /// invitation arrived (its roster was checked against the directory then): the
    /// invitation is not accepted. Compare safety codes with the inviter out of band.
    #[error(
        "a user of this invitation's roster was pinned to another key since it arrived; not accepted"
    )]
    RosterKeyChanged(UserId),
    /// The client has been closed.
    #[error("the client has been closed")]
    Closed,
}

/// Why the server cannot be reached right now. Every one is transient: the client
/// reconnects by itself (see [`ClientEvent::Reconnected`](super::ClientEvent::Reconnected)).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionProblem {
    /// The connection broke and the client is reconnecting; retry shortly.
    #[error("reconnecting; retry shortly")]
    Reconnecting,
    /// The connection failed or closed.
    #[error(transparent)]
    Transport(TransportError),
    /// QUIC refused a media datagram (the connection closed, or the peer does not take
    /// datagrams).
    #[error("media datagram refused: {0}")]
    Datagram(#[source] quinn::SendDatagramError),
}

/// Why the client lost its connection (see
/// [`ClientEvent::Disconnected`](super::ClientEvent::Disconnected)).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server announced that it is shutting down; the client reconnects after the
    /// delay the server asked for.
    #[error("the server is shutting down; reconnecting in {reconnect_after:?}")]
    ServerShuttingDown {
        /// How long the client waits before reconnecting.
        reconnect_after: std::time::Duration,
    },
    /// The connection failed or closed.
    #[error("{0}")]
    Transport(#[source] TransportError),
}

/// What the server answered that this SDK cannot interpret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// The server answered a request with an answer of another kind.
    #[error("the server answered {request} with an answer of another kind")]
    UnexpectedAnswer {
        /// The request that was answered.
        request: &'static str,
    },
    /// The control stream carried something undecodable.
    #[error(transparent)]
    Transport(TransportError),
    /// A directory answer yielded a recipient whose user this device has not pinned
    /// (screening makes this impossible; it is refused rather than trusted).
    #[error("the directory's answer named a user this device has not pinned")]
    UnpinnedRecipient,
}

impl ClientError {
    /// An answer of the wrong kind to `request`.
    pub(crate) fn unexpected_answer(request: &'static str) -> Self {
        ClientError::Protocol(ProtocolViolation::UnexpectedAnswer { request })
    }

    /// The connection broke: reconnecting.
    pub(crate) fn reconnecting() -> Self {
        ClientError::Connection(ConnectionProblem::Reconnecting)
    }

    /// The server's error code, if the server refused the request.
    #[must_use]
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// For a `WrongEpoch` refusal: the room's current epoch as the server claims it.
    #[must_use]
    pub fn room_epoch(&self) -> Option<u64> {
        match self {
            ClientError::Server { room_epoch, .. } => *room_epoch,
            _ => None,
        }
    }

    /// For a `RateLimited` refusal: how long the server asks to wait.
    #[must_use]
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether retrying later may succeed (a connection problem or a rate limit).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Connection(_)
                | ClientError::NotJoined
                | ClientError::SendingPaused
                | ClientError::MeetingRefused(RekeyError::Busy)
        ) || matches!(
            self.server_code(),
            Some(ErrorCode::RateLimited | ErrorCode::ShuttingDown)
        )
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Certificate(p) => ClientError::Certificate(p),
            TransportError::Server {
                code,
                message,
                room_epoch,
                retry_after_ms,
                redirect,
            } => ClientError::Server {
                redirect: redirect.map(Box::new),
                code,
                message,
                room_epoch: (room_epoch > 0).then_some(room_epoch),
                retry_after: (retry_after_ms > 0)
                    .then(|| std::time::Duration::from_millis(retry_after_ms)),
            },
            e @ TransportError::Protocol(_) => {
                ClientError::Protocol(ProtocolViolation::Transport(e))
            }
            other => ClientError::Connection(ConnectionProblem::Transport(other)),
        }
    }
}
