//! Mailbox delivery to connections: everything waiting when a device authenticates,
//! then, in a cluster, whatever the store signals as new for a device connected here
//! (stored through this node or any other).
//!
//! Each connection has a cursor (the last entry it was given) and at most one
//! delivery pass at a time, which reads the device's entries after the cursor and
//! queues them. Mailbox ids become visible in increasing order, so a pass never skips
//! an entry and never repeats one; a signal that arrives while a pass runs requests
//! another pass. Delivery stays at least once across connections (entries stay until
//! acknowledged; a new connection starts from the beginning), and clients drop
//! duplicates by container id.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use conclave_proto::v1;
use metrics::counter;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Shared;
use super::handle::ConnHandle;
use super::session::short;
use crate::store::{DeviceIdBytes, MailboxSignal};
use crate::telemetry;

/// Mailbox entries read per store call in a pass.
const DELIVERY_PAGE: usize = 100;
/// The same for a connection with a mailbox window, whose pass may wait on the
/// client's reports with the rest of its page in memory: a client that never reports
/// holds at most this many entries of its mailbox on the server.
const WINDOWED_PAGE: usize = 8;
/// Store reads of delivery passes at once, at most.
pub(super) const CONCURRENT_READS: usize = 8;
/// A pass whose store read failed is tried again after this, doubled per failure up
/// to [`RETRY_MAX`], while the connection lives.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// How a delivery pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PassEnd {
    /// Everything after the cursor was queued.
    Done,
    /// The connection is gone.
    Gone,
    /// The store could not be read: try again later.
    StoreFailed,
}

/// Queues `device`'s entries after `conn`'s cursor, oldest first, waiting for room in
/// the connection's queue, and moves the cursor.
pub(super) async fn deliver_pass(
    shared: &Shared,
    conn: &ConnHandle,
    device: DeviceIdBytes,
) -> PassEnd {
    let mut delivered = conn.mailbox.delivered.lock().await;
    // Signals from here on need another pass; those before are covered by this one.
    conn.mailbox.requested.swap(false, Ordering::AcqRel);
    let page_len = if conn.mailbox.window.is_open() {
        WINDOWED_PAGE
    } else {
        DELIVERY_PAGE
    };
    loop {
        let after = *delivered;
        let page = {
            let Ok(_slot) = shared.delivery_reads.acquire().await else {
                return PassEnd::Gone;
            };
            shared
                .blocking("mailbox delivery", move |s| {
                    s.mailbox_list(&device, after, page_len)
                })
                .await
        };
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                warn!(device = %short(&device), error = %e.message, "mailbox delivery failed; retrying");
                return PassEnd::StoreFailed;
            }
        };
        let count = page.len();
        for entry in page {
            let id = entry.mailbox_id;
            let bytes = entry.container.len();
            tokio::select! {
                () = conn.mailbox.window.room_for(bytes) => {}
                _ = conn.connection.closed() => return PassEnd::Gone,
            }
            // Counted before it is queued, so a report can never precede it (a
            // refused queueing means the connection is gone).
            conn.mailbox.window.delivered(bytes);
            let queued = conn
                .send_event(v1::event::Event::Mailbox(v1::MailboxDelivery {
                    mailbox_id: id,
                    container: entry.container.into(),
                    stored_at_ms: entry.stored_at_ms,
                }))
                .await;
            if !queued {
                return PassEnd::Gone;
            }
            *delivered = id;
            counter!(telemetry::CONTAINERS_DELIVERED).increment(1);
        }
        if count < page_len {
            return PassEnd::Done;
        }
    }
}

/// Runs a pass on `conn` in a task of its own, and again with backoff while the store
/// cannot be read and the connection lives.
pub(super) fn spawn_pass(shared: Arc<Shared>, conn: Arc<ConnHandle>, device: DeviceIdBytes) {
    tokio::spawn(async move {
        let mut wait = RETRY_FIRST;
        while deliver_pass(&shared, &conn, device).await == PassEnd::StoreFailed {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(RETRY_MAX);
            if conn.connection.close_reason().is_some() {
                return;
            }
        }
    });
}

/// Asks for a delivery pass on `conn` (coalesced with one already waiting to start).
fn request_pass(shared: &Arc<Shared>, conn: Arc<ConnHandle>, device: DeviceIdBytes) {
    if conn.mailbox.requested.swap(true, Ordering::AcqRel) {
        return;
    }
    spawn_pass(Arc::clone(shared), conn, device);
}

/// Requests a pass for `device` if it is connected here.
fn signal_device(shared: &Arc<Shared>, device: &DeviceIdBytes) {
    let Some(id) = shared.online.get(device).map(|c| *c) else {
        return;
    };
    if let Some(conn) = shared.conns.get(&id).map(|c| Arc::clone(&c)) {
        request_pass(shared, conn, *device);
    }
}

/// Cluster mode: turns the store's mailbox signals into delivery passes until `stop`.
pub(super) async fn watch_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let mut signals = match cluster.store().watch_mailboxes() {
        Ok(signals) => signals,
        Err(e) => {
            warn!(error = %e, "cannot watch the cluster's mailboxes; containers stored through \
                   other nodes reach this node's devices only when they reconnect");
            return;
        }
    };
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            _ = stop.changed() => return,
        };
        match signal {
            Some(MailboxSignal::NewMail(device)) => {
                counter!(telemetry::MAILBOX_SIGNALS, "kind" => "new_mail").increment(1);
                signal_device(&shared, &device);
            }
            Some(MailboxSignal::Rescan) => {
                counter!(telemetry::MAILBOX_SIGNALS, "kind" => "rescan").increment(1);
                let online: Vec<DeviceIdBytes> = shared.online.iter().map(|e| *e.key()).collect();
                info!(
                    devices = online.len(),
                    "rescanning the mailboxes of connected devices"
                );
                for device in online {
                    signal_device(&shared, &device);
                }
            }
            None => {
                warn!("the cluster's mailbox watcher stopped");
                return;
            }
        }
    }
}
