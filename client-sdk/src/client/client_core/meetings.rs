//! Meeting commands, and carrying out each meeting state machine's outputs: sealing and
//! sending containers, joining and rotating the SFU room, installing and dropping keys.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use conclave_proto::datagram::RoomHandle;
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};
use tokio::sync::mpsc;

use super::engine::{Engine, Entry, ms};
use super::links::lose_room;
use super::{Action, MeetingMedia, MeetingParts};
use crate::client::directory::{
    Pin, RefusalReason, RefusedDevice, TrustStore, roster_recipients, screen_bundles,
    verify_bundles,
};
use crate::client::error::ProtocolViolation;
use crate::client::frames::{FrameBounds, frame_queue};
use crate::client::presence::Presence;
use crate::client::protocol::order;
use crate::client::protocol::outbox::Outgoing;
use crate::client::protocol::rotations::PendingRotation;
use crate::client::shared::MeetingShared;
use crate::client::{
    CallerProfile, ClientError, ClientEvent, InviteReport, MediaKind, MeetingEvent, Participant,
};

/// Redirects in a row a client follows before it stops (nodes that disagree about a
/// room's owner must not bounce it forever).
pub(super) const MAX_REDIRECTS: u32 = 3;
/// How long to wait before joining again after a transient refusal without a retry
/// time (doubled per failure in a row, up to 32 times this).
const REJOIN_RETRY: Duration = Duration::from_millis(500);
/// The longest wait an `UNAVAILABLE` answer can impose before the next join attempt.
const MAX_REJOIN_WAIT: Duration = Duration::from_secs(30);
use crate::container::{self, Recipient};
use crate::meeting::rekey::{
    ControlMessage, MeetingMessage, MeetingOutput, MeetingState, Roster, RosterMember,
};
use crate::meeting::{Epoch, MeetingId, MeetingKey};
use crate::safety::{RosterIdentity, SafetyCode};
use crate::{DeviceId, UserId};

/// Control events buffered per meeting.
const MEETING_EVENT_QUEUE: usize = 256;
/// Users per directory request (the server's default `max_users_per_fetch`).
const USERS_PER_FETCH: usize = 64;

/// The roster as the app sees it.
pub(crate) fn participants(state: &MeetingState) -> Vec<Participant> {
    state
        .roster()
        .iter()
        .map(|m| Participant {
            user_id: m.user_id,
            device_id: m.device_id,
            sender_index: m.sender_index,
            is_leader: m.device_id == state.leader(),
            is_me: m.device_id == state.me(),
        })
        .collect()
}

impl Engine {
    fn fail_if_closed(&self) -> Result<(), ClientError> {
        if self.link.is_none() {
            return Err(ClientError::reconnecting());
        }
        Ok(())
    }

    /// Fetches and verifies the bundles of `users` (taking one prekey per device), for
    /// an invitation: users never seen before are pinned now (this device asked for
    /// them).
    async fn fetch_recipients(
        &mut self,
        users: &[UserId],
    ) -> Result<crate::client::directory::Verified, ClientError> {
        let bundles = self.fetch_bundles(users, &[], false).await?;
        let now = self.now();
        let verified = verify_bundles(&bundles, &mut self.trust, true, now);
        for user in &verified.newly_pinned {
            self.emit(ClientEvent::UserPinned(*user));
        }
        self.report_refusals(&verified.refused);
        Ok(verified)
    }

    /// Logs refused directory entries and tells the app about the suspicious ones.
    pub(super) fn report_refusals(&self, refused: &[RefusedDevice]) {
        for r in refused {
            if r.reason.is_suspicious() {
                tracing::warn!(user = ?r.user_id, device = ?r.device_id, reason = %r.reason, "directory entry refused");
                self.emit(ClientEvent::DirectoryRefused(r.clone()));
            } else {
                // An unknown user, a device without prekeys: ordinary, reported to the
                // caller in its `InviteReport`.
                tracing::debug!(user = ?r.user_id, device = ?r.device_id, reason = %r.reason, "directory entry refused");
            }
        }
    }

    /// Fetches the directory bundles of `users` (deduplicated), in requests of at most
    /// the server's `max_users_per_fetch`; with `devices`, only those devices (and only
    /// their prekeys are taken). Users not asked for, and duplicates, are removed from
    /// the answer and reported.
    pub(super) async fn fetch_bundles(
        &mut self,
        users: &[UserId],
        devices: &[(UserId, DeviceId)],
        certificates_only: bool,
    ) -> Result<v1::Bundles, ClientError> {
        let mut ids: Vec<UserId> = users.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut all = v1::Bundles::default();
        for chunk in ids.chunks(USERS_PER_FETCH) {
            let device_ids = devices
                .iter()
                .filter(|(user, _)| chunk.contains(user))
                .map(|(_, d)| d.as_bytes().to_vec())
                .collect();
            let request = Request::FetchBundles(v1::FetchBundles {
                user_ids: chunk.iter().map(|u| u.as_bytes().to_vec()).collect(),
                certificates_only,
                device_ids,
            });
            let response::Result::Bundles(mut bundles) = self.request(request).await? else {
                return Err(ClientError::unexpected_answer("FetchBundles"));
            };
            let refused = screen_bundles(&mut bundles, chunk);
            self.report_refusals(&refused);
            all.users.extend(bundles.users);
        }
        Ok(all)
    }

    /// This user's profile, for the invites this device sends.
    fn caller(&self) -> Option<v1::CallerProfile> {
        self.config.profile.as_ref().map(CallerProfile::to_wire)
    }

