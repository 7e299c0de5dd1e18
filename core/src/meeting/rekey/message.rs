//! Meeting control messages as the key schedule makes them: typed, with meeting keys
//! held as [`MeetingKey`] (zeroized on drop, never printed). The wire form exists only
//! while a container is sealed: [`MeetingMessage::to_wire`] gives a [`WirePayload`]
//! that zeroizes the key bytes it carries when dropped.

use conclave_proto::datagram::MediaKind;
use conclave_proto::v1::{self, RekeyReason, container_payload::Body};

use super::Roster;
use crate::container::zeroize_payload_secrets;
use crate::meeting::{Epoch, MeetingId, MeetingKey};
use crate::{DeviceId, UnixMillis, UserId};

/// One meeting's control message.
#[derive(Clone)]
pub struct MeetingMessage {
    /// The meeting it belongs to.
    pub meeting_id: MeetingId,
    /// What it says.
    pub body: ControlMessage,
}

/// What a meeting control message says.
#[derive(Clone)]
#[non_exhaustive]
pub enum ControlMessage {
    /// An invitation: the current key, roster and key leader.
    Invite {
        /// The meeting key of the current epoch.
        key: MeetingKey,
        /// Everyone invited, the inviter included.
        roster: Roster,
        /// The key leader (the inviter).
        leader: DeviceId,
        /// The media the inviter will send.
        media_kinds: Vec<MediaKind>,
        /// When the invitation lapses.
        expires_at: UnixMillis,
    },
    /// The answer to an invitation.
    InviteReply {
        /// Accepted or rejected.
        accept: bool,
        /// The media the invitee will send.
        media_kinds: Vec<MediaKind>,
    },
    /// A new meeting key for a new roster.
    Rekey {
        /// The new key (its epoch is the message's).
        key: MeetingKey,
        /// The roster of the new epoch.
        roster: Roster,
        /// The key leader that made it.
        leader: DeviceId,
        /// Why.
        reason: RekeyReason,
    },
    /// Switch to `epoch` (the ratchet of the current key), with the devices it adds.
    EpochSwitch {
        /// The epoch.
        epoch: Epoch,
        /// The devices joining at that epoch.
        joined: Roster,
    },
    /// The sender leaves the meeting.
    Leave {
        /// The sender's sending epoch.
        epoch: Epoch,
    },
    /// The recipients are removed from the meeting.
    Remove {
        /// Users removed.
        users: Vec<UserId>,
        /// Devices removed.
        devices: Vec<DeviceId>,
    },
    /// The sender lacks the key of the epoch the room moved to.
    KeyRequest {
        /// The newest epoch the sender holds.
        held_epoch: Epoch,
        /// The epoch the room announced.
        room_epoch: Epoch,
    },
}

impl MeetingMessage {
    /// The epoch of the Rekey this message carries, if it is one.
    #[must_use]
    pub fn rekey_epoch(&self) -> Option<Epoch> {
        match &self.body {
            ControlMessage::Rekey { key, .. } => Some(key.epoch()),
            _ => None,
        }
    }

    /// Whether this is an invitation (sealed with the invitation's time to live).
    #[must_use]
    pub fn is_invite(&self) -> bool {
        matches!(self.body, ControlMessage::Invite { .. })
    }

    /// The container payload to seal. Its key bytes are zeroized when it is dropped.
    #[must_use]
    pub fn to_wire(&self) -> WirePayload {
        let meeting_id = self.meeting_id.as_bytes().to_vec();
        let body = match &self.body {
            ControlMessage::Invite {
                key,
                roster,
                leader,
                media_kinds,
                expires_at,
            } => Body::MeetingInvite(v1::MeetingInvite {
                meeting_id,
                epoch: key.epoch().get(),
                meeting_key: key.expose_secret().to_vec(),
                media_kinds: MediaKind::to_wire(media_kinds),
                roster: roster.to_proto(),
                key_leader_device_id: leader.as_bytes().to_vec(),
                expires_at_ms: expires_at.0,
                caller: None,
            }),
            ControlMessage::InviteReply {
                accept,
                media_kinds,
            } => {
                let decision = if *accept {
                    v1::invite_reply::Decision::Accept
                } else {
                    v1::invite_reply::Decision::Reject
                };
                Body::InviteReply(v1::InviteReply {
                    meeting_id,
                    decision: decision as i32,
                    media_kinds: MediaKind::to_wire(media_kinds),
                })
            }
            ControlMessage::Rekey {
                key,
                roster,
                leader,
                reason,
            } => Body::Rekey(v1::Rekey {
                meeting_id,
                epoch: key.epoch().get(),
                meeting_key: key.expose_secret().to_vec(),
                roster: roster.to_proto(),
                key_leader_device_id: leader.as_bytes().to_vec(),
                reason: *reason as i32,
            }),
            ControlMessage::EpochSwitch { epoch, joined } => Body::EpochSwitch(v1::EpochSwitch {
                meeting_id,
                epoch: epoch.get(),
                joined: joined.to_proto(),
            }),
            ControlMessage::Leave { epoch } => Body::Leave(v1::Leave {
                meeting_id,
                epoch: epoch.get(),
            }),
            ControlMessage::Remove { users, devices } => Body::Remove(v1::Remove {
                meeting_id,
                user_ids: users.iter().map(|u| u.as_bytes().to_vec()).collect(),
                device_ids: devices.iter().map(|d| d.as_bytes().to_vec()).collect(),
            }),
            ControlMessage::KeyRequest {
                held_epoch,
                room_epoch,
            } => Body::KeyRequest(v1::KeyRequest {
                meeting_id,
                held_epoch: held_epoch.get(),
                room_epoch: room_epoch.get(),
            }),
        };
        WirePayload(v1::ContainerPayload {
            body: Some(body),
            ..Default::default()
        })
    }

