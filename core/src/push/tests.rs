//! Push wake-up tests: the published RFC 8291 and RFC 8188 examples, round trips with
//! the encryption the server uses (`web-push-native`), and bodies that must be refused
//! (other keys, altered, truncated, oversized, garbage) without a panic.

use conclave_proto::Message;
use conclave_proto::v1::{PushWakeUp, WakeKind, WakeUrgency};
use hkdf::Hkdf;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::Sha256;
use web_push_native::Auth;
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

use super::*;

/// Decodes base64url without padding (RFC 4648 §5), ignoring the whitespace the RFCs
/// wrap their examples with.
fn b64url(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("{:?} is not base64url", char::from(c)),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    assert!(bits < 6 && acc == 0, "non-canonical base64url ending");
    out
}

fn keys(seed: u64) -> PushKeys {
    PushKeys::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

/// What the server does: RFC 8291 encryption with a fresh ephemeral key and salt.
fn encrypt_to(keys: &PushKeys, plaintext: &[u8]) -> Vec<u8> {
    let public = p256::PublicKey::from_sec1_bytes(&keys.public_key()).unwrap();
    let auth = Auth::clone_from_slice(&keys.auth_secret());
    web_push_native::encrypt(plaintext.to_vec(), &public, &auth).unwrap()
}

/// RFC 8291 encryption with chosen sender key, salt, records and record size (which
/// `web_push_native::encrypt` does not offer): the key combination written out from
/// RFC 8291 §3.4, the content coding by `ece-native`.
fn seal_records(
    keys: &PushKeys,
    sender: &p256::SecretKey,
    salt: [u8; 16],
    records: Vec<Vec<u8>>,
    record_size: u32,
) -> Vec<u8> {
    let sender_public = sender.public_key().to_encoded_point(false);
    let receiver = p256::PublicKey::from_sec1_bytes(&keys.public_key()).unwrap();
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), receiver.as_affine());
    let hkdf = Hkdf::<Sha256>::new(Some(&keys.auth_secret()), shared.raw_secret_bytes());
    let mut ikm = [0u8; 32];
    hkdf.expand_multi_info(
        &[
            b"WebPush: info\0",
            &keys.public_key(),
            sender_public.as_bytes(),
        ],
        &mut ikm,
    )
    .unwrap();
    ece_native::encrypt(
        ikm,
        salt,
        sender_public.as_bytes(),
        records.into_iter(),
        record_size,
    )
    .unwrap()
}

fn wake_up_message(version: u32, kind: i32, pending: u32, urgency: i32) -> Vec<u8> {
    PushWakeUp {
        version,
        kind,
        pending,
        urgency,
    }
    .encode_to_vec()
}

// RFC 8291 §5 and Appendix A ("Intermediate Values for Encryption"), copied from the
// RFC with its line wrapping kept (whitespace is not part of the values).
const RFC8291_PLAINTEXT: &str = "V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24";
const RFC8291_AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
const RFC8291_UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcx
                                 aOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const RFC8291_UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const RFC8291_SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
const RFC8291_AUTH_SECRET: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const RFC8291_HEADER: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z
                              9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml mlMoZIIgDll6e3vCYLocInmYWAmS6Tlz
                              AC8wEqKK6PBru3jl7A8";
const RFC8291_CIPHERTEXT: &str = "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrd irN6GcG7sFz1y1sqLgVi1VhjVkHsUoEs
                                  bI_0LpXMuGvnzQ";
/// §5: the whole body (header || ciphertext; the base64url texts overlap at the seam).
const RFC8291_BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml
                            mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT
                            pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

/// The RFC 8291 user agent's keys, restored through the storage format.
fn rfc8291_keys() -> PushKeys {
    let mut stored = vec![1];
    stored.extend(b64url(RFC8291_UA_PRIVATE));
    stored.extend(b64url(RFC8291_AUTH_SECRET));
    PushKeys::from_bytes(&stored).unwrap()
}

