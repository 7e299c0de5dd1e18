//! Invitations this device has not answered yet (sans-IO).
//!
//! Each holds a meeting key, so they are bounded, per inviting user and in all, and
//! dropped when they expire (review L8): a user cannot fill this device's memory with
//! invitations, and keys of never-answered meetings do not stay. An invitation's
//! meeting state follows the rekeys that arrive meanwhile, so accepting joins the
//! current epoch.

use std::collections::HashMap;

use crate::client::Invitation;
use crate::identity::UserIdentity;
use crate::meeting::MeetingId;
use crate::meeting::rekey::MeetingState;
use crate::{UnixMillis, UserId};

/// Unanswered invitations held at once.
pub(crate) const MAX_PENDING_INVITATIONS: usize = 64;
/// Unanswered invitations held from one inviting user.
pub(crate) const MAX_PENDING_INVITATIONS_PER_USER: usize = 4;
/// The longest an invitation is held, whatever ring deadline its sender chose, ms:
/// the longest ring this SDK sets ([`MAX_RING_TIMEOUT`](crate::client::MAX_RING_TIMEOUT))
/// and a minute for delivery. A modified client cannot make a device ring, and hold
/// one of its bounded invitation slots, for longer.
pub(crate) const MAX_INVITATION_HOLD_MS: u64 =
    crate::client::MAX_RING_TIMEOUT.as_secs() * 1_000 + 60_000;

/// An invitation not answered yet.
pub(crate) struct PendingInvite {
    pub(crate) state: MeetingState,
    /// The invitation's expiry, at most [`MAX_INVITATION_HOLD_MS`] after it arrived.
    pub(crate) expires_at: UnixMillis,
    /// The inviting user.
    pub(crate) from: UserId,
    /// What the app was told: it hears of it again as a missed call if it lapses.
    pub(crate) invitation: Invitation,
    /// Roster users this device had not pinned, as the directory named them when the
    /// invitation arrived (the roster's keys matched): pinned only if it is accepted,
    /// so an invitation that is refused or lapses leaves the trust store as it was.
    pub(crate) unpinned: Vec<UserIdentity>,
}

/// Why an invitation is not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvitationRefused {
    /// The inviting user already has the most unanswered invitations here.
    #[error("this user already has {0} unanswered invitations here; answer or let them expire")]
    TooManyFromUser(usize),
    /// This device holds the most unanswered invitations in all.
    #[error("{0} unanswered invitations are pending; answer or let them expire")]
    TooMany(usize),
}

/// The unanswered invitations.
#[derive(Default)]
pub(crate) struct Invitations {
    pending: HashMap<MeetingId, PendingInvite>,
}

impl Invitations {
    /// Whether an invitation to `meeting` is held.
    pub(crate) fn contains(&self, meeting: &MeetingId) -> bool {
        self.pending.contains_key(meeting)
    }

    /// Whether one more invitation from `inviter` may be held (call after
    /// [`Self::purge`]).
    pub(crate) fn admit(&self, inviter: &UserId) -> Result<(), InvitationRefused> {
        let from_inviter = self.pending.values().filter(|p| p.from == *inviter).count();
        if from_inviter >= MAX_PENDING_INVITATIONS_PER_USER {
            return Err(InvitationRefused::TooManyFromUser(from_inviter));
        }
        if self.pending.len() >= MAX_PENDING_INVITATIONS {
            return Err(InvitationRefused::TooMany(self.pending.len()));
        }
        Ok(())
    }

    /// Holds `invitation` from `from`, received at `now`; it is dropped when it stops
    /// ringing (its `expires_at`) or [`MAX_INVITATION_HOLD_MS`] after `now`, whichever
    /// comes first.
    pub(crate) fn insert(
        &mut self,
        state: MeetingState,
        from: UserId,
        invitation: Invitation,
        unpinned: Vec<UserIdentity>,
        now: UnixMillis,
    ) {
        let expires_at = UnixMillis(
            invitation
                .expires_at
                .0
                .min(now.0.saturating_add(MAX_INVITATION_HOLD_MS)),
        );
        self.pending.insert(
            *state.meeting_id(),
            PendingInvite {
                state,
                expires_at,
                from,
                invitation,
                unpinned,
            },
        );
    }

