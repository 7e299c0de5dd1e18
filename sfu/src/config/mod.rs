//! Server configuration: defaults, the TOML file format and limits.
//!
//! Every field has a production default, so an empty file (or no file) is a working
//! configuration. Unknown keys are rejected, so a typo never silently falls back to a
//! default. Command-line flags override the file (see `main.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod env;
mod push;
mod store;

pub use env::{FLAG_VARIABLES, is_known_variable};
pub use push::{AllowList, EndpointRefused, PushConfig};
pub use store::{ClusterConfig, StoreSetting};

/// Why a configuration could not be read or is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: check that it exists and is readable", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the format (for example an unknown
    /// key or a value of the wrong type).
    #[error("invalid config file {}: {message}", path.display())]
    Parse {
        /// The file (`<string>` for [`Config::from_toml_str`]).
        path: PathBuf,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent with another; the message names the field.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a TOML document. Missing keys keep their defaults; unknown keys are
    /// errors. Does not [`validate`](Config::validate), so that command-line overrides
    /// can be applied first.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        parse(s, Path::new("<string>"))
    }

    /// Reads and parses a TOML file, like [`Config::from_toml_str`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&text, path)
    }

    /// Checks ranges and consistency; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return invalid("cert is set but key is not: give both or neither"),
            (None, Some(_)) => return invalid("key is set but cert is not: give both or neither"),
            _ => {}
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty");
        }
        if !(1..=1024).contains(&self.store_pool_size) {
            return invalid("store_pool_size must be 1..=1024");
        }
        if self.store_threads > MAX_STORE_THREADS {
            return invalid("store_threads must be 0 (automatic) to 1024");
        }
        if !(1..=MAX_STORE_CACHE_MIB).contains(&self.store_cache_mib) {
            return invalid("store_cache_mib must be 1..=65536");
        }
        if self.store_ca_file.is_some() && self.store == StoreSetting::Redb {
            return invalid(
                "store_ca_file is set but store is redb: it only applies to PostgreSQL",
            );
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate(self).map_err(ConfigError::Invalid)?;
        }
        if let Some(push) = &self.push {
            push.validate().map_err(ConfigError::Invalid)?;
        }
        self.limits.validate()?;
        self.timing.validate()
    }
}

/// Store threads per shard with redb when `store_threads` is 0: redb runs one write
/// transaction at a time and reads from its cache, so one thread can write while
/// another reads; more threads would only wait.
pub const REDB_STORE_THREADS: usize = 2;
/// Largest accepted `store_threads`.
pub const MAX_STORE_THREADS: usize = 1024;
/// Default `store_cache_mib`. redb's own default is 1 GiB, which a node with a large
/// directory would fill with pages it rarely reads again.
pub const DEFAULT_STORE_CACHE_MIB: usize = 64;
/// Largest accepted `store_cache_mib` (64 GiB).
pub const MAX_STORE_CACHE_MIB: usize = 65_536;

impl Config {
    /// Threads each of `shards` shards gives to store calls: `store_threads` when set;
    /// otherwise [`REDB_STORE_THREADS`] with redb, and with PostgreSQL enough for the
    /// shards together to use the whole pool (`store_pool_size` ÷ `shards`, at least
    /// 2).
    #[must_use]
    pub fn store_threads_per_shard(&self, shards: usize) -> usize {
        if self.store_threads > 0 {
            return self.store_threads;
        }
        match self.store {
            StoreSetting::Redb => REDB_STORE_THREADS,
            StoreSetting::Postgres(_) => self.store_pool_size.div_ceil(shards.max(1)).max(2),
        }
    }

    /// `store_cache_mib` in bytes.
    #[must_use]
    pub fn store_cache_bytes(&self) -> usize {
        self.store_cache_mib.saturating_mul(1024 * 1024)
    }
}

