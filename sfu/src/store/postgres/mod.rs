//! [`Store`] on PostgreSQL: the shared system of record of a cluster of SFU nodes.
//!
//! # Data flow
//! The [`Store`] trait is synchronous (the server calls it from `spawn_blocking`), while
//! the PostgreSQL client is async. A [`PgStore`] owns a small tokio runtime of its own
//! (one I/O thread) on which its pooled connections live; each trait method runs one
//! transaction to completion on the calling thread with that runtime's `block_on`. So
//! the store never borrows the server's runtime and works the same from a plain thread
//! (the conformance tests) as from the server's blocking pool. It must not be called
//! from inside an async task; the server never does.
//!
//! # Invariants
//! * Every method is one transaction: durable on `Ok` (PostgreSQL's commit), with no
//!   effect on `Err` (rolled back when the transaction is dropped).
//! * Transactions run at READ COMMITTED and take row locks in a fixed order, so that
//!   concurrent nodes see the semantics of the serial redb store:
//!   - a user row `FOR UPDATE` serializes registrations of one user (device limit);
//!   - device rows `FOR UPDATE`, in device-id order, serialize prekey uploads and takes
//!     of one device (a prekey is never handed out twice);
//!   - the one `mailbox_totals` row `FOR UPDATE` serializes every mailbox write
//!     (quotas are exact and mailbox ids become visible in increasing order).
//! * `u64` times are stored as `bigint`, saturating at `i64::MAX` ms (the year
//!   292,277,026); prekey ids, chosen by devices, map order-preservingly onto the whole
//!   `bigint` range (the sign bit flipped).
//! * The schema is versioned ([`SCHEMA_VERSION`]); a database written by a newer server is
//!   refused with [`StoreError::UnsupportedSchema`] rather than misread.
//!
//! # TLS
//! Connections use TLS when the URL's `sslmode` asks for it (`prefer`, the default, or
//! `require`), always verifying the server's certificate: against `ca_file` if given,
//! else the system's trust store. `sslmode=disable` turns TLS off (a trusted network
//! or a local socket only).

mod cluster;
mod directory;
mod mailbox;
mod notify;
mod push;
mod rooms;
mod schema;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};

use super::{
    BackendError, DeviceIdBytes, DeviceRecord, MailboxEntry, MailboxPut, MailboxQuota,
    MailboxUsage, NewContainer, PushSubscription, RegisterOutcome, RoomRecord, RoutingIdBytes,
    Store, StoreError, StoredPrekey, TakenPrekey, UserIdBytes,
};

pub use schema::SCHEMA_VERSION;

/// How to reach PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?sslmode=…` (or the key=value
    /// form). Never logged: it may hold a password.
    pub url: String,
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// PEM CA certificate(s) that PostgreSQL's TLS certificate must chain to; `None`
    /// uses the system trust store.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for a connection (opening one, or a free one in the pool).
    pub connect_timeout: Duration,
}

