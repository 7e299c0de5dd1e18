//! Reassembly without a copy for frames that came in one datagram (every audio frame):
//! [`Reassembler::push_ref`].

use std::borrow::Cow;
use std::fmt;

use conclave_proto::datagram::DatagramHeader;

use super::{
    AssembledFrame, FRAME_METADATA_LEN, FrameKey, MAX_FRAGMENT_PAYLOAD, MediaKind, Reassembler,
    Slot, frame_metadata,
};

/// A media frame reassembled from its datagrams, still SFrame-encrypted: borrowed from
/// the datagram when it came in one, else the reassembled buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The sender slot the SFU stamped on the fragments.
    pub sender_slot: Slot,
    /// Audio or video.
    pub kind: MediaKind,
    /// Whether the frame is a video keyframe (as claimed by the sender).
    pub keyframe: bool,
    /// The sender's frame number.
    pub frame_number: u32,
    /// The whole SFrame ciphertext.
    pub ciphertext: Cow<'a, [u8]>,
}

impl FrameRef<'_> {
    /// The SFrame metadata the sender must have authenticated with this frame.
    #[must_use]
    pub fn metadata(&self) -> [u8; FRAME_METADATA_LEN] {
        frame_metadata(self.kind, self.keyframe, self.frame_number)
    }
}

impl FrameRef<'_> {
    /// The frame as an owned [`AssembledFrame`] (copies a borrowed ciphertext).
    pub(super) fn into_assembled(self) -> AssembledFrame {
        AssembledFrame {
            sender_slot: self.sender_slot,
            kind: self.kind,
            keyframe: self.keyframe,
            frame_number: self.frame_number,
            ciphertext: self.ciphertext.into_owned(),
        }
    }
}

impl fmt::Debug for FrameRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameRef")
            .field("sender_slot", &self.sender_slot)
            .field("kind", &self.kind)
            .field("keyframe", &self.keyframe)
            .field("frame_number", &self.frame_number)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("borrowed", &matches!(self.ciphertext, Cow::Borrowed(_)))
            .finish()
    }
}

impl Reassembler {
    /// [`Reassembler::push`], but a frame that came in one datagram is returned
    /// borrowed from `payload` (no copy, no allocation); `push` is this with the
    /// frame copied out, so the state, the counters and every check are the same.
    pub fn push_ref<'a>(
        &mut self,
        header: &DatagramHeader,
        payload: &'a [u8],
        now_ms: u64,
    ) -> Option<FrameRef<'a>> {
        if header.fragment_count == 1
            && header.fragment_index == 0
            && payload.len() <= MAX_FRAGMENT_PAYLOAD
        {
            self.handle_timeout(now_ms);
            self.single(&FrameKey::of(header));
            self.stats.completed += 1;
            return Some(FrameRef {
                sender_slot: header.sender_slot,
                kind: header.media_kind,
                keyframe: header.keyframe,
                frame_number: header.frame_number,
                ciphertext: Cow::Borrowed(payload),
            });
        }
        self.push_fragment(header, payload, now_ms)
            .map(|frame| FrameRef {
                sender_slot: frame.sender_slot,
                kind: frame.kind,
                keyframe: frame.keyframe,
                frame_number: frame.frame_number,
                ciphertext: Cow::Owned(frame.ciphertext),
            })
    }
}
