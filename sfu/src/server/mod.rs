//! The async server: accept loop, shared state, background tasks and shutdown.
//!
//! [`run`] takes a bound quinn endpoint, a store, the configuration and a shutdown
//! future (the mini-redis pattern), so tests start it on `127.0.0.1:0` and the binary
//! on its configured address. Everything protocol-shaped lives in sans-IO parts
//! ([`crate::rooms`], [`crate::media`], [`crate::ratelimit`]); this layer owns sockets,
//! tasks, clocks and the store's blocking calls.

mod cluster;
mod conn;
mod delivery;
mod directory;
mod error;
mod handle;
pub mod hooks;
mod mailbox;
mod push;
mod room_plane;
mod session;
mod window;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use cluster::ClusterNode;
pub use error::RequestError;

use crate::config::Config;
use crate::health::Health;
use crate::media::pacer::Pacer;
use crate::ratelimit::{KeyedLimiter, PrekeyPopLimiter};
use crate::rooms::{ConnId, RoomLimits, RoomRegistry};
use crate::shards::{self, Listener};
use crate::store::{DeviceIdBytes, Store};
use crate::telemetry;
use handle::ConnHandle;
use room_plane::RoomPlane;

/// QUIC application close codes the server uses.
pub mod close_code {
    /// Normal close (client left or server idle).
    pub const NORMAL: u32 = 0;
    /// The server is shutting down; reconnect later.
    pub const SHUTTING_DOWN: u32 = 1;
    /// The client broke the control protocol (framing, oversized frame).
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The client did not authenticate in time.
    pub const AUTH_TIMEOUT: u32 = 3;
    /// The same device connected again; this older connection is closed.
    pub const REPLACED: u32 = 4;
    /// The client does not read its events fast enough.
    pub const TOO_SLOW: u32 = 5;
    /// The server has too many connections.
    pub const SERVER_BUSY: u32 = 6;
}

/// Why the server stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// A background task panicked or was cancelled unexpectedly.
    #[error("server task failed: {0}")]
    Task(String),
    /// Push wake-ups are configured but could not be set up (key file, CA file).
    #[error("{0}")]
    Push(#[from] crate::push::PushSetupError),
}

/// Milliseconds since the Unix epoch (the server's master clock).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) rooms: std::sync::Mutex<RoomPlane>,
    pub(crate) room_timer: Notify,
    pub(crate) conns: DashMap<ConnId, Arc<ConnHandle>>,
    pub(crate) online: DashMap<DeviceIdBytes, ConnId>,
    pub(crate) open_connections: AtomicUsize,
    next_conn: AtomicU64,
    /// Registrations per source address ([`crate::ratelimit::source_key`]).
    registrations: std::sync::Mutex<KeyedLimiter<IpAddr>>,
    /// Prekey pops per (requester, target) and per target.
    prekey_pops: std::sync::Mutex<PrekeyPopLimiter>,
    /// New room records per creating device.
    room_records: std::sync::Mutex<KeyedLimiter<DeviceIdBytes>>,
    /// Store reads of mailbox delivery passes running at once, at most (a rescan of
    /// every connected device must not take the whole connection pool).
    pub(crate) delivery_reads: tokio::sync::Semaphore,
    /// A test's adversary (feature `adversary`); nothing otherwise.
    pub(crate) hooks: hooks::Hooks,
    /// Cluster mode's state; `None` for a single node.
    pub(crate) cluster: Option<cluster::ClusterState>,
    /// Readiness: serving, draining, store reachable.
    pub(crate) health: Arc<Health>,
    /// How many shards serve the node's port (rooms are spread over them).
    pub(crate) shards: usize,
    /// Push wake-ups for offline devices; `None` without a `[push]` section.
    pub(crate) push: Option<Arc<crate::push::PushService>>,
}