    /// How urgently offline invitees are woken
    /// ([`ClientConfig::urgent_invitations`](crate::client::ClientConfig::urgent_invitations)).
    fn invite_urgency(&self) -> v1::WakeUrgency {
        if self.config.urgent_invitations {
            v1::WakeUrgency::High
        } else {
            v1::WakeUrgency::Normal
        }
    }

    /// Seals `payload` to `recipients` and sends it; returns the devices the server
    /// delivered or stored it for.
    async fn seal_and_send(
        &mut self,
        recipients: &[Recipient],
        payload: &v1::ContainerPayload,
        ttl_ms: u64,
        urgency: v1::WakeUrgency,
    ) -> Result<BTreeSet<DeviceId>, ClientError> {
        if recipients.is_empty() {
            return Ok(BTreeSet::new());
        }
        let now = self.now();
        let sealed = container::seal(
            self.creds.device(),
            recipients,
            payload,
            now,
            ttl_ms,
            &mut self.rng,
        )?;
        tracing::debug!(
            target: super::REKEY_TRACE,
            me = ?self.creds.device_id(),
            recipients = recipients.len(),
            "sealed"
        );
        let devices: Vec<DeviceId> = recipients.iter().map(|r| r.device().device_id()).collect();
        self.send_sealed(&devices, sealed, urgency).await
    }

    /// Sends a sealed container to `devices`; returns those the server delivered or
    /// stored it for.
    pub(super) async fn send_sealed(
        &mut self,
        devices: &[DeviceId],
        sealed: Vec<u8>,
        urgency: v1::WakeUrgency,
    ) -> Result<BTreeSet<DeviceId>, ClientError> {
        let request = Request::SendContainer(v1::SendContainer {
            recipient_device_ids: devices.iter().map(|d| d.as_bytes().to_vec()).collect(),
            container: sealed,
            wake_urgency: urgency as i32,
        });
        let response::Result::ContainerSent(sent) = self.request(request).await? else {
            return Err(ClientError::unexpected_answer("SendContainer"));
        };
        Ok(sent
            .results
            .iter()
            .filter(|r| {
                r.status == v1::DeliveryStatus::Delivered as i32
                    || r.status == v1::DeliveryStatus::Stored as i32
            })
            .filter_map(|r| DeviceId::from_slice(&r.device_id))
            .collect())
    }