    fn kind(&self) -> &'static str {
        match self.body {
            ControlMessage::Invite { .. } => "Invite",
            ControlMessage::InviteReply { .. } => "InviteReply",
            ControlMessage::Rekey { .. } => "Rekey",
            ControlMessage::EpochSwitch { .. } => "EpochSwitch",
            ControlMessage::Leave { .. } => "Leave",
            ControlMessage::Remove { .. } => "Remove",
            ControlMessage::KeyRequest { .. } => "KeyRequest",
        }
    }
}

impl core::fmt::Debug for MeetingMessage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Keys are never printed; the kind and epoch say enough.
        f.debug_struct("MeetingMessage")
            .field("meeting_id", &self.meeting_id)
            .field("kind", &self.kind())
            .field("rekey_epoch", &self.rekey_epoch())
            .finish_non_exhaustive()
    }
}

/// A control message in its wire form, for sealing. The meeting key bytes it may
/// carry are zeroized when it is dropped.
pub struct WirePayload(v1::ContainerPayload);

impl core::ops::Deref for WirePayload {
    type Target = v1::ContainerPayload;

    fn deref(&self) -> &v1::ContainerPayload {
        &self.0
    }
}

impl WirePayload {
    /// Adds how the inviting user presents themself to an invite (no effect on other
    /// messages): it travels inside the sealed container, never seen by the server.
    #[must_use]
    pub fn with_caller(mut self, caller: Option<v1::CallerProfile>) -> Self {
        if let Some(Body::MeetingInvite(invite)) = &mut self.0.body {
            invite.caller = caller;
        }
        self
    }
}

impl Drop for WirePayload {
    fn drop(&mut self) {
        zeroize_payload_secrets(&mut self.0);
    }
}

impl core::fmt::Debug for WirePayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WirePayload")
            .field("kind", &crate::container::payload_kind(&self.0))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rekey() -> MeetingMessage {
        let key = MeetingKey::from_slice(Epoch(3), &[0xAB; 32]).expect("32 bytes");
        MeetingMessage {
            meeting_id: MeetingId::from_slice(&[7; 32]).expect("32 bytes"),
            body: ControlMessage::Rekey {
                key,
                roster: Roster::default(),
                leader: DeviceId::from_slice(&[1; 16]).expect("16 bytes"),
                reason: RekeyReason::Remove,
            },
        }
    }

    #[test]
    fn the_wire_form_carries_the_key_and_epoch() {
        let wire = rekey().to_wire();
        let Some(Body::Rekey(r)) = &wire.body else {
            panic!("not a Rekey");
        };
        assert_eq!(r.epoch, 3);
        assert_eq!(r.meeting_key, vec![0xAB; 32]);
        assert_eq!(r.reason, RekeyReason::Remove as i32);
    }

    #[test]
    fn dropping_the_wire_form_zeroizes_its_key_bytes() {
        let mut wire = rekey().to_wire();
        // What `Drop` runs, observed on a live value.
        zeroize_payload_secrets(&mut wire.0);
        let Some(Body::Rekey(r)) = &wire.body else {
            panic!("not a Rekey");
        };
        assert!(r.meeting_key.iter().all(|b| *b == 0));
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let message = rekey();
        for shown in [format!("{message:?}"), format!("{:?}", message.to_wire())] {
            assert!(!shown.contains("171"), "{shown}");
            assert!(!shown.to_lowercase().contains("ab, ab"), "{shown}");
            assert!(!shown.contains("meeting_key"), "{shown}");
        }
    }
}
