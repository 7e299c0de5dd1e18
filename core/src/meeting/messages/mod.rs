//! In-meeting messages: chat and application data that participants send to the meeting
//! (docs/protocol.md 11), sans-IO.
//!
//! ```text
//! message base key(mode, i) = HKDF-SHA256(meeting key, "conclave.message.v1" || mode || u32be(i))
//! MeetingMessage { sequence, topic, body, signature }        (protobuf, payloads.proto)
//!   signature = Ed25519(device signing key, "conclave.meeting-message.v1" || meeting_id
//!               || u64be(epoch) || u32be(i) || device_id || mode || u64be(CTR)
//!               || u64be(sequence) || u16be(len(topic)) || topic || body)
//! wire      = SFrame(KID = (epoch, i), CTR, key = message base key(mode, i))(MeetingMessage)
//! ```
//!
//! * **Confidential to the epoch's participants.** The key comes from the epoch's meeting
//!   key, so the server and departed participants (who never get a later epoch's key)
//!   cannot read a message, and a participant that joined later (it holds only ratcheted
//!   keys) cannot read one sent before it joined.
//! * **Who sent it.** Every participant of an epoch can derive every sender's message key,
//!   so the key alone proves only "someone in the meeting". The Ed25519 signature by the
//!   device of the KID's sender index tells receivers which device sent it; a message
//!   whose signature does not verify under that device's pinned key is refused. The
//!   signature covers the SFrame counter, so another participant cannot re-encrypt a
//!   signed message under a fresh counter (a replay the window would not see), and a
//!   counter is marked as seen only after the signature verified, so frames that fail
//!   it cannot burn a sender's counters.
//! * **Two modes, two nonce spaces.** Reliable messages (relayed in order on the control
//!   channel) and lossy ones (media datagrams) use different keys and counters, so their
//!   replay windows are independent.
//!
//! [`MessageCrypto`] holds one meeting's message keys: the caller installs and drops keys
//! as the meeting's epochs change (exactly where it does for SFrame media keys), seals what
//! the app sends and opens what arrives. It does no I/O and reads no clock.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use conclave_proto::Message as _;
use conclave_proto::v1;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use thiserror::Error;

use super::{Epoch, MeetingId, MeetingKey, SFRAME_SUITE};
use crate::identity::DeviceIdentity;
use crate::sframe::{Kid, MAX_RECEIVER_KEYS, SframeError, SframeReceiver, SframeSender};
use crate::{DeviceId, UserId};

#[cfg(test)]
mod tests;

/// Largest body of a reliable message, bytes.
pub const MAX_RELIABLE_BODY_BYTES: usize = 4_096;
/// Largest body of a lossy message, bytes: a lossy message travels in one media datagram
/// on a path of the smallest QUIC MTU (1,200 bytes).
pub const MAX_LOSSY_BODY_BYTES: usize = 900;
/// Largest topic, bytes of UTF-8.
pub const MAX_TOPIC_BYTES: usize = 64;
/// Largest sealed message this module opens, bytes (body, topic, signature, protobuf and
/// SFrame overhead of the largest reliable message, with room to spare).
pub const MAX_SEALED_MESSAGE_BYTES: usize = conclave_proto::limits::MAX_ROOM_MESSAGE_BYTES;

const SIGN_LABEL: &[u8] = b"conclave.meeting-message.v1";
const KEY_LABEL: &[u8] = b"conclave.message.v1";

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// Relayed by the server on the control channel: every participant in the room gets
    /// it, in the order each sender sent. For chat, reactions and shared state.
    Reliable,
    /// A media datagram: may be lost or reordered, never retransmitted; at most
    /// [`MAX_LOSSY_BODY_BYTES`]. For cursor positions, live captions and the like.
    Lossy,
}

impl Delivery {
    fn byte(self) -> u8 {
        match self {
            Delivery::Reliable => 1,
            Delivery::Lossy => 2,
        }
    }

    /// The largest body this mode carries, bytes.
    #[must_use]
    pub const fn max_body_bytes(self) -> usize {
        match self {
            Delivery::Reliable => MAX_RELIABLE_BODY_BYTES,
            Delivery::Lossy => MAX_LOSSY_BODY_BYTES,
        }
    }
}

