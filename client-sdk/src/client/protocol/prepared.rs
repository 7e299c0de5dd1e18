//! The key leader's next Rekey, wrapped ahead of time (sans-IO).
//!
//! A Rekey's cost is its recipient entries: two P-384 agreements per device, plus a
//! directory round trip for their prekeys. None of that depends on who leaves, so the
//! key leader of a meeting does it while the meeting is steady
//! ([`PreparedSeal`](crate::container::PreparedSeal)), and the Rekey that follows a
//! departure only leaves the departed devices' entries out, encrypts and signs
//! (`docs/protocol.md` 4.0, "Prepared Rekeys"). This module decides *when* a meeting's preparation is
//! made, topped up or thrown away, and hands it to the Rekey; the engine fetches the
//! bundles and wraps.
//!
//! # Rules
//! * Only the key leader prepares, only while its meeting is [`Phase::Steady`], and
//!   only a while (`ClientConfig::prepare_rekeys_after`) after the epoch it checked
//!   last changed: the cores are left to the receivers of the Rekey or join that just
//!   happened, and a burst of joins is topped up once. Without that setting nothing
//!   is prepared.
//! * Each entry is for a roster member as pinned when it was wrapped. At a Rekey an
//!   entry is used only for the same member with the same pinned keys, and only while
//!   its certificate and prekey stay valid for [`EXPIRY_MARGIN_MS`] more; recipients
//!   without such an entry are wrapped then, as before.
//! * A preparation serves one Rekey ([`Preparations::take_for`] removes it) and is
//!   thrown away [`MAX_AGE_MS`] after it was made, so the key of a Rekey not sent yet
//!   does not sit in memory for long (a fresh one is made in its place).
//! * When this device stops being the leader, or the meeting ends here, its
//!   preparation is dropped (the keys zeroize).

use std::collections::BTreeMap;

use crate::container::PreparedSeal;
use crate::meeting::rekey::{MeetingState, Phase, RosterMember};
use crate::meeting::{Epoch, MeetingId};
use crate::{DeviceId, UnixMillis};

/// A preparation is made anew this long after it was made, ms.
pub(crate) const MAX_AGE_MS: u64 = 10 * 60_000;
/// An entry whose certificate or prekey expires within this long is not used (a
/// receiver must still find its prekey valid when the Rekey arrives), ms.
pub(crate) const EXPIRY_MARGIN_MS: u64 = 60_000;
/// After a preparation could not be made (no connection, a refused fetch), the next
/// attempt waits this long, ms.
pub(crate) const RETRY_AFTER_MS: u64 = 30_000;

/// Whether something valid until `until` (a certificate, a prekey, an entry) is still
/// valid [`EXPIRY_MARGIN_MS`] after `now`, as a Rekey's entry must be.
pub(crate) fn usable_through_margin(until: UnixMillis, now: UnixMillis) -> bool {
    until.0 > now.0.saturating_add(EXPIRY_MARGIN_MS)
}

/// A meeting's prepared Rekey entries and the roster members they were wrapped for.
pub(crate) struct PreparedRekey {
    pub(crate) seal: PreparedSeal,
    members: BTreeMap<DeviceId, RosterMember>,
}

impl PreparedRekey {
    /// `seal`, whose entries are for `members` as pinned now.
    pub(crate) fn new(seal: PreparedSeal, members: &[RosterMember]) -> Self {
        let mut prepared = PreparedRekey {
            seal,
            members: BTreeMap::new(),
        };
        prepared.wrapped_for(members);
        prepared
    }

    /// Entries were added to the seal for `members`.
    pub(crate) fn wrapped_for(&mut self, members: &[RosterMember]) {
        for m in members {
            if self.seal.has(&m.device_id) {
                self.members.insert(m.device_id, m.clone());
            }
        }
    }

    /// Whether it holds an entry usable at `now` for `member` (same pinned keys).
    fn serves(&self, member: &RosterMember, now: UnixMillis) -> bool {
        self.members.get(&member.device_id) == Some(member)
            && self.seal.devices().any(|(device, usable_until)| {
                device == member.device_id && usable_through_margin(usable_until, now)
            })
    }

    /// Drops the entries it cannot serve among `members` at `now`, and those of
    /// devices not among them.
    fn keep_serving(&mut self, members: &[RosterMember], now: UnixMillis) {
        let keep: Vec<DeviceId> = members
            .iter()
            .filter(|m| self.serves(m, now))
            .map(|m| m.device_id)
            .collect();
        self.seal.retain(|d| keep.contains(d));
        self.members.retain(|d, _| keep.contains(d));
    }