fn rfc8291_body() -> Vec<u8> {
    let mut body = b64url(RFC8291_HEADER);
    assert_eq!(body.len(), 86, "RFC 8291: an 86-octet header");
    body.extend(b64url(RFC8291_CIPHERTEXT));
    assert_eq!(body, b64url(RFC8291_BODY), "Appendix A agrees with §5");
    body
}

#[test]
fn the_test_decoder_reads_the_rfc_plaintexts() {
    assert_eq!(
        b64url(RFC8291_PLAINTEXT),
        b"When I grow up, I want to be a watermelon"
    );
    // RFC 8188 §3.1 "unencrypted data": the plaintext and its delimiter.
    assert_eq!(b64url("SSBhbSB0aGUgd2FscnVzAg"), b"I am the walrus\x02");
}

#[test]
fn rfc8291_appendix_a_vector_decrypts() {
    let keys = rfc8291_keys();
    assert_eq!(keys.public_key().as_slice(), b64url(RFC8291_UA_PUBLIC));
    let body = rfc8291_body();

    let plaintext = decrypt_push_body(&keys, &body).unwrap();
    assert_eq!(
        plaintext.as_slice(),
        b"When I grow up, I want to be a watermelon"
    );
    assert_eq!(plaintext.as_slice(), b64url(RFC8291_PLAINTEXT));

    // The library the server encrypts with agrees (on this 64-bit host).
    let secret = p256::SecretKey::from_slice(&b64url(RFC8291_UA_PRIVATE)).unwrap();
    let auth = Auth::clone_from_slice(&b64url(RFC8291_AUTH_SECRET));
    assert_eq!(
        web_push_native::decrypt(body.clone(), &secret, &auth).unwrap(),
        plaintext.as_slice()
    );

    // The watermelon is not a wake-up: it decrypts, then fails to decode.
    assert!(matches!(
        open_wake_up(&keys, &body),
        Err(PushError::Malformed(_))
    ));
}

#[test]
fn the_test_encryptor_reproduces_the_rfc8291_example() {
    let sender = p256::SecretKey::from_slice(&b64url(RFC8291_AS_PRIVATE)).unwrap();
    let salt: [u8; 16] = b64url(RFC8291_SALT).try_into().unwrap();
    let body = seal_records(
        &rfc8291_keys(),
        &sender,
        salt,
        vec![b64url(RFC8291_PLAINTEXT)],
        4096,
    );
    assert_eq!(body, rfc8291_body());
}

#[test]
fn rfc8188_vectors_decrypt() {
    // §3.1 "Encryption of a Response": rs 4096, empty keyid, a single record.
    let ikm = b64url("yqdlZ-tYemfogSmv7Ws5PQ");
    let body = b64url(
        "I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-
         ly8Thjg",
    );
    let header = Header::parse(&body).unwrap();
    assert_eq!(header.salt.as_slice(), b64url("I1BsxtFttlv3u_Oo94xnmw"));
    assert_eq!((header.record_size, header.keyid), (4096, &b""[..]));
    assert_eq!(
        ece_native::decrypt(&ikm, body.clone()).unwrap(),
        b"I am the walrus"
    );
    assert_eq!(
        aes128gcm_decrypt(&ikm, &body).unwrap().as_slice(),
        b"I am the walrus"
    );

    // §3.2 "Encryption with Multiple Records": rs 25, keyid "a1", two records of 25
    // octets (7 octets of message and one 0x00 padding octet in the first, 8 in the
    // second); 73 octets in all.
    let ikm = b64url("BO3ZVPxUlnLORbVGMpbT1Q");
    let body = b64url(
        "uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF
         1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA",
    );
    let header = Header::parse(&body).unwrap();
    assert_eq!((header.record_size, header.keyid), (25, &b"a1"[..]));
    assert_eq!((body.len(), header.records.len()), (73, 25 + 25));
    assert_eq!(
        ece_native::decrypt(&ikm, body.clone()).unwrap(),
        b"I am the walrus"
    );
    assert_eq!(
        aes128gcm_decrypt(&ikm, &body).unwrap().as_slice(),
        b"I am the walrus"
    );

    // Without its last record the message is cut short, which the delimiter reveals.
    assert!(aes128gcm_decrypt(&ikm, &body[..body.len() - 25]).is_none());
    // A wrong key opens nothing.
    assert!(aes128gcm_decrypt(&b64url("yqdlZ-tYemfogSmv7Ws5PQ"), &body).is_none());
}

