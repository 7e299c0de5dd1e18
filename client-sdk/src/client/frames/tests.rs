#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::client::MediaKind;
use crate::meeting::Epoch;
use crate::{DeviceId, UserId};

fn frame(sequence: u32, len: usize) -> MediaFrame {
    MediaFrame {
        user_id: UserId::from_username("alice").unwrap(),
        device_id: DeviceId::from_bytes([7; 16]),
        sender_index: 1,
        kind: MediaKind::Audio,
        keyframe: false,
        epoch: Epoch(0),
        sequence,
        capture_us: 0,
        data: vec![0; len],
    }
}

fn bounds(frames: usize, bytes: usize) -> FrameBounds {
    FrameBounds { frames, bytes }
}

fn batch(range: std::ops::Range<u32>, len: usize) -> Vec<MediaFrame> {
    range.map(|s| frame(s, len)).collect()
}

fn sequences(source: &mut FrameSource) -> Vec<u32> {
    std::iter::from_fn(|| source.try_recv())
        .map(|f| f.sequence)
        .collect()
}

#[test]
fn frames_come_out_in_order_across_batches() {
    let (sink, mut source) = frame_queue(bounds(100, 1 << 20));
    assert_eq!(sink.push_batch(&mut batch(0..3, 10)), 0);
    assert_eq!(source.try_recv().unwrap().sequence, 0);
    assert_eq!(sink.push_batch(&mut batch(3..5, 10)), 0);
    assert_eq!(sequences(&mut source), vec![1, 2, 3, 4]);
    assert!(source.try_recv().is_none());
}

#[test]
fn push_empties_the_batch_and_keeps_its_allocation() {
    let (sink, _source) = frame_queue(bounds(100, 1 << 20));
    let mut b = batch(0..4, 10);
    let capacity = b.capacity();
    sink.push_batch(&mut b);
    assert!(b.is_empty());
    assert_eq!(b.capacity(), capacity);
}

#[test]
fn the_frame_bound_counts_the_batch_the_app_holds() {
    let (sink, mut source) = frame_queue(bounds(4, 1 << 20));
    assert_eq!(sink.push_batch(&mut batch(0..6, 10)), 2);
    // The app takes the four and reads one: three are still held.
    assert_eq!(source.try_recv().unwrap().sequence, 0);
    assert_eq!(sink.push_batch(&mut batch(6..8, 10)), 2);
    assert_eq!(sequences(&mut source), vec![1, 2, 3]);
    // Once the app comes back for more, its held batch is gone.
    assert_eq!(sink.push_batch(&mut batch(8..12, 10)), 0);
    assert_eq!(sequences(&mut source), vec![8, 9, 10, 11]);
}

#[test]
fn the_byte_bound_drops_what_does_not_fit_but_never_starves_one_frame() {
    let (sink, mut source) = frame_queue(bounds(100, 250));
    assert_eq!(sink.push_batch(&mut batch(0..3, 100)), 1);
    assert_eq!(sequences(&mut source), vec![0, 1]);
    // A frame larger than the bound passes into an empty queue.
    assert_eq!(sink.push_batch(&mut vec![frame(9, 1_000)]), 0);
    assert_eq!(sink.push_batch(&mut vec![frame(10, 1)]), 1);
    assert_eq!(sequences(&mut source), vec![9]);
}

#[test]
fn try_recv_many_moves_at_most_max() {
    let (sink, mut source) = frame_queue(bounds(100, 1 << 20));
    sink.push_batch(&mut batch(0..5, 10));
    let mut out = Vec::new();
    assert_eq!(source.try_recv_many(&mut out, 3), 3);
    sink.push_batch(&mut batch(5..7, 10));
    assert_eq!(source.try_recv_many(&mut out, 10), 4);
    let got: Vec<u32> = out.iter().map(|f| f.sequence).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(source.try_recv_many(&mut out, 10), 0);
}

#[test]
fn a_closed_queue_rejects_frames_and_ends_after_the_queued_ones() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (sink, mut source) = frame_queue(bounds(100, 1 << 20));
    sink.push_batch(&mut batch(0..2, 10));
    sink.close();
    assert_eq!(sink.push_batch(&mut batch(2..3, 10)), 1);
    rt.block_on(async {
        assert_eq!(source.recv().await.unwrap().sequence, 0);
        let mut out = Vec::new();
        assert_eq!(source.recv_many(&mut out, 8).await, 1);
        assert!(source.recv().await.is_none());
        assert_eq!(source.recv_many(&mut out, 8).await, 0);
    });
}

#[test]
fn dropping_the_sink_ends_the_stream() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (sink, mut source) = frame_queue(bounds(100, 1 << 20));
    drop(sink);
    rt.block_on(async { assert!(source.recv().await.is_none()) });
}

#[test]
fn a_waiting_app_is_woken_by_a_batch_pushed_from_another_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (sink, mut source) = frame_queue(bounds(256, 1 << 20)); // room for all 200: none dropped
    let pusher = std::thread::spawn(move || {
        for round in 0..50u32 {
            sink.push_batch(&mut batch(round * 4..round * 4 + 4, 10));
            std::thread::yield_now();
        }
    });
    rt.block_on(async {
        let mut out = Vec::new();
        while out.len() < 200 {
            source.recv_many(&mut out, 7).await;
        }
        let got: Vec<u32> = out.iter().map(|f| f.sequence).collect();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
    });
    pusher.join().unwrap();
}
