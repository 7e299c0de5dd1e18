//! [`LeaseKeeper`]: when a node renews its lease, and until when it may act as the
//! owner of its rooms. Sans-IO: time comes in as `now`, the heartbeat is done by the
//! caller, outcomes are polled.
//!
//! # The safety argument
//! The store sets a node's expiry to *its own clock at the moment it executes the
//! heartbeat* plus the lease. That moment is after the node sent the heartbeat, so in
//! real time the store's expiry is at least `sent_at + lease`. The keeper counts its
//! local deadline from `sent_at`, shortened by a safety margin for clock-rate drift and
//! scheduling delay: `deadline = sent_at + lease - margin`. A node therefore stops
//! accepting joins and rotations ([`LeaseKeeper::may_accept`]) strictly before any
//! other node can claim its rooms, as long as its clock does not run slower than the
//! store's by more than the margin over one lease. At the deadline it reports
//! [`LeaseEvent::Lost`]: the caller tells its clients to move and stops forwarding.
//!
//! # Run loop
//! ```
//! use std::time::{Duration, Instant};
//! use conclave_sfu::cluster::{LeaseConfig, LeaseEvent, LeaseKeeper};
//!
//! let start = Instant::now();
//! let mut keeper = LeaseKeeper::new(LeaseConfig::default(), start);
//! // Due at once: the first heartbeat.
//! let mut now = start;
//! let sent = keeper.start_renewal(now).expect("a renewal is due");
//! // ... the caller runs the heartbeat against the store, then:
//! now += Duration::from_millis(20);
//! keeper.renewal_succeeded(sent, now);
//! assert_eq!(keeper.poll_event(), Some(LeaseEvent::Acquired));
//! assert!(keeper.may_accept(now));
//! // Later: sleep until `keeper.poll_timeout()`, call `handle_timeout`, and start the
//! // next renewal when `start_renewal` gives a ticket.
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long the store keeps a lease after a heartbeat.
    pub lease: Duration,
    /// How often to renew while the store answers.
    pub renew_every: Duration,
    /// How soon to retry a failed renewal.
    pub retry_every: Duration,
    /// Taken off the local deadline (drift, scheduling delay).
    pub margin: Duration,
}

impl Default for LeaseConfig {
    /// The `[cluster]` defaults: a 2.5 s lease renewed every 500 ms (retried every
    /// 125 ms), with a 250 ms margin. A store blip of up to about 1.75 s interrupts
    /// nothing, and a dead node's rooms can be claimed within 2.5 s.
    fn default() -> Self {
        LeaseConfig {
            lease: Duration::from_millis(2_500),
            renew_every: Duration::from_millis(500),
            retry_every: Duration::from_millis(125),
            margin: Duration::from_millis(250),
        }
    }
}

/// When a renewal was sent; hand it back with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalTicket {
    sent_at: Instant,
}

/// What the caller must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// The node holds a lease (first heartbeat, or again after losing it): it may claim
    /// rooms.
    Acquired,
    /// The local deadline passed without a renewal: stop accepting joins and rotations
    /// (already the case), tell clients to move, stop forwarding; rooms must be
    /// claimed again after the next [`LeaseEvent::Acquired`].
    Lost,
}

/// The lease state machine of one node.
#[derive(Debug)]
pub struct LeaseKeeper {
    config: LeaseConfig,
    /// The end of the current lease, locally; `None` while the node holds none.
    deadline: Option<Instant>,
    /// When the next renewal is due.
    next_renewal: Instant,
    /// A renewal in flight.
    in_flight: Option<RenewalTicket>,
    events: VecDeque<LeaseEvent>,
}

impl LeaseKeeper {
    /// A keeper holding no lease, with its first renewal due at `now`.
    #[must_use]
    pub fn new(config: LeaseConfig, now: Instant) -> Self {
        LeaseKeeper {
            config,
            deadline: None,
            next_renewal: now,
            in_flight: None,
            events: VecDeque::new(),
        }
    }

    /// A ticket if a renewal is due at `now` and none is in flight: the caller then
    /// runs the heartbeat and reports its outcome with the ticket.
    pub fn start_renewal(&mut self, now: Instant) -> Option<RenewalTicket> {
        self.handle_timeout(now);
        if self.in_flight.is_some() || now < self.next_renewal {
            return None;
        }
        let ticket = RenewalTicket { sent_at: now };
        self.in_flight = Some(ticket);
        Some(ticket)
    }

    /// The heartbeat of `ticket` was committed.
    pub fn renewal_succeeded(&mut self, ticket: RenewalTicket, now: Instant) {
        if self.in_flight != Some(ticket) {
            return;
        }
        self.in_flight = None;
        let deadline = ticket.sent_at + self.config.lease.saturating_sub(self.config.margin);
        self.next_renewal = ticket.sent_at + self.config.renew_every;
        if deadline <= now {
            // Too slow to be of use: the lease it bought is already (locally) over.
            self.next_renewal = now;
            self.handle_timeout(now);
            return;
        }
        if self.deadline.is_none() {
            self.events.push_back(LeaseEvent::Acquired);
        }
        self.deadline = Some(deadline);
    }

