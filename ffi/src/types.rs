//! The records and enums that cross the boundary, and their conversions from the SDK's
//! types. Ids are hex strings ([`crate::ids`]); times are Unix milliseconds.

use conclave_sdk::client as sdk;
use conclave_sdk::meeting::rekey::EndReason as SdkEndReason;

use crate::ids::{device_hex, meeting_hex, user_hex};

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MediaKind {
    /// Audio: forwarded first under congestion.
    Audio,
    /// Video: dropped first under congestion.
    Video,
}

impl From<MediaKind> for sdk::MediaKind {
    fn from(k: MediaKind) -> Self {
        match k {
            MediaKind::Audio => sdk::MediaKind::Audio,
            MediaKind::Video => sdk::MediaKind::Video,
        }
    }
}

impl MediaKind {
    /// The bindings' form of an SDK media kind; `None` for a kind newer than these
    /// bindings (the SDK's enum is non-exhaustive; both are built together, so this
    /// only guards against a future SDK).
    fn from_sdk(k: sdk::MediaKind) -> Option<Self> {
        match k {
            sdk::MediaKind::Audio => Some(MediaKind::Audio),
            sdk::MediaKind::Video => Some(MediaKind::Video),
            _ => None,
        }
    }
}

pub(crate) fn kinds_to_sdk(kinds: &[MediaKind]) -> Vec<sdk::MediaKind> {
    kinds.iter().copied().map(Into::into).collect()
}

fn kinds_from_sdk(kinds: &[sdk::MediaKind]) -> Vec<MediaKind> {
    kinds
        .iter()
        .copied()
        .filter_map(MediaKind::from_sdk)
        .collect()
}

/// How an in-meeting message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Delivery {
    /// Relayed by the server in order (chat, reactions, state): at most 4,096 bytes.
    Reliable,
    /// One datagram, may be lost (cursors, captions): at most 900 bytes.
    Lossy,
}

impl From<Delivery> for sdk::Delivery {
    fn from(d: Delivery) -> Self {
        match d {
            Delivery::Reliable => sdk::Delivery::Reliable,
            Delivery::Lossy => sdk::Delivery::Lossy,
        }
    }
}

/// An in-meeting message another participant sent, its sender verified by signature.
/// `Debug` shows the body's length only (it may be private chat).
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChatMessage {
    /// The sending user (hex).
    pub user_id: String,
    /// The sending device (hex).
    pub device_id: String,
    /// How it travelled.
    pub delivery: Delivery,
    /// The epoch it was sent in.
    pub epoch: u64,
    /// The sender's sequence number for this delivery mode.
    pub sequence: u64,
    /// The app's label.
    pub topic: String,
    /// The app's bytes.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for ChatMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatMessage")
            .field("device_id", &self.device_id)
            .field("delivery", &self.delivery)
            .field("epoch", &self.epoch)
            .field("sequence", &self.sequence)
            .field("topic", &self.topic)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl ChatMessage {
    fn from_sdk(m: &sdk::ReceivedMessage) -> Option<Self> {
        let delivery = match m.delivery {
            sdk::Delivery::Reliable => Delivery::Reliable,
            sdk::Delivery::Lossy => Delivery::Lossy,
            _ => return None,
        };
        Some(ChatMessage {
            user_id: user_hex(&m.user_id),
            device_id: device_hex(&m.device_id),
            delivery,
            epoch: m.epoch.0,
            sequence: m.sequence,
            topic: m.topic.clone(),
            body: m.body.clone(),
        })
    }
}

/// A participating device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Participant {
    /// Its user (hex).
    pub user_id: String,
    /// The device (hex).
    pub device_id: String,
    /// Its SFrame sender index in the meeting ([`MediaFrame::sender_index`]).
    pub sender_index: u32,
    /// Whether it is the key leader.
    pub is_leader: bool,
    /// Whether it is this device.
    pub is_me: bool,
}

impl From<&sdk::Participant> for Participant {
    fn from(p: &sdk::Participant) -> Self {
        Participant {
            user_id: user_hex(&p.user_id),
            device_id: device_hex(&p.device_id),
            sender_index: p.sender_index,
            is_leader: p.is_leader,
            is_me: p.is_me,
        }
    }
}

