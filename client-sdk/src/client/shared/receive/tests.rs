#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use conclave_proto::datagram::{RoomHandle, Slot, write_sender_slot};
use conclave_proto::limits::MAX_DATAGRAM_BYTES;
use rand_core::OsRng;

use super::*;
use crate::client::MediaKind;
use crate::client::frames::{FrameBounds, FrameSource, frame_queue};
use crate::media::{self, MediaEnvelope};
use crate::meeting::{MeetingId, MeetingKey};
use crate::sframe::SframeSender;
use crate::{DeviceId, UserId};

const ROOM: RoomHandle = RoomHandle(9);

struct Fixture {
    shared: MeetingShared,
    frames: FrameSource,
    key: MeetingKey,
    bob: SframeSender,
    next: u32,
}

fn fixture(queue: usize) -> Fixture {
    let (sink, frames) = frame_queue(FrameBounds {
        frames: queue,
        bytes: 1 << 20,
    });
    let (events, _) = tokio::sync::mpsc::channel(4);
    let id = MeetingId::from_slice(&[3; 32]).unwrap();
    let shared = MeetingShared::new(id, 0, sink, events);
    let key = MeetingKey::generate(Epoch(0), &mut OsRng);
    let bob = (
        1,
        UserId::from_username("bob").unwrap(),
        DeviceId::from_bytes([2; 16]),
        ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key(),
    );
    shared.add_receive_keys(&key, &[bob]);
    Fixture {
        bob: key.sframe_sender(1).unwrap(),
        shared,
        frames,
        key,
        next: 0,
    }
}

impl Fixture {
    /// The datagrams of bob's next frame of `len` media bytes, as the SFU forwards them.
    fn frame(&mut self, kind: MediaKind, len: usize) -> Vec<Vec<u8>> {
        let number = self.next;
        self.next += 1;
        let envelope = MediaEnvelope {
            sequence: number,
            capture_us: u64::from(number) * 20_000,
        }
        .encode();
        let media = vec![number as u8; len];
        let metadata = media::frame_metadata(kind, false, number);
        let ct = self
            .bob
            .encrypt_parts(&metadata, &[&envelope, &media])
            .unwrap();
        media::fragment(ROOM, kind, false, number, &ct, MAX_DATAGRAM_BYTES)
            .unwrap()
            .into_iter()
            .map(|d| {
                let mut d = d.to_vec();
                write_sender_slot(&mut d, Slot(5)).unwrap();
                d
            })
            .collect()
    }

    fn receive(&self, datagrams: &[Vec<u8>]) {
        let run = datagrams.iter().map(|d| DatagramHeader::decode(d).unwrap());
        self.shared.on_datagrams(run, 0, &mut Vec::new());
    }

    fn received(&mut self) -> Vec<MediaFrame> {
        std::iter::from_fn(|| self.frames.try_recv()).collect()
    }
}

#[test]
fn a_run_of_audio_and_video_frames_reaches_the_app_in_order_with_envelopes_stripped() {
    let mut f = fixture(64);
    let mut run = Vec::new();
    for i in 0..6 {
        let (kind, len) = if i % 3 == 2 {
            (MediaKind::Video, 3_000)
        } else {
            (MediaKind::Audio, 107)
        };
        run.extend(f.frame(kind, len));
    }
    f.receive(&run);
    let got = f.received();
    assert_eq!(got.len(), 6);
    for (i, frame) in got.iter().enumerate() {
        assert_eq!(frame.sequence, i as u32);
        assert_eq!(frame.capture_us, i as u64 * 20_000);
        assert_eq!(frame.sender_index, 1);
        assert_eq!(frame.user_id, UserId::from_username("bob").unwrap());
        assert_eq!(frame.epoch, Epoch(0));
        let len = if i % 3 == 2 { 3_000 } else { 107 };
        assert_eq!(frame.data, vec![i as u8; len]);
    }
    assert_eq!(f.shared.slot_of(1), Some(Slot(5)));
    let stats = f.shared.stats();
    assert_eq!(stats.frames_received, 6);
    assert_eq!(
        stats.decrypt_failures + stats.replayed + stats.unknown_key,
        0
    );
}

#[test]
fn replays_forgeries_and_unknown_keys_are_counted_and_never_delivered() {
    let mut f = fixture(64);
    let good = f.frame(MediaKind::Audio, 50);
    let mut forged = f.frame(MediaKind::Audio, 50);
    let last = forged[0].len() - 1;
    forged[0][last] ^= 1;
    let stranger = {
        let mut s = std::mem::replace(&mut f.bob, f.key.sframe_sender(2).unwrap());
        let d = f.frame(MediaKind::Audio, 50);
        std::mem::swap(&mut s, &mut f.bob);
        d
    };
    let mut run = good.clone();
    run.extend(good.clone());
    run.extend(forged);
    run.extend(stranger);
    f.receive(&run);
    assert_eq!(f.received().len(), 1);
    let stats = f.shared.stats();
    assert_eq!(stats.frames_received, 1);
    assert_eq!(stats.replayed, 1);
    assert_eq!(stats.decrypt_failures, 1);
    assert_eq!(stats.unknown_key, 1);
}

#[test]
fn frames_beyond_the_queue_bound_are_dropped_and_counted() {
    let mut f = fixture(2);
    let run: Vec<_> = (0..5).flat_map(|_| f.frame(MediaKind::Audio, 20)).collect();
    f.receive(&run);
    assert_eq!(f.received().len(), 2);
    let stats = f.shared.stats();
    assert_eq!(stats.frames_received, 5);
    assert_eq!(stats.frames_dropped_queue_full, 3);
}

#[test]
fn an_ended_meeting_delivers_what_was_queued_then_nothing() {
    let mut f = fixture(64);
    let first = f.frame(MediaKind::Audio, 20);
    f.receive(&first);
    f.shared.set_info(|info| info.ended = true);
    let second = f.frame(MediaKind::Audio, 20);
    f.receive(&second);
    assert_eq!(f.received().len(), 1);
}

/// A sender's key is derived at its first frame of the epoch, only for senders the
/// epoch accepts, and forgotten with the epoch.
#[test]
fn a_senders_key_is_derived_at_its_first_frame_and_only_for_accepted_senders() {
    let mut f = fixture(64);
    let kid = |index: u32| f.key.sframe_kid(index).unwrap();
    let (bob, stranger) = (kid(1), kid(2));
    {
        let receive = lock(&f.shared.receive);
        assert!(receive.keys.accepts(0, 1) && !receive.keys.accepts(0, 2));
        assert!(
            !receive.receiver.has_key(bob),
            "nothing derived before a frame"
        );
    }
    let first = f.frame(MediaKind::Audio, 30);
    f.receive(&first);
    assert_eq!(f.received().len(), 1, "the first frame itself is delivered");
    assert!(lock(&f.shared.receive).receiver.has_key(bob));

    // Index 2 is not on the roster: its frames stay unknown and derive nothing.
    f.bob = f.key.sframe_sender(2).unwrap();
    let theirs = f.frame(MediaKind::Audio, 30);
    f.receive(&theirs);
    assert!(f.received().is_empty());
    assert_eq!(f.shared.stats().unknown_key, 1);
    assert!(!lock(&f.shared.receive).receiver.has_key(stranger));

    f.shared.drop_epoch(Epoch(0));
    let receive = lock(&f.shared.receive);
    assert!(!receive.keys.accepts(0, 1) && !receive.receiver.has_key(bob));
    assert!(!receive.keys.holds(0), "the epoch's key is gone with it");
}
