//! Conclave client SDK: identity, secure containers, meeting keys, SFrame media
//! encryption and safety codes.
#![forbid(unsafe_code)]

pub mod container;
pub mod identity;
mod ids;
pub mod meeting;
pub mod safety;
pub mod sframe;
pub mod time;

pub use ids::{ContainerId, DeviceId, MAX_USERNAME_BYTES, UserId};
pub use time::UnixMillis;
