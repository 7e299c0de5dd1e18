//! A meeting's receive path: a run of datagrams of its room becomes decrypted frames
//! for the app under one lock, handed to the app's frame queue at once.
//!
//! Per frame that came in one datagram (every audio frame): no allocation but the
//! frame's own media buffer, no lock, no clock read and no wake-up of its own. The
//! ciphertext is read where the datagram holds it, decrypted into a buffer reused for
//! every frame, and the media is copied out once, without the envelope.

use std::sync::atomic::Ordering;

use conclave_proto::datagram::{DatagramHeader, MediaKind};

use super::{MeetingShared, lock};
use crate::client::MediaFrame;
use crate::media::MediaEnvelope;
use crate::meeting::Epoch;
use crate::meeting::messages::Delivery;
use crate::sframe::SframeError;

/// What one run counted, added to the meeting's counters once.
#[derive(Debug, Default)]
struct RunCounts {
    received: u64,
    unknown_key: u64,
    replayed: u64,
    failures: u64,
}

impl MeetingShared {
    /// Handles a run of received datagrams of this meeting's room (reader task) and
    /// queues their frames for the app. `out` is scratch space, left empty (its
    /// allocation is kept for the next run).
    pub(crate) fn on_datagrams<'a>(
        &self,
        datagrams: impl IntoIterator<Item = (DatagramHeader, &'a [u8])>,
        now_ms: u64,
        out: &mut Vec<MediaFrame>,
    ) {
        out.clear();
        let mut counts = RunCounts::default();
        // Lossy in-meeting messages of the run, opened after the media (another lock).
        let mut messages: Vec<&'a [u8]> = Vec::new();
        {
            let mut guard = lock(&self.receive);
            let side = &mut *guard;
            for (header, payload) in datagrams {
                if header.media_kind == MediaKind::Data {
                    if header.fragment_count == 1 {
                        messages.push(payload);
                    } else {
                        counts.failures += 1;
                    }
                    continue;
                }
                let Some(frame) = side.reassembler.push_ref(&header, payload, now_ms) else {
                    continue;
                };
                let metadata = frame.metadata();
                let mut result =
                    side.receiver
                        .decrypt_into(&metadata, &frame.ciphertext, &mut side.plaintext);
                if let Err(SframeError::UnknownKid {
                    epoch,
                    sender_index,
                    ..
                }) = result
                    && side
                        .keys
                        .derive(&mut side.receiver, epoch, u32::from(sender_index))
                {
                    // The sender's first frame of the epoch: its key exists now.
                    result = side.receiver.decrypt_into(
                        &metadata,
                        &frame.ciphertext,
                        &mut side.plaintext,
                    );
                }
                let kid = match result {
                    Ok((kid, _)) => kid,
                    Err(e) => {
                        match e {
                            SframeError::UnknownKid { .. } => counts.unknown_key += 1,
                            SframeError::Replayed { .. } | SframeError::TooOld { .. } => {
                                counts.replayed += 1;
                            }
                            _ => counts.failures += 1,
                        }
                        continue;
                    }
                };
                let index = u32::from(kid.sender_index());
                let sender = side.senders.get_mut(&index).map(|s| {
                    s.slot = Some(frame.sender_slot);
                    *s
                });
                let (Ok((envelope, media)), Some(sender)) =
                    (MediaEnvelope::split(&side.plaintext), sender)
                else {
                    // A malformed envelope, or a key registered without its sender's
                    // identity (never: they are registered together).
                    counts.failures += 1;
                    continue;
                };
                counts.received += 1;
                out.push(MediaFrame {
                    user_id: sender.user_id,
                    device_id: sender.device_id,
                    sender_index: index,
                    kind: frame.kind,
                    keyframe: frame.keyframe,
                    epoch: Epoch(kid.epoch()),
                    sequence: envelope.sequence,
                    capture_us: envelope.capture_us,
                    data: media.to_vec(),
                });
            }
            side.plaintext.clear();
        }
        let c = &self.counters;
        for (counter, n) in [
            (&c.frames_received, counts.received),
            (&c.unknown_key, counts.unknown_key),
            (&c.replayed, counts.replayed),
            (&c.decrypt_failures, counts.failures),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        let dropped = self.frames.push_batch(out);
        if dropped > 0 {
            c.frames_dropped_queue_full
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        for payload in messages {
            match self.open_message(Delivery::Lossy, payload) {
                Ok(message) => self.emit_lossy(message),
                Err(e) => tracing::debug!(error = %e, "lossy meeting message dropped"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
