//! Durable state: users, devices, prekeys, mailbox and room records, and devices'
//! Web Push subscriptions.
//!
//! [`Store`] is synchronous: every method is one transaction that is durable when it
//! returns `Ok` (the server acknowledges a request only afterwards). The async server
//! calls it from `spawn_blocking`. Three implementations, held to one conformance
//! suite:
//!
//! * [`RedbStore`]: the default, an embedded [redb](https://docs.rs/redb) database
//!   file. Each write commits with immediate durability (fsync), so a `kill -9` loses
//!   nothing that was acknowledged.
//! * [`PgStore`]: PostgreSQL, shared by the nodes of a cluster (see [`postgres`]).
//! * [`MemoryStore`]: the same semantics in memory, for tests.
//!
//! The store holds only what the threat model allows the server to know: hashed user
//! ids, public keys, certificates, signed prekeys, opaque containers, routing ids,
//! room-auth public keys and the push subscriptions devices registered (whose
//! endpoints and secrets `Debug` never prints in full: see [`PushSubscription`]).
//!
//! A container sent to many devices is stored once; each recipient gets a mailbox
//! entry referring to it, and the container goes with its last entry. Its bytes count
//! once against its sending user and the whole mailbox ([`MailboxQuota`]), checked in
//! the transaction that stores it. The entries one sending user holds in one device's
//! mailbox are bounded too, so that one sender cannot fill a victim's mailbox and shut
//! everyone else out.

pub mod cluster;
#[cfg(test)]
mod conformance;
mod memory;
pub mod postgres;
mod push_subscription;
mod redb_store;

pub use cluster::{
    ClusterStore, Fence, MailboxSignal, NodeAddress, NodeId, NodeInfo, OwnerLease, RoomClaim,
};
pub use memory::MemoryStore;
pub use postgres::{PgOptions, PgStore};
pub use push_subscription::{MAX_PUSH_ENDPOINT_BYTES, PushSubscription};
pub use redb_store::RedbStore;

/// A hashed user id (SHA-256 of the normalized username).
pub type UserIdBytes = [u8; 32];
/// A random device id.
pub type DeviceIdBytes = [u8; 16];
/// A room's routing id (SHA-256 of the meeting id).
pub type RoutingIdBytes = [u8; 32];

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Owner.
    pub user_id: UserIdBytes,
    /// The device.
    pub device_id: DeviceIdBytes,
    /// The serialized, verified `DeviceCertificate`.
    pub certificate: Vec<u8>,
}

/// A one-time or last-resort prekey held by the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrekey {
    /// Id chosen by the owning device (unique per device).
    pub prekey_id: u64,
    /// Expiry from the signed body; expired prekeys are never handed out.
    pub expires_at_ms: u64,
    /// The serialized, verified `SignedPrekey`.
    pub signed: Vec<u8>,
}

/// The result of taking one prekey of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenPrekey {
    /// The device asked for.
    pub device_id: DeviceIdBytes,
    /// The prekey, now deleted from the store; `None` if the device had none left.
    pub prekey: Option<StoredPrekey>,
    /// Unexpired prekeys the device still has after this take.
    pub remaining: usize,
}

/// What a successful registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// First device of a new user: the user key is now pinned.
    NewUser,
    /// A new device of a known user (same key).
    NewDevice,
    /// This exact device and certificate were registered before (idempotent retry).
    AlreadyRegistered,
}

/// A mailbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    /// Store-wide, strictly increasing id.
    pub mailbox_id: u64,
    /// The serialized container.
    pub container: Vec<u8>,
    /// When the server stored it.
    pub stored_at_ms: u64,
    /// When the sweep deletes it.
    pub expires_at_ms: u64,
}

