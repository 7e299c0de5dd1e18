//! Conclave client SDK: the sans-IO cryptographic core.
#![forbid(unsafe_code)]

pub mod identity;
mod ids;
pub mod time;

pub use ids::{ContainerId, DeviceId, MAX_USERNAME_BYTES, UserId};
pub use time::UnixMillis;
pub mod container;
