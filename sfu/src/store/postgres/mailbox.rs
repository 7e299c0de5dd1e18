//! The mailbox: containers stored once, one entry per recipient, quotas.
//!
//! Every write locks the one `mailbox_totals` row first, which serializes mailbox
//! writes across all nodes: the quota checks see every committed entry and cannot be
//! overshot by two concurrent sends, and entries become visible in id order. The
//! transaction that stores entries also signals their devices (`pg_notify`, see
//! `notify`), delivered to listening nodes when it commits.
//!
//! Acknowledgements and the expiry sweep commit without waiting for the WAL to reach
//! the disk (`synchronous_commit = off` for that transaction only): they only forget,
//! and a crash that loses one brings entries back to be delivered again (clients drop
//! duplicates by container id) or swept again. The next durable commit writes them
//! (PostgreSQL flushes the WAL in order). Every recipient acknowledges every
//! container, and each commit holds the totals lock until it returns, so a flush per
//! acknowledgement would serialize the whole cluster's mailbox on the disk.

use std::collections::BTreeMap;

use super::{PgStore, count, from_sql, pg, to_sql};
use crate::store::{
    DeviceIdBytes, MailboxEntry, MailboxPut, MailboxQuota, MailboxUsage, NewContainer, StoreError,
    UserIdBytes,
};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Lets `tx` commit without waiting for the WAL flush (see the module docs).
async fn commit_without_flush(tx: &Tx<'_>) -> Result<(), StoreError> {
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg)
}

