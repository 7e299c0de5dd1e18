//! Protobuf decoders and the identity verification paths on arbitrary bytes.
//!
//! The first input byte picks a mode; the rest is the input:
//! * 0: `ContainerPayload` (every payload message is reachable through it): decode,
//!   re-encode round trip, `payload_kind`, `zeroize_payload_secrets`;
//! * 1: `ContainerHeader`, and the other container and identity messages: round trip;
//! * 2: a `DeviceCertificate` through `VerifiedDevice::verify` against the fixture's
//!   trusted sender key;
//! * 3: a certificate *body* signed with that user key (a compromised or buggy issuer),
//!   either the input verbatim or a mutation of the genuine body, so the checks after
//!   the signature (version, ids, key encodings, validity period) are reached;
//! * 4: a `SignedPrekey` through `VerifiedPrekey::verify` against the fixture device;
//! * 5: a prekey body signed by that device (verbatim or mutated genuine body);
//! * 6: raw key parsers (`UserPublicKey::from_bytes`).
#![no_main]

use conclave_core::container::{payload_kind, zeroize_payload_secrets};
use conclave_core::identity::{UserPublicKey, VerifiedDevice, VerifiedPrekey};
use conclave_fuzz::{Fixture, choose_now, mutate};
use conclave_proto::{Message, v1};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

/// Decoding, re-encoding and decoding again gives the same message.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice()).expect("re-encoding decodes");
    assert_eq!(again, message, "decode(encode(m)) != m");
    Some(message)
}

/// Either the input verbatim, or a mutation of `genuine` driven by the input.
fn body(u: &mut Unstructured<'_>, rest: &[u8], genuine: &[u8]) -> Vec<u8> {
    if u.arbitrary().unwrap_or(false) {
        let mut bytes = genuine.to_vec();
        let _ = mutate(u, &mut bytes, rest);
        bytes
    } else {
        rest.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = Fixture::get();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    match mode % 7 {
        0 => {
            if let Some(mut payload) = round_trip::<v1::ContainerPayload>(rest) {
                let kind = payload_kind(&payload);
                zeroize_payload_secrets(&mut payload);
                assert_eq!(payload_kind(&payload), kind);
            }
        }
        1 => {
            let _ = round_trip::<v1::ContainerHeader>(rest);
            let _ = round_trip::<v1::Container>(rest);
            let _ = round_trip::<v1::DeviceCertificateBody>(rest);
            let _ = round_trip::<v1::SignedPrekeyBody>(rest);
        }
        2 => {
            if let Ok(cert) = v1::DeviceCertificate::decode(rest) {
                if let Ok(device) = VerifiedDevice::verify(&cert, &fx.sender, conclave_fuzz::NOW) {
                    // Only the genuine certificate's body carries the trusted signature.
                    assert_eq!(
                        &device.certificate().body,
                        &fx.sender_device.certificate().body
                    );
                }
            }
        }
        3 => {
            let now = choose_now(&mut u);
            let body = body(&mut u, rest, &fx.sender_device.certificate().body);
            let mut cert = v1::DeviceCertificate {
                body,
                signature: Vec::new(),
            };
            fx.resign_certificate(&mut cert);
            match VerifiedDevice::verify(&cert, &fx.sender, now) {
                Ok(device) => {
                    assert_eq!(device.user_id(), fx.sender.user_id);
                    assert!(device.created_at() < device.expires_at());
                    assert!(now < device.expires_at());
                    let _ = format!("{device:?}");
                }
                Err(err) => {
                    let _ = err.to_string();
                }
            }
        }
        4 => {
            if let Ok(prekey) = v1::SignedPrekey::decode(rest) {
                if let Ok(verified) =
                    VerifiedPrekey::verify(&prekey, fx.me.public(), conclave_fuzz::NOW)
                {
                    assert_eq!(verified.device_id(), fx.me.device_id());
                }
            }
        }
        5 => {
            let now = choose_now(&mut u);
            let body = body(&mut u, rest, &fx.me_prekey.body);
            let prekey = fx.sign_prekey_body(body);
            match VerifiedPrekey::verify(&prekey, fx.me.public(), now) {
                Ok(verified) => {
                    assert_eq!(verified.device_id(), fx.me.device_id());
                    assert!(now < verified.expires_at());
                    let _ = format!("{verified:?}");
                }
                Err(err) => {
                    let _ = err.to_string();
                }
            }
        }
        _ => {
            if let Ok(key) = UserPublicKey::from_bytes(rest) {
                assert_eq!(&key.to_bytes()[..], rest);
            }
        }
    }
});
