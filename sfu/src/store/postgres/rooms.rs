//! Room records.

use super::cluster::NOW_MS;
use super::{PgStore, fixed, from_sql, pg, to_sql};
use crate::store::{MAX_ROOM_LEADERS, RoomRecord, RoutingIdBytes, StoreError};

/// The leaders column: their 16-byte device ids, concatenated.
fn leaders_from_sql(bytes: &[u8]) -> Result<Vec<[u8; 16]>, StoreError> {
    if bytes.len() % 16 != 0 || bytes.len() / 16 > MAX_ROOM_LEADERS {
        return Err(StoreError::Corrupt(
            "room leaders are not up to four 16-byte ids",
        ));
    }
    bytes
        .chunks_exact(16)
        .map(|id| <[u8; 16]>::try_from(id).map_err(|_| StoreError::Corrupt("room leader id")))
        .collect()
}

impl PgStore {
    pub(super) async fn room_async(
        &self,
        routing_id: &RoutingIdBytes,
    ) -> Result<Option<RoomRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT epoch, auth_public, updated_at_ms, leaders FROM rooms
                 WHERE routing_id = $1",
                &[&routing_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        row.map(|row| {
            Ok(RoomRecord {
                epoch: from_sql(row.get(0), "negative room epoch")?,
                auth_public: fixed(row.get(1), "room auth key is not 32 bytes")?,
                updated_at_ms: from_sql(row.get(2), "negative room update time")?,
                leaders: leaders_from_sql(row.get(3))?,
            })
        })
        .transpose()
    }

    pub(super) async fn put_room_async(
        &self,
        routing_id: &RoutingIdBytes,
        record: &RoomRecord,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        Self::upsert_room(&client, routing_id, record).await
    }

    /// Creates or replaces a room's record on `client` (a connection or transaction).
    pub(super) async fn upsert_room(
        client: &impl deadpool_postgres::GenericClient,
        routing_id: &RoutingIdBytes,
        record: &RoomRecord,
    ) -> Result<(), StoreError> {
        let leaders = record.leaders.concat();
        client
            .execute(
                "INSERT INTO rooms (routing_id, epoch, auth_public, updated_at_ms, leaders)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (routing_id) DO UPDATE SET epoch = EXCLUDED.epoch,
                     auth_public = EXCLUDED.auth_public,
                     updated_at_ms = EXCLUDED.updated_at_ms, leaders = EXCLUDED.leaders",
                &[
                    &routing_id.as_slice(),
                    &to_sql(record.epoch),
                    &record.auth_public.as_slice(),
                    &to_sql(record.updated_at_ms),
                    &leaders,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn delete_room_async(
        &self,
        routing_id: &RoutingIdBytes,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM rooms WHERE routing_id = $1",
                &[&routing_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    pub(super) async fn expire_rooms_async(
        &self,
        cutoff_ms: u64,
        is_live: &dyn Fn(&RoutingIdBytes) -> bool,
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let cutoff = to_sql(cutoff_ms);
        // A room owned by a live node of the cluster is in use there: never expired
        // by a node that merely does not host it.
        let rows = client
            .query(
                &format!(
                    "SELECT routing_id FROM rooms r WHERE updated_at_ms < $1
                     AND NOT EXISTS (SELECT 1 FROM room_owners o JOIN nodes n USING (node_id)
                                     WHERE o.routing_id = r.routing_id
                                       AND n.lease_until_ms > {NOW_MS})"
                ),
                &[&cutoff],
            )
            .await
            .map_err(pg)?;
        let mut stale: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: RoutingIdBytes = fixed(row.get(0), "routing id is not 32 bytes")?;
            if !is_live(&id) {
                stale.push(id.to_vec());
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        // Rechecks the time: a room rotated meanwhile stays.
        let deleted = client
            .execute(
                "DELETE FROM rooms WHERE routing_id = ANY($1) AND updated_at_ms < $2",
                &[&stale, &cutoff],
            )
            .await
            .map_err(pg)?;
        usize::try_from(deleted).map_err(|_| StoreError::Corrupt("count does not fit in usize"))
    }
}
