//! [`Store`] on an embedded [redb](https://docs.rs/redb) database file.
//!
//! Every method runs in one redb transaction; writes commit with redb's default
//! [`Durability::Immediate`](redb::Durability::Immediate) (fsync before `commit`
//! returns), except the two that only forget and that a restart may repeat without
//! harm: acknowledgements ([`Store::mailbox_ack`]) and the expiry sweep
//! ([`Store::mailbox_expire`]) commit with [`Durability::None`] (no fsync). What they
//! removed is written by the next durable commit (any other write, or
//! [`Store::sync`], which the server calls as it shuts down) or a clean close;
//! a crash before that brings the entries back, and they are delivered again (delivery
//! is at least once: clients drop duplicates by container id) or swept again. Every
//! recipient acknowledges every container, so this takes one fsync per recipient (a
//! Rekey to 99 devices: 99 of them, ~160–320 ms of redb's one writer on this machine,
//! `docs/benchmarks.md`) out of the store's write path.
//!
//! redb serializes write transactions, so read-modify-write sequences such as
//! [`Store::take_prekeys`] never interleave: two callers cannot get the same prekey.
//!
//! Layout (see [`codec`] for the byte formats): primary tables keyed by fixed-size
//! big-endian keys, plus secondary tables kept in step inside the same transactions:
//!
//! * `user_devices` lists a user's devices by a key-range scan;
//! * `prekey_expiry` (per device, by expiry) lets a take purge a device's expired
//!   prekeys without reading its unexpired ones; `prekey_counts` holds how many
//!   prekeys each device has, so counting and the upload limit need no scan;
//! * `mailbox_expiry` (global, by expiry) lets [`Store::mailbox_expire`] visit only
//!   expired entries; `mailbox_counts` makes the per-device limit O(1);
//! * a container is stored once in `mailbox_containers`, whatever its number of
//!   recipients; `mailbox_container_refs` counts the entries referring to it (the last
//!   one to go deletes it) and names the sender its bytes count against;
//!   `mailbox_sender_bytes` holds each sender's stored bytes, so quotas need no scan;
//!   `mailbox_sender_entries` holds how many entries each sender has waiting in each
//!   device's mailbox, so the per-(sender, device) limit needs no scan either;
//! * `last_resort_prekeys` holds each device's last-resort prekey (at most one);
//! * `push_subscriptions` holds each device's Web Push subscription (at most one; its
//!   layout is in [`push`]);
//! * `meta` holds the schema version, the next mailbox id (persisted with every put
//!   so ids keep increasing across restarts) and the mailbox totals.
//!
//! All tables are created by [`RedbStore::open`], so reads never meet a missing table.
//!
//! Schema versions: 1 stored a copy of the container in every recipient's entry; 2
//! stores it once; 3 adds `mailbox_sender_entries` (and, later, `last_resort_prekeys`
//! and `push_subscriptions`, which need no migration: a version 3 file without one of
//! them has no last-resort prekeys or push subscriptions, and [`RedbStore::open`]
//! creates the missing table; a server that predates a table ignores it).
//! [`RedbStore::open`] migrates a version 1 or 2 file in place, in one transaction
//! (see [`migrate`]), and refuses any other version with
//! [`StoreError::UnsupportedSchema`].

mod codec;
mod directory;
mod mailbox;
mod migrate;
mod push;
#[cfg(test)]
mod tests;

use std::path::Path;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};

use self::codec::{
    DEVICE_U64_KEY, DEVICE_USER_KEY, EXPIRY_KEY, USER_DEVICE_KEY, decode_device,
    decode_last_resort, decode_room, decode_user_key, encode_room,
};
use super::{
    BackendError, DeviceIdBytes, DeviceRecord, MailboxEntry, MailboxPut, MailboxQuota,
    MailboxUsage, NewContainer, PushSubscription, RegisterOutcome, RoomRecord, RoutingIdBytes,
    Store, StoreError, StoredPrekey, TakenPrekey, UserIdBytes,
};

// The tables; their key and value layouts are in `codec`. Changing one means a new
// `SCHEMA_VERSION`.
const USERS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("users");
const DEVICES: TableDefinition<'_, &[u8; 16], &[u8]> = TableDefinition::new("devices");
const USER_DEVICES: TableDefinition<'_, &[u8; USER_DEVICE_KEY], ()> =
    TableDefinition::new("user_devices");
const PREKEYS: TableDefinition<'_, &[u8; DEVICE_U64_KEY], &[u8]> = TableDefinition::new("prekeys");
const PREKEY_EXPIRY: TableDefinition<'_, &[u8; EXPIRY_KEY], ()> =
    TableDefinition::new("prekey_expiry");
