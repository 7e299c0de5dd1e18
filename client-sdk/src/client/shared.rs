//! State a meeting shares between the app's handles, the driver task and the media
//! reader: the SFrame contexts, the room link, the participant snapshot and counters.
//!
//! Locks are short and never held across an `.await`. Sending and receiving never
//! share a lock: sending a frame takes the send lock (SFrame sender, room link, frame
//! counter), encrypts and queues datagrams; receiving one takes the receive lock
//! (reassembler, SFrame receiver, sender table) to reassemble and decrypt. Whether the
//! meeting ended is an atomic flag both read without locking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use std::time::Instant;

use conclave_proto::datagram::{MediaKind, RoomHandle, Slot};
use conclave_proto::limits::MAX_DATAGRAM_BYTES;
use tokio::sync::mpsc;

use super::frames::FrameSink;
use super::{ClientError, ConnectionProblem, MediaStats, MeetingEvent, Participant};
use crate::identity::DeviceIdentity;
use crate::media::{self, ENVELOPE_LEN, MediaEnvelope, Reassembler, ReassemblyConfig};
use crate::meeting::messages::{Delivery, MessageCrypto, MessageError, ReceivedMessage};
use crate::meeting::{Epoch, MeetingId, MeetingKey};
use crate::safety::{SafetyCode, SafetyWords};
use crate::sframe::{SframeReceiver, SframeSender};

mod receive;
mod receive_keys;
use crate::{DeviceId, UserId};

/// Locks `m`, recovering from poisoning: every critical section leaves the state
/// consistent (no invariant spans a panic point).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where this device's media goes: the QUIC connection and the room's handle on it.
#[derive(Debug, Clone)]
pub(crate) struct RoomLink {
    pub conn: quinn::Connection,
    pub handle: RoomHandle,
}

/// Sender identity of an SFrame sender index.
#[derive(Debug, Clone, Copy)]
struct SenderOf {
    user_id: UserId,
    device_id: DeviceId,
    /// The SFU slot its last frame came from (where a keyframe request goes).
    slot: Option<Slot>,
}

/// What sending a frame needs.
struct SendSide {
    sender: Option<SframeSender>,
    /// Sending paused until a new sending key (review M3).
    paused: bool,
    room: Option<RoomLink>,
    next_frame_number: u32,
    /// The next envelope sequence number of each media kind: they go on across
    /// rekeys and room changes.
    next_audio: u32,
    next_video: u32,
    /// The origin of capture timestamps the SDK stamps itself ([`MeetingShared::send_frame`]
    /// without one from the app).
    clock_origin: Instant,
}

impl SendSide {
    /// The next sequence number of `kind`'s stream.
    fn next_sequence(&mut self, kind: MediaKind) -> &mut u32 {
        if kind == MediaKind::Audio {
            &mut self.next_audio
        } else {
            &mut self.next_video
        }
    }
}

/// What receiving a frame needs.
struct ReceiveSide {
    /// The keys derived so far (at each sender's first frame of an epoch).
    receiver: SframeReceiver,
    /// What they are derived from.
    keys: receive_keys::ReceiveKeys,
    reassembler: Reassembler,
    senders: HashMap<u32, SenderOf>,
    /// Decryption buffer, reused for every frame.
    plaintext: Vec<u8>,
}

/// The participant view the app reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct MeetingInfo {
    pub participants: Vec<Participant>,
    pub leader: Option<DeviceId>,
    pub safety_code: Option<SafetyCode>,
    pub safety_words: Option<SafetyWords>,
    pub sending_epoch: Epoch,
    pub held_epochs: Vec<Epoch>,
    pub ended: bool,
    /// Devices the next Rekey is wrapped for ahead of time (key leader only).
    pub prepared_rekey_devices: usize,
}

#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    frames_dropped_queue_full: AtomicU64,
    lossy_messages_dropped: AtomicU64,
    unknown_key: AtomicU64,
    decrypt_failures: AtomicU64,
    replayed: AtomicU64,
}

/// One meeting's shared state.
pub(crate) struct MeetingShared {
    pub id: MeetingId,
    pub my_index: u32,
    send: Mutex<SendSide>,
    receive: Mutex<ReceiveSide>,
    /// In-meeting message keys (both modes): taken by the engine for reliable messages
    /// and sending, by the reader for lossy ones; never with `send` or `receive` held.
    messages: Mutex<MessageCrypto>,
    info: Mutex<MeetingInfo>,
    /// Mirrors `info.ended`, for the media paths.
    ended_flag: AtomicBool,
    frames: FrameSink,
    events: mpsc::Sender<MeetingEvent>,
    counters: Counters,
}