#[test]
fn a_wake_up_round_trips_through_web_push_encryption() {
    let keys = keys(1);
    for (pending, urgent) in [(0, false), (1, true), (17, false), (u32::MAX, true)] {
        let wake = WakeUp::new(pending, urgent);
        let body = encrypt_to(&keys, &wake.encode());
        let opened = open_wake_up(&keys, &body).unwrap();
        assert_eq!(opened, wake);
        assert_eq!((opened.pending, opened.urgent), (pending, urgent));
        assert_eq!(opened.action(), WakeAction::ConnectAndFetch);
    }
}

#[test]
fn the_encoded_wake_up_is_version_1_of_kind_mailbox() {
    let decoded = PushWakeUp::decode(WakeUp::new(3, true).encode().as_slice()).unwrap();
    assert_eq!(decoded.version, 1);
    assert_eq!(decoded.kind(), WakeKind::Mailbox);
    assert_eq!(decoded.pending, 3);
    assert_eq!(decoded.urgency(), WakeUrgency::High);
    let decoded = PushWakeUp::decode(WakeUp::new(0, false).encode().as_slice()).unwrap();
    assert_eq!(decoded.urgency(), WakeUrgency::Normal);
}

#[test]
fn a_wake_up_split_into_several_records_opens() {
    let keys = keys(2);
    let sender = p256::SecretKey::random(&mut ChaCha20Rng::seed_from_u64(3));
    let wake = WakeUp::new(300, true);
    // rs 20: at most 3 octets of data per record (16-octet tag, 1 delimiter).
    let records: Vec<Vec<u8>> = wake.encode().chunks(3).map(<[u8]>::to_vec).collect();
    assert!(records.len() >= 2);
    let body = seal_records(&keys, &sender, [7; 16], records, 20);
    assert_eq!(open_wake_up(&keys, &body).unwrap(), wake);

    // Dropping the last record leaves one whose delimiter says "more follows".
    let truncated = &body[..body.len() - 20];
    assert!(matches!(
        open_wake_up(&keys, truncated),
        Err(PushError::Undecryptable)
    ));
}

#[test]
fn a_wake_up_for_other_keys_is_undecryptable() {
    let body = encrypt_to(&keys(4), &WakeUp::new(1, false).encode());
    assert!(matches!(
        open_wake_up(&keys(5), &body),
        Err(PushError::Undecryptable)
    ));

    // The same private key with another auth secret does not open it either.
    let mut stored = keys(4).to_bytes();
    stored[1 + 32] ^= 1;
    let other_auth = PushKeys::from_bytes(&stored).unwrap();
    assert_eq!(other_auth.public_key(), keys(4).public_key());
    assert!(matches!(
        open_wake_up(&other_auth, &body),
        Err(PushError::Undecryptable)
    ));
}

#[test]
fn an_altered_wake_up_is_undecryptable() {
    let keys = keys(6);
    let body = encrypt_to(&keys, &WakeUp::new(2, true).encode());
    assert!(open_wake_up(&keys, &body).is_ok());
    // Every byte of salt, key id and record matters. (The record size is not
    // authenticated, RFC 8291 §4 lets receivers ignore it: a larger one still reads
    // as the same single record.)
    for i in (0..16).chain(20..body.len()) {
        let mut altered = body.clone();
        altered[i] ^= 0x01;
        assert!(
            matches!(open_wake_up(&keys, &altered), Err(PushError::Undecryptable)),
            "flipping byte {i} went unnoticed"
        );
    }
    let mut altered = body.clone();
    *altered.last_mut().unwrap() ^= 0x80;
    assert!(matches!(
        open_wake_up(&keys, &altered),
        Err(PushError::Undecryptable)
    ));
}

