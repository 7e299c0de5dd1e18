//! The roster: every participating device with its sender index and identity key.

use std::collections::{BTreeMap, BTreeSet};

use conclave_proto::limits::MAX_ROSTER_ENTRIES;
use conclave_proto::v1;

use super::RekeyError;
use crate::{DeviceId, UserId};

/// One participating device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterMember {
    /// Its user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// SFrame sender index, unique within the meeting.
    pub sender_index: u32,
    /// The user's identity (signing) public key, for safety codes.
    pub identity_key: [u8; 32],
}

/// The devices of a meeting, ordered by device id. Device ids and sender indices are
/// unique; at most `MAX_ROSTER_ENTRIES` devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    members: BTreeMap<DeviceId, RosterMember>,
}

impl Roster {
    /// Builds a roster, refusing duplicate devices or sender indices.
    pub fn new(members: impl IntoIterator<Item = RosterMember>) -> Result<Self, RekeyError> {
        let mut out = BTreeMap::new();
        let mut indices = BTreeSet::new();
        for m in members {
            if out.len() >= MAX_ROSTER_ENTRIES {
                return Err(RekeyError::BadRoster("too many roster entries"));
            }
            if !indices.insert(m.sender_index) {
                return Err(RekeyError::BadRoster("duplicate sender index"));
            }
            if out.insert(m.device_id, m).is_some() {
                return Err(RekeyError::BadRoster("duplicate device"));
            }
        }
        Ok(Roster { members: out })
    }

    /// Parses a roster from its protobuf entries.
    pub fn from_proto(entries: &[v1::RosterEntry]) -> Result<Self, RekeyError> {
        if entries.len() > MAX_ROSTER_ENTRIES {
            return Err(RekeyError::BadRoster("too many roster entries"));
        }
        let members = entries
            .iter()
            .map(|e| {
                Ok(RosterMember {
                    user_id: UserId::from_slice(&e.user_id)
                        .ok_or(RekeyError::BadRoster("user id is not 32 bytes"))?,
                    device_id: DeviceId::from_slice(&e.device_id)
                        .ok_or(RekeyError::BadRoster("device id is not 16 bytes"))?,
                    sender_index: e.sender_index,
                    identity_key: e
                        .identity_key
                        .as_slice()
                        .try_into()
                        .map_err(|_| RekeyError::BadRoster("identity key is not 32 bytes"))?,
                })
            })
            .collect::<Result<Vec<_>, RekeyError>>()?;
        Roster::new(members)
    }

    /// The protobuf entries.
    #[must_use]
    pub fn to_proto(&self) -> Vec<v1::RosterEntry> {
        self.members
            .values()
            .map(|m| v1::RosterEntry {
                user_id: m.user_id.as_bytes().to_vec(),
                device_id: m.device_id.as_bytes().to_vec(),
                sender_index: m.sender_index,
                identity_key: m.identity_key.to_vec(),
            })
            .collect()
    }

    /// Whether `device` participates.
    #[must_use]
    pub fn contains(&self, device: &DeviceId) -> bool {
        self.members.contains_key(device)
    }

    /// A participating device.
    #[must_use]
    pub fn get(&self, device: &DeviceId) -> Option<&RosterMember> {
        self.members.get(device)
    }

    /// Number of devices.
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the roster is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member, by device id.
    pub fn iter(&self) -> impl Iterator<Item = &RosterMember> {
        self.members.values()
    }

    /// Every device but `except`.
    #[must_use]
    pub fn devices_except(&self, except: &DeviceId) -> Vec<DeviceId> {
        self.members
            .keys()
            .filter(|d| *d != except)
            .copied()
            .collect()
    }

    /// Every device of these users.
    #[must_use]
    pub fn devices_of_users(&self, users: &[UserId]) -> Vec<DeviceId> {
        self.members
            .values()
            .filter(|m| users.contains(&m.user_id))
            .map(|m| m.device_id)
            .collect()
    }

    /// This roster without `devices`.
    #[must_use]
    pub fn without(&self, devices: &[DeviceId]) -> Roster {
        Roster {
            members: self
                .members
                .iter()
                .filter(|(d, _)| !devices.contains(d))
                .map(|(d, m)| (*d, m.clone()))
                .collect(),
        }
    }

    /// The device with the lowest sender index (the next key leader).
    #[must_use]
    pub fn lowest_sender(&self) -> Option<DeviceId> {
        self.members
            .values()
            .min_by_key(|m| m.sender_index)
            .map(|m| m.device_id)
    }

    /// A sender index no member has used (one above the highest).
    #[must_use]
    pub fn next_sender_index(&self) -> u32 {
        self.members
            .values()
            .map(|m| m.sender_index.saturating_add(1))
            .max()
            .unwrap_or(0)
    }

    /// Whether every member here is a member of `other` with the same details.
    #[must_use]
    pub fn is_subset_of(&self, other: &Roster) -> bool {
        self.members
            .iter()
            .all(|(d, m)| other.members.get(d) == Some(m))
    }
}
