//! The server's side of cluster mode: the lease task, room claims before opens and
//! joins, and fenced room writes. The rules are `store::cluster`'s; the timing is
//! [`LeaseKeeper`]'s. Without a cluster configuration none of this runs.
//!
//! Data flow: `lease_task` heartbeats through the store and flips `leased`; a room
//! open or join first asks [`ClusterState::claim`] (served from the fence cache when
//! this node already owns the live room, else one conditional write in the store); a
//! room write goes through [`ClusterState::persist`], which carries the fence. When
//! the lease is lost, every connection is told to move (`ShuttingDown`) and leaves
//! every room, so nothing is forwarded for rooms another node may now own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use conclave_proto::v1;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{RequestError, Shared, now_ms};
use crate::cluster::{LeaseConfig, LeaseEvent, LeaseKeeper};
use crate::store::{ClusterStore, Fence, NodeInfo, RoomClaim, RoomRecord, RoutingIdBytes};

/// What a node needs to take part in a cluster.
#[derive(Clone)]
pub struct ClusterNode {
    /// This node as clients reach it.
    pub info: NodeInfo,
    /// The shared store's leases and room owners.
    pub store: Arc<dyn ClusterStore>,
    /// Lease timing.
    pub lease: LeaseConfig,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("info", &self.info)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The cluster state of a running node.
pub(crate) struct ClusterState {
    node: ClusterNode,
    /// Whether the lease is alive (the keeper's `may_accept`, refreshed by the task).
    leased: AtomicBool,
    /// The fence of each room this node owns.
    fences: Mutex<HashMap<RoutingIdBytes, Fence>>,
}

impl ClusterState {
    pub(crate) fn new(node: ClusterNode) -> Self {
        ClusterState {
            node,
            leased: AtomicBool::new(false),
            fences: Mutex::new(HashMap::new()),
        }
    }

    fn fences(&self) -> std::sync::MutexGuard<'_, HashMap<RoutingIdBytes, Fence>> {
        self.fences.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn retry_ms(&self) -> u64 {
        u64::try_from(self.node.lease.retry_every.as_millis()).unwrap_or(u64::MAX)
    }

    /// Makes sure this node owns `room` before it accepts a join or an open: from the
    /// cache if the room is live here, else by claiming it in the store.
    pub(crate) async fn claim(
        &self,
        shared: &Shared,
        room: RoutingIdBytes,
    ) -> Result<Fence, RequestError> {
        if !self.leased.load(Ordering::Acquire) {
            return Err(RequestError::unavailable(self.retry_ms()));
        }
        let live = shared.rooms().registry.is_live(&room);
        if let Some(fence) = self.fences().get(&room).copied().filter(|_| live) {
            return Ok(fence);
        }
        let store = Arc::clone(&self.node.store);
        let node = self.node.info.node_id.clone();
        let claim = run_blocking("room claim", move || store.claim_room(&room, &node)).await?;
        match claim {
            RoomClaim::Owned(fence) => {
                self.fences().insert(room, fence);
                Ok(fence)
            }
            RoomClaim::OwnedElsewhere { owner, fence } => {
                self.fences().remove(&room);
                Err(RequestError::wrong_node(&owner, fence))
            }
        }
    }

    /// Writes `room`'s record under its fence. A stale fence (another node took the
    /// room) is refused with that node's address.
    pub(crate) async fn persist(
        &self,
        room: RoutingIdBytes,
        record: RoomRecord,
    ) -> Result<(), RequestError> {
        let Some(fence) = self.fences().get(&room).copied() else {
            return Err(RequestError::unavailable(self.retry_ms()));
        };
        let store = Arc::clone(&self.node.store);
        let written = run_blocking("room persist", move || {
            store.put_room_fenced(&room, &record, fence)
        })
        .await?;
        if written {
            return Ok(());
        }
        self.fences().remove(&room);
        let store = Arc::clone(&self.node.store);
        match run_blocking("room owner", move || store.room_owner(&room)).await? {
            Some((owner, fence)) => Err(RequestError::wrong_node(&owner, fence)),
            None => Err(RequestError::unavailable(self.retry_ms())),
        }
    }

    /// A room closed here: forget its fence (the next open claims it again).
    pub(crate) fn forget_closed_rooms(&self, shared: &Shared) {
        let plane = shared.rooms();
        self.fences().retain(|room, _| plane.registry.is_live(room));
    }
}

async fn run_blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, RequestError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(RequestError::from),
        Err(e) => {
            tracing::error!(error = %e, what, "cluster store task failed");
            Err(RequestError::internal(what))
        }
    }
}

/// Keeps the lease: heartbeats on the keeper's schedule, and on a loss tells every
/// client to move and empties every room. On stop, releases the lease and the rooms.
pub(crate) async fn lease_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let mut keeper = LeaseKeeper::new(cluster.node.lease, Instant::now());
    loop {
        let now = Instant::now();
        if let Some(ticket) = keeper.start_renewal(now) {
            let store = Arc::clone(&cluster.node.store);
            let info = cluster.node.info.clone();
            let lease = cluster.node.lease.lease;
            let beat = run_blocking("lease heartbeat", move || store.heartbeat(&info, lease)).await;
            match beat {
                Ok(()) => keeper.renewal_succeeded(ticket, Instant::now()),
                Err(e) => {
                    warn!(error = %e, "cluster lease heartbeat failed");
                    keeper.renewal_failed(ticket, Instant::now());
                }
            }
        }
        keeper.handle_timeout(Instant::now());
        cluster.forget_closed_rooms(&shared);
        cluster
            .leased
            .store(keeper.may_accept(Instant::now()), Ordering::Release);
        while let Some(event) = keeper.poll_event() {
            match event {
                LeaseEvent::Acquired => {
                    info!(node = %cluster.node.info.node_id, "cluster lease acquired");
                }
                LeaseEvent::Lost => lose_rooms(&shared, cluster),
            }
        }
        let wake = keeper.poll_timeout().map_or(Duration::from_secs(1), |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = tokio::time::sleep(wake) => {}
            _ = stop.changed() => break,
        }
    }
    cluster.leased.store(false, Ordering::Release);
    let store = Arc::clone(&cluster.node.store);
    let node = cluster.node.info.node_id.clone();
    match run_blocking("lease release", move || store.release_node(&node)).await {
        Ok(()) => info!("cluster lease and rooms released"),
        Err(e) => warn!(error = %e, "cannot release the cluster lease; it runs out by itself"),
    }
}

/// The lease is gone: another node may own these rooms now. Tell every client to
/// move and drop every membership, so nothing more is forwarded here.
fn lose_rooms(shared: &Shared, cluster: &ClusterState) {
    warn!(
        node = %cluster.node.info.node_id,
        "cluster lease lost: telling clients to move and closing every room"
    );
    cluster.fences().clear();
    let reconnect_after_ms = shared.config.timing.shutdown_reconnect_after_ms;
    let conns: Vec<_> = shared.conns.iter().map(|c| *c.key()).collect();
    let mut plane = shared.rooms();
    for conn in conns {
        plane.registry.disconnect(conn, now_ms());
        if let Some(handle) = shared.conns.get(&conn) {
            handle.push_event(v1::event::Event::ShuttingDown(v1::ShuttingDown {
                reconnect_after_ms,
            }));
        }
    }
    plane.apply(shared);
}