    /// Takes the invitation to `meeting` (to answer it).
    pub(crate) fn remove(&mut self, meeting: &MeetingId) -> Option<PendingInvite> {
        self.pending.remove(meeting)
    }

    /// The invitation to `meeting`.
    pub(crate) fn get(&self, meeting: &MeetingId) -> Option<&PendingInvite> {
        self.pending.get(meeting)
    }

    /// The invitation to `meeting`, to follow its rekeys.
    pub(crate) fn get_mut(&mut self, meeting: &MeetingId) -> Option<&mut PendingInvite> {
        self.pending.get_mut(meeting)
    }

    /// Drops the invitations that stopped ringing by `now` (their meeting keys with
    /// them) and returns them: missed calls.
    pub(crate) fn purge(&mut self, now: UnixMillis) -> Vec<Invitation> {
        let expired: Vec<MeetingId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        expired
            .iter()
            .filter_map(|id| self.pending.remove(id))
            .map(|p| p.invitation)
            .collect()
    }

    /// When the next invitation expires.
    pub(crate) fn next_expiry(&self) -> Option<UnixMillis> {
        self.pending.values().map(|p| p.expires_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;
    use crate::client::Participant;
    use crate::client::protocol::fixtures::{meeting_id, started, user};

    const NOW: UnixMillis = UnixMillis(1_000_000);

    fn invitation(n: u8, expires_at: UnixMillis) -> Invitation {
        let from = Participant {
            user_id: user(1),
            device_id: DeviceId::from_bytes([1; 16]),
            sender_index: 0,
            is_leader: true,
            is_me: false,
        };
        Invitation {
            meeting_id: meeting_id(n),
            from,
            media_kinds: Vec::new(),
            participants: Vec::new(),
            expires_at,
            caller: None,
        }
    }

    fn ids(list: &[Invitation]) -> Vec<MeetingId> {
        list.iter().map(|i| i.meeting_id).collect()
    }

    #[test]
    fn invitations_are_bounded_per_inviting_user() {
        let mut invitations = Invitations::default();
        for n in 0..MAX_PENDING_INVITATIONS_PER_USER {
            assert_eq!(invitations.admit(&user(1)), Ok(()));
            let id = meeting_id(u8::try_from(n).unwrap());
            invitations.insert(
                started(id),
                user(1),
                invitation(0, UnixMillis(u64::MAX)),
                Vec::new(),
                NOW,
            );
        }
        assert_eq!(
            invitations.admit(&user(1)),
            Err(InvitationRefused::TooManyFromUser(
                MAX_PENDING_INVITATIONS_PER_USER
            ))
        );
        assert_eq!(invitations.admit(&user(2)), Ok(()), "other users still may");
    }

    #[test]
    fn invitations_are_bounded_in_all() {
        let mut invitations = Invitations::default();
        for n in 0..MAX_PENDING_INVITATIONS {
            let n = u8::try_from(n).unwrap();
            let from = user(n / 4);
            assert_eq!(invitations.admit(&from), Ok(()));
            let lapses = invitation(n, UnixMillis(u64::MAX));
            invitations.insert(started(meeting_id(n)), from, lapses, Vec::new(), NOW);
        }
        assert_eq!(
            invitations.admit(&user(200)),
            Err(InvitationRefused::TooMany(MAX_PENDING_INVITATIONS))
        );
    }

    #[test]
    fn invitations_expire_at_their_deadline_or_after_the_longest_ring_at_most() {
        let mut invitations = Invitations::default();
        let soon = UnixMillis(NOW.0 + 60_000);
        invitations.insert(
            started(meeting_id(1)),
            user(1),
            invitation(1, soon),
            Vec::new(),
            NOW,
        );
        let never = invitation(2, UnixMillis(u64::MAX));
        invitations.insert(started(meeting_id(2)), user(1), never, Vec::new(), NOW);
        assert_eq!(invitations.next_expiry(), Some(soon));
        assert!(invitations.purge(UnixMillis(soon.0 - 1)).is_empty());
        assert_eq!(ids(&invitations.purge(soon)), vec![meeting_id(1)]);
        let cap = UnixMillis(NOW.0 + MAX_INVITATION_HOLD_MS);
        assert_eq!(invitations.next_expiry(), Some(cap));
        assert_eq!(ids(&invitations.purge(cap)), vec![meeting_id(2)]);
        assert!(!invitations.contains(&meeting_id(2)));
    }
}