/// Why a message could not be sealed or opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The body is larger than the mode allows.
    #[error(
        "message body of {len} bytes exceeds the {max}-byte limit of {delivery:?} messages; \
         split it or send it another way"
    )]
    BodyTooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
        /// The mode.
        delivery: Delivery,
    },
    /// The topic is longer than [`MAX_TOPIC_BYTES`].
    #[error("message topic of {len} bytes exceeds {MAX_TOPIC_BYTES} bytes; use a shorter label")]
    TopicTooLong {
        /// The topic's length.
        len: usize,
    },
    /// This device holds no sending key (not in the meeting yet, sending paused after the
    /// room moved to an epoch whose key has not arrived, or the meeting ended).
    #[error("no sending key: wait until the meeting's key arrives, then send again")]
    NotSending,
    /// The sealed message is larger than [`MAX_SEALED_MESSAGE_BYTES`].
    #[error("sealed message of {len} bytes exceeds {MAX_SEALED_MESSAGE_BYTES}; dropped")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The message is under a key this device does not hold: an epoch it has not reached
    /// yet (its key is on the way), or one it has dropped, or a sender it does not know.
    #[error("message under epoch {epoch}, sender index {sender_index}: no key held")]
    UnknownKey {
        /// The frame's epoch.
        epoch: u64,
        /// The frame's sender index.
        sender_index: u32,
    },
    /// The frame did not decrypt, or replayed an earlier one.
    #[error("message frame refused: {0}")]
    Frame(SframeError),
    /// The plaintext is not a well-formed message (bad protobuf, topic not UTF-8 or too
    /// long, body too large for its mode).
    #[error("malformed message plaintext: {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the sender device's pinned key: a participant
    /// forged another's message, or the message was altered.
    #[error("message signature does not verify under the sending device's key; dropped")]
    BadSignature,
    /// A sending key for an epoch at or below one this device already sent on: new
    /// contexts would repeat AES-GCM nonces, so sending stops.
    #[error("epoch {epoch} was already sent on; sending stops until a newer epoch")]
    EpochAlreadyUsed {
        /// The refused epoch.
        epoch: u64,
    },
    /// An epoch or sender index that SFrame key ids cannot carry.
    #[error(transparent)]
    Meeting(#[from] Box<super::MeetingError>),
}

/// A message a participant sent, opened and verified.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The sending user.
    pub user_id: UserId,
    /// The sending device (its signature verified).
    pub device_id: DeviceId,
    /// How it travelled.
    pub delivery: Delivery,
    /// The epoch it was sent in.
    pub epoch: Epoch,
    /// The sender's sequence number for this mode.
    pub sequence: u64,
    /// The app's label.
    pub topic: String,
    /// The app's bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for ReceivedMessage {
    /// The body is the app's (it may be private chat): only its length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("device_id", &self.device_id)
            .field("delivery", &self.delivery)
            .field("epoch", &self.epoch)
            .field("sequence", &self.sequence)
            .field("topic", &self.topic)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A sealed message and the epoch it was sealed in.
#[derive(Debug, Clone)]
pub struct SealedMessage {
    /// The epoch of the sending key.
    pub epoch: Epoch,
    /// The SFrame frame to send.
    pub frame: Vec<u8>,
}

/// A participant whose messages this device accepts in some epoch.
#[derive(Clone, Copy)]
struct Member {
    user_id: UserId,
    device_id: DeviceId,
    signing_key: VerifyingKey,
}

/// One meeting's message keys: this device's sending contexts for its sending epoch, and
/// the receive keys (with each sender's signing key) for every epoch it holds.
pub struct MessageCrypto {
    meeting_id: MeetingId,
    my_index: u32,
    /// Sending contexts of the sending epoch, per mode (one per epoch: never recreated,
    /// or AES-GCM nonces would repeat).
    senders: PerMode<Option<SframeSender>>,
    sending_epoch: Option<Epoch>,
    /// Sending stopped (the senders are kept, their counters with them).
    paused: bool,
    /// Receive keys derived so far: a sender's key of an epoch is derived at its first
    /// message (most participants of a large meeting never send one, and deriving two
    /// keys per sender at every epoch was a tenth of a 100-device rekey's CPU).
    receivers: PerMode<SframeReceiver>,
    /// The key of every epoch whose messages are accepted (zeroized on drop; boxed so
    /// that the map's rebalancing moves pointers, not key bytes).
    epoch_keys: BTreeMap<u64, Box<MeetingKey>>,
    /// Who may send in each (epoch, sender index); bounded by [`MAX_RECEIVER_KEYS`].
    members: HashMap<(u64, u32), Member>,
    next_sequence: PerMode<u64>,
}

/// One `T` per delivery mode.
#[derive(Debug, Default)]
struct PerMode<T> {
    reliable: T,
    lossy: T,
}

