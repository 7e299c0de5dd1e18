//! When a meeting's safety-words round (review M4) starts and resends (sans-IO).
//!
//! The round of an epoch costs every device two signed room messages to every other
//! device: at 100 participants about 19,600 deliveries, half of them (the commitments)
//! an Ed25519 check. Started
//! the moment a device switches, that burst competed with the rekey itself (the
//! containers still being opened, the switch of the slower devices) for the same
//! cores and the same input queues. So the round of the sending epoch starts only once
//! that epoch has **settled**: [`SETTLE`] after this device entered it, restarted by a
//! newer epoch (a burst of rekeys runs one round, for the last epoch). Messages of
//! rounds that have not started here yet wait in [`EarlyRoundMessages`].
//!
//! Room messages are delivered reliably to the members in the room, so resends only
//! cover members that were not in the room yet (a member joining resends at once,
//! after [`JOIN_COALESCE`] so that a burst of joins costs one resend) and sends that
//! failed. Periodic resends back off: [`FIRST_RESEND`], then doubling, [`RESENDS`]
//! times (about 15 s, as before, with 4 resends instead of 15).

use std::time::{Duration, Instant};

use crate::meeting::Epoch;

/// How long the sending epoch must stay unchanged before its round starts: longer
/// than a 100-participant rekey takes under media load (all devices have switched
/// by then), short next to how long people take to read the words out.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);
/// The first periodic resend after the round starts; each later one waits twice as
/// long as the one before.
pub(crate) const FIRST_RESEND: Duration = Duration::from_secs(1);
/// Periodic resends per round (1 + 2 + 4 + 8 s: the last about 15 s after the start).
pub(crate) const RESENDS: u32 = 4;
/// A member joining the room triggers a resend this much later (joins in a burst
/// share it).
pub(crate) const JOIN_COALESCE: Duration = Duration::from_millis(100);

/// The round timers of one meeting.
///
/// Invariant: the periodic schedule only ever advances in [`Self::resend_due`], at most
/// [`RESENDS`] times per round, so its interval never exceeds `FIRST_RESEND × 2^RESENDS`
/// whatever the server says. Joins announced by the server (which it may invent or
/// replay) only ever set the one extra resend, never touch the periodic schedule.
#[derive(Debug, Default)]
pub(crate) struct SasTiming {
    /// The epoch whose round waits to start, and when it may.
    pending: Option<(Epoch, Instant)>,
    /// The next periodic resend of the running round: when, the interval after it, and
    /// the periodic resends left after it.
    resend: Option<Resend>,
    /// An extra resend brought on by members joining the room (one for a burst).
    extra: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Resend {
    at: Instant,
    /// Wait after `at` for the next periodic resend.
    then: Duration,
    /// Periodic resends left after this one (0: this is the last).
    left: u32,
}

impl SasTiming {
    /// The device's sending epoch is `epoch` at `now` and its round has not started:
    /// arm the settle timer (kept if already armed for `epoch`, restarted for another).
    pub(crate) fn epoch_entered(&mut self, epoch: Epoch, now: Instant) {
        if self.pending.is_some_and(|(e, _)| e == epoch) {
            return;
        }
        self.pending = Some((epoch, now + SETTLE));
        // The running round (an older epoch's) is superseded: no more resends of it.
        self.resend = None;
        self.extra = None;
    }

    /// The epoch whose round should start now, if its settle time is over.
    pub(crate) fn start_due(&mut self, now: Instant) -> Option<Epoch> {
        let (epoch, at) = self.pending?;
        if at > now {
            return None;
        }
        self.pending = None;
        self.resend = Some(Resend {
            at: now + FIRST_RESEND,
            then: FIRST_RESEND * 2,
            left: RESENDS.saturating_sub(1),
        });
        Some(epoch)
    }

    /// A member of the running round joined the room at `now`: resend soon, unless a
    /// resend is already due by then (a burst of joins shares one). The periodic
    /// schedule is left as it is: before, each join moved the next periodic resend
    /// forward and the resend then doubled its interval, so a stream of joins (members
    /// trickling in, or a server replaying `MemberJoined`) doubled it without bound
    /// until `Instant + Duration` overflowed and the client core panicked.
    pub(crate) fn member_joined(&mut self, now: Instant) {
        if self.pending.is_some() {
            // The round has not started: its start sends to everyone in the room.
            return;
        }
        let soon = now + JOIN_COALESCE;
        let covered = self.extra.is_some() || self.resend.is_some_and(|r| r.at <= soon);
        if !covered {
            self.extra = Some(soon);
        }
    }

    /// Whether a resend is due at `now` (if so, the timers that fired are consumed and
    /// the next periodic one is scheduled).
    pub(crate) fn resend_due(&mut self, now: Instant) -> bool {
        let extra = self.extra.is_some_and(|at| at <= now);
        if extra {
            self.extra = None;
        }
        let periodic = match self.resend {
            Some(r) if r.at <= now => {
                self.resend = (r.left > 0).then(|| Resend {
                    at: now + r.then,
                    then: r.then * 2,
                    left: r.left - 1,
                });
                true
            }
            _ => false,
        };
        extra || periodic
    }

    /// When a timer of this meeting fires next.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        [
            self.pending.map(|(_, at)| at),
            self.resend.map(|r| r.at),
            self.extra,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
#[path = "sas_timing_tests.rs"]
mod tests;
