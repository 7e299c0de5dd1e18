//! How often a container from an unknown sender may cost a directory lookup (sans-IO).
//!
//! A container names its sending user in the clear, and the receiver must look that
//! user up (and pin its key) before it can verify anything. Without a bound, anyone who
//! can get containers into a device's mailbox (any registered user; a hostile server)
//! could send junk that claims a new made-up user each time, and every one would cost
//! the victim a directory request, until its own Rekeys and joins hit the server's rate
//! limit (security review M8). So:
//!
//! * a user the directory said it does not know is remembered as unknown for
//!   [`NEGATIVE_TTL_MS`] (in a table of at most [`MAX_NEGATIVE`] users, oldest
//!   forgotten first): more containers claiming it are refused without a request;
//! * lookups for unknown senders draw on a token bucket ([`BURST`] lookups, then one per
//!   [`REFILL_MS`]). A container that finds the bucket empty is left in the mailbox
//!   (not acknowledged) and tried again on a later delivery, so a flood delays the first
//!   message of a new contact instead of losing it.
//!
//! Times are milliseconds of one monotonic clock, passed in.

use std::collections::{BTreeMap, HashMap};

use crate::UserId;

/// How long a user the directory does not know stays known-unknown, ms.
pub(crate) const NEGATIVE_TTL_MS: u64 = 10 * 60 * 1_000;
/// Most users remembered as unknown.
pub(crate) const MAX_NEGATIVE: usize = 4_096;
/// Lookups for unknown senders available at once.
pub(crate) const BURST: u32 = 20;
/// One more lookup every this many ms.
pub(crate) const REFILL_MS: u64 = 1_000;

/// What to do with a container whose sender is not pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupDecision {
    /// Look the sender up (a token was taken).
    Lookup,
    /// The directory recently said this user does not exist: refuse.
    KnownUnknown,
    /// Too many lookups for unknown senders lately: try the container again later.
    OverBudget,
}

/// Negative-lookup cache and lookup budget for container senders.
#[derive(Debug)]
pub(crate) struct SenderLookups {
    /// User → when it stops being known-unknown.
    unknown: HashMap<UserId, u64>,
    /// (Expiry, user), to forget the oldest first.
    by_expiry: BTreeMap<(u64, UserId), ()>,
    tokens: u32,
    refilled_at: u64,
}

impl SenderLookups {
    pub(crate) fn new(now: u64) -> Self {
        SenderLookups {
            unknown: HashMap::new(),
            by_expiry: BTreeMap::new(),
            tokens: BURST,
            refilled_at: now,
        }
    }

    /// Whether a container claiming `user` (not pinned) may cost a lookup now.
    pub(crate) fn decide(&mut self, user: &UserId, now: u64) -> LookupDecision {
        self.expire(now);
        if self.unknown.contains_key(user) {
            return LookupDecision::KnownUnknown;
        }
        self.refill(now);
        if self.tokens == 0 {
            return LookupDecision::OverBudget;
        }
        self.tokens -= 1;
        LookupDecision::Lookup
    }

    /// The directory does not know `user`.
    pub(crate) fn not_found(&mut self, user: UserId, now: u64) {
        self.expire(now);
        let until = now.saturating_add(NEGATIVE_TTL_MS);
        if let Some(old) = self.unknown.insert(user, until) {
            self.by_expiry.remove(&(old, user));
        }
        self.by_expiry.insert((until, user), ());
        while self.unknown.len() > MAX_NEGATIVE {
            let Some(((_, oldest), ())) = self.by_expiry.pop_first() else {
                break;
            };
            self.unknown.remove(&oldest);
        }
    }

    /// `user` exists after all (pinned through another path): forget the negative entry.
    pub(crate) fn found(&mut self, user: &UserId) {
        if let Some(until) = self.unknown.remove(user) {
            self.by_expiry.remove(&(until, *user));
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some((&(until, user), ())) = self.by_expiry.first_key_value() {
            if until > now {
                break;
            }
            self.by_expiry.pop_first();
            self.unknown.remove(&user);
        }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.refilled_at);
        let new = elapsed / REFILL_MS;
        if new == 0 {
            return;
        }
        let new = u32::try_from(new).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(new).min(BURST);
        self.refilled_at = if self.tokens == BURST {
            now
        } else {
            self.refilled_at
                .saturating_add(u64::from(new).saturating_mul(REFILL_MS))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u32) -> UserId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        UserId::from_slice(&b).unwrap()
    }

    #[test]
    fn a_user_the_directory_does_not_know_is_refused_without_a_lookup_until_it_expires() {
        let mut l = SenderLookups::new(0);
        assert_eq!(l.decide(&user(1), 0), LookupDecision::Lookup);
        l.not_found(user(1), 0);
        assert_eq!(l.decide(&user(1), 1), LookupDecision::KnownUnknown);
        assert_eq!(
            l.decide(&user(1), NEGATIVE_TTL_MS),
            LookupDecision::Lookup,
            "looked up again once the entry expired"
        );
        l.not_found(user(1), NEGATIVE_TTL_MS);
        l.found(&user(1));
        assert_eq!(l.decide(&user(1), NEGATIVE_TTL_MS), LookupDecision::Lookup);
    }

    #[test]
    fn made_up_senders_cost_at_most_the_burst_then_one_lookup_per_refill() {
        let mut l = SenderLookups::new(0);
        let lookups = (0..1_000)
            .filter(|n| l.decide(&user(*n), 0) == LookupDecision::Lookup)
            .count();
        assert_eq!(lookups, BURST as usize);
        assert_eq!(l.decide(&user(5_000), 0), LookupDecision::OverBudget);
        assert_eq!(l.decide(&user(5_001), REFILL_MS), LookupDecision::Lookup);
        assert_eq!(
            l.decide(&user(5_002), REFILL_MS),
            LookupDecision::OverBudget
        );
        // A long pause refills the burst, never more.
        let later = 1_000 * REFILL_MS;
        let lookups = (0..1_000)
            .filter(|n| l.decide(&user(10_000 + n), later) == LookupDecision::Lookup)
            .count();
        assert_eq!(lookups, BURST as usize);
    }

    #[test]
    fn the_negative_cache_is_bounded() {
        let mut l = SenderLookups::new(0);
        for n in 0..(MAX_NEGATIVE as u32 + 100) {
            l.not_found(user(n), u64::from(n));
        }
        assert_eq!(l.unknown.len(), MAX_NEGATIVE);
        assert_eq!(l.by_expiry.len(), MAX_NEGATIVE);
        assert!(!l.unknown.contains_key(&user(0)), "oldest forgotten first");
        assert!(l.unknown.contains_key(&user(MAX_NEGATIVE as u32 + 99)));
    }
}
