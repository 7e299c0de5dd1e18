//! Meeting messages on their way out: what waits for a connection, what is resent to
//! the devices it missed, and what a send's outcome means for a rekey (sans-IO).
//!
//! Every message keeps the roster members it was meant for, as pinned in the
//! meeting's roster when it was made. Before it goes out again (after a reconnect, or
//! as a resend) its recipients are cut down to the devices still on that meeting's
//! roster with the same pinned keys (review L6: a Rekey queued while disconnected must
//! not reach devices removed meanwhile). A message of a meeting that ended here (a
//! `Leave`) keeps all of them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::DeviceId;
use crate::meeting::rekey::{MeetingMessage, MeetingState, Roster, RosterMember};
use crate::meeting::{Epoch, MeetingId};

/// Meeting messages kept while disconnected, and resends scheduled, each at most.
pub(crate) const MAX_OUTBOX: usize = 1024;
/// A meeting message that missed recipients (their prekeys had run out, say, while
/// every invitee replied to the leader at once) is sent to them again this many times.
pub(crate) const RESEND_ATTEMPTS: u32 = 3;
/// Delay before the first resend, ms; doubled for each further one (250, 500, 1000:
/// time for the recipient to replenish its prekeys).
pub(crate) const RESEND_DELAY_MS: u64 = 250;
/// Longest wait before a resend that the directory's prekey rate limit asks for, ms.
pub(crate) const MAX_RESEND_WAIT_MS: u64 = 10_000;

/// A container to send. Its message's meeting keys zeroize when it is dropped; the wire
/// form exists only while it is sealed.
pub(crate) struct Outgoing {
    pub(crate) meeting: MeetingId,
    /// The recipient devices as pinned in the meeting's roster (the keys it may be
    /// sealed to), kept with the message so a `Leave` still goes out after the meeting
    /// ended here.
    pub(crate) recipients: Vec<RosterMember>,
    pub(crate) message: MeetingMessage,
    /// The epoch of the Rekey this message carries, if it is one.
    pub(crate) rekey_epoch: Option<Epoch>,
    /// Resends so far.
    pub(crate) attempt: u32,
}

impl Outgoing {
    /// A container for `recipients`, devices of the meeting's roster (others are
    /// dropped: nothing is ever sealed off the roster).
    pub(crate) fn new(
        state: &MeetingState,
        recipients: Vec<DeviceId>,
        message: MeetingMessage,
        rekey_epoch: Option<Epoch>,
    ) -> Self {
        let recipients = recipients
            .iter()
            .filter_map(|d| state.roster().get(d).cloned())
            .collect();
        Outgoing {
            meeting: *state.meeting_id(),
            recipients,
            message,
            rekey_epoch,
            attempt: 0,
        }
    }

    /// The same message for the `missed` recipients, as the next attempt.
    fn resend_to(&self, missed: &BTreeSet<DeviceId>) -> Self {
        Outgoing {
            meeting: self.meeting,
            recipients: self
                .recipients
                .iter()
                .filter(|m| missed.contains(&m.device_id))
                .cloned()
                .collect(),
            message: self.message.clone(),
            rekey_epoch: self.rekey_epoch,
            attempt: self.attempt.saturating_add(1),
        }
    }

    /// Keeps the recipients still on `roster` with the same pinned keys; `None` (the
    /// meeting ended here) keeps all of them.
    fn keep_roster_recipients(&mut self, roster: Option<&Roster>) {
        if let Some(roster) = roster {
            self.recipients
                .retain(|m| roster.get(&m.device_id) == Some(m));
        }
    }

    /// The devices it is for.
    pub(crate) fn devices(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.recipients.iter().map(|m| m.device_id)
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The message may carry a meeting key: never printed.
        f.debug_struct("Outgoing")
            .field("meeting", &self.meeting)
            .field("recipients", &self.recipients.len())
            .field("rekey_epoch", &self.rekey_epoch)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// What a send's outcome asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SendOutcome {
    /// The Rekey of this epoch counts as delivered: the meeting may switch.
    pub(crate) rekey_delivered: Option<Epoch>,
    /// Devices the Rekey can no longer reach (its resends are spent): the meeting
    /// drops them.
    pub(crate) dropped: Vec<DeviceId>,
    /// A resend of the message to the devices it missed was scheduled.
    pub(crate) resending: bool,
}

/// Messages waiting for a connection, and resends waiting for their time.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    waiting: Vec<Outgoing>,
    resends: Vec<(Instant, Outgoing)>,
}

