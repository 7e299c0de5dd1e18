//! Web Push subscriptions: the `push_subscriptions` table (schema version 4), one row
//! per device at most. Each method is one statement, so one transaction.

use super::{PgStore, fixed, from_sql, pg, to_sql};
use crate::store::{DeviceIdBytes, PushSubscription, StoreError};

/// A `push_subscriptions` row read back; a row whose key lengths or time are wrong is
/// `Corrupt` (the table's checks should make that impossible).
fn subscription(row: &tokio_postgres::Row) -> Result<PushSubscription, StoreError> {
    Ok(PushSubscription {
        endpoint: row.try_get("endpoint").map_err(pg)?,
        p256dh: fixed(
            row.try_get("p256dh").map_err(pg)?,
            "push subscription p256dh is not 65 bytes",
        )?,
        auth: fixed(
            row.try_get("auth").map_err(pg)?,
            "push subscription auth is not 16 bytes",
        )?,
        updated_at_ms: from_sql(
            row.try_get("updated_at_ms").map_err(pg)?,
            "negative push subscription time",
        )?,
    })
}

impl PgStore {
    pub(super) async fn set_push_subscription_async(
        &self,
        device_id: &DeviceIdBytes,
        s: &PushSubscription,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        // Inserts only for a registered device: no row to select, nothing stored.
        let stored = client
            .execute(
                "INSERT INTO push_subscriptions (device_id, endpoint, p256dh, auth, updated_at_ms)
                 SELECT device_id, $2::text, $3::bytea, $4::bytea, $5::bigint
                 FROM devices WHERE device_id = $1
                 ON CONFLICT (device_id) DO UPDATE SET endpoint = EXCLUDED.endpoint,
                     p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth,
                     updated_at_ms = EXCLUDED.updated_at_ms",
                &[
                    &device_id.as_slice(),
                    &s.endpoint,
                    &s.p256dh.as_slice(),
                    &s.auth.as_slice(),
                    &to_sql(s.updated_at_ms),
                ],
            )
            .await
            .map_err(pg)?;
        if stored == 0 {
            return Err(StoreError::UnknownDevice);
        }
        Ok(())
    }

    pub(super) async fn push_subscription_async(
        &self,
        device_id: &DeviceIdBytes,
    ) -> Result<Option<PushSubscription>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT endpoint, p256dh, auth, updated_at_ms FROM push_subscriptions
                 WHERE device_id = $1",
                &[&device_id.as_slice()],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(subscription).transpose()
    }

    pub(super) async fn clear_push_subscription_async(
        &self,
        device_id: &DeviceIdBytes,
        only_endpoint: Option<&str>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM push_subscriptions
                 WHERE device_id = $1 AND ($2::text IS NULL OR endpoint = $2::text)",
                &[&device_id.as_slice(), &only_endpoint],
            )
            .await
            .map_err(pg)?;
        Ok(deleted > 0)
    }
}
