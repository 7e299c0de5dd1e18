//! In-meeting messages (docs/protocol.md 11): the app's chat and data, sealed by
//! [`MessageCrypto`](crate::meeting::messages::MessageCrypto) in the meeting's shared
//! state. Reliable messages travel as room messages on the control channel (relayed in
//! order per sender); lossy ones as `Data` datagrams (opened on the media reader).
//! Reliable messages of an epoch whose key has not arrived wait in
//! [`EarlyMessages`](crate::client::protocol::early_messages::EarlyMessages).

use conclave_proto::Message as _;
use conclave_proto::v1::{self, client_frame::Request, room_payload};

use super::engine::{Engine, Entry};
use crate::client::protocol::early_messages::MAX_EPOCHS_AHEAD;
use crate::client::{ClientError, MeetingEvent};
use crate::meeting::MeetingId;
use crate::meeting::messages::{Delivery, MessageError};

impl Engine {
    /// Seals and sends one message of the app.
    pub(super) async fn send_message(
        &mut self,
        meeting: MeetingId,
        delivery: Delivery,
        topic: &str,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let entry = self
            .meetings
            .get(&meeting)
            .ok_or(ClientError::MeetingEnded)?;
        if delivery != Delivery::Reliable {
            return entry
                .shared
                .send_lossy_message(self.creds.device(), topic, body);
        }
        // Check the room before sealing, so a refused send spends no sequence number.
        let handle = entry.room.ok_or(ClientError::NotJoined)?;
        let conn = self
            .room_link(meeting)
            .map(|l| l.conn)
            .ok_or(ClientError::NotJoined)?;
        let frame = entry
            .shared
            .seal_message(self.creds.device(), delivery, topic, body)?;
        let payload = v1::RoomPayload {
            body: Some(room_payload::Body::MeetingMessage(frame)),
        }
        .encode_to_vec();
        let request = Request::SendRoomMessage(v1::SendRoomMessage {
            room_handle: handle.get(),
            payload,
        });
        match self.request_on(conn, request).await? {
            v1::response::Result::RoomMessageSent(_) => Ok(()),
            _ => Err(ClientError::unexpected_answer("SendRoomMessage")),
        }
    }

    /// A reliable message relayed by the room of meeting `id`.
    pub(super) fn on_meeting_message(&mut self, id: MeetingId, frame: Vec<u8>) {
        let now = self.instant();
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        match entry.shared.open_message(Delivery::Reliable, &frame) {
            Ok(message) => entry.shared.emit(MeetingEvent::Message(message)),
            Err(MessageError::UnknownKey { epoch, .. }) if ahead(entry, epoch) => {
                let dropped = entry.early_messages.dropped();
                entry.early_messages.keep(epoch, frame, now);
                if entry.early_messages.dropped() > dropped {
                    tracing::warn!(
                        dropped = entry.early_messages.dropped(),
                        "too many meeting messages wait for a key; the oldest was dropped"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "meeting message dropped"),
        }
    }
}

/// Whether `epoch` is above every epoch `entry` holds (its key may still come), and
/// not more than [`MAX_EPOCHS_AHEAD`] above the newest.
fn ahead(entry: &Entry, epoch: u64) -> bool {
    let newest = entry.state.epochs().map(|e| e.get()).max().unwrap_or(0);
    epoch > newest && epoch - newest <= MAX_EPOCHS_AHEAD
}

/// Opens the waiting messages whose key has arrived, in arrival order; drops those
/// whose key never will (a later epoch is held, theirs is not).
pub(super) fn deliver_early_messages(entry: &mut Entry) {
    if entry.early_messages.is_empty() {
        return;
    }
    let shared = &entry.shared;
    let state = &entry.state;
    let waiting = entry.early_messages.take(
        |epoch| shared.holds_message_epoch(epoch),
        |epoch| state.epochs().any(|e| e.get() > epoch),
    );
    for (ready, frame) in waiting {
        if !ready {
            tracing::debug!("meeting message of an epoch never received dropped");
            continue;
        }
        match shared.open_message(Delivery::Reliable, &frame) {
            Ok(message) => shared.emit(MeetingEvent::Message(message)),
            Err(e) => tracing::debug!(error = %e, "meeting message dropped"),
        }
    }
}
