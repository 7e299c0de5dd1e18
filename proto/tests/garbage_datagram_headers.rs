//! Bounded randomized test: `DatagramHeader::decode` on ~100k random and mutated inputs
//! never panics, accepts exactly the inputs an independent reference predicate accepts,
//! and every accepted header round-trips through `encode` and `write_sender_slot`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use conclave_proto::datagram::{
    DATAGRAM_VERSION, DatagramHeader, DatagramHeaderError, HEADER_LEN, MAX_FRAGMENTS, MediaKind,
    RoomHandle, Slot, write_sender_slot,
};
use conclave_proto::limits::MAX_DATAGRAM_BYTES;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const RANDOM_INPUTS: usize = 40_000;
const MUTATED_INPUTS: usize = 40_000;
const STRUCTURED_INPUTS: usize = 20_000;

/// Written from the wire layout in the module docs, independently of the decoder.
fn reference_accepts(bytes: &[u8]) -> bool {
    if bytes.len() < HEADER_LEN || bytes.len() > MAX_DATAGRAM_BYTES {
        return false;
    }
    let flags = bytes[1];
    let kind = (flags >> 1) & 0b11;
    let (index, count) = (bytes[12], bytes[13]);
    bytes[0] == DATAGRAM_VERSION
        && flags & 0b1111_1000 == 0
        && kind <= 2
        && (1..=MAX_FRAGMENTS).contains(&count)
        && index < count
}

/// Decodes `bytes` and checks every property that must hold for the result.
/// Returns whether it was accepted.
fn check(bytes: &[u8]) -> bool {
    let result = DatagramHeader::decode(bytes);
    assert_eq!(
        result.is_ok(),
        reference_accepts(bytes),
        "decoder and reference disagree on {bytes:02x?} ({result:?})"
    );
    match result {
        Ok((header, payload)) => {
            // Round trip: the encoding reproduces the first 14 bytes exactly and the
            // payload is everything after them.
            assert_eq!(header.encode().unwrap().as_slice(), &bytes[..HEADER_LEN]);
            assert_eq!(payload, &bytes[HEADER_LEN..]);
            assert!(header.fragment_index < header.fragment_count);
            assert!(header.fragment_count <= MAX_FRAGMENTS);
            // The SFU's stamp changes the slot and nothing else.
            let mut stamped = bytes.to_vec();
            let slot = Slot(header.sender_slot.0.wrapping_add(0x1234));
            write_sender_slot(&mut stamped, slot).unwrap();
            let (restamped, rest) = DatagramHeader::decode(&stamped).unwrap();
            assert_eq!(
                restamped,
                DatagramHeader {
                    sender_slot: slot,
                    ..header
                }
            );
            assert_eq!(rest, payload);
            true
        }
        Err(err) => {
            // Length errors report the real length; the message renders.
            match err {
                DatagramHeaderError::TooShort { len } | DatagramHeaderError::TooLong { len } => {
                    assert_eq!(len, bytes.len());
                }
                _ => assert!(bytes.len() >= HEADER_LEN),
            }
            assert!(!err.to_string().is_empty());
            // Stamping never panics, and fails only on buffers shorter than a header.
            let mut copy = bytes.to_vec();
            assert_eq!(
                write_sender_slot(&mut copy, Slot(7)).is_ok(),
                bytes.len() >= HEADER_LEN
            );
            false
        }
    }
}

fn random_len(rng: &mut ChaCha20Rng) -> usize {
    // Mostly around the header size, sometimes up to (and past) the size limit.
    match rng.next_u32() % 8 {
        0 => (rng.next_u32() as usize) % (MAX_DATAGRAM_BYTES + 64),
        1 => MAX_DATAGRAM_BYTES - 2 + (rng.next_u32() as usize) % 5,
        _ => (rng.next_u32() as usize) % 64,
    }
}

