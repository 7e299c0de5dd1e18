//! Why a room operation was refused.

/// Why a room operation was refused. Each maps to a control-protocol error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// A field of the request is malformed.
    #[error("malformed room request: {0}")]
    BadRequest(&'static str),
    /// The join or rotation proof did not verify.
    #[error(
        "room proof did not verify: sign the server's challenge with this epoch's room-auth key over this connection's TLS exporter"
    )]
    BadProof,
    /// The epoch is not the room's current one (or, for a rotation, not greater).
    #[error("wrong epoch: the room is at epoch {current}")]
    WrongEpoch {
        /// The room's current epoch.
        current: u64,
    },
    /// The room exists with another room-auth key at this epoch.
    #[error("a room with this routing id exists with a different room-auth key")]
    Conflict,
    /// No live room has this routing id.
    #[error("no such room: open it first")]
    NoSuchRoom,
    /// The connection is not a member of the room.
    #[error("this connection is not a member of the room")]
    NotMember,
    /// Only the room's key leader may rotate it: this device is not on the room's list
    /// of leader devices.
    #[error("only the room's key leader (or a listed successor) may rotate it")]
    NotLeader,
    /// This device is a listed successor, but a leader device before it is still in the
    /// room (`None`), or left it less than the succession grace ago.
    #[error(
        "a key leader before this device is still in the room or left too recently; retry later"
    )]
    LeaderPresent {
        /// How long until the grace has passed, if every leader before has left.
        retry_after_ms: Option<u64>,
    },
    /// The room has the maximum number of members.
    #[error("room is full ({limit} members, max_members_per_room)")]
    RoomFull {
        /// The limit.
        limit: usize,
    },
    /// Every sender slot (65,536) has been handed out since the room was opened; slots
    /// are never reused, so the room takes no newcomers until it is empty and opened
    /// anew.
    #[error(
        "this room has handed out all 65536 sender slots since it was opened and never reuses \
         one; it takes new members again once every member has left and it is opened anew"
    )]
    SlotsExhausted,
    /// The room was rotated too often recently (`room_rotation_burst`,
    /// `room_rotation_interval_ms`).
    #[error(
        "this room was rotated too often; retry in {retry_after_ms} ms \
         (room_rotation_burst, room_rotation_interval_ms)"
    )]
    RotationRateLimited {
        /// How long until the room may be rotated again, ms.
        retry_after_ms: u64,
    },
    /// The connection is in the maximum number of rooms.
    #[error("connection is already in {limit} rooms (max_rooms_per_connection)")]
    TooManyRooms {
        /// The limit.
        limit: usize,
    },
    /// The connection was never registered with the registry (a server bug).
    #[error("connection is not registered with the room registry")]
    UnknownConnection,
}
