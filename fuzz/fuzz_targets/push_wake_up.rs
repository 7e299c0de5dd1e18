//! `push::open_wake_up` on attacker bytes: what a push service (or anyone who learnt a
//! device's endpoint) can send a device. The keys and the donor body are RFC 8291's
//! Appendix A example (a genuine aes128gcm body for those keys). The first input byte
//! picks a mode:
//! * even: the rest is a push body as received;
//! * odd: the rest drives edits of the genuine body (bit flips, truncation, insertion,
//!   duplicated slices), which reach the record-size, key-id and record checks.
//!
//! Property: never a panic; a body other than the genuine one never opens (the genuine
//! one opens to RFC 8291's text, which is not a wake-up, so nothing opens at all).
#![no_main]

use std::sync::OnceLock;

use conclave_core::push::{PushKeys, open_wake_up};
use conclave_fuzz::mutate;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

/// RFC 8291 Appendix A: the user agent's private key, then its auth secret.
const UA_PRIVATE: &str = "ab5757a70dd4a53e553a6bbf71ffefea2874ec07a6b379e3c48f895a02dc33de";
const AUTH: &str = "05305932a1c7eabe13b6cec9fda48882";
/// RFC 8291 section 5: the encrypted body (header and one record).
const BODY: &str = "0c6bfaadad67958803092d454676f397000010004104fe33f4ab0dea71914db55823f73b54948f41306d920732dbb9a59a53286482200e597a7b7bc260ba1c227998580992e93973002f3012a28ae8f06bbb78e5ec0ff297de5b429bba7153d3a4ae0caa091fd425f3b4b5414add8ab37a19c1bbb05cf5cb5b2a2e0562d558635641ec52812c6c8ff42e95ccb86be7cd";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("a hex constant"))
        .collect()
}

fn keys() -> &'static PushKeys {
    static KEYS: OnceLock<PushKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut stored = vec![1];
        stored.extend(unhex(UA_PRIVATE));
        stored.extend(unhex(AUTH));
        PushKeys::from_bytes(&stored).expect("RFC 8291's keys")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let genuine = unhex(BODY);
        let mut body = genuine.clone();
        let mut u = Unstructured::new(rest);
        if mutate(&mut u, &mut body, &genuine).is_err() {
            return;
        }
        body
    };
    assert!(
        open_wake_up(keys(), &body).is_err(),
        "only a wake-up opens, and no wake-up for these keys exists"
    );
});