    /// Fresh prekeys for roster `members` (one each, taken from the directory), as
    /// recipients sealed only to the device keys pinned in the roster; a directory
    /// entry with other keys is refused and reported. Also returns how long the
    /// directory asked to wait before taking prekeys again (its drain protection), ms.
    pub(super) async fn fetch_roster_recipients(
        &mut self,
        members: &[RosterMember],
    ) -> Result<(Vec<Recipient>, u64), ClientError> {
        let users: Vec<UserId> = members.iter().map(|m| m.user_id).collect();
        let devices: Vec<(UserId, DeviceId)> =
            members.iter().map(|m| (m.user_id, m.device_id)).collect();
        let bundles = self.fetch_bundles(&users, &devices, false).await?;
        let now = self.now();
        let (recipients, refused) = roster_recipients(&bundles, members, now);
        self.report_refusals(&refused);
        let wait_ms = refused
            .iter()
            .filter_map(|r| match r.reason {
                RefusalReason::PrekeyRateLimited(ms) => Some(ms),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Ok((recipients, wait_ms))
    }

    /// Sends a meeting's container to its devices (fetching fresh prekeys for exactly
    /// those devices; a Rekey uses the entries the key leader prepared, fetching only
    /// for devices they do not serve). It is sealed only to the device keys pinned in
    /// the roster; a directory entry with other keys is refused and reported. Returns
    /// the devices it reached.
    async fn send_to_devices(
        &mut self,
        out: &Outgoing,
    ) -> Result<(BTreeSet<DeviceId>, u64), ClientError> {
        if out.recipients.is_empty() {
            return Ok((BTreeSet::new(), 0));
        }
        let trace = out.rekey_epoch.is_some();
        // A resend goes to the devices the Rekey missed with fresh prekeys: the
        // preparation is for the next Rekey.
        if trace && out.attempt == 0 {
            let now = self.now();
            if let Some(prepared) = self.prepared.take_for(&out.meeting, &out.recipients, now) {
                self.show_prepared(out.meeting);
                return self.send_prepared(out, prepared).await;
            }
        }
        let (recipients, wait_ms) = self.fetch_roster_recipients(&out.recipients).await?;
        if trace {
            tracing::debug!(target: super::REKEY_TRACE, me = ?self.creds.device_id(), "bundles fetched");
        }
        let reached = self
            .seal_and_send(
                &recipients,
                &out.message.to_wire(),
                container::DEFAULT_TTL_MS,
                v1::WakeUrgency::Normal,
            )
            .await?;
        if trace {
            tracing::debug!(target: super::REKEY_TRACE, me = ?self.creds.device_id(), "rekey sent");
        }
        Ok((reached, wait_ms))
    }

    /// Sends `out`. A Rekey is then reported delivered (unreachable devices are
    /// dropped by the next rekey). Without a connection it waits in the outbox until
    /// the reconnect, even if its meeting ends meanwhile (a `Leave` still goes out).
    async fn send_outgoing(&mut self, out: Outgoing) {
        let (reached, wait_ms) = match self.send_to_devices(&out).await {
            Ok(sent) => sent,
            Err(ClientError::Connection(_)) => {
                if !self.outbox.wait_for_connection(out) {
                    tracing::warn!("outbox full; a meeting message is dropped");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not send a meeting message");
                (BTreeSet::new(), 0)
            }
        };
        let now = self.now();
        let outcome = self.outbox.sent(&out, &reached, wait_ms, self.instant());
        let Some(entry) = self.meetings.get_mut(&out.meeting) else {
            return;
        };
        if let Some(epoch) = outcome.rekey_delivered
            && let Err(e) = entry.state.rekey_delivered(epoch, now)
            && out.attempt == 0
        {
            tracing::warn!(error = %e, "rekey delivery for an unknown epoch");
        }
        for device in outcome.dropped {
            tracing::warn!(device = ?device, "rekey could not reach a device; dropping it");
            entry.state.device_dropped(device, now);
        }
    }

    /// Resends the meeting messages that are due, to the recipients still in their
    /// meeting (a message of an ended meeting, such as a `Leave`, to all of them).
    pub(super) async fn resend_due(&mut self) {
        let meetings = &self.meetings;
        let due = self.outbox.take_due_resends(self.instant(), |id| {
            meetings.get(id).map(|e| e.state.roster())
        });
        for out in due {
            let meeting = out.meeting;
            self.send_outgoing(out).await;
            self.pump(meeting).await;
        }
    }

    /// Sends what waited for the connection, to the recipients still in their meeting
    /// (review L6: a Rekey queued while disconnected must not reach devices removed
    /// meanwhile).
    pub(super) async fn flush_outbox(&mut self) {
        let meetings = &self.meetings;
        let waiting = self
            .outbox
            .take_waiting(|id| meetings.get(id).map(|e| e.state.roster()));
        for out in waiting {
            let meeting = out.meeting;
            self.send_outgoing(out).await;
            self.pump(meeting).await;
        }
    }

    /// Carries out every output of meeting `id`'s state machine, until it has none.
    pub(super) async fn pump(&mut self, id: MeetingId) {
        loop {
            let Some(entry) = self.meetings.get_mut(&id) else {
                return;
            };
            let mut outputs: Vec<MeetingOutput> =
                std::iter::from_fn(|| entry.state.poll_output()).collect();
            if outputs.is_empty() {
                break;
            }
            order::rotate_before_switch(&mut outputs);
            for output in outputs {
                self.apply(id, output).await;
            }
        }
        let now = self.now();
        match self.meetings.get(&id) {
            Some(entry) => self.prepared.observe(&entry.state, now),
            None => self.prepared.forget(&id),
        }
        self.refresh(id);
        self.sas_epoch_entered(id);
        self.flush_sas(id).await;
    }

    async fn apply(&mut self, id: MeetingId, output: MeetingOutput) {
        match output {
            MeetingOutput::Send {
                recipients,
                message,
                rekey_epoch,
            } => {
                let Some(entry) = self.meetings.get(&id) else {
                    return;
                };
                let out = Outgoing::new(&entry.state, recipients, message, rekey_epoch);
                self.send_outgoing(out).await;
            }
            MeetingOutput::SendingEpoch { epoch } => {
                let Some(entry) = self.meetings.get(&id) else {
                    return;
                };
                tracing::debug!(
                    target: super::REKEY_TRACE,
                    me = ?self.creds.device_id(),
                    epoch = epoch.get(),
                    "sending epoch"
                );
                if entry.state.is_sending_paused() {
                    // Still behind the room: this epoch's key may be a departed
                    // participant's too.
                    entry.shared.pause_sending();
                } else if let Some(key) = entry.state.key(epoch)
                    && let Err(e) = entry.shared.set_sending_key(key)
                {
                    tracing::warn!(error = %e, "cannot send on the new epoch");
                }
                entry.shared.emit(MeetingEvent::EpochChanged { epoch });
                if entry.proven.is_none_or(|p| p < epoch) {
                    self.join_room(id, epoch).await;
                }
            }
            MeetingOutput::SendingPaused { room_epoch } => {
                let Some(entry) = self.meetings.get(&id) else {
                    return;
                };
                tracing::warn!(
                    room_epoch = room_epoch.get(),
                    held = entry.state.sending_epoch().get(),
                    "the room moved to an epoch whose key never reached this device; sending paused, asking the key leader"
                );
                entry.shared.pause_sending();
                entry
                    .shared
                    .emit(MeetingEvent::SendingPaused { room_epoch });
            }
            MeetingOutput::RotateRoom { from, to } => self.rotate_room(id, from, to).await,
            MeetingOutput::Unanswered { device } => {
                if let Some(entry) = self.meetings.get(&id)
                    && let Some(participant) = participants(&entry.state)
                        .into_iter()
                        .find(|p| p.device_id == device)
                {
                    entry.shared.emit(MeetingEvent::Unanswered { participant });
                }
            }
            MeetingOutput::DropEpoch { epoch } => {
                if let Some(entry) = self.meetings.get_mut(&id) {
                    entry.shared.drop_epoch(epoch);
                    entry.installed.retain(|(e, _)| *e != epoch);
                }
            }
            MeetingOutput::RosterChanged => {
                self.refresh(id);
                let me = self.creds.user().user_id;
                if let Some(entry) = self.meetings.get_mut(&id) {
                    entry.shared.emit(MeetingEvent::ParticipantsChanged);
                    let others = entry.state.roster().iter().any(|m| m.user_id != me);
                    if others {
                        entry.had_others = true;
                    } else if std::mem::take(&mut entry.had_others) {
                        entry.shared.emit(MeetingEvent::Alone);
                    }
                }
            }
            MeetingOutput::Ended { reason } => {
                self.prepared.forget(&id);
                let conn = self.room_link(id).map(|l| l.conn);
                self.unlink_meeting(id, None);
                let Some(entry) = self.meetings.remove(&id) else {
                    return;
                };
                let handle = entry.room;
                entry.shared.clear_keys();
                entry.shared.set_info(|i| {
                    i.ended = true;
                    i.held_epochs.clear();
                });
                entry.shared.emit(MeetingEvent::Ended { reason });
                if let (Some(_), Some(conn)) = (handle, conn) {
                    let leave = Request::LeaveRoom(v1::LeaveRoom {
                        routing_id: id.routing_id().as_bytes().to_vec(),
                    });
                    if let Err(e) = self.request_on(conn, leave).await {
                        tracing::debug!(error = %e, "leaving the room failed");
                    }
                }
                self.close_idle_room_links();
            }
            // Keys are installed for every held epoch in `refresh`.
            MeetingOutput::ReceiveEpoch { .. } => self.refresh(id),
            // An early Rekey is no evidence against the leader (review M2): only the
            // room says whether it is gone (`MemberLeft`, then no `MemberJoined`).
            MeetingOutput::LeaderInDoubt { leader } => {
                tracing::info!(leader = ?leader, "a would-be successor rekeyed the leader out; held until the leader leaves the room");
            }
        }
    }

    /// Brings the shared view in line with the state machine: receive keys for every
    /// held epoch and roster member, participants, leader, safety code.
    fn refresh(&mut self, id: MeetingId) {
        let prepared = self.prepared.devices(&id);
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let state = &entry.state;
        let epochs: Vec<Epoch> = state.epochs().collect();
        for epoch in epochs {
            let Some(key) = state.key(epoch) else {
                continue;
            };
            let missing: Vec<_> = state
                .roster()
                .iter()
                .filter(|m| !entry.installed.contains(&(epoch, m.sender_index)))
                .map(|m| {
                    (
                        m.sender_index,
                        m.user_id,
                        m.device_id,
                        *m.device.signing_key(),
                    )
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            entry
                .installed
                .extend(missing.iter().map(|(i, _, _, _)| (epoch, *i)));
            entry.shared.add_receive_keys(key, &missing);
        }
        super::messages::deliver_early_messages(entry);
        entry.next_index = entry
            .next_index
            .max(entry.state.roster().next_sender_index());
        let safety = current_safety_code(entry);
        let state = &entry.state;
        let participants = participants(state);
        let leader = state.leader();
        let epoch = state.sending_epoch();
        let held: Vec<Epoch> = state.epochs().collect();
        entry.shared.set_info(|info| {
            info.held_epochs = held;
            info.participants = participants;
            info.leader = Some(leader);
            info.safety_code = safety;
            info.sending_epoch = epoch;
            info.prepared_rekey_devices = prepared;
        });
    }

    /// Proves `epoch` to the SFU room (joining it, or opening it if it does not exist).
    pub(super) async fn join_room(&mut self, id: MeetingId, epoch: Epoch) {
        self.enter_room(id, epoch, false).await;
    }

    /// Proves `epoch` to meeting `id`'s room on the connection its room lives on
    /// (opening it first if `open_first`, or if it does not exist), following
    /// redirects to the room's owner (at most [`MAX_REDIRECTS`] in a row).
    async fn enter_room(&mut self, id: MeetingId, mut epoch: Epoch, mut open_first: bool) {
        loop {
            let Some(conn) = self.room_link_for(id).await else {
                return;
            };
            let (Some(entry), Some(link)) = (self.meetings.get(&id), self.link_by_conn(conn))
            else {
                return;
            };
            if entry.state.key(epoch).is_none() {
                // A redirect took long enough for the epoch to be dropped: the
                // current one is what to prove now.
                epoch = entry.state.sending_epoch();
            }
            let Some(key) = entry.state.key(epoch) else {
                return;
            };
            let routing = id.routing_id();
            let auth = key.room_auth_key(&routing);
            let Ok(signature) = auth.sign_join(&link.tls_binding, &link.challenge) else {
                return;
            };
            let open = Request::OpenRoom(v1::OpenRoom {
                routing_id: routing.as_bytes().to_vec(),
                epoch: epoch.get(),
                room_auth_public_key: auth.public().to_bytes().to_vec(),
                join_signature: signature.to_vec(),
                leader_device_ids: room_leader_ids(&entry.state),
            });
            let join = Request::JoinRoom(v1::JoinRoom {
                routing_id: routing.as_bytes().to_vec(),
                epoch: epoch.get(),
                join_signature: signature.to_vec(),
            });
            let result = if open_first {
                self.request_on(conn, open).await
            } else {
                match self.request_on(conn, join).await {
                    Err(e) if e.server_code() == Some(ErrorCode::NotFound) => {
                        self.request_on(conn, open).await
                    }
                    other => other,
                }
            };
            match result {
                Ok(response::Result::RoomJoined(joined)) => {
                    self.joined(id, conn, &joined);
                    self.close_idle_room_links();
                    return;
                }
                Err(ClientError::Server {
                    code: ErrorCode::WrongNode,
                    redirect: Some(redirect),
                    ..
                }) => {
                    if !self.follow_redirect(id, conn, *redirect) {
                        return;
                    }
                    // The owner holds the room already: join it there.
                    open_first = false;
                }
                Err(e)
                    if matches!(
                        e.server_code(),
                        Some(ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited)
                    ) =>
                {
                    // The room cannot be served right now (its owner node is failing
                    // over, this node is between leases, or its store is recovering).
                    tracing::info!(error = %e, "the meeting's room cannot be joined now; rejoining later");
                    self.retry_join_later(id, e.retry_after());
                    return;
                }
                Err(e) if e.server_code() == Some(ErrorCode::WrongEpoch) => {
                    // The room has not rotated yet (or already moved on): join when it
                    // announces an epoch this device holds. A room past every key held
                    // here pauses sending and asks the leader (review M3).
                    let now = self.now();
                    if let Some(entry) = self.meetings.get_mut(&id) {
                        entry.wanted = Some(epoch);
                        if let Some(room_epoch) = e.room_epoch() {
                            let _ = entry.state.room_epoch(Epoch(room_epoch), now);
                        }
                    }
                    return;
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to a room join");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "joining the meeting's room failed");
                    return;
                }
            }
        }
    }

    /// Tries joining meeting `id`'s room again when the server said (`retry_after`),
    /// else with backoff; jittered, so that the clients of a dead node do not all come
    /// back at one instant.
    pub(super) fn retry_join_later(&mut self, id: MeetingId, retry_after: Option<Duration>) {
        let now = self.instant();
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let backoff = REJOIN_RETRY.saturating_mul(1 << entry.rejoin_failures.min(6));
        entry.rejoin_failures = entry.rejoin_failures.saturating_add(1);
        let wait = retry_after
            .unwrap_or(backoff)
            .clamp(Duration::from_millis(50), MAX_REJOIN_WAIT);
        let jitter = wait / 10 * (self.rng.next_u32() % 1_000) / 1_000;
        let wait = wait + jitter;
        tracing::debug!(retry_in_ms = wait.as_millis(), "room join scheduled");
        entry.rejoin_at = Some(now + wait);
    }

    /// The meeting's room is owned by another node: its room moves to a rooms-only
    /// connection there (the directory and mailbox stay on the primary connection).
    /// Returns whether to join there now. A chain of redirects longer than
    /// [`MAX_REDIRECTS`] (nodes disagreeing about an owner) is not followed: the join
    /// is tried again later, from the primary connection.
    fn follow_redirect(
        &mut self,
        id: MeetingId,
        from: super::ConnectionId,
        redirect: v1::Redirect,
    ) -> bool {
        // A shard redirect without an address names the node `from` reached.
        let here = self.link_by_conn(from).map(|l| l.node.clone());
        let Some(entry) = self.meetings.get_mut(&id) else {
            return false;
        };
        entry.redirects = entry.redirects.saturating_add(1);
        let byte = redirect
            .connection_id_byte
            .and_then(|b| u8::try_from(b).ok());
        let node = match (redirect.address.is_empty(), byte, here) {
            (false, _, _) => Some(super::ServerTarget {
                address: redirect.address,
                server_name: redirect.server_name,
                connection_id_byte: byte,
            }),
            (true, Some(byte), Some(here)) => Some(super::ServerTarget {
                connection_id_byte: Some(byte),
                ..here.unwrap_or(super::ServerTarget {
                    address: String::new(),
                    server_name: String::new(),
                    connection_id_byte: None,
                })
            }),
            _ => None,
        };
        let Some(node) = node.filter(|_| entry.redirects <= MAX_REDIRECTS) else {
            tracing::warn!(
                hops = entry.redirects,
                "not following a room redirect; joining again later"
            );
            entry.redirects = 0;
            entry.node = None;
            self.retry_join_later(id, None);
            self.close_idle_room_links();
            return false;
        };
        tracing::info!(address = %node.address, shard_byte = ?node.connection_id_byte, fence = redirect.fence, "following a room redirect");
        if entry.node.as_ref() != Some(&node) {
            // Whatever room this meeting held elsewhere is not the owner's.
            lose_room(entry);
            entry.node = Some(node.clone());
            self.unlink_meeting(id, None);
            self.emit(ClientEvent::RoomRedirected {
                meeting: id,
                address: node.address,
            });
        }
        self.close_idle_room_links();
        true
    }

    /// Joins the rooms whose `UNAVAILABLE` wait is over, at the sending epoch.
    pub(super) async fn rejoins_due(&mut self) {
        let now = self.instant();
        let due: Vec<MeetingId> = self
            .meetings
            .iter()
            .filter(|(_, e)| e.rejoin_at.is_some_and(|at| at <= now) && self.can_join(e))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(entry) = self.meetings.get_mut(&id) else {
                continue;
            };
            entry.rejoin_at = None;
            let epoch = entry.state.sending_epoch();
            self.join_room(id, epoch).await;
        }
    }

    /// Meeting `id` joined its room on connection `conn`.
    fn joined(&mut self, id: MeetingId, conn: super::ConnectionId, joined: &v1::RoomJoined) {
        let now = self.now();
        self.unlink_meeting(id, Some(conn));
        let link = self
            .link
            .iter_mut()
            .chain(self.room_links.iter_mut())
            .find(|l| l.conn == conn);
        let (Some(entry), Some(link)) = (self.meetings.get_mut(&id), link) else {
            return;
        };
        entry.proven = Some(Epoch(joined.epoch));
        entry.wanted = None;
        entry.rejoin_at = None;
        entry.rejoin_failures = 0;
        entry.redirects = 0;
        if entry.interrupted {
            entry.interrupted = false;
            entry.shared.emit(MeetingEvent::MediaResumed);
        }
        // The room's epoch also announces a switch this device may have missed while
        // it was away (the caller pumps the outputs).
        let _ = entry.state.room_epoch(Epoch(joined.epoch), now);
        let handle = RoomHandle(joined.room_handle);
        entry.room = Some(handle);
        link.rooms.retain(|_, meeting| *meeting != id);
        link.rooms.insert(handle, id);
        self.port.act(Action::LinkRoom {
            conn: link.conn,
            handle,
            meeting: MeetingMedia(Arc::clone(&entry.shared)),
        });
    }

    /// (Leader) rotates the room from `from` to `to`, naming the devices that may
    /// rotate it next. A failure is retried with backoff (the SFU lets a successor
    /// rotate only once the leader before it has been gone a while), and reported to
    /// the app as [`MeetingEvent::RoomRotationFailed`] once the retries are spent: a
    /// room left at the old epoch keeps routing media to removed participants.
    pub(super) async fn rotate_room(&mut self, id: MeetingId, from: Epoch, to: Epoch) {
        let Some(entry) = self.meetings.get(&id) else {
            return;
        };
        // If an earlier rotation has not gone through (refused, rate-limited, still
        // retrying), the room is still at the epoch this connection last proved: sign
        // from there, while its key is held, rather than from an epoch the room never
        // reached (the SFU would refuse that forever). The earlier rotation is void.
        let from = entry
            .proven
            .filter(|p| *p < from && entry.state.key(*p).is_some())
            .unwrap_or(from);
        let (Some(current), Some(next)) = (entry.state.key(from), entry.state.key(to)) else {
            return;
        };
        self.rotations.cancel(&id);
        // Signed now, while the old key is held: it is dropped after the grace window,
        // and a retry may come later than that.
        let routing = id.routing_id();
        let Ok(signature) = current
            .room_auth_key(&routing)
            .sign_rotation(&next.room_auth_key(&routing))
        else {
            return;
        };
        let rotation = PendingRotation {
            at: self.instant(),
            meeting: id,
            to,
            signature: signature.to_vec(),
            attempt: 0,
        };
        self.try_rotation(rotation).await;
    }

    /// One attempt at a rotation; a failure schedules the next one.
    async fn try_rotation(&mut self, rotation: PendingRotation) {
        let id = rotation.meeting;
        let (Some(entry), Some(link)) = (self.meetings.get(&id), self.room_link(id)) else {
            // Without a connection: retried once it is back.
            self.schedule_rotation(rotation, None);
            return;
        };
        let conn = link.conn;
        if entry.proven.is_some_and(|p| p >= rotation.to) {
            return;
        }
        let Some(next) = entry.state.key(rotation.to) else {
            return;
        };
        let routing = id.routing_id();
        let next = next.room_auth_key(&routing);
        let Ok(join) = next.sign_join(&link.tls_binding, &link.challenge) else {
            return;
        };
        let request = Request::RotateRoom(v1::RotateRoom {
            routing_id: routing.as_bytes().to_vec(),
            next_epoch: rotation.to.get(),
            next_room_auth_public_key: next.public().to_bytes().to_vec(),
            rotation_signature: rotation.signature.clone(),
            join_signature: join.to_vec(),
            next_leader_device_ids: room_leader_ids(&entry.state),
        });
        tracing::debug!(
            target: super::REKEY_TRACE,
            me = ?self.creds.device_id(),
            epoch = rotation.to.get(),
            "rotating room"
        );
        match self.request_on(conn, request).await {
            Ok(response::Result::RoomRotated(r)) => {
                tracing::debug!(
                    target: super::REKEY_TRACE,
                    me = ?self.creds.device_id(),
                    epoch = r.epoch,
                    "room rotated"
                );
                if let Some(entry) = self.meetings.get_mut(&id) {
                    entry.proven = Some(Epoch(r.epoch));
                }
            }
            Ok(other) => {
                tracing::warn!(?other, "unexpected answer to RotateRoom");
                self.schedule_rotation(rotation, None);
            }
            Err(e) if e.server_code() == Some(ErrorCode::WrongEpoch) => {
                // The room is already at `to` or beyond (a rotation whose answer was
                // lost): joining proves the current epoch if this device holds it.
                tracing::debug!(error = %e, "room already rotated");
                self.join_room(id, rotation.to).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt = rotation.attempt, "rotating the meeting's room failed; retrying");
                self.schedule_rotation(rotation, e.retry_after());
            }
        }
    }

    /// Schedules another attempt at a rotation (no sooner than the server's rate limit
    /// asked), or gives up and tells the app.
    fn schedule_rotation(&mut self, rotation: PendingRotation, retry_after: Option<Duration>) {
        if let Err(gave_up) = self.rotations.retry(rotation, retry_after, self.instant())
            && let Some(entry) = self.meetings.get(&gave_up.meeting)
        {
            entry.shared.emit(MeetingEvent::RoomRotationFailed {
                epoch: gave_up.epoch,
            });
        }
    }

    /// Retries the rotations that are due, while this device still leads the meeting
    /// at the rotation's epoch.
    pub(super) async fn rotations_due(&mut self) {
        for r in self.rotations.take_due(self.instant()) {
            let current = self
                .meetings
                .get(&r.meeting)
                .is_some_and(|e| e.state.is_leader() && e.state.sending_epoch() == r.to);
            if current {
                self.try_rotation(r).await;
            }
        }
    }

    fn new_entry(&self, state: MeetingState) -> Result<(Entry, MeetingParts), ClientError> {
        let me = state
            .roster()
            .get(&state.me())
            .map(|m| m.sender_index)
            .ok_or(ClientError::MeetingEnded)?;
        let (events_tx, events_rx) = mpsc::channel(MEETING_EVENT_QUEUE);
        let (frames_tx, frames_rx) = frame_queue(FrameBounds {
            frames: self.config.frame_queue,
            bytes: self.config.frame_queue_bytes,
        });
        let shared = Arc::new(MeetingShared::new(
            *state.meeting_id(),
            me,
            frames_tx,
            events_tx,
        ));
        if let Some(key) = state.key(state.sending_epoch()) {
            shared.set_sending_key(key)?;
        }
        let meeting = MeetingParts {
            shared: Arc::clone(&shared),
            events: events_rx,
            frames: frames_rx,
        };
        let me = self.creds.user().user_id;
        let had_others = state.roster().iter().any(|m| m.user_id != me);
        let entry = Entry {
            room: None,
            next_index: state.roster().next_sender_index(),
            had_others,
            last_keyframe_request: None,
            state,
            shared,
            proven: None,
            wanted: None,
            presence: Presence::default(),
            installed: BTreeSet::new(),
            safety: None,
            sas: None,
            sas_timing: Default::default(),
            sas_early: Default::default(),
            early_messages: Default::default(),
            rejoin_at: None,
            rejoin_failures: 0,
            node: None,
            redirects: 0,
            interrupted: false,
        };
        Ok((entry, meeting))
    }

    pub(super) async fn start_meeting(
        &mut self,
        invitees: &[UserId],
        media_kinds: &[MediaKind],
    ) -> Result<(MeetingParts, InviteReport), ClientError> {
        self.fail_if_closed()?;
        let verified = self.fetch_recipients(invitees).await?;
        if verified.recipients.is_empty() {
            return Err(ClientError::NobodyToInvite);
        }
        let now = self.now();
        let me = self.creds.device_id();
        let my_user = *self.creds.user();
        let mut members = vec![RosterMember::new(
            &my_user,
            self.creds.device().public().clone(),
            0,
        )];
        let mut invited = Vec::new();
        for (index, r) in (1u32..).zip(&verified.recipients) {
            members.push(roster_member(r, index, &self.trust)?);
            invited.push((r.device().user_id(), r.device().device_id()));
        }
        let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let meeting_id = MeetingId::generate(&my_user.user_id, &me, now, count, &mut self.rng);
        let key = MeetingKey::generate(Epoch::ZERO, &mut self.rng);
        let roster = Roster::new(members)?;
        let mut state = MeetingState::start(meeting_id, me, roster, key, self.config.rekey)?;
        let rings_until = now.saturating_add(ms(self.ring_timeout()));
        let invite = state.invite(media_kinds, rings_until)?;
        let invitees: Vec<DeviceId> = invited.iter().map(|(_, d)| *d).collect();
        state.ring(&invitees, rings_until)?;
        let (entry, meeting) = self.new_entry(state)?;
        self.meetings.insert(meeting_id, entry);
        self.enter_room(meeting_id, Epoch::ZERO, true).await;
        let ttl = ms(self.config.invite_ttl);
        let wire = invite.to_wire().with_caller(self.caller());
        self.seal_and_send(&verified.recipients, &wire, ttl, self.invite_urgency())
            .await?;
        self.refresh(meeting_id);
        Ok((
            meeting,
            InviteReport {
                invited,
                refused: verified.refused,
            },
        ))
    }

    pub(super) async fn accept(
        &mut self,
        id: MeetingId,
        media_kinds: &[MediaKind],
    ) -> Result<MeetingParts, ClientError> {
        self.fail_if_closed()?;
        // A participant pinned to another key since the invitation arrived: it stays
        // pending (the app may still reject it, or let it ring out).
        let pending = self.invitations.get(&id).ok_or(ClientError::NoInvitation)?;
        if let Some(changed) = pending.unpinned.iter().find(|user| {
            self.trust
                .get(&user.user_id)
                .is_some_and(|pinned| pinned.key != user.key)
        }) {
            return Err(ClientError::RosterKeyChanged(changed.user_id));
        }
        let pending = self
            .invitations
            .remove(&id)
            .ok_or(ClientError::NoInvitation)?;
        if pending.state.is_ended() {
            return Err(ClientError::MeetingEnded);
        }
        if pending.expires_at <= self.now() {
            // It stopped ringing a moment ago; the expiry timer has not run yet.
            self.emit(ClientEvent::MissedCall(pending.invitation));
            return Err(ClientError::InvitationExpired);
        }
        // The roster's users this device had not pinned are pinned now, as the
        // directory named them when the invitation arrived (its keys matched then),
        // but for those a Rekey removed meanwhile.
        let roster = pending.state.roster();
        let still_in: Vec<crate::identity::UserIdentity> = pending
            .unpinned
            .iter()
            .filter(|user| roster.iter().any(|m| m.user_id == user.user_id))
            .copied()
            .collect();
        for user in still_in {
            if self.trust.pin(user.user_id, user.key) == Pin::New {
                self.emit(ClientEvent::UserPinned(user));
            }
        }
        let leader = pending.state.leader();
        let (entry, meeting) = self.new_entry(pending.state)?;
        let epoch = entry.state.sending_epoch();
        self.meetings.insert(id, entry);
        self.reply(id, leader, true, media_kinds).await;
        self.join_room(id, epoch).await;
        self.pump(id).await;
        Ok(meeting)
    }

    pub(super) async fn reject(&mut self, id: MeetingId) -> Result<(), ClientError> {
        let pending = self
            .invitations
            .remove(&id)
            .ok_or(ClientError::NoInvitation)?;
        let leader = pending.state.leader();
        let (entry, _meeting) = self.new_entry(pending.state)?;
        self.meetings.insert(id, entry);
        self.reply(id, leader, false, &[]).await;
        self.meetings.remove(&id);
        Ok(())
    }

    async fn reply(&mut self, id: MeetingId, leader: DeviceId, accept: bool, kinds: &[MediaKind]) {
        let message = MeetingMessage {
            meeting_id: id,
            body: ControlMessage::InviteReply {
                accept,
                media_kinds: kinds.to_vec(),
            },
        };
        let Some(entry) = self.meetings.get(&id) else {
            return;
        };
        let out = Outgoing::new(&entry.state, vec![leader], message, None);
        self.send_outgoing(out).await;
    }

    pub(super) async fn leave(&mut self, id: MeetingId) -> Result<(), ClientError> {
        let entry = self
            .meetings
            .get_mut(&id)
            .ok_or(ClientError::MeetingEnded)?;
        entry.state.leave()?;
        self.pump(id).await;
        Ok(())
    }

    pub(super) async fn remove(
        &mut self,
        id: MeetingId,
        users: &[UserId],
    ) -> Result<(), ClientError> {
        let now = self.now();
        let entry = self
            .meetings
            .get_mut(&id)
            .ok_or(ClientError::MeetingEnded)?;
        entry.state.remove(users, &[], now)?;
        for device in entry.state.roster().devices_of_users(users) {
            entry.presence.forget(&device);
        }
        self.pump(id).await;
        Ok(())
    }

    pub(super) async fn invite_more(
        &mut self,
        id: MeetingId,
        users: &[UserId],
        media_kinds: &[MediaKind],
    ) -> Result<InviteReport, ClientError> {
        self.fail_if_closed()?;
        let entry = self.meetings.get(&id).ok_or(ClientError::MeetingEnded)?;
        if !entry.state.is_leader() {
            return Err(crate::meeting::rekey::RekeyError::LeaderOnly("add participants").into());
        }
        let verified = self.fetch_recipients(users).await?;
        // The ring starts now, after the directory lookup (which may have waited).
        let now = self.now();
        let expires = now.saturating_add(ms(self.ring_timeout()));
        let entry = self
            .meetings
            .get_mut(&id)
            .ok_or(ClientError::MeetingEnded)?;
        let fresh: Vec<Recipient> = verified
            .recipients
            .into_iter()
            .filter(|r| !entry.state.roster().contains(&r.device().device_id()))
            .collect();
        if fresh.is_empty() {
            return Err(ClientError::NobodyToInvite);
        }
        let start = entry
            .next_index
            .max(entry.state.roster().next_sender_index());
        let joiners: Vec<RosterMember> = (start..)
            .zip(&fresh)
            .map(|(index, r)| roster_member(r, index, &self.trust))
            .collect::<Result<_, _>>()?;
        let invited = joiners.iter().map(|j| (j.user_id, j.device_id)).collect();
        let invite = entry
            .state
            .add_participants(joiners, media_kinds, expires, now)?;
        self.pump(id).await;
        let ttl = ms(self.config.invite_ttl);
        let wire = invite.to_wire().with_caller(self.caller());
        self.seal_and_send(&fresh, &wire, ttl, self.invite_urgency())
            .await?;
        Ok(InviteReport {
            invited,
            refused: verified.refused,
        })
    }
}

/// A verified recipient as a roster member, with its user's pinned identity key and
/// its certificate (which pins its keys for the meeting).
fn roster_member(
    r: &Recipient,
    sender_index: u32,
    trust: &TrustStore,
) -> Result<RosterMember, ClientError> {
    let device = r.device();
    let user = trust
        .get(&device.user_id())
        .ok_or(ClientError::Protocol(ProtocolViolation::UnpinnedRecipient))?;
    Ok(RosterMember::new(&user, device.clone(), sender_index))
}

/// The room's leader devices as the SFU takes them (see `MeetingState::room_leaders`).
fn room_leader_ids(state: &MeetingState) -> Vec<Vec<u8>> {
    state
        .room_leaders(ROOM_LEADERS)
        .iter()
        .map(|d| d.as_bytes().to_vec())
        .collect()
}

/// Devices a room lists as leader and successors (the SFU's maximum).
const ROOM_LEADERS: usize = 4;

/// The roster as it enters safety numbers and words. Every roster identity key equals
/// this device's pinned key for its user (checked when the roster was accepted).
pub(super) fn roster_identities(state: &MeetingState) -> Vec<RosterIdentity> {
    state
        .roster()
        .iter()
        .map(|m| RosterIdentity::new(&m.identity_key, &m.device, m.sender_index))
        .collect()
}

/// The safety number of the sending epoch, computed again only when the epoch or the
/// roster changed since it was last computed (each step of the meeting refreshes what
/// the app sees, and the code hashes the whole roster: ~16 KiB with 99 devices).
fn current_safety_code(entry: &mut Entry) -> Option<SafetyCode> {
    let state = &entry.state;
    let key = state.key(state.sending_epoch())?;
    let at = (state.sending_epoch(), state.roster_version());
    if let Some((computed_at, code)) = &entry.safety
        && *computed_at == at
    {
        return Some(code.clone());
    }
    let code = safety_code(state, key);
    entry.safety = Some((at, code.clone()));
    Some(code)
}

/// The safety number of the sending epoch.
fn safety_code(state: &MeetingState, key: &MeetingKey) -> SafetyCode {
    let identities = roster_identities(state);
    let id = state.meeting_id();
    SafetyCode::compute(
        id.as_bytes(),
        key.epoch(),
        &key.commitment(id).0,
        &identities,
    )
}
