//! [`ClusterStore`] on PostgreSQL. Lease times are PostgreSQL's clock
//! (`clock_timestamp()`), in ms; node clocks never enter a comparison.

use std::time::Duration;

use super::{PgStore, pg, to_sql};
use crate::store::{
    ClusterStore, Fence, NodeAddress, NodeId, NodeInfo, OwnerLease, RoomClaim, RoomRecord,
    RoutingIdBytes, StoreError,
};

/// PostgreSQL's current time in ms since the Unix epoch.
pub(super) const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

fn node_info(row: &tokio_postgres::Row) -> Result<NodeInfo, StoreError> {
    let id: String = row.get("node_id");
    let addr: String = row.get("quic_addr");
    Ok(NodeInfo {
        node_id: NodeId::new(id).map_err(|_| StoreError::Corrupt("invalid node id"))?,
        quic_addr: NodeAddress::new(addr)
            .map_err(|_| StoreError::Corrupt("invalid node address"))?,
        server_name: row.get("server_name"),
    })
}

fn fence(v: i64) -> Result<Fence, StoreError> {
    u64::try_from(v)
        .map(Fence)
        .map_err(|_| StoreError::Corrupt("negative fence"))
}

impl PgStore {
    async fn heartbeat_async(&self, node: &NodeInfo, lease: Duration) -> Result<(), StoreError> {
        let client = self.client().await?;
        let lease_ms = to_sql(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        let sql = format!(
            "INSERT INTO nodes (node_id, quic_addr, server_name, lease_until_ms, renewed_at_ms)
             VALUES ($1, $2, $3, {NOW_MS} + $4, {NOW_MS})
             ON CONFLICT (node_id) DO UPDATE SET quic_addr = EXCLUDED.quic_addr,
                 server_name = EXCLUDED.server_name, lease_until_ms = EXCLUDED.lease_until_ms,
                 renewed_at_ms = EXCLUDED.renewed_at_ms"
        );
        client
            .execute(
                &sql,
                &[
                    &node.node_id.as_str(),
                    &node.quic_addr.as_str(),
                    &node.server_name,
                    &lease_ms,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn release_node_async(&self, node: &NodeId) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "DELETE FROM room_owners WHERE node_id = $1",
            &[&node.as_str()],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE nodes SET lease_until_ms = 0 WHERE node_id = $1",
            &[&node.as_str()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn live_nodes_async(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT node_id, quic_addr, server_name FROM nodes
             WHERE lease_until_ms > {NOW_MS} ORDER BY node_id"
        );
        let rows = client.query(&sql, &[]).await.map_err(pg)?;
        rows.iter().map(node_info).collect()
    }

    async fn claim_room_async(
        &self,
        room: &RoutingIdBytes,
        node: &NodeId,
    ) -> Result<RoomClaim, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let alive = tx
            .query_opt(
                &format!("SELECT 1 FROM nodes WHERE node_id = $1 AND lease_until_ms > {NOW_MS}"),
                &[&node.as_str()],
            )
            .await
            .map_err(pg)?;
        if alive.is_none() {
            return Err(StoreError::LeaseExpired);
        }
        let room_id = room.as_slice();
        // The one conditional write: take the room if it has no owner or its owner's
        // lease is over. Concurrent claims serialize on the row; the condition is
        // re-evaluated on the winner's version, so the loser changes nothing.
        let claimed = tx
            .query_opt(
                &format!(
                    "INSERT INTO room_owners AS o (routing_id, node_id, fence)
                     VALUES ($1, $2, nextval('room_fences'))
                     ON CONFLICT (routing_id) DO UPDATE
                         SET node_id = EXCLUDED.node_id, fence = EXCLUDED.fence
                         WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = o.node_id
                                           AND n.lease_until_ms > {NOW_MS})
                     RETURNING fence"
                ),
                &[&room_id, &node.as_str()],
            )
            .await
            .map_err(pg)?;
        let outcome = match claimed {
            Some(row) => RoomClaim::Owned(fence(row.get(0))?),
            None => {
                let row = tx
                    .query_one(
                        &format!(
                            "SELECT n.node_id, n.quic_addr, n.server_name, o.fence,
                                 CASE WHEN n.renewed_at_ms = 0 THEN 0
                                      ELSE greatest({NOW_MS} - n.renewed_at_ms, 0)
                                 END AS silent_ms,
                                 greatest(n.lease_until_ms - {NOW_MS}, 0) AS left_ms
                             FROM room_owners o JOIN nodes n USING (node_id)
                             WHERE o.routing_id = $1"
                        ),
                        &[&room_id],
                    )
                    .await
                    .map_err(pg)?;
                let owner = node_info(&row)?;
                let owner_fence = fence(row.get("fence"))?;
                if owner.node_id == *node {
                    RoomClaim::Owned(owner_fence)
                } else {
                    let ms = |column: &str| {
                        Duration::from_millis(u64::try_from(row.get::<_, i64>(column)).unwrap_or(0))
                    };
                    RoomClaim::OwnedElsewhere {
                        owner,
                        fence: owner_fence,
                        lease: OwnerLease {
                            silent_for: ms("silent_ms"),
                            left: ms("left_ms"),
                        },
                    }
                }
            }
        };
        tx.commit().await.map_err(pg)?;
        Ok(outcome)
    }

    async fn room_owner_async(
        &self,
        room: &RoutingIdBytes,
    ) -> Result<Option<(NodeInfo, Fence)>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT n.node_id, n.quic_addr, n.server_name, o.fence
             FROM room_owners o JOIN nodes n USING (node_id)
             WHERE o.routing_id = $1 AND n.lease_until_ms > {NOW_MS}"
        );
        let row = client
            .query_opt(&sql, &[&room.as_slice()])
            .await
            .map_err(pg)?;
        row.map(|row| Ok((node_info(&row)?, fence(row.get("fence"))?)))
            .transpose()
    }

