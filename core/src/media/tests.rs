//! Fragmentation and reassembly, driven through the real header codec and virtual time.

use conclave_proto::datagram::write_sender_slot;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;

const ROOM: RoomHandle = RoomHandle(0x0102_0304);
/// A full-size datagram carries this much ciphertext.
const CHUNK: usize = MAX_FRAGMENT_PAYLOAD;

/// Deterministic, position-dependent bytes, so misplaced chunks are detected.
fn ciphertext(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8) ^ seed)
        .collect()
}

/// Fragments like a sender, then stamps `slot` like the SFU.
fn send(slot: Slot, kind: MediaKind, keyframe: bool, frame: u32, ct: &[u8]) -> Vec<Vec<u8>> {
    fragment(ROOM, kind, keyframe, frame, ct, MAX_DATAGRAM_BYTES)
        .unwrap()
        .into_iter()
        .map(|d| {
            let mut d = d.to_vec();
            write_sender_slot(&mut d, slot).unwrap();
            d
        })
        .collect()
}

/// Decodes one datagram like a receiver and pushes it.
fn push(r: &mut Reassembler, datagram: &[u8], now_ms: u64) -> Option<AssembledFrame> {
    let (header, payload) = DatagramHeader::decode(datagram).unwrap();
    r.push(&header, payload, now_ms)
}

/// Pushes every datagram at `now_ms` and collects what completes.
fn push_all(r: &mut Reassembler, datagrams: &[Vec<u8>], now_ms: u64) -> Vec<AssembledFrame> {
    datagrams
        .iter()
        .filter_map(|d| push(r, d, now_ms))
        .collect()
}

fn round_trip(len: usize) {
    let ct = ciphertext(len, 7);
    let datagrams = send(Slot(9), MediaKind::Video, true, 42, &ct);
    assert_eq!(datagrams.len(), len.div_ceil(CHUNK));
    let mut r = Reassembler::default();
    let frames = push_all(&mut r, &datagrams, 0);
    assert_eq!(
        frames,
        [AssembledFrame {
            sender_slot: Slot(9),
            kind: MediaKind::Video,
            keyframe: true,
            frame_number: 42,
            ciphertext: ct,
        }]
    );
    // Assembled in the buffer sized on the first fragment: no regrowth, little slack.
    assert!(frames[0].ciphertext.capacity() < len + 2 * datagrams.len());
    assert_eq!(r.pending_frames(), 0);
    assert_eq!(r.pending_bytes(), 0);
    assert_eq!(
        r.stats(),
        ReassemblyStats {
            completed: 1,
            ..ReassemblyStats::default()
        }
    );
}

#[test]
fn round_trips_a_one_byte_frame() {
    round_trip(1);
}

#[test]
fn round_trips_a_frame_that_exactly_fills_one_datagram() {
    round_trip(CHUNK);
    let datagrams = send(Slot(0), MediaKind::Audio, false, 0, &ciphertext(CHUNK, 0));
    assert_eq!(datagrams.len(), 1);
    assert_eq!(datagrams[0].len(), MAX_DATAGRAM_BYTES);
}

#[test]
fn one_byte_more_than_a_datagram_splits_into_two_near_equal_fragments() {
    round_trip(CHUNK + 1);
    let datagrams = send(
        Slot(0),
        MediaKind::Video,
        false,
        0,
        &ciphertext(CHUNK + 1, 0),
    );
    let sizes: Vec<usize> = datagrams.iter().map(|d| d.len() - HEADER_LEN).collect();
    assert_eq!(sizes, [CHUNK / 2 + 1, CHUNK / 2]);
}

#[test]
fn round_trips_a_frame_of_max_fragments() {
    let max = max_frame_ciphertext(MAX_DATAGRAM_BYTES);
    assert_eq!(max, usize::from(MAX_FRAGMENTS) * CHUNK);
    round_trip(max);
    round_trip(max - 1);
    round_trip(max - CHUNK + 1);
}