impl<T> PerMode<T> {
    fn get(&self, delivery: Delivery) -> &T {
        match delivery {
            Delivery::Reliable => &self.reliable,
            Delivery::Lossy => &self.lossy,
        }
    }

    fn get_mut(&mut self, delivery: Delivery) -> &mut T {
        match delivery {
            Delivery::Reliable => &mut self.reliable,
            Delivery::Lossy => &mut self.lossy,
        }
    }
}

impl fmt::Debug for MessageCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCrypto")
            .field("meeting_id", &self.meeting_id)
            .field("my_index", &self.my_index)
            .field("sending_epoch", &self.sending_epoch)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// The message base key of `mode` for sender `index` in `key`'s epoch.
fn base_key(key: &MeetingKey, delivery: Delivery, index: u32) -> zeroize::Zeroizing<[u8; 32]> {
    key.expand(&[KEY_LABEL, &[delivery.byte()], &index.to_be_bytes()])
}

impl MessageCrypto {
    /// No keys yet; this device sends as sender index `my_index`.
    #[must_use]
    pub fn new(meeting_id: MeetingId, my_index: u32) -> Self {
        MessageCrypto {
            meeting_id,
            my_index,
            senders: PerMode::default(),
            sending_epoch: None,
            paused: false,
            receivers: PerMode::default(),
            epoch_keys: BTreeMap::new(),
            members: HashMap::new(),
            next_sequence: PerMode::default(),
        }
    }

    /// Sends on `key` from now on. The contexts of an epoch are made once and kept
    /// (across [`Self::pause_sending`]): the same epoch again resumes their counters,
    /// and an epoch at or below one already sent on is refused, since new contexts
    /// would repeat AES-GCM nonces.
    ///
    /// # Errors
    /// [`MessageError::Meeting`] if the epoch or this device's index cannot be carried by
    /// a key id, [`MessageError::EpochAlreadyUsed`] for an epoch below the one sending
    /// contexts were made for; sending then stops (fail closed).
    pub fn set_sending_key(&mut self, key: &MeetingKey) -> Result<(), MessageError> {
        match self.sending_epoch {
            Some(epoch) if epoch == key.epoch() && self.senders.reliable.is_some() => {
                self.paused = false;
                return Ok(());
            }
            Some(epoch) if epoch >= key.epoch() => {
                self.pause_sending();
                return Err(MessageError::EpochAlreadyUsed {
                    epoch: key.epoch().get(),
                });
            }
            _ => {}
        }
        let kid = match key.sframe_kid(self.my_index) {
            Ok(kid) => kid,
            Err(e) => {
                self.pause_sending();
                return Err(MessageError::Meeting(Box::new(e)));
            }
        };
        for delivery in [Delivery::Reliable, Delivery::Lossy] {
            let base = base_key(key, delivery, self.my_index);
            *self.senders.get_mut(delivery) = Some(SframeSender::new(SFRAME_SUITE, &*base, kid));
        }
        self.sending_epoch = Some(key.epoch());
        self.paused = false;
        Ok(())
    }

    /// Stops sending until the next [`Self::set_sending_key`] (the contexts are kept,
    /// so resuming the same epoch goes on with their counters).
    pub fn pause_sending(&mut self) {
        self.paused = true;
    }

