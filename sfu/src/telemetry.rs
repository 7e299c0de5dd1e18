//! Metric names and the hot-path counter batching.
//!
//! All metrics go through the [`metrics`] facade; the binary installs a Prometheus
//! recorder (see `metrics_http`). Names are constants here so dashboards and tests
//! agree with the code. [`describe`] registers help texts.
//!
//! The media plane counts into a per-connection [`MediaCounters`] and flushes to the
//! shared counters every [`FLUSH_EVERY`] datagrams (and on every drop), so the hot path
//! does not contend on shared atomics per datagram.

use metrics::{Counter, counter, describe_counter, describe_gauge, describe_histogram};

/// Open QUIC connections (gauge).
pub const CONNECTIONS: &str = "conclave_connections";
/// Connections accepted (counter).
pub const CONNECTIONS_ACCEPTED: &str = "conclave_connections_accepted_total";
/// Connections refused, label `reason` (counter).
pub const CONNECTIONS_REFUSED: &str = "conclave_connections_refused_total";
/// Live rooms (gauge).
pub const ROOMS: &str = "conclave_rooms";
/// Room memberships across all rooms (gauge).
pub const ROOM_MEMBERS: &str = "conclave_room_members";
/// Members evicted for not proving a new epoch (counter).
pub const ROOM_EVICTIONS: &str = "conclave_room_evictions_total";
/// Datagrams received (counter).
pub const DATAGRAMS_IN: &str = "conclave_datagrams_received_total";
/// Datagram bytes received (counter).
pub const BYTES_IN: &str = "conclave_datagram_bytes_received_total";
/// Datagrams forwarded (counter).
pub const DATAGRAMS_OUT: &str = "conclave_datagrams_forwarded_total";
/// Datagram bytes forwarded (counter).
pub const BYTES_OUT: &str = "conclave_datagram_bytes_forwarded_total";
/// Datagrams dropped, label `reason` (counter).
pub const DATAGRAMS_DROPPED: &str = "conclave_datagrams_dropped_total";
/// Mailbox entries stored, one per recipient (the container itself is stored once)
/// (counter).
pub const CONTAINERS_STORED: &str = "conclave_containers_stored_total";
/// Push wake-ups a push service accepted (counter).
pub const PUSH_SENT: &str = "conclave_push_sent_total";
/// Push wake-ups that failed for good, by reason (counter): `refused` (a 4xx other than
/// 404/410), `unreachable` (out of attempts), `not_allowed` (endpoint no longer on the
/// allow-list), `bad_subscription`.
pub const PUSH_FAILED: &str = "conclave_push_failed_total";
/// Wake-ups not scheduled, by reason (counter): `queue_full`, `too_many_devices`.
pub const PUSH_DROPPED: &str = "conclave_push_dropped_total";
/// Wake-ups not needed when due, by reason (counter): `no_subscription`,
/// `nothing_waiting` (fetched meanwhile).
pub const PUSH_SKIPPED: &str = "conclave_push_skipped_total";
/// Containers folded into a wake-up already pending (the per-device rate limit)
/// (counter).
pub const PUSH_FOLDED: &str = "conclave_push_folded_total";
/// Retries after 429, 5xx or a failed connection (counter).
pub const PUSH_RETRIES: &str = "conclave_push_retries_total";
/// Subscriptions deleted because the push service said they are gone (404/410)
/// (counter).
pub const PUSH_SUBSCRIPTIONS_DROPPED: &str = "conclave_push_subscriptions_dropped_total";
/// High-urgency wake-ups sent at normal urgency because the sending user spent its
/// budget for that device (counter).
pub const PUSH_URGENCY_DOWNGRADED: &str = "conclave_push_urgency_downgraded_total";
/// Devices the push scheduler tracks (gauge).
pub const PUSH_TRACKED_DEVICES: &str = "conclave_push_tracked_devices";
/// Containers pushed to a connected device (counter).
pub const CONTAINERS_DELIVERED: &str = "conclave_containers_delivered_total";
/// Cluster mode: 1 while this node holds a live lease, else 0 (gauge).
pub const CLUSTER_LEASE_HELD: &str = "conclave_cluster_lease_held";
/// Cluster mode: leases lost (the node told its clients to move) (counter).
pub const CLUSTER_LEASES_LOST: &str = "conclave_cluster_leases_lost_total";
/// Cluster mode: lease heartbeats that failed (counter).
pub const CLUSTER_HEARTBEAT_FAILURES: &str = "conclave_cluster_heartbeat_failures_total";
/// Cluster mode: room claims made in the store, label `outcome`: `owned`,
/// `redirected` (another live node owns it), `owner_silent` (its owner stopped
/// renewing: retry later), `no_lease` (this node holds none), `error` (counter).
pub const CLUSTER_ROOM_CLAIMS: &str = "conclave_cluster_room_claims_total";
/// Shards serving this node's port, each a thread with its rooms (gauge).
pub const SHARDS: &str = "conclave_shards";
/// Room opens and joins sent to the room's shard of this node (counter).
pub const SHARD_REDIRECTS: &str = "conclave_shard_redirects_total";
/// Cluster mode: rooms this node owns (gauge).
pub const CLUSTER_ROOMS_OWNED: &str = "conclave_cluster_rooms_owned";
/// Mailbox signals from the cluster's store (cluster mode; this node's own writes
/// included), label `kind`: `new_mail` or `rescan` (counter).
pub const MAILBOX_SIGNALS: &str = "conclave_cluster_mailbox_signals_total";
/// Containers acknowledged and deleted (counter).
pub const CONTAINERS_ACKED: &str = "conclave_containers_acked_total";
/// Containers deleted by the ttl sweep (counter).
pub const CONTAINERS_EXPIRED: &str = "conclave_containers_expired_total";
/// Sends refused by a mailbox limit, label `reason`: `sender_quota` or `budget`
/// (refused whole), `sender_per_device` (some or all recipients already hold
/// `max_mailbox_entries_per_sender_per_device` entries from this sender) (counter).
pub const MAILBOX_REFUSED: &str = "conclave_mailbox_refused_total";
/// Bytes of stored containers, each counted once; set by the sweep (gauge).
pub const MAILBOX_BYTES: &str = "conclave_mailbox_bytes";
/// Opens refused because the device created too many new room records (counter).
pub const ROOM_RECORDS_RATE_LIMITED: &str = "conclave_room_records_rate_limited_total";
/// Registrations refused by the per-address rate limit (counter).
pub const REGISTRATIONS_RATE_LIMITED: &str = "conclave_registrations_rate_limited_total";
/// Prekeys withheld by the pop rate limit, label `scope`: `pair` (this requester and
/// target) or `target` (all requesters of this target) (counter).
pub const PREKEYS_RATE_LIMITED: &str = "conclave_prekeys_rate_limited_total";
/// Connections cut for not reading their events, label `bound`: `frames` or `bytes`
/// (counter).
pub const SLOW_CLIENTS_CUT: &str = "conclave_slow_clients_cut_total";
/// Prekeys handed out (counter).
pub const PREKEYS_SERVED: &str = "conclave_prekeys_served_total";
/// Bundle requests for a device with no prekey left (counter).
pub const PREKEYS_EXHAUSTED: &str = "conclave_prekeys_exhausted_total";
/// Last-resort prekeys handed out, for devices with no one-time prekey left or whose
/// one-time prekey was withheld (counter).
pub const PREKEYS_LAST_RESORT_SERVED: &str = "conclave_prekeys_last_resort_served_total";
/// Prekeys uploaded (counter).
pub const PREKEYS_UPLOADED: &str = "conclave_prekeys_uploaded_total";
/// Devices registered (counter).
pub const DEVICES_REGISTERED: &str = "conclave_devices_registered_total";
/// Control requests, labels `kind` and `outcome` (counter).
pub const CONTROL_REQUESTS: &str = "conclave_control_requests_total";
/// Control request latency in seconds, label `kind` (histogram).
pub const CONTROL_REQUEST_SECONDS: &str = "conclave_control_request_seconds";
/// The async runtime's worker threads: the node's CPU capacity in cores (gauge).
pub const WORKER_THREADS: &str = "conclave_worker_threads";
/// Always 1, label `version` (gauge).
pub const BUILD_INFO: &str = "conclave_build_info";
/// 1 while the node drains (after SIGTERM), else 0 (gauge).
pub const DRAINING: &str = "conclave_draining";
/// 1 while the store answers its probe, else 0 (gauge).
pub const STORE_UP: &str = "conclave_store_up";
/// Certificate reloads (SIGHUP), label `outcome`: `ok` or `error` (counter).
pub const TLS_RELOADS: &str = "conclave_tls_reloads_total";

