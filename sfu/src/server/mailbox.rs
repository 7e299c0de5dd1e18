//! Mailbox requests and the ttl sweep (delivery to connections: `delivery`).
//!
//! Every container is stored durably, once for all its recipients, before the sender
//! gets its answer, then pushed to recipients that are connected. Its bytes count
//! against the sender's quota and the global budget until its last recipient
//! acknowledges it or it expires. Entries stay until the
//! recipient acknowledges them or their ttl passes, so delivery is at least once;
//! clients drop duplicates by container id (their replay cache).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use conclave_proto::Message;
use conclave_proto::v1::{self, DeliveryStatus, response};
use metrics::{counter, gauge};
use tokio::sync::watch;
use tracing::{info, warn};

use super::session::{After, Handled, Session, to_u32};
use super::{RequestError, Shared, now_ms};
use crate::store::{
    DeviceIdBytes, MailboxEntry, MailboxPut, MailboxQuota, NewContainer, StoreError,
};
use crate::telemetry;

/// Most ids in one acknowledgement.
const MAX_ACK_IDS: usize = 1_000;

impl Session {
    pub(super) async fn send_container(&mut self, r: v1::SendContainer) -> Handled {
        let device = &self.device()?.record;
        let (me, sender) = (device.device_id, device.user_id);
        let limits = &self.shared.config.limits;
        if r.container.len() > limits.max_container_bytes {
            return Err(RequestError::limit(format!(
                "container of {} bytes exceeds {} (max_container_bytes)",
                r.container.len(),
                limits.max_container_bytes
            )));
        }
        if r.recipient_device_ids.is_empty() {
            return Err(RequestError::bad_request("no recipient device ids"));
        }
        if r.recipient_device_ids.len() > limits.max_recipients_per_container {
            return Err(RequestError::limit(format!(
                "{} recipients; at most {} (max_recipients_per_container)",
                r.recipient_device_ids.len(),
                limits.max_recipients_per_container
            )));
        }
        let mut recipients = BTreeSet::new();
        for id in &r.recipient_device_ids {
            let id: DeviceIdBytes = id
                .as_slice()
                .try_into()
                .map_err(|_| RequestError::bad_request("a recipient device id is not 16 bytes"))?;
            recipients.insert(id);
        }
        let ttl_ms = container_ttl(&r.container, &me, &sender)?;
        // The one bit a sender tells the server about a container (unknown values are
        // taken as normal).
        let urgent = r.wake_urgency == v1::WakeUrgency::High as i32;
        let now = now_ms();
        let max_ttl = self
            .shared
            .config
            .timing
            .mailbox_ttl_secs
            .saturating_mul(1000);
        let expires = now.saturating_add(ttl_ms.min(max_ttl));
        let quota = MailboxQuota {
            max_per_device: limits.max_mailbox_per_device,
            max_per_sender_per_device: limits.max_mailbox_entries_per_sender_per_device,
            max_sender_bytes: limits.max_mailbox_bytes_per_sender,
            max_total_bytes: limits.max_mailbox_bytes,
        };
        let container = r.container;
        let recipients: Vec<DeviceIdBytes> = recipients.into_iter().collect();
        let (stored, bytes, refused) = self
            .shared
            .blocking("mailbox store", move |s| {
                let mut known = Vec::with_capacity(recipients.len());
                let mut results = Vec::with_capacity(recipients.len());
                for id in &recipients {
                    if s.device(id)?.is_some() {
                        known.push(*id);
                    } else {
                        results.push((*id, None));
                    }
                }
                let new = NewContainer {
                    sender: &sender,
                    recipients: &known,
                    container: &container,
                    stored_at_ms: now,
                    expires_at_ms: expires,
                };
                // Stored once for every recipient; the quotas are checked in the
                // same transaction.
                let puts = s.mailbox_store(&new, &quota).inspect_err(|e| match e {
                    StoreError::SenderQuota { .. } => {
                        counter!(telemetry::MAILBOX_REFUSED, "reason" => "sender_quota")
                            .increment(1);
                    }
                    StoreError::MailboxBudget { .. } => {
                        counter!(telemetry::MAILBOX_REFUSED, "reason" => "budget").increment(1);
                    }
                    _ => {}
                })?;
                let sender_full = puts.contains(&MailboxPut::SenderFull);
                if sender_full {
                    counter!(telemetry::MAILBOX_REFUSED, "reason" => "sender_per_device")
                        .increment(1);
                }
                let stored_any = puts.iter().any(|p| matches!(p, MailboxPut::Stored { .. }));
                results.extend(known.into_iter().zip(puts).map(|(id, put)| (id, Some(put))));
                Ok((results, container, sender_full && !stored_any))
            })
            .await?;
        if refused {
            // Nothing was stored, and this sender's own share of a recipient's mailbox
            // is what stopped it: say so, rather than report a full mailbox.
            return Err(RequestError::limit(format!(
                "this user already has {} containers waiting in a recipient's mailbox \
                 (max_mailbox_entries_per_sender_per_device); nothing was stored. Room \
                 comes back as the recipient acknowledges them (or they expire)",
                limits.max_mailbox_entries_per_sender_per_device
            )));
        }
        // One buffer for every recipient connected here: each frame refers to it, and the
        // connection writers hand it to quinn without copying it (`frame_chunks`).
        let bytes = bytes::Bytes::from(bytes);
        let mut results = Vec::with_capacity(stored.len());
        for (device, put) in stored {
            let status = match put {
                None => DeliveryStatus::UnknownDevice,
                Some(MailboxPut::Full | MailboxPut::SenderFull) => DeliveryStatus::MailboxFull,
                Some(MailboxPut::Stored { mailbox_id }) => {
                    counter!(telemetry::CONTAINERS_STORED).increment(1);
                    let entry = MailboxEntry {
                        mailbox_id,
                        container: Vec::new(),
                        stored_at_ms: now,
                        expires_at_ms: expires,
                    };
                    if self.push_live(&device, &entry, &bytes) {
                        DeliveryStatus::Delivered
                    } else {
                        if let Some(push) = &self.shared.push {
                            push.stored(sender, device, urgent, expires);
                        }
                        DeliveryStatus::Stored
                    }
                }
            };
            results.push(v1::RecipientResult {
                device_id: device.to_vec(),
                status: status as i32,
            });
        }
        Ok((
            response::Result::ContainerSent(v1::ContainerSent { results }),
            After::Nothing,
        ))
    }

