//! Forwarding decisions, with in-memory sinks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use conclave_proto::datagram::HEADER_LEN;

use super::*;

#[derive(Debug, Default)]
struct Sink {
    space: AtomicUsize,
    sent: Mutex<Vec<Bytes>>,
}

impl DatagramSink for Arc<Sink> {
    fn send_buffer_space(&self) -> usize {
        self.space.load(Ordering::Relaxed)
    }
    fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
        self.sent.lock().unwrap().push(datagram);
        Ok(())
    }
}

fn sink(space: usize) -> Arc<Sink> {
    Arc::new(Sink {
        space: AtomicUsize::new(space),
        sent: Mutex::new(Vec::new()),
    })
}

fn datagram(handle: RoomHandle, slot: Slot, kind: MediaKind, payload: usize) -> Vec<u8> {
    let header = DatagramHeader {
        room_handle: handle,
        sender_slot: slot,
        media_kind: kind,
        keyframe: false,
        frame_number: 1,
        fragment_index: 0,
        fragment_count: 1,
    };
    let mut d = header.encode().unwrap().to_vec();
    d.extend(std::iter::repeat_n(0xAB, payload));
    d
}

struct Room {
    sinks: Vec<Arc<Sink>>,
    sender: ConnMedia<Arc<Sink>>,
}

/// Room `handle` with members 0..n (member 0 is the sender, slot 5).
fn room(handle: RoomHandle, n: usize, space: usize) -> Room {
    let sinks: Vec<_> = (0..n).map(|_| sink(space)).collect();
    let media = Arc::new(RoomMedia::default());
    media.set_targets(
        sinks
            .iter()
            .enumerate()
            .map(|(i, s)| Target {
                conn: i as ConnId,
                sink: Arc::clone(s),
            })
            .collect(),
    );
    let sender = ConnMedia::default();
    sender.upsert(Membership {
        handle,
        slot: Slot(5),
        room: media,
    });
    Room { sinks, sender }
}

#[test]
fn fans_out_to_every_other_member_with_the_slot_stamped() {
    let r = room(RoomHandle(9), 4, 1 << 20);
    let mut fwd = Forwarder::new(0, 1500, 512 * 1024);
    let mut counters = MediaCounters::new();
    // The sender claims slot 77; the server stamps 5.
    fwd.forward(
        &datagram(RoomHandle(9), Slot(77), MediaKind::Audio, 100),
        &r.sender,
        &mut counters,
    );
    assert!(
        r.sinks[0].sent.lock().unwrap().is_empty(),
        "not echoed to the sender"
    );
    for s in &r.sinks[1..] {
        let sent = s.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        let (h, payload) = DatagramHeader::decode(&sent[0]).unwrap();
        assert_eq!(h.sender_slot, Slot(5));
        assert_eq!(payload.len(), 100);
    }
    assert_eq!(counters.pending_sent(), 3);
}

#[test]
fn datagrams_for_a_room_the_sender_is_not_in_are_dropped() {
    let r = room(RoomHandle(9), 3, 1 << 20);
    let mut fwd = Forwarder::new(0, 1500, 512 * 1024);
    let mut counters = MediaCounters::new();
    fwd.forward(
        &datagram(RoomHandle(10), Slot(0), MediaKind::Audio, 10),
        &r.sender,
        &mut counters,
    );
    assert!(r.sinks.iter().all(|s| s.sent.lock().unwrap().is_empty()));
    assert_eq!(counters.pending_dropped(DropReason::NotMember), 1);
}