impl PgOptions {
    /// Defaults for `url`: a pool of 16, the system trust store, a 5 s timeout.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 16,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redacted_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// `url` with any password replaced by `***`, for logs and `Debug`.
#[must_use]
pub fn redacted_url(url: &str) -> String {
    // URL form: scheme://user:password@host...
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            let tail = mask_query_password(tail);
            return format!("{scheme}://{masked}@{host}{tail}");
        }
        return format!("{scheme}://{authority}{}", mask_query_password(tail));
    }
    // key=value form.
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn mask_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    pool: Pool,
    /// `Some` until drop, which shuts it down without blocking (a store may be dropped
    /// inside an async context).
    runtime: Option<tokio::runtime::Runtime>,
    /// For `Debug` and logs, password masked.
    redacted: String,
    connect_timeout: Duration,
    /// For the dedicated `LISTEN` connection of [`crate::store::ClusterStore::watch_mailboxes`].
    listen: notify::ListenTarget,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.redacted)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to PostgreSQL and brings the schema up to [`SCHEMA_VERSION`] (applying
    /// the missing migrations in one transaction under an advisory lock, so that nodes
    /// starting together migrate once).
    ///
    /// Fails with `Backend` (`InvalidUrl`, `PostgresUnreachable`, `ConnectTimeout`,
    /// `CaFile`, ...) if PostgreSQL cannot be used, and `UnsupportedSchema` if the
    /// database was written by a newer server.
    pub fn connect(options: &PgOptions) -> Result<PgStore, StoreError> {
        let backend = StoreError::Backend;
        let config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| backend(BackendError::InvalidUrl(e)))?;
        let tls = tls_connector(options.ca_file.as_deref())?;
        let listen = notify::ListenTarget {
            config: config.clone(),
            tls: tls.clone(),
        };
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("conclave-store")
            .enable_all()
            .build()
            .map_err(|e| backend(BackendError::Runtime(e)))?;
        let pool = {
            // The pool spawns its timers on the runtime it is built in.
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(options.pool_size.max(1))
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(options.connect_timeout))
                .create_timeout(Some(options.connect_timeout))
                .recycle_timeout(Some(options.connect_timeout))
                .build()
                .map_err(|_| backend(BackendError::PoolClosed))?
        };
        let store = PgStore {
            pool,
            runtime: Some(runtime),
            redacted: redacted_url(&options.url),
            connect_timeout: options.connect_timeout,
            listen,
        };
        store.block_on(store.migrate())?;
        Ok(store)
    }

    /// The schema version the database holds.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        self.block_on(async {
            let client = self.client().await?;
            schema::current_version(&client).await
        })
    }

    /// Runs `work` to completion on the store's runtime.
    fn block_on<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match &self.runtime {
            Some(runtime) => runtime.block_on(work),
            None => Err(StoreError::Backend(BackendError::PoolClosed)),
        }
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Backend(match e {
                PoolError::Backend(e) => BackendError::PostgresUnreachable(e),
                PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                    BackendError::PoolTimeout(self.connect_timeout)
                }
                PoolError::Timeout(_) => BackendError::ConnectTimeout(self.connect_timeout),
                PoolError::PostCreateHook(_)
                | PoolError::Closed
                | PoolError::NoRuntimeSpecified => BackendError::PoolClosed,
            })
        })
    }
}

/// The TLS connector: rustls, verifying against `ca_file` or the system roots.
fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use crate::tls::ClientTlsError;
    let config = crate::tls::client_config(ca_file).map_err(|e| {
        StoreError::Backend(match e {
            ClientTlsError::CaFile { path, source } => BackendError::CaFile { path, source },
            _ => BackendError::NoTrustAnchors,
        })
    })?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A statement error.
fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(BackendError::Postgres(e))
}