#[test]
fn fragments_carry_the_frame_fields_and_near_equal_chunks_within_the_size() {
    for max_datagram in [
        HEADER_LEN + 1,
        HEADER_LEN + 2,
        100,
        1200,
        MAX_DATAGRAM_BYTES,
    ] {
        let max_len = max_frame_ciphertext(max_datagram);
        for len in [1, 2, 99, 1000, 5000, max_len / 2 + 3, max_len] {
            if len > max_len {
                continue;
            }
            let ct = ciphertext(len, 3);
            let datagrams = fragment(ROOM, MediaKind::Audio, true, 7, &ct, max_datagram).unwrap();
            let count = len.div_ceil(max_datagram - HEADER_LEN);
            assert_eq!(datagrams.len(), count, "len {len}, max {max_datagram}");
            let mut joined = Vec::new();
            let mut sizes = Vec::new();
            for (i, datagram) in datagrams.iter().enumerate() {
                assert!(datagram.len() <= max_datagram);
                let (header, payload) = DatagramHeader::decode(datagram).unwrap();
                assert_eq!(
                    header,
                    DatagramHeader {
                        room_handle: ROOM,
                        sender_slot: Slot(0),
                        media_kind: MediaKind::Audio,
                        keyframe: true,
                        frame_number: 7,
                        fragment_index: i as u8,
                        fragment_count: count as u8,
                    }
                );
                sizes.push(payload.len());
                joined.extend_from_slice(payload);
            }
            assert_eq!(joined, ct);
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "chunk sizes {sizes:?}");
            assert!(*min > 0);
        }
    }
}

#[test]
fn max_datagram_is_clamped_to_the_protocol_limit() {
    let ct = ciphertext(3 * CHUNK, 1);
    let datagrams = fragment(ROOM, MediaKind::Video, false, 1, &ct, usize::MAX).unwrap();
    assert_eq!(datagrams.len(), 3);
    assert!(datagrams.iter().all(|d| d.len() == MAX_DATAGRAM_BYTES));
    assert_eq!(
        max_frame_ciphertext(usize::MAX),
        max_frame_ciphertext(MAX_DATAGRAM_BYTES)
    );
}

#[test]
fn too_large_frame_is_rejected_with_the_limit() {
    for max_datagram in [HEADER_LEN + 1, 600, MAX_DATAGRAM_BYTES] {
        let max = max_frame_ciphertext(max_datagram);
        assert_eq!(max, (max_datagram - HEADER_LEN) * 64);
        assert!(
            fragment(
                ROOM,
                MediaKind::Video,
                false,
                0,
                &vec![0; max],
                max_datagram
            )
            .is_ok()
        );
        let err = fragment(
            ROOM,
            MediaKind::Video,
            false,
            0,
            &vec![0; max + 1],
            max_datagram,
        )
        .unwrap_err();
        assert_eq!(err, MediaError::TooLarge { len: max + 1, max });
        assert!(err.to_string().contains("lower bitrate"), "{err}");
    }
}

#[test]
fn empty_frame_and_too_small_datagram_are_rejected() {
    assert_eq!(
        fragment(ROOM, MediaKind::Audio, false, 0, &[], 1200),
        Err(MediaError::Empty)
    );
    for max_datagram in [0, 1, HEADER_LEN] {
        assert_eq!(
            fragment(ROOM, MediaKind::Audio, false, 0, b"x", max_datagram),
            Err(MediaError::DatagramTooSmall { max_datagram })
        );
        assert_eq!(max_frame_ciphertext(max_datagram), 0);
    }
}

#[test]
fn out_of_order_fragments_reassemble() {
    let ct = ciphertext(5 * CHUNK - 17, 2);
    let datagrams = send(Slot(1), MediaKind::Video, false, 10, &ct);
    for order in [
        [4, 3, 2, 1, 0],
        [1, 0, 3, 2, 4],
        [0, 4, 1, 3, 2],
        [2, 0, 1, 4, 3],
    ] {
        let mut r = Reassembler::default();
        let shuffled: Vec<_> = order.iter().map(|&i| datagrams[i].clone()).collect();
        // The buffer sized on the first fragment (long or short chunk) never grows.
        assert!(push(&mut r, &shuffled[0], 0).is_none());
        let reserved = r.pending_bytes();
        assert!(reserved >= ct.len());
        let mut frames = push_all(&mut r, &shuffled[1..4], 0);
        assert_eq!(r.pending_bytes(), reserved);
        frames.extend(push(&mut r, &shuffled[4], 0));
        assert_eq!(frames.len(), 1, "{order:?}");
        assert_eq!(frames[0].ciphertext, ct, "{order:?}");
    }
}