/// The smallest accepted `limits.max_frame_bytes_before_auth`: a `Register` frame
/// (a certificate of at most 1 KiB, a key and a signature) must always fit.
pub const MIN_FRAME_BYTES_BEFORE_AUTH: usize = 2048;

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        let nonzero: [(&str, u64); 32] = [
            ("max_connections", l.max_connections as u64),
            (
                "max_rooms_per_connection",
                l.max_rooms_per_connection as u64,
            ),
            ("max_members_per_room", l.max_members_per_room as u64),
            ("max_container_bytes", l.max_container_bytes as u64),
            (
                "max_recipients_per_container",
                l.max_recipients_per_container as u64,
            ),
            ("max_prekeys_per_upload", l.max_prekeys_per_upload as u64),
            ("max_prekeys_per_device", l.max_prekeys_per_device as u64),
            ("max_mailbox_per_device", l.max_mailbox_per_device as u64),
            (
                "max_mailbox_entries_per_sender_per_device",
                l.max_mailbox_entries_per_sender_per_device as u64,
            ),
            ("max_devices_per_user", l.max_devices_per_user as u64),
            ("max_users_per_fetch", l.max_users_per_fetch as u64),
            ("requests_per_second", u64::from(l.requests_per_second)),
            ("request_burst", u64::from(l.request_burst)),
            (
                "room_message_bytes_per_second",
                u64::from(l.room_message_bytes_per_second),
            ),
            (
                "room_message_burst_bytes",
                u64::from(l.room_message_burst_bytes),
            ),
            ("max_frame_bytes", l.max_frame_bytes as u64),
            (
                "max_frame_bytes_before_auth",
                l.max_frame_bytes_before_auth as u64,
            ),
            ("max_queued_events", l.max_queued_events as u64),
            ("max_queued_event_bytes", l.max_queued_event_bytes as u64),
            (
                "max_mailbox_bytes_per_sender",
                l.max_mailbox_bytes_per_sender,
            ),
            ("max_mailbox_bytes", l.max_mailbox_bytes),
            (
                "registrations_per_ip_burst",
                u64::from(l.registrations_per_ip_burst),
            ),
            (
                "registrations_per_ip_per_hour",
                u64::from(l.registrations_per_ip_per_hour),
            ),
            (
                "prekey_pops_per_pair_burst",
                u64::from(l.prekey_pops_per_pair_burst),
            ),
            (
                "prekey_pops_per_pair_per_minute",
                u64::from(l.prekey_pops_per_pair_per_minute),
            ),
            (
                "prekey_pops_per_target_burst",
                u64::from(l.prekey_pops_per_target_burst),
            ),
            (
                "prekey_pops_per_target_per_minute",
                u64::from(l.prekey_pops_per_target_per_minute),
            ),
            ("room_rotation_burst", u64::from(l.room_rotation_burst)),
            ("room_rotation_interval_ms", l.room_rotation_interval_ms),
            (
                "room_records_per_device_burst",
                u64::from(l.room_records_per_device_burst),
            ),
            (
                "room_records_per_device_per_hour",
                u64::from(l.room_records_per_device_per_hour),
            ),
            ("max_rate_limit_entries", l.max_rate_limit_entries as u64),
        ];
        for (name, value) in nonzero {
            if value == 0 {
                return invalid(format!("limits.{name} must be greater than 0"));
            }
        }
        let max_dgram = conclave_proto::limits::MAX_DATAGRAM_BYTES;
        if !(64..=max_dgram).contains(&l.max_datagram_bytes) {
            return invalid(format!(
                "limits.max_datagram_bytes must be 64..={max_dgram}, got {}",
                l.max_datagram_bytes
            ));
        }
        let max_container = conclave_proto::limits::MAX_CONTAINER_BYTES;
        if l.max_container_bytes > max_container {
            return invalid(format!(
                "limits.max_container_bytes must be at most {max_container} (the protocol limit), got {}",
                l.max_container_bytes
            ));
        }
        let max_recipients = conclave_proto::limits::MAX_CONTAINER_RECIPIENTS;
        if l.max_recipients_per_container > max_recipients {
            return invalid(format!(
                "limits.max_recipients_per_container must be at most {max_recipients} (the protocol limit), got {}",
                l.max_recipients_per_container
            ));
        }
        if l.max_frame_bytes <= l.max_container_bytes {
            return invalid(format!(
                "limits.max_frame_bytes ({}) must be larger than limits.max_container_bytes ({}) so that a container fits in a control frame",
                l.max_frame_bytes, l.max_container_bytes
            ));
        }
        if !(MIN_FRAME_BYTES_BEFORE_AUTH..=l.max_frame_bytes)
            .contains(&l.max_frame_bytes_before_auth)
        {
            return invalid(format!(
                "limits.max_frame_bytes_before_auth must be {MIN_FRAME_BYTES_BEFORE_AUTH}..=limits.max_frame_bytes ({}) so that Register fits, got {}",
                l.max_frame_bytes, l.max_frame_bytes_before_auth
            ));
        }
        // One largest room message to a full room must fit the burst, or it could
        // never be sent (it would be refused RATE_LIMITED forever).
        let fan_out = conclave_proto::limits::MAX_ROOM_MESSAGE_BYTES as u64
            * (l.max_members_per_room.saturating_sub(1) as u64);
        if u64::from(l.room_message_burst_bytes) < fan_out {
            return invalid(format!(
                "limits.room_message_burst_bytes ({}) must be at least {fan_out}: one \
                 largest room message (5 KiB) to every other member of a full room \
                 (limits.max_members_per_room = {})",
                l.room_message_burst_bytes, l.max_members_per_room
            ));
        }
        if u32::try_from(l.max_queued_event_bytes).is_err() {
            return invalid(format!(
                "limits.max_queued_event_bytes must be at most {}, got {}",
                u32::MAX,
                l.max_queued_event_bytes
            ));
        }
        if l.max_mailbox_bytes_per_sender > l.max_mailbox_bytes {
            return invalid(format!(
                "limits.max_mailbox_bytes_per_sender ({}) must not exceed limits.max_mailbox_bytes ({})",
                l.max_mailbox_bytes_per_sender, l.max_mailbox_bytes
            ));
        }
        if l.max_mailbox_entries_per_sender_per_device > l.max_mailbox_per_device {
            return invalid(format!(
                "limits.max_mailbox_entries_per_sender_per_device ({}) must not exceed limits.max_mailbox_per_device ({})",
                l.max_mailbox_entries_per_sender_per_device, l.max_mailbox_per_device
            ));
        }
        if l.prekeys_low_threshold > l.max_prekeys_per_device {
            return invalid(format!(
                "limits.prekeys_low_threshold ({}) must not exceed limits.max_prekeys_per_device ({})",
                l.prekeys_low_threshold, l.max_prekeys_per_device
            ));
        }
        Ok(())
    }
}