/// A time or count for a `bigint` column, saturating at `i64::MAX`.
fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` time or count read back; negative values mean a corrupt row.
fn from_sql(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(what))
}

/// A prekey id onto the whole `bigint` range, preserving order (flip the sign bit).
fn id_to_sql(id: u64) -> i64 {
    i64::from_be_bytes((id ^ (1 << 63)).to_be_bytes())
}

/// The inverse of [`id_to_sql`].
fn id_from_sql(v: i64) -> u64 {
    u64::from_be_bytes(v.to_be_bytes()) ^ (1 << 63)
}

/// A fixed-size id column read back.
fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt(what))
}

/// A count for `usize`.
fn count(v: i64) -> Result<usize, StoreError> {
    usize::try_from(v).map_err(|_| StoreError::Corrupt("count does not fit in usize"))
}

/// How long a liveness probe's `SELECT 1` may take.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Store for PgStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.block_on(async {
            // Every pooled connection busy means PostgreSQL answers (it is serving
            // them): that is load, not an outage.
            let client = match self.client().await {
                Ok(client) => client,
                Err(StoreError::Backend(BackendError::PoolTimeout(_))) => return Ok(()),
                Err(e) => return Err(e),
            };
            match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                Ok(answer) => answer.map(|_| ()).map_err(pg),
                Err(_) => Err(StoreError::Backend(BackendError::ConnectTimeout(
                    PING_TIMEOUT,
                ))),
            }
        })
    }

    fn user_key(&self, user_id: &UserIdBytes) -> Result<Option<[u8; 32]>, StoreError> {
        self.block_on(self.user_key_async(user_id))
    }

    fn register_device(
        &self,
        user_key: &[u8; 32],
        device: &DeviceRecord,
        max_devices: usize,
    ) -> Result<RegisterOutcome, StoreError> {
        self.block_on(self.register_device_async(user_key, device, max_devices))
    }

    fn device(&self, device_id: &DeviceIdBytes) -> Result<Option<DeviceRecord>, StoreError> {
        self.block_on(self.device_async(device_id))
    }

    fn user_devices(&self, user_id: &UserIdBytes) -> Result<Vec<DeviceRecord>, StoreError> {
        self.block_on(self.user_devices_async(user_id))
    }

    fn add_prekeys(
        &self,
        device_id: &DeviceIdBytes,
        prekeys: &[StoredPrekey],
        max_held: usize,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        self.block_on(self.add_prekeys_async(device_id, prekeys, max_held, now_ms))
    }

    fn set_last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        prekey: Option<&StoredPrekey>,
    ) -> Result<(), StoreError> {
        self.block_on(self.set_last_resort_async(device_id, prekey))
    }

    fn last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        now_ms: u64,
    ) -> Result<Option<StoredPrekey>, StoreError> {
        self.block_on(self.last_resort_async(device_id, now_ms))
    }

    fn prekey_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError> {
        self.block_on(self.prekey_count_async(device_id))
    }

    fn take_prekeys(
        &self,
        device_ids: &[DeviceIdBytes],
        now_ms: u64,
    ) -> Result<Vec<TakenPrekey>, StoreError> {
        self.block_on(self.take_prekeys_async(device_ids, now_ms))
    }

    fn mailbox_store(
        &self,
        new: &NewContainer<'_>,
        quota: &MailboxQuota,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        self.block_on(self.mailbox_store_async(new, quota))
    }

    fn mailbox_list(
        &self,
        device_id: &DeviceIdBytes,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.block_on(self.mailbox_list_async(device_id, after_id, limit))
    }

    fn mailbox_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError> {
        self.block_on(self.mailbox_count_async(device_id, None))
    }

    fn mailbox_count_from(
        &self,
        device_id: &DeviceIdBytes,
        sender: &UserIdBytes,
    ) -> Result<usize, StoreError> {
        self.block_on(self.mailbox_count_async(device_id, Some(sender)))
    }

    fn mailbox_ack(
        &self,
        device_id: &DeviceIdBytes,
        mailbox_ids: &[u64],
    ) -> Result<usize, StoreError> {
        self.block_on(self.mailbox_ack_async(device_id, mailbox_ids))
    }

    fn mailbox_expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.block_on(self.mailbox_expire_async(now_ms))
    }

    fn mailbox_usage(&self) -> Result<MailboxUsage, StoreError> {
        self.block_on(self.mailbox_usage_async())
    }

    fn mailbox_sender_bytes(&self, sender: &UserIdBytes) -> Result<u64, StoreError> {
        self.block_on(self.mailbox_sender_bytes_async(sender))
    }

    fn room(&self, routing_id: &RoutingIdBytes) -> Result<Option<RoomRecord>, StoreError> {
        self.block_on(self.room_async(routing_id))
    }

    fn put_room(&self, routing_id: &RoutingIdBytes, record: &RoomRecord) -> Result<(), StoreError> {
        self.block_on(self.put_room_async(routing_id, record))
    }

    fn delete_room(&self, routing_id: &RoutingIdBytes) -> Result<(), StoreError> {
        self.block_on(self.delete_room_async(routing_id))
    }

    fn expire_rooms(
        &self,
        cutoff_ms: u64,
        is_live: &dyn Fn(&RoutingIdBytes) -> bool,
    ) -> Result<usize, StoreError> {
        self.block_on(self.expire_rooms_async(cutoff_ms, is_live))
    }

    fn set_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError> {
        self.block_on(self.set_push_subscription_async(device_id, subscription))
    }

    fn push_subscription(
        &self,
        device_id: &DeviceIdBytes,
    ) -> Result<Option<PushSubscription>, StoreError> {
        self.block_on(self.push_subscription_async(device_id))
    }

    fn clear_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        only_endpoint: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.block_on(self.clear_push_subscription_async(device_id, only_endpoint))
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn prekey_ids_keep_their_order_over_the_whole_range() {
        let ids = [
            0,
            1,
            2,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for pair in ids.windows(2) {
            let [a, b] = pair else { continue };
            assert!(id_to_sql(*a) < id_to_sql(*b), "{a} < {b}");
        }
        for id in ids {
            assert_eq!(id_from_sql(id_to_sql(id)), id);
        }
    }

    #[test]
    fn passwords_never_reach_debug_or_logs() {
        for url in [
            "postgres://conclave:s3cret@db.example:5432/conclave?sslmode=require",
            "postgresql://conclave:s3cret@db.example/conclave",
            "postgres://db.example/conclave?user=conclave&password=s3cret",
            "host=db.example user=conclave password=s3cret dbname=conclave",
        ] {
            let options = PgOptions::new(url);
            let shown = format!("{options:?} {}", redacted_url(url));
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("db.example"), "{shown}");
        }
        assert_eq!(
            redacted_url("postgres://conclave:s3cret@db:5432/c"),
            "postgres://conclave:***@db:5432/c"
        );
    }
}
