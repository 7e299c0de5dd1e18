//! `SframeReceiver::decrypt` on attacker bytes. A receiver holds the keys of senders
//! 0..4 in epoch 3 of a fixed meeting key. The first input byte picks a mode:
//! * even: the rest is a frame as received from the network;
//! * odd: the rest is XORed onto a genuine frame (and may truncate or extend it).
//!
//! Properties: never a panic; a frame that is not byte-identical to a genuine one never
//! decrypts; the genuine frame decrypts to its plaintext exactly once.
#![no_main]

use std::sync::OnceLock;

use conclave_core::meeting::{Epoch, MeetingKey, SFRAME_SUITE};
use conclave_core::sframe::SframeReceiver;
use libfuzzer_sys::fuzz_target;

const METADATA: &[u8] = b"conclave fuzz";
const PLAINTEXT: &[u8] = b"twenty milliseconds of opus";

fn key() -> MeetingKey {
    MeetingKey::from_slice(Epoch(3), &[0x42; 32]).expect("32-byte key")
}

fn genuine() -> &'static [u8] {
    static FRAME: OnceLock<Vec<u8>> = OnceLock::new();
    FRAME.get_or_init(|| {
        let mut sender = key().sframe_sender(2).expect("sender index 2 fits");
        sender.encrypt(METADATA, PLAINTEXT).expect("small frame")
    })
}

fn receiver() -> SframeReceiver {
    let key = key();
    let mut rx = SframeReceiver::new();
    for index in 0..4 {
        rx.add_key(
            key.sframe_kid(index).expect("fits"),
            SFRAME_SUITE,
            key.sframe_base_key(index).as_slice(),
        )
        .expect("room for four keys");
    }
    rx
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let frame: Vec<u8> = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let g = genuine();
        let len = if mode & 0b10 == 0 {
            g.len()
        } else {
            rest.len()
        };
        (0..len)
            .map(|i| g.get(i).copied().unwrap_or(0) ^ rest.get(i).copied().unwrap_or(0))
            .collect()
    };
    let mut rx = receiver();
    match rx.decrypt(METADATA, &frame) {
        Ok(received) => {
            assert_eq!(
                frame.as_slice(),
                genuine(),
                "only the genuine frame may decrypt"
            );
            assert_eq!(received.plaintext, PLAINTEXT);
            assert!(
                rx.decrypt(METADATA, &frame).is_err(),
                "a replay must be refused"
            );
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
