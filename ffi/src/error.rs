//! The one error type of the bindings.

use conclave_sdk::client::{ClientError, CredentialsError, MessageError};
use conclave_sdk::identity::IdentityError;
use conclave_sdk::proto::v1::ErrorCode;
use conclave_sdk::push::PushError;
use conclave_sdk::transport::TransportError;

/// Why a call failed. Each variant says what the app can do; `message` texts are for
/// logs and never contain a secret.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum ConclaveError {
    /// An argument was malformed (an id that is not hex of the right length, a bad
    /// fingerprint, an unusable username). Fix the call.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Stored credentials or a stored key (user key, push keys) could not be read
    /// (damaged, not ours, from a newer SDK, or a certificate that no longer verifies).
    #[error("credentials: {detail}")]
    Credentials {
        /// What was wrong.
        detail: String,
    },
    /// The server's certificate was refused (untrusted, expired, wrong name, not the
    /// pinned one). Nothing was sent. Check the server trust setting; do not retry
    /// blindly, this is what an impostor looks like.
    #[error("server certificate refused: {detail}")]
    Certificate {
        /// Why.
        detail: String,
    },
    /// The server could not be reached or the connection broke. Transient: a connected
    /// client reconnects by itself; a first connect can be retried.
    #[error("cannot reach the server: {detail}")]
    Connection {
        /// Why.
        detail: String,
    },
    /// The server refused the request.
    #[error("the server refused the request ({code}): {detail}")]
    Server {
        /// The protocol's error code, e.g. `RateLimited`, `UserKeyMismatch` (the
        /// username belongs to another identity key).
        code: String,
        /// The server's explanation.
        detail: String,
        /// For `RateLimited`: how long to wait before trying again, ms.
        retry_after_ms: Option<u64>,
    },
    /// The server answered something this SDK cannot interpret (version mismatch or a
    /// misbehaving server).
    #[error("protocol error: {detail}")]
    Protocol {
        /// What.
        detail: String,
    },
    /// No invitee has a device whose certificate and prekey verified.
    #[error("none of the invitees has a verified device to invite")]
    NobodyToInvite,
    /// The meeting has ended for this device (left, removed, or left out by a rekey).
    #[error("the meeting has ended for this device")]
    MeetingEnded,
    /// The meeting refused the call: only the key leader may add or remove
    /// participants, a rekey is under way, ...
    #[error("the meeting refused the call: {detail}")]
    MeetingRefused {
        /// Why.
        detail: String,
    },
    /// The meeting's room is not joined yet (or the client is reconnecting): media
    /// cannot be sent right now. Retry once joined.
    #[error("not connected to the meeting's room yet; retry once joined")]
    NotJoined,
    /// Sending is paused until this device receives the meeting's newest key (it was
    /// requested); `MeetingEvent::EpochChanged` says when it resumes.
    #[error("sending paused until the meeting's new key arrives")]
    SendingPaused,
    /// A media frame is larger than this path carries.
    #[error("media frame of {len} bytes is too large; at most {max} bytes fit this path")]
    FrameTooLarge {
        /// The frame's length.
        len: u64,
        /// The largest frame this path carries.
        max: u64,
    },
    /// An in-meeting message was refused: its body or topic is above the limits
    /// (reliable 4,096 bytes, lossy 900, topic 64). Shorten it or split it.
    #[error("message refused: {detail}")]
    MessageTooLarge {
        /// What was too large.
        detail: String,
    },
    /// No frame of this sender arrived yet, so there is no one to ask for a keyframe.
    #[error("no frame from sender {sender_index} has arrived yet")]
    NoFramesFrom {
        /// The sender index asked for.
        sender_index: u32,
    },
    /// The invitation is unknown or was already answered.
    #[error("no pending invitation for this meeting")]
    NoInvitation,
    /// The invitation expired; ask the inviter for a new one.
    #[error("the invitation has expired")]
    InvitationExpired,
    /// A cryptographic operation failed (sealing a container, the key schedule, media
    /// encryption); the message says which.
    #[error("crypto: {detail}")]
    Crypto {
        /// What failed.
        detail: String,
    },
    /// The server does not offer push wake-ups (its operator has not configured
    /// push). Do not subscribe with the platform's push service for it; the device
    /// learns of invitations when it connects.
    #[error(
        "this server does not offer push wake-ups; skip push registration, invitations arrive when the device connects"
    )]
    PushNotOffered,
    /// The server refused the push endpoint: not an https URL of one of the push
    /// services its operator allows. Subscribe with one of those (`detail` says what
    /// was wrong); retrying the same endpoint fails again.
    #[error("the server refused the push endpoint: {detail}")]
    PushEndpointRefused {
        /// The server's explanation.
        detail: String,
    },
    /// A push message did not open as a wake-up: not encrypted to this device's push
    /// keys, altered, too large, or of a newer format. Ignore it, or connect anyway: a
    /// wake-up only ever asks the app to connect, which is always harmless.
    #[error("not a wake-up for this device: {detail}")]
    InvalidPushMessage {
        /// Why, and what to do.
        detail: String,
    },
    /// The client was closed.
    #[error("the client has been closed")]
    Closed,
    /// A bug in the SDK (reported rather than crashing the app).
    #[error("internal error: {detail}")]
    Internal {
        /// What happened.
        detail: String,
    },
}