/// Every control request kind, as the `kind` label names it (`malformed` frames are
/// counted apart, with outcome `bad_request`).
pub const REQUEST_KINDS: [&str; 17] = [
    "hello",
    "register",
    "authenticate",
    "upload_prekeys",
    "fetch_bundles",
    "send_container",
    "ack_containers",
    "get_time",
    "open_room",
    "join_room",
    "rotate_room",
    "leave_room",
    "send_room_message",
    "request_keyframe",
    "get_push_key",
    "set_push_subscription",
    "clear_push_subscription",
];

fn describe_push() {
    describe_counter!(PUSH_SENT, "Push wake-ups a push service accepted.");
    describe_counter!(
        PUSH_FAILED,
        "Push wake-ups that failed for good, by reason."
    );
    describe_counter!(
        PUSH_DROPPED,
        "Push wake-ups not scheduled (bounds), by reason."
    );
    describe_counter!(
        PUSH_SKIPPED,
        "Push wake-ups not needed when due, by reason."
    );
    describe_counter!(
        PUSH_FOLDED,
        "Containers folded into a pending wake-up (per-device rate limit)."
    );
    describe_counter!(PUSH_RETRIES, "Push retries after 429, 5xx or no answer.");
    describe_counter!(
        PUSH_URGENCY_DOWNGRADED,
        "High-urgency wake-ups sent at normal urgency (budget or setting)."
    );
    describe_counter!(
        PUSH_SUBSCRIPTIONS_DROPPED,
        "Push subscriptions deleted because the push service said they are gone."
    );
    describe_gauge!(PUSH_TRACKED_DEVICES, "Devices the push scheduler tracks.");
}

