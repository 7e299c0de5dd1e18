//! Incoming containers: identify the sender, open, hand the payload to its meeting,
//! acknowledge. Also the room events the SFU pushes.

use conclave_proto::datagram::RoomHandle;
use conclave_proto::v1::{self, client_frame::Request, container_payload::Body};

use super::ConnectionId;
use super::engine::{Engine, ms};
use crate::client::directory::{Pin, TrustStore, check_roster_keys, verify_bundles};
use crate::client::lookups::LookupDecision;
use crate::client::protocol::invitations::InvitationRefused;
use crate::client::{
    CallerProfile, ClientEvent, Invitation, MediaKind, MeetingEvent, MessageRefusal,
};
use crate::container::{ContainerError, SealedContainer};
use crate::identity::{UserIdentity, VerifiedDevice};
use crate::meeting::rekey::{MeetingState, Roster};
use crate::meeting::{Epoch, MeetingId};
use crate::{DeviceId, UnixMillis, UserId};

/// How long a failed acknowledgement waits before it goes again, when the server
/// named no wait.
const ACK_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Why a container was not processed.
enum Refusal {
    /// Try again later (no connection): do not acknowledge.
    Later,
    /// Already processed (a redelivery after a lost ack): acknowledge quietly.
    Duplicate,
    /// Never processable: acknowledge and report.
    Refused {
        claimed: Option<UserId>,
        reason: MessageRefusal,
    },
}

impl Engine {
    /// A container arrived (live or from the mailbox).
    pub(super) async fn on_delivery(&mut self, delivery: v1::MailboxDelivery) {
        let outcome = self.process_container(&delivery.container).await;
        // Handled, whatever came of it: the server's mailbox window may move on.
        let window = self.config.mailbox_window_bytes();
        let report_now = self
            .acks
            .handled(delivery.container.len(), window, self.instant());
        match outcome {
            Ok(()) => {}
            Err(Refusal::Later) => {
                if report_now {
                    self.flush_acks().await;
                }
                return;
            }
            Err(Refusal::Duplicate) => {
                tracing::debug!("container redelivered after a lost ack; acknowledging again");
            }
            Err(Refusal::Refused { claimed, reason }) => {
                tracing::warn!(%reason, "refused a container");
                self.emit(ClientEvent::MessageRefused {
                    claimed_sender: claimed,
                    reason,
                });
            }
        }
        if self.acks.processed(delivery.mailbox_id, self.instant()) || report_now {
            self.flush_acks().await;
        }
    }

    /// Acknowledges processed containers in one request (and tells the app to save
    /// its prekey pool if containers used prekeys: review L2).
    pub(super) async fn flush_acks(&mut self) {
        let flush = self.acks.flush(self.link.is_some());
        if flush.prekeys_consumed > 0 {
            self.emit(ClientEvent::PrekeysConsumed {
                count: flush.prekeys_consumed,
            });
        }
        if !flush.has_request() {
            return;
        }
        let ack = Request::AckContainers(v1::AckContainers {
            mailbox_ids: flush.ids.clone(),
            handled_bytes: flush.handled_bytes.unwrap_or(0),
        });
        match self.request(ack).await {
            Ok(_) => {
                if let Some(total) = flush.handled_bytes {
                    self.acks.report_done(total);
                }
            }
            Err(e) if e.is_transient() => {
                // Rate limited, or the connection went: the ids and the report go
                // again (the server's mailbox window waits for the report).
                tracing::debug!(error = %e, "mailbox ack failed; trying again");
                let wait = e.retry_after().unwrap_or(ACK_RETRY);
                self.acks.report_failed(flush.ids, self.instant() + wait);
            }
            Err(e) => {
                // Unacknowledged containers are redelivered (and acked quietly then).
                tracing::warn!(error = %e, "mailbox ack failed; the containers will be redelivered");
            }
        }
    }