impl From<ClientError> for ConclaveError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Certificate(problem) => ConclaveError::Certificate {
                detail: problem.to_string(),
            },
            ClientError::Connection(problem) => ConclaveError::Connection {
                detail: problem.to_string(),
            },
            ClientError::Server {
                code,
                message,
                retry_after,
                ..
            } => ConclaveError::Server {
                code: format!("{code:?}"),
                detail: message,
                retry_after_ms: retry_after
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            },
            ClientError::Protocol(v) => ConclaveError::Protocol {
                detail: v.to_string(),
            },
            ClientError::NobodyToInvite => ConclaveError::NobodyToInvite,
            ClientError::MeetingEnded => ConclaveError::MeetingEnded,
            ClientError::MeetingRefused(r) => ConclaveError::MeetingRefused {
                detail: r.to_string(),
            },
            ClientError::NotJoined => ConclaveError::NotJoined,
            ClientError::SendingPaused => ConclaveError::SendingPaused,
            ClientError::FrameTooLarge { len, max } => ConclaveError::FrameTooLarge {
                len: len as u64,
                max: max as u64,
            },
            ClientError::Message(
                e @ (MessageError::BodyTooLarge { .. } | MessageError::TopicTooLong { .. }),
            ) => ConclaveError::MessageTooLarge {
                detail: e.to_string(),
            },
            ClientError::Message(e) => ConclaveError::Crypto {
                detail: e.to_string(),
            },
            ClientError::NoFramesFrom { sender_index } => {
                ConclaveError::NoFramesFrom { sender_index }
            }
            ClientError::NoInvitation => ConclaveError::NoInvitation,
            ClientError::InvitationExpired => ConclaveError::InvitationExpired,
            e @ ClientError::RosterKeyChanged(_) => ConclaveError::MeetingRefused {
                detail: e.to_string(),
            },
            ClientError::Closed => ConclaveError::Closed,
            // The crypto library failing on a valid key (out of memory): not the
            // credentials' fault, and worth retrying.
            ClientError::Identity(e @ IdentityError::KeyComputation { .. }) => {
                ConclaveError::Internal {
                    detail: e.to_string(),
                }
            }
            ClientError::Identity(e) => ConclaveError::Credentials {
                detail: e.to_string(),
            },
            e @ (ClientError::Container(_)
            | ClientError::KeySchedule(_)
            | ClientError::Media(_)) => ConclaveError::Crypto {
                detail: e.to_string(),
            },
            other => ConclaveError::Internal {
                detail: other.to_string(),
            },
        }
    }
}

impl ConclaveError {
    /// The error of a push call (`push_server_key`, `register_push`,
    /// `unregister_push`): the server's push refusals become their own variants.
    /// (`NotOffered` is only mapped here: elsewhere it may name another feature.)
    pub(crate) fn from_push_call(e: ClientError) -> Self {
        match e {
            ClientError::Server {
                code: ErrorCode::NotOffered,
                ..
            } => ConclaveError::PushNotOffered,
            ClientError::Server {
                code: ErrorCode::ForbiddenEndpoint,
                message,
                ..
            } => ConclaveError::PushEndpointRefused { detail: message },
            other => other.into(),
        }
    }
}

impl From<PushError> for ConclaveError {
    fn from(e: PushError) -> Self {
        match e {
            // Only `PushKeys.restore` reads stored keys.
            e @ PushError::BadKeys { .. } => ConclaveError::Credentials {
                detail: e.to_string(),
            },
            // Everything else is about a message that does not open; the SDK's texts
            // say what to do.
            e => ConclaveError::InvalidPushMessage {
                detail: e.to_string(),
            },
        }
    }
}

impl From<CredentialsError> for ConclaveError {
    fn from(e: CredentialsError) -> Self {
        match e {
            // The crypto library failing on a valid key (out of memory): not the
            // credentials' fault, and worth retrying.
            CredentialsError::Invalid(IdentityError::KeyComputation { .. }) => {
                ConclaveError::Internal {
                    detail: e.to_string(),
                }
            }
            e => ConclaveError::Credentials {
                detail: e.to_string(),
            },
        }
    }
}

impl From<TransportError> for ConclaveError {
    fn from(e: TransportError) -> Self {
        ConclaveError::InvalidArgument {
            what: "server trust".to_string(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_keep_what_the_app_acts_on() {
        let e: ConclaveError = ClientError::FrameTooLarge {
            len: 90_000,
            max: 70_000,
        }
        .into();
        assert!(matches!(
            e,
            ConclaveError::FrameTooLarge {
                len: 90_000,
                max: 70_000
            }
        ));
        let e: ConclaveError = ClientError::SendingPaused.into();
        assert!(matches!(e, ConclaveError::SendingPaused));
        let e: ConclaveError = ClientError::NoFramesFrom { sender_index: 3 }.into();
        assert_eq!(e.to_string(), "no frame from sender 3 has arrived yet");
    }

    fn refusal(code: ErrorCode, message: &str) -> ClientError {
        ClientError::Server {
            code,
            message: message.to_string(),
            room_epoch: None,
            retry_after: None,
            redirect: None,
        }
    }

    #[test]
    fn push_refusals_of_push_calls_are_their_own_variants() {
        let e = ConclaveError::from_push_call(refusal(ErrorCode::NotOffered, "no [push]"));
        assert!(matches!(e, ConclaveError::PushNotOffered), "{e:?}");
        assert!(e.to_string().contains("skip push registration"), "{e}");
        let e = ConclaveError::from_push_call(refusal(
            ErrorCode::ForbiddenEndpoint,
            "host not allowed",
        ));
        assert!(
            matches!(&e, ConclaveError::PushEndpointRefused { detail } if detail == "host not allowed"),
            "{e:?}"
        );
        // Anything else keeps its general mapping.
        let e = ConclaveError::from_push_call(refusal(ErrorCode::RateLimited, "slow down"));
        assert!(matches!(e, ConclaveError::Server { .. }), "{e:?}");
        assert!(matches!(
            ConclaveError::from_push_call(ClientError::Closed),
            ConclaveError::Closed
        ));
    }
}