pub(crate) fn participants(list: &[sdk::Participant]) -> Vec<Participant> {
    list.iter().map(Participant::from).collect()
}

/// A meeting invitation: answer it with `Client::accept` or `Client::reject`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Invitation {
    /// The meeting (hex).
    pub meeting_id: String,
    /// Who invited (the key leader); `inviter.user_id` is verified.
    pub inviter: Participant,
    /// The media the inviter will send.
    pub media_kinds: Vec<MediaKind>,
    /// Everyone invited, this device included.
    pub participants: Vec<Participant>,
    /// When the invitation lapses (server clock), Unix ms.
    pub expires_at_ms: u64,
    /// How the caller presents themself ("Alice is calling"): their own unverified
    /// claim, sealed in the invite. Show it next to what the app knows of `inviter.user_id`.
    pub caller_display_name: Option<String>,
}

impl From<&sdk::Invitation> for Invitation {
    fn from(i: &sdk::Invitation) -> Self {
        Invitation {
            meeting_id: meeting_hex(&i.meeting_id),
            inviter: Participant::from(&i.from),
            media_kinds: kinds_from_sdk(&i.media_kinds),
            participants: participants(&i.participants),
            expires_at_ms: i.expires_at.0,
            caller_display_name: i.caller.as_ref().map(|c| c.display_name().to_string()),
        }
    }
}

/// A decrypted, reassembled media frame.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct MediaFrame {
    /// The user of the sender slot whose key decrypted it (hex).
    pub user_id: String,
    /// The sending device (hex).
    pub device_id: String,
    /// The sender's index in the meeting.
    pub sender_index: u32,
    /// Audio or video.
    pub kind: MediaKind,
    /// Whether the sender marked it a keyframe.
    pub keyframe: bool,
    /// The epoch it was encrypted under.
    pub epoch: u64,
    /// Its number in the sender's stream of this kind (+1 per frame; gaps are losses).
    pub sequence: u32,
    /// Capture time on the sender's clock, µs (compare only values of one sender).
    pub capture_us: u64,
    /// The media.
    pub data: Vec<u8>,
}

impl core::fmt::Debug for MediaFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MediaFrame")
            .field("sender_index", &self.sender_index)
            .field("kind", &self.kind)
            .field("epoch", &self.epoch)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl MediaFrame {
    /// The bindings' form of a frame; `None` for a media kind these bindings do not
    /// know.
    pub(crate) fn from_sdk(f: sdk::MediaFrame) -> Option<Self> {
        Some(MediaFrame {
            user_id: user_hex(&f.user_id),
            device_id: device_hex(&f.device_id),
            sender_index: f.sender_index,
            kind: MediaKind::from_sdk(f.kind)?,
            keyframe: f.keyframe,
            epoch: f.epoch.0,
            sequence: f.sequence,
            capture_us: f.capture_us,
            data: f.data,
        })
    }
}

/// Media counters of one meeting on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct MediaStats {
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received and decrypted.
    pub frames_received: u64,
    /// Decrypted frames dropped because the app did not take them fast enough.
    pub frames_dropped_queue_full: u64,
    /// Lossy messages dropped because the meeting's events were not taken fast enough.
    pub lossy_messages_dropped: u64,
    /// Frames under a key this device does not hold.
    pub unknown_key: u64,
    /// Frames that failed authentication or were malformed.
    pub decrypt_failures: u64,
    /// Replayed or too old frames.
    pub replayed: u64,
    /// Frames whose fragments never all arrived.
    pub incomplete_frames: u64,
}

impl From<sdk::MediaStats> for MediaStats {
    fn from(s: sdk::MediaStats) -> Self {
        MediaStats {
            frames_sent: s.frames_sent,
            frames_received: s.frames_received,
            frames_dropped_queue_full: s.frames_dropped_queue_full,
            lossy_messages_dropped: s.lossy_messages_dropped,
            unknown_key: s.unknown_key,
            decrypt_failures: s.decrypt_failures,
            replayed: s.replayed,
            incomplete_frames: s.incomplete_frames,
        }
    }
}

