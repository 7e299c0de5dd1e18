//! When to wake which device: the sans-IO core of push delivery.
//!
//! The server tells the [`Scheduler`] that a container was stored for a device that is
//! not connected here ([`Scheduler::stored`]) and that a device connected
//! ([`Scheduler::connected`]); the async layer polls [`Scheduler::poll_job`] for the
//! next wake-up to send, reports each attempt's [`Outcome`] and sleeps until
//! [`Scheduler::poll_timeout`]. Time is passed in; nothing here sleeps, spawns or
//! does IO, so every rule is tested in virtual time.
//!
//! Rules, per device:
//! * A wake-up goes out `delay` after the first container (so that a device that
//!   fetches it at once, here or on another node, is not woken) and at most once per
//!   interval: containers stored meanwhile are folded into the next wake-up. A flood of
//!   containers to one device costs its push endpoint one request per interval.
//! * The interval is `min_interval` after a wake-up the device answered by connecting,
//!   and doubles with each wake-up it did not answer, up to `max_interval`: a device
//!   that is off, or is being woken by junk it then ignores, costs less and less.
//! * Each wake-up is tried up to `max_attempts` times: a retryable answer (429, 5xx,
//!   no answer) waits `retry_base · 2^(attempt−1)`, at most `retry_max`, or the push
//!   service's `Retry-After` within the same bound. Containers that arrive meanwhile are
//!   folded into the retry, never into a fresh attempt, so a failing push service is
//!   never asked faster than the backoff allows.
//! * Due wake-ups a sender asked to be urgent go out before normal ones.
//! * A device that connects needs no wake-up: what was pending is forgotten.
//! * A push service that refuses a device's wake-ups for good three times in a row
//!   (a 4xx other than 404/410) makes the scheduler ask for its subscription to be
//!   dropped.
//! * State is kept for at most `max_tracked_devices` devices (pending wake-ups and the
//!   time of the last one, for the interval). Beyond that, new wake-ups are refused
//!   (and counted by the caller); records kept only for the interval are dropped once
//!   it has passed (looked for at most once a second).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::store::DeviceIdBytes;

/// The scheduler's settings (from [`crate::config::PushConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub(crate) delay: Duration,
    pub(crate) min_interval: Duration,
    pub(crate) max_interval: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) max_tracked_devices: usize,
}

/// One wake-up to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) device: DeviceIdBytes,
    /// Whether a sender asked for high urgency for any container folded into it.
    pub(crate) urgent: bool,
    /// The latest expiry of the containers folded into it (ms since the Unix epoch):
    /// the wake-up's TTL never outlives them.
    pub(crate) expires_at_ms: u64,
    /// 1 for the first attempt.
    pub(crate) attempt: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The push service took it (2xx).
    Sent,
    /// Nothing to send after all: the device has no subscription or nothing waiting.
    Skipped,
    /// Try again later (429, 5xx, timeout, connection failure); `retry_after` from the
    /// push service, if it said.
    Retry { retry_after: Option<Duration> },
    /// The subscription is gone (404, 410; already deleted) or the wake-up cannot be
    /// made (no longer allowed, bad keys): no more attempts.
    Failed,
    /// The push service refused the request for good (a 4xx other than 404/410).
    Rejected,
}

/// What [`Scheduler::stored`] did with a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Noted {
    /// A new wake-up is scheduled.
    Scheduled,
    /// Folded into a wake-up already pending or in flight.
    Folded,
    /// The scheduler tracks `max_tracked_devices` devices already.
    Refused,
}

/// What [`Scheduler::completed`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Concluded {
    /// Done (sent, skipped or failed for good).
    Done,
    /// Another attempt is scheduled.
    Retrying,
    /// Out of attempts: the wake-up is given up.
    GaveUp,
    /// Refused for good too often: delete the device's subscription.
    DropSubscription,
}

/// Refusals in a row (`Outcome::Rejected`) after which the subscription is dropped.
const MAX_REJECTIONS: u8 = 3;

#[derive(Debug, Clone, Copy)]
struct Pending {
    urgent: bool,
    expires_at_ms: u64,
    attempt: u32,
}

#[derive(Debug, Default)]
struct DeviceState {
    /// A wake-up waiting for its time (its key in `due`), or in flight.
    pending: Option<Pending>,
    /// The key of this device in its due queue, when queued.
    queued: Option<(Instant, u64)>,
    /// Which queue (`true`: urgent) and the key.
    queued_in: Option<(bool, (Instant, u64))>,
    in_flight: bool,
    /// The device connected while an attempt was in flight: no retry, no follow-up.
    cancelled: bool,
    /// Containers arrived while the wake-up was in flight: another one follows.
    again: Option<Pending>,
    /// When the last wake-up was accepted (or refused for good) by the push service.
    last_sent: Option<Instant>,
    /// Wake-ups sent since the device last connected (the interval doubles with each).
    unanswered: u32,
    /// Refusals for good in a row.
    rejections: u8,
}

