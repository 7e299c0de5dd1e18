//! # Conclave SFU — the server
//!
//! A QUIC server (quinn + rustls, TLS 1.3 only, ALPN `conclave/1`) that is blind by
//! design: it authenticates devices, keeps a directory of public keys and one-time
//! prekeys, stores opaque containers for offline devices, and forwards end-to-end
//! encrypted media among the members of rooms it knows only by a hashed routing id.
//! It never sees a meeting key, a meeting id, a username or plaintext media.
//!
//! ## Data flow
//! ```text
//!            QUIC connection (one per device)
//!   ┌──────────────┬───────────────────────────────┐
//!   │ control      │ media datagrams               │
//!   │ stream       │ (14-byte header + SFrame)     │
//!   ▼              ▼                               │
//! server::session  media::Forwarder ──snapshot──▶ ConnMedia (this connection's rooms)
//!   │  Hello / Register / Authenticate               │ stamp slot, fan out Bytes
//!   │  directory, mailbox ──spawn_blocking──▶ store::Store (redb / PostgreSQL: durable before ack)
//!   │  rooms ──lock──▶ rooms::RoomRegistry (sans-IO) ──outputs──▶ events + RoomMedia tables
//!   ▼
//! events (mailbox deliveries, prekeys low, members, epoch changes, shutdown)
//! ```
//!
//! * [`shards::Listener`] serves the node's one UDP port with one shard per core: a
//!   thread with its own runtime, socket and quinn endpoint; the kernel steers each
//!   datagram to its connection's shard by the connection ID, and each room lives on
//!   one shard (joiners elsewhere are redirected there), so a room's forwarding never
//!   crosses threads. A shard's store calls run on at most `store_threads` threads of
//!   its blocking pool ([`config::Config::store_threads_per_shard`]); further calls
//!   wait their turn.
//! * [`run`] serves a bound endpoint until a shutdown future resolves, then stops
//!   accepting, sends every client a `ShuttingDown` event, closes connections and
//!   drops the store (the mini-redis pattern; tests bind `127.0.0.1:0`).
//! * [`rooms::RoomRegistry`], [`media::Forwarder`] and [`ratelimit::TokenBucket`] are
//!   sans-IO: plain state machines driven with explicit time, unit-tested with virtual
//!   time and in-memory sinks. [`server`] is the thin tokio/quinn layer around them.
//! * [`store::Store`] is the durable state: redb (the default, one node), PostgreSQL
//!   ([`store::PgStore`], shared by the nodes of a cluster) and memory (tests). Every
//!   acknowledged write is committed first.
//!
//! ## Invariants
//! * Nothing a peer sends can panic the server: frames are length-checked before
//!   anything is read ([`config::Limits::max_frame_bytes_before_auth`] until the device
//!   has authenticated, [`config::Limits::max_frame_bytes`] after) and their buffer
//!   grows only with the bytes received; protobuf decode errors become `BAD_REQUEST`
//!   answers, malformed datagrams become counted drops ([`telemetry::DropReason`]).
//! * Every length, count and queue is bounded by a [`config::Limits`] field: a
//!   connection's event queue in frames and in bytes, the mailbox per device, per
//!   sending user and in total (a container is stored once, whatever its number of
//!   recipients), registrations per source address and prekey pops per requester and
//!   target.
//! * A datagram reaches only the other members of the room its sender proved
//!   membership of, with the sender slot the server assigned (clients cannot spoof it).
//! * A member that does not prove a new epoch within the grace window loses routing.
//! * The forwarding path takes no lock shared across rooms and allocates nothing per
//!   receiver: receivers share one reference-counted copy of each datagram.
//! * Logs carry truncated identifiers only; no secrets exist on the server.
//!
//! The entry point is [`run`] (`run(endpoint, store, config, shutdown)`, returning after
//! a graceful shutdown); [`embedded::EmbeddedSfu`] runs it inside another process
//! (tests, examples, the load test). The wire protocol is specified in
//! `docs/protocol.md`; operating the server is described in the README.

pub mod cluster;
pub mod config;
pub mod embedded;
pub mod health;
pub mod media;
pub mod metrics_http;
pub mod push;
pub mod ratelimit;
pub mod rooms;
pub mod server;
pub mod shards;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use server::{ClusterNode, SfuError, run, run_cluster, run_node};
pub use shards::Listener;

/// Bytes of outgoing datagrams quinn buffers per connection before the forwarder
/// starts dropping (video at half of it, audio when full).
pub const DATAGRAM_SEND_BUFFER: usize = 1024 * 1024;
