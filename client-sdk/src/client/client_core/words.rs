//! The safety-words round of each meeting's sending epoch (review M4): the sans-IO
//! [`SasRound`] decides; this sends its messages as room messages, resends them a few
//! times for members that were not in the room yet, and publishes the words.

use std::time::Duration;

use conclave_proto::Message as _;
use conclave_proto::datagram::RoomHandle;
use conclave_proto::v1::{self, client_frame::Request};
use rand_core::RngCore;

use super::ConnectionId;
use super::engine::Engine;
use crate::client::MeetingEvent;
use crate::meeting::MeetingId;
use crate::safety::SafetyWords;
use crate::safety::round::SasRound;

/// How often this device resends its own round messages.
const RESEND_EVERY: Duration = Duration::from_secs(1);
/// Resends per round (bounded: a participant that never comes stops the words, not
/// the traffic).
const RESENDS: u32 = 15;
/// Largest room message this device decodes.
const MAX_MESSAGE_BYTES: usize = 1_024;

impl Engine {
    /// Starts the round of the sending epoch if it has not started yet (not while
    /// sending is paused: this device lacks the room's key).
    pub(super) fn start_sas_round(&mut self, id: MeetingId) {
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
        entry.sas_resend = Some((now + RESEND_EVERY, RESENDS));
        entry.shared.set_info(|i| i.safety_words = None);
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

    /// A member joined room `handle`: resend this device's round messages at once.
    pub(super) fn resend_sas_soon(&mut self, conn: ConnectionId, handle: RoomHandle) {
        let Some(id) = self.meeting_of(conn, handle) else {
            return;
        };
        let now = self.instant();
        if let Some(entry) = self.meetings.get_mut(&id) {
            let left = entry.sas_resend.map_or(RESENDS, |(_, n)| n.max(1));
            entry.sas_resend = Some((now, left));
        }
    }

    /// Resends the round messages that are due.
    pub(super) async fn sas_resends_due(&mut self) {
        let now = self.instant();
        let due: Vec<MeetingId> = self
            .meetings
            .iter()
            .filter(|(id, e)| {
                e.sas_resend.is_some_and(|(at, _)| at <= now) && self.room_link(**id).is_some()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(entry) = self.meetings.get_mut(&id) else {
                continue;
            };
            let left = entry.sas_resend.map_or(0, |(_, n)| n.saturating_sub(1));
            entry.sas_resend = (left > 0).then(|| (now + RESEND_EVERY, left));
            let (Some(handle), Some(round)) = (entry.room, entry.sas.as_ref()) else {
                continue;
            };
            let messages = round.own_messages(self.creds.device());
            for m in messages {
                self.send_room_message(id, handle, &m).await;
            }
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
            payload: message.encode_to_vec(),
        });
        if let Err(e) = self.request_on(conn, request).await {
            tracing::debug!(error = %e, "a safety-words message was not sent; it is resent");
        }
    }

    /// A room message: a step of some member's safety-words round.
    pub(super) async fn on_room_message(&mut self, conn: ConnectionId, message: v1::RoomMessage) {
        if message.payload.len() > MAX_MESSAGE_BYTES {
            return;
        }
        let Some(id) = self.meeting_of(conn, RoomHandle(message.room_handle)) else {
            return;
        };
        let Ok(step) = v1::SasRoundMessage::decode(message.payload.as_slice()) else {
            tracing::debug!("undecodable room message ignored");
            return;
        };
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        let Some(round) = entry.sas.as_mut() else {
            return;
        };
        let was_complete = round.is_complete();
        if let Err(e) = round.on_message(&step) {
            // Another epoch's round (a member switched earlier or later) is normal;
            // its messages are resent.
            tracing::debug!(error = %e, "safety-words message not used");
            return;
        }
        if !was_complete && let Some(nonces) = round.nonces() {
            let identities = crate::client::client_core::meetings::roster_identities(&entry.state);
            let words = SafetyWords::compute(id.as_bytes(), round.epoch(), &identities, &nonces);
            entry.shared.set_info(|i| i.safety_words = Some(words));
            entry.shared.emit(MeetingEvent::SafetyWords(words));
        }
        self.flush_sas(id).await;
    }
}