impl Timing {
    fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        let nonzero = [
            ("mailbox_ttl_secs", t.mailbox_ttl_secs),
            ("sweep_interval_secs", t.sweep_interval_secs),
            ("rotation_grace_ms", t.rotation_grace_ms),
            ("leader_succession_ms", t.leader_succession_ms),
            ("auth_timeout_secs", t.auth_timeout_secs),
            ("idle_timeout_secs", t.idle_timeout_secs),
            ("room_idle_ttl_secs", t.room_idle_ttl_secs),
        ];
        for (name, value) in nonzero {
            if value == 0 {
                return invalid(format!("timing.{name} must be greater than 0"));
            }
        }
        // QUIC encodes the idle timeout in milliseconds; a day is far beyond any use.
        if t.idle_timeout_secs > 86_400 {
            return invalid(format!(
                "timing.idle_timeout_secs must be at most 86400, got {}",
                t.idle_timeout_secs
            ));
        }
        if t.media_pack_ms > MAX_MEDIA_PACK_MS {
            return invalid(format!(
                "timing.media_pack_ms must be 0..={MAX_MEDIA_PACK_MS}, got {}",
                t.media_pack_ms
            ));
        }
        if !(1..=3600).contains(&t.drain_grace_secs) {
            return invalid(format!(
                "timing.drain_grace_secs must be 1..=3600, got {}",
                t.drain_grace_secs
            ));
        }
        Ok(())
    }
}

/// Parses a metrics address as given on the command line or in the file: a socket
/// address, or `off` to disable the endpoint.
pub fn parse_metrics_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("expected an address such as 127.0.0.1:9464, or off: {e}"))
}

fn metrics_listen_or_off<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let s = String::deserialize(deserializer)?;
    parse_metrics_listen(&s).map_err(serde::de::Error::custom)
}

fn metrics_listen_as_text<S>(value: &Option<SocketAddr>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
{
    match value {
        Some(addr) => serializer.collect_str(addr),
        None => serializer.serialize_str("off"),
    }
}

fn invalid(message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message.into()))
}

fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// Everything the server needs to know besides its endpoint and store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// UDP address the QUIC endpoint listens on.
    pub listen: SocketAddr,
    /// Directory for the database and the development certificate.
    pub data_dir: PathBuf,
    /// TCP address of the Prometheus `/metrics` and `/healthz` endpoint; `None` disables it
    /// (written `"off"` in the file).
    #[serde(
        deserialize_with = "metrics_listen_or_off",
        serialize_with = "metrics_listen_as_text"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain; with `key`. Without both, a development certificate is
    /// generated under `data_dir` on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Where durable state lives: `redb` (a file in `data_dir`, one node) or a
    /// PostgreSQL URL shared by the nodes of a cluster.
    pub store: StoreSetting,
    /// PEM CA certificate(s) PostgreSQL's TLS certificate must chain to (default: the
    /// system trust store). Only with a PostgreSQL `store`.
    pub store_ca_file: Option<PathBuf>,
    /// Most connections to PostgreSQL this node opens.
    pub store_pool_size: usize,
    /// Threads per shard that run store calls (each shard's blocking pool); `0`
    /// (the default) picks [`Config::store_threads_per_shard`]'s automatic value. Store
    /// calls beyond it wait in line instead of each taking a thread of its own (and,
    /// with glibc, an allocator arena that keeps its memory).
    pub store_threads: usize,
    /// The embedded store's (redb's) page cache, MiB. PostgreSQL caches on its own
    /// side; there this setting is unused.
    pub store_cache_mib: usize,
    /// This node's part in a cluster; `None` (no `[cluster]` section) for one node.
    pub cluster: Option<ClusterConfig>,
    /// Resource limits.
    pub limits: Limits,
    /// Timers and lifetimes.
    pub timing: Timing,
    /// Web Push wake-ups for offline devices; `None` (no `[push]` section) offers none.
    pub push: Option<PushConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from("data"),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            cert: None,
            key: None,
            store: StoreSetting::Redb,
            store_ca_file: None,
            store_pool_size: 16,
            store_threads: 0,
            store_cache_mib: DEFAULT_STORE_CACHE_MIB,
            cluster: None,
            limits: Limits::default(),
            timing: Timing::default(),
            push: None,
        }
    }
}

