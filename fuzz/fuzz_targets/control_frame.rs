//! The control-channel framing on arbitrary bytes, as the server and the SDK read it:
//! `frame_len` on the first four bytes (the length prefix), then `decode_client` and
//! `decode_server` on the rest and on the announced slice of it.
//!
//! Properties: never a panic; `frame_len` accepts exactly the lengths in `1..=max`
//! and reports the announced length otherwise; whatever decodes re-encodes to a frame
//! whose prefix announces its body and which decodes to the same message.
#![no_main]

use conclave_proto::frame::{
    self, DEFAULT_MAX_FRAME_BYTES, FrameError, PREFIX_LEN, decode_client, decode_server,
};
use libfuzzer_sys::fuzz_target;

fn check_len(prefix: [u8; PREFIX_LEN], max: usize) -> Option<usize> {
    let announced = u32::from_be_bytes(prefix) as usize;
    match frame::frame_len(prefix, max) {
        Ok(len) => {
            assert_eq!(len, announced);
            assert!(len > 0 && len <= max, "{len} accepted with max {max}");
            Some(len)
        }
        Err(FrameError::TooLarge { len, max: m }) => {
            assert_eq!((len, m), (announced, max));
            assert!(len > max);
            None
        }
        Err(FrameError::Empty) => {
            assert_eq!(announced, 0);
            None
        }
        Err(e) => panic!("frame_len failed with a decode error: {e}"),
    }
}

/// Decodes `body` both ways; whatever decodes must survive a round trip.
fn check_body(body: &[u8]) {
    if let Ok(message) = decode_client(body) {
        let bytes = frame::encode(&message).expect("a decoded frame re-encodes");
        let (prefix, again) = bytes
            .split_first_chunk::<PREFIX_LEN>()
            .expect("has a prefix");
        assert_eq!(u32::from_be_bytes(*prefix) as usize, again.len());
        assert_eq!(
            decode_client(again).expect("re-encoded frame decodes"),
            message
        );
    }
    if let Ok(message) = decode_server(body) {
        let bytes = frame::encode(&message).expect("a decoded frame re-encodes");
        let (prefix, again) = bytes
            .split_first_chunk::<PREFIX_LEN>()
            .expect("has a prefix");
        assert_eq!(u32::from_be_bytes(*prefix) as usize, again.len());
        assert_eq!(
            decode_server(again).expect("re-encoded frame decodes"),
            message
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((prefix, rest)) = data.split_first_chunk::<PREFIX_LEN>() else {
        return;
    };
    for max in [0, 1, rest.len(), DEFAULT_MAX_FRAME_BYTES, usize::MAX] {
        check_len(*prefix, max);
    }
    check_body(rest);
    // What a reader with the default limit would hand to the decoder.
    if let Some(len) = check_len(*prefix, DEFAULT_MAX_FRAME_BYTES) {
        if let Some(announced) = rest.get(..len) {
            if announced.len() != rest.len() {
                check_body(announced);
            }
        }
    }
});