impl Outbox {
    /// Keeps `out` until the connection is back. Returns `false` (and drops it) when
    /// [`MAX_OUTBOX`] messages already wait.
    pub(crate) fn wait_for_connection(&mut self, out: Outgoing) -> bool {
        if self.waiting.len() >= MAX_OUTBOX {
            return false;
        }
        self.waiting.push(out);
        true
    }

    /// `out` was sent at `now` and reached the devices in `reached` (the server
    /// delivered or stored it for them); the directory asked to wait `wait_ms` before
    /// fetching prekeys again. Schedules a resend to the devices it missed, with
    /// backoff, while attempts are left, and says what the outcome means for a Rekey.
    ///
    /// The first send that reaches anyone switches the meeting; late recipients follow
    /// when their resend arrives (the room has announced the epoch by then). A send
    /// that reached nobody (sealing or sending failed) does not switch: that would
    /// rotate the room to a key no member holds (review L7). It is resent, and only
    /// once the resends are spent are the unreachable devices dropped, and the meeting
    /// switched without them.
    pub(crate) fn sent(
        &mut self,
        out: &Outgoing,
        reached: &BTreeSet<DeviceId>,
        wait_ms: u64,
        now: Instant,
    ) -> SendOutcome {
        let missed: BTreeSet<DeviceId> = out.devices().filter(|d| !reached.contains(d)).collect();
        let reached_any = !reached.is_empty() || out.recipients.is_empty();
        let resending =
            !missed.is_empty() && out.attempt < RESEND_ATTEMPTS && self.resends.len() < MAX_OUTBOX;
        if resending {
            let delay = (RESEND_DELAY_MS << out.attempt).max(wait_ms.min(MAX_RESEND_WAIT_MS));
            tracing::debug!(
                missed = missed.len(),
                delay,
                "meeting message missed devices; resending"
            );
            self.resends
                .push((now + Duration::from_millis(delay), out.resend_to(&missed)));
        }
        let Some(epoch) = out.rekey_epoch else {
            return SendOutcome {
                resending,
                ..SendOutcome::default()
            };
        };
        SendOutcome {
            rekey_delivered: (reached_any || !resending).then_some(epoch),
            dropped: if resending {
                Vec::new()
            } else {
                missed.into_iter().collect()
            },
            resending,
        }
    }

    /// The messages that waited for the connection, each cut down to the devices still
    /// on its meeting's roster (`roster_of` gives it, `None` for a meeting that ended
    /// here).
    pub(crate) fn take_waiting<'a>(
        &mut self,
        roster_of: impl Fn(&MeetingId) -> Option<&'a Roster>,
    ) -> Vec<Outgoing> {
        let mut out = std::mem::take(&mut self.waiting);
        for o in &mut out {
            o.keep_roster_recipients(roster_of(&o.meeting));
        }
        out
    }

    /// The resends due at `now`, cut down like [`Self::take_waiting`]; resends left
    /// with no recipient and no Rekey to account for are dropped.
    pub(crate) fn take_due_resends<'a>(
        &mut self,
        now: Instant,
        roster_of: impl Fn(&MeetingId) -> Option<&'a Roster>,
    ) -> Vec<Outgoing> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.resends)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.resends = later;
        due.into_iter()
            .filter_map(|(_, mut o)| {
                o.keep_roster_recipients(roster_of(&o.meeting));
                (!o.recipients.is_empty() || o.rekey_epoch.is_some()).then_some(o)
            })
            .collect()
    }

    /// When the next resend is due.
    pub(crate) fn next_resend(&self) -> Option<Instant> {
        self.resends.iter().map(|(at, _)| *at).min()
    }

    /// Whether a resend is due at `now`.
    pub(crate) fn resend_due(&self, now: Instant) -> bool {
        self.resends.iter().any(|(at, _)| *at <= now)
    }
}

#[cfg(test)]
mod tests;
