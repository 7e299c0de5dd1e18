//! Server configuration: defaults, the TOML file format and limits.
//!
//! Every field has a production default, so an empty file (or no file) is a working
//! configuration. Unknown keys are rejected, so a typo never silently falls back to a
//! default. Command-line flags override the file (see `main.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Everything the server needs to know besides its endpoint and store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// UDP address the QUIC endpoint listens on.
    pub listen: SocketAddr,
    /// Directory for the database and the development certificate.
    pub data_dir: PathBuf,
    /// TCP address of the Prometheus `/metrics` and `/healthz` endpoint; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain; with `key`. Without both, a development certificate is
    /// generated under `data_dir` on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// Timers and lifetimes.
    pub timing: Timing,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from("data"),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            cert: None,
            key: None,
            limits: Limits::default(),
            timing: Timing::default(),
        }
    }
}

/// Resource limits. Exceeding one gives the client a `LIMIT_EXCEEDED` (or
/// `RATE_LIMITED`) error naming the limit, or a counted datagram drop.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Limits {
    /// Concurrent QUIC connections; further handshakes are refused.
    pub max_connections: usize,
    /// Rooms one connection may be a member of at once.
    pub max_rooms_per_connection: usize,
    /// Members of one room.
    pub max_members_per_room: usize,
    /// Size of one serialized container, bytes.
    pub max_container_bytes: usize,
    /// Recipient devices of one `SendContainer`.
    pub max_recipients_per_container: usize,
    /// Prekeys in one upload.
    pub max_prekeys_per_upload: usize,
    /// Prekeys the directory holds per device.
    pub max_prekeys_per_device: usize,
    /// Below this many prekeys the owner gets a `PrekeysLow` event.
    pub prekeys_low_threshold: usize,
    /// Waiting mailbox entries per device.
    pub max_mailbox_per_device: usize,
    /// Devices per user.
    pub max_devices_per_user: usize,
    /// User ids in one `FetchBundles`.
    pub max_users_per_fetch: usize,
    /// Sustained control requests per second per connection.
    pub requests_per_second: u32,
    /// Burst of control requests above the sustained rate.
    pub request_burst: u32,
    /// Largest media datagram accepted or forwarded, bytes (at most 1500).
    pub max_datagram_bytes: usize,
    /// Largest control frame, bytes.
    pub max_frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_rooms_per_connection: 8,
            max_members_per_room: 1_000,
            max_container_bytes: conclave_proto::limits::MAX_CONTAINER_BYTES,
            max_recipients_per_container: 1_000,
            max_prekeys_per_upload: 100,
            max_prekeys_per_device: 1_000,
            prekeys_low_threshold: 20,
            max_mailbox_per_device: 1_000,
            max_devices_per_user: 16,
            max_users_per_fetch: 64,
            requests_per_second: 50,
            request_burst: 200,
            max_datagram_bytes: conclave_proto::limits::MAX_DATAGRAM_BYTES,
            max_frame_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Timers and lifetimes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Timing {
    /// Mailbox entries are deleted this long after they were stored, seconds.
    pub mailbox_ttl_secs: u64,
    /// How often the background sweep expires mailbox entries and idle rooms, seconds.
    pub sweep_interval_secs: u64,
    /// After a room rotation, members have this long to prove the new epoch, ms.
    pub rotation_grace_ms: u64,
    /// A connection must authenticate within this long, seconds.
    pub auth_timeout_secs: u64,
    /// QUIC idle timeout, seconds.
    pub idle_timeout_secs: u64,
    /// Room records without members are forgotten after this long, seconds.
    pub room_idle_ttl_secs: u64,
    /// On shutdown, clients are told to come back after this long, ms.
    pub shutdown_reconnect_after_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            mailbox_ttl_secs: 30 * 24 * 3600,
            sweep_interval_secs: 60,
            rotation_grace_ms: 5_000,
            auth_timeout_secs: 10,
            idle_timeout_secs: 30,
            room_idle_ttl_secs: 24 * 3600,
            shutdown_reconnect_after_ms: 1_000,
        }
    }
}