    /// Accepts messages of `key`'s epoch from `members` (sender index, user, device and
    /// the device's pinned signing key). This device's own index is skipped. The keys
    /// themselves are derived at each sender's first message.
    ///
    /// # Errors
    /// The first member that could not be registered (an index a key id cannot carry,
    /// too many senders, or another key for an epoch already held: then none is); the
    /// others are registered all the same.
    pub fn add_receive_keys(
        &mut self,
        key: &MeetingKey,
        members: impl IntoIterator<Item = (u32, UserId, DeviceId, VerifyingKey)>,
    ) -> Result<(), MessageError> {
        let epoch = key.epoch();
        let mut first_error = None;
        match self.epoch_keys.get(&epoch.get()) {
            Some(held) if **held != *key => {
                // Registering keys one by one refused the second key of a key id the
                // same way; the epoch keeps its first key.
                let kid = key
                    .sframe_kid(0)
                    .map_err(|e| MessageError::Meeting(Box::new(e)))?;
                return Err(MessageError::Frame(SframeError::KeyConflict {
                    kid: kid.value(),
                }));
            }
            Some(_) => {}
            None => {
                self.epoch_keys.insert(epoch.get(), Box::new(key.clone()));
            }
        }
        for (index, user_id, device_id, signing_key) in members {
            if index == self.my_index {
                continue;
            }
            if let Err(e) = key.sframe_kid(index) {
                first_error.get_or_insert(MessageError::Meeting(Box::new(e)));
                continue;
            }
            let slot = (epoch.get(), index);
            if !self.members.contains_key(&slot) && self.members.len() >= MAX_RECEIVER_KEYS {
                first_error.get_or_insert(MessageError::Frame(SframeError::TooManyKeys));
                continue;
            }
            self.members.insert(
                slot,
                Member {
                    user_id,
                    device_id,
                    signing_key,
                },
            );
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Forgets every receive key of `epoch`.
    pub fn drop_epoch(&mut self, epoch: Epoch) {
        self.receivers.reliable.remove_epoch(epoch.get());
        self.receivers.lossy.remove_epoch(epoch.get());
        self.epoch_keys.remove(&epoch.get());
        self.members.retain(|(e, _), _| *e != epoch.get());
    }

    /// Forgets every key (the meeting ended).
    pub fn clear(&mut self) {
        self.pause_sending();
        self.senders = PerMode::default();
        self.receivers = PerMode::default();
        self.epoch_keys.clear();
        self.members.clear();
    }

    /// Derives and registers the `delivery` key of sender `index` in `epoch` if that
    /// sender is accepted there and its key was not derived yet; returns whether it did.
    fn derive_receive_key(&mut self, delivery: Delivery, epoch: u64, index: u32) -> bool {
        let (Some(key), true) = (
            self.epoch_keys.get(&epoch),
            self.members.contains_key(&(epoch, index)),
        ) else {
            return false;
        };
        let Ok(kid) = key.sframe_kid(index) else {
            return false;
        };
        let receiver = self.receivers.get_mut(delivery);
        if receiver.has_key(kid) {
            return false;
        }
        let base = base_key(key, delivery, index);
        receiver.add_key(kid, SFRAME_SUITE, &*base).is_ok()
    }

    /// Whether a message of `epoch` could be opened now (its keys are held).
    #[must_use]
    pub fn holds_epoch(&self, epoch: u64) -> bool {
        self.members.keys().any(|(e, _)| *e == epoch)
    }

    /// Signs and encrypts `body` under this device's sending key for `delivery`.
    ///
    /// # Errors
    /// [`MessageError::BodyTooLarge`], [`MessageError::TopicTooLong`],
    /// [`MessageError::NotSending`] without a sending key, [`MessageError::Frame`] once the
    /// epoch's counter is exhausted.
    pub fn seal(
        &mut self,
        device: &DeviceIdentity,
        delivery: Delivery,
        topic: &str,
        body: &[u8],
    ) -> Result<SealedMessage, MessageError> {
        if body.len() > delivery.max_body_bytes() {
            return Err(MessageError::BodyTooLarge {
                len: body.len(),
                max: delivery.max_body_bytes(),
                delivery,
            });
        }
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(MessageError::TopicTooLong { len: topic.len() });
        }
        let (false, Some(epoch), Some(sender)) = (
            self.paused,
            self.sending_epoch,
            self.senders.get_mut(delivery).as_mut(),
        ) else {
            return Err(MessageError::NotSending);
        };
        let ctr = sender
            .next_counter()
            .ok_or(MessageError::Frame(SframeError::CounterExhausted))?;
        let sequence = *self.next_sequence.get(delivery);
        let input = signing_input(&SigningFields {
            meeting_id: &self.meeting_id,
            epoch: epoch.get(),
            index: self.my_index,
            device_id: &device.device_id(),
            delivery,
            ctr,
            sequence,
            topic,
            body,
        });
        let signature = device.signing_key().sign(&input);
        let plaintext = v1::MeetingMessage {
            sequence,
            topic: topic.to_owned(),
            body: body.to_vec(),
            signature: signature.to_bytes().to_vec(),
        }
        .encode_to_vec();
        let frame = sender
            .encrypt(&[], &plaintext)
            .map_err(MessageError::Frame)?;
        *self.next_sequence.get_mut(delivery) = sequence.wrapping_add(1);
        Ok(SealedMessage { epoch, frame })
    }

    /// Decrypts and verifies a message that arrived by `delivery`.
    ///
    /// # Errors
    /// [`MessageError::UnknownKey`] for an epoch or sender whose key is not held (the
    /// caller may keep a reliable message until its epoch's key arrives), and
    /// [`MessageError::Frame`], [`MessageError::Malformed`] or
    /// [`MessageError::BadSignature`] for a message to drop.
    pub fn open(
        &mut self,
        delivery: Delivery,
        frame: &[u8],
    ) -> Result<ReceivedMessage, MessageError> {
        if frame.len() > MAX_SEALED_MESSAGE_BYTES {
            return Err(MessageError::TooLarge { len: frame.len() });
        }
        // The counter is marked as seen only once the signature verified: every
        // participant can make frames under any sender's key, and must not be able to
        // burn that sender's counters with frames that fail the signature.
        let mut result = self
            .receivers
            .get_mut(delivery)
            .decrypt_uncommitted(&[], frame);
        if let Err(SframeError::UnknownKid {
            epoch,
            sender_index,
            ..
        }) = result
            && self.derive_receive_key(delivery, epoch, u32::from(sender_index))
        {
            // The sender's first message of the epoch: its key exists now.
            result = self
                .receivers
                .get_mut(delivery)
                .decrypt_uncommitted(&[], frame);
        }
        let received = match result {
            Ok(r) => r,
            Err(SframeError::UnknownKid {
                epoch,
                sender_index,
                ..
            }) => {
                return Err(MessageError::UnknownKey {
                    epoch,
                    sender_index: u32::from(sender_index),
                });
            }
            Err(e) => return Err(MessageError::Frame(e)),
        };
        let kid: Kid = received.kid;
        let index = u32::from(kid.sender_index());
        let member = *self
            .members
            .get(&(kid.epoch(), index))
            .ok_or(MessageError::UnknownKey {
                epoch: kid.epoch(),
                sender_index: index,
            })?;
        let message = v1::MeetingMessage::decode(received.plaintext.as_slice())
            .map_err(|_| MessageError::Malformed("not a MeetingMessage"))?;
        if message.topic.len() > MAX_TOPIC_BYTES {
            return Err(MessageError::Malformed("topic too long"));
        }
        if message.body.len() > delivery.max_body_bytes() {
            return Err(MessageError::Malformed("body too large for its mode"));
        }
        let signature = Signature::from_slice(&message.signature)
            .map_err(|_| MessageError::Malformed("signature is not 64 bytes"))?;
        let input = signing_input(&SigningFields {
            meeting_id: &self.meeting_id,
            epoch: kid.epoch(),
            index,
            device_id: &member.device_id,
            delivery,
            ctr: received.ctr,
            sequence: message.sequence,
            topic: &message.topic,
            body: &message.body,
        });
        member
            .signing_key
            .verify_strict(&input, &signature)
            .map_err(|_| MessageError::BadSignature)?;
        if !self.receivers.get_mut(delivery).commit(kid, received.ctr) {
            return Err(MessageError::Frame(SframeError::Replayed {
                kid: kid.value(),
                ctr: received.ctr,
            }));
        }
        Ok(ReceivedMessage {
            user_id: member.user_id,
            device_id: member.device_id,
            delivery,
            epoch: Epoch(kid.epoch()),
            sequence: message.sequence,
            topic: message.topic,
            body: message.body,
        })
    }
}

struct SigningFields<'a> {
    meeting_id: &'a MeetingId,
    epoch: u64,
    index: u32,
    device_id: &'a DeviceId,
    delivery: Delivery,
    /// The SFrame counter the message travels under: a participant re-encrypting
    /// another's signed message under a fresh counter fails the signature.
    ctr: u64,
    sequence: u64,
    topic: &'a str,
    body: &'a [u8],
}

fn signing_input(f: &SigningFields<'_>) -> Vec<u8> {
    // Invariant: callers check the topic against MAX_TOPIC_BYTES (64) first.
    let topic_len = u16::try_from(f.topic.len()).unwrap_or(u16::MAX);
    let mut input = Vec::with_capacity(SIGN_LABEL.len() + 80 + f.topic.len() + f.body.len());
    input.extend_from_slice(SIGN_LABEL);
    input.extend_from_slice(f.meeting_id.as_bytes());
    input.extend_from_slice(&f.epoch.to_be_bytes());
    input.extend_from_slice(&f.index.to_be_bytes());
    input.extend_from_slice(f.device_id.as_bytes());
    input.push(f.delivery.byte());
    input.extend_from_slice(&f.ctr.to_be_bytes());
    input.extend_from_slice(&f.sequence.to_be_bytes());
    input.extend_from_slice(&topic_len.to_be_bytes());
    input.extend_from_slice(f.topic.as_bytes());
    input.extend_from_slice(f.body);
    input
}