impl DeviceState {
    /// The earliest time the next wake-up may go out, if any limits it.
    fn not_before(&self, rules: &Rules) -> Option<Instant> {
        let last = self.last_sent?;
        let doublings = self.unanswered.saturating_sub(1).min(16);
        let interval = rules
            .min_interval
            .saturating_mul(1u32 << doublings)
            .min(rules.max_interval.max(rules.min_interval));
        Some(last + interval)
    }

    /// Nothing pending and no interval to keep: the record can go.
    fn idle(&self, rules: &Rules, now: Instant) -> bool {
        self.pending.is_none()
            && !self.in_flight
            && self.again.is_none()
            && self.not_before(rules).is_none_or(|at| at <= now)
    }
}

/// Per-device wake-up state; see the module docs.
#[derive(Debug)]
pub(crate) struct Scheduler {
    rules: Rules,
    devices: HashMap<DeviceIdBytes, DeviceState>,
    /// Queued urgent wake-ups by due time (a sequence number breaks ties).
    due_urgent: BTreeMap<(Instant, u64), DeviceIdBytes>,
    /// Queued normal wake-ups by due time.
    due_normal: BTreeMap<(Instant, u64), DeviceIdBytes>,
    seq: u64,
    /// When idle records may next be looked for.
    next_forget: Option<Instant>,
}

impl Scheduler {
    pub(crate) fn new(rules: Rules) -> Self {
        Scheduler {
            rules,
            devices: HashMap::new(),
            due_urgent: BTreeMap::new(),
            due_normal: BTreeMap::new(),
            seq: 0,
            next_forget: None,
        }
    }

    /// Devices with state (pending, in flight or rate-limited).
    pub(crate) fn tracked(&self) -> usize {
        self.devices.len()
    }

    /// A container was stored for `device`, which is not connected to this node.
    pub(crate) fn stored(
        &mut self,
        device: DeviceIdBytes,
        urgent: bool,
        expires_at_ms: u64,
        now: Instant,
    ) -> Noted {
        if !self.devices.contains_key(&device) {
            self.forget_idle(now);
            if self.devices.len() >= self.rules.max_tracked_devices {
                return Noted::Refused;
            }
        }
        let fresh = Pending {
            urgent,
            expires_at_ms,
            attempt: 1,
        };
        let rules = self.rules;
        let state = self.devices.entry(device).or_default();
        if state.in_flight {
            state.again = Some(merge(state.again, fresh));
            return Noted::Folded;
        }
        if let Some(pending) = &mut state.pending {
            let was_urgent = pending.urgent;
            pending.urgent |= urgent;
            pending.expires_at_ms = pending.expires_at_ms.max(expires_at_ms);
            if urgent
                && !was_urgent
                && let Some((at, _)) = state.queued
            {
                // Now urgent: it moves to the urgent queue, at the same time.
                self.unqueue(&device);
                self.queue(device, at, true);
            }
            return Noted::Folded;
        }
        let earliest = now + rules.delay;
        let at = state
            .not_before(&rules)
            .map_or(earliest, |limit| earliest.max(limit));
        state.pending = Some(fresh);
        self.queue(device, at, urgent);
        Noted::Scheduled
    }

    /// `device` connected: it fetches its mailbox itself; nothing pending is sent (an
    /// attempt in flight finishes, but no retry or follow-up is made).
    pub(crate) fn connected(&mut self, device: &DeviceIdBytes, now: Instant) {
        let Some(state) = self.devices.get_mut(device) else {
            return;
        };
        state.again = None;
        state.unanswered = 0;
        let in_flight = state.in_flight;
        if in_flight {
            state.cancelled = true;
        } else {
            state.pending = None;
            self.unqueue(device);
        }
        let rules = self.rules;
        if self
            .devices
            .get(device)
            .is_some_and(|s| s.last_sent.is_none() && s.idle(&rules, now))
        {
            self.devices.remove(device);
        }
    }