/// Registers the push series at zero (only on a node with push configured).
pub fn register_push_at_zero() {
    for name in [
        PUSH_SENT,
        PUSH_FOLDED,
        PUSH_RETRIES,
        PUSH_URGENCY_DOWNGRADED,
    ] {
        counter!(name).absolute(0);
    }
    let labelled: [(&str, &[&str]); 4] = [
        (
            PUSH_FAILED,
            &["refused", "unreachable", "not_allowed", "bad_subscription"],
        ),
        (
            PUSH_DROPPED,
            &["queue_full", "too_many_devices", "sender_budget"],
        ),
        (PUSH_SKIPPED, &["no_subscription", "nothing_waiting"]),
        (PUSH_SUBSCRIPTIONS_DROPPED, &["gone", "refused"]),
    ];
    for (name, values) in labelled {
        for value in values {
            counter!(name, "reason" => *value).absolute(0);
        }
    }
    metrics::gauge!(PUSH_TRACKED_DEVICES).set(0.0);
}

/// Creates every counter and gauge the dashboards and alerts use, at zero (gauges
/// that describe state at their current value), so that an idle node shows flat lines
/// rather than no data and a first event is a visible increase. `cluster`: this node
/// runs in cluster mode (its cluster metrics exist too).
pub fn register_at_zero(cluster: bool) {
    for name in [
        CONNECTIONS_ACCEPTED,
        ROOM_EVICTIONS,
        DATAGRAMS_IN,
        BYTES_IN,
        DATAGRAMS_OUT,
        BYTES_OUT,
        CONTAINERS_STORED,
        CONTAINERS_DELIVERED,
        CONTAINERS_ACKED,
        CONTAINERS_EXPIRED,
        ROOM_RECORDS_RATE_LIMITED,
        REGISTRATIONS_RATE_LIMITED,
        PREKEYS_SERVED,
        PREKEYS_EXHAUSTED,
        PREKEYS_LAST_RESORT_SERVED,
        PREKEYS_UPLOADED,
        DEVICES_REGISTERED,
    ] {
        counter!(name).absolute(0);
    }
    let labelled: [(&str, &str, &[&str]); 5] = [
        (
            CONNECTIONS_REFUSED,
            "reason",
            &["max_connections", "handshake", "draining"],
        ),
        (
            MAILBOX_REFUSED,
            "reason",
            &["sender_quota", "budget", "sender_per_device"],
        ),
        (PREKEYS_RATE_LIMITED, "scope", &["pair", "target"]),
        (SLOW_CLIENTS_CUT, "bound", &["frames", "bytes"]),
        (TLS_RELOADS, "outcome", &["ok", "error"]),
    ];
    for (name, label, values) in labelled {
        for value in values {
            counter!(name, label => *value).absolute(0);
        }
    }
    for reason in DropReason::ALL {
        counter!(DATAGRAMS_DROPPED, "reason" => reason.label()).absolute(0);
    }
    for kind in REQUEST_KINDS {
        for outcome in ["ok", "error"] {
            counter!(CONTROL_REQUESTS, "kind" => kind, "outcome" => outcome).absolute(0);
        }
    }
    counter!(CONTROL_REQUESTS, "kind" => "malformed", "outcome" => "bad_request").absolute(0);
    counter!(SHARD_REDIRECTS).absolute(0);
    for name in [CONNECTIONS, ROOMS, ROOM_MEMBERS, MAILBOX_BYTES, DRAINING] {
        metrics::gauge!(name).increment(0.0);
    }
    metrics::gauge!(STORE_UP).set(1.0);
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    if cluster {
        for name in [CLUSTER_LEASES_LOST, CLUSTER_HEARTBEAT_FAILURES] {
            counter!(name).absolute(0);
        }
        for outcome in ["owned", "redirected", "owner_silent", "no_lease", "error"] {
            counter!(CLUSTER_ROOM_CLAIMS, "outcome" => outcome).absolute(0);
        }
        for kind in ["new_mail", "rescan"] {
            counter!(MAILBOX_SIGNALS, "kind" => kind).absolute(0);
        }
        for name in [CLUSTER_LEASE_HELD, CLUSTER_ROOMS_OWNED] {
            metrics::gauge!(name).increment(0.0);
        }
    }
}

