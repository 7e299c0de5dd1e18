//! The receiving side: keys by KID, each with its own replay window.
//!
//! For each frame: decode the header, look the KID up, check the counter against that
//! KID's [`ReplayWindow`], authenticate and decrypt, and only then record the counter. A
//! forged or corrupted frame therefore never changes any state.
//!
//! The receiver holds at most [`MAX_RECEIVER_KEYS`] keys. Conclave adds the keys of a new
//! epoch when a rekey arrives and removes the previous epoch with
//! [`SframeReceiver::remove_epoch`] once its grace window has passed; removing a key drops
//! (and wipes) it together with its replay window.
//!
//! A key is registered as its base key and derived (RFC 9605 section 4.4.2: HKDF and the
//! AEAD's key schedule) when the first frame under its KID arrives. Registering the
//! keys of an epoch therefore costs a copy per sender, not a derivation: in a meeting of
//! a hundred devices a rekey registers 99 media keys and 198 message keys at every
//! device, most of whose senders never send under them (`docs/benchmarks.md`, "Rekey
//! under load: the receivers' work"). A derived key is kept until its KID is removed.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::frame::ParsedFrame;
use super::{CipherSuite, Kid, MAX_RECEIVER_KEYS, ReplayWindow, SframeError, SframeKey};

/// A successfully authenticated and decrypted frame.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// The frame's KID (epoch and sender index).
    pub kid: Kid,
    /// The frame's counter.
    pub ctr: u64,
    /// The decrypted media.
    pub plaintext: Vec<u8>,
}

/// One registered key and the replay state of its KID.
/// Shows the key id, counter and plaintext length, never the media itself.
impl core::fmt::Debug for ReceivedFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReceivedFrame")
            .field("kid", &self.kid)
            .field("ctr", &self.ctr)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

/// One registered KID: its base key, the key derived from it once a frame needed it,
/// and the KID's replay state. The base key stays (wiped on drop) so that registering
/// the same key again is recognised without deriving anything.
struct KeyEntry {
    suite: CipherSuite,
    base: Zeroizing<Vec<u8>>,
    key: Option<SframeKey>,
    window: ReplayWindow,
}

impl KeyEntry {
    /// The key of `kid`, derived now if no frame needed it before.
    fn key(&mut self, kid: Kid) -> &SframeKey {
        let (suite, base) = (self.suite, &self.base);
        self.key
            .get_or_insert_with(|| SframeKey::derive(suite, base, kid.value()))
    }

    /// Whether `suite` and `base_key` are what this entry was registered with (the
    /// comparison of the keys is constant-time).
    fn registered_with(&self, suite: CipherSuite, base_key: &[u8]) -> bool {
        self.suite == suite && bool::from(self.base.as_slice().ct_eq(base_key))
    }
}

/// Decrypts incoming frames of many senders and epochs, rejecting replays.
#[derive(Default)]
pub struct SframeReceiver {
    /// Keyed by raw KID; a BTreeMap keeps the receiver deterministic (no hasher seed).
    keys: BTreeMap<u64, KeyEntry>,
    /// Reused buffer for `header || metadata`.
    aad: Vec<u8>,
}

impl SframeReceiver {
    /// An empty receiver.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the key for `kid`, derived from `base_key` when the first frame under
    /// `kid` arrives (a copy now, no derivation).
    ///
    /// Adding the same key again is a no-op that keeps the replay window.
    ///
    /// # Errors
    /// [`SframeError::KeyConflict`] if a different key is already registered for `kid`;
    /// [`SframeError::TooManyKeys`] if the receiver already holds [`MAX_RECEIVER_KEYS`].
    pub fn add_key(
        &mut self,
        kid: Kid,
        suite: CipherSuite,
        base_key: &[u8],
    ) -> Result<(), SframeError> {
        let existing = self.keys.get(&kid.value());
        if existing.is_none() && self.keys.len() >= MAX_RECEIVER_KEYS {
            return Err(SframeError::TooManyKeys);
        }
        match existing {
            Some(entry) if entry.registered_with(suite, base_key) => Ok(()),
            Some(_) => Err(SframeError::KeyConflict { kid: kid.value() }),
            None => {
                let entry = KeyEntry {
                    suite,
                    base: Zeroizing::new(base_key.to_vec()),
                    key: None,
                    window: ReplayWindow::new(kid),
                };
                self.keys.insert(kid.value(), entry);
                Ok(())
            }
        }
    }