    /// The next wake-up due at `now`, marked in flight until [`Scheduler::completed`].
    pub(crate) fn poll_job(&mut self, now: Instant) -> Option<Job> {
        let urgent_due = self
            .due_urgent
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= now);
        let queue = if urgent_due {
            &mut self.due_urgent
        } else {
            &mut self.due_normal
        };
        let (&key, _) = queue.first_key_value()?;
        if key.0 > now {
            return None;
        }
        let device = queue.remove(&key)?;
        let state = self.devices.get_mut(&device)?;
        state.queued = None;
        let pending = state.pending?;
        state.in_flight = true;
        state.cancelled = false;
        Some(Job {
            device,
            urgent: pending.urgent,
            expires_at_ms: pending.expires_at_ms,
            attempt: pending.attempt,
        })
    }

    /// When the next wake-up is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let first = |q: &BTreeMap<(Instant, u64), DeviceIdBytes>| {
            q.first_key_value().map(|((at, _), _)| *at)
        };
        match (first(&self.due_urgent), first(&self.due_normal)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The attempt for `device` ended with `outcome`.
    pub(crate) fn completed(
        &mut self,
        device: &DeviceIdBytes,
        outcome: Outcome,
        now: Instant,
    ) -> Concluded {
        let rules = self.rules;
        let Some(state) = self.devices.get_mut(device) else {
            return Concluded::Done;
        };
        state.in_flight = false;
        let current = state.pending.take();
        if std::mem::take(&mut state.cancelled) {
            // The device connected meanwhile: nothing follows, whatever the answer.
            state.again = None;
            if outcome == Outcome::Sent {
                state.last_sent = Some(now);
            }
            return self.settle(device, None, now, Concluded::Done);
        }
        let mut concluded = Concluded::Done;
        let mut next: Option<(Pending, Instant)> = None;
        match outcome {
            Outcome::Sent => {
                state.last_sent = Some(now);
                state.unanswered = state.unanswered.saturating_add(1);
                state.rejections = 0;
            }
            Outcome::Failed => state.last_sent = Some(now),
            Outcome::Rejected => {
                // Counts against the interval, so a refusing service is not asked again
                // at once.
                state.last_sent = Some(now);
                state.rejections = state.rejections.saturating_add(1);
                if state.rejections >= MAX_REJECTIONS {
                    state.rejections = 0;
                    concluded = Concluded::DropSubscription;
                }
            }
            Outcome::Skipped => {}
            Outcome::Retry { retry_after } => {
                if let Some(p) = current {
                    // Containers that came meanwhile ride on the retry: a failing
                    // service is never asked sooner than the backoff.
                    let mut retry = match state.again.take() {
                        Some(again) => merge(Some(p), again),
                        None => p,
                    };
                    if p.attempt < rules.max_attempts {
                        let backoff = rules
                            .retry_base
                            .saturating_mul(1u32 << (p.attempt - 1).min(20))
                            .min(rules.retry_max);
                        let wait =
                            retry_after.map_or(backoff, |r| r.clamp(backoff, rules.retry_max));
                        retry.attempt = p.attempt + 1;
                        next = Some((retry, now + wait));
                        concluded = Concluded::Retrying;
                    } else {
                        concluded = Concluded::GaveUp;
                        // Nothing more for now; new containers schedule a new wake-up
                        // after the interval (the failure counts against it).
                        state.last_sent = Some(now);
                    }
                }
            }
        }
        if next.is_none()
            && let Some(mut again) = state.again.take()
        {
            again.attempt = 1;
            let earliest = now + rules.delay;
            let at = state
                .not_before(&rules)
                .map_or(earliest, |limit| earliest.max(limit));
            next = Some((again, at));
        }
        self.settle(device, next, now, concluded)
    }

    /// Queues `next` for `device`, or drops its record if nothing needs it.
    fn settle(
        &mut self,
        device: &DeviceIdBytes,
        next: Option<(Pending, Instant)>,
        now: Instant,
        concluded: Concluded,
    ) -> Concluded {
        let rules = self.rules;
        match next {
            Some((pending, at)) => {
                let urgent = pending.urgent;
                if let Some(state) = self.devices.get_mut(device) {
                    state.pending = Some(pending);
                }
                self.queue(*device, at, urgent);
            }
            None => {
                if self
                    .devices
                    .get(device)
                    .is_some_and(|s| s.idle(&rules, now))
                {
                    self.devices.remove(device);
                }
            }
        }
        concluded
    }

    fn unqueue(&mut self, device: &DeviceIdBytes) {
        if let Some(state) = self.devices.get_mut(device)
            && let Some((urgent, key)) = state.queued_in.take()
        {
            state.queued = None;
            if urgent {
                self.due_urgent.remove(&key);
            } else {
                self.due_normal.remove(&key);
            }
        }
    }

    fn queue(&mut self, device: DeviceIdBytes, at: Instant, urgent: bool) {
        self.seq = self.seq.wrapping_add(1);
        let key = (at, self.seq);
        if urgent {
            self.due_urgent.insert(key, device);
        } else {
            self.due_normal.insert(key, device);
        }
        if let Some(state) = self.devices.get_mut(&device) {
            state.queued = Some(key);
            state.queued_in = Some((urgent, key));
        }
    }

    /// Drops records kept only for the interval once it has passed; at most once a
    /// second, and only at the bound (the scan is over every tracked device).
    fn forget_idle(&mut self, now: Instant) {
        if self.devices.len() < self.rules.max_tracked_devices
            || self.next_forget.is_some_and(|at| now < at)
        {
            return;
        }
        self.next_forget = Some(now + Duration::from_secs(1));
        let rules = self.rules;
        self.devices.retain(|_, s| !s.idle(&rules, now));
    }
}

fn merge(a: Option<Pending>, b: Pending) -> Pending {
    match a {
        None => b,
        Some(a) => Pending {
            urgent: a.urgent | b.urgent,
            expires_at_ms: a.expires_at_ms.max(b.expires_at_ms),
            attempt: 1,
        },
    }
}

#[cfg(test)]
mod tests;
