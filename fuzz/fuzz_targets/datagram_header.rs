//! `DatagramHeader::decode` on arbitrary bytes. Whenever it accepts, `encode` must
//! reproduce the first 14 bytes exactly, the payload must be the rest, and stamping the
//! sender slot must change the slot and nothing else.
#![no_main]

use conclave_proto::datagram::{
    DatagramHeader, HEADER_LEN, MAX_FRAGMENTS, Slot, write_sender_slot,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut stamped = data.to_vec();
    match DatagramHeader::decode(data) {
        Ok((header, payload)) => {
            let encoded = header.encode().expect("a decoded header encodes");
            assert_eq!(&encoded[..], &data[..HEADER_LEN]);
            assert_eq!(payload, &data[HEADER_LEN..]);
            assert!(header.fragment_index < header.fragment_count);
            assert!(header.fragment_count <= MAX_FRAGMENTS);

            let slot = Slot(header.sender_slot.0 ^ 0xa5a5);
            write_sender_slot(&mut stamped, slot).expect("a decoded datagram can be stamped");
            let (restamped, rest) = DatagramHeader::decode(&stamped).expect("still decodes");
            assert_eq!(
                restamped,
                DatagramHeader {
                    sender_slot: slot,
                    ..header
                }
            );
            assert_eq!(rest, payload);
        }
        Err(err) => {
            let _ = err.to_string();
            // Must not panic; fails exactly on buffers shorter than a header.
            let ok = write_sender_slot(&mut stamped, Slot(7)).is_ok();
            assert_eq!(ok, data.len() >= HEADER_LEN);
        }
    }
});