/// Resource limits. Exceeding one gives the client a `LIMIT_EXCEEDED` (or
/// `RATE_LIMITED`) error naming the limit, a counted datagram drop, a bundle whose
/// prekey is withheld (`prekey_rate_limited`), or, for a client that does not read its
/// events or breaks the framing, a closed connection (`TOO_SLOW`,
/// `PROTOCOL_VIOLATION`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Waiting mailbox entries one sending user (all its devices) may hold in one
    /// device's mailbox, so that one sender cannot fill a victim's mailbox and lock
    /// everyone else out. At most `max_mailbox_per_device`. A send whose every
    /// recipient is over it is refused with `LIMIT_EXCEEDED`; otherwise the recipients
    /// over it are reported `MAILBOX_FULL` and the others get the container.
    pub max_mailbox_entries_per_sender_per_device: usize,
    /// Devices per user.
    pub max_devices_per_user: usize,
    /// User ids in one `FetchBundles`.
    pub max_users_per_fetch: usize,
    /// Sustained control requests per second per connection.
    pub requests_per_second: u32,
    /// Burst of control requests above the sustained rate.
    pub request_burst: u32,
    /// Sustained bytes per second one connection may have relayed as room messages
    /// (`SendRoomMessage`: chat, app data, safety-words rounds), counted as payload ×
    /// recipients, so a large room costs what it costs the server. Above it, a send is
    /// refused `RATE_LIMITED` with a retry-after.
    pub room_message_bytes_per_second: u32,
    /// Burst of relayed room-message bytes (payload × recipients) above the sustained
    /// rate; at least one largest message (5 KiB) to every other member of a full room
    /// (`max_members_per_room`), which the configuration check enforces.
    pub room_message_burst_bytes: u32,
    /// Largest media datagram accepted or forwarded, bytes (at most 1500).
    pub max_datagram_bytes: usize,
    /// Largest control frame, bytes.
    pub max_frame_bytes: usize,
    /// Largest control frame before the connection has authenticated, bytes. `Hello`,
    /// `Register` and `Authenticate` need well under 2 KiB. A larger announced frame
    /// closes the connection (protocol violation) before anything is allocated for it.
    pub max_frame_bytes_before_auth: usize,
    /// Frames queued for one connection's control stream. A client that lets more
    /// events pile up is disconnected (`TOO_SLOW`); it reconnects and fetches its
    /// mailbox, where nothing was lost.
    pub max_queued_events: usize,
    /// Bytes of frames queued for one connection's control stream (the same rule in
    /// bytes: a client that does not read is cut once this much waits for it). At most
    /// 4294967295.
    pub max_queued_event_bytes: usize,
    /// Bytes of stored containers attributed to one sending user (all its devices).
    /// A container counts once, however many recipients it has, until its last
    /// recipient acknowledges it or it expires. A send above it is refused with
    /// `LIMIT_EXCEEDED`.
    pub max_mailbox_bytes_per_sender: u64,
    /// Bytes of all stored containers, each counted once. A send above it is refused
    /// with `LIMIT_EXCEEDED` until recipients fetch their mail or entries expire.
    pub max_mailbox_bytes: u64,
    /// Registrations one source address (an IPv4 address or an IPv6 /64) may make at
    /// once (token-bucket burst); beyond it `Register` is refused with `RATE_LIMITED`.
    pub registrations_per_ip_burst: u32,
    /// Registrations one source address regains per hour after its burst.
    pub registrations_per_ip_per_hour: u32,
    /// Prekeys one device may pop of one other device at once (token-bucket burst).
    /// Beyond it the bundle of that device comes back without a prekey and with
    /// `prekey_rate_limited` set; the rest of the fetch is served.
    pub prekey_pops_per_pair_burst: u32,
    /// Prekeys one device regains per minute for one other device after its burst.
    pub prekey_pops_per_pair_per_minute: u32,
    /// Prekeys all requesters together may pop of one device at once (burst).
    pub prekey_pops_per_target_burst: u32,
    /// Prekeys of one device all requesters together regain per minute.
    pub prekey_pops_per_target_per_minute: u32,
    /// Rotations of one room at once (token-bucket burst). Beyond it a rotation is
    /// refused with `RATE_LIMITED` and the wait; the SDK retries refused rotations with
    /// backoff.
    pub room_rotation_burst: u32,
    /// After its burst, a room may be rotated once per this many ms.
    pub room_rotation_interval_ms: u64,
    /// New room records one device may create at once (token-bucket burst). Opening a
    /// room that has no durable record creates one, which outlives its members by
    /// `timing.room_idle_ttl_secs`; beyond the burst such an open is refused with
    /// `RATE_LIMITED`. Joining or re-opening a room that has a record is not counted.
    pub room_records_per_device_burst: u32,
    /// New room records one device regains per hour after its burst.
    pub room_records_per_device_per_hour: u32,
    /// Entries each keyed rate-limit table (prekey pairs, prekey targets, registering
    /// addresses, room-creating devices) holds. Entries whose bucket has refilled are
    /// dropped first (that loses nothing), then the least recently used ones.
    pub max_rate_limit_entries: usize,
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
            max_mailbox_entries_per_sender_per_device: 100,
            max_devices_per_user: 16,
            max_users_per_fetch: 64,
            requests_per_second: 50,
            request_burst: 200,
            room_message_bytes_per_second: 512 * 1024,
            room_message_burst_bytes: 8 * 1024 * 1024,
            max_datagram_bytes: conclave_proto::limits::MAX_DATAGRAM_BYTES,
            max_frame_bytes: 2 * 1024 * 1024,
            max_frame_bytes_before_auth: 8 * 1024,
            max_queued_events: 1024,
            max_queued_event_bytes: 4 * 1024 * 1024,
            max_mailbox_bytes_per_sender: 64 * 1024 * 1024,
            max_mailbox_bytes: 8 * 1024 * 1024 * 1024,
            registrations_per_ip_burst: 20,
            registrations_per_ip_per_hour: 60,
            prekey_pops_per_pair_burst: 100,
            prekey_pops_per_pair_per_minute: 60,
            prekey_pops_per_target_burst: 1000,
            prekey_pops_per_target_per_minute: 100,
            room_rotation_burst: 10,
            room_rotation_interval_ms: 500,
            room_records_per_device_burst: 20,
            room_records_per_device_per_hour: 60,
            max_rate_limit_entries: 100_000,
        }
    }
}