/// A container to store for its recipients ([`Store::mailbox_store`]).
#[derive(Debug, Clone, Copy)]
pub struct NewContainer<'a> {
    /// The sending user: the container's bytes count against its quota.
    pub sender: &'a UserIdBytes,
    /// Registered recipient devices (the caller checks); a device listed twice gets
    /// two entries.
    pub recipients: &'a [DeviceIdBytes],
    /// The serialized container, stored once for all recipients.
    pub container: &'a [u8],
    /// When the server stored it.
    pub stored_at_ms: u64,
    /// When the sweep deletes its entries.
    pub expires_at_ms: u64,
}

/// Limits [`Store::mailbox_store`] checks inside its transaction, so that concurrent
/// sends cannot overshoot them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxQuota {
    /// Entries one device may have waiting; a recipient at the limit gets `Full`.
    pub max_per_device: usize,
    /// Entries one sending user may have waiting in one device's mailbox; a recipient
    /// holding that many from this sender gets `SenderFull`.
    pub max_per_sender_per_device: usize,
    /// Bytes of stored containers attributed to one sender.
    pub max_sender_bytes: u64,
    /// Bytes of all stored containers.
    pub max_total_bytes: u64,
}

impl MailboxQuota {
    /// Decides, for each recipient in order, whether it gets an entry (`None`) or why
    /// not (`Full`, `SenderFull`). `held` gives a device's entries and its entries from
    /// this sender before the call; it is asked once per distinct device, and a device
    /// listed twice fills up within the call. Every backend decides with this.
    pub fn verdicts<E>(
        &self,
        recipients: &[DeviceIdBytes],
        mut held: impl FnMut(&DeviceIdBytes) -> Result<(usize, usize), E>,
    ) -> Result<Vec<Option<MailboxPut>>, E> {
        let mut counts: std::collections::BTreeMap<DeviceIdBytes, (usize, usize)> =
            std::collections::BTreeMap::new();
        let mut verdicts = Vec::with_capacity(recipients.len());
        for device in recipients {
            let (all, from_sender) = match counts.get(device) {
                Some(counts) => *counts,
                None => held(device)?,
            };
            let verdict = if all >= self.max_per_device {
                Some(MailboxPut::Full)
            } else if from_sender >= self.max_per_sender_per_device {
                Some(MailboxPut::SenderFull)
            } else {
                None
            };
            let stored = usize::from(verdict.is_none());
            counts.insert(
                *device,
                (
                    all.saturating_add(stored),
                    from_sender.saturating_add(stored),
                ),
            );
            verdicts.push(verdict);
        }
        Ok(verdicts)
    }

    /// Checks that a container of `adding` bytes fits: its sender holds `sender_stored`
    /// bytes (`SenderQuota` above `max_sender_bytes`), the whole mailbox `total_stored`
    /// (`MailboxBudget` above `max_total_bytes`). Every backend checks with this.
    pub fn check_bytes(
        &self,
        sender_stored: u64,
        total_stored: u64,
        adding: u64,
    ) -> Result<(), StoreError> {
        if sender_stored.saturating_add(adding) > self.max_sender_bytes {
            return Err(StoreError::SenderQuota {
                stored: sender_stored,
                adding,
                limit: self.max_sender_bytes,
            });
        }
        if total_stored.saturating_add(adding) > self.max_total_bytes {
            return Err(StoreError::MailboxBudget {
                stored: total_stored,
                adding,
                limit: self.max_total_bytes,
            });
        }
        Ok(())
    }

    /// Only the per-device entry limit; no per-sender or byte limits.
    #[must_use]
    pub const fn entries_only(max_per_device: usize) -> Self {
        MailboxQuota {
            max_per_device,
            max_per_sender_per_device: usize::MAX,
            max_sender_bytes: u64::MAX,
            max_total_bytes: u64::MAX,
        }
    }
}

/// The sender attributed to containers stored through [`Store::mailbox_put`], which
/// names none, and to containers migrated from a database that did not record them.
pub const UNATTRIBUTED_SENDER: UserIdBytes = [0; 32];

