//! Keyframe requests (the role of RTCP PLI): a receiver asks a sender slot of the
//! room through the SFU; the sender's app hears of it at most once per
//! [`KEYFRAME_REQUEST_INTERVAL`].

use std::time::Instant;

use conclave_proto::datagram::RoomHandle;
use conclave_proto::v1::{self, client_frame::Request};

use super::ConnectionId;
use super::engine::Engine;
use crate::client::{ClientError, KEYFRAME_REQUEST_INTERVAL, MeetingEvent};
use crate::meeting::MeetingId;

impl Engine {
    /// Asks the SFU to relay a keyframe request to the slot `sender_index`'s frames
    /// came from.
    pub(super) async fn request_keyframe(
        &mut self,
        meeting: MeetingId,
        sender_index: u32,
    ) -> Result<(), ClientError> {
        let entry = self
            .meetings
            .get(&meeting)
            .ok_or(ClientError::MeetingEnded)?;
        let slot = entry
            .shared
            .slot_of(sender_index)
            .ok_or(ClientError::NoFramesFrom { sender_index })?;
        let handle = entry.room.ok_or(ClientError::NotJoined)?;
        let conn = self
            .room_link(meeting)
            .map(|l| l.conn)
            .ok_or(ClientError::NotJoined)?;
        let request = Request::RequestKeyframe(v1::RequestKeyframe {
            room_handle: handle.get(),
            slot: u32::from(slot.get()),
        });
        match self.request_on(conn, request).await? {
            v1::response::Result::KeyframeRequestSent(_) => Ok(()),
            _ => Err(ClientError::unexpected_answer("RequestKeyframe")),
        }
    }

    /// A member asked this device for a keyframe: tell the app, unless it was told
    /// less than [`KEYFRAME_REQUEST_INTERVAL`] ago.
    pub(super) fn on_keyframe_requested(
        &mut self,
        conn: ConnectionId,
        request: &v1::KeyframeRequested,
    ) {
        let Some(id) = self.meeting_of(conn, RoomHandle(request.room_handle)) else {
            return;
        };
        let now = self.instant();
        let Some(entry) = self.meetings.get_mut(&id) else {
            return;
        };
        if !tell_app(entry.last_keyframe_request, now) {
            tracing::debug!("a keyframe request merged into the previous one");
            return;
        }
        entry.last_keyframe_request = Some(now);
        entry.shared.emit(MeetingEvent::KeyframeRequested);
    }
}

/// Whether a keyframe request arriving at `now` reaches the app, the last one that did
/// having arrived at `last`.
fn tell_app(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= KEYFRAME_REQUEST_INTERVAL)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn requests_closer_than_the_interval_are_merged() {
        let t0 = Instant::now();
        assert!(tell_app(None, t0));
        assert!(!tell_app(Some(t0), t0));
        assert!(!tell_app(Some(t0), t0 + Duration::from_millis(249)));
        assert!(tell_app(Some(t0), t0 + KEYFRAME_REQUEST_INTERVAL));
        // A clock that seems to step back never lets a flood through.
        assert!(!tell_app(Some(t0 + Duration::from_secs(1)), t0));
    }
}