const PREKEY_COUNTS: TableDefinition<'_, &[u8; 16], u64> = TableDefinition::new("prekey_counts");
/// Added within schema version 3: [`RedbStore::open`] creates it in older version 3
/// files (where no device has a last-resort prekey yet), and a server that predates it
/// ignores it.
const LAST_RESORT_PREKEYS: TableDefinition<'_, &[u8; 16], &[u8]> =
    TableDefinition::new("last_resort_prekeys");
/// Added within schema version 3, like [`LAST_RESORT_PREKEYS`]: a file without it has
/// no push subscriptions. Values are laid out by [`push`].
const PUSH_SUBSCRIPTIONS: TableDefinition<'_, &[u8; 16], &[u8]> =
    TableDefinition::new("push_subscriptions");
const MAILBOX: TableDefinition<'_, &[u8; DEVICE_U64_KEY], &[u8]> = TableDefinition::new("mailbox");
const MAILBOX_EXPIRY: TableDefinition<'_, &[u8; EXPIRY_KEY], ()> =
    TableDefinition::new("mailbox_expiry");
const MAILBOX_COUNTS: TableDefinition<'_, &[u8; 16], u64> = TableDefinition::new("mailbox_counts");
const MAILBOX_CONTAINERS: TableDefinition<'_, u64, &[u8]> =
    TableDefinition::new("mailbox_containers");
const MAILBOX_CONTAINER_REFS: TableDefinition<'_, u64, &[u8]> =
    TableDefinition::new("mailbox_container_refs");
const MAILBOX_SENDER_BYTES: TableDefinition<'_, &[u8; 32], u64> =
    TableDefinition::new("mailbox_sender_bytes");
const MAILBOX_SENDER_ENTRIES: TableDefinition<'_, &[u8; DEVICE_USER_KEY], u64> =
    TableDefinition::new("mailbox_sender_entries");
const ROOMS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("rooms");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// `meta` key of the layout version.
const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The layout this code reads and writes.
const SCHEMA_VERSION: u64 = 3;
/// `meta` key of the id the next mailbox entry gets (absent: 1).
const NEXT_MAILBOX_ID_KEY: &str = "next_mailbox_id";
/// `meta` key of the bytes of all stored containers (absent: 0).
const MAILBOX_BYTES_KEY: &str = "mailbox_bytes";
/// `meta` key of the number of stored containers (absent: 0).
const MAILBOX_CONTAINERS_KEY: &str = "mailbox_containers";
/// `meta` key of the number of mailbox entries (absent: 0).
const MAILBOX_ENTRIES_KEY: &str = "mailbox_entries";

/// Maps any redb error to [`StoreError::Backend`].
fn backend(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(BackendError::Redb(error.into()))
}

/// A counter table: per-device number of prekeys or mailbox entries.
type Counts<'txn> = Table<'txn, &'static [u8; 16], u64>;

/// A device's counter (0 if absent).
fn read_count(
    table: &impl ReadableTable<&'static [u8; 16], u64>,
    device: &DeviceIdBytes,
) -> Result<u64, StoreError> {
    Ok(table
        .get(device)
        .map_err(backend)?
        .map_or(0, |count| count.value()))
}

/// Sets a device's counter, removing the row at 0 so counters do not pile up.
fn write_count(
    table: &mut Counts<'_>,
    device: &DeviceIdBytes,
    count: u64,
) -> Result<(), StoreError> {
    if count == 0 {
        table.remove(device).map_err(backend)?;
    } else {
        table.insert(device, count).map_err(backend)?;
    }
    Ok(())
}

/// Converts a stored count to `usize`.
fn to_usize(count: u64) -> Result<usize, StoreError> {
    usize::try_from(count).map_err(|_| StoreError::Corrupt("count does not fit in usize"))
}

