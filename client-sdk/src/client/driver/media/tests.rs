#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use conclave_proto::datagram::MediaKind;

use super::*;

fn datagram(room: u32, frame_number: u32) -> Bytes {
    let header = DatagramHeader {
        room_handle: RoomHandle(room),
        sender_slot: conclave_proto::datagram::Slot(0),
        media_kind: MediaKind::Audio,
        keyframe: false,
        frame_number,
        fragment_index: 0,
        fragment_count: 1,
    };
    let mut d = header.encode().unwrap().to_vec();
    d.extend_from_slice(b"payload");
    Bytes::from(d)
}

fn runs(burst: &[Bytes]) -> Vec<(u32, Vec<u32>)> {
    let mut headers = Vec::new();
    decode_headers(burst, &mut headers);
    let mut out = Vec::new();
    for_each_room_run(&headers, |room, run| {
        let numbers = run.iter().map(|(h, _)| h.frame_number).collect();
        out.push((room.0, numbers));
    });
    out
}

#[test]
fn a_burst_is_split_into_runs_of_one_room_in_arrival_order() {
    let burst = [
        datagram(1, 0),
        datagram(1, 1),
        datagram(2, 2),
        datagram(1, 3),
        datagram(1, 4),
    ];
    assert_eq!(
        runs(&burst),
        vec![(1, vec![0, 1]), (2, vec![2]), (1, vec![3, 4])]
    );
}

#[test]
fn undecodable_datagrams_never_start_a_run_or_reach_a_meeting() {
    let junk = Bytes::from_static(b"\xff");
    assert!(runs(std::slice::from_ref(&junk)).is_empty());
    assert!(runs(&[]).is_empty());
    let burst = [junk.clone(), datagram(3, 7), junk, datagram(3, 8)];
    assert_eq!(runs(&burst), vec![(3, vec![7, 8])]);
}
