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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use conclave_proto::v1;
use metrics::{counter, gauge};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::{RequestError, Shared, now_ms};
use crate::cluster::{LeaseConfig, LeaseEvent, LeaseKeeper, RenewalTicket};
use crate::store::{
    ClusterStore, Fence, NodeInfo, RoomClaim, RoomRecord, RoutingIdBytes, StoreError,
};
use crate::telemetry;

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
    /// The local end of the lease (the keeper's deadline), `None` without one. Room
    /// requests compare it with the clock themselves, so a lease task busy with a slow
    /// heartbeat can never leave a stale "leased" behind.
    lease_until: watch::Sender<Option<Instant>>,
    /// The fence of each room this node owns, and when it was claimed.
    fences: Mutex<HashMap<RoutingIdBytes, (Fence, Instant)>>,
}

impl ClusterState {
    pub(crate) fn new(node: ClusterNode) -> Self {
        ClusterState {
            node,
            lease_until: watch::Sender::new(None),
            fences: Mutex::new(HashMap::new()),
        }
    }

    /// This node as clients reach it.
    pub(crate) fn info(&self) -> &crate::store::NodeInfo {
        &self.node.info
    }

    /// The shared store's cluster side.
    pub(crate) fn store(&self) -> &dyn ClusterStore {
        self.node.store.as_ref()
    }

    fn fences(&self) -> std::sync::MutexGuard<'_, HashMap<RoutingIdBytes, (Fence, Instant)>> {
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
        let alive = |until: &Option<Instant>| until.is_some_and(|d| Instant::now() < d);
        if !alive(&self.lease_until.borrow()) {
            // Just started, or renewing after a blip: wait a little for the lease
            // rather than send the client away at once.
            let mut until = self.lease_until.subscribe();
            let wait = self.node.lease.retry_every.saturating_mul(4);
            let acquired = tokio::time::timeout(wait, until.wait_for(alive)).await;
            if !matches!(acquired, Ok(Ok(_))) {
                counter!(telemetry::CLUSTER_ROOM_CLAIMS, "outcome" => "no_lease").increment(1);
                return Err(RequestError::unavailable(self.retry_ms()));
            }
        }
        let live = shared.rooms().registry.is_live(&room);
        if let Some((fence, _)) = self.fences().get(&room).copied().filter(|_| live) {
            return Ok(fence);
        }
        let store = Arc::clone(&self.node.store);
        let node = self.node.info.node_id.clone();
        let claim = run_blocking("room claim", move || store.claim_room(&room, &node))
            .await
            .inspect_err(|_| {
                counter!(telemetry::CLUSTER_ROOM_CLAIMS, "outcome" => "error").increment(1);
            })?;
        match claim {
            RoomClaim::Owned(fence) => {
                counter!(telemetry::CLUSTER_ROOM_CLAIMS, "outcome" => "owned").increment(1);
                self.fences().insert(room, (fence, Instant::now()));
                Ok(fence)
            }
            RoomClaim::OwnedElsewhere {
                owner,
                fence,
                lease,
            } => {
                self.fences().remove(&room);
                // An owner that has missed two heartbeats is most likely dead: its
                // clients are coming here. Rather than send them back to it, ask them
                // to retry once its lease has run out, when this node can claim the room.
                if lease.silent_for > self.node.lease.renew_every.saturating_mul(2) {
                    counter!(telemetry::CLUSTER_ROOM_CLAIMS, "outcome" => "owner_silent")
                        .increment(1);
                    let retry = lease.left.saturating_add(self.node.lease.retry_every);
                    let retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
                    return Err(RequestError::owner_silent(&owner, retry_ms));
                }
                counter!(telemetry::CLUSTER_ROOM_CLAIMS, "outcome" => "redirected").increment(1);
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
        let Some((fence, _)) = self.fences().get(&room).copied() else {
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

    /// Rooms closed here: forget their fences (the next open claims them again). A
    /// fence claimed moments ago is kept: its open may still be on its way to the
    /// registry.
    pub(crate) fn forget_closed_rooms(&self, shared: &Shared) {
        let settle = self.node.lease.lease;
        let plane = shared.rooms();
        let mut fences = self.fences();
        fences.retain(|room, (_, claimed)| {
            plane.registry.is_live(room) || claimed.elapsed() < settle
        });
        #[allow(clippy::cast_precision_loss)] // a room count is far below 2^52
        gauge!(telemetry::CLUSTER_ROOMS_OWNED).set(fences.len() as f64);
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
/// client to move and empties every room. A heartbeat runs as its own task, so a slow
/// or unreachable store never delays the reaction to the deadline. On stop, releases
/// the lease and the rooms.
pub(crate) async fn lease_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let mut keeper = LeaseKeeper::new(cluster.node.lease, Instant::now());
    // At most one heartbeat in flight, with the ticket it answers.
    let mut beats: JoinSet<Result<(), StoreError>> = JoinSet::new();
    let mut in_flight: Option<RenewalTicket> = None;
    loop {
        if in_flight.is_none()
            && let Some(ticket) = keeper.start_renewal(Instant::now())
        {
            let store = Arc::clone(&cluster.node.store);
            let info = cluster.node.info.clone();
            let lease = cluster.node.lease.lease;
            beats.spawn_blocking(move || store.heartbeat(&info, lease));
            in_flight = Some(ticket);
        }
        let wake = keeper
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            Some(done) = beats.join_next(), if !beats.is_empty() => {
                let Some(ticket) = in_flight.take() else { continue };
                match done {
                    Ok(Ok(())) => keeper.renewal_succeeded(ticket, Instant::now()),
                    Ok(Err(e)) => {
                        warn!(error = %e, "cluster lease heartbeat failed");
                        counter!(telemetry::CLUSTER_HEARTBEAT_FAILURES).increment(1);
                        keeper.renewal_failed(ticket, Instant::now());
                    }
                    Err(e) => {
                        warn!(error = %e, "cluster lease heartbeat task failed");
                        counter!(telemetry::CLUSTER_HEARTBEAT_FAILURES).increment(1);
                        keeper.renewal_failed(ticket, Instant::now());
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.changed() => break,
        }
        keeper.handle_timeout(Instant::now());
        cluster.lease_until.send_replace(keeper.deadline());
        let held = keeper.may_accept(Instant::now());
        gauge!(telemetry::CLUSTER_LEASE_HELD).set(if held { 1.0 } else { 0.0 });
        cluster.forget_closed_rooms(&shared);
        while let Some(event) = keeper.poll_event() {
            match event {
                LeaseEvent::Acquired => {
                    info!(node = %cluster.node.info.node_id, "cluster lease acquired");
                }
                LeaseEvent::Lost => {
                    counter!(telemetry::CLUSTER_LEASES_LOST).increment(1);
                    lose_rooms(&shared, cluster);
                }
            }
        }
    }
    cluster.lease_until.send_replace(None);
    gauge!(telemetry::CLUSTER_LEASE_HELD).set(0.0);
    gauge!(telemetry::CLUSTER_ROOMS_OWNED).set(0.0);
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
