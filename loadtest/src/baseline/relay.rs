//! The bare relay: a quinn endpoint on its own runtime that forwards every datagram of
//! a connection, as is, to every other connection of the same group.
//!
//! Per connection: one handshake, one bidirectional stream carrying the group index
//! (answered with [`JOIN_ACK`] once the connection is in the group), then a loop of
//! `read_datagram` and one `send_datagram` per other member. No directory, rooms,
//! authentication, header parsing or congestion policy: only what any QUIC relay must
//! do, which is why its CPU per forwarded datagram is the floor for the SFU's.
//!
//! With a pack window (`--baseline-pack-ms`), datagrams of at most [`PACK_MAX_BYTES`]
//! wait in a per-receiver list (at most [`PACK_MAX_HELD`]) that a per-group task hands
//! to QUIC every window, so that they share packets as the SFU's do (its pacer flushes
//! a window after each receiver's first held datagram; a fixed tick gathers as many).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use super::wire::{JOIN_ACK, JOIN_LEN, parse_join};
use crate::LoadError;

/// Prefix of the relay runtime's thread names (what its CPU is measured by).
pub(crate) const THREAD_NAME: &str = "relay-rt";

/// How long the relay waits for a handshake and then for the join message.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the relay runtime's shutdown may wait for its threads.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// What a server reports in [`LoadError::Start`].
const WHAT: &str = "baseline relay";

/// Datagrams this small (half of a packet, as for the SFU's pacer) wait for the pack
/// window; larger ones go at once.
pub(crate) const PACK_MAX_BYTES: usize = 600;

/// Datagrams held for one receiver at most; more go at once.
const PACK_MAX_HELD: usize = 256;

/// The relay's own multi-thread runtime. Dropped anywhere (even in an async context,
/// e.g. when the caller's future is cancelled) it shuts down in the background;
/// [`RelayRuntime::shutdown`] waits for its threads.
#[derive(Debug)]
pub(crate) struct RelayRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl RelayRuntime {
    /// Starts `threads` worker threads named [`THREAD_NAME`].
    pub(crate) fn new(threads: usize) -> Result<RelayRuntime, LoadError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .map_err(|e| LoadError::Setup(format!("baseline relay runtime: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(RelayRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Stops the runtime, waiting (on a blocking thread of the caller's runtime, where
    /// waiting is allowed) up to [`SHUTDOWN_TIMEOUT`] for its tasks and threads.
    pub(crate) async fn shutdown(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let stop =
                tokio::task::spawn_blocking(move || runtime.shutdown_timeout(SHUTDOWN_TIMEOUT));
            // A failed join means the blocking task panicked or was cancelled; the
            // runtime is gone either way.
            let _ = stop.await;
        }
    }
}

impl Drop for RelayRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A running relay.
#[derive(Debug)]
pub(crate) struct Relay {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    state: Arc<RelayState>,
}

impl Relay {
    /// Binds 127.0.0.1:0 on `runtime` and accepts connections into `groups` groups.
    pub(crate) async fn start(
        runtime: &RelayRuntime,
        config: quinn::ServerConfig,
        groups: usize,
        pack: Duration,
    ) -> Result<Relay, LoadError> {
        let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let start_err = |reason: String| LoadError::Start {
            what: WHAT,
            addr: bind,
            reason,
        };
        let state = Arc::new(RelayState {
            groups: (0..groups).map(|_| Group::default()).collect(),
            forwarded: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            packing: !pack.is_zero(),
        });
        if !pack.is_zero() {
            for index in 0..groups {
                runtime
                    .handle
                    .spawn(flush_held(Arc::clone(&state), index, pack));
            }
        }
        let accept_state = Arc::clone(&state);
        // The endpoint is created on the relay runtime so that its driver, and the
        // drivers of its connections, run on the relay's threads.
        let started = runtime.handle.spawn(async move {
            let endpoint = quinn::Endpoint::server(config, bind).map_err(|e| e.to_string())?;
            let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(accept(endpoint.clone(), accept_state));
            Ok::<_, String>((endpoint, addr))
        });
        let (endpoint, addr) = started
            .await
            .map_err(|e| start_err(e.to_string()))?
            .map_err(start_err)?;
        Ok(Relay {
            endpoint,
            addr,
            state,
        })
    }

    /// Where the relay listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams forwarded so far (successful `send_datagram` calls).
    pub(crate) fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::Relaxed)
    }

    /// Forwards refused by quinn so far (receiver gone, datagram too large).
    pub(crate) fn send_errors(&self) -> u64 {
        self.state.send_errors.load(Ordering::Relaxed)
    }

    /// Closes every connection and stops accepting.
    pub(crate) fn close(&self) {
        self.endpoint.close(0u32.into(), b"baseline done");
    }
}

/// What the relay's tasks share.
#[derive(Debug)]
struct RelayState {
    /// One group per meeting, indexed by the join message.
    groups: Vec<Group>,
    /// Datagrams forwarded.
    forwarded: AtomicU64,
    /// Forwards quinn refused.
    send_errors: AtomicU64,
    /// Small datagrams wait for the group's flush task.
    packing: bool,
}