    async fn process_container(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let refused = |claimed, reason| Refusal::Refused { claimed, reason };
        let sealed = SealedContainer::decode(bytes)
            .map_err(|e| refused(None, MessageRefusal::Undecodable(e)))?;
        let claimed = sealed.claimed_sender();
        let (sender, first_seen) = self.identity_of(claimed).await?;
        let now = self.now();
        let opened = sealed
            .open(
                &sender,
                self.creds.device(),
                &mut self.prekeys,
                &mut self.replay,
                now,
            )
            .map_err(|e| match e {
                ContainerError::Replayed { .. } => Refusal::Duplicate,
                e => refused(Some(claimed), MessageRefusal::Unopenable(e)),
            })?;
        self.acks.prekey_consumed();
        // A sender seen for the first time is pinned only now that its container
        // opened under the key the directory gave for it.
        if first_seen && self.trust.pin(sender.user_id, sender.key) == Pin::New {
            self.emit(ClientEvent::UserPinned(sender));
        }
        let from = opened.sender().device_id();
        let recipients = opened.recipients().to_vec();
        let payload = opened.payload();
        tracing::debug!(
            target: super::REKEY_TRACE,
            me = ?self.creds.device_id(),
            body = body_name(payload.body.as_ref()),
            "container opened"
        );
        let meeting = match &payload.body {
            Some(Body::MeetingInvite(invite)) => {
                return self
                    .on_invite(opened.sender(), invite)
                    .await
                    .map_err(|e| match e {
                        Refusal::Refused { reason, .. } => refused(Some(claimed), reason),
                        other => other,
                    });
            }
            Some(Body::InviteReply(r)) => &r.meeting_id,
            Some(Body::Rekey(r)) => &r.meeting_id,
            Some(Body::EpochSwitch(s)) => &s.meeting_id,
            Some(Body::Leave(l)) => &l.meeting_id,
            Some(Body::Remove(r)) => &r.meeting_id,
            Some(Body::KeyRequest(r)) => &r.meeting_id,
            _ => return Ok(()),
        };
        let Some(meeting) = MeetingId::from_slice(meeting) else {
            return Err(refused(Some(claimed), MessageRefusal::BadMeetingId));
        };
        // Only the key leader of a meeting this device is in (or is invited to) may add
        // devices, so only its joiners are looked up. Before, anyone who could send this
        // device a container made it look up and pin every user listed as joining a
        // meeting it had never heard of.
        let from_leader = self.leader_of(&meeting) == Some(from);
        if let Some(Body::EpochSwitch(switch)) = &payload.body
            && !switch.joined.is_empty()
            && from_leader
        {
            self.check_joiners(meeting, &switch.joined)
                .await
                .map_err(|e| match e {
                    Refusal::Refused { reason, .. } => refused(Some(claimed), reason),
                    other => other,
                })?;
        }
        if let Some(Body::Rekey(rekey)) = &payload.body
            && rekey.reason == v1::RekeyReason::Resend as i32
            && from_leader
        {
            // A resend may list devices that joined since: prove them like joiners.
            self.check_joiners(meeting, &rekey.roster)
                .await
                .map_err(|e| match e {
                    Refusal::Refused { reason, .. } => refused(Some(claimed), reason),
                    other => other,
                })?;
        }
        self.on_control(meeting, from, &recipients, payload, now)
            .await;
        Ok(())
    }

    /// The key leader of meeting `id` as this device sees it (joined or invited to).
    fn leader_of(&self, id: &MeetingId) -> Option<DeviceId> {
        self.meetings
            .get(id)
            .map(|entry| entry.state.leader())
            .or_else(|| self.invitations.get(id).map(|p| p.state.leader()))
    }

    /// The identity of a container's claimed sender `user`: pinned (`false`), or as
    /// the directory names it (`true`: to be pinned if the container opens, so a
    /// container that does not open pins nobody). Lookups for unknown senders are
    /// bounded (review M8): a user the directory recently did not know is refused
    /// without asking again, and a flood of made-up senders leaves containers in the
    /// mailbox for later rather than spending this device's request budget.
    async fn identity_of(&mut self, user: UserId) -> Result<(UserIdentity, bool), Refusal> {
        if let Some(known) = self.trust.get(&user) {
            return Ok((known, false));
        }
        let mono = self.mono_ms();
        match self.sender_lookups.decide(&user, mono) {
            LookupDecision::Lookup => {}
            LookupDecision::KnownUnknown => {
                return Err(Refusal::Refused {
                    claimed: Some(user),
                    reason: MessageRefusal::SenderRecentlyUnknown,
                });
            }
            LookupDecision::OverBudget => {
                tracing::debug!("too many containers from unknown senders; this one waits");
                return Err(Refusal::Later);
            }
        }
        let bundles = self.certificates_of(&[user]).await?;
        let mut named = TrustStore::default();
        let verified = verify_bundles(&bundles, &mut named, false, self.now());
        self.report_refusals(&verified.refused);
        match named.get(&user) {
            Some(found) => {
                self.sender_lookups.found(&user);
                Ok((found, true))
            }
            None => {
                self.sender_lookups.not_found(user, self.mono_ms());
                Err(Refusal::Refused {
                    claimed: Some(user),
                    reason: MessageRefusal::SenderUnknown,
                })
            }
        }
    }