impl core::fmt::Debug for MeetingShared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MeetingShared")
            .field("id", &self.id)
            .field("my_index", &self.my_index)
            .finish_non_exhaustive()
    }
}

impl MeetingShared {
    pub(crate) fn new(
        id: MeetingId,
        my_index: u32,
        frames: FrameSink,
        events: mpsc::Sender<MeetingEvent>,
    ) -> Self {
        MeetingShared {
            id,
            my_index,
            send: Mutex::new(SendSide {
                sender: None,
                paused: false,
                room: None,
                next_frame_number: 0,
                next_audio: 0,
                next_video: 0,
                clock_origin: Instant::now(),
            }),
            receive: Mutex::new(ReceiveSide {
                receiver: SframeReceiver::new(),
                keys: receive_keys::ReceiveKeys::default(),
                reassembler: Reassembler::new(ReassemblyConfig::default()),
                senders: HashMap::new(),
                plaintext: Vec::new(),
            }),
            messages: Mutex::new(MessageCrypto::new(id, my_index)),
            info: Mutex::new(MeetingInfo::default()),
            ended_flag: AtomicBool::new(false),
            frames,
            events,
            counters: Counters::default(),
        }
    }

    // ----- driver side --------------------------------------------------------------

    /// Starts sending on `key`'s epoch (one sender context per epoch: never recreated
    /// for the same epoch).
    /// Sends on `key` from now on. If no sender can be made for it (an epoch or index
    /// SFrame cannot carry), sending stops instead of going on with the previous
    /// epoch's key, which departed members hold (fail closed; review L5).
    pub(crate) fn set_sending_key(&self, key: &MeetingKey) -> Result<(), ClientError> {
        let sender = match key.sframe_sender(self.my_index) {
            Ok(sender) => sender,
            Err(e) => {
                lock(&self.send).sender = None;
                lock(&self.messages).pause_sending();
                return Err(e.into());
            }
        };
        if let Err(e) = lock(&self.messages).set_sending_key(key) {
            lock(&self.send).sender = None;
            return Err(ClientError::Message(e));
        }
        let mut send = lock(&self.send);
        if send.sender.as_ref().map(|s| s.kid()) != Some(sender.kid()) {
            send.sender = Some(sender);
        }
        send.paused = false;
        drop(send);
        lock(&self.info).sending_epoch = key.epoch();
        Ok(())
    }

    /// Stops sending until the next [`Self::set_sending_key`]: the room moved to an
    /// epoch whose key this device does not hold (review M3).
    ///
    /// The sender context stays (unused while paused): if the same epoch's key is set
    /// again, its counter goes on, where a new context would repeat AES-GCM nonces.
    pub(crate) fn pause_sending(&self) {
        lock(&self.send).paused = true;
        lock(&self.messages).pause_sending();
    }

    /// Accepts `key`'s media and messages from every participant but this device (each
    /// with its pinned signing key, which message signatures need); each sender's keys
    /// are derived at its first frame or message.
    pub(crate) fn add_receive_keys(
        &self,
        key: &MeetingKey,
        members: &[(u32, UserId, DeviceId, ed25519_dalek::VerifyingKey)],
    ) {
        if let Err(e) = lock(&self.messages).add_receive_keys(key, members.iter().copied()) {
            tracing::warn!(error = %e, "cannot register a message receive key");
        }
        let mut receive = lock(&self.receive);
        for &(index, user_id, device_id, _) in members {
            let slot = receive.senders.get(&index).and_then(|s| s.slot);
            receive.senders.insert(
                index,
                SenderOf {
                    user_id,
                    device_id,
                    slot,
                },
            );
        }
        let senders = members
            .iter()
            .map(|m| m.0)
            .filter(|&index| index != self.my_index && key.sframe_kid(index).is_ok());
        if let Err(e) = receive.keys.accept(key, senders) {
            tracing::warn!(error = %e, "cannot accept a sender's media");
        }
    }

    /// Forgets every key of `epoch`.
    pub(crate) fn drop_epoch(&self, epoch: Epoch) {
        {
            let mut receive = lock(&self.receive);
            receive.receiver.remove_epoch(epoch.get());
            receive.keys.drop_epoch(epoch.get());
        }
        lock(&self.messages).drop_epoch(epoch);
    }