#[test]
fn fragments_of_unequal_sizes_reassemble_in_any_order() {
    // Another sender's fragmentation: very unequal chunks (the buffer must grow).
    let chunks: [&[u8]; 4] = [b"a", &[b'b'; 1400], b"", &[b'd'; 700]];
    let whole: Vec<u8> = chunks.concat();
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
        let mut r = Reassembler::default();
        let mut frames = Vec::new();
        for i in order {
            let header = DatagramHeader {
                room_handle: ROOM,
                sender_slot: Slot(4),
                media_kind: MediaKind::Video,
                keyframe: false,
                frame_number: 5,
                fragment_index: i as u8,
                fragment_count: 4,
            };
            frames.extend(r.push(&header, chunks[i], 0));
            assert!(r.pending_bytes() <= ReassemblyConfig::default().max_pending_bytes);
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].ciphertext, whole, "{order:?}");
        assert_eq!(r.pending_bytes(), 0);
    }
}

#[test]
fn duplicated_fragments_are_ignored_and_counted() {
    let ct = ciphertext(3 * CHUNK, 4);
    let d = send(Slot(2), MediaKind::Video, true, 99, &ct);
    let mut r = Reassembler::default();
    let sequence = [&d[0], &d[0], &d[2], &d[0], &d[2], &d[1]];
    let frames: Vec<_> = sequence.iter().filter_map(|d| push(&mut r, d, 5)).collect();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].ciphertext, ct);
    assert_eq!(r.stats().duplicates, 3);
    assert_eq!(r.stats().completed, 1);
    assert_eq!(r.pending_frames(), 0);

    // A stray duplicate after completion starts a new partial frame that expires.
    assert!(push(&mut r, &d[1], 10).is_none());
    assert_eq!(r.pending_frames(), 1);
    r.handle_timeout(10 + ReassemblyConfig::default().timeout_ms);
    assert_eq!(r.pending_frames(), 0);
    assert_eq!(r.stats().expired, 1);
}

#[test]
fn interleaved_frames_from_two_slots_reassemble() {
    // Both senders use the same frame numbers and kinds; only the stamped slot differs.
    let a: Vec<_> = (0..3).map(|n| ciphertext(2 * CHUNK + n, 0xA0)).collect();
    let b: Vec<_> = (0..3).map(|n| ciphertext(3 * CHUNK - n, 0xB0)).collect();
    let mut streams: Vec<std::vec::IntoIter<Vec<u8>>> = Vec::new();
    for (n, (a, b)) in a.iter().zip(&b).enumerate() {
        streams.push(send(Slot(1), MediaKind::Video, false, n as u32, a).into_iter());
        streams.push(send(Slot(2), MediaKind::Video, false, n as u32, b).into_iter());
    }
    // Round-robin over all six frames' datagrams.
    let mut r = Reassembler::default();
    let mut frames = Vec::new();
    let mut max_pending = 0;
    loop {
        let mut any = false;
        for stream in &mut streams {
            if let Some(d) = stream.next() {
                any = true;
                frames.extend(push(&mut r, &d, 0));
                max_pending = max_pending.max(r.pending_frames());
            }
        }
        if !any {
            break;
        }
    }
    assert_eq!(max_pending, 6);
    assert_eq!(frames.len(), 6);
    for frame in frames {
        let n = frame.frame_number as usize;
        let expected = if frame.sender_slot == Slot(1) {
            &a[n]
        } else {
            &b[n]
        };
        assert_eq!(&frame.ciphertext, expected, "{frame:?}");
    }
    assert_eq!(r.stats().completed, 6);
}

#[test]
fn audio_and_video_with_the_same_frame_number_are_separate_frames() {
    let audio = ciphertext(2 * CHUNK, 1);
    let video = ciphertext(2 * CHUNK, 2);
    let a = send(Slot(3), MediaKind::Audio, false, 8, &audio);
    let v = send(Slot(3), MediaKind::Video, false, 8, &video);
    let mut r = Reassembler::default();
    let frames = push_all(
        &mut r,
        &[a[0].clone(), v[0].clone(), a[1].clone(), v[1].clone()],
        0,
    );
    assert_eq!(frames.len(), 2);
    assert_eq!(
        (frames[0].kind, &frames[0].ciphertext),
        (MediaKind::Audio, &audio)
    );
    assert_eq!(
        (frames[1].kind, &frames[1].ciphertext),
        (MediaKind::Video, &video)
    );
    assert_eq!(r.stats().inconsistent, 0);
}