/// Why a datagram was not forwarded (to one receiver, or at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than `max_datagram_bytes`.
    Oversize,
    /// The media header did not decode.
    Malformed,
    /// The sender is not a member of the room its header names.
    NotMember,
    /// Video dropped because the receiver's send buffer is filling.
    CongestionVideo,
    /// Audio dropped because the receiver's send buffer is full.
    CongestionAudio,
    /// Larger than the receiver's path allows.
    TooLargeForReceiver,
    /// The receiver's connection is gone.
    ReceiverGone,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 7] = [
        DropReason::Oversize,
        DropReason::Malformed,
        DropReason::NotMember,
        DropReason::CongestionVideo,
        DropReason::CongestionAudio,
        DropReason::TooLargeForReceiver,
        DropReason::ReceiverGone,
    ];

    /// The `reason` label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::Malformed => "malformed",
            DropReason::NotMember => "not_member",
            DropReason::CongestionVideo => "congestion_video",
            DropReason::CongestionAudio => "congestion_audio",
            DropReason::TooLargeForReceiver => "too_large_for_receiver",
            DropReason::ReceiverGone => "receiver_gone",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Flush the per-connection counters after this many received datagrams.
pub const FLUSH_EVERY: u64 = 64;

/// Per-connection media counters, flushed in batches to the shared metrics.
#[derive(Debug)]
pub struct MediaCounters {
    pending_in: u64,
    pending_in_bytes: u64,
    pending_out: u64,
    pending_out_bytes: u64,
    pending_drops: [u64; DropReason::ALL.len()],
    any_drop: bool,
    in_total: Counter,
    in_bytes: Counter,
    out_total: Counter,
    out_bytes: Counter,
    drops: [Counter; DropReason::ALL.len()],
}