    /// Whether it is [`MAX_AGE_MS`] old at `now`: never used, made anew.
    fn aged(&self, now: UnixMillis) -> bool {
        self.seal.made_at().0.saturating_add(MAX_AGE_MS) <= now.0
    }

    /// When it must be looked at again: made anew at [`MAX_AGE_MS`], or topped up
    /// before an entry's expiry margin.
    fn refresh_at(&self) -> UnixMillis {
        let aged = self.seal.made_at().0.saturating_add(MAX_AGE_MS);
        let expiring = self
            .seal
            .devices()
            .map(|(_, until)| until.0.saturating_sub(EXPIRY_MARGIN_MS))
            .min()
            .unwrap_or(u64::MAX);
        UnixMillis(aged.min(expiring))
    }
}

impl std::fmt::Debug for PreparedRekey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRekey")
            .field("seal", &self.seal)
            .field("members", &self.members.len())
            .finish()
    }
}

/// What a meeting's preparation needs now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing to do.
    Nothing,
    /// Fetch prekeys for these members and make a new preparation for them.
    Make(Vec<RosterMember>),
    /// Fetch prekeys for these members and add them to the preparation.
    TopUp(Vec<RosterMember>),
}

#[derive(Debug, Default)]
struct Slot {
    ready: Option<PreparedRekey>,
    /// The sending epoch of the last check.
    checked: Option<Epoch>,
    /// When to check next.
    check_at: Option<UnixMillis>,
}

/// Every meeting's preparation (at most one per meeting this device leads).
#[derive(Debug, Default)]
pub(crate) struct Preparations {
    /// How long a meeting stays at an epoch before it is checked, ms; `None`: never.
    after_ms: Option<u64>,
    slots: BTreeMap<MeetingId, Slot>,
}

/// Whether this device prepares for `state` at all.
fn leads(state: &MeetingState) -> bool {
    state.is_leader() && !state.is_ended()
}

impl Preparations {
    /// Preparations made once a meeting stayed `after_ms` at an epoch (`None`: never).
    pub(crate) fn new(after_ms: Option<u64>) -> Self {
        Preparations {
            after_ms,
            slots: BTreeMap::new(),
        }
    }

    /// After meeting `state`'s outputs were carried out at `now`: forgets its
    /// preparation if this device no longer leads it; schedules a check once it is
    /// steady at an epoch not checked yet.
    pub(crate) fn observe(&mut self, state: &MeetingState, now: UnixMillis) {
        let id = *state.meeting_id();
        let Some(after_ms) = self.after_ms.filter(|_| leads(state)) else {
            self.slots.remove(&id);
            return;
        };
        let slot = self.slots.entry(id).or_default();
        if state.phase() == Phase::Steady && slot.checked != Some(state.sending_epoch()) {
            // A new epoch: checked `after_ms` from its first sight (or sooner, if a
            // refresh was due sooner anyway).
            let at = UnixMillis(now.0.saturating_add(after_ms));
            slot.check_at = Some(slot.check_at.map_or(at, |c| c.min(at)));
        }
    }

    /// Forgets meeting `id`'s preparation (it ended here).
    pub(crate) fn forget(&mut self, id: &MeetingId) {
        self.slots.remove(id);
    }

    /// How many devices meeting `id`'s preparation holds entries for.
    pub(crate) fn devices(&self, id: &MeetingId) -> usize {
        self.slots
            .get(id)
            .and_then(|s| s.ready.as_ref())
            .map_or(0, |r| r.members.len())
    }

    /// The earliest check due.
    pub(crate) fn next_at(&self) -> Option<UnixMillis> {
        self.slots.values().filter_map(|s| s.check_at).min()
    }