    /// Pushes a stored entry to its recipient if it is connected here. In a cluster,
    /// the store's signal does it instead (for this node's devices as for others'), so
    /// that every live delivery goes through the connection's cursor and none arrives
    /// twice; the answer still says `Delivered` for a device connected here.
    fn push_live(
        &self,
        device: &DeviceIdBytes,
        entry: &MailboxEntry,
        container: &bytes::Bytes,
    ) -> bool {
        let Some(conn) = self.shared.online.get(device).map(|c| *c) else {
            return false;
        };
        if self.shared.cluster.is_some() {
            return true;
        }
        let Some(handle) = self.shared.conns.get(&conn).map(|h| Arc::clone(&h)) else {
            return false;
        };
        // Counted before it is queued, so the client's report can never precede it
        // (a refused push closes the connection).
        handle.mailbox.window.delivered(container.len());
        let pushed = handle.push_event(v1::event::Event::Mailbox(v1::MailboxDelivery {
            mailbox_id: entry.mailbox_id,
            container: container.clone(),
            stored_at_ms: entry.stored_at_ms,
        }));
        if pushed {
            counter!(telemetry::CONTAINERS_DELIVERED).increment(1);
        }
        pushed
    }

    pub(super) async fn ack_containers(&mut self, r: v1::AckContainers) -> Handled {
        let me = self.device()?.record.device_id;
        if r.mailbox_ids.len() > MAX_ACK_IDS {
            return Err(RequestError::limit(format!(
                "{} ids in one acknowledgement; at most {MAX_ACK_IDS}",
                r.mailbox_ids.len()
            )));
        }
        self.conn.mailbox.window.handled(r.handled_bytes);
        let ids = r.mailbox_ids;
        let deleted = if ids.is_empty() {
            0
        } else {
            self.shared
                .blocking("mailbox ack", move |s| s.mailbox_ack(&me, &ids))
                .await?
        };
        counter!(telemetry::CONTAINERS_ACKED).increment(deleted as u64);
        Ok((
            response::Result::ContainersAcked(v1::ContainersAcked {
                deleted: to_u32(deleted),
            }),
            After::Nothing,
        ))
    }
}

/// Checks that `bytes` is a container sent by device `sender` of user `user` and returns
/// its ttl. The server cannot and does not verify the signature (receivers do); this
/// only refuses garbage and containers claiming another sender device or user (so a
/// sender cannot make each recipient look up a made-up user: review M8).
fn container_ttl(
    bytes: &[u8],
    sender: &DeviceIdBytes,
    user: &[u8; 32],
) -> Result<u64, RequestError> {
    let container = v1::Container::decode(bytes)
        .map_err(|_| RequestError::bad_request("container does not decode"))?;
    let header = v1::ContainerHeader::decode(container.header.as_slice())
        .map_err(|_| RequestError::bad_request("container header does not decode"))?;
    if header.sender_device_id.as_slice() != sender.as_slice() {
        return Err(RequestError::bad_request(
            "container sender device is not the authenticated device",
        ));
    }
    if header.sender_user_id.as_slice() != user.as_slice() {
        return Err(RequestError::bad_request(
            "container sender user is not the authenticated device's user",
        ));
    }
    if header.ttl_ms == 0 {
        return Err(RequestError::bad_request("container ttl is zero"));
    }
    Ok(header.ttl_ms)
}

/// Periodically deletes expired mailbox entries and idle room records.
pub(super) async fn sweep_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(shared.config.timing.sweep_interval_secs.max(1));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        sweep_once(&shared).await;
    }
}

/// One sweep: expired mailbox entries, then room records idle past their ttl.
pub(super) async fn sweep_once(shared: &Arc<Shared>) {
    let now = now_ms();
    match shared
        .blocking("mailbox sweep", move |s| s.mailbox_expire(now))
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            counter!(telemetry::CONTAINERS_EXPIRED).increment(n as u64);
            info!(expired = n, "mailbox sweep");
        }
        Err(e) => warn!(error = %e.message, "mailbox sweep failed"),
    }
    let usage = shared
        .blocking("mailbox usage", |s| match s.mailbox_usage() {
            Err(StoreError::Unsupported(_)) => Ok(None),
            other => other.map(Some),
        })
        .await;
    if let Ok(Some(usage)) = usage {
        gauge!(telemetry::MAILBOX_BYTES).set(usage.bytes as f64);
    }
    let cutoff = now.saturating_sub(shared.config.timing.room_idle_ttl_secs.saturating_mul(1000));
    let live: BTreeSet<[u8; 32]> = shared.rooms().live_routing_ids();
    if let Err(e) = shared
        .blocking("room sweep", move |s| {
            s.expire_rooms(cutoff, &|id| live.contains(id))
        })
        .await
    {
        warn!(error = %e.message, "room sweep failed");
    }
}