/// Default pack window for small media datagrams, ms (docs/benchmarks.md, "Packing").
pub const DEFAULT_MEDIA_PACK_MS: u64 = 2;
/// Largest pack window accepted, ms: beyond it the added latency is audible.
pub const MAX_MEDIA_PACK_MS: u64 = 20;

/// Timers and lifetimes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Timing {
    /// Mailbox entries are deleted this long after they were stored, seconds.
    pub mailbox_ttl_secs: u64,
    /// How often the background sweep expires mailbox entries and idle rooms, seconds.
    pub sweep_interval_secs: u64,
    /// After a room rotation, members have this long to prove the new epoch, ms.
    pub rotation_grace_ms: u64,
    /// A listed successor may rotate a room only once every leader device before it
    /// has been out of the room this long, ms. Keep it below the clients' drop window
    /// (15 s by default), so a successor that has decided the leader dropped can act.
    pub leader_succession_ms: u64,
    /// A connection must authenticate within this long, seconds.
    pub auth_timeout_secs: u64,
    /// QUIC idle timeout, seconds.
    pub idle_timeout_secs: u64,
    /// Room records without members are forgotten after this long, seconds.
    pub room_idle_ttl_secs: u64,
    /// On shutdown, clients are told to come back after this long, ms.
    pub shutdown_reconnect_after_ms: u64,
    /// Draining (SIGTERM): how long the node waits for its clients to move away before
    /// it closes what is left and exits, seconds (1 to 3600). Give the orchestrator's
    /// stop timeout a few seconds more.
    pub drain_grace_secs: u64,
    /// Small media datagrams (audio) for one receiver wait up to this long, ms, so that
    /// several share a QUIC packet: fewer packets for the SFU to send and for each
    /// receiver to take in, for at most this much added latency. 0 sends each at once
    /// (0 to 20).
    pub media_pack_ms: u64,
}