    /// The heartbeat of `ticket` failed (the store is unreachable or refused it).
    pub fn renewal_failed(&mut self, ticket: RenewalTicket, now: Instant) {
        if self.in_flight != Some(ticket) {
            return;
        }
        self.in_flight = None;
        self.next_renewal = now + self.config.retry_every;
        self.handle_timeout(now);
    }

    /// Checks the deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            self.deadline = None;
            self.events.push_back(LeaseEvent::Lost);
        }
    }

    /// Whether the node may accept joins and rotations at `now`: it holds a lease whose
    /// local deadline has not passed.
    #[must_use]
    pub fn may_accept(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now < deadline)
    }

    /// The local end of the current lease, if any.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<LeaseEvent> {
        self.events.pop_front()
    }

    /// When to call [`LeaseKeeper::handle_timeout`] or [`LeaseKeeper::start_renewal`]
    /// next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let renewal = self.in_flight.is_none().then_some(self.next_renewal);
        match (renewal, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig {
            lease: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            retry_every: Duration::from_millis(500),
            margin: Duration::from_secs(1),
        }
    }

    fn renew_ok(keeper: &mut LeaseKeeper, now: Instant, took: Duration) {
        let ticket = keeper.start_renewal(now).expect("a renewal is due");
        keeper.renewal_succeeded(ticket, now + took);
    }

    #[test]
    fn renewing_on_schedule_keeps_the_lease_and_acquires_once() {
        let t0 = Instant::now();
        let mut keeper = LeaseKeeper::new(config(), t0);
        assert!(!keeper.may_accept(t0));
        let mut now = t0;
        for _ in 0..50 {
            renew_ok(&mut keeper, now, Duration::from_millis(30));
            now = keeper.poll_timeout().expect("a renewal is scheduled");
            assert!(keeper.may_accept(now));
        }
        assert_eq!(keeper.poll_event(), Some(LeaseEvent::Acquired));
        assert_eq!(keeper.poll_event(), None);
    }

    #[test]
    fn a_store_blip_shorter_than_the_lease_interrupts_nothing() {
        let t0 = Instant::now();
        let mut keeper = LeaseKeeper::new(config(), t0);
        renew_ok(&mut keeper, t0, Duration::from_millis(10));
        let _ = keeper.poll_event();
        // Every renewal fails for 6 s, then one succeeds.
        let mut now = t0 + Duration::from_secs(2);
        while now < t0 + Duration::from_secs(8) {
            if let Some(ticket) = keeper.start_renewal(now) {
                keeper.renewal_failed(ticket, now + Duration::from_millis(100));
            }
            assert!(keeper.may_accept(now), "{now:?}");
            now += Duration::from_millis(100);
        }
        renew_ok(&mut keeper, now, Duration::from_millis(10));
        assert!(keeper.may_accept(now + Duration::from_secs(5)));
        assert_eq!(keeper.poll_event(), None, "no loss, no second acquisition");
    }

    #[test]
    fn without_renewals_the_node_stops_accepting_before_the_store_can_expire_it() {
        let t0 = Instant::now();
        let mut keeper = LeaseKeeper::new(config(), t0);
        let ticket = keeper.start_renewal(t0).unwrap();
        // The store executes the heartbeat late, at t0 + 300 ms: its expiry is later
        // still than the node's own deadline.
        let store_expiry = t0 + Duration::from_millis(300) + config().lease;
        keeper.renewal_succeeded(ticket, t0 + Duration::from_millis(400));
        let _ = keeper.poll_event();
        let deadline = keeper.deadline().unwrap();
        assert!(deadline < store_expiry);
        let mut now = t0 + Duration::from_secs(2);
        while now <= store_expiry {
            if let Some(ticket) = keeper.start_renewal(now) {
                keeper.renewal_failed(ticket, now);
            }
            keeper.handle_timeout(now);
            assert_eq!(keeper.may_accept(now), now < deadline, "{now:?}");
            now += Duration::from_millis(50);
        }
        assert_eq!(keeper.poll_event(), Some(LeaseEvent::Lost));
        // A later success acquires a new lease (rooms are claimed again).
        let now = keeper
            .poll_timeout()
            .expect("a retry is scheduled")
            .max(now);
        renew_ok(&mut keeper, now, Duration::from_millis(10));
        assert_eq!(keeper.poll_event(), Some(LeaseEvent::Acquired));
    }

    #[test]
    fn a_renewal_slower_than_the_lease_buys_nothing() {
        let t0 = Instant::now();
        let mut keeper = LeaseKeeper::new(config(), t0);
        let ticket = keeper.start_renewal(t0).unwrap();
        keeper.renewal_succeeded(ticket, t0 + Duration::from_secs(12));
        assert!(!keeper.may_accept(t0 + Duration::from_secs(12)));
        assert_eq!(keeper.poll_event(), None);
        // A stale ticket is ignored.
        keeper.renewal_succeeded(ticket, t0 + Duration::from_secs(13));
        assert_eq!(keeper.deadline(), None);
    }
}