/// The totals row, locked for the rest of the transaction.
async fn lock_totals(tx: &Tx<'_>) -> Result<MailboxUsage, StoreError> {
    let row = tx
        .query_one(
            "SELECT bytes, containers, entries FROM mailbox_totals FOR UPDATE",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(MailboxUsage {
        bytes: from_sql(row.get(0), "negative mailbox bytes")?,
        containers: from_sql(row.get(1), "negative container count")?,
        entries: from_sql(row.get(2), "negative entry count")?,
    })
}

/// Drops the references of deleted entries (their container ids) and deletes the
/// containers left without one, giving their bytes back to their senders and to the
/// totals. Returns how many entries were released.
async fn release(tx: &Tx<'_>, containers: &[i64]) -> Result<usize, StoreError> {
    if containers.is_empty() {
        return Ok(0);
    }
    let mut refs: BTreeMap<i64, i64> = BTreeMap::new();
    for id in containers {
        *refs.entry(*id).or_default() += 1;
    }
    let ids: Vec<i64> = refs.keys().copied().collect();
    let drops: Vec<i64> = refs.values().copied().collect();
    tx.execute(
        "UPDATE containers c SET refs = c.refs - d.n
         FROM unnest($1::bigint[], $2::bigint[]) AS d(id, n) WHERE c.container_id = d.id",
        &[&ids, &drops],
    )
    .await
    .map_err(pg)?;
    let gone = tx
        .query(
            "DELETE FROM containers WHERE container_id = ANY($1) AND refs = 0
             RETURNING sender, octet_length(bytes)::bigint",
            &[&ids],
        )
        .await
        .map_err(pg)?;
    let mut freed: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for row in &gone {
        *freed.entry(row.get(0)).or_default() += row.get::<_, i64>(1);
    }
    let senders: Vec<&[u8]> = freed.keys().map(Vec::as_slice).collect();
    let bytes: Vec<i64> = freed.values().copied().collect();
    tx.execute(
        "UPDATE sender_bytes s SET bytes = s.bytes - d.n
         FROM unnest($1::bytea[], $2::bigint[]) AS d(sender, n) WHERE s.sender = d.sender",
        &[&senders, &bytes],
    )
    .await
    .map_err(pg)?;
    tx.execute(
        "DELETE FROM sender_bytes WHERE sender = ANY($1) AND bytes <= 0",
        &[&senders],
    )
    .await
    .map_err(pg)?;
    let entries = i64::try_from(containers.len()).unwrap_or(i64::MAX);
    let freed_bytes: i64 = bytes.iter().sum();
    let freed_containers = i64::try_from(gone.len()).unwrap_or(i64::MAX);
    tx.execute(
        "UPDATE mailbox_totals SET bytes = greatest(bytes - $1, 0),
             containers = greatest(containers - $2, 0), entries = greatest(entries - $3, 0)",
        &[&freed_bytes, &freed_containers, &entries],
    )
    .await
    .map_err(pg)?;
    Ok(containers.len())
}

impl PgStore {
    pub(super) async fn mailbox_store_async(
        &self,
        new: &NewContainer<'_>,
        quota: &MailboxQuota,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let totals = lock_totals(&tx).await?;
        let sender = new.sender.as_slice();
        let mut distinct: Vec<&[u8]> = new.recipients.iter().map(<[u8; 16]>::as_slice).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let rows = tx
            .query(
                "SELECT device_id, count(*), count(*) FILTER (WHERE sender = $2)
                 FROM mailbox WHERE device_id = ANY($1) GROUP BY device_id",
                &[&distinct, &sender],
            )
            .await
            .map_err(pg)?;
        let mut held: BTreeMap<Vec<u8>, (usize, usize)> = BTreeMap::new();
        for row in &rows {
            held.insert(row.get(0), (count(row.get(1))?, count(row.get(2))?));
        }
        // Decide every recipient first (a device listed twice fills up within the call).
        let verdicts = quota.verdicts(new.recipients, |device| {
            Ok::<_, StoreError>(held.get(device.as_slice()).copied().unwrap_or((0, 0)))
        })?;
        let stored: Vec<&DeviceIdBytes> = new
            .recipients
            .iter()
            .zip(&verdicts)
            .filter(|(_, refused)| refused.is_none())
            .map(|(device, _)| device)
            .collect();
        if stored.is_empty() {
            return Ok(verdicts.into_iter().flatten().collect());
        }
        let len = new.container.len() as u64;
        let sender_bytes = tx
            .query_opt(
                "SELECT bytes FROM sender_bytes WHERE sender = $1",
                &[&sender],
            )
            .await
            .map_err(pg)?
            .map_or(Ok(0), |row| from_sql(row.get(0), "negative sender bytes"))?;
        quota.check_bytes(sender_bytes, totals.bytes, len)?;
        let n = i64::try_from(stored.len()).unwrap_or(i64::MAX);
        let mut ids: Vec<i64> = tx
            .query(
                "SELECT nextval('mailbox_ids') FROM generate_series(1, $1::bigint)",
                &[&n],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        ids.sort_unstable();
        let Some(&container_id) = ids.first() else {
            return Err(StoreError::Corrupt("the mailbox id sequence gave no id"));
        };
        tx.execute(
            "INSERT INTO containers (container_id, sender, bytes, refs) VALUES ($1, $2, $3, $4)",
            &[&container_id, &sender, &new.container, &n],
        )
        .await
        .map_err(pg)?;
        let devices: Vec<&[u8]> = stored.iter().map(|d| d.as_slice()).collect();
        tx.execute(
            "INSERT INTO mailbox
                 (mailbox_id, device_id, container_id, sender, stored_at_ms, expires_at_ms)
             SELECT id, device, $3, $4, $5, $6 FROM unnest($1::bigint[], $2::bytea[])
                 AS t(id, device)",
            &[
                &ids,
                &devices,
                &container_id,
                &sender,
                &to_sql(new.stored_at_ms),
                &to_sql(new.expires_at_ms),
            ],
        )
        .await
        .map_err(pg)?;
        let len_sql = to_sql(len);
        tx.execute(
            "INSERT INTO sender_bytes (sender, bytes) VALUES ($1, $2)
             ON CONFLICT (sender) DO UPDATE SET bytes = sender_bytes.bytes + EXCLUDED.bytes",
            &[&sender, &len_sql],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE mailbox_totals SET bytes = bytes + $1, containers = containers + 1,
                 entries = entries + $2",
            &[&len_sql, &n],
        )
        .await
        .map_err(pg)?;
        // Every node listening learns which devices have new entries, on commit.
        let mut signalled: Vec<String> = devices.iter().map(hex::encode).collect();
        signalled.sort_unstable();
        signalled.dedup();
        tx.execute(
            "SELECT pg_notify($1, d) FROM unnest($2::text[]) AS t(d)",
            &[&super::notify::CHANNEL, &signalled],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let mut ids = ids.into_iter();
        verdicts
            .into_iter()
            .map(|refused| match refused {
                Some(refused) => Ok(refused),
                None => ids
                    .next()
                    .ok_or(StoreError::Corrupt("fewer mailbox ids than entries"))
                    .and_then(|id| from_sql(id, "negative mailbox id"))
                    .map(|mailbox_id| MailboxPut::Stored { mailbox_id }),
            })
            .collect()
    }

    pub(super) async fn mailbox_list_async(
        &self,
        device_id: &DeviceIdBytes,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT m.mailbox_id, c.bytes, m.stored_at_ms, m.expires_at_ms
                 FROM mailbox m JOIN containers c USING (container_id)
                 WHERE m.device_id = $1 AND m.mailbox_id > $2
                 ORDER BY m.mailbox_id LIMIT $3",
                &[&device_id.as_slice(), &to_sql(after_id), &limit],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                Ok(MailboxEntry {
                    mailbox_id: from_sql(row.get(0), "negative mailbox id")?,
                    container: row.get(1),
                    stored_at_ms: from_sql(row.get(2), "negative store time")?,
                    expires_at_ms: from_sql(row.get(3), "negative expiry")?,
                })
            })
            .collect()
    }

    pub(super) async fn mailbox_count_async(
        &self,
        device_id: &DeviceIdBytes,
        sender: Option<&UserIdBytes>,
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let device = device_id.as_slice();
        let row = match sender {
            None => {
                client
                    .query_one(
                        "SELECT count(*) FROM mailbox WHERE device_id = $1",
                        &[&device],
                    )
                    .await
            }
            Some(sender) => {
                client
                    .query_one(
                        "SELECT count(*) FROM mailbox WHERE device_id = $1 AND sender = $2",
                        &[&device, &sender.as_slice()],
                    )
                    .await
            }
        }
        .map_err(pg)?;
        count(row.get(0))
    }

    pub(super) async fn mailbox_ack_async(
        &self,
        device_id: &DeviceIdBytes,
        mailbox_ids: &[u64],
    ) -> Result<usize, StoreError> {
        // Ids beyond the bigint range name no entry.
        let ids: Vec<i64> = mailbox_ids
            .iter()
            .filter_map(|id| i64::try_from(*id).ok())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        commit_without_flush(&tx).await?;
        lock_totals(&tx).await?;
        let containers: Vec<i64> = tx
            .query(
                "DELETE FROM mailbox WHERE device_id = $1 AND mailbox_id = ANY($2)
                 RETURNING container_id",
                &[&device_id.as_slice(), &ids],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let released = release(&tx, &containers).await?;
        tx.commit().await.map_err(pg)?;
        Ok(released)
    }

    pub(super) async fn mailbox_expire_async(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        commit_without_flush(&tx).await?;
        lock_totals(&tx).await?;
        let containers: Vec<i64> = tx
            .query(
                "DELETE FROM mailbox WHERE expires_at_ms <= $1 RETURNING container_id",
                &[&to_sql(now_ms)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let released = release(&tx, &containers).await?;
        tx.commit().await.map_err(pg)?;
        Ok(released)
    }

    pub(super) async fn mailbox_usage_async(&self) -> Result<MailboxUsage, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT bytes, containers, entries FROM mailbox_totals", &[])
            .await
            .map_err(pg)?;
        Ok(MailboxUsage {
            bytes: from_sql(row.get(0), "negative mailbox bytes")?,
            containers: from_sql(row.get(1), "negative container count")?,
            entries: from_sql(row.get(2), "negative entry count")?,
        })
    }

    pub(super) async fn mailbox_sender_bytes_async(
        &self,
        sender: &UserIdBytes,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT bytes FROM sender_bytes WHERE sender = $1",
                &[&sender.as_slice()],
            )
            .await
            .map_err(pg)?;
        row.map_or(Ok(0), |row| from_sql(row.get(0), "negative sender bytes"))
    }
}