/// What the client's connections carried on the network, from QUIC's counters: totals
/// over every connection it opened. Read it now and then and subtract for rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct NetworkStats {
    /// UDP datagrams received.
    pub udp_datagrams_received: u64,
    /// Bytes of those.
    pub udp_bytes_received: u64,
    /// UDP datagrams sent.
    pub udp_datagrams_sent: u64,
    /// Bytes of those.
    pub udp_bytes_sent: u64,
    /// QUIC packets this client sent that were declared lost.
    pub packets_lost: u64,
}

impl From<sdk::NetworkStats> for NetworkStats {
    fn from(s: sdk::NetworkStats) -> Self {
        NetworkStats {
            udp_datagrams_received: s.udp_datagrams_received,
            udp_bytes_received: s.udp_bytes_received,
            udp_datagrams_sent: s.udp_datagrams_sent,
            udp_bytes_sent: s.udp_bytes_sent,
            packets_lost: s.packets_lost,
        }
    }
}

/// The two safety words of an epoch: equal words on every participant's screen mean
/// everyone holds the same meeting key and the same keys for everyone.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SafetyWords {
    /// The epoch they belong to.
    pub epoch: u64,
    /// The two words (PGP word list).
    pub words: Vec<String>,
}

impl From<&conclave_sdk::safety::SafetyWords> for SafetyWords {
    fn from(w: &conclave_sdk::safety::SafetyWords) -> Self {
        SafetyWords {
            epoch: w.epoch().0,
            words: w.words().iter().map(|s| (*s).to_string()).collect(),
        }
    }
}

/// A device (or a whole user) that was not invited, and why.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RefusedDevice {
    /// The user (hex).
    pub user_id: String,
    /// The device (hex), when the refusal concerns one device.
    pub device_id: Option<String>,
    /// Why, for people.
    pub reason: String,
    /// Whether the directory answered something it should not have (a substituted
    /// key, an unrequested user): tell the user and compare safety codes.
    pub suspicious: bool,
}

impl From<&sdk::RefusedDevice> for RefusedDevice {
    fn from(r: &sdk::RefusedDevice) -> Self {
        RefusedDevice {
            user_id: user_hex(&r.user_id),
            device_id: r.device_id.as_ref().map(device_hex),
            reason: r.reason.to_string(),
            suspicious: r.reason.is_suspicious(),
        }
    }
}

/// Who was invited and who was refused.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InviteReport {
    /// Devices the invite was sent to: (user id, device id), hex.
    pub invited_devices: Vec<String>,
    /// Users whose devices were invited (hex, each once).
    pub invited_users: Vec<String>,
    /// Devices or users not invited, with the reason.
    pub refused: Vec<RefusedDevice>,
}

impl From<&sdk::InviteReport> for InviteReport {
    fn from(r: &sdk::InviteReport) -> Self {
        let mut users: Vec<String> = r.invited.iter().map(|(u, _)| user_hex(u)).collect();
        users.dedup();
        InviteReport {
            invited_devices: r.invited.iter().map(|(_, d)| device_hex(d)).collect(),
            invited_users: users,
            refused: r.refused.iter().map(RefusedDevice::from).collect(),
        }
    }
}

/// A user whose identity key the app trusts (pinned on first use or confirmed with a
/// safety code). Store them and pass them back in `ClientOptions::pinned_users`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PinnedUser {
    /// The user (hex).
    pub user_id: String,
    /// The user's Ed25519 identity public key (32 bytes).
    pub identity_key: Vec<u8>,
}

impl From<&conclave_sdk::identity::UserIdentity> for PinnedUser {
    fn from(u: &conclave_sdk::identity::UserIdentity) -> Self {
        PinnedUser {
            user_id: user_hex(&u.user_id),
            identity_key: u.key.to_bytes().to_vec(),
        }
    }
}

