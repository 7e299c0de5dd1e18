//! Criterion benchmarks of SFrame media encryption with the meeting suite
//! (`AES_256_GCM_SHA512_128`, keys from `MeetingKey::sframe_sender`), for a 160-byte
//! frame (a 20 ms Opus packet at 64 kbit/s) and a 1200-byte frame (a video
//! packet that fits one datagram).
//!
//! Run: `cargo bench -p conclave-core --bench sframe`
//!
//! * `sframe_encrypt/N`: `SframeSender::encrypt`, which allocates the output frame.
//! * `sframe_encrypt_into/1200`: `SframeSender::encrypt_into` into one reused buffer
//!   (`clear()` then append): the steady-state sending path with no allocation.
//! * `sframe_decrypt/N`: the stateless free function `conclave_core::sframe::decrypt` with
//!   the sender's `SframeKey`, decrypting one pre-encrypted frame over and over. It keeps
//!   no replay state, so repeating a frame is allowed: this is the raw cost of header
//!   parsing + AES-256-GCM open + the plaintext allocation.
//! * `sframe_receiver_decrypt/N`: `SframeReceiver::decrypt`, the path a client really runs
//!   (KID lookup, replay-window check and update). The receiver refuses a counter it has
//!   already accepted, so every iteration needs a frame with a fresh, increasing counter.
//!   `iter_custom` encrypts 64 frames at a time, untimed, into a reused `Vec`, then times
//!   only the 64 `SframeReceiver::decrypt` calls, in counter order. As in
//!   `sframe_decrypt/N`, the frames are cache-hot and the returned plaintext is freed
//!   inside the timed loop, so the difference between the two is the receiver's
//!   bookkeeping. (A first version used `iter_batched` with `BatchSize::SmallInput`: its
//!   batches of thousands of frames and live outputs spill out of L2 and malloc's reuse,
//!   and it measured 1.6 µs instead of ~1.0 µs for 1200 bytes — an artefact of the
//!   harness, not of the receiver.)
//! * `aes256gcm_raw/N`: the bare `aes-gcm` AEAD on the same sizes, as a reference.
//!
//! Sender counters only grow, so encrypting in a loop never reuses a nonce. Metadata is
//! empty, as in `examples/crypto_tour.rs`.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use conclave_core::meeting::{Epoch, MeetingKey, SFRAME_SUITE};
use conclave_core::sframe::{self, SframeKey, SframeReceiver};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Frame sizes in bytes: an audio packet and a full video packet.
const SIZES: [usize; 2] = [160, 1200];
/// The sending participant's index in the roster.
const SENDER_INDEX: u32 = 1;
/// Frames encrypted ahead of each timed run of `sframe_receiver_decrypt`.
const CHUNK: usize = 64;

fn meeting_key() -> MeetingKey {
    MeetingKey::generate(Epoch::ZERO, &mut ChaCha20Rng::seed_from_u64(0x005F_4A3E))
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn sframe_encrypt(c: &mut Criterion) {
    let key = meeting_key();
    let mut group = c.benchmark_group("sframe_encrypt");
    for size in SIZES {
        let mut sender = key.sframe_sender(SENDER_INDEX).unwrap();
        let data = plaintext(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
            b.iter(|| sender.encrypt(b"", black_box(data)).unwrap());
        });
    }
    group.finish();
}

fn sframe_encrypt_into(c: &mut Criterion) {
    let key = meeting_key();
    let mut group = c.benchmark_group("sframe_encrypt_into");
    let size = 1200;
    let mut sender = key.sframe_sender(SENDER_INDEX).unwrap();
    let data = plaintext(size);
    let mut out = Vec::with_capacity(sframe::SframeHeader::MAX_LEN + size + 16);
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
        b.iter(|| {
            out.clear();
            sender.encrypt_into(b"", black_box(data), &mut out).unwrap();
            black_box(out.len())
        });
    });
    group.finish();
}

fn sframe_decrypt(c: &mut Criterion) {
    let key = meeting_key();
    let kid = key.sframe_kid(SENDER_INDEX).unwrap();
    let sframe_key = SframeKey::derive(
        SFRAME_SUITE,
        key.sframe_base_key(SENDER_INDEX).as_slice(),
        kid.value(),
    );
    let mut group = c.benchmark_group("sframe_decrypt");
    for size in SIZES {
        let mut sender = key.sframe_sender(SENDER_INDEX).unwrap();
        let data = plaintext(size);
        let frame = sender.encrypt(b"", &data).unwrap();
        assert_eq!(sframe::decrypt(&sframe_key, b"", &frame).unwrap().1, data);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &frame, |b, frame| {
            b.iter(|| sframe::decrypt(&sframe_key, b"", black_box(frame)).unwrap());
        });
    }
    group.finish();
}

fn sframe_receiver_decrypt(c: &mut Criterion) {
    let key = meeting_key();
    let mut group = c.benchmark_group("sframe_receiver_decrypt");
    for size in SIZES {
        let mut sender = key.sframe_sender(SENDER_INDEX).unwrap();
        let mut receiver = SframeReceiver::new();
        receiver
            .add_key(
                key.sframe_kid(SENDER_INDEX).unwrap(),
                SFRAME_SUITE,
                key.sframe_base_key(SENDER_INDEX).as_slice(),
            )
            .unwrap();
        let data = plaintext(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut frames: Vec<Vec<u8>> = Vec::with_capacity(CHUNK);
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK as u64);
                    // Untimed: the next `n` frames, with fresh increasing counters.
                    frames.clear();
                    for _ in 0..n {
                        frames.push(sender.encrypt(b"", data).unwrap());
                    }
                    // Timed: decrypting them, in order.
                    let start = Instant::now();
                    for frame in &frames {
                        black_box(receiver.decrypt(b"", black_box(frame)).unwrap());
                    }
                    timed += start.elapsed();
                    left -= n;
                }
                timed
            });
        });
    }
    group.finish();
}

/// The bare AEAD under SFrame: `Aes256Gcm::encrypt_in_place_detached` over a reused
/// buffer with a 9-byte AAD (no header codec, no allocation, no key schedule), to tell the
/// cipher's own cost from SFrame's framing.
fn aes256gcm_raw(c: &mut Criterion) {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce};

    let cipher = Aes256Gcm::new_from_slice(&[0x42; 32]).unwrap();
    let nonce = Nonce::from([0x24; 12]);
    let aad = [0x99u8; 9];
    let mut group = c.benchmark_group("aes256gcm_raw");
    for size in SIZES {
        let mut buffer = plaintext(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                cipher
                    .encrypt_in_place_detached(&nonce, black_box(&aad), black_box(&mut buffer))
                    .unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    sframe_encrypt,
    sframe_encrypt_into,
    sframe_decrypt,
    sframe_receiver_decrypt,
    aes256gcm_raw
);
criterion_main!(benches);