#[test]
fn an_oversized_body_is_refused_before_decryption() {
    let keys = keys(7);
    // A genuine message for these keys, one byte over the limit: refused on size alone.
    let over = encrypt_to(&keys, &vec![0x5a; MAX_PUSH_BODY_BYTES - 86 - 17 + 1]);
    assert_eq!(over.len(), MAX_PUSH_BODY_BYTES + 1);
    assert!(matches!(
        decrypt_push_body(&keys, &over),
        Err(PushError::TooLarge { len, max: MAX_PUSH_BODY_BYTES }) if len == over.len()
    ));
    assert!(matches!(
        open_wake_up(&keys, &vec![0; 1 << 20]),
        Err(PushError::TooLarge { .. })
    ));

    // Exactly at the limit it decrypts.
    let at = encrypt_to(&keys, &vec![0x5a; MAX_PUSH_BODY_BYTES - 86 - 17]);
    assert_eq!(at.len(), MAX_PUSH_BODY_BYTES);
    assert_eq!(decrypt_push_body(&keys, &at).unwrap().len(), 3993);
}

#[test]
fn garbage_bodies_never_panic() {
    let keys = keys(8);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let check = |body: &[u8]| {
        assert!(
            open_wake_up(&keys, body).is_err(),
            "{} bytes opened",
            body.len()
        );
    };
    for len in 0..100 {
        check(&vec![0; len]);
        check(&vec![0xff; len]);
        let mut body = vec![0; len];
        rng.fill_bytes(&mut body);
        check(&body);
    }
    for _ in 0..200 {
        let mut body = vec![0; (rng.next_u32() % 5000) as usize];
        rng.fill_bytes(&mut body);
        check(&body);
    }

    // Well-formed headers carrying a real point, with every awkward record size
    // (0 made `ece-native` divide the records into zero-length chunks and panic) and
    // record areas of every short length.
    let sender = p256::SecretKey::random(&mut rng).public_key();
    let point = sender.to_encoded_point(false);
    for record_size in [0u32, 1, 16, 17, 18, 19, 4096, u32::MAX] {
        for records in 0..40 {
            let mut body = vec![3; 16];
            body.extend(record_size.to_be_bytes());
            body.push(65);
            body.extend(point.as_bytes());
            let mut tail = vec![0; records];
            rng.fill_bytes(&mut tail);
            body.extend(tail);
            check(&body);
        }
    }
    // Key ids that are not an uncompressed point.
    for idlen in [0u8, 33, 64, 66, 255] {
        let mut body = vec![3; 16];
        body.extend(4096u32.to_be_bytes());
        body.push(idlen);
        body.extend(vec![4; usize::from(idlen) + 40]);
        check(&body);
    }

    // A valid message with its record size set to 0 is refused, not a panic.
    let mut body = encrypt_to(&keys, &WakeUp::new(1, false).encode());
    body[16..20].copy_from_slice(&[0; 4]);
    assert!(matches!(
        open_wake_up(&keys, &body),
        Err(PushError::Undecryptable)
    ));
}

#[test]
fn a_wake_up_of_another_version_is_refused() {
    let keys = keys(10);
    for version in [0, 2, u32::MAX] {
        let plaintext = wake_up_message(version, WakeKind::Mailbox.into(), 1, 0);
        assert!(matches!(
            open_wake_up(&keys, &encrypt_to(&keys, &plaintext)),
            Err(PushError::UnsupportedVersion(v)) if v == version
        ));
    }
}

#[test]
fn a_wake_up_of_unknown_kind_is_refused() {
    let keys = keys(11);
    for kind in [WakeKind::Unspecified.into(), 2, -1] {
        let plaintext = wake_up_message(1, kind, 1, 0);
        assert!(matches!(
            open_wake_up(&keys, &encrypt_to(&keys, &plaintext)),
            Err(PushError::UnknownKind(k)) if k == kind
        ));
    }
}