/// Why a meeting ended for this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum EndReason {
    /// This device left.
    Left,
    /// The key leader removed this device (or its user).
    Removed,
    /// A rekey left this device out.
    ExcludedByRekey,
    /// A reason newer than these bindings.
    Other,
}

impl From<SdkEndReason> for EndReason {
    fn from(r: SdkEndReason) -> Self {
        match r {
            SdkEndReason::Left => EndReason::Left,
            SdkEndReason::Removed => EndReason::Removed,
            SdkEndReason::ExcludedByRekey => EndReason::ExcludedByRekey,
            _ => EndReason::Other,
        }
    }
}

/// Something that happened to the client as a whole (`ClientListener::on_event`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ClientEvent {
    /// An invitation arrived (live or from the mailbox): accept or reject it.
    Invited {
        /// The invitation.
        invitation: Invitation,
    },
    /// A missed call: an invitation stopped ringing unanswered, or arrived from the
    /// mailbox after its ring deadline. It can no longer be accepted; stop ringing and
    /// show who called.
    MissedCall {
        /// The invitation.
        invitation: Invitation,
    },
    /// The connection dropped; the client is reconnecting by itself.
    Disconnected {
        /// Why, for people.
        reason: String,
    },
    /// The client reconnected and rejoined its meetings.
    Reconnected,
    /// A meeting's room is served by another node or shard; the client follows.
    RoomRedirected {
        /// The meeting (hex).
        meeting_id: String,
        /// The node's address as the server gave it (empty: another shard of this one).
        address: String,
    },
    /// Fresh prekeys were uploaded.
    PrekeysUploaded {
        /// Prekeys the server now holds for this device.
        held: u32,
    },
    /// Opening containers used up one-time prekeys: store `Client::export_credentials`
    /// again now, so their private halves are gone from storage too.
    PrekeysConsumed {
        /// Prekeys used since the last such event.
        count: u32,
    },
    /// A user's identity key was pinned for the first time: store it.
    UserPinned {
        /// The user and key.
        user: PinnedUser,
    },
    /// The directory answered something it should not have; nothing was sealed to it.
    /// Repeated events mean someone controlling the server is after meeting keys.
    DirectoryRefused {
        /// What was refused.
        refused: RefusedDevice,
    },
    /// A received message was refused (forged, replayed, expired, changed identity).
    MessageRefused {
        /// The user it claimed to come from (hex), if readable.
        claimed_sender: Option<String>,
        /// Why, for people.
        reason: String,
    },
}

impl ClientEvent {
    /// The bindings' form of an SDK event; `None` for kinds this version of the
    /// bindings does not know (the SDK's enum is non-exhaustive).
    pub(crate) fn from_sdk(event: &sdk::ClientEvent) -> Option<Self> {
        Some(match event {
            sdk::ClientEvent::Invited(i) => ClientEvent::Invited {
                invitation: Invitation::from(i),
            },
            sdk::ClientEvent::MissedCall(i) => ClientEvent::MissedCall {
                invitation: Invitation::from(i),
            },
            sdk::ClientEvent::Disconnected { reason } => ClientEvent::Disconnected {
                reason: reason.to_string(),
            },
            sdk::ClientEvent::Reconnected => ClientEvent::Reconnected,
            sdk::ClientEvent::RoomRedirected { meeting, address } => ClientEvent::RoomRedirected {
                meeting_id: meeting_hex(meeting),
                address: address.clone(),
            },
            sdk::ClientEvent::PrekeysUploaded { held } => {
                ClientEvent::PrekeysUploaded { held: *held }
            }
            sdk::ClientEvent::PrekeysConsumed { count } => {
                ClientEvent::PrekeysConsumed { count: *count }
            }
            sdk::ClientEvent::UserPinned(u) => ClientEvent::UserPinned {
                user: PinnedUser::from(u),
            },
            sdk::ClientEvent::DirectoryRefused(r) => ClientEvent::DirectoryRefused {
                refused: RefusedDevice::from(r),
            },
            sdk::ClientEvent::MessageRefused {
                claimed_sender,
                reason,
            } => ClientEvent::MessageRefused {
                claimed_sender: claimed_sender.as_ref().map(user_hex),
                reason: reason.to_string(),
            },
            _ => return None,
        })
    }
}

