//! Conclave SFU (crate docs to be written with the server).

pub mod config;
pub mod media;
pub mod metrics_http;
pub mod ratelimit;
pub mod rooms;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use server::{SfuError, run};

/// Bytes of outgoing datagrams quinn buffers per connection before the forwarder
/// starts dropping (video at half of it, audio when full).
pub const DATAGRAM_SEND_BUFFER: usize = 1024 * 1024;
