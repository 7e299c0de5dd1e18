//! `SealedContainer::decode` + `open` against a deterministic fixture (a sender, a
//! recipient device with a prekey pool, one genuinely sealed container).
//!
//! The first input byte picks a mode; the rest drives it:
//! * 0: the bytes are a container, opened as they are;
//! * 1: a network attacker's edits of the genuine container's bytes (bit flips,
//!   truncation, insertion, duplicated slices, protobuf field splices with a donor);
//! * 2: a dishonest sender: the same edits applied to the header, ciphertext and/or
//!   certificate body, then re-signed (certificate by the user key, container by the
//!   device key), which reaches every check behind the signatures;
//! * 3: a dishonest sender editing header fields structurally (version, ids, times,
//!   entries, ephemeral key, commitment, payload kind), then re-signing.
//!
//! Property: decode/open never panics, a failure never spends the prekey (checked in
//! the fixture), and anything that does open yields exactly the genuine payload.
#![no_main]

use conclave_core::UnixMillis;
use conclave_fuzz::{Fixture, choose_now, mutate};
use conclave_proto::{Message, v1};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn check(fx: &Fixture, bytes: &[u8], now: UnixMillis) {
    if let Ok(payload) = fx.open(bytes, now) {
        assert_eq!(
            payload, fx.payload,
            "an altered container opened to a different plaintext"
        );
    }
}

fn network_attacker(fx: &Fixture, u: &mut Unstructured<'_>) -> Result<(Vec<u8>, UnixMillis)> {
    let now = choose_now(u);
    let mut bytes = fx.genuine.clone();
    mutate(u, &mut bytes, &fx.donor)?;
    Ok((bytes, now))
}

fn resigning_sender(fx: &Fixture, u: &mut Unstructured<'_>) -> Result<(Vec<u8>, UnixMillis)> {
    let now = choose_now(u);
    let mut wire = fx.genuine_wire.clone();
    let what: u8 = u.int_in_range(1..=7)?;
    if what & 1 != 0 {
        mutate(u, &mut wire.header, &fx.donor_wire.header)?;
    }
    if what & 2 != 0 {
        mutate(u, &mut wire.ciphertext, &fx.donor_wire.ciphertext)?;
    }
    if what & 4 != 0 {
        if let Some(cert) = wire.sender_certificate.as_mut() {
            mutate(u, &mut cert.body, &fx.me.certificate().body)?;
            fx.resign_certificate(cert);
        }
    }
    fx.resign_container(&mut wire);
    Ok((wire.encode_to_vec(), now))
}

fn some_bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}

fn structured_sender(fx: &Fixture, u: &mut Unstructured<'_>) -> Result<(Vec<u8>, UnixMillis)> {
    let now = choose_now(u);
    let mut wire = fx.genuine_wire.clone();
    let mut header =
        v1::ContainerHeader::decode(wire.header.as_slice()).expect("genuine header decodes");
    let me = fx.me.device_id().as_bytes().to_vec();
    for _ in 0..u.int_in_range(1u8..=4)? {
        match u.int_in_range(0u8..=12)? {
            0 => header.version = u.arbitrary()?,
            1 => header.container_id = some_bytes(u, 20)?,
            2 => header.sender_user_id = some_bytes(u, 40)?,
            3 => header.sender_device_id = some_bytes(u, 20)?,
            4 => header.created_at_ms = u.arbitrary()?,
            5 => header.ttl_ms = u.arbitrary()?,
            6 => {
                // A (probably invalid or foreign) compressed point.
                let mut key = vec![u.choose(&[2u8, 3, 4, 0])?.to_owned()];
                key.extend(some_bytes(u, 60)?);
                header.ephemeral_public_key = key;
            }
            7 if !header.ephemeral_public_key.is_empty() => {
                let i = u.choose_index(header.ephemeral_public_key.len())?;
                header.ephemeral_public_key[i] ^= u.int_in_range(1u8..=255)?;
            }
            8 if !header.entries.is_empty() => {
                let i = u.choose_index(header.entries.len())?;
                let entry = &mut header.entries[i];
                match u.int_in_range(0u8..=3)? {
                    0 => entry.prekey_id = u.arbitrary()?,
                    1 => entry.recipient_device_id = me.clone(),
                    2 => entry.wrapped_key = some_bytes(u, 80)?,
                    _ => {
                        if !entry.wrapped_key.is_empty() {
                            let j = u.choose_index(entry.wrapped_key.len())?;
                            entry.wrapped_key[j] ^= u.int_in_range(1u8..=255)?;
                        }
                    }
                }
            }
            9 => match u.int_in_range(0u8..=3)? {
                0 => header.entries.clear(),
                1 if !header.entries.is_empty() => {
                    let i = u.choose_index(header.entries.len())?;
                    let copy = header.entries[i].clone();
                    header.entries.push(copy);
                }
                2 if !header.entries.is_empty() => {
                    let i = u.choose_index(header.entries.len())?;
                    header.entries.remove(i);
                }
                _ => header.entries.reverse(),
            },
            10 => header.key_commitment = some_bytes(u, 40)?,
            11 => header.payload_kind = u.arbitrary()?,
            _ => mutate(u, &mut wire.ciphertext, &fx.donor_wire.ciphertext)?,
        }
    }
    wire.header = header.encode_to_vec();
    fx.resign_container(&mut wire);
    Ok((wire.encode_to_vec(), now))
}

fuzz_target!(|data: &[u8]| {
    let fx = Fixture::get();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let built = match mode % 4 {
        0 => Ok((rest.to_vec(), conclave_fuzz::NOW)),
        1 => network_attacker(fx, &mut u),
        2 => resigning_sender(fx, &mut u),
        _ => structured_sender(fx, &mut u),
    };
    if let Ok((bytes, now)) = built {
        check(fx, &bytes, now);
    }
});