impl Default for MediaCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl MediaCounters {
    /// Counters bound to the global metrics recorder.
    #[must_use]
    pub fn new() -> Self {
        MediaCounters {
            pending_in: 0,
            pending_in_bytes: 0,
            pending_out: 0,
            pending_out_bytes: 0,
            pending_drops: [0; DropReason::ALL.len()],
            any_drop: false,
            in_total: counter!(DATAGRAMS_IN),
            in_bytes: counter!(BYTES_IN),
            out_total: counter!(DATAGRAMS_OUT),
            out_bytes: counter!(BYTES_OUT),
            drops: DropReason::ALL.map(|r| counter!(DATAGRAMS_DROPPED, "reason" => r.label())),
        }
    }

    /// A datagram of `len` bytes arrived.
    pub fn received(&mut self, len: usize) {
        self.pending_in += 1;
        self.pending_in_bytes += len as u64;
    }

    /// A datagram of `len` bytes was queued to one receiver.
    pub fn sent(&mut self, len: usize) {
        self.pending_out += 1;
        self.pending_out_bytes += len as u64;
    }

    /// `n` datagrams were dropped for `reason`.
    pub fn dropped(&mut self, reason: DropReason, n: u64) {
        if let Some(slot) = self.pending_drops.get_mut(reason.index()) {
            *slot += n;
        }
        self.any_drop = true;
    }

    /// Datagrams received since the last flush (for tests and batching).
    #[must_use]
    pub fn pending_received(&self) -> u64 {
        self.pending_in
    }