impl Shared {
    fn new(
        config: Config,
        store: Arc<dyn Store>,
        hooks: hooks::Hooks,
        cluster: Option<ClusterNode>,
        health: Arc<Health>,
        shards: usize,
        push: Option<Arc<crate::push::PushService>>,
    ) -> Self {
        let limits = RoomLimits {
            max_members_per_room: config.limits.max_members_per_room,
            max_rooms_per_connection: config.limits.max_rooms_per_connection,
            rotation_grace_ms: config.timing.rotation_grace_ms,
            succession_grace_ms: config.timing.leader_succession_ms,
            rotation_burst: config.limits.room_rotation_burst,
            rotation_interval_ms: config.limits.room_rotation_interval_ms,
        };
        let l = &config.limits;
        let registrations = KeyedLimiter::per_hour(
            l.registrations_per_ip_per_hour,
            l.registrations_per_ip_burst,
            l.max_rate_limit_entries,
        );
        let prekey_pops = PrekeyPopLimiter::new(
            (
                l.prekey_pops_per_pair_per_minute,
                l.prekey_pops_per_pair_burst,
            ),
            (
                l.prekey_pops_per_target_per_minute,
                l.prekey_pops_per_target_burst,
            ),
            l.max_rate_limit_entries,
        );
        let room_records = KeyedLimiter::per_hour(
            l.room_records_per_device_per_hour,
            l.room_records_per_device_burst,
            l.max_rate_limit_entries,
        );
        Shared {
            registrations: std::sync::Mutex::new(registrations),
            room_records: std::sync::Mutex::new(room_records),
            prekey_pops: std::sync::Mutex::new(prekey_pops),
            config,
            store,
            rooms: std::sync::Mutex::new(RoomPlane::new(RoomRegistry::new(limits))),
            room_timer: Notify::new(),
            conns: DashMap::new(),
            online: DashMap::new(),
            open_connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            delivery_reads: tokio::sync::Semaphore::new(delivery::CONCURRENT_READS),
            hooks,
            cluster: cluster.map(cluster::ClusterState::new),
            health,
            shards: shards.max(1),
            push,
        }
    }

    /// Runs `f` on the store in a blocking thread.
    pub(crate) async fn blocking<T, F>(&self, what: &str, f: F) -> Result<T, RequestError>
    where
        F: FnOnce(&dyn Store) -> Result<T, crate::store::StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(result) => result.map_err(RequestError::from),
            Err(e) => {
                tracing::error!(error = %e, what, "store task failed");
                Err(RequestError::internal(what))
            }
        }
    }

    /// Runs CPU-heavy work of a request (checking many signatures) on the blocking
    /// pool, whose threads per shard are bounded like the store's, so that the shard's
    /// thread keeps serving its other connections and forwarding media.
    pub(crate) async fn compute<T, F>(&self, what: &str, f: F) -> Result<T, RequestError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            tracing::error!(error = %e, what, "compute task failed");
            RequestError::internal(what)
        })
    }

    /// Locks the registration limiter (its state is consistent between calls, so a
    /// poisoned lock is recovered).
    pub(crate) fn registrations(&self) -> std::sync::MutexGuard<'_, KeyedLimiter<IpAddr>> {
        self.registrations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Locks the room-record limiter (recovered like the registration limiter).
    pub(crate) fn room_records(&self) -> std::sync::MutexGuard<'_, KeyedLimiter<DeviceIdBytes>> {
        self.room_records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Locks the prekey pop limiter (recovered like the registration limiter).
    pub(crate) fn prekey_pops(&self) -> std::sync::MutexGuard<'_, PrekeyPopLimiter> {
        self.prekey_pops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Locks the room plane. A poisoned lock (a panic while holding it, which the
    /// registry never does on input) is recovered: the registry's state is consistent
    /// between calls.
    pub(crate) fn rooms(&self) -> std::sync::MutexGuard<'_, RoomPlane> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How often the store is probed for `/readyz`.
const STORE_PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe not answered within this long counts as a failure.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes the store every [`STORE_PROBE_EVERY`] and reports the outcome to the node's
/// health (and `conclave_store_up`) until `stop`.
async fn probe_store(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    let mut every = tokio::time::interval(STORE_PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let store = Arc::clone(&shared.store);
        let probe = tokio::task::spawn_blocking(move || store.ping());
        let up = match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                warn!(error = %e, "store probe failed");
                false
            }
            Ok(Err(_)) | Err(_) => false,
        };
        // Down only after two failed probes in a row: one slow answer must not take
        // every node out of rotation at once.
        failures = if up { 0 } else { failures.saturating_add(1) };
        shared.health.set_store_up(failures < 2);
    }
}