#[test]
fn an_unknown_urgency_reads_as_normal() {
    let keys = keys(12);
    let plaintext = wake_up_message(1, WakeKind::Mailbox.into(), 4, 9);
    let opened = open_wake_up(&keys, &encrypt_to(&keys, &plaintext)).unwrap();
    assert_eq!(opened, WakeUp::new(4, false));
}

#[test]
fn push_keys_round_trip_through_storage() {
    let keys = keys(13);
    let stored = keys.to_bytes();
    assert_eq!(stored.len(), 49);
    assert_eq!(stored[0], 1);
    let restored = PushKeys::from_bytes(&stored).unwrap();
    assert_eq!(restored.public_key(), keys.public_key());
    assert_eq!(restored.auth_secret(), keys.auth_secret());
    assert_eq!(restored.to_bytes(), stored);
    assert_eq!(restored.public_key()[0], 0x04, "uncompressed SEC1");

    // A wake-up for the original opens with the restored keys.
    let body = encrypt_to(&keys, &WakeUp::new(5, false).encode());
    assert_eq!(
        open_wake_up(&restored, &body).unwrap(),
        WakeUp::new(5, false)
    );
}

#[test]
fn generation_is_deterministic_in_the_rng() {
    assert_eq!(keys(14).to_bytes(), keys(14).to_bytes());
    assert_ne!(keys(14).public_key(), keys(15).public_key());
    assert_ne!(keys(14).auth_secret(), keys(15).auth_secret());
}

#[test]
fn push_keys_from_bytes_refuses_bad_storage() {
    let good = keys(16).to_bytes();
    let reason = |bytes: &[u8]| match PushKeys::from_bytes(bytes) {
        Err(PushError::BadKeys { reason }) => reason,
        other => panic!("expected BadKeys, got {other:?}"),
    };
    for len in [0, 1, 33, 48, 50, 100] {
        let mut bytes = good.to_vec();
        bytes.resize(len, 7);
        if len > 0 {
            bytes[0] = 1;
        }
        assert_eq!(reason(&bytes), BadKeysReason::WrongLength { len });
    }
    for version in [0, 2, 0xff] {
        let mut bytes = good.to_vec();
        bytes[0] = version;
        assert_eq!(reason(&bytes), BadKeysReason::UnknownVersion { version });
    }
    // The zero scalar, the group order n and 2^256 - 1 are not private keys.
    let order =
        hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551").unwrap();
    for scalar in [vec![0; 32], order, vec![0xff; 32]] {
        let mut bytes = good.to_vec();
        bytes[1..33].copy_from_slice(&scalar);
        assert_eq!(reason(&bytes), BadKeysReason::InvalidScalar);
    }
    // n - 1 is the largest valid scalar.
    let mut bytes = good.to_vec();
    bytes[1..33].copy_from_slice(
        &hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550").unwrap(),
    );
    assert!(PushKeys::from_bytes(&bytes).is_ok());
}

#[test]
fn push_keys_debug_hides_the_secret() {
    let keys = keys(17);
    let dbg = format!("{keys:?}");
    let stored = keys.to_bytes();
    let scalar = hex::encode(&stored[1..33]);
    let auth = hex::encode(keys.auth_secret());
    for secret in [&scalar, &auth] {
        assert!(!dbg.contains(&secret[..8]), "secret leaked in {dbg}");
    }
    let decimal = format!("{:?}", &keys.auth_secret()[..4]);
    assert!(!dbg.contains(decimal.trim_end_matches(']')), "{dbg}");
    // It does say whose keys these are.
    assert!(dbg.contains(&hex::encode(&keys.public_key()[..4])), "{dbg}");
    assert!(dbg.starts_with("PushKeys"), "{dbg}");
}

#[test]
fn errors_say_what_to_do() {
    let message = PushError::Undecryptable.to_string();
    assert!(message.contains("ignore it"), "{message}");
    let message = PushError::BadKeys {
        reason: BadKeysReason::InvalidScalar,
    }
    .to_string();
    assert!(message.contains("generate new push keys"), "{message}");
}
