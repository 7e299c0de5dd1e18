//! A meeting: its calls, and the pump that hands its events and frames to the app.

use std::sync::Arc;

use conclave_sdk::client as sdk;

use crate::ConclaveError;
use crate::client::call_listener;
use crate::ids::meeting_hex;
use crate::runtime::{on_runtime, runtime_handle};
use crate::types::{
    Delivery, InviteReport, MediaFrame, MediaKind, MediaStats, MeetingEvent, Participant,
    SafetyWords, kinds_to_sdk, participants,
};

/// Frames handed to the app in one `on_frames` call at most.
const MAX_FRAMES_PER_CALL: usize = 64;

/// Receives a meeting's events and media. Called from the SDK's threads, one call at
/// a time per meeting, in order: return quickly (queue frames for the decoder).
#[uniffi::export(with_foreign)]
pub trait MeetingListener: Send + Sync {
    /// A control event (roster, epoch, safety words, end of the meeting).
    fn on_event(&self, event: MeetingEvent);
    /// Decrypted media frames, in arrival order; frames that arrived together come in
    /// one call.
    fn on_frames(&self, frames: Vec<MediaFrame>);
}

/// A new meeting and who was invited to it.
#[derive(uniffi::Record)]
pub struct StartedMeeting {
    /// The meeting.
    pub meeting: Arc<Meeting>,
    /// Who was invited and who was refused.
    pub report: InviteReport,
}

/// A meeting this device takes part in. Its listener gets its events and frames until
/// it ends (`leave`, removal, or `Client::disconnect`), whether or not the app keeps
/// this object; the object is what sends, reads the roster and leaves.
#[derive(uniffi::Object)]
pub struct Meeting {
    handle: sdk::MeetingHandle,
}

impl core::fmt::Debug for Meeting {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Meeting")
            .field("id", &self.handle.id())
            .finish_non_exhaustive()
    }
}

impl Meeting {
    /// Wraps an SDK meeting and starts delivering its events to `listener`.
    pub(crate) fn start(
        mut meeting: sdk::Meeting,
        listener: Arc<dyn MeetingListener>,
    ) -> Arc<Self> {
        let handle = meeting.handle();
        // Ends with the meeting: `next_event` gives `None` after `Ended` and the last
        // frames, or once the client is closed.
        runtime_handle().spawn(async move {
            let mut batch = Vec::new();
            // `None` once the meeting ended and its last frames were read.
            while let Some(event) = meeting.next_event().await {
                match event {
                    sdk::MeetingEvent::Frame(first) => {
                        batch.push(first);
                        meeting.try_recv_frames(&mut batch, MAX_FRAMES_PER_CALL - 1);
                        let frames: Vec<MediaFrame> =
                            batch.drain(..).filter_map(MediaFrame::from_sdk).collect();
                        call_listener("meeting listener", || listener.on_frames(frames));
                    }
                    other => {
                        if let Some(event) = MeetingEvent::from_sdk(&other) {
                            call_listener("meeting listener", || listener.on_event(event));
                        }
                    }
                }
            }
        });
        Arc::new(Meeting { handle })
    }
}

#[uniffi::export]
impl Meeting {
    /// The meeting's id (hex).
    pub fn id(&self) -> String {
        meeting_hex(&self.handle.id())
    }

    /// Encrypts `data` with the current epoch's key and sends it. Does not wait: the
    /// frame is encrypted and handed to QUIC (media is loss-tolerant).
    ///
    /// # Errors
    /// [`ConclaveError::NotJoined`] while the room is not joined,
    /// [`ConclaveError::SendingPaused`] while a newer key is awaited,
    /// [`ConclaveError::FrameTooLarge`], [`ConclaveError::MeetingEnded`].
    pub fn send_frame(
        &self,
        kind: MediaKind,
        keyframe: bool,
        data: Vec<u8>,
    ) -> Result<(), ConclaveError> {
        Ok(self.handle.send_frame(kind.into(), keyframe, &data)?)
    }

    /// [`Self::send_frame`] with the capture time, µs on a steady clock of the app's
    /// (receivers get it in `MediaFrame::capture_us`, for lip sync).
    ///
    /// # Errors
    /// As [`Self::send_frame`].
    pub fn send_frame_at(
        &self,
        kind: MediaKind,
        keyframe: bool,
        capture_us: u64,
        data: Vec<u8>,
    ) -> Result<(), ConclaveError> {
        Ok(self
            .handle
            .send_frame_at(kind.into(), keyframe, capture_us, &data)?)
    }

