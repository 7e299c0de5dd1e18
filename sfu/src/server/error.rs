//! Request errors and their mapping to the control protocol.

use conclave_proto::v1::{self, ErrorCode};

use crate::rooms::RoomError;
use crate::store::StoreError;

/// A refused control request: a protocol error code and a message for the client that
/// says what went wrong and what to do. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RequestError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// For `RATE_LIMITED`: how long to wait, ms.
    pub retry_after_ms: u64,
    /// For `WRONG_EPOCH`: the room's current epoch (0 if unknown).
    pub room_epoch: u64,
    /// For `WRONG_NODE`: the room's owner.
    pub redirect: Option<v1::Redirect>,
}

impl RequestError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            code,
            message: message.into(),
            retry_after_ms: 0,
            room_epoch: 0,
            redirect: None,
        }
    }

    /// `WRONG_NODE`: `owner` owns the room under `fence`.
    pub fn wrong_node(owner: &crate::store::NodeInfo, fence: crate::store::Fence) -> Self {
        let mut err = Self::new(
            ErrorCode::WrongNode,
            format!(
                "node {} owns this room: connect to {} ({}) and retry there",
                owner.node_id, owner.quic_addr, owner.server_name
            ),
        );
        err.redirect = Some(v1::Redirect {
            address: owner.quic_addr.as_str().to_owned(),
            server_name: owner.server_name.clone(),
            fence: fence.0,
            connection_id_byte: None,
        });
        err
    }

    /// `WRONG_NODE`: another shard of this node serves the room. `node` is this node
    /// as clients reach it (cluster mode), else the client reuses the address it
    /// connected to; `steering_byte` starts the new connection's ID.
    pub fn wrong_shard(node: Option<&crate::store::NodeInfo>, steering_byte: u8) -> Self {
        let mut err = Self::new(
            ErrorCode::WrongNode,
            "another shard of this node serves this room: open a connection whose \
             initial connection ID starts with the redirect's connection_id_byte, \
             and join there",
        );
        err.redirect = Some(v1::Redirect {
            address: node
                .map(|n| n.quic_addr.as_str().to_owned())
                .unwrap_or_default(),
            server_name: node.map(|n| n.server_name.clone()).unwrap_or_default(),
            fence: 0,
            connection_id_byte: Some(u32::from(steering_byte)),
        });
        err
    }

    /// `UNAVAILABLE`: this node holds no cluster lease right now.
    pub fn unavailable(retry_after_ms: u64) -> Self {
        let mut err = Self::new(
            ErrorCode::Unavailable,
            "this node cannot own rooms right now (its cluster lease is not renewed); \
             retry shortly or on another node",
        );
        err.retry_after_ms = retry_after_ms;
        err
    }

    /// `UNAVAILABLE`: the room's owner has stopped renewing its lease (it is probably
    /// dead); the room can be claimed here once that lease has run out.
    pub fn owner_silent(owner: &crate::store::NodeInfo, retry_after_ms: u64) -> Self {
        let mut err = Self::new(
            ErrorCode::Unavailable,
            format!(
                "node {}, which owns this room, has stopped renewing its lease; retry in \
                 {retry_after_ms} ms, when another node can take the room over",
                owner.node_id
            ),
        );
        err.retry_after_ms = retry_after_ms;
        err
    }

    /// `BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `LIMIT_EXCEEDED`.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::LimitExceeded, message)
    }

    /// `BAD_PROOF`.
    pub fn bad_proof(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadProof, message)
    }

    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// `INTERNAL`, for storage failures and lost background tasks.
    pub fn internal(context: &str) -> Self {
        Self::new(
            ErrorCode::Internal,
            format!("server storage failed during {context}; retry later"),
        )
    }

    /// The protocol message.
    #[must_use]
    pub fn to_proto(&self) -> v1::Error {
        v1::Error {
            code: self.code as i32,
            message: self.message.clone(),
            retry_after_ms: self.retry_after_ms,
            room_epoch: self.room_epoch,
            redirect: self.redirect.clone(),
        }
    }
}

impl From<StoreError> for RequestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserKeyMismatch => RequestError::new(
                ErrorCode::UserKeyMismatch,
                "this user id is registered with a different user signing key; \
                 register with the original key or choose another username",
            ),
            StoreError::DeviceExists => RequestError::new(
                ErrorCode::DeviceExists,
                "this device id is registered with a different certificate; \
                 create a new device identity",
            ),
            e @ (StoreError::TooManyDevices { .. } | StoreError::TooManyPrekeys { .. }) => {
                RequestError::limit(e.to_string())
            }
            e @ StoreError::SenderQuota { .. } => RequestError::limit(format!(
                "{e}; nothing was stored. The bytes come back as recipients acknowledge \
                 (or their entries expire)"
            )),
            e @ StoreError::MailboxBudget { .. } => RequestError::limit(format!(
                "{e}; nothing was stored. Retry later, once recipients have fetched \
                 their mail"
            )),
            StoreError::UnknownDevice => {
                RequestError::new(ErrorCode::NotFound, "device is not registered")
            }
            e => {
                tracing::error!(error = %e, "store failure");
                RequestError::internal("a storage operation")
            }
        }
    }
}

impl From<RoomError> for RequestError {
    fn from(e: RoomError) -> Self {
        let room_epoch = match e {
            RoomError::WrongEpoch { current } => current,
            _ => 0,
        };
        let retry_after = match e {
            RoomError::LeaderPresent { retry_after_ms } => retry_after_ms,
            RoomError::RotationRateLimited { retry_after_ms } => Some(retry_after_ms),
            _ => None,
        };
        let code = match e {
            RoomError::BadRequest(_) => ErrorCode::BadRequest,
            RoomError::BadProof => ErrorCode::BadProof,
            RoomError::WrongEpoch { .. } => ErrorCode::WrongEpoch,
            RoomError::Conflict => ErrorCode::RoomConflict,
            RoomError::NoSuchRoom => ErrorCode::NotFound,
            RoomError::NotMember => ErrorCode::BadRequest,
            RoomError::NotLeader | RoomError::LeaderPresent { .. } => ErrorCode::NotLeader,
            RoomError::RoomFull { .. }
            | RoomError::TooManyRooms { .. }
            | RoomError::SlotsExhausted => ErrorCode::LimitExceeded,
            RoomError::RotationRateLimited { .. } => ErrorCode::RateLimited,
            _ => ErrorCode::Internal,
        };
        let mut err = RequestError::new(code, e.to_string());
        err.room_epoch = room_epoch;
        if let Some(ms) = retry_after {
            err.retry_after_ms = ms.max(1);
        }
        err
    }
}
