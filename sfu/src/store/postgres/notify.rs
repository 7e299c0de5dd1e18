//! Mailbox signals between nodes: `NOTIFY` in the transaction that stores a container,
//! `LISTEN` on one dedicated connection per node.
//!
//! A signal only says "device X has new entries". The node holding X's connection
//! then reads X's mailbox after the last entry it delivered, so a signal carries no
//! data that could be lost with it: if the listening connection drops (PostgreSQL
//! restarted, a network cut) or the queue to the server overflows, the watcher emits
//! [`MailboxSignal::Rescan`] once it listens again and every connected device is read
//! afresh. `NOTIFY` is transactional: a signal is sent only on commit, after the entries
//! are visible to every node.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tracing::{info, warn};

use super::{PgStore, pg};
use crate::store::cluster::{MAILBOX_SIGNAL_QUEUE, MailboxSignal};
use crate::store::{BackendError, DeviceIdBytes, StoreError};

/// The notification channel: payload = the hex id of a device with new entries.
pub(super) const CHANNEL: &str = "conclave_mailbox";
/// How often the listening connection is checked (`SELECT 1`), so that a half-open
/// TCP connection is noticed and replaced.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Reconnect delays: doubled per failure from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Notifications buffered between the connection and the watcher.
const NOTES_QUEUE: usize = 1024;

/// Where the listening connection goes (the store's own URL and TLS).
#[derive(Clone)]
pub(super) struct ListenTarget {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl PgStore {
    /// Starts the listener on the store's runtime; it runs until the receiver is
    /// dropped (or the store is).
    pub(super) fn watch(&self) -> Result<mpsc::Receiver<MailboxSignal>, StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(StoreError::Backend(BackendError::PoolClosed))?;
        let (tx, rx) = mpsc::channel(MAILBOX_SIGNAL_QUEUE);
        runtime.spawn(listen_loop(
            self.listen.clone(),
            Outbox::new(tx),
            self.connect_timeout,
        ));
        Ok(rx)
    }
}

/// The queue to the server, which never blocks the listener: a signal that does not
/// fit is replaced by a `Rescan` owed at the next chance.
struct Outbox {
    tx: mpsc::Sender<MailboxSignal>,
    rescan_owed: bool,
}

impl Outbox {
    fn new(tx: mpsc::Sender<MailboxSignal>) -> Self {
        Outbox {
            tx,
            rescan_owed: false,
        }
    }