#[test]
fn partial_frames_expire_after_the_timeout_in_virtual_time() {
    let config = ReassemblyConfig {
        timeout_ms: 100,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(config);
    assert_eq!(r.poll_timeout(), None);
    let first = send(
        Slot(1),
        MediaKind::Video,
        false,
        1,
        &ciphertext(2 * CHUNK, 0),
    );
    let second = send(
        Slot(1),
        MediaKind::Video,
        false,
        2,
        &ciphertext(2 * CHUNK, 0),
    );
    assert!(push(&mut r, &first[0], 1_000).is_none());
    assert!(push(&mut r, &second[0], 1_050).is_none());
    assert_eq!(r.poll_timeout(), Some(1_100));

    r.handle_timeout(1_099);
    assert_eq!(r.pending_frames(), 2);
    r.handle_timeout(1_100);
    assert_eq!(r.pending_frames(), 1);
    assert_eq!(r.stats().expired, 1);
    assert_eq!(r.poll_timeout(), Some(1_150));

    // The missing fragment of the expired frame comes too late: it starts over.
    assert!(push(&mut r, &first[1], 1_120).is_none());
    // The second frame completes within its timeout.
    let frame = push(&mut r, &second[1], 1_149).unwrap();
    assert_eq!(frame.frame_number, 2);
    // A push also expires: the restarted first frame is gone at 1_220.
    assert!(push(&mut r, &ciphertext_datagram(), 1_220).is_some());
    assert_eq!(r.pending_frames(), 0);
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(
        r.stats(),
        ReassemblyStats {
            completed: 2,
            expired: 2,
            ..ReassemblyStats::default()
        }
    );
}

/// One single-datagram audio frame.
fn ciphertext_datagram() -> Vec<u8> {
    send(Slot(7), MediaKind::Audio, false, 0, b"opus")
        .pop()
        .unwrap()
}

#[test]
fn pending_frame_bound_evicts_the_oldest_partial_frame() {
    let config = ReassemblyConfig {
        max_pending_frames: 3,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(config);
    let frames: Vec<_> = (0..5)
        .map(|n| {
            send(
                Slot(1),
                MediaKind::Video,
                false,
                n,
                &ciphertext(2 * CHUNK, n as u8),
            )
        })
        .collect();
    for (n, d) in frames.iter().enumerate() {
        assert!(push(&mut r, &d[0], n as u64).is_none());
        assert!(r.pending_frames() <= 3);
    }
    assert_eq!(r.stats().evicted, 2);
    // Frames 0 and 1 were evicted: their last fragment starts them over (evicting 2, 3).
    assert!(push(&mut r, &frames[0][1], 10).is_none());
    assert!(push(&mut r, &frames[1][1], 10).is_none());
    assert_eq!(push(&mut r, &frames[4][1], 10).unwrap().frame_number, 4);
    assert_eq!(r.stats().evicted, 4);
    assert_eq!(r.pending_frames(), 2);
}

#[test]
fn zero_pending_frames_still_passes_single_fragment_frames() {
    let config = ReassemblyConfig {
        max_pending_frames: 0,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(config);
    assert!(push(&mut r, &ciphertext_datagram(), 0).is_some());
    let d = send(
        Slot(1),
        MediaKind::Video,
        false,
        1,
        &ciphertext(2 * CHUNK, 0),
    );
    assert!(push_all(&mut r, &d, 0).is_empty());
    assert_eq!(r.pending_frames(), 0);
    assert_eq!(r.stats().evicted, 2);
}

#[test]
fn pending_byte_bound_evicts_the_oldest_partial_frame() {
    // Room for two partial frames of four full fragments, not three.
    let frame_bytes = 4 * CHUNK + 3;
    let config = ReassemblyConfig {
        max_pending_bytes: 2 * frame_bytes + 100,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(config);
    let frames: Vec<_> = (0..3)
        .map(|n| {
            send(
                Slot(5),
                MediaKind::Video,
                false,
                n,
                &ciphertext(4 * CHUNK, n as u8),
            )
        })
        .collect();
    for (n, d) in frames.iter().enumerate() {
        assert!(push(&mut r, &d[0], n as u64).is_none());
        assert!(r.pending_bytes() <= config.max_pending_bytes);
    }
    assert_eq!(r.pending_frames(), 2);
    assert_eq!(r.stats().evicted, 1);
    // The surviving frames 1 and 2 complete.
    let done: Vec<_> = frames[1..]
        .iter()
        .flat_map(|d| {
            d[1..]
                .iter()
                .filter_map(|d| push(&mut r, d, 3))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(done.len(), 2);
    assert_eq!(r.pending_bytes(), 0);

    // A frame that alone exceeds the bound is dropped without evicting others.
    let config = ReassemblyConfig {
        max_pending_bytes: 3 * CHUNK,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(config);
    let small = send(
        Slot(5),
        MediaKind::Video,
        false,
        1,
        &ciphertext(2 * CHUNK, 0),
    );
    assert!(push(&mut r, &small[0], 0).is_none());
    assert!(push(&mut r, &frames[0][0], 0).is_none());
    assert_eq!(r.pending_frames(), 1);
    assert_eq!(r.stats().evicted, 1);
    assert!(push(&mut r, &small[1], 0).is_some());
}

#[test]
fn a_growing_frame_that_exceeds_the_byte_bound_evicts_older_frames_then_itself() {
    let config = ReassemblyConfig {
        max_pending_bytes: 4_000,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(config);
    let header = |frame_number, fragment_index| DatagramHeader {
        room_handle: ROOM,
        sender_slot: Slot(1),
        media_kind: MediaKind::Video,
        keyframe: false,
        frame_number,
        fragment_index,
        fragment_count: 8,
    };
    // Tiny first fragments reserve little; full ones make the buffer grow.
    assert!(r.push(&header(1, 0), b"x", 0).is_none());
    assert!(r.push(&header(2, 0), b"y", 1).is_none());
    assert_eq!(r.pending_frames(), 2);
    let big = [0u8; CHUNK];
    assert!(r.push(&header(2, 1), &big, 2).is_none());
    assert!(r.pending_bytes() <= 4_000);
    assert!(r.push(&header(2, 2), &big, 2).is_none());
    assert!(r.pending_bytes() <= 4_000);
    assert!(r.push(&header(2, 3), &big, 2).is_none());
    assert!(r.pending_bytes() <= 4_000);
    assert_eq!(r.pending_frames(), 0);
    assert_eq!(r.stats().evicted, 2);
}

#[test]
fn inconsistent_fragment_count_restarts_the_frame() {
    let three = send(
        Slot(1),
        MediaKind::Video,
        false,
        3,
        &ciphertext(3 * CHUNK, 1),
    );
    let two = send(
        Slot(1),
        MediaKind::Video,
        false,
        3,
        &ciphertext(2 * CHUNK, 2),
    );
    let mut r = Reassembler::default();
    assert!(push(&mut r, &three[0], 0).is_none());
    assert!(push(&mut r, &three[1], 0).is_none());
    // Claims 2 fragments: the 3-fragment partial is dropped, this one starts over.
    assert!(push(&mut r, &two[1], 0).is_none());
    assert_eq!(r.stats().inconsistent, 1);
    assert_eq!(r.pending_frames(), 1);
    assert_eq!(
        push(&mut r, &two[0], 0).unwrap().ciphertext,
        ciphertext(2 * CHUNK, 2)
    );
    // A single-fragment datagram under the key of a partial frame drops it too.
    assert!(push(&mut r, &three[2], 0).is_none());
    let single = send(Slot(1), MediaKind::Video, false, 3, b"whole");
    assert_eq!(push(&mut r, &single[0], 0).unwrap().ciphertext, b"whole");
    assert_eq!(r.stats().inconsistent, 2);
    assert_eq!(r.pending_frames(), 0);
}

#[test]
fn inconsistent_keyframe_flag_restarts_the_frame() {
    let ct = ciphertext(2 * CHUNK, 1);
    let key = send(Slot(1), MediaKind::Video, true, 3, &ct);
    let delta = send(Slot(1), MediaKind::Video, false, 3, &ct);
    let mut r = Reassembler::default();
    assert!(push(&mut r, &key[0], 0).is_none());
    assert!(push(&mut r, &delta[1], 0).is_none());
    assert_eq!(r.stats().inconsistent, 1);
    let frame = push(&mut r, &delta[0], 0).unwrap();
    assert!(!frame.keyframe);
    assert_eq!(frame.ciphertext, ct);
}

#[test]
fn malformed_fragments_are_dropped_and_counted() {
    let mut r = Reassembler::default();
    let header = |fragment_index, fragment_count| DatagramHeader {
        room_handle: ROOM,
        sender_slot: Slot(1),
        media_kind: MediaKind::Audio,
        keyframe: false,
        frame_number: 1,
        fragment_index,
        fragment_count,
    };
    for (index, count) in [(0, 0), (1, 1), (64, 64), (0, 65), (255, 255)] {
        assert!(r.push(&header(index, count), b"x", 0).is_none());
    }
    assert!(r.push(&header(0, 1), &[0; CHUNK + 1], 0).is_none());
    assert!(r.push(&header(0, 2), &[0; 100_000], 0).is_none());
    assert_eq!(r.stats().inconsistent, 7);
    assert_eq!(r.pending_frames(), 0);
    // Empty payloads are harmless.
    assert_eq!(r.push(&header(0, 1), b"", 0).unwrap().ciphertext, b"");
    assert!(r.push(&header(1, 2), b"", 0).is_none());
    assert_eq!(r.push(&header(0, 2), b"a", 0).unwrap().ciphertext, b"a");
}

#[test]
fn single_fragment_frames_skip_the_pending_table() {
    let mut r = Reassembler::default();
    for n in 0..100 {
        let d = send(
            Slot(2),
            MediaKind::Audio,
            false,
            n,
            &ciphertext(160, n as u8),
        );
        let frame = push(&mut r, &d[0], u64::from(n)).unwrap();
        assert_eq!(frame.ciphertext, ciphertext(160, n as u8));
        assert_eq!(r.pending_frames(), 0);
        assert_eq!(r.poll_timeout(), None);
    }
    assert_eq!(r.stats().completed, 100);
}

#[test]
fn frame_metadata_has_the_documented_layout() {
    assert_eq!(
        frame_metadata(MediaKind::Audio, false, 0),
        [1, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        frame_metadata(MediaKind::Video, true, 0x0102_0304),
        [1, 0b011, 1, 2, 3, 4]
    );
    assert_eq!(
        frame_metadata(MediaKind::Video, false, u32::MAX),
        [1, 0b010, 0xff, 0xff, 0xff, 0xff]
    );
    // The flags byte is the datagram header's.
    for kind in [MediaKind::Audio, MediaKind::Video] {
        for keyframe in [false, true] {
            let d = send(Slot(0), kind, keyframe, 77, b"x");
            assert_eq!(frame_metadata(kind, keyframe, 77)[1], d[0][1]);
            let frame = push(&mut Reassembler::default(), &d[0], 0).unwrap();
            assert_eq!(frame.metadata(), frame_metadata(kind, keyframe, 77));
        }
    }
}

#[test]
fn debug_output_shows_lengths_not_bytes() {
    let frame = AssembledFrame {
        sender_slot: Slot(1),
        kind: MediaKind::Video,
        keyframe: false,
        frame_number: 2,
        ciphertext: vec![0xAB; 300],
    };
    let debug = format!("{frame:?}");
    assert!(debug.contains("ciphertext_len: 300"), "{debug}");
    assert!(!debug.contains("171"), "{debug}");
    let mut r = Reassembler::default();
    push(
        &mut r,
        &send(Slot(1), MediaKind::Video, false, 1, &[0xAB; 2 * CHUNK])[0],
        0,
    );
    let debug = format!("{r:?}");
    assert!(debug.contains("pending_frames: 1"), "{debug}");
    assert!(!debug.contains("171"), "{debug}");
}

#[test]
fn shuffled_fragments_of_random_frames_reassemble_exactly_once() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x006d_6564_6961);
    for round in 0..50 {
        let max_datagram = [HEADER_LEN + 1, 200, 1200, MAX_DATAGRAM_BYTES][round % 4];
        let max_len = max_frame_ciphertext(max_datagram);
        // A few senders, each a few frames of random size and kind.
        let mut expected = Vec::new();
        let mut datagrams = Vec::new();
        for slot in 0..3u16 {
            for frame_number in 0..4u32 {
                let len = 1 + (rng.next_u32() as usize) % max_len;
                let mut ct = vec![0u8; len];
                rng.fill_bytes(&mut ct);
                let kind = if rng.next_u32() % 3 == 0 {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                let keyframe = rng.next_u32() % 2 == 0;
                for d in fragment(ROOM, kind, keyframe, frame_number, &ct, max_datagram).unwrap() {
                    let mut d = d.to_vec();
                    write_sender_slot(&mut d, Slot(slot)).unwrap();
                    datagrams.push(d);
                }
                expected.push(AssembledFrame {
                    sender_slot: Slot(slot),
                    kind,
                    keyframe,
                    frame_number,
                    ciphertext: ct,
                });
            }
        }
        // Fisher-Yates shuffle, then duplicate a few datagrams right after themselves.
        for i in (1..datagrams.len()).rev() {
            let j = (rng.next_u32() as usize) % (i + 1);
            datagrams.swap(i, j);
        }
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        let mut duplicates_sent = 0;
        for (t, d) in datagrams.iter().enumerate() {
            got.extend(push(&mut r, d, t as u64 / 16));
            let (header, _) = DatagramHeader::decode(d).unwrap();
            let single = header.fragment_count == 1;
            if rng.next_u32() % 8 == 0 && !single {
                // Only a duplicate of a still-pending frame's fragment counts as one.
                let before = r.stats().duplicates;
                got.extend(push(&mut r, d, t as u64 / 16));
                duplicates_sent += r.stats().duplicates - before;
            }
        }
        got.sort_by_key(|f| (f.sender_slot, f.frame_number));
        assert_eq!(got, expected, "round {round}");
        let stats = r.stats();
        assert_eq!(stats.completed, expected.len() as u64);
        assert_eq!(stats.duplicates, duplicates_sent);
        assert_eq!(
            (stats.expired, stats.evicted, stats.inconsistent),
            (0, 0, 0)
        );
        // Whatever is still pending was started by stray duplicates of completed frames.
        r.handle_timeout(u64::MAX);
        assert_eq!(r.pending_frames(), 0);
        assert_eq!(r.pending_bytes(), 0);
    }
}

/// `push_ref` is `push` with single-fragment frames borrowed: same frames, same state
/// and counters, over a mix of single- and multi-fragment frames, duplicates and a
/// single fragment that contradicts a pending frame.
#[test]
fn push_ref_behaves_like_push_and_borrows_single_fragments() {
    let mut datagrams = Vec::new();
    for n in 0..20u32 {
        let len = if n % 3 == 0 { 3 * CHUNK + 5 } else { 120 };
        let mut d = send(
            Slot((n % 4) as u16),
            MediaKind::Video,
            n % 5 == 0,
            n,
            &ciphertext(len, n as u8),
        );
        if n % 4 == 1 {
            d.push(d[0].clone());
        }
        d.reverse();
        datagrams.extend(d);
    }
    // A single fragment under the key of a pending multi-fragment frame.
    let pending = send(
        Slot(7),
        MediaKind::Audio,
        false,
        99,
        &ciphertext(2 * CHUNK, 1),
    );
    let single = send(Slot(7), MediaKind::Audio, false, 99, &ciphertext(10, 2));
    datagrams.push(pending[0].clone());
    datagrams.push(single[0].clone());

    let (mut by_push, mut by_ref) = (Reassembler::default(), Reassembler::default());
    for (i, d) in datagrams.iter().enumerate() {
        let (header, payload) = DatagramHeader::decode(d).unwrap();
        let now = i as u64;
        let owned = by_push.push(&header, payload, now);
        let borrowed = by_ref.push_ref(&header, payload, now);
        match (owned, borrowed) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                assert_eq!(
                    (a.sender_slot, a.kind, a.keyframe, a.frame_number),
                    (b.sender_slot, b.kind, b.keyframe, b.frame_number)
                );
                assert_eq!(a.metadata(), b.metadata());
                assert_eq!(a.ciphertext.as_slice(), &*b.ciphertext);
                let is_single = header.fragment_count == 1;
                assert_eq!(
                    matches!(b.ciphertext, std::borrow::Cow::Borrowed(_)),
                    is_single
                );
            }
            (a, b) => panic!("push gave {a:?}, push_ref gave {b:?}"),
        }
        assert_eq!(by_push.stats(), by_ref.stats());
        assert_eq!(by_push.pending_frames(), by_ref.pending_frames());
    }
    assert_eq!(by_ref.stats().inconsistent, 1);
}