/// A group's members. Forwarders keep a snapshot of the member list and take a new one
/// only when `version` moved, so the steady state costs one atomic load per datagram.
#[derive(Debug, Default)]
struct Group {
    version: AtomicU64,
    members: Mutex<Snapshot>,
}

/// One version of a group's member list.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    version: u64,
    members: Arc<Vec<Member>>,
}

/// A connection in a group.
#[derive(Debug, Clone)]
struct Member {
    id: usize,
    connection: quinn::Connection,
    /// Small datagrams waiting for the pack window.
    held: Arc<Mutex<Vec<bytes::Bytes>>>,
}

impl Group {
    /// Adds (`Some`) or removes (`None`) member `id`.
    fn update(&self, id: usize, connection: Option<quinn::Connection>) {
        let mut current = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let mut members: Vec<Member> = current
            .members
            .iter()
            .filter(|m| m.id != id)
            .cloned()
            .collect();
        if let Some(connection) = connection {
            members.push(Member {
                id,
                connection,
                held: Arc::default(),
            });
        }
        current.version = current.version.wrapping_add(1);
        current.members = Arc::new(members);
        self.version.store(current.version, Ordering::Release);
    }

    /// Replaces `snapshot` with the current member list if it changed.
    fn refresh(&self, snapshot: &mut Snapshot) {
        if self.version.load(Ordering::Acquire) != snapshot.version {
            *snapshot = self
                .members
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
        }
    }
}

/// Accepts connections until the endpoint is closed.
async fn accept(endpoint: quinn::Endpoint, state: Arc<RelayState>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve(incoming, Arc::clone(&state)));
    }
}

/// One connection: handshake, join, forward until it closes.
async fn serve(incoming: quinn::Incoming, state: Arc<RelayState>) {
    let Ok(Ok(connection)) = tokio::time::timeout(JOIN_TIMEOUT, incoming).await else {
        return;
    };
    let Some(group) = join(&connection, &state).await else {
        connection.close(1u32.into(), b"bad join");
        return;
    };
    let id = connection.stable_id();
    forward(&connection, id, group, &state).await;
    group.update(id, None);
}

/// Reads the join message, puts the connection in its group and acknowledges.
async fn join<'s>(connection: &quinn::Connection, state: &'s RelayState) -> Option<&'s Group> {
    let (mut send, mut recv) = tokio::time::timeout(JOIN_TIMEOUT, connection.accept_bi())
        .await
        .ok()?
        .ok()?;
    let message = tokio::time::timeout(JOIN_TIMEOUT, recv.read_to_end(JOIN_LEN))
        .await
        .ok()?
        .ok()?;
    let index = usize::try_from(parse_join(&message)?).ok()?;
    let group = state.groups.get(index)?;
    group.update(connection.stable_id(), Some(connection.clone()));
    // The acknowledgement only tells the client it is in; if it cannot be sent the
    // client gives up and the forward loop ends with the connection.
    let _ = send.write_all(&[JOIN_ACK]).await;
    let _ = send.finish();
    Some(group)
}

/// Forwards every datagram of `connection` to every other member of `group`.
async fn forward(connection: &quinn::Connection, id: usize, group: &Group, state: &RelayState) {
    let mut snapshot = Snapshot::default();
    while let Ok(datagram) = connection.read_datagram().await {
        group.refresh(&mut snapshot);
        let mut sent = 0u64;
        let mut failed = 0u64;
        let hold = state.packing && datagram.len() <= PACK_MAX_BYTES;
        for member in snapshot.members.iter().filter(|m| m.id != id) {
            if hold {
                let mut held = member.held.lock().unwrap_or_else(PoisonError::into_inner);
                if held.len() < PACK_MAX_HELD {
                    held.push(datagram.clone());
                    sent += 1;
                    continue;
                }
            }
            match member.connection.send_datagram(datagram.clone()) {
                Ok(()) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        state.forwarded.fetch_add(sent, Ordering::Relaxed);
        if failed > 0 {
            state.send_errors.fetch_add(failed, Ordering::Relaxed);
        }
    }
}

/// Every `pack`, hands each member of group `index` the datagrams held for it, all at
/// once, so that QUIC packs them into as few packets as they fit. Runs until the
/// relay's runtime stops.
async fn flush_held(state: Arc<RelayState>, index: usize, pack: Duration) {
    let Some(group) = state.groups.get(index) else {
        return;
    };
    let mut snapshot = Snapshot::default();
    let mut tick = tokio::time::interval(pack);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tick.tick().await;
        group.refresh(&mut snapshot);
        for member in snapshot.members.iter() {
            std::mem::swap(
                &mut batch,
                &mut member.held.lock().unwrap_or_else(PoisonError::into_inner),
            );
            let mut failed = 0u64;
            for datagram in batch.drain(..) {
                if member.connection.send_datagram(datagram).is_err() {
                    failed += 1;
                }
            }
            if failed > 0 {
                state.send_errors.fetch_add(failed, Ordering::Relaxed);
            }
        }
    }
}