fn random_bytes(rng: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

fn random_valid_header(rng: &mut ChaCha20Rng) -> DatagramHeader {
    let count = 1 + (rng.next_u32() % u32::from(MAX_FRAGMENTS)) as u8;
    DatagramHeader {
        room_handle: RoomHandle(rng.next_u32()),
        sender_slot: Slot(rng.next_u32() as u16),
        media_kind: if rng.next_u32() % 2 == 0 {
            MediaKind::Audio
        } else {
            MediaKind::Video
        },
        keyframe: rng.next_u32() % 2 == 0,
        frame_number: rng.next_u32(),
        fragment_index: (rng.next_u32() % u32::from(count)) as u8,
        fragment_count: count,
    }
}

fn mutate(rng: &mut ChaCha20Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.next_u32() % 3 {
        let len = bytes.len();
        match rng.next_u32() % 7 {
            0 if len > 0 => {
                let i = rng.next_u32() as usize % len;
                bytes[i] ^= 1 << (rng.next_u32() % 8);
            }
            1 if len > 0 => {
                let i = rng.next_u32() as usize % len;
                bytes[i] = rng.next_u32() as u8;
            }
            2 => bytes.truncate(rng.next_u32() as usize % (len + 1)),
            3 => {
                let i = rng.next_u32() as usize % (len + 1);
                bytes.insert(i, rng.next_u32() as u8);
            }
            4 if len > 0 => {
                // Interesting values in the fields with constraints.
                let i = [0usize, 1, 12, 13][rng.next_u32() as usize % 4];
                if i < len {
                    bytes[i] =
                        [0u8, 1, 2, 6, 7, 8, 63, 64, 65, 0x80, 0xff][rng.next_u32() as usize % 11];
                }
            }
            5 => {
                let extra = rng.next_u32() as usize % 2048;
                bytes.extend(std::iter::repeat_n(0xa5, extra));
            }
            _ => bytes.clear(),
        }
    }
}

#[test]
fn random_and_mutated_datagram_headers_never_panic_and_round_trip() {
    let mut rng = ChaCha20Rng::seed_from_u64(0xda7a_6a4a);
    let mut accepted = 0usize;

    // (a) Pure garbage, with the version byte forced right half of the time so the
    // later checks are reached too.
    for _ in 0..RANDOM_INPUTS {
        let len = random_len(&mut rng);
        let mut bytes = random_bytes(&mut rng, len);
        if !bytes.is_empty() && rng.next_u32() % 2 == 0 {
            bytes[0] = DATAGRAM_VERSION;
            if bytes.len() > 1 && rng.next_u32() % 2 == 0 {
                bytes[1] &= 0b0000_0111;
            }
            if bytes.len() >= HEADER_LEN && rng.next_u32() % 2 == 0 {
                bytes[13] = 1 + (rng.next_u32() % u32::from(MAX_FRAGMENTS + 1)) as u8;
                bytes[12] = (rng.next_u32() % u32::from(bytes[13] + 1)) as u8;
            }
        }
        accepted += usize::from(check(&bytes));
    }

    // (b) Mutations of valid datagrams.
    for _ in 0..MUTATED_INPUTS {
        let mut bytes = random_valid_header(&mut rng).encode().unwrap().to_vec();
        let payload_len = rng.next_u32() as usize % 64;
        bytes.extend(random_bytes(&mut rng, payload_len));
        mutate(&mut rng, &mut bytes);
        accepted += usize::from(check(&bytes));
    }

    // (c) Valid headers with payloads up to the limit: decode(encode(h)) == h.
    for _ in 0..STRUCTURED_INPUTS {
        let header = random_valid_header(&mut rng);
        let mut bytes = header.encode().unwrap().to_vec();
        let payload_len = rng.next_u32() as usize % (MAX_DATAGRAM_BYTES - HEADER_LEN + 1);
        bytes.extend(random_bytes(&mut rng, payload_len));
        assert!(check(&bytes));
        assert_eq!(DatagramHeader::decode(&bytes).unwrap().0, header);
        accepted += 1;
    }

    // The generators must reach both outcomes in volume, or the test proves little.
    let total = RANDOM_INPUTS + MUTATED_INPUTS + STRUCTURED_INPUTS;
    assert!(
        accepted > total / 4,
        "only {accepted} of {total} inputs accepted"
    );
    assert!(
        accepted < total * 3 / 4,
        "{accepted} of {total} inputs accepted"
    );
}

#[test]
fn encode_rejects_exactly_the_fragment_fields_decode_rejects() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let base = random_valid_header(&mut rng);
    for index in 0..=u8::MAX {
        for count in 0..=u8::MAX {
            let header = DatagramHeader {
                fragment_index: index,
                fragment_count: count,
                ..base
            };
            let valid = (1..=MAX_FRAGMENTS).contains(&count) && index < count;
            match header.encode() {
                Ok(wire) => {
                    assert!(valid);
                    assert_eq!(DatagramHeader::decode(&wire).unwrap().0, header);
                }
                Err(err) => {
                    assert!(!valid);
                    assert_eq!(err, DatagramHeaderError::BadFragment { index, count });
                }
            }
        }
    }
}