/// Runs the server on `listener` (a [`Listener`] of one or more shards, or one quinn
/// endpoint served on this runtime) until `shutdown` resolves, then shuts down
/// gracefully: stops accepting, tells every client (`ShuttingDown` event), closes the
/// connections and drops the store (which flushes it).
pub async fn run(
    listener: impl Into<Listener>,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SfuError> {
    // `Hooks` is a unit struct only without the `adversary` feature.
    #[allow(clippy::default_constructed_unit_structs)]
    let hooks = hooks::Hooks::default();
    let health = Arc::new(Health::new());
    serve(
        listener.into(),
        store,
        config,
        hooks,
        None,
        health,
        shutdown,
    )
    .await
}

/// [`run`] or [`run_cluster`] (with `node`), reporting readiness to `health` (which the
/// binary's `/readyz` reads). When `shutdown` resolves the node drains: it reports not
/// ready, refuses new connections and rooms, tells its clients to move, waits up to
/// `timing.drain_grace_secs` for them to go, then stops.
pub async fn run_node(
    listener: impl Into<Listener>,
    store: Arc<dyn Store>,
    config: Config,
    node: Option<ClusterNode>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SfuError> {
    #[allow(clippy::default_constructed_unit_structs)]
    let hooks = hooks::Hooks::default();
    serve(
        listener.into(),
        store,
        config,
        hooks,
        node,
        health,
        shutdown,
    )
    .await
}

/// [`run`] as one node of a cluster: `node.store` holds the leases and room owners
/// (PostgreSQL, the same database as `store`). The node heartbeats its lease, claims
/// each room before it accepts a join, answers joins of rooms owned elsewhere with
/// `WRONG_NODE` and the owner's address, and releases its lease and rooms when it stops.
pub async fn run_cluster(
    listener: impl Into<Listener>,
    store: Arc<dyn Store>,
    node: ClusterNode,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SfuError> {
    #[allow(clippy::default_constructed_unit_structs)]
    let hooks = hooks::Hooks::default();
    let health = Arc::new(Health::new());
    serve(
        listener.into(),
        store,
        config,
        hooks,
        Some(node),
        health,
        shutdown,
    )
    .await
}

/// [`run`] with an [`hooks::Adversary`] attached: the same server, made hostile by the
/// rules a test installs (feature `adversary`, for tests only).
#[cfg(feature = "adversary")]
pub async fn run_hostile(
    listener: impl Into<Listener>,
    store: Arc<dyn Store>,
    config: Config,
    adversary: Arc<hooks::Adversary>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SfuError> {
    serve(
        listener.into(),
        store,
        config,
        hooks::Hooks(Some(adversary)),
        None,
        Arc::new(Health::new()),
        shutdown,
    )
    .await
}

async fn serve(
    listener: Listener,
    store: Arc<dyn Store>,
    config: Config,
    hooks: hooks::Hooks,
    cluster: Option<ClusterNode>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SfuError> {
    telemetry::describe();
    telemetry::register_at_zero(cluster.is_some());
    let shards = listener.shard_count();
    metrics::gauge!(telemetry::SHARDS).set(shards as f64);
    // The threads that serve connections: one per shard, or the caller's runtime's
    // workers for an endpoint served on it.
    let workers = match listener.shards() {
        [shard] if shard.runtime.is_none() => {
            tokio::runtime::Handle::current().metrics().num_workers()
        }
        _ => shards,
    };
    metrics::gauge!(telemetry::WORKER_THREADS).set(workers as f64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (push, push_task) = match &config.push {
        Some(push) => {
            telemetry::register_push_at_zero();
            let (service, task) =
                crate::push::PushService::start(push, Arc::clone(&store), stop_rx.clone())?;
            (Some(service), Some(task))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared::new(
        config, store, hooks, cluster, health, shards, push,
    ));
    shared.hooks.attach(&shared);
    let mut background = JoinSet::new();
    background.spawn(room_plane::timer_task(Arc::clone(&shared), stop_rx.clone()));
    background.spawn(mailbox::sweep_task(Arc::clone(&shared), stop_rx.clone()));
    background.spawn(delivery::watch_task(Arc::clone(&shared), stop_rx.clone()));
    let lease = tokio::spawn(cluster::lease_task(Arc::clone(&shared), stop_rx.clone()));
    background.spawn(probe_store(Arc::clone(&shared), stop_rx.clone()));
    shared.health.set_serving(true);

    // Each shard accepts and serves its connections on its own runtime.
    let ended = Arc::new(Notify::new());
    let mut accepting = Vec::with_capacity(shards);
    for shard in listener.shards() {
        let task = accept(
            Arc::clone(&shared),
            shard.clone(),
            stop_rx.clone(),
            Arc::clone(&ended),
        );
        accepting.push(match &shard.runtime {
            Some(runtime) => runtime.spawn(task),
            None => tokio::spawn(task),
        });
    }
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        // An endpoint closed under us: stop the node rather than serve a part of it.
        () = ended.notified() => {}
    }

    info!(
        connections = shared.open_connections.load(Ordering::Relaxed),
        grace_secs = shared.config.timing.drain_grace().as_secs(),
        "draining: refusing new connections and rooms, telling clients to move"
    );
    shared.health.start_draining();
    let _ = stop_tx.send(true);
    for task in accepting {
        // A shard task cannot panic short of a bug; the others are still drained.
        let _ = task.await;
    }
    shared.health.set_serving(false);
    for shard in listener.shards() {
        shard
            .endpoint
            .close(close_code::SHUTTING_DOWN.into(), b"server shutting down");
    }
    for shard in listener.shards() {
        let _ = tokio::time::timeout(Duration::from_secs(2), shard.endpoint.wait_idle()).await;
    }
    drop(listener);
    background.abort_all();
    while background.join_next().await.is_some() {}
    if let Some(task) = push_task {
        // The push task ends on `stop` (its requests in flight are abandoned).
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    // The lease task releases the lease and the rooms on stop (bounded by the store's
    // own timeouts).
    let _ = tokio::time::timeout(Duration::from_secs(10), lease).await;
    // What was committed without waiting for the disk (acknowledgements, sweeps) is
    // made durable now, whether or not the store is dropped before the process ends.
    if let Err(e) = shared.blocking("store sync", |s| s.sync()).await {
        tracing::warn!(error = %e, "could not make the store's last writes durable");
    }
    info!("shutdown complete; store flushed");
    Ok(())
}

/// One shard's accept loop: serves each incoming connection on this shard's runtime
/// until `stop`, then drains: refuses new connections, lets each connection close
/// once its client has moved away or the grace period ends, then returns.
async fn accept(
    shared: Arc<Shared>,
    shard: shards::Shard,
    mut stop: watch::Receiver<bool>,
    ended: Arc<Notify>,
) {
    let endpoint = &shard.endpoint;
    let mut connections = JoinSet::new();
    let conn_stop = stop.clone();
    // This shard's receivers share one pack window (see `media::pacer`); the task runs
    // on the shard's runtime, beside the connections whose datagrams it sends.
    let pacer = Pacer::new(shared.config.timing.media_pack_window());
    let pacing = tokio::spawn(Arc::clone(&pacer).run());
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else {
                    ended.notify_one();
                    break;
                };
                connections.spawn(conn::serve(
                    Arc::clone(&shared),
                    incoming,
                    shard.index,
                    Arc::clone(&pacer),
                    conn_stop.clone(),
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Each connection closes once its client has moved away, or at the end of the
    // grace period; a little more for the closes to go out. New connections are
    // refused meanwhile (a client that reaches this node is told at once, rather than
    // left to time out its handshake).
    let bound = shared.config.timing.drain_grace() + Duration::from_secs(2);
    if tokio::time::timeout(bound, async {
        let mut accepting = true;
        loop {
            tokio::select! {
                joined = connections.join_next() => {
                    if joined.is_none() {
                        break;
                    }
                }
                incoming = endpoint.accept(), if accepting => match incoming {
                    Some(incoming) => {
                        metrics::counter!(telemetry::CONNECTIONS_REFUSED, "reason" => "draining")
                            .increment(1);
                        incoming.refuse();
                    }
                    None => accepting = false,
                },
            }
        }
    })
    .await
    .is_err()
    {
        warn!(
            shard = shard.index,
            "connections did not finish within {bound:?}; closing them"
        );
        connections.abort_all();
    }
    pacing.abort();
    pacer.flush_listed();
}