    /// Sends a chat or data message to the other participants (`topic`: the app's
    /// label, at most 64 bytes). They get `MeetingEvent.Message`. Reliable messages are
    /// relayed in order (at most 4,096 bytes); lossy ones are one datagram (at most 900).
    ///
    /// # Errors
    /// [`ConclaveError::MessageTooLarge`] above the limits, [`ConclaveError::NotJoined`]
    /// while the room is not joined, [`ConclaveError::MeetingEnded`].
    pub async fn send_message(
        &self,
        delivery: Delivery,
        topic: String,
        body: Vec<u8>,
    ) -> Result<(), ConclaveError> {
        let handle = self.handle.clone();
        on_runtime(async move { Ok(handle.send_message(delivery.into(), &topic, &body).await?) })
            .await
    }

    /// Asks the participant with `sender_index` for a video keyframe.
    ///
    /// # Errors
    /// [`ConclaveError::NoFramesFrom`] before any of its frames arrived.
    pub async fn request_keyframe(&self, sender_index: u32) -> Result<(), ConclaveError> {
        let handle = self.handle.clone();
        on_runtime(async move { Ok(handle.request_keyframe(sender_index).await?) }).await
    }

    /// The current participants.
    pub fn participants(&self) -> Vec<Participant> {
        participants(&self.handle.participants())
    }

    /// The safety number of the current epoch (60 digits): equal numbers on every
    /// participant's screen mean the same keys for everyone.
    pub fn safety_number(&self) -> Option<String> {
        self.handle.safety_code().map(|c| c.number().to_string())
    }

    /// The two safety words of the current epoch, once every participant's device took
    /// part in the epoch's commitment round (`MeetingEvent::SafetyWords` says when).
    pub fn safety_words(&self) -> Option<SafetyWords> {
        self.handle.safety_words().as_ref().map(SafetyWords::from)
    }

    /// The epoch this device sends on.
    pub fn sending_epoch(&self) -> u64 {
        self.handle.sending_epoch().0
    }

    /// How many participants' devices the next Rekey is already wrapped for (key
    /// leader only; 0 elsewhere): `ClientOptions.prepare_rekeys`.
    pub fn prepared_rekey_devices(&self) -> u64 {
        u64::try_from(self.handle.prepared_rekey_devices()).unwrap_or(u64::MAX)
    }

    /// Whether this device is the key leader (it may invite and remove).
    pub fn is_leader(&self) -> bool {
        self.handle.is_leader()
    }

    /// Whether the meeting has ended for this device.
    pub fn is_ended(&self) -> bool {
        self.handle.is_ended()
    }

    /// Media counters.
    pub fn stats(&self) -> MediaStats {
        self.handle.stats().into()
    }

    /// Leaves the meeting: the others rekey without this device; every key is dropped.
    ///
    /// # Errors
    /// [`ConclaveError::MeetingEnded`] if it already ended.
    pub async fn leave(&self) -> Result<(), ConclaveError> {
        let handle = self.handle.clone();
        on_runtime(async move { Ok(handle.leave().await?) }).await
    }

    /// (Key leader) removes every device of `user_ids` (hex); the meeting rekeys
    /// without them and the SFU stops routing to them.
    ///
    /// # Errors
    /// [`ConclaveError::MeetingRefused`] unless this device is the key leader.
    pub async fn remove(&self, user_ids: Vec<String>) -> Result<(), ConclaveError> {
        let users = crate::ids::user_ids(&user_ids)?;
        let handle = self.handle.clone();
        on_runtime(async move { Ok(handle.remove(&users).await?) }).await
    }

    /// (Key leader) invites more users (hex ids) mid-meeting; they cannot decrypt
    /// anything sent before.
    ///
    /// # Errors
    /// [`ConclaveError::MeetingRefused`] unless this device is the key leader,
    /// [`ConclaveError::NobodyToInvite`].
    pub async fn invite(
        &self,
        user_ids: Vec<String>,
        media_kinds: Vec<MediaKind>,
    ) -> Result<InviteReport, ConclaveError> {
        let users = crate::ids::user_ids(&user_ids)?;
        let handle = self.handle.clone();
        on_runtime(async move {
            let report = handle.invite(&users, &kinds_to_sdk(&media_kinds)).await?;
            Ok(InviteReport::from(&report))
        })
        .await
    }
}
