//! Users, devices and prekeys.

use std::collections::BTreeMap;

use tokio_postgres::error::SqlState;

use super::{PgStore, count, fixed, from_sql, id_from_sql, id_to_sql, pg, to_sql};
use crate::store::{
    DeviceIdBytes, DeviceRecord, RegisterOutcome, StoreError, StoredPrekey, TakenPrekey,
    UserIdBytes,
};

/// Attempts at a registration that lost a race for the same new device id.
const REGISTER_ATTEMPTS: usize = 3;

fn device_record(row: &tokio_postgres::Row) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        user_id: fixed(row.get("user_id"), "user id is not 32 bytes")?,
        device_id: fixed(row.get("device_id"), "device id is not 16 bytes")?,
        certificate: row.get("certificate"),
    })
}

fn prekey(row: &tokio_postgres::Row) -> Result<StoredPrekey, StoreError> {
    Ok(StoredPrekey {
        prekey_id: id_from_sql(row.get("prekey_key")),
        expires_at_ms: from_sql(row.get("expires_at_ms"), "negative prekey expiry")?,
        signed: row.get("signed"),
    })
}

/// Locks a registered device's row; `false` if it is not registered.
async fn lock_device(
    tx: &deadpool_postgres::Transaction<'_>,
    device_id: &DeviceIdBytes,
) -> Result<bool, StoreError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM devices WHERE device_id = $1 FOR UPDATE",
            &[&device_id.as_slice()],
        )
        .await
        .map_err(pg)?;
    Ok(row.is_some())
}

impl PgStore {
    pub(super) async fn user_key_async(
        &self,
        user_id: &UserIdBytes,
    ) -> Result<Option<[u8; 32]>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT user_key FROM users WHERE user_id = $1",
                &[&user_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        row.map(|row| fixed(row.get(0), "user key is not 32 bytes"))
            .transpose()
    }

