//! The safety-words round of each meeting's sending epoch (review M4): the sans-IO
//! [`SasRound`] decides; this starts it once the epoch has settled
//! ([`SasTiming`](crate::client::protocol::sas_timing)), sends its messages as room
//! messages, keeps messages that come before the round, resends for members that were
//! not in the room yet, and publishes the words.

use conclave_proto::Message as _;
use conclave_proto::datagram::RoomHandle;
use conclave_proto::v1::{self, client_frame::Request};
use rand_core::RngCore;

use super::ConnectionId;
use super::engine::{Engine, Entry};
use crate::DeviceId;
use crate::client::MeetingEvent;
use crate::meeting::{Epoch, MeetingId};
use crate::safety::SafetyWords;
use crate::safety::round::SasRound;

/// Largest room message this device decodes.
const MAX_MESSAGE_BYTES: usize = conclave_proto::limits::MAX_ROOM_MESSAGE_BYTES;

impl Engine {
    /// Arms the settle timer of the sending epoch's round if that round has not
    /// started (not while sending is paused: this device lacks the room's key).
    pub(super) fn sas_epoch_entered(&mut self, id: MeetingId) {
        let now = self.instant();
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let epoch = entry.state.sending_epoch();
        if entry.state.is_sending_paused()
            || entry.state.is_ended()
            || entry.sas.as_ref().is_some_and(|r| r.epoch() == epoch)
        {
            return;
        }
        if entry.sas.is_some() {
            // The words belonged to the epoch this device has left.
            entry.sas = None;
            entry.shared.set_info(|i| i.safety_words = None);
        }
        entry.sas_timing.epoch_entered(epoch, now);
    }

    /// Starts the rounds whose epoch has settled and resends what is due.
    pub(super) async fn sas_timers_due(&mut self) {
        let now = self.instant();
        let ids: Vec<MeetingId> = self.meetings.keys().copied().collect();
        for id in ids {
            let Some(entry) = self.meetings.get_mut(&id) else {
                continue;
            };
            if let Some(epoch) = entry.sas_timing.start_due(now) {
                if entry.state.sending_epoch() == epoch && !entry.state.is_sending_paused() {
                    self.start_sas_round(id);
                    self.flush_sas(id).await;
                }
                continue;
            }
            // Without a room there is nobody to resend to: the resend is spent (members
            // joining later bring one on).
            if entry.sas_timing.resend_due(now) && self.room_link(id).is_some() {
                self.resend_sas(id).await;
            }
        }
    }

    /// Starts the round of the sending epoch, with the messages that came before it.
    fn start_sas_round(&mut self, id: MeetingId) {
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let epoch = entry.state.sending_epoch();
        let mut nonce = [0u8; 32];
        self.rng.fill_bytes(&mut nonce);
        let members = entry
            .state
            .roster()
            .iter()
            .map(|m| (m.device_id, *m.device.signing_key()))
            .collect::<Vec<_>>();
        entry.sas = Some(SasRound::new(
            id.as_bytes(),
            epoch,
            self.creds.device_id(),
            members,
            nonce,
        ));
        entry.shared.set_info(|i| i.safety_words = None);
        for message in entry.sas_early.take(epoch.get()) {
            apply_round_message(id, entry, &message);
        }
    }

    /// Sends the round's queued messages to the meeting's room (once joined).
    pub(super) async fn flush_sas(&mut self, id: MeetingId) {
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let (Some(handle), Some(round)) = (entry.room, entry.sas.as_mut()) else {
            return;
        };
        let mut messages = Vec::new();
        while let Some(m) = round.poll_message(self.creds.device()) {
            messages.push(m);
        }
        for m in messages {
            self.send_room_message(id, handle, &m).await;
        }
    }

    /// A member joined room `handle`: if it takes part in the running round, resend
    /// this device's round messages soon.
    pub(super) fn resend_sas_soon(
        &mut self,
        conn: ConnectionId,
        handle: RoomHandle,
        device: &[u8],
    ) {
        let Some(id) = self.meeting_of(conn, handle) else {
            return;
        };
        let now = self.instant();
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let in_round = DeviceId::from_slice(device)
            .is_some_and(|d| entry.sas.is_some() && entry.state.roster().get(&d).is_some());
        if in_round {
            entry.sas_timing.member_joined(now);
        }
    }

