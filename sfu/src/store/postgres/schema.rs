//! The versioned schema: migrations applied in order at start.
//!
//! `conclave_schema` holds one row with the version. [`PgStore::migrate`] takes a
//! transaction-scoped advisory lock (so nodes starting together migrate once), refuses
//! a version newer than [`SCHEMA_VERSION`], applies the missing migrations and records
//! the new version, all in one transaction: a failed migration leaves the database as
//! it was. A migration is never edited once released; changes are new migrations.

use super::{PgStore, from_sql, pg, to_sql};
use crate::store::StoreError;

/// The schema version this server writes (the number of migrations it knows).
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// Key of the advisory lock held while migrating ("conclave" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6e63_6c61_7665;

/// The migrations, in order; `MIGRATIONS[i]` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: directory, mailbox and room records (the redb store's tables).
    r"
    CREATE TABLE users (
        user_id bytea PRIMARY KEY CHECK (octet_length(user_id) = 32),
        user_key bytea NOT NULL CHECK (octet_length(user_key) = 32)
    );
    CREATE TABLE devices (
        device_id bytea PRIMARY KEY CHECK (octet_length(device_id) = 16),
        user_id bytea NOT NULL REFERENCES users (user_id),
        certificate bytea NOT NULL
    );
    CREATE INDEX devices_by_user ON devices (user_id, device_id);
    CREATE TABLE prekeys (
        device_id bytea NOT NULL REFERENCES devices (device_id),
        prekey_key bigint NOT NULL,
        expires_at_ms bigint NOT NULL,
        signed bytea NOT NULL,
        PRIMARY KEY (device_id, prekey_key)
    );
    CREATE TABLE last_resort_prekeys (
        device_id bytea PRIMARY KEY REFERENCES devices (device_id),
        prekey_key bigint NOT NULL,
        expires_at_ms bigint NOT NULL,
        signed bytea NOT NULL
    );
    CREATE TABLE containers (
        container_id bigint PRIMARY KEY,
        sender bytea NOT NULL,
        bytes bytea NOT NULL,
        refs bigint NOT NULL CHECK (refs >= 0)
    );
    CREATE SEQUENCE mailbox_ids AS bigint;
    CREATE TABLE mailbox (
        mailbox_id bigint PRIMARY KEY,
        device_id bytea NOT NULL,
        container_id bigint NOT NULL REFERENCES containers (container_id),
        sender bytea NOT NULL,
        stored_at_ms bigint NOT NULL,
        expires_at_ms bigint NOT NULL
    );
    CREATE INDEX mailbox_by_device ON mailbox (device_id, mailbox_id);
    CREATE INDEX mailbox_by_device_sender ON mailbox (device_id, sender);
    CREATE INDEX mailbox_by_expiry ON mailbox (expires_at_ms);
    CREATE TABLE sender_bytes (
        sender bytea PRIMARY KEY,
        bytes bigint NOT NULL CHECK (bytes >= 0)
    );
    CREATE TABLE mailbox_totals (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        bytes bigint NOT NULL,
        containers bigint NOT NULL,
        entries bigint NOT NULL
    );
    INSERT INTO mailbox_totals (bytes, containers, entries) VALUES (0, 0, 0);
    CREATE TABLE rooms (
        routing_id bytea PRIMARY KEY CHECK (octet_length(routing_id) = 32),
        epoch bigint NOT NULL,
        auth_public bytea NOT NULL,
        updated_at_ms bigint NOT NULL,
        leaders bytea NOT NULL
    );
    CREATE INDEX rooms_by_update ON rooms (updated_at_ms);
    ",
    // 2: cluster nodes, their leases, and room ownership under fences.
    r"
    CREATE TABLE nodes (
        node_id text PRIMARY KEY CHECK (length(node_id) BETWEEN 1 AND 64),
        quic_addr text NOT NULL,
        server_name text NOT NULL,
        lease_until_ms bigint NOT NULL
    );
    CREATE SEQUENCE room_fences AS bigint;
    CREATE TABLE room_owners (
        routing_id bytea PRIMARY KEY CHECK (octet_length(routing_id) = 32),
        node_id text NOT NULL REFERENCES nodes (node_id),
        fence bigint NOT NULL
    );
    CREATE INDEX room_owners_by_node ON room_owners (node_id);
    ",
    // 3: when each node last renewed its lease (to tell a silent owner from a live one).
    r"
    ALTER TABLE nodes ADD COLUMN renewed_at_ms bigint NOT NULL DEFAULT 0;
    ",
    // 4: each device's Web Push subscription (at most one).
    r"
    CREATE TABLE push_subscriptions (
        device_id bytea PRIMARY KEY REFERENCES devices (device_id),
        endpoint text NOT NULL,
        p256dh bytea NOT NULL CHECK (octet_length(p256dh) = 65),
        auth bytea NOT NULL CHECK (octet_length(auth) = 16),
        updated_at_ms bigint NOT NULL
    );
    ",
];

/// The version recorded in the database (0 before the first migration).
pub(super) async fn current_version(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<u64, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('conclave_schema') IS NOT NULL", &[])
        .await
        .map_err(pg)?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM conclave_schema", &[])
        .await
        .map_err(pg)?;
    row.map_or(Ok(0), |row| from_sql(row.get(0), "negative schema version"))
}

impl PgStore {
    /// Brings the schema up to [`SCHEMA_VERSION`].
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS conclave_schema (
                 only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                 version bigint NOT NULL
             )",
        )
        .await
        .map_err(pg)?;
        let found = current_version(&tx).await?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::UnsupportedSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let pending = MIGRATIONS
            .iter()
            .skip(usize::try_from(found).unwrap_or(usize::MAX));
        for (applied, sql) in (found + 1..).zip(pending) {
            tx.batch_execute(sql).await.map_err(pg)?;
            tracing::info!(version = applied, "store schema migrated");
        }
        tx.execute(
            "INSERT INTO conclave_schema (version) VALUES ($1)
             ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version",
            &[&to_sql(SCHEMA_VERSION)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }
}