    async fn put_room_fenced_async(
        &self,
        room: &RoutingIdBytes,
        record: &RoomRecord,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Holds the ownership row against a takeover until this write commits.
        let current = tx
            .query_opt(
                &format!(
                    "SELECT 1 FROM room_owners o JOIN nodes n USING (node_id)
                     WHERE o.routing_id = $1 AND o.fence = $2
                       AND n.lease_until_ms > {NOW_MS}
                     FOR SHARE OF o"
                ),
                &[&room.as_slice(), &to_sql(fence.0)],
            )
            .await
            .map_err(pg)?;
        if current.is_none() {
            return Ok(false);
        }
        Self::upsert_room(&tx, room, record).await?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }
}

impl ClusterStore for PgStore {
    fn heartbeat(&self, node: &NodeInfo, lease: Duration) -> Result<(), StoreError> {
        self.block_on(self.heartbeat_async(node, lease))
    }

    fn release_node(&self, node: &NodeId) -> Result<(), StoreError> {
        self.block_on(self.release_node_async(node))
    }

    fn live_nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        self.block_on(self.live_nodes_async())
    }

    fn claim_room(&self, room: &RoutingIdBytes, node: &NodeId) -> Result<RoomClaim, StoreError> {
        self.block_on(self.claim_room_async(room, node))
    }

    fn room_owner(&self, room: &RoutingIdBytes) -> Result<Option<(NodeInfo, Fence)>, StoreError> {
        self.block_on(self.room_owner_async(room))
    }

    fn put_room_fenced(
        &self,
        room: &RoutingIdBytes,
        record: &RoomRecord,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        self.block_on(self.put_room_fenced_async(room, record, fence))
    }

    fn watch_mailboxes(
        &self,
    ) -> Result<tokio::sync::mpsc::Receiver<crate::store::MailboxSignal>, StoreError> {
        self.watch()
    }
}
