//! The SDK's media `Reassembler` fed a sequence of datagrams read from the input, with
//! bounds and virtual time chosen by the input.
//!
//! Input: two bytes pick the bounds (pending frames 0..=15, pending bytes in 1 KiB steps
//! up to 255 KiB, timeout 0..=255 ms); then each step is a time advance byte, a flags
//! byte and a u16 length-prefixed datagram. Datagrams are decoded with
//! `DatagramHeader::decode` and pushed; every fourth step (by flags) also calls
//! `handle_timeout`. With flag bit 2, the step instead fragments the datagram's bytes
//! as a frame with `fragment` and pushes every fragment, in an input-chosen rotation,
//! into a fresh reassembler with default bounds, which must return exactly that frame.
//!
//! Properties: never a panic; `pending_frames <= max_pending_frames` and
//! `pending_bytes <= max_pending_bytes` after every call; a returned frame carries the
//! slot, kind, keyframe flag and frame number of the datagram that completed it and at
//! most `fragment_count * MAX_FRAGMENT_PAYLOAD` bytes; counters never decrease; after
//! `handle_timeout(now)` no deadline is left at or before `now`.
#![no_main]

use conclave_core::media::{
    MAX_FRAGMENT_PAYLOAD, Reassembler, ReassemblyConfig, ReassemblyStats, fragment,
};
use conclave_proto::datagram::{DatagramHeader, MediaKind, RoomHandle};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Steps per input.
const MAX_STEPS: usize = 512;

fn check_bounds(r: &Reassembler, config: &ReassemblyConfig) {
    assert!(r.pending_frames() <= config.max_pending_frames);
    assert!(r.pending_bytes() <= config.max_pending_bytes);
    if r.pending_frames() == 0 {
        assert_eq!(r.pending_bytes(), 0);
        assert_eq!(r.poll_timeout(), None);
    } else {
        assert!(r.poll_timeout().is_some());
    }
}

fn check_monotonic(before: ReassemblyStats, after: ReassemblyStats) {
    assert!(after.completed >= before.completed);
    assert!(after.expired >= before.expired);
    assert!(after.evicted >= before.evicted);
    assert!(after.duplicates >= before.duplicates);
    assert!(after.inconsistent >= before.inconsistent);
}

/// `fragment` followed by reassembly in a rotated order must give back the frame.
fn round_trip(u: &mut Unstructured<'_>, ciphertext: &[u8], flags: u8) -> Result<()> {
    let kind = if flags & 1 == 0 {
        MediaKind::Audio
    } else {
        MediaKind::Video
    };
    let keyframe = flags & 2 != 0;
    let frame_number: u32 = u.arbitrary()?;
    let max_datagram = usize::from(u.arbitrary::<u16>()?);
    let Ok(datagrams) = fragment(
        RoomHandle(7),
        kind,
        keyframe,
        frame_number,
        ciphertext,
        max_datagram,
    ) else {
        return Ok(());
    };
    let rotate = usize::from(u.arbitrary::<u8>()?) % datagrams.len();
    let mut r = Reassembler::default();
    let mut frames = Vec::new();
    for datagram in datagrams.iter().cycle().skip(rotate).take(datagrams.len()) {
        assert!(datagram.len() <= max_datagram);
        let (header, payload) = DatagramHeader::decode(datagram).expect("fragment() decodes");
        frames.extend(r.push(&header, payload, 0));
    }
    assert_eq!(frames.len(), 1);
    let frame = &frames[0];
    assert_eq!(frame.ciphertext, ciphertext);
    assert_eq!(
        (frame.kind, frame.keyframe, frame.frame_number),
        (kind, keyframe, frame_number)
    );
    assert_eq!(r.pending_frames(), 0);
    Ok(())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let config = ReassemblyConfig {
        max_pending_frames: usize::from(u.arbitrary::<u8>()? % 16),
        max_pending_bytes: usize::from(u.arbitrary::<u8>()?) * 1024,
        timeout_ms: u64::from(u.arbitrary::<u8>()?),
    };
    let mut r = Reassembler::new(config);
    let mut now: u64 = 0;
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        now += u64::from(u.arbitrary::<u8>()?);
        let flags: u8 = u.arbitrary()?;
        let len = usize::from(u.arbitrary::<u16>()?);
        let datagram = u.bytes(len.min(u.len()))?;

        if flags & 4 != 0 {
            round_trip(u, datagram, flags)?;
            continue;
        }
        let before = r.stats();
        if let Ok((header, payload)) = DatagramHeader::decode(datagram) {
            if let Some(frame) = r.push(&header, payload, now) {
                assert_eq!(frame.sender_slot, header.sender_slot);
                assert_eq!(frame.kind, header.media_kind);
                assert_eq!(frame.keyframe, header.keyframe);
                assert_eq!(frame.frame_number, header.frame_number);
                assert!(
                    frame.ciphertext.len()
                        <= usize::from(header.fragment_count) * MAX_FRAGMENT_PAYLOAD
                );
                assert_eq!(r.stats().completed, before.completed + 1);
                let _ = format!("{frame:?}");
            }
        }
        check_bounds(&r, &config);
        if flags & 3 == 3 {
            r.handle_timeout(now);
            if let Some(deadline) = r.poll_timeout() {
                assert!(
                    deadline > now,
                    "deadline {deadline} left after handle_timeout({now})"
                );
            }
            check_bounds(&r, &config);
        }
        check_monotonic(before, r.stats());
    }
    let _ = format!("{r:?}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
