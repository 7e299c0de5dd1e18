//! The roster: every participating device with its sender index, its user's identity
//! key and its certificate.
//!
//! Every entry carries the device's certificate, signed by the user's identity key, so
//! the binding "this device belongs to this user" is proven by the user, not asserted
//! by whoever wrote the roster. A roster received from the network is accepted only
//! if every new entry's certificate verifies under the entry's identity key and names
//! the entry's user and device; the caller then checks each identity key against the
//! key it pinned for that user. The certificate also pins the device's keys for the
//! meeting: meeting keys are sealed only to those keys.

use std::collections::{BTreeMap, BTreeSet};

use conclave_proto::limits::MAX_ROSTER_ENTRIES;
use conclave_proto::v1;

use super::RekeyError;
use crate::identity::{IdentityError, UserIdentity, UserPublicKey, VerifiedDevice};
use crate::{DeviceId, UnixMillis, UserId};

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
    /// The device's certificate, verified under `identity_key`: the device keys this
    /// meeting seals to.
    pub device: VerifiedDevice,
}

impl RosterMember {
    /// `device` (verified under `user`'s key) with its sender index.
    #[must_use]
    pub fn new(user: &UserIdentity, device: VerifiedDevice, sender_index: u32) -> Self {
        RosterMember {
            user_id: device.user_id(),
            device_id: device.device_id(),
            sender_index,
            identity_key: user.key.to_bytes(),
            device,
        }
    }

    fn to_proto(&self) -> v1::RosterEntry {
        v1::RosterEntry {
            user_id: self.user_id.as_bytes().to_vec(),
            device_id: self.device_id.as_bytes().to_vec(),
            sender_index: self.sender_index,
            identity_key: self.identity_key.to_vec(),
            certificate: Some(self.device.certificate().clone()),
        }
    }

    /// Parses and verifies one entry: the certificate must verify under the entry's
    /// identity key at `now` and name the entry's user and device.
    fn from_proto(e: &v1::RosterEntry, now: UnixMillis) -> Result<Self, RekeyError> {
        let user_id = UserId::from_slice(&e.user_id)
            .ok_or(RekeyError::BadRoster("user id is not 32 bytes"))?;
        let device_id = DeviceId::from_slice(&e.device_id)
            .ok_or(RekeyError::BadRoster("device id is not 16 bytes"))?;
        let identity_key: [u8; 32] = e
            .identity_key
            .as_slice()
            .try_into()
            .map_err(|_| RekeyError::BadRoster("identity key is not 32 bytes"))?;
        let key = UserPublicKey::from_bytes(&identity_key)
            .map_err(|_| RekeyError::BadRoster("identity key is not an Ed25519 key"))?;
        let certificate = e.certificate.as_ref().ok_or(RekeyError::BadRoster(
            "an entry carries no device certificate",
        ))?;
        let device = VerifiedDevice::verify(certificate, &UserIdentity { user_id, key }, now)
            .map_err(|e| match e {
                IdentityError::Expired { .. } | IdentityError::NotYetValid { .. } => {
                    RekeyError::BadRoster("a device certificate is outside its validity period")
                }
                _ => RekeyError::BadRoster(
                    "a device certificate does not verify under its user's identity key",
                ),
            })?;
        if device.device_id() != device_id {
            return Err(RekeyError::BadRoster(
                "an entry's certificate names another device",
            ));
        }
        Ok(RosterMember {
            user_id,
            device_id,
            sender_index: e.sender_index,
            identity_key,
            device,
        })
    }
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
            if m.device.user_id() != m.user_id || m.device.device_id() != m.device_id {
                return Err(RekeyError::BadRoster(
                    "a member's certificate names another user or device",
                ));
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

    /// Parses a roster from its protobuf entries. An entry identical to a member of
    /// `known` (same certificate bytes and fields) is taken as already verified; every
    /// other entry's certificate must verify under its identity key at `now` and name
    /// its user and device. (Checking identity keys against pinned keys is the
    /// caller's part: see [`Roster::identity_keys`].)
    pub fn from_proto(
        entries: &[v1::RosterEntry],
        known: &Roster,
        now: UnixMillis,
    ) -> Result<Self, RekeyError> {
        if entries.len() > MAX_ROSTER_ENTRIES {
            return Err(RekeyError::BadRoster("too many roster entries"));
        }
        let members = entries
            .iter()
            .map(|e| {
                let same = DeviceId::from_slice(&e.device_id)
                    .and_then(|d| known.get(&d))
                    .filter(|m| m.to_proto() == *e);
                match same {
                    Some(m) => Ok(m.clone()),
                    None => RosterMember::from_proto(e, now),
                }
            })
            .collect::<Result<Vec<_>, RekeyError>>()?;
        Roster::new(members)
    }

    /// The protobuf entries.
    #[must_use]
    pub fn to_proto(&self) -> Vec<v1::RosterEntry> {
        self.members.values().map(RosterMember::to_proto).collect()
    }

    /// Each user of the roster with the identity key its entries claim (a user whose
    /// entries claim different keys appears once per key, which no pinned key matches).
    #[must_use]
    pub fn identity_keys(&self) -> BTreeSet<(UserId, [u8; 32])> {
        self.members
            .values()
            .map(|m| (m.user_id, m.identity_key))
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