    /// Pending drops for `reason` (not yet flushed).
    #[must_use]
    pub fn pending_dropped(&self, reason: DropReason) -> u64 {
        self.pending_drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Pending forwarded datagrams (not yet flushed).
    #[must_use]
    pub fn pending_sent(&self) -> u64 {
        self.pending_out
    }

    /// Flushes if a batch is full or a drop happened.
    pub fn maybe_flush(&mut self) {
        if self.any_drop || self.pending_in >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Moves every pending count to the shared metrics.
    pub fn flush(&mut self) {
        self.in_total
            .increment(std::mem::take(&mut self.pending_in));
        self.in_bytes
            .increment(std::mem::take(&mut self.pending_in_bytes));
        self.out_total
            .increment(std::mem::take(&mut self.pending_out));
        self.out_bytes
            .increment(std::mem::take(&mut self.pending_out_bytes));
        for (pending, counter) in self.pending_drops.iter_mut().zip(&self.drops) {
            if *pending > 0 {
                counter.increment(std::mem::take(pending));
            }
        }
        self.any_drop = false;
    }
}

impl Drop for MediaCounters {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Registers help texts for every metric with the installed recorder.
pub fn describe() {
    describe_push();
    describe_gauge!(CONNECTIONS, "Open QUIC connections.");
    describe_counter!(CONNECTIONS_ACCEPTED, "QUIC connections accepted.");
    describe_counter!(CONNECTIONS_REFUSED, "QUIC connections refused, by reason.");
    describe_gauge!(ROOMS, "Live rooms.");
    describe_gauge!(ROOM_MEMBERS, "Room memberships across all rooms.");
    describe_counter!(
        ROOM_EVICTIONS,
        "Members evicted for not proving a new epoch in time."
    );
    describe_counter!(DATAGRAMS_IN, "Media datagrams received.");
    describe_counter!(BYTES_IN, "Media datagram bytes received.");
    describe_counter!(
        DATAGRAMS_OUT,
        "Media datagrams forwarded (one per receiver)."
    );
    describe_counter!(BYTES_OUT, "Media datagram bytes forwarded.");
    describe_counter!(DATAGRAMS_DROPPED, "Media datagrams dropped, by reason.");
    describe_counter!(
        CONTAINERS_STORED,
        "Mailbox entries stored (one per recipient; the container itself once)."
    );
    describe_counter!(
        CONTAINERS_DELIVERED,
        "Containers pushed to connected devices."
    );
    describe_counter!(CONTAINERS_ACKED, "Containers acknowledged and deleted.");
    describe_gauge!(
        CLUSTER_LEASE_HELD,
        "1 while this cluster node holds a live lease, else 0."
    );
    describe_counter!(
        CLUSTER_LEASES_LOST,
        "Cluster leases lost (the node told its clients to move)."
    );
    describe_counter!(
        CLUSTER_HEARTBEAT_FAILURES,
        "Cluster lease heartbeats that failed."
    );
    describe_counter!(
        CLUSTER_ROOM_CLAIMS,
        "Room claims made in the store, by outcome (owned, redirected, owner_silent, \
         no_lease, error)."
    );
    describe_gauge!(CLUSTER_ROOMS_OWNED, "Rooms this cluster node owns.");
    describe_gauge!(
        SHARDS,
        "Shards serving this node's port (threads, each with the rooms assigned to it)."
    );
    describe_counter!(
        SHARD_REDIRECTS,
        "Room opens and joins sent to the shard of this node that serves the room."
    );
    describe_counter!(
        MAILBOX_SIGNALS,
        "Mailbox signals received from the cluster, by kind (new_mail, rescan)."
    );
    describe_counter!(CONTAINERS_EXPIRED, "Containers deleted by the ttl sweep.");
    describe_counter!(
        MAILBOX_REFUSED,
        "Sends refused by a mailbox limit, by reason (sender_quota, budget; sender_per_device: \
         some or all recipients hold too many entries from this sender)."
    );
    describe_gauge!(
        MAILBOX_BYTES,
        "Bytes of stored containers, each counted once (updated by the sweep)."
    );
    describe_counter!(
        REGISTRATIONS_RATE_LIMITED,
        "Registrations refused by the per-address rate limit."
    );
    describe_counter!(
        ROOM_RECORDS_RATE_LIMITED,
        "Room opens refused because the device created too many new room records."
    );
    describe_counter!(
        PREKEYS_RATE_LIMITED,
        "Prekeys withheld by the pop rate limit, by scope (pair, target)."
    );
    describe_counter!(
        SLOW_CLIENTS_CUT,
        "Connections cut for not reading their events, by bound (frames, bytes)."
    );
    describe_counter!(PREKEYS_SERVED, "One-time prekeys handed out.");
    describe_counter!(
        PREKEYS_EXHAUSTED,
        "Bundle requests for a device with no prekey left."
    );
    describe_counter!(
        PREKEYS_LAST_RESORT_SERVED,
        "Last-resort prekeys handed out (no one-time prekey left, or withheld)."
    );
    describe_counter!(PREKEYS_UPLOADED, "One-time prekeys uploaded.");
    describe_counter!(DEVICES_REGISTERED, "Devices registered.");
    describe_counter!(CONTROL_REQUESTS, "Control requests, by kind and outcome.");
    describe_gauge!(
        DRAINING,
        "1 while this node drains (after SIGTERM), else 0."
    );
    describe_gauge!(STORE_UP, "1 while the store answers its probe, else 0.");
    describe_gauge!(
        WORKER_THREADS,
        "Worker threads of the node's async runtime (its CPU capacity in cores)."
    );
    describe_counter!(
        TLS_RELOADS,
        "Certificate reloads on SIGHUP, by outcome (ok, error)."
    );
    describe_histogram!(
        CONTROL_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Control request latency, by kind."
    );
}