    /// Forgets every key and stops sending (the meeting ended).
    pub(crate) fn clear_keys(&self) {
        {
            let mut receive = lock(&self.receive);
            receive.receiver = SframeReceiver::new();
            receive.keys = receive_keys::ReceiveKeys::default();
        }
        lock(&self.messages).clear();
        let mut send = lock(&self.send);
        send.sender = None;
        send.room = None;
    }

    pub(crate) fn set_room(&self, room: Option<RoomLink>) {
        lock(&self.send).room = room;
    }

    pub(crate) fn set_info(&self, update: impl FnOnce(&mut MeetingInfo)) {
        let ended = {
            let mut info = lock(&self.info);
            update(&mut info);
            info.ended
        };
        if ended {
            self.ended_flag.store(true, Ordering::Release);
            // The app reads the frames already queued, then the end of the stream.
            self.frames.close();
        }
    }

    pub(crate) fn emit(&self, event: MeetingEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    "meeting event queue full (the app reads too slowly); event dropped"
                );
            }
            // The app dropped its `Meeting`: nobody is listening, as intended.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("meeting event dropped: the app no longer reads this meeting");
            }
        }
    }

    // ----- app side -----------------------------------------------------------------

    pub(crate) fn info(&self) -> MeetingInfo {
        lock(&self.info).clone()
    }

    pub(crate) fn stats(&self) -> MediaStats {
        let c = &self.counters;
        let reassembly = lock(&self.receive).reassembler.stats();
        MediaStats {
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            frames_received: c.frames_received.load(Ordering::Relaxed),
            frames_dropped_queue_full: c.frames_dropped_queue_full.load(Ordering::Relaxed),
            lossy_messages_dropped: c.lossy_messages_dropped.load(Ordering::Relaxed),
            unknown_key: c.unknown_key.load(Ordering::Relaxed),
            decrypt_failures: c.decrypt_failures.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            incomplete_frames: reassembly.expired + reassembly.evicted + reassembly.inconsistent,
        }
    }

    /// Encrypts one media frame and queues its datagrams.
    /// Encrypts and sends a frame with its envelope: `capture_us` from the app, or the
    /// microseconds since this meeting's state was created.
    pub(crate) fn send_frame(
        &self,
        kind: MediaKind,
        keyframe: bool,
        capture_us: Option<u64>,
        data: &[u8],
    ) -> Result<(), ClientError> {
        if self.ended_flag.load(Ordering::Acquire) {
            return Err(ClientError::MeetingEnded);
        }
        if !matches!(kind, MediaKind::Audio | MediaKind::Video) {
            return Err(ClientError::NotMedia);
        }
        let mut send = lock(&self.send);
        let Some(room) = send.room.clone() else {
            return Err(ClientError::NotJoined);
        };
        let max_datagram = room
            .conn
            .max_datagram_size()
            .unwrap_or(0)
            .min(MAX_DATAGRAM_BYTES);
        let max = media::max_frame_ciphertext(max_datagram)
            .saturating_sub(crate::sframe::SframeHeader::MAX_LEN + 16 + ENVELOPE_LEN);
        if data.len() > max {
            return Err(ClientError::FrameTooLarge {
                len: data.len(),
                max,
            });
        }
        let frame_number = send.next_frame_number;
        let metadata = media::frame_metadata(kind, keyframe, frame_number);
        if send.paused {
            return Err(ClientError::SendingPaused);
        }
        let sequence = *send.next_sequence(kind);
        let capture_us = capture_us.unwrap_or_else(|| {
            u64::try_from(send.clock_origin.elapsed().as_micros()).unwrap_or(u64::MAX)
        });
        let envelope = MediaEnvelope {
            sequence,
            capture_us,
        }
        .encode();
        let sender = send.sender.as_mut().ok_or(ClientError::NotJoined)?;
        let ciphertext = sender.encrypt_parts(&metadata, &[&envelope, data])?;
        send.next_frame_number = frame_number.wrapping_add(1);
        *send.next_sequence(kind) = sequence.wrapping_add(1);
        drop(send);
        let datagrams = media::fragment(
            room.handle,
            kind,
            keyframe,
            frame_number,
            &ciphertext,
            max_datagram,
        )
        .map_err(|_| ClientError::FrameTooLarge {
            len: data.len(),
            max,
        })?;
        for d in datagrams {
            room.conn
                .send_datagram(d)
                .map_err(|e| ClientError::Connection(ConnectionProblem::Datagram(e)))?;
        }
        self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Seals an in-meeting message as this device (`identity`) for `delivery`.
    pub(crate) fn seal_message(
        &self,
        identity: &DeviceIdentity,
        delivery: Delivery,
        topic: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        if self.ended_flag.load(Ordering::Acquire) {
            return Err(ClientError::MeetingEnded);
        }
        let sealed = lock(&self.messages).seal(identity, delivery, topic, body);
        match sealed {
            Ok(sealed) => Ok(sealed.frame),
            Err(MessageError::NotSending) if lock(&self.send).paused => {
                Err(ClientError::SendingPaused)
            }
            Err(MessageError::NotSending) => Err(ClientError::NotJoined),
            Err(e) => Err(ClientError::Message(e)),
        }
    }

    /// Opens an in-meeting message that arrived by `delivery`.
    pub(crate) fn open_message(
        &self,
        delivery: Delivery,
        frame: &[u8],
    ) -> Result<ReceivedMessage, MessageError> {
        lock(&self.messages).open(delivery, frame)
    }

    /// Whether messages of `epoch` can be opened now.
    pub(crate) fn holds_message_epoch(&self, epoch: u64) -> bool {
        lock(&self.messages).holds_epoch(epoch)
    }

    /// Hands a lossy message to the app, unless its event queue is more than half full:
    /// lossy messages give way, so that a flood of them (from any participant) cannot
    /// crowd out control events and reliable messages. Dropped ones are counted.
    pub(crate) fn emit_lossy(&self, message: ReceivedMessage) {
        if self.events.capacity() < self.events.max_capacity() / 2 {
            self.counters
                .lossy_messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.emit(MeetingEvent::Message(message));
    }

    /// Seals a lossy message as this device and sends it as one `Data` datagram on the
    /// room link (checked first, so a refused send spends no sequence number).
    pub(crate) fn send_lossy_message(
        &self,
        identity: &DeviceIdentity,
        topic: &str,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let (room, frame_number) = {
            let mut send = lock(&self.send);
            let Some(room) = send.room.clone() else {
                return Err(ClientError::NotJoined);
            };
            let frame_number = send.next_frame_number;
            send.next_frame_number = frame_number.wrapping_add(1);
            (room, frame_number)
        };
        let sealed = self.seal_message(identity, Delivery::Lossy, topic, body)?;
        let sealed = sealed.as_slice();
        let max_datagram = room
            .conn
            .max_datagram_size()
            .unwrap_or(0)
            .min(MAX_DATAGRAM_BYTES);
        let datagram = media::fragment(
            room.handle,
            MediaKind::Data,
            false,
            frame_number,
            sealed,
            max_datagram,
        )
        .ok()
        .filter(|d| d.len() == 1)
        .and_then(|mut d| d.pop())
        .ok_or(ClientError::FrameTooLarge {
            len: sealed.len(),
            max: media::max_frame_ciphertext(max_datagram),
        })?;
        room.conn
            .send_datagram(datagram)
            .map_err(|e| ClientError::Connection(ConnectionProblem::Datagram(e)))
    }

    /// The SFU slot sender `index`'s frames last came from, if any arrived.
    pub(crate) fn slot_of(&self, index: u32) -> Option<Slot> {
        lock(&self.receive).senders.get(&index).and_then(|s| s.slot)
    }
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;
    use crate::sframe::MAX_EPOCH;

    /// Review L5: a failed switch leaves no sender, rather than the old epoch's.
    #[test]
    fn a_key_that_cannot_send_stops_sending_instead_of_keeping_the_old_key() {
        let (frames, _f) = crate::client::frames::frame_queue(crate::client::frames::FrameBounds {
            frames: 1,
            bytes: 1,
        });
        let (events, _e) = mpsc::channel(1);
        let id = MeetingId::from_slice(&[1; 32]).expect("32 bytes");
        let shared = MeetingShared::new(id, 1, frames, events);
        shared
            .set_sending_key(&MeetingKey::generate(Epoch(0), &mut OsRng))
            .expect("epoch 0 can send");
        assert!(lock(&shared.send).sender.is_some());
        let too_far = MeetingKey::generate(Epoch(MAX_EPOCH + 1), &mut OsRng);
        assert!(shared.set_sending_key(&too_far).is_err());
        assert!(lock(&shared.send).sender.is_none());
    }
}
