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
//!   `min_interval`: containers stored meanwhile are folded into the next wake-up. A
//!   flood of containers to one device costs its push endpoint one request per
//!   interval.
//! * Each wake-up is tried up to `max_attempts` times: a retryable answer (429, 5xx,
//!   no answer) waits `retry_base · 2^(attempt−1)`, at most `retry_max`, or the push
//!   service's `Retry-After` within the same bound.
//! * A device that connects needs no wake-up: what was pending is forgotten.
//! * State is kept for at most `max_tracked_devices` devices (pending wake-ups and the
//!   time of the last one, for the rate limit). Beyond that, new wake-ups are refused
//!   (and counted by the caller), and records only kept for the rate limit are dropped
//!   once their interval has passed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::store::DeviceIdBytes;

/// The scheduler's settings (from [`crate::config::PushConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub(crate) delay: Duration,
    pub(crate) min_interval: Duration,
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
    /// The subscription is gone (404, 410) or the request was refused for good (other
    /// 4xx): no more attempts.
    Failed,
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
}

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
    /// The key of this device in `due`, when queued.
    queued: Option<(Instant, u64)>,
    in_flight: bool,
    /// The device connected while an attempt was in flight: no retry, no follow-up.
    cancelled: bool,
    /// Containers arrived while the wake-up was in flight: another one follows.
    again: Option<Pending>,
    /// When the last wake-up was accepted by the push service.
    last_sent: Option<Instant>,
}

/// Per-device wake-up state; see the module docs.
#[derive(Debug)]
pub(crate) struct Scheduler {
    rules: Rules,
    devices: HashMap<DeviceIdBytes, DeviceState>,
    /// Queued wake-ups by due time (a sequence number breaks ties).
    due: BTreeMap<(Instant, u64), DeviceIdBytes>,
    seq: u64,
}

impl Scheduler {
    pub(crate) fn new(rules: Rules) -> Self {
        Scheduler {
            rules,
            devices: HashMap::new(),
            due: BTreeMap::new(),
            seq: 0,
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
        let state = self.devices.entry(device).or_default();
        if state.in_flight {
            state.again = Some(merge(state.again, fresh));
            return Noted::Folded;
        }
        if let Some(pending) = &mut state.pending {
            pending.urgent |= urgent;
            pending.expires_at_ms = pending.expires_at_ms.max(expires_at_ms);
            return Noted::Folded;
        }
        let earliest = now + self.rules.delay;
        let at = match state.last_sent {
            Some(last) => earliest.max(last + self.rules.min_interval),
            None => earliest,
        };
        state.pending = Some(fresh);
        self.queue(device, at);
        Noted::Scheduled
    }

    /// `device` connected: it fetches its mailbox itself; nothing pending is sent (an
    /// attempt in flight finishes, but no retry or follow-up is made).
    pub(crate) fn connected(&mut self, device: &DeviceIdBytes) {
        let Some(state) = self.devices.get_mut(device) else {
            return;
        };
        state.again = None;
        if state.in_flight {
            state.cancelled = true;
        } else {
            state.pending = None;
            if let Some(key) = state.queued.take() {
                self.due.remove(&key);
            }
        }
        if state.last_sent.is_none() && !state.in_flight {
            self.devices.remove(device);
        }
    }

    /// The next wake-up due at `now`, marked in flight until [`Scheduler::completed`].
    pub(crate) fn poll_job(&mut self, now: Instant) -> Option<Job> {
        let (&key, _) = self.due.first_key_value()?;
        if key.0 > now {
            return None;
        }
        let device = self.due.remove(&key)?;
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
        self.due.first_key_value().map(|((at, _), _)| *at)
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
        let outcome = match outcome {
            Outcome::Retry { .. } if std::mem::take(&mut state.cancelled) => Outcome::Skipped,
            other => {
                state.cancelled = false;
                other
            }
        };
        let mut concluded = Concluded::Done;
        let mut next: Option<(Pending, Instant)> = None;
        match outcome {
            Outcome::Sent => state.last_sent = Some(now),
            // A request refused for good still counts against the rate limit, so that a
            // misbehaving endpoint is not asked again at once.
            Outcome::Failed => state.last_sent = Some(now),
            Outcome::Skipped => {}
            Outcome::Retry { retry_after } => match current {
                Some(p) if p.attempt < rules.max_attempts && state.again.is_none() => {
                    let backoff = rules
                        .retry_base
                        .saturating_mul(1u32 << (p.attempt - 1).min(20))
                        .min(rules.retry_max);
                    let wait = retry_after.map_or(backoff, |r| r.clamp(backoff, rules.retry_max));
                    let retry = Pending {
                        attempt: p.attempt + 1,
                        ..p
                    };
                    next = Some((retry, now + wait));
                    concluded = Concluded::Retrying;
                }
                Some(p) if state.again.is_some() => {
                    // Containers came meanwhile: their wake-up carries this one's too.
                    state.again = Some(merge(state.again, p));
                }
                _ => concluded = Concluded::GaveUp,
            },
        }
        if next.is_none()
            && let Some(again) = state.again.take()
        {
            let at = match state.last_sent {
                Some(last) => (now + rules.delay).max(last + rules.min_interval),
                None => now + rules.delay,
            };
            next = Some((again, at));
        }
        match next {
            Some((pending, at)) => {
                state.pending = Some(pending);
                self.queue(*device, at);
            }
            None if state.last_sent.is_none() => {
                self.devices.remove(device);
            }
            None => {}
        }
        concluded
    }

    fn queue(&mut self, device: DeviceIdBytes, at: Instant) {
        self.seq = self.seq.wrapping_add(1);
        let key = (at, self.seq);
        self.due.insert(key, device);
        if let Some(state) = self.devices.get_mut(&device) {
            state.queued = Some(key);
        }
    }

    /// Drops records kept only for the rate limit whose interval has passed.
    fn forget_idle(&mut self, now: Instant) {
        if self.devices.len() < self.rules.max_tracked_devices {
            return;
        }
        let interval = self.rules.min_interval;
        self.devices.retain(|_, s| {
            s.pending.is_some()
                || s.in_flight
                || s.again.is_some()
                || s.last_sent.is_some_and(|last| last + interval > now)
        });
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