    /// Removes the key of `kid` and its replay state; returns whether it was present.
    pub fn remove_key(&mut self, kid: Kid) -> bool {
        self.keys.remove(&kid.value()).is_some()
    }

    /// Removes the keys of every sender in `epoch`; returns how many were removed.
    pub fn remove_epoch(&mut self, epoch: u64) -> usize {
        let before = self.keys.len();
        self.keys.retain(|&kid, _| Kid::new(kid).epoch() != epoch);
        before - self.keys.len()
    }

    /// Whether a key is registered for `kid`.
    #[must_use]
    pub fn has_key(&self, kid: Kid) -> bool {
        self.keys.contains_key(&kid.value())
    }

    /// Number of registered keys.
    #[must_use]
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of registered keys a frame has needed so far (derived; the others are
    /// still only their base keys).
    #[must_use]
    pub fn derived_key_count(&self) -> usize {
        self.keys.values().filter(|e| e.key.is_some()).count()
    }

    /// Authenticates and decrypts one frame, enforcing replay protection per KID.
    ///
    /// `metadata` must be the bytes the sender authenticated with the frame.
    ///
    /// # Errors
    /// [`SframeError::FrameTooLarge`], [`SframeError::Truncated`] or
    /// [`SframeError::MalformedHeader`] for unusable input; [`SframeError::UnknownKid`] if no
    /// key is registered for the frame's KID; [`SframeError::Replayed`] or
    /// [`SframeError::TooOld`] if the counter cannot be accepted;
    /// [`SframeError::AuthenticationFailed`] if the tag does not verify. In every error case
    /// the receiver's state is unchanged.
    pub fn decrypt(&mut self, metadata: &[u8], data: &[u8]) -> Result<ReceivedFrame, SframeError> {
        let mut plaintext = Vec::new();
        let (kid, ctr) = self.decrypt_into(metadata, data, &mut plaintext)?;
        Ok(ReceivedFrame {
            kid,
            ctr,
            plaintext,
        })
    }

    /// [`Self::decrypt`] into `plaintext` (cleared first, its allocation reused: no
    /// allocation per frame once it is large enough); returns the frame's KID and
    /// counter. On error `plaintext` is left empty and the receiver's state unchanged.
    ///
    /// # Errors
    /// As [`Self::decrypt`].
    pub fn decrypt_into(
        &mut self,
        metadata: &[u8],
        data: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<(Kid, u64), SframeError> {
        let (kid, ctr) = self.open_checked(metadata, data, plaintext)?;
        if let Some(entry) = self.keys.get_mut(&kid.value()) {
            entry.window.accept(ctr);
        }
        Ok((kid, ctr))
    }

    /// Parses, checks the replay window (without marking) and decrypts into
    /// `plaintext` (cleared first; left empty on error).
    fn open_checked(
        &mut self,
        metadata: &[u8],
        data: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<(Kid, u64), SframeError> {
        plaintext.clear();
        let frame = ParsedFrame::parse(data)?;
        let kid = Kid::new(frame.header.kid);
        let ctr = frame.header.ctr;
        let entry = self
            .keys
            .get_mut(&kid.value())
            .ok_or(SframeError::UnknownKid {
                kid: kid.value(),
                epoch: kid.epoch(),
                sender_index: kid.sender_index(),
            })?;
        entry.window.check(ctr)?;
        frame.open_into(entry.key(kid), metadata, &mut self.aad, plaintext)?;
        Ok((kid, ctr))
    }

    /// [`Self::decrypt`] without marking the counter as seen: for a frame whose
    /// plaintext carries a further check (a signature) that must pass before the frame
    /// counts. Call [`Self::commit`] with the returned KID and counter once it has;
    /// until then, the same frame decrypts again. Anyone holding the group key can
    /// make a frame that decrypts under any sender's KID, so a window moved before the
    /// further check would let them burn another sender's counters.
    ///
    /// # Errors
    /// As [`Self::decrypt`].
    pub fn decrypt_uncommitted(
        &mut self,
        metadata: &[u8],
        data: &[u8],
    ) -> Result<ReceivedFrame, SframeError> {
        let mut plaintext = Vec::new();
        let (kid, ctr) = self.open_checked(metadata, data, &mut plaintext)?;
        Ok(ReceivedFrame {
            kid,
            ctr,
            plaintext,
        })
    }

    /// Marks `ctr` of `kid` as seen (after [`Self::decrypt_uncommitted`] and the
    /// caller's own check). Returns `false`, marking nothing, if the key is gone or the
    /// counter was seen or fell out of the window meanwhile.
    pub fn commit(&mut self, kid: Kid, ctr: u64) -> bool {
        match self.keys.get_mut(&kid.value()) {
            Some(entry) if entry.window.check(ctr).is_ok() => {
                entry.window.accept(ctr);
                true
            }
            _ => false,
        }
    }
}

impl core::fmt::Debug for SframeReceiver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SframeReceiver")
            .field("key_count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    use super::super::{REPLAY_WINDOW_SIZE, SframeHeader, SframeSender};
    use super::*;

    const SUITE: CipherSuite = CipherSuite::Aes256GcmSha512Tag128;
    const META: &[u8] = b"routing header";

    fn base_key(epoch: u64, sender: u16) -> Vec<u8> {
        format!("base key epoch {epoch} sender {sender}").into_bytes()
    }

    fn kid(epoch: u64, sender: u16) -> Kid {
        Kid::for_sender(epoch, sender).unwrap()
    }

    fn sender(epoch: u64, sender: u16) -> SframeSender {
        SframeSender::new(SUITE, &base_key(epoch, sender), kid(epoch, sender))
    }

    fn receiver_for(members: &[(u64, u16)]) -> SframeReceiver {
        let mut receiver = SframeReceiver::new();
        for &(epoch, index) in members {
            receiver
                .add_key(kid(epoch, index), SUITE, &base_key(epoch, index))
                .unwrap();
        }
        receiver
    }

    #[test]
    fn receiver_decrypts_frames_of_several_senders() {
        let mut receiver = receiver_for(&[(7, 0), (7, 1)]);
        let mut alice = sender(7, 0);
        let mut bob = sender(7, 1);
        let from_alice = alice.encrypt(META, b"alice").unwrap();
        let from_bob = bob.encrypt(META, b"bob").unwrap();
        assert_eq!(
            receiver.decrypt(META, &from_bob).unwrap(),
            ReceivedFrame {
                kid: kid(7, 1),
                ctr: 0,
                plaintext: b"bob".to_vec()
            }
        );
        assert_eq!(
            receiver.decrypt(META, &from_alice).unwrap().plaintext,
            b"alice"
        );
    }

    #[test]
    fn decrypt_into_reuses_the_buffer_and_leaves_it_empty_on_every_error() {
        let mut receiver = receiver_for(&[(7, 0)]);
        let mut alice = sender(7, 0);
        let first = alice.encrypt(META, b"first frame").unwrap();
        let second = alice.encrypt(META, b"second").unwrap();
        let mut buf = Vec::with_capacity(64);
        let capacity = buf.capacity();
        assert_eq!(
            receiver.decrypt_into(META, &first, &mut buf).unwrap(),
            (kid(7, 0), 0)
        );
        assert_eq!(buf, b"first frame");
        assert_eq!(
            receiver.decrypt_into(META, &second, &mut buf).unwrap(),
            (kid(7, 0), 1)
        );
        assert_eq!(buf, b"second");
        assert_eq!(buf.capacity(), capacity);
        // Replayed, tampered, unknown key: nothing is left in the buffer.
        assert!(matches!(
            receiver.decrypt_into(META, &second, &mut buf),
            Err(SframeError::Replayed { .. })
        ));
        assert!(buf.is_empty());
        let third = alice.encrypt(META, b"third").unwrap();
        let mut tampered = third.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        buf.extend_from_slice(b"stale");
        assert!(matches!(
            receiver.decrypt_into(META, &tampered, &mut buf),
            Err(SframeError::AuthenticationFailed { .. })
        ));
        assert!(buf.is_empty());
        // The failed attempt did not consume the counter.
        receiver.decrypt_into(META, &third, &mut buf).unwrap();
        assert_eq!(buf, b"third");
        let stranger = sender(7, 1).encrypt(META, b"who").unwrap();
        assert!(receiver.decrypt_into(META, &stranger, &mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn sframe_rejects_wrong_epoch() {
        let mut receiver = receiver_for(&[(5, 2)]);
        let frame = sender(6, 2).encrypt(META, b"from the next epoch").unwrap();
        assert_eq!(
            receiver.decrypt(META, &frame),
            Err(SframeError::UnknownKid {
                kid: kid(6, 2).value(),
                epoch: 6,
                sender_index: 2
            })
        );
        let message = receiver.decrypt(META, &frame).unwrap_err().to_string();
        assert!(
            message.contains("wrong epoch or not yet rekeyed"),
            "{message}"
        );
    }

    #[test]
    fn sframe_rejects_wrong_sender_key() {
        let mut receiver = SframeReceiver::new();
        receiver
            .add_key(kid(5, 2), SUITE, b"a different base key")
            .unwrap();
        let frame = sender(5, 2).encrypt(META, b"media").unwrap();
        assert_eq!(
            receiver.decrypt(META, &frame),
            Err(SframeError::AuthenticationFailed {
                kid: kid(5, 2).value(),
                ctr: 0
            })
        );
    }

    #[test]
    fn sframe_rejects_replayed_counter() {
        let mut receiver = receiver_for(&[(1, 3)]);
        let mut alice = sender(1, 3);
        let frames: Vec<Vec<u8>> = (0..=REPLAY_WINDOW_SIZE + 10)
            .map(|i| alice.encrypt(META, &i.to_be_bytes()).unwrap())
            .collect();
        let raw_kid = kid(1, 3).value();

        // The same frame twice.
        receiver.decrypt(META, &frames[0]).unwrap();
        assert_eq!(
            receiver.decrypt(META, &frames[0]),
            Err(SframeError::Replayed {
                kid: raw_kid,
                ctr: 0
            })
        );

        // Jump ahead, then deliver an older frame that is still inside the window: accepted
        // once, replay rejected.
        receiver.decrypt(META, &frames[100]).unwrap();
        assert_eq!(receiver.decrypt(META, &frames[50]).unwrap().ctr, 50);
        assert_eq!(
            receiver.decrypt(META, &frames[50]),
            Err(SframeError::Replayed {
                kid: raw_kid,
                ctr: 50
            })
        );

        // Move the window so that counter 1 falls behind it.
        let newest = REPLAY_WINDOW_SIZE + 10;
        receiver.decrypt(META, &frames[newest as usize]).unwrap();
        assert_eq!(
            receiver.decrypt(META, &frames[1]),
            Err(SframeError::TooOld {
                kid: raw_kid,
                ctr: 1
            })
        );
        let oldest_in_window = newest - (REPLAY_WINDOW_SIZE - 1);
        assert!(
            receiver
                .decrypt(META, &frames[oldest_in_window as usize])
                .is_ok()
        );
    }

    #[test]
    fn receiver_failed_authentication_does_not_burn_the_counter() {
        let mut receiver = receiver_for(&[(1, 3)]);
        let frame = sender(1, 3).encrypt(META, b"genuine").unwrap();
        let mut forged = frame.clone();
        *forged.last_mut().unwrap() ^= 0x80;
        assert!(matches!(
            receiver.decrypt(META, &forged),
            Err(SframeError::AuthenticationFailed { .. })
        ));
        assert!(matches!(
            receiver.decrypt(b"other metadata", &frame),
            Err(SframeError::AuthenticationFailed { .. })
        ));
        assert_eq!(
            receiver.decrypt(META, &frame).unwrap().plaintext,
            b"genuine"
        );
    }

    #[test]
    fn receiver_keeps_old_epoch_until_removed() {
        let mut receiver = receiver_for(&[(1, 0), (1, 1), (2, 0), (2, 1)]);
        let old_frame = sender(1, 1)
            .encrypt(META, b"late frame of epoch 1")
            .unwrap();
        let new_frame = sender(2, 1).encrypt(META, b"epoch 2").unwrap();
        assert!(receiver.decrypt(META, &new_frame).is_ok());

        assert_eq!(receiver.remove_epoch(1), 2);
        assert!(!receiver.has_key(kid(1, 0)));
        assert!(!receiver.has_key(kid(1, 1)));
        assert!(receiver.has_key(kid(2, 0)));
        assert_eq!(receiver.key_count(), 2);
        assert!(matches!(
            receiver.decrypt(META, &old_frame),
            Err(SframeError::UnknownKid { epoch: 1, .. })
        ));
        assert_eq!(receiver.remove_epoch(1), 0);
    }

    #[test]
    fn receiver_remove_key_removes_only_that_kid() {
        let mut receiver = receiver_for(&[(3, 0), (3, 1)]);
        assert!(receiver.remove_key(kid(3, 0)));
        assert!(!receiver.remove_key(kid(3, 0)));
        assert!(!receiver.has_key(kid(3, 0)));
        assert!(receiver.has_key(kid(3, 1)));
    }

    #[test]
    fn receiver_add_key_is_idempotent_and_rejects_a_conflicting_key() {
        let mut receiver = receiver_for(&[(1, 3)]);
        let frame = sender(1, 3).encrypt(META, b"x").unwrap();
        receiver.decrypt(META, &frame).unwrap();

        // Same key again: no-op, replay state kept.
        receiver.add_key(kid(1, 3), SUITE, &base_key(1, 3)).unwrap();
        assert!(matches!(
            receiver.decrypt(META, &frame),
            Err(SframeError::Replayed { .. })
        ));

        assert_eq!(
            receiver.add_key(kid(1, 3), SUITE, b"another key"),
            Err(SframeError::KeyConflict {
                kid: kid(1, 3).value()
            })
        );
        assert_eq!(
            receiver.add_key(
                kid(1, 3),
                CipherSuite::Aes128GcmSha256Tag128,
                &base_key(1, 3)
            ),
            Err(SframeError::KeyConflict {
                kid: kid(1, 3).value()
            })
        );
    }

    #[test]
    fn a_key_is_derived_when_its_first_frame_arrives_and_only_then() {
        let mut receiver = receiver_for(&[(4, 0), (4, 1), (4, 2)]);
        assert_eq!((receiver.key_count(), receiver.derived_key_count()), (3, 0));
        // A frame that fails to authenticate under a registered KID derives that key
        // (the derivation is needed to check it) but changes no replay state.
        let genuine = sender(4, 1).encrypt(META, b"from one").unwrap();
        let mut forged = genuine.clone();
        if let Some(last) = forged.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(
            receiver.decrypt(META, &forged),
            Err(SframeError::AuthenticationFailed { .. })
        ));
        assert_eq!(receiver.derived_key_count(), 1);
        assert_eq!(
            receiver.decrypt(META, &genuine).unwrap().plaintext,
            b"from one"
        );
        // Registering the same key again keeps the derived key and its window.
        receiver.add_key(kid(4, 1), SUITE, &base_key(4, 1)).unwrap();
        assert_eq!(receiver.derived_key_count(), 1);
        assert!(matches!(
            receiver.decrypt(META, &genuine),
            Err(SframeError::Replayed { .. })
        ));
        // A sender that never sends never costs a derivation; removing the epoch drops
        // derived and underived keys alike.
        receiver
            .decrypt(META, &sender(4, 2).encrypt(META, b"two").unwrap())
            .unwrap();
        assert_eq!((receiver.key_count(), receiver.derived_key_count()), (3, 2));
        assert_eq!(receiver.remove_epoch(4), 3);
        assert_eq!(receiver.derived_key_count(), 0);
    }

    #[test]
    fn receiver_rejects_keys_beyond_its_capacity() {
        let mut receiver = SframeReceiver::new();
        let kids = (0..MAX_RECEIVER_KEYS as u64).map(Kid::new);
        for kid in kids {
            receiver.add_key(kid, SUITE, b"k").unwrap();
        }
        assert_eq!(
            receiver.add_key(Kid::new(MAX_RECEIVER_KEYS as u64), SUITE, b"k"),
            Err(SframeError::TooManyKeys)
        );
        // Re-adding a held key is still fine, and removing an epoch frees room.
        receiver.add_key(Kid::new(0), SUITE, b"k").unwrap();
        assert_eq!(receiver.remove_epoch(0), 4096);
        receiver
            .add_key(Kid::new(MAX_RECEIVER_KEYS as u64), SUITE, b"k")
            .unwrap();
    }

    /// 20,000 seeded random inputs: pure garbage, bit-flipped, truncated, extended and
    /// re-headed versions of genuine frames. None may panic or produce a plaintext.
    #[test]
    fn receiver_random_garbage_and_mutated_frames_never_panic_or_decrypt() {
        let mut rng = ChaCha20Rng::seed_from_u64(0x5346_7261_6d65);
        let members = [(1, 0), (1, 1), (2, 0)];
        let mut receiver = receiver_for(&members);
        let mut alice = sender(1, 0);
        let genuine: Vec<Vec<u8>> = (0..8u8)
            .map(|i| alice.encrypt(META, &vec![i; usize::from(i) * 7]).unwrap())
            .collect();

        let mut tried = 0;
        for round in 0..20_000u32 {
            let original = &genuine[round as usize % genuine.len()];
            let mut input = original.clone();
            match round % 5 {
                0 => {
                    input = vec![0; (rng.next_u32() % 96) as usize];
                    rng.fill_bytes(&mut input);
                }
                1 => {
                    for _ in 0..1 + rng.next_u32() % 4 {
                        let index = rng.next_u32() as usize % input.len();
                        input[index] ^= 1 + (rng.next_u32() % 255) as u8;
                    }
                }
                2 => input.truncate(rng.next_u32() as usize % input.len()),
                3 => {
                    let mut extra = vec![0; 1 + (rng.next_u32() % 32) as usize];
                    rng.fill_bytes(&mut extra);
                    input.extend_from_slice(&extra);
                }
                _ => {
                    // A well-formed header naming a registered KID, over the genuine body.
                    let (epoch, index) = members[rng.next_u32() as usize % members.len()];
                    let header =
                        SframeHeader::new(kid(epoch, index).value(), rng.next_u64() % 4096);
                    let mut buf = [0u8; SframeHeader::MAX_LEN];
                    let len = header.encode_into(&mut buf);
                    let (_, old_len) = SframeHeader::decode(original).unwrap();
                    input = [&buf[..len], &original[old_len..]].concat();
                }
            }
            if input == *original {
                continue;
            }
            tried += 1;
            let result = receiver.decrypt(META, &input);
            assert!(result.is_err(), "round {round}: mutated input decrypted");
        }
        assert!(
            tried > 19_000,
            "only {tried} inputs differed from a genuine frame"
        );

        // Nothing above changed the receiver's state: every genuine frame still decrypts.
        for frame in &genuine {
            receiver.decrypt(META, frame).unwrap();
        }
    }
}
