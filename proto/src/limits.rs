//! Size bounds applied to untrusted bytes before they are decoded.
//!
//! Protobuf decoding allocates in proportion to its input, so bounding the input bounds
//! the memory an attacker can make a decoder use. Every decoder of network or file bytes
//! checks these limits first.

/// Largest serialized [`crate::v1::Container`] accepted, in bytes (1 MiB).
pub const MAX_CONTAINER_BYTES: usize = 1024 * 1024;

/// Most recipient entries one container may carry.
pub const MAX_CONTAINER_RECIPIENTS: usize = 4096;

/// Largest serialized [`crate::v1::DeviceCertificate`] or [`crate::v1::SignedPrekey`]
/// accepted, in bytes.
pub const MAX_SIGNED_OBJECT_BYTES: usize = 1024;

/// Most roster entries a meeting payload may carry.
pub const MAX_ROSTER_ENTRIES: usize = 4096;

/// Largest media datagram accepted, in bytes (header plus SFrame ciphertext).
pub const MAX_DATAGRAM_BYTES: usize = 1500;

/// Largest payload of a room message (`SendRoomMessage`): a reliable in-meeting message
/// of the largest body, with its topic, signature and SFrame overhead, fits.
pub const MAX_ROOM_MESSAGE_BYTES: usize = 5 * 1024;