    pub(super) async fn register_device_async(
        &self,
        user_key: &[u8; 32],
        device: &DeviceRecord,
        max_devices: usize,
    ) -> Result<RegisterOutcome, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.register_once(user_key, device, max_devices).await {
                // Two first registrations of one device id raced; the loser sees the
                // winner's row on the next attempt.
                Err(StoreError::Backend(super::BackendError::Postgres(e)))
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        && attempt < REGISTER_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    async fn register_once(
        &self,
        user_key: &[u8; 32],
        device: &DeviceRecord,
        max_devices: usize,
    ) -> Result<RegisterOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let user_id = device.user_id.as_slice();
        let inserted = tx
            .execute(
                "INSERT INTO users (user_id, user_key) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO NOTHING",
                &[&user_id, &user_key.as_slice()],
            )
            .await
            .map_err(pg)?;
        // Serializes registrations of this user (the device limit).
        let pinned: Vec<u8> = tx
            .query_one(
                "SELECT user_key FROM users WHERE user_id = $1 FOR UPDATE",
                &[&user_id],
            )
            .await
            .map_err(pg)?
            .get(0);
        if pinned != user_key.as_slice() {
            return Err(StoreError::UserKeyMismatch);
        }
        let existing = tx
            .query_opt(
                "SELECT user_id, device_id, certificate FROM devices WHERE device_id = $1",
                &[&device.device_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        if let Some(row) = existing {
            return if device_record(&row)? == *device {
                Ok(RegisterOutcome::AlreadyRegistered)
            } else {
                Err(StoreError::DeviceExists)
            };
        }
        let held: i64 = tx
            .query_one(
                "SELECT count(*) FROM devices WHERE user_id = $1",
                &[&user_id],
            )
            .await
            .map_err(pg)?
            .get(0);
        if count(held)? >= max_devices {
            return Err(StoreError::TooManyDevices { limit: max_devices });
        }
        tx.execute(
            "INSERT INTO devices (device_id, user_id, certificate) VALUES ($1, $2, $3)",
            &[&device.device_id.as_slice(), &user_id, &device.certificate],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(if inserted == 1 {
            RegisterOutcome::NewUser
        } else {
            RegisterOutcome::NewDevice
        })
    }

    pub(super) async fn device_async(
        &self,
        device_id: &DeviceIdBytes,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT user_id, device_id, certificate FROM devices WHERE device_id = $1",
                &[&device_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(device_record).transpose()
    }

    pub(super) async fn user_devices_async(
        &self,
        user_id: &UserIdBytes,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT user_id, device_id, certificate FROM devices
                 WHERE user_id = $1 ORDER BY device_id",
                &[&user_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(device_record).collect()
    }

    pub(super) async fn add_prekeys_async(
        &self,
        device_id: &DeviceIdBytes,
        prekeys: &[StoredPrekey],
        max_held: usize,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if !lock_device(&tx, device_id).await? {
            return Err(StoreError::UnknownDevice);
        }
        let device = device_id.as_slice();
        tx.execute(
            "DELETE FROM prekeys WHERE device_id = $1 AND expires_at_ms <= $2",
            &[&device, &to_sql(now_ms)],
        )
        .await
        .map_err(pg)?;
        // One row per id, the last upload of an id winning (as a map insert would).
        let unique: BTreeMap<u64, &StoredPrekey> =
            prekeys.iter().map(|p| (p.prekey_id, p)).collect();
        let ids: Vec<i64> = unique.keys().map(|id| id_to_sql(*id)).collect();
        let expiries: Vec<i64> = unique.values().map(|p| to_sql(p.expires_at_ms)).collect();
        let signed: Vec<&[u8]> = unique.values().map(|p| p.signed.as_slice()).collect();
        tx.execute(
            "INSERT INTO prekeys (device_id, prekey_key, expires_at_ms, signed)
             SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::bytea[])
             ON CONFLICT (device_id, prekey_key)
             DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms, signed = EXCLUDED.signed",
            &[&device, &ids, &expiries, &signed],
        )
        .await
        .map_err(pg)?;
        let held = count(
            tx.query_one(
                "SELECT count(*) FROM prekeys WHERE device_id = $1",
                &[&device],
            )
            .await
            .map_err(pg)?
            .get(0),
        )?;
        if held > max_held {
            return Err(StoreError::TooManyPrekeys {
                would_hold: held,
                limit: max_held,
            });
        }
        tx.commit().await.map_err(pg)?;
        Ok(held)
    }

    pub(super) async fn set_last_resort_async(
        &self,
        device_id: &DeviceIdBytes,
        prekey: Option<&StoredPrekey>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if !lock_device(&tx, device_id).await? {
            return Err(StoreError::UnknownDevice);
        }
        let device = device_id.as_slice();
        match prekey {
            Some(p) => {
                let (id, expires) = (id_to_sql(p.prekey_id), to_sql(p.expires_at_ms));
                tx.execute(
                    "INSERT INTO last_resort_prekeys (device_id, prekey_key, expires_at_ms, signed)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (device_id) DO UPDATE SET prekey_key = EXCLUDED.prekey_key,
                         expires_at_ms = EXCLUDED.expires_at_ms, signed = EXCLUDED.signed",
                    &[&device, &id, &expires, &p.signed],
                )
                .await
            }
            None => {
                tx.execute(
                    "DELETE FROM last_resort_prekeys WHERE device_id = $1",
                    &[&device],
                )
                .await
            }
        }
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    pub(super) async fn last_resort_async(
        &self,
        device_id: &DeviceIdBytes,
        now_ms: u64,
    ) -> Result<Option<StoredPrekey>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT prekey_key, expires_at_ms, signed FROM last_resort_prekeys
                 WHERE device_id = $1 AND expires_at_ms > $2",
                &[&device_id.as_slice(), &to_sql(now_ms)],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(prekey).transpose()
    }

    pub(super) async fn prekey_count_async(
        &self,
        device_id: &DeviceIdBytes,
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM prekeys WHERE device_id = $1",
                &[&device_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        count(row.get(0))
    }

    pub(super) async fn take_prekeys_async(
        &self,
        device_ids: &[DeviceIdBytes],
        now_ms: u64,
    ) -> Result<Vec<TakenPrekey>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Lock every listed device, in id order (no deadlock between two takers), so
        // that concurrent takes of one device are serialized: never one prekey twice.
        let mut sorted: Vec<&[u8]> = device_ids.iter().map(<[u8; 16]>::as_slice).collect();
        sorted.sort_unstable();
        sorted.dedup();
        tx.query(
            "SELECT 1 FROM devices WHERE device_id = ANY($1) ORDER BY device_id FOR UPDATE",
            &[&sorted],
        )
        .await
        .map_err(pg)?;
        let expire = tx
            .prepare_cached("DELETE FROM prekeys WHERE device_id = $1 AND expires_at_ms <= $2")
            .await
            .map_err(pg)?;
        let take = tx
            .prepare_cached(
                "DELETE FROM prekeys WHERE device_id = $1 AND prekey_key =
                     (SELECT min(prekey_key) FROM prekeys WHERE device_id = $1)
                 RETURNING prekey_key, expires_at_ms, signed",
            )
            .await
            .map_err(pg)?;
        let left = tx
            .prepare_cached("SELECT count(*) FROM prekeys WHERE device_id = $1")
            .await
            .map_err(pg)?;
        let now = to_sql(now_ms);
        let mut taken = Vec::with_capacity(device_ids.len());
        for device_id in device_ids {
            let device = device_id.as_slice();
            tx.execute(&expire, &[&device, &now]).await.map_err(pg)?;
            let row = tx.query_opt(&take, &[&device]).await.map_err(pg)?;
            let remaining = count(tx.query_one(&left, &[&device]).await.map_err(pg)?.get(0))?;
            taken.push(TakenPrekey {
                device_id: *device_id,
                prekey: row.as_ref().map(prekey).transpose()?,
                remaining,
            });
        }
        tx.commit().await.map_err(pg)?;
        Ok(taken)
    }
}