    /// The meetings whose check is due at `now`.
    pub(crate) fn due(&self, now: UnixMillis) -> Vec<MeetingId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.check_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Checks meeting `state`'s preparation at `now` and says what it needs: stale
    /// entries are dropped (a preparation past [`MAX_AGE_MS`] entirely), and members
    /// without a usable entry are to be fetched. Only for a steady meeting this device
    /// leads; anything else waits for [`Self::observe`].
    pub(crate) fn plan(&mut self, state: &MeetingState, now: UnixMillis) -> Plan {
        let id = *state.meeting_id();
        if self.after_ms.is_none() || !leads(state) {
            self.slots.remove(&id);
            return Plan::Nothing;
        }
        let slot = self.slots.entry(id).or_default();
        slot.check_at = None;
        if slot.ready.as_ref().is_some_and(|r| r.aged(now)) {
            slot.ready = None;
        }
        if state.phase() != Phase::Steady {
            return Plan::Nothing;
        }
        slot.checked = Some(state.sending_epoch());
        let members: Vec<RosterMember> = state
            .roster()
            .iter()
            .filter(|m| m.device_id != state.me())
            .cloned()
            .collect();
        if let Some(ready) = slot.ready.as_mut() {
            ready.keep_serving(&members, now);
        }
        let missing: Vec<RosterMember> = members
            .into_iter()
            .filter(|m| !slot.ready.as_ref().is_some_and(|r| r.serves(m, now)))
            .collect();
        if missing.is_empty() {
            slot.check_at = slot.ready.as_ref().map(PreparedRekey::refresh_at);
            return Plan::Nothing;
        }
        if slot.ready.is_some() {
            Plan::TopUp(missing)
        } else {
            Plan::Make(missing)
        }
    }

    /// The preparation of meeting `id`, to top up (only between [`Self::plan`] and
    /// [`Self::made`]).
    pub(crate) fn ready_mut(&mut self, id: &MeetingId) -> Option<&mut PreparedRekey> {
        self.slots.get_mut(id).and_then(|s| s.ready.as_mut())
    }

    /// The preparation planned for meeting `id` was made (or topped up, `prepared`
    /// `None`) at `now`; the directory asked to wait `wait_ms` before taking prekeys
    /// again. Schedules its refresh, never sooner than [`RETRY_AFTER_MS`] (nor than
    /// the directory's wait) from now: a device whose entries keep expiring at once
    /// cannot make the leader fetch and wrap in a loop.
    pub(crate) fn made(
        &mut self,
        id: &MeetingId,
        prepared: Option<PreparedRekey>,
        now: UnixMillis,
        wait_ms: u64,
    ) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if let Some(p) = prepared {
            slot.ready = Some(p);
        }
        let soonest = now.0.saturating_add(RETRY_AFTER_MS.max(wait_ms));
        slot.check_at = slot
            .ready
            .as_ref()
            .map(|r| UnixMillis(r.refresh_at().0.max(soonest)));
    }

    /// The preparation planned for meeting `id` could not be made at `now`: it is
    /// tried again after [`RETRY_AFTER_MS`].
    pub(crate) fn failed(&mut self, id: &MeetingId, now: UnixMillis) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.check_at = Some(UnixMillis(now.0.saturating_add(RETRY_AFTER_MS)));
        }
    }

    /// Takes meeting `id`'s preparation for a Rekey to `recipients` at `now`. Returns
    /// it with the recipients it serves, and the recipients it does not (to be
    /// fetched and added); every other entry is dropped from it, so those can be
    /// added afresh and nothing else can be named. `None` without a preparation, or
    /// with one [`MAX_AGE_MS`] old (dropped). It is gone afterwards either way: one
    /// preparation, one Rekey.
    pub(crate) fn take_for(
        &mut self,
        id: &MeetingId,
        recipients: &[RosterMember],
        now: UnixMillis,
    ) -> Option<(PreparedRekey, Vec<DeviceId>, Vec<RosterMember>)> {
        let mut ready = self.slots.get_mut(id)?.ready.take()?;
        if ready.aged(now) {
            return None;
        }
        let (served, missing): (Vec<&RosterMember>, Vec<&RosterMember>) =
            recipients.iter().partition(|m| ready.serves(m, now));
        let served: Vec<DeviceId> = served.into_iter().map(|m| m.device_id).collect();
        ready.seal.retain(|d| served.contains(d));
        ready.members.retain(|d, _| served.contains(d));
        Some((ready, served, missing.into_iter().cloned().collect()))
    }

    /// The connection is gone: every preparation is dropped (its keys zeroize), and
    /// each meeting is checked again once it is steady after the reconnect. A leader
    /// offline for long must not seal with a preparation made long before.
    pub(crate) fn connection_lost(&mut self) {
        for slot in self.slots.values_mut() {
            *slot = Slot::default();
        }
    }
}

#[cfg(test)]
#[path = "prepared_tests.rs"]
mod tests;