    /// Resends this device's round messages to the room.
    async fn resend_sas(&mut self, id: MeetingId) {
        let Some(entry) = self.meetings.get(&id) else {
            return;
        };
        let (Some(handle), Some(round)) = (entry.room, entry.sas.as_ref()) else {
            return;
        };
        let messages = round.own_messages(self.creds.device());
        for m in messages {
            self.send_room_message(id, handle, &m).await;
        }
    }

    /// Sends `message` to meeting `id`'s room `handle`, on the connection it lives on.
    async fn send_room_message(
        &mut self,
        id: MeetingId,
        handle: RoomHandle,
        message: &v1::SasRoundMessage,
    ) {
        let Some(conn) = self.room_link(id).map(|l| l.conn) else {
            return;
        };
        let request = Request::SendRoomMessage(v1::SendRoomMessage {
            room_handle: handle.get(),
            payload: v1::RoomPayload {
                body: Some(v1::room_payload::Body::SasRound(message.clone())),
            }
            .encode_to_vec(),
        });
        if let Err(e) = self.request_on(conn, request).await {
            tracing::debug!(error = %e, "a safety-words message was not sent; it is resent");
        }
    }

    /// A room message: a step of some member's safety-words round, or a reliable
    /// in-meeting message.
    pub(super) async fn on_room_message(&mut self, conn: ConnectionId, message: v1::RoomMessage) {
        if message.payload.len() > MAX_MESSAGE_BYTES {
            return;
        }
        let Some(id) = self.meeting_of(conn, RoomHandle(message.room_handle)) else {
            return;
        };
        match v1::RoomPayload::decode(message.payload.as_slice()) {
            Ok(v1::RoomPayload {
                body: Some(v1::room_payload::Body::SasRound(step)),
            }) => self.on_round_message(id, step).await,
            Ok(v1::RoomPayload {
                body: Some(v1::room_payload::Body::MeetingMessage(frame)),
            }) => self.on_meeting_message(id, frame),
            _ => tracing::debug!("undecodable room message ignored"),
        }
    }

    /// A step of some member's safety-words round.
    async fn on_round_message(&mut self, id: MeetingId, step: v1::SasRoundMessage) {
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let running = entry.sas.as_ref().map(|r| r.epoch().get());
        if running == Some(step.epoch) {
            apply_round_message(id, entry, &step);
            self.flush_sas(id).await;
        } else if running.is_none_or(|r| step.epoch > r)
            && step.epoch >= entry.state.sending_epoch().get()
        {
            // A round this device has not started yet (its epoch is settling here, or
            // this device has not switched yet).
            let newest = entry
                .state
                .epochs()
                .map(Epoch::get)
                .max()
                .unwrap_or_else(|| entry.state.sending_epoch().get());
            entry.sas_early.keep(step, newest.saturating_add(1));
        } else {
            tracing::debug!(
                epoch = step.epoch,
                "safety-words message of a past round ignored"
            );
        }
    }
}

/// Hands `message` to `entry`'s running round; publishes the words once complete.
fn apply_round_message(id: MeetingId, entry: &mut Entry, message: &v1::SasRoundMessage) {
    let Some(round) = entry.sas.as_mut() else {
        return;
    };
    let was_complete = round.is_complete();
    if let Err(e) = round.on_message(message) {
        tracing::debug!(error = %e, "safety-words message not used");
        return;
    }
    if !was_complete && let Some(nonces) = round.nonces() {
        let identities = crate::client::client_core::meetings::roster_identities(&entry.state);
        let words = SafetyWords::compute(id.as_bytes(), round.epoch(), &identities, &nonces);
        entry.shared.set_info(|i| i.safety_words = Some(words));
        entry.shared.emit(MeetingEvent::SafetyWords(words));
    }
}