    fn send(&mut self, signal: MailboxSignal) {
        if self.rescan_owed {
            if self.tx.try_send(MailboxSignal::Rescan).is_err() {
                return;
            }
            self.rescan_owed = false;
            if signal == MailboxSignal::Rescan {
                return;
            }
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(signal) {
            self.rescan_owed = true;
        }
    }

    /// Sends the rescan owed, if there is room now.
    fn pay_owed(&mut self) {
        if self.rescan_owed && self.tx.try_send(MailboxSignal::Rescan).is_ok() {
            self.rescan_owed = false;
        }
    }
}

/// How often a rescan owed is tried again while no notification comes.
const OWED_RETRY: Duration = Duration::from_millis(100);

async fn listen_loop(target: ListenTarget, mut out: Outbox, timeout: Duration) {
    let mut backoff = BACKOFF.0;
    loop {
        let mut listened = false;
        match listen_once(&target, &mut out, timeout, &mut listened).await {
            Ok(()) => return,
            Err(e) => warn!(
                error = %e,
                "mailbox listener lost PostgreSQL; reconnecting (mailboxes are rescanned then)"
            ),
        }
        if listened {
            backoff = BACKOFF.0;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = out.tx.closed() => return,
        }
        backoff = backoff.saturating_mul(2).min(BACKOFF.1);
    }
}

/// One listening connection, until it fails (`Err`) or the server stops watching
/// (`Ok`).
async fn listen_once(
    target: &ListenTarget,
    out: &mut Outbox,
    timeout: Duration,
    listened: &mut bool,
) -> Result<(), StoreError> {
    let timed_out = || StoreError::Backend(BackendError::ConnectTimeout(timeout));
    let (client, mut connection) =
        tokio::time::timeout(timeout, target.config.connect(target.tls.clone()))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| StoreError::Backend(BackendError::PostgresUnreachable(e)))?;
    let (notes_tx, mut notes) = mpsc::channel(NOTES_QUEUE);
    let dropped = Arc::new(AtomicBool::new(false));
    let dropped_by_driver = Arc::clone(&dropped);
    // Drives the connection and hands notifications over without ever waiting, so a
    // busy watcher cannot stall the pings.
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    if notes_tx.try_send(note).is_err() {
                        dropped_by_driver.store(true, Ordering::Release);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(pg(e)),
                None => return Ok(()),
            }
        }
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    tokio::time::timeout(timeout, client.batch_execute(&format!("LISTEN {CHANNEL}")))
        .await
        .map_err(|_| timed_out())?
        .map_err(pg)?;
    info!("mailbox listener connected");
    // Anything committed while nobody listened is found by a rescan.
    out.send(MailboxSignal::Rescan);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = notes.recv() => {
                let Some(note) = note else { break };
                if dropped.swap(false, Ordering::AcqRel) {
                    out.send(MailboxSignal::Rescan);
                }
                if note.channel() == CHANNEL {
                    match parse_device(note.payload()) {
                        Some(device) => out.send(MailboxSignal::NewMail(device)),
                        None => warn!("mailbox notification with a malformed payload ignored"),
                    }
                }
            }
            _ = ping.tick() => {
                tokio::time::timeout(timeout, client.batch_execute("SELECT 1"))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(pg)?;
                // A connection that lasted a ping resets the reconnect backoff (one
                // that fails right after LISTEN keeps backing off).
                *listened = true;
            }
            () = tokio::time::sleep(OWED_RETRY), if out.rescan_owed => out.pay_owed(),
            () = out.tx.closed() => return Ok(()),
        }
    }
    match driver.await {
        Ok(Ok(())) => Err(StoreError::Backend(BackendError::ConnectionClosed)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::Backend(BackendError::ConnectionClosed)),
    }
}

/// Aborts the connection driver when the listening connection is given up.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A device id from its hex payload.
fn parse_device(payload: &str) -> Option<DeviceIdBytes> {
    let bytes = hex::decode(payload).ok()?;
    bytes.as_slice().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_only_as_sixteen_byte_hex_ids() {
        assert_eq!(parse_device(&hex::encode([7u8; 16])), Some([7u8; 16]));
        assert_eq!(parse_device("zz"), None);
        assert_eq!(parse_device(&hex::encode([7u8; 15])), None);
        assert_eq!(parse_device(""), None);
    }

    #[test]
    fn a_full_queue_owes_one_rescan_instead_of_blocking() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut out = Outbox::new(tx);
        out.send(MailboxSignal::NewMail([1; 16]));
        out.send(MailboxSignal::NewMail([2; 16]));
        assert!(out.rescan_owed, "the second signal did not fit");
        assert_eq!(rx.try_recv().ok(), Some(MailboxSignal::NewMail([1; 16])));
        // The owed rescan goes first; the third signal, not fitting, owes another.
        out.send(MailboxSignal::NewMail([3; 16]));
        assert_eq!(rx.try_recv().ok(), Some(MailboxSignal::Rescan));
        assert!(out.rescan_owed);
        assert!(rx.try_recv().is_err());
        out.send(MailboxSignal::Rescan);
        assert_eq!(rx.try_recv().ok(), Some(MailboxSignal::Rescan));
        assert!(!out.rescan_owed, "one rescan pays what was owed");
        assert!(rx.try_recv().is_err(), "and is not sent twice");
    }

    #[test]
    fn a_rescan_owed_is_paid_once_there_is_room_even_without_new_signals() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut out = Outbox::new(tx);
        out.send(MailboxSignal::NewMail([1; 16]));
        out.send(MailboxSignal::NewMail([2; 16]));
        out.pay_owed();
        assert!(out.rescan_owed, "no room yet");
        assert_eq!(rx.try_recv().ok(), Some(MailboxSignal::NewMail([1; 16])));
        out.pay_owed();
        assert!(!out.rescan_owed);
        assert_eq!(rx.try_recv().ok(), Some(MailboxSignal::Rescan));
        out.pay_owed();
        assert!(rx.try_recv().is_err(), "nothing owed, nothing sent");
    }
}