    /// The directory's entries (certificates only, no prekeys taken) for `users`.
    /// A failure that may pass (no connection, rate limit, server error) is `Later`:
    /// the container stays in the mailbox and is processed again.
    async fn certificates_of(&mut self, users: &[UserId]) -> Result<v1::Bundles, Refusal> {
        match self.fetch_bundles(users, &[], true).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_transient() => Err(Refusal::Later),
            Err(e) => Err(Refusal::Refused {
                claimed: users.first().copied(),
                reason: MessageRefusal::SenderLookupFailed(Box::new(e)),
            }),
        }
    }

    /// Pins the identity keys of `users` from the directory (no prekeys are taken).
    async fn lookup_users(&mut self, users: &[UserId]) -> Result<(), Refusal> {
        let bundles = self.certificates_of(users).await?;
        let now = self.now();
        let verified = verify_bundles(&bundles, &mut self.trust, false, now);
        for user in verified.newly_pinned {
            self.emit(ClientEvent::UserPinned(user));
        }
        self.report_refusals(&verified.refused);
        Ok(())
    }

    /// The users of `roster` this device has not pinned, each once.
    fn unpinned_users(&self, roster: &Roster) -> Vec<UserId> {
        let mut unknown: Vec<UserId> = roster
            .iter()
            .map(|m| m.user_id)
            .filter(|u| self.trust.get(u).is_none())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    /// Looks up (and pins) the users of `roster` never seen before, then checks every
    /// identity key the roster claims against the pinned one.
    async fn check_roster(&mut self, roster: &Roster) -> Result<(), Refusal> {
        let unknown = self.unpinned_users(roster);
        if !unknown.is_empty() {
            self.lookup_users(&unknown).await?;
        }
        check_roster_keys(roster, &self.trust).map_err(|reason| Refusal::Refused {
            claimed: None,
            reason,
        })
    }

    /// Checks an invitation's `roster` like [`Self::check_roster`] without pinning: the
    /// users neither pinned nor in `known` (users of the same invitation checked
    /// before) are looked up and the roster's keys checked against the directory's
    /// answer; those users are returned, to be pinned if the invitation is accepted. An
    /// invitation refused or left to lapse pins nobody.
    async fn check_invitation_roster(
        &mut self,
        roster: &Roster,
        known: &[UserIdentity],
    ) -> Result<Vec<UserIdentity>, Refusal> {
        let unknown: Vec<UserId> = self
            .unpinned_users(roster)
            .into_iter()
            .filter(|u| known.iter().all(|k| k.user_id != *u))
            .collect();
        // The roster's users as this device would trust them: the pinned ones, those
        // of the invitation checked before, and the others as the directory names them.
        let mut scratch = TrustStore::new(
            roster
                .iter()
                .filter_map(|m| self.trust.get(&m.user_id))
                .chain(known.iter().copied()),
        );
        let mut unpinned = Vec::new();
        if !unknown.is_empty() {
            let bundles = self.certificates_of(&unknown).await?;
            let verified = verify_bundles(&bundles, &mut scratch, false, self.now());
            self.report_refusals(&verified.refused);
            unpinned = verified.newly_pinned;
        }
        check_roster_keys(roster, &scratch).map_err(|reason| Refusal::Refused {
            claimed: None,
            reason,
        })?;
        Ok(unpinned)
    }

    /// Devices an `EpochSwitch` (or a resent Rekey) adds to `meeting`: their
    /// certificates must prove their users, under keys this device pinned, or, while
    /// `meeting` is only an invitation, under the keys it would pin on accepting.
    async fn check_joiners(
        &mut self,
        meeting: MeetingId,
        joined: &[v1::RosterEntry],
    ) -> Result<(), Refusal> {
        let now = self.now();
        let roster =
            Roster::from_proto(joined, &Roster::default(), now).map_err(|e| Refusal::Refused {
                claimed: None,
                reason: MessageRefusal::BadRoster(e),
            })?;
        if self.meetings.contains_key(&meeting) {
            return self.check_roster(&roster).await;
        }
        let Some(known) = self.invitations.get(&meeting).map(|p| p.unpinned.clone()) else {
            return Ok(());
        };
        let new = self.check_invitation_roster(&roster, &known).await?;
        if let Some(pending) = self.invitations.get_mut(&meeting) {
            pending.unpinned.extend(new);
        }
        Ok(())
    }

    /// An invitation from `sender` (whose certificate the container layer verified
    /// under its pinned key). Shown only if every roster entry is proven by its user's
    /// pinned key and the sender is on the roster as itself and is the key leader.
    async fn on_invite(
        &mut self,
        sender: &VerifiedDevice,
        invite: &v1::MeetingInvite,
    ) -> Result<(), Refusal> {
        let refuse = |reason| Refusal::Refused {
            claimed: None,
            reason,
        };
        let now = self.now();
        let state =
            MeetingState::from_invite(self.creds.device_id(), invite, self.config.rekey, now)
                .map_err(|e| refuse(MessageRefusal::InvalidInvite(e)))?;
        let id = *state.meeting_id();
        if self.meetings.contains_key(&id) || self.invitations.contains(&id) {
            return Ok(());
        }
        // Invitations hold meeting keys: bounded, per inviting user and in all, and
        // purged when they expire (review L8).
        self.purge_invitations(now);
        let inviter = sender.user_id();
        self.invitations.admit(&inviter).map_err(|e| {
            refuse(match e {
                InvitationRefused::TooManyFromUser(n) => {
                    MessageRefusal::TooManyInvitationsFromUser(n)
                }
                InvitationRefused::TooMany(n) => MessageRefusal::TooManyInvitations(n),
            })
        })?;
        let from = sender.device_id();
        if state.leader() != from {
            return Err(refuse(MessageRefusal::InviteNotFromLeader));
        }
        if state
            .roster()
            .get(&from)
            .is_none_or(|m| !m.device.same_keys(sender))
        {
            return Err(refuse(MessageRefusal::InviterNotOnRoster));
        }
        let unpinned = self.check_invitation_roster(state.roster(), &[]).await?;
        let participants = crate::client::client_core::meetings::participants(&state);
        let Some(from) = participants.iter().find(|p| p.device_id == from).cloned() else {
            return Err(refuse(MessageRefusal::InviterNotOnRoster));
        };
        let invitation = Invitation {
            meeting_id: id,
            from,
            media_kinds: MediaKind::from_wire(&invite.media_kinds),
            participants,
            expires_at: UnixMillis(invite.expires_at_ms),
            caller: CallerProfile::from_wire(invite.caller.as_ref()),
        };
        if invitation.expires_at <= now {
            // Opened after its ring deadline (from the mailbox, after being offline):
            // it never rings, and its key goes now. The caller rekeyed this device out.
            self.emit(ClientEvent::MissedCall(invitation));
            return Ok(());
        }
        self.invitations
            .insert(state, inviter, invitation.clone(), unpinned, now);
        self.emit(ClientEvent::Invited(invitation));
        Ok(())
    }

    /// Drops the invitations that stopped ringing by `now` (their meeting keys with
    /// them) and tells the app of each missed call.
    pub(super) fn purge_invitations(&mut self, now: UnixMillis) {
        for invitation in self.invitations.purge(now) {
            self.emit(ClientEvent::MissedCall(invitation));
        }
    }

    async fn on_control(
        &mut self,
        id: MeetingId,
        from: DeviceId,
        recipients: &[DeviceId],
        payload: &v1::ContainerPayload,
        now: UnixMillis,
    ) {
        if let Some(entry) = self.meetings.get_mut(&id) {
            if let Some(Body::InviteReply(reply)) = &payload.body
                && let Some(p) = crate::client::client_core::meetings::participants(&entry.state)
                    .into_iter()
                    .find(|p| p.device_id == from)
            {
                entry.shared.emit(MeetingEvent::Reply {
                    from: p,
                    accepted: reply.decision == v1::invite_reply::Decision::Accept as i32,
                    media_kinds: MediaKind::from_wire(&reply.media_kinds),
                });
            }
            if matches!(payload.body, Some(Body::Leave(_))) {
                entry.presence.forget(&from);
            }
            if let Err(e) = entry.state.on_message(from, recipients, payload, now) {
                tracing::warn!(error = %e, "refused a meeting control message");
            }
            self.pump(id).await;
        } else if let Some(pending) = self.invitations.get_mut(&id) {
            // Not answered yet: follow the epochs so accepting joins the current one.
            let _ = pending.state.on_message(from, recipients, payload, now);
            while pending.state.poll_output().is_some() {}
            // The call is over for this device before it answered: it was removed
            // or rung out (the state ended), or the caller hung up (the inviting
            // device left, so the key leader changed). Stop ringing: a missed call.
            let caller_gone = pending.state.leader() != pending.invitation.from.device_id;
            if (pending.state.is_ended() || caller_gone)
                && let Some(pending) = self.invitations.remove(&id)
            {
                self.emit(ClientEvent::MissedCall(pending.invitation));
            }
        }
    }

    /// A member device's connection left a room: start its drop timer. Every device
    /// watches every member: the leader rekeys a dropped device out, the others take
    /// over if the leader is the one that dropped (see `MeetingState::device_dropped`).
    pub(super) fn on_member_left(&mut self, conn: ConnectionId, handle: RoomHandle, device: &[u8]) {
        let window = ms(self.config.drop_after);
        let mono = self.mono_ms();
        let Some((entry, member)) = self.room_member(conn, handle, device) else {
            return;
        };
        entry
            .presence
            .left(member.device_id, member.sender_index, mono, window);
    }

    /// A member device joined a room (again): it is present, whatever its media.
    pub(super) fn on_member_joined(
        &mut self,
        conn: ConnectionId,
        handle: RoomHandle,
        device: &[u8],
    ) {
        if let Some((entry, member)) = self.room_member(conn, handle, device) {
            entry.presence.forget(&member.device_id);
        }
    }

    /// The meeting of room `handle` and its roster member `device`, if both exist.
    fn room_member(
        &mut self,
        conn: ConnectionId,
        handle: RoomHandle,
        device: &[u8],
    ) -> Option<(
        &mut super::engine::Entry,
        crate::meeting::rekey::RosterMember,
    )> {
        let id = self.meeting_of(conn, handle)?;
        let device = DeviceId::from_slice(device)?;
        let entry = self.meetings.get_mut(&id)?;
        let member = entry.state.roster().get(&device).cloned()?;
        Some((entry, member))
    }

    /// The room moved to `epoch`: that is the signal to send on a Rekey of `epoch`
    /// installed here (the meeting state decides); prove it if this device holds its
    /// key.
    pub(super) async fn on_room_epoch(
        &mut self,
        conn: ConnectionId,
        handle: RoomHandle,
        epoch: u64,
    ) {
        let epoch = Epoch(epoch);
        let Some(id) = self.meeting_of(conn, handle) else {
            return;
        };
        tracing::debug!(
            target: super::REKEY_TRACE,
            me = ?self.creds.device_id(),
            epoch = epoch.get(),
            "room epoch announced"
        );
        let now = self.now();
        if let Some(entry) = self.meetings.get_mut(&id) {
            let _ = entry.state.room_epoch(epoch, now);
        }
        // Switching proves the new epoch on the way.
        self.pump(id).await;
        let Some(entry) = self.meetings.get(&id) else {
            return;
        };
        if entry.proven.is_some_and(|p| p >= epoch) || entry.state.key(epoch).is_none() {
            return;
        }
        self.join_room(id, epoch).await;
    }

    /// The SFU evicted this connection from a room: rejoin at the current epoch.
    pub(super) async fn on_evicted(&mut self, conn: ConnectionId, handle: RoomHandle) {
        let Some(id) = self.meeting_of(conn, handle) else {
            return;
        };
        self.unlink_meeting(id, None);
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        super::links::lose_room(entry);
        let epoch = entry.state.sending_epoch();
        self.join_room(id, epoch).await;
        self.pump(id).await;
    }
}

/// A payload body's kind, for the rekey trace.
fn body_name(body: Option<&Body>) -> &'static str {
    match body {
        Some(Body::MeetingInvite(_)) => "invite",
        Some(Body::InviteReply(_)) => "reply",
        Some(Body::Rekey(_)) => "rekey",
        Some(Body::EpochSwitch(_)) => "switch",
        Some(Body::Leave(_)) => "leave",
        Some(Body::Remove(_)) => "remove",
        Some(Body::KeyRequest(_)) => "key-request",
        _ => "other",
    }
}