/// Something that happened in a meeting (`MeetingListener::on_event`). Media frames
/// go to `MeetingListener::on_frames` instead.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum MeetingEvent {
    /// The participants changed (read `Meeting::participants`; the safety code too).
    ParticipantsChanged,
    /// This device now sends on `epoch` (after a rekey or a join).
    EpochChanged {
        /// The new sending epoch.
        epoch: u64,
    },
    /// The room moved to an epoch whose key has not arrived: sending is paused and the
    /// key was requested. Tell the user if it lasts.
    SendingPaused {
        /// The epoch the room announced.
        room_epoch: u64,
    },
    /// Another participant's in-meeting message.
    Message {
        /// The message.
        message: ChatMessage,
    },
    /// The safety words of an epoch are ready.
    SafetyWords {
        /// The words.
        words: SafetyWords,
    },
    /// (Key leader) an invitee answered.
    Reply {
        /// The answering device.
        participant: Participant,
        /// Whether it accepted.
        accepted: bool,
        /// The media it will send.
        media_kinds: Vec<MediaKind>,
    },
    /// (Key leader) an invitee did not answer by the ring deadline; the meeting rekeys
    /// without it, as for a reject.
    Unanswered {
        /// The invited device.
        participant: Participant,
    },
    /// (Key leader) the room could not be moved to `epoch`: a removed participant may
    /// still receive (undecryptable) media. Tell the user.
    RoomRotationFailed {
        /// The epoch the room should have moved to.
        epoch: u64,
    },
    /// Another participant asked for a video keyframe: send one.
    KeyframeRequested,
    /// Every other user has left: this device is alone.
    Alone,
    /// Media stopped flowing (connection lost or room moved); it resumes by itself.
    MediaInterrupted,
    /// Media flows again.
    MediaResumed,
    /// The meeting ended for this device; every key is gone. The last event.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

impl MeetingEvent {
    /// The bindings' form of an SDK control event; `None` for frames (delivered
    /// separately) and for kinds this version of the bindings does not know.
    pub(crate) fn from_sdk(event: &sdk::MeetingEvent) -> Option<Self> {
        Some(match event {
            sdk::MeetingEvent::ParticipantsChanged => MeetingEvent::ParticipantsChanged,
            sdk::MeetingEvent::EpochChanged { epoch } => {
                MeetingEvent::EpochChanged { epoch: epoch.0 }
            }
            sdk::MeetingEvent::SendingPaused { room_epoch } => MeetingEvent::SendingPaused {
                room_epoch: room_epoch.0,
            },
            sdk::MeetingEvent::Message(m) => MeetingEvent::Message {
                message: ChatMessage::from_sdk(m)?,
            },
            sdk::MeetingEvent::SafetyWords(w) => MeetingEvent::SafetyWords {
                words: SafetyWords::from(w),
            },
            sdk::MeetingEvent::Reply {
                from,
                accepted,
                media_kinds,
            } => MeetingEvent::Reply {
                participant: Participant::from(from),
                accepted: *accepted,
                media_kinds: kinds_from_sdk(media_kinds),
            },
            sdk::MeetingEvent::Unanswered { participant } => MeetingEvent::Unanswered {
                participant: Participant::from(participant),
            },
            sdk::MeetingEvent::RoomRotationFailed { epoch } => {
                MeetingEvent::RoomRotationFailed { epoch: epoch.0 }
            }
            sdk::MeetingEvent::KeyframeRequested => MeetingEvent::KeyframeRequested,
            sdk::MeetingEvent::Alone => MeetingEvent::Alone,
            sdk::MeetingEvent::MediaInterrupted => MeetingEvent::MediaInterrupted,
            sdk::MeetingEvent::MediaResumed => MeetingEvent::MediaResumed,
            sdk::MeetingEvent::Ended { reason } => MeetingEvent::Ended {
                reason: (*reason).into(),
            },
            _ => return None,
        })
    }
}