/// The durable store: one redb database file. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens the database at `path`, creating the file (and its parent directories)
    /// and all tables if missing, and migrating a schema version 1 or 2 file to
    /// version 3.
    /// Fails with `UnsupportedSchema` if the file holds another schema version,
    /// `Backend` on I/O or database errors (e.g. the file is already open by another
    /// process). The page cache is [`crate::config::DEFAULT_STORE_CACHE_MIB`].
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        Self::open_with_cache(
            path,
            crate::config::DEFAULT_STORE_CACHE_MIB.saturating_mul(1024 * 1024),
        )
    }

    /// [`RedbStore::open`] with a page cache of `cache_bytes` (config
    /// `store_cache_mib`; redb's own default would be 1 GiB).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<RedbStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| {
                StoreError::Backend(BackendError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })
            })?;
        }
        let store = RedbStore {
            db: redb::Builder::new()
                .set_cache_size(cache_bytes)
                .create(path)
                .map_err(backend)?,
        };
        store.write(|txn| {
            txn.open_table(USERS).map_err(backend)?;
            txn.open_table(DEVICES).map_err(backend)?;
            txn.open_table(USER_DEVICES).map_err(backend)?;
            txn.open_table(PREKEYS).map_err(backend)?;
            txn.open_table(PREKEY_EXPIRY).map_err(backend)?;
            txn.open_table(PREKEY_COUNTS).map_err(backend)?;
            txn.open_table(LAST_RESORT_PREKEYS).map_err(backend)?;
            txn.open_table(PUSH_SUBSCRIPTIONS).map_err(backend)?;
            txn.open_table(MAILBOX).map_err(backend)?;
            txn.open_table(MAILBOX_EXPIRY).map_err(backend)?;
            txn.open_table(MAILBOX_COUNTS).map_err(backend)?;
            txn.open_table(MAILBOX_CONTAINERS).map_err(backend)?;
            txn.open_table(MAILBOX_CONTAINER_REFS).map_err(backend)?;
            txn.open_table(MAILBOX_SENDER_BYTES).map_err(backend)?;
            txn.open_table(MAILBOX_SENDER_ENTRIES).map_err(backend)?;
            txn.open_table(ROOMS).map_err(backend)?;
            let mut meta = txn.open_table(META).map_err(backend)?;
            let version = meta
                .get(SCHEMA_VERSION_KEY)
                .map_err(backend)?
                .map(|v| v.value());
            match version {
                None => {}
                Some(SCHEMA_VERSION) => return Ok(()),
                Some(old @ (1 | 2)) => {
                    drop(meta);
                    if old == 1 {
                        migrate::v1_to_v2(txn)?;
                    }
                    migrate::v2_to_v3(txn)?;
                    meta = txn.open_table(META).map_err(backend)?;
                }
                Some(found) => {
                    return Err(StoreError::UnsupportedSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)
                .map_err(backend)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` in a write transaction: commits (durably) if it returns `Ok`, aborts
    /// otherwise, so a failed operation leaves no trace.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_with(Durability::Immediate, f)
    }

    /// [`Self::write`] for an operation a restart may repeat without harm: commits
    /// without waiting for the disk (see the module docs).
    fn write_forgetting<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_with(Durability::None, f)
    }

    fn write_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        // Refused only for a transaction that made or deleted a persistent savepoint,
        // which this one has not.
        txn.set_durability(durability).map_err(backend)?;
        match f(&txn) {
            Ok(value) => {
                txn.commit().map_err(backend)?;
                Ok(value)
            }
            Err(error) => {
                // An abort failure changes nothing: the transaction was not committed
                // and the operation's own error is the one to report.
                let _ = txn.abort();
                Err(error)
            }
        }
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&self.db.begin_read().map_err(backend)?)
    }
}

impl Store for RedbStore {
    fn user_key(&self, user_id: &UserIdBytes) -> Result<Option<[u8; 32]>, StoreError> {
        self.read(|txn| {
            let users = txn.open_table(USERS).map_err(backend)?;
            let key = users.get(user_id).map_err(backend)?;
            key.map(|key| decode_user_key(key.value())).transpose()
        })
    }

    fn register_device(
        &self,
        user_key: &[u8; 32],
        device: &DeviceRecord,
        max_devices: usize,
    ) -> Result<RegisterOutcome, StoreError> {
        self.write(|txn| directory::register(txn, user_key, device, max_devices))
    }

    fn device(&self, device_id: &DeviceIdBytes) -> Result<Option<DeviceRecord>, StoreError> {
        self.read(|txn| {
            let devices = txn.open_table(DEVICES).map_err(backend)?;
            let record = devices.get(device_id).map_err(backend)?;
            record
                .map(|record| decode_device(device_id, record.value()))
                .transpose()
        })
    }

    fn user_devices(&self, user_id: &UserIdBytes) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|txn| directory::user_devices(txn, user_id))
    }

    fn add_prekeys(
        &self,
        device_id: &DeviceIdBytes,
        prekeys: &[StoredPrekey],
        max_held: usize,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        self.write(|txn| directory::add_prekeys(txn, device_id, prekeys, max_held, now_ms))
    }

    fn set_last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        prekey: Option<&StoredPrekey>,
    ) -> Result<(), StoreError> {
        self.write(|txn| directory::set_last_resort(txn, device_id, prekey))
    }

    fn last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        now_ms: u64,
    ) -> Result<Option<StoredPrekey>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(LAST_RESORT_PREKEYS).map_err(backend)?;
            let value = table.get(device_id).map_err(backend)?;
            let prekey = value.map(|v| decode_last_resort(v.value())).transpose()?;
            Ok(prekey.filter(|p| p.expires_at_ms > now_ms))
        })
    }

    fn prekey_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError> {
        self.read(|txn| {
            let counts = txn.open_table(PREKEY_COUNTS).map_err(backend)?;
            to_usize(read_count(&counts, device_id)?)
        })
    }

    fn take_prekeys(
        &self,
        device_ids: &[DeviceIdBytes],
        now_ms: u64,
    ) -> Result<Vec<TakenPrekey>, StoreError> {
        self.write(|txn| directory::take_prekeys(txn, device_ids, now_ms))
    }

    fn mailbox_store(
        &self,
        new: &NewContainer<'_>,
        quota: &MailboxQuota,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        self.write(|txn| mailbox::store(txn, new, quota))
    }

    fn mailbox_list(
        &self,
        device_id: &DeviceIdBytes,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.read(|txn| mailbox::list(txn, device_id, after_id, limit))
    }

    fn mailbox_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError> {
        self.read(|txn| {
            let counts = txn.open_table(MAILBOX_COUNTS).map_err(backend)?;
            to_usize(read_count(&counts, device_id)?)
        })
    }

    fn mailbox_count_from(
        &self,
        device_id: &DeviceIdBytes,
        sender: &UserIdBytes,
    ) -> Result<usize, StoreError> {
        self.read(|txn| mailbox::count_from(txn, device_id, sender))
    }

    fn mailbox_ack(
        &self,
        device_id: &DeviceIdBytes,
        mailbox_ids: &[u64],
    ) -> Result<usize, StoreError> {
        self.write_forgetting(|txn| mailbox::ack(txn, device_id, mailbox_ids))
    }

    fn mailbox_expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.write_forgetting(|txn| mailbox::expire(txn, now_ms))
    }

    fn sync(&self) -> Result<(), StoreError> {
        // An empty durable commit writes the state of every commit before it.
        self.write(|_| Ok(()))
    }

    fn mailbox_usage(&self) -> Result<MailboxUsage, StoreError> {
        self.read(mailbox::usage)
    }

    fn mailbox_sender_bytes(&self, sender: &UserIdBytes) -> Result<u64, StoreError> {
        self.read(|txn| mailbox::sender_bytes(txn, sender))
    }

    fn room(&self, routing_id: &RoutingIdBytes) -> Result<Option<RoomRecord>, StoreError> {
        self.read(|txn| {
            let rooms = txn.open_table(ROOMS).map_err(backend)?;
            let record = rooms.get(routing_id).map_err(backend)?;
            record.map(|record| decode_room(record.value())).transpose()
        })
    }

    fn put_room(&self, routing_id: &RoutingIdBytes, record: &RoomRecord) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut rooms = txn.open_table(ROOMS).map_err(backend)?;
            rooms
                .insert(routing_id, encode_room(record).as_slice())
                .map_err(backend)?;
            Ok(())
        })
    }

    fn delete_room(&self, routing_id: &RoutingIdBytes) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut rooms = txn.open_table(ROOMS).map_err(backend)?;
            rooms.remove(routing_id).map_err(backend)?;
            Ok(())
        })
    }

    /// Scans every room record: the table holds only rooms opened recently or still
    /// live, and the sweep runs rarely.
    fn expire_rooms(
        &self,
        cutoff_ms: u64,
        is_live: &dyn Fn(&RoutingIdBytes) -> bool,
    ) -> Result<usize, StoreError> {
        self.write(|txn| {
            let mut rooms = txn.open_table(ROOMS).map_err(backend)?;
            let mut stale = Vec::new();
            for row in rooms.iter().map_err(backend)? {
                let (key, value) = row.map_err(backend)?;
                let routing_id = *key.value();
                if decode_room(value.value())?.updated_at_ms < cutoff_ms && !is_live(&routing_id) {
                    stale.push(routing_id);
                }
            }
            for routing_id in &stale {
                rooms.remove(routing_id).map_err(backend)?;
            }
            Ok(stale.len())
        })
    }

    fn set_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError> {
        self.write(|txn| push::set(txn, device_id, subscription))
    }

    fn push_subscription(
        &self,
        device_id: &DeviceIdBytes,
    ) -> Result<Option<PushSubscription>, StoreError> {
        self.read(|txn| push::get(txn, device_id))
    }

    fn clear_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        only_endpoint: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.write(|txn| push::clear(txn, device_id, only_endpoint))
    }
}