#[test]
fn malformed_and_oversized_datagrams_are_counted() {
    let r = room(RoomHandle(9), 2, 1 << 20);
    let mut fwd = Forwarder::new(0, 200, 512 * 1024);
    let mut counters = MediaCounters::new();
    fwd.forward(&[1, 2, 3], &r.sender, &mut counters);
    let mut bad_version = datagram(RoomHandle(9), Slot(0), MediaKind::Audio, 10);
    bad_version[0] = 9;
    fwd.forward(&bad_version, &r.sender, &mut counters);
    fwd.forward(
        &datagram(RoomHandle(9), Slot(0), MediaKind::Audio, 300),
        &r.sender,
        &mut counters,
    );
    assert_eq!(counters.pending_dropped(DropReason::Malformed), 2);
    assert_eq!(counters.pending_dropped(DropReason::Oversize), 1);
    assert!(r.sinks[1].sent.lock().unwrap().is_empty());
    assert_eq!(counters.pending_received(), 3);
}

#[test]
fn congestion_drops_video_before_audio() {
    let headroom = 10_000;
    // Enough for audio, not enough headroom for video.
    let r = room(RoomHandle(9), 2, 5_000);
    let mut fwd = Forwarder::new(0, 1500, headroom);
    let mut counters = MediaCounters::new();
    fwd.forward(
        &datagram(RoomHandle(9), Slot(0), MediaKind::Video, 1000),
        &r.sender,
        &mut counters,
    );
    fwd.forward(
        &datagram(RoomHandle(9), Slot(0), MediaKind::Audio, 100),
        &r.sender,
        &mut counters,
    );
    assert_eq!(counters.pending_dropped(DropReason::CongestionVideo), 1);
    assert_eq!(r.sinks[1].sent.lock().unwrap().len(), 1);
    // A full buffer drops audio too.
    r.sinks[1].space.store(10, Ordering::Relaxed);
    fwd.forward(
        &datagram(RoomHandle(9), Slot(0), MediaKind::Audio, 100),
        &r.sender,
        &mut counters,
    );
    assert_eq!(counters.pending_dropped(DropReason::CongestionAudio), 1);
}

#[test]
fn ingress_chunks_are_reused_not_allocated_per_datagram() {
    let r = room(RoomHandle(9), 2, 1 << 20);
    let mut fwd = Forwarder::new(0, 1500, 512 * 1024);
    let mut counters = MediaCounters::new();
    let d = datagram(RoomHandle(9), Slot(0), MediaKind::Audio, 200);
    let mut chunks = std::collections::HashSet::new();
    for _ in 0..2_000 {
        fwd.forward(&d, &r.sender, &mut counters);
        // The receiver "sends" (drops) its copy right away, as quinn does once transmitted.
        let sent = std::mem::take(&mut *r.sinks[1].sent.lock().unwrap());
        for s in &sent {
            assert_eq!(s.len(), HEADER_LEN + 200);
            // Slices of one chunk are contiguous: group by chunk start.
            chunks.insert(s.as_ptr() as usize / INGRESS_CHUNK);
        }
    }
    // 2,000 datagrams of 214 bytes (428 KB) went through a handful of 64 KiB chunks.
    assert!(chunks.len() <= 16, "{} chunks", chunks.len());
}

#[test]
fn membership_table_updates_do_not_disturb_other_rooms() {
    let r = room(RoomHandle(9), 2, 1 << 20);
    let other = Arc::new(RoomMedia::default());
    r.sender.upsert(Membership {
        handle: RoomHandle(10),
        slot: Slot(1),
        room: other,
    });
    r.sender.remove(RoomHandle(10));
    let mut fwd = Forwarder::new(0, 1500, 512 * 1024);
    let mut counters = MediaCounters::new();
    fwd.forward(
        &datagram(RoomHandle(9), Slot(0), MediaKind::Audio, 10),
        &r.sender,
        &mut counters,
    );
    fwd.forward(
        &datagram(RoomHandle(10), Slot(0), MediaKind::Audio, 10),
        &r.sender,
        &mut counters,
    );
    assert_eq!(r.sinks[1].sent.lock().unwrap().len(), 1);
    assert_eq!(counters.pending_dropped(DropReason::NotMember), 1);
}