/// What happened to one recipient of [`Store::mailbox_store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxPut {
    /// Stored under this id.
    Stored {
        /// The new entry's id.
        mailbox_id: u64,
    },
    /// The recipient already holds the maximum number of entries; nothing stored.
    Full,
    /// The recipient already holds the maximum number of entries from this sending
    /// user (`max_per_sender_per_device`); nothing stored for it. Other senders can
    /// still reach it.
    SenderFull,
}

/// Most devices a room record names as key leader and successors.
pub const MAX_ROOM_LEADERS: usize = 4;

/// What the mailbox holds, each container counted once (see [`Store::mailbox_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxUsage {
    /// Bytes of stored containers (each stored once, however many recipients).
    pub bytes: u64,
    /// Stored containers.
    pub containers: u64,
    /// Entries (one per recipient of each container still waiting).
    pub entries: u64,
}

/// The durable record of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Current epoch.
    pub epoch: u64,
    /// Room-auth public key of that epoch.
    pub auth_public: [u8; 32],
    /// Last open or rotation.
    pub updated_at_ms: u64,
    /// The devices that may rotate the room, in succession order: the key leader
    /// first (at most [`MAX_ROOM_LEADERS`]). Empty in records written before leaders
    /// were recorded.
    pub leaders: Vec<DeviceIdBytes>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The user id is pinned to another user signing key (trust on first use).
    #[error("user id is already registered with a different user signing key")]
    UserKeyMismatch,
    /// The device id is registered with a different certificate.
    #[error("device id is already registered with a different certificate")]
    DeviceExists,
    /// The user already has the maximum number of devices.
    #[error("user already has {limit} devices (max_devices_per_user)")]
    TooManyDevices {
        /// The limit.
        limit: usize,
    },
    /// The upload would take the device above the prekey limit; nothing was stored.
    #[error(
        "device would hold {would_hold} prekeys, above the limit of {limit} (max_prekeys_per_device)"
    )]
    TooManyPrekeys {
        /// Count after the upload.
        would_hold: usize,
        /// The limit.
        limit: usize,
    },
    /// Storing the container would take its sender above its byte quota; nothing was
    /// stored.
    #[error(
        "this user's stored containers hold {stored} bytes; {adding} more would exceed \
         {limit} (max_mailbox_bytes_per_sender)"
    )]
    SenderQuota {
        /// Bytes the sender has stored.
        stored: u64,
        /// Size of the refused container.
        adding: u64,
        /// The quota.
        limit: u64,
    },
    /// Storing the container would take the whole mailbox above its byte budget;
    /// nothing was stored.
    #[error(
        "the server's mailbox holds {stored} bytes; {adding} more would exceed {limit} \
         (max_mailbox_bytes)"
    )]
    MailboxBudget {
        /// Bytes stored in all.
        stored: u64,
        /// Size of the refused container.
        adding: u64,
        /// The budget.
        limit: u64,
    },
    /// The device is not registered.
    #[error("unknown device")]
    UnknownDevice,
    /// The backend does not implement this operation (a test wrapper that predates it).
    #[error("the store does not support {0}")]
    Unsupported(&'static str),
    /// The database file has a layout this version cannot read (written by a newer
    /// server, or an older one this version cannot migrate).
    #[error(
        "the database has schema version {found}; this server reads version {supported} \
         (and migrates older versions it knows)"
    )]
    UnsupportedSchema {
        /// The version in the file.
        found: u64,
        /// The version this code writes.
        supported: u64,
    },
    /// This node's lease is not alive (it could not renew in time): it must not claim
    /// rooms until a heartbeat succeeds.
    #[error("this node's lease has expired; it cannot claim rooms until it renews")]
    LeaseExpired,
    /// Stored bytes failed to decode: the database is corrupt or from another version.
    #[error("corrupt store record: {0}")]
    Corrupt(&'static str),
    /// The storage backend failed (I/O, database, network). The operation did not
    /// take effect.
    #[error("storage backend failed: {0}")]
    Backend(#[source] BackendError),
}

/// What failed underneath a [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The redb database failed (I/O, or the file is locked by another process).
    #[error("{0}")]
    Redb(#[source] redb::Error),
    /// The database's directory cannot be created.
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No connection to PostgreSQL could be opened (refused, unreachable, TLS or
    /// authentication failure). Nothing was done; it is retried on the next operation.
    #[error(
        "cannot connect to PostgreSQL: {0}; check that it runs, the store URL (host, \
         port, user, password, database) and, with TLS, store_ca_file"
    )]
    PostgresUnreachable(#[source] tokio_postgres::Error),
    /// No pooled connection became free in time: PostgreSQL is slow or the pool
    /// (`store_pool_size`) is too small for the load.
    #[error("no PostgreSQL connection became free within {0:?}")]
    PoolTimeout(std::time::Duration),
    /// PostgreSQL did not answer a connection attempt in time.
    #[error("PostgreSQL did not answer within {0:?}; check that it runs and is reachable")]
    ConnectTimeout(std::time::Duration),
    /// The connection pool is closed (the store is shutting down).
    #[error("the PostgreSQL connection pool is closed")]
    PoolClosed,
    /// PostgreSQL failed a statement or the connection broke during it; the
    /// transaction was rolled back.
    #[error("PostgreSQL: {0}")]
    Postgres(#[source] tokio_postgres::Error),
    /// The store URL is not a valid PostgreSQL connection string.
    #[error("invalid PostgreSQL URL (expected postgres://user:password@host:port/database): {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// The CA file for TLS to PostgreSQL cannot be read.
    #[error("cannot read store_ca_file {}: {source}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No certificate to verify PostgreSQL's TLS certificate with: the CA file holds
    /// none, or the system trust store is empty.
    #[error(
        "no usable CA certificate to verify PostgreSQL's TLS certificate; set store_ca_file \
         to its CA (PEM), or install the system's ca-certificates"
    )]
    NoTrustAnchors,
    /// The store's I/O thread could not be started.
    #[error("cannot start the store's I/O thread: {0}")]
    Runtime(#[source] std::io::Error),
    /// PostgreSQL closed a connection the store keeps open (the mailbox listener's);
    /// it is reopened by itself.
    #[error("PostgreSQL closed the connection")]
    ConnectionClosed,
}

/// The server's durable state. Every method is atomic and durable on `Ok`.
pub trait Store: Send + Sync + 'static {
    /// Checks that the store answers (for `/readyz`). An embedded store always does.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The pinned user signing key of `user_id`, if the user is known.
    fn user_key(&self, user_id: &UserIdBytes) -> Result<Option<[u8; 32]>, StoreError>;

    /// Registers `device` for its user, pinning `user_key` if the user is new.
    /// Fails with `UserKeyMismatch` if the user is pinned to another key,
    /// `DeviceExists` if the device id holds another certificate, and `TooManyDevices`
    /// if the user already has `max_devices` devices.
    fn register_device(
        &self,
        user_key: &[u8; 32],
        device: &DeviceRecord,
        max_devices: usize,
    ) -> Result<RegisterOutcome, StoreError>;

    /// A registered device.
    fn device(&self, device_id: &DeviceIdBytes) -> Result<Option<DeviceRecord>, StoreError>;

    /// All devices of a user, ordered by device id.
    fn user_devices(&self, user_id: &UserIdBytes) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Adds prekeys to a registered device's pool, after deleting the device's prekeys
    /// that expired at `now_ms` (so expired prekeys never block an upload). A prekey id
    /// already held is replaced. All or nothing: fails with `TooManyPrekeys` if the pool
    /// would exceed `max_held`, `UnknownDevice` if the device is not registered. Returns
    /// the count held.
    fn add_prekeys(
        &self,
        device_id: &DeviceIdBytes,
        prekeys: &[StoredPrekey],
        max_held: usize,
        now_ms: u64,
    ) -> Result<usize, StoreError>;

    /// Deletes every prekey of a device (it lost their private halves). The default
    /// purges as if every prekey had expired.
    fn clear_prekeys(&self, device_id: &DeviceIdBytes) -> Result<(), StoreError> {
        self.add_prekeys(device_id, &[], usize::MAX, u64::MAX)
            .map(|_| ())
    }

    /// Sets (`Some`, replacing the one held) or deletes (`None`) a registered device's
    /// last-resort prekey: the one [`Store::last_resort_prekey`] hands out when the
    /// device has no one-time prekey left. Fails with `UnknownDevice` if the device is
    /// not registered.
    ///
    /// Every backend must implement this; the default, for wrappers written before it
    /// existed, fails with `Unsupported`.
    fn set_last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        prekey: Option<&StoredPrekey>,
    ) -> Result<(), StoreError> {
        let _ = (device_id, prekey);
        Err(StoreError::Unsupported("set_last_resort_prekey"))
    }

    /// A device's last-resort prekey if it has one unexpired at `now_ms`. Never
    /// deleted by reading it (it is replaced by the next
    /// [`Store::set_last_resort_prekey`]). The default, for wrappers written before it
    /// existed, has none.
    fn last_resort_prekey(
        &self,
        device_id: &DeviceIdBytes,
        now_ms: u64,
    ) -> Result<Option<StoredPrekey>, StoreError> {
        let _ = (device_id, now_ms);
        Ok(None)
    }

    /// Prekeys a device holds (expired ones included until taken or purged).
    fn prekey_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError>;

    /// In one transaction, removes and returns one unexpired prekey (lowest id first)
    /// of each listed device, deleting all of that device's expired prekeys on the way
    /// (so `remaining` equals its `prekey_count` afterwards). A device listed `n` times
    /// gives up to `n` prekeys. Two concurrent callers never receive the same prekey.
    /// The result has one entry per input, in order.
    fn take_prekeys(
        &self,
        device_ids: &[DeviceIdBytes],
        now_ms: u64,
    ) -> Result<Vec<TakenPrekey>, StoreError>;

    /// Stores a container once and gives every recipient an entry referring to it, in
    /// one transaction, each entry under a new id. A recipient already holding
    /// `quota.max_per_device` entries gets `Full`; one already holding
    /// `quota.max_per_sender_per_device` entries from `new.sender` gets `SenderFull`
    /// (both counted within the call too: a device listed twice fills up). If at least one entry is stored, the
    /// container's bytes count once against its sender (`SenderQuota` if that would
    /// exceed `quota.max_sender_bytes`) and against the whole mailbox (`MailboxBudget`
    /// above `quota.max_total_bytes`); refused, nothing is stored. The container is
    /// deleted with its last entry (acknowledged or expired), which gives its bytes
    /// back. One result per recipient, in order.
    ///
    /// Every backend must implement this. The default, for wrappers written before it
    /// existed, forwards to [`Store::mailbox_put`] and enforces no byte or per-sender limit.
    fn mailbox_store(
        &self,
        new: &NewContainer<'_>,
        quota: &MailboxQuota,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        self.mailbox_put(
            new.recipients,
            new.container,
            new.stored_at_ms,
            new.expires_at_ms,
            quota.max_per_device,
        )
    }

    /// [`Store::mailbox_store`] for the [`UNATTRIBUTED_SENDER`] with only the
    /// per-device entry limit (no byte limits).
    fn mailbox_put(
        &self,
        recipients: &[DeviceIdBytes],
        container: &[u8],
        stored_at_ms: u64,
        expires_at_ms: u64,
        max_per_device: usize,
    ) -> Result<Vec<MailboxPut>, StoreError> {
        let new = NewContainer {
            sender: &UNATTRIBUTED_SENDER,
            recipients,
            container,
            stored_at_ms,
            expires_at_ms,
        };
        self.mailbox_store(&new, &MailboxQuota::entries_only(max_per_device))
    }

    /// Up to `limit` entries of a device with id greater than `after_id`, ascending.
    fn mailbox_list(
        &self,
        device_id: &DeviceIdBytes,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError>;

    /// Entries waiting for a device.
    fn mailbox_count(&self, device_id: &DeviceIdBytes) -> Result<usize, StoreError>;

    /// Entries waiting for a device that `sender` stored.
    fn mailbox_count_from(
        &self,
        device_id: &DeviceIdBytes,
        sender: &UserIdBytes,
    ) -> Result<usize, StoreError> {
        let _ = (device_id, sender);
        Err(StoreError::Unsupported("mailbox_count_from"))
    }

    /// Deletes the listed entries of this device (ids of other devices are ignored).
    /// Returns how many were deleted.
    fn mailbox_ack(
        &self,
        device_id: &DeviceIdBytes,
        mailbox_ids: &[u64],
    ) -> Result<usize, StoreError>;

    /// Deletes every entry with `expires_at_ms <= now_ms`; returns how many.
    fn mailbox_expire(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Makes every committed write durable. Acknowledgements and the expiry sweep may
    /// commit without waiting for the disk (a crash only brings entries back); the
    /// server calls this as it shuts down so that a clean restart does not. A store
    /// whose every commit is durable (or is its own database server's concern) has
    /// nothing to do.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// What the mailbox holds: bytes and number of stored containers (each once) and
    /// of entries.
    fn mailbox_usage(&self) -> Result<MailboxUsage, StoreError> {
        Err(StoreError::Unsupported("mailbox_usage"))
    }

    /// Bytes of stored containers attributed to `sender` (each container once).
    fn mailbox_sender_bytes(&self, sender: &UserIdBytes) -> Result<u64, StoreError> {
        let _ = sender;
        Err(StoreError::Unsupported("mailbox_sender_bytes"))
    }

    /// A room's record.
    fn room(&self, routing_id: &RoutingIdBytes) -> Result<Option<RoomRecord>, StoreError>;

    /// Creates or replaces a room's record.
    fn put_room(&self, routing_id: &RoutingIdBytes, record: &RoomRecord) -> Result<(), StoreError>;

    /// Deletes a room's record (no error if absent).
    fn delete_room(&self, routing_id: &RoutingIdBytes) -> Result<(), StoreError>;

    /// Deletes rooms updated before `cutoff_ms` for which `is_live` returns false;
    /// returns how many.
    fn expire_rooms(
        &self,
        cutoff_ms: u64,
        is_live: &dyn Fn(&RoutingIdBytes) -> bool,
    ) -> Result<usize, StoreError>;

    /// Stores a registered device's Web Push subscription, replacing the one it held
    /// (a device has at most one). The caller has checked the endpoint (https, at most
    /// [`MAX_PUSH_ENDPOINT_BYTES`], allowed push service); the store keeps it as given.
    /// Fails with `UnknownDevice` if the device is not registered.
    fn set_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError>;

    /// A device's Web Push subscription, if it has one.
    fn push_subscription(
        &self,
        device_id: &DeviceIdBytes,
    ) -> Result<Option<PushSubscription>, StoreError>;

    /// Deletes a device's Web Push subscription. With `only_endpoint`, deletes it only
    /// if its endpoint is exactly that one, so that a push service's "gone" for an old
    /// endpoint never deletes the subscription the device replaced it with meanwhile.
    /// Returns whether one was deleted (`false` for an unknown device).
    fn clear_push_subscription(
        &self,
        device_id: &DeviceIdBytes,
        only_endpoint: Option<&str>,
    ) -> Result<bool, StoreError>;
}