impl Timing {
    /// [`Timing::media_pack_ms`] as a duration.
    #[must_use]
    pub fn media_pack_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.media_pack_ms)
    }

    /// [`Timing::drain_grace_secs`] as a duration.
    #[must_use]
    pub fn drain_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_grace_secs)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            mailbox_ttl_secs: 30 * 24 * 3600,
            sweep_interval_secs: 60,
            rotation_grace_ms: 5_000,
            leader_succession_ms: 10_000,
            auth_timeout_secs: 10,
            idle_timeout_secs: 30,
            room_idle_ttl_secs: 24 * 3600,
            shutdown_reconnect_after_ms: 1_000,
            drain_grace_secs: 25,
            media_pack_ms: DEFAULT_MEDIA_PACK_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err = Config::from_toml_str("listen = \"0.0.0.0:4433\"\nlisten_addr = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let err = Config::from_toml_str("[limits]\nmax_conections = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_conections"), "{err}");
        let err = Config::from_toml_str("[timing]\nidle_timeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_timeout"), "{err}");
    }

    #[test]
    fn partial_section_keeps_other_defaults() {
        let config = Config::from_toml_str(
            "metrics_listen = \"127.0.0.1:1\"\n[limits]\nmax_connections = 7\n",
        )
        .unwrap();
        assert_eq!(config.limits.max_connections, 7);
        let expected = Limits {
            max_connections: 7,
            ..Limits::default()
        };
        assert_eq!(config.limits, expected);
        assert_eq!(config.timing, Timing::default());
        assert_eq!(config.listen, Config::default().listen);
        assert_eq!(
            config.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 1)))
        );
    }

    #[test]
    fn metrics_can_be_turned_off_in_the_file() {
        let config = Config::from_toml_str("metrics_listen = \"off\"\n").unwrap();
        assert_eq!(config.metrics_listen, None);
        let err = Config::from_toml_str("metrics_listen = \"nope\"\n").unwrap_err();
        assert!(err.to_string().contains("or off"), "{err}");
    }

    #[test]
    fn wrong_type_is_a_parse_error() {
        let err = Config::from_toml_str("[limits]\nmax_connections = \"many\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("max_connections"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let check = |edit: fn(&mut Config), field: &str| {
            let mut config = Config::default();
            edit(&mut config);
            let err = config.validate().unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        };
        check(|c| c.limits.max_datagram_bytes = 63, "max_datagram_bytes");
        check(|c| c.limits.max_datagram_bytes = 1501, "max_datagram_bytes");
        check(|c| c.limits.max_connections = 0, "max_connections");
        check(|c| c.limits.request_burst = 0, "request_burst");
        check(|c| c.limits.max_frame_bytes = 1024, "max_frame_bytes");
        check(
            |c| c.limits.max_container_bytes = 1 << 30,
            "max_container_bytes",
        );
        check(|c| c.timing.rotation_grace_ms = 0, "rotation_grace_ms");
        check(|c| c.timing.idle_timeout_secs = 0, "idle_timeout_secs");
        check(
            |c| c.limits.max_frame_bytes_before_auth = 1024,
            "max_frame_bytes_before_auth",
        );
        check(
            |c| c.limits.max_frame_bytes_before_auth = c.limits.max_frame_bytes + 1,
            "max_frame_bytes_before_auth",
        );
        check(|c| c.limits.max_queued_events = 0, "max_queued_events");
        check(
            |c| c.limits.max_queued_event_bytes = 0,
            "max_queued_event_bytes",
        );
        check(
            |c| c.limits.max_queued_event_bytes = 1 << 33,
            "max_queued_event_bytes",
        );
        check(
            |c| c.limits.max_mailbox_bytes_per_sender = 0,
            "max_mailbox_bytes_per_sender",
        );
        check(|c| c.limits.max_mailbox_bytes = 0, "max_mailbox_bytes");
        check(
            |c| c.limits.max_mailbox_entries_per_sender_per_device = 0,
            "max_mailbox_entries_per_sender_per_device",
        );
        check(
            |c| {
                c.limits.max_mailbox_entries_per_sender_per_device =
                    c.limits.max_mailbox_per_device + 1;
            },
            "max_mailbox_entries_per_sender_per_device",
        );
        check(
            |c| c.limits.max_mailbox_bytes_per_sender = c.limits.max_mailbox_bytes + 1,
            "max_mailbox_bytes_per_sender",
        );
        check(
            |c| c.limits.registrations_per_ip_burst = 0,
            "registrations_per_ip_burst",
        );
        check(
            |c| c.limits.registrations_per_ip_per_hour = 0,
            "registrations_per_ip_per_hour",
        );
        check(
            |c| c.limits.prekey_pops_per_pair_burst = 0,
            "prekey_pops_per_pair_burst",
        );
        check(
            |c| c.limits.prekey_pops_per_pair_per_minute = 0,
            "prekey_pops_per_pair_per_minute",
        );
        check(
            |c| c.limits.prekey_pops_per_target_burst = 0,
            "prekey_pops_per_target_burst",
        );
        check(
            |c| c.limits.prekey_pops_per_target_per_minute = 0,
            "prekey_pops_per_target_per_minute",
        );
        check(
            |c| c.limits.max_rate_limit_entries = 0,
            "max_rate_limit_entries",
        );
        check(|c| c.limits.room_rotation_burst = 0, "room_rotation_burst");
        check(
            |c| c.limits.room_rotation_interval_ms = 0,
            "room_rotation_interval_ms",
        );
        check(
            |c| c.limits.room_records_per_device_burst = 0,
            "room_records_per_device_burst",
        );
        check(
            |c| c.limits.room_records_per_device_per_hour = 0,
            "room_records_per_device_per_hour",
        );
        check(|c| c.cert = Some("c.pem".into()), "key");
        check(|c| c.key = Some("k.pem".into()), "cert");
    }

    #[test]
    fn cert_and_key_together_are_valid() {
        let config = Config {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..Config::default()
        };
        config.validate().unwrap();
    }

    #[test]
    fn load_reports_missing_file_with_path() {
        let err = Config::load(Path::new("/nonexistent/conclave.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(
            err.to_string().contains("/nonexistent/conclave.toml"),
            "{err}"
        );
    }
}
