//! Conclave SFU (crate docs to be written with the server).

pub mod config;
pub mod rooms;
pub mod store;
pub mod media;
pub mod telemetry;
