//! Token buckets (sans-IO: the caller passes `now`): one per connection for control
//! requests, and [`KeyedLimiter`] tables of them for limits that outlive a connection
//! (registrations per source address, prekey pops per requester and target).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Allows `rate` requests per second on average with bursts of `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A zero rate is treated as one request per second.
    #[must_use]
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// A full bucket at `now` that regains `rate` tokens per second, which may be a
    /// fraction (one per minute is `1.0 / 60.0`), up to `burst`. A rate that is not
    /// positive and finite is treated as one token per hour.
    #[must_use]
    pub fn with_rate(rate: f64, burst: u32, now: Instant) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0 / 3600.0
        };
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }

    /// Takes `n` tokens at once (a cost in bytes, say), or says how long until they
    /// are available. A cost above the burst can never be paid: the wait is the time to
    /// refill the whole burst, and it is refused again then.
    pub fn try_take_n(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        // Precision: costs are far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            Ok(())
        } else {
            let wait = (n.min(self.burst) - self.tokens).max(0.0) / self.rate;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }

    /// Gives back a token taken for something that then did not happen.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Whether the bucket has refilled completely by `now`: then it is
    /// indistinguishable from a fresh one and can be forgotten.
    #[must_use]
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }
}

/// One token bucket per key, in a table of bounded size.
///
/// Keys are added on first use with a full bucket. When the table is full, buckets
/// that have refilled are dropped first (a full bucket is the same as no entry, so
/// that loses nothing); if none has, the least recently used eighth goes (those keys
/// start afresh, the price of a bounded table: an attacker would have to touch
/// `max_entries` other keys to reset one of its own). Each eviction pass is O(n) and
/// frees at least an eighth of the table, so insertions stay O(1) amortized.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: f64,
    burst: u32,
    max_entries: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// Buckets of `burst` tokens regaining `rate` per second (see
    /// [`TokenBucket::with_rate`]); at most `max_entries` keys (at least one).
    #[must_use]
    pub fn new(rate: f64, burst: u32, max_entries: usize) -> Self {
        KeyedLimiter {
            rate,
            burst,
            max_entries: max_entries.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Buckets regaining `per_minute` tokens per minute.
    #[must_use]
    pub fn per_minute(per_minute: u32, burst: u32, max_entries: usize) -> Self {
        Self::new(f64::from(per_minute) / 60.0, burst, max_entries)
    }

    /// Buckets regaining `per_hour` tokens per hour.
    #[must_use]
    pub fn per_hour(per_hour: u32, burst: u32, max_entries: usize) -> Self {
        Self::new(f64::from(per_hour) / 3600.0, burst, max_entries)
    }

    /// Takes a token from `key`'s bucket, or says how long until one is available.
    pub fn try_take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.try_take(now);
        }
        if self.buckets.len() >= self.max_entries {
            self.make_room(now);
        }
        let mut bucket = TokenBucket::with_rate(self.rate, self.burst, now);
        let taken = bucket.try_take(now);
        self.buckets.insert(key.clone(), bucket);
        taken
    }

    /// Gives back a token taken from `key` for something that then did not happen.
    pub fn refund(&mut self, key: &K) {
        if let Some(bucket) = self.buckets.get_mut(key) {
            bucket.refund();
        }
    }

    /// Keys currently tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        self.buckets.retain(|_, bucket| !bucket.is_full(now));
        let keep = self.max_entries - (self.max_entries / 8).max(1);
        if self.buckets.len() <= keep {
            return;
        }
        let mut last_used: Vec<Instant> = self.buckets.values().map(|b| b.last).collect();
        let evict = last_used.len() - keep;
        // The `evict`-th oldest use: everything used at or before it goes.
        let (_, cutoff, _) = last_used.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        self.buckets.retain(|_, bucket| bucket.last > cutoff);
    }
}

/// Why [`PrekeyPopLimiter::try_pop`] refused, and how long until a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopRefused {
    /// This requester popped too many of this target's prekeys.
    Pair(Duration),
    /// All requesters together popped too many of this target's prekeys.
    Target(Duration),
}

impl PopRefused {
    /// How long until a retry can succeed.
    #[must_use]
    pub fn retry_after(self) -> Duration {
        match self {
            PopRefused::Pair(wait) | PopRefused::Target(wait) => wait,
        }
    }
}

/// Rate limits on popping one-time prekeys: per (requesting device, target device) and
/// per target device, so that no one drains a device's prekeys.
#[derive(Debug)]
pub struct PrekeyPopLimiter {
    pairs: KeyedLimiter<([u8; 16], [u8; 16])>,
    targets: KeyedLimiter<[u8; 16]>,
}

impl PrekeyPopLimiter {
    /// Pair buckets of `pair_burst` regaining `pair_per_minute`, target buckets of
    /// `target_burst` regaining `target_per_minute`; each table at most `max_entries`.
    #[must_use]
    pub fn new(
        (pair_per_minute, pair_burst): (u32, u32),
        (target_per_minute, target_burst): (u32, u32),
        max_entries: usize,
    ) -> Self {
        PrekeyPopLimiter {
            pairs: KeyedLimiter::per_minute(pair_per_minute, pair_burst, max_entries),
            targets: KeyedLimiter::per_minute(target_per_minute, target_burst, max_entries),
        }
    }

    /// Takes a token for `requester` popping one prekey of `target`. The pair is
    /// checked first, and its token given back if the target refuses, so a requester
    /// stopped by its own pair limit never spends the target's budget that other
    /// requesters share.
    pub fn try_pop(
        &mut self,
        requester: &[u8; 16],
        target: &[u8; 16],
        now: Instant,
    ) -> Result<(), PopRefused> {
        let pair = (*requester, *target);
        self.pairs.try_take(&pair, now).map_err(PopRefused::Pair)?;
        self.targets.try_take(target, now).map_err(|wait| {
            self.pairs.refund(&pair);
            PopRefused::Target(wait)
        })
    }

    /// Entries in the (pair, target) tables.
    #[must_use]
    pub fn len(&self) -> (usize, usize) {
        (self.pairs.len(), self.targets.len())
    }
}

/// The key under which a source address is rate limited: an IPv4 address as is (also
/// when it arrives IPv4-mapped), an IPv6 address by its /64 prefix, which one host or
/// subscriber usually holds in full.
#[must_use]
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        for _ in 0..3 {
            b.try_take(t0).unwrap();
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // 100 ms later one token is back, not more.
        let t1 = t0 + Duration::from_millis(100);
        b.try_take(t1).unwrap();
        assert!(b.try_take(t1).is_err());
        // Never more than the burst after a long pause.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            b.try_take(t2).unwrap();
        }
        assert!(b.try_take(t2).is_err());
    }

    #[test]
    fn fractional_rates_refill_slowly_and_refunds_return_a_token() {
        let t0 = Instant::now();
        // Two per minute, burst 2.
        let mut b = TokenBucket::with_rate(2.0 / 60.0, 2, t0);
        b.try_take(t0).unwrap();
        b.try_take(t0).unwrap();
        let wait = b.try_take(t0).unwrap_err();
        assert_eq!(wait.as_secs(), 30, "{wait:?}");
        assert!(!b.is_full(t0 + Duration::from_secs(59)));
        assert!(b.is_full(t0 + Duration::from_secs(60)));
        b.refund();
        b.try_take(t0).unwrap();
        // A refund never exceeds the burst.
        let mut full = TokenBucket::with_rate(1.0, 1, t0);
        full.refund();
        full.try_take(t0).unwrap();
        assert!(full.try_take(t0).is_err());
    }

    #[test]
    fn keyed_buckets_are_independent() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::per_minute(1, 2, 100);
        l.try_take(&"a", t0).unwrap();
        l.try_take(&"a", t0).unwrap();
        assert!(l.try_take(&"a", t0).is_err());
        l.try_take(&"b", t0).unwrap();
        l.refund(&"a");
        l.try_take(&"a", t0).unwrap();
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn the_table_never_exceeds_its_size_and_evicts_refilled_buckets_first() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::per_minute(60, 5, 64);
        // 1,000 keys, each used once at its own time: the table stays bounded.
        for i in 0..1_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            l.try_take(&i, now).unwrap();
            assert!(l.len() <= 64);
        }
        // A key drained just now survives a flood of new keys that evicts refilled ones.
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..5 {
            l.try_take(&u32::MAX, later).unwrap();
        }
        for i in 0..63u32 {
            l.try_take(&(10_000 + i), later + Duration::from_millis(1))
                .unwrap();
        }
        assert!(l.len() <= 64);
        assert!(
            l.try_take(&u32::MAX, later + Duration::from_millis(2))
                .is_err(),
            "the drained key was not forgotten"
        );
    }

    #[test]
    fn when_no_bucket_has_refilled_the_least_recently_used_go() {
        let t0 = Instant::now();
        // One token per hour: nothing refills during the test.
        let mut l = KeyedLimiter::per_hour(1, 1, 16);
        for i in 0..16u32 {
            l.try_take(&i, t0 + Duration::from_millis(u64::from(i)))
                .unwrap();
        }
        // Key 15 is the most recently used; a new key evicts the oldest eighth.
        l.try_take(&100, t0 + Duration::from_millis(20)).unwrap();
        assert!(l.len() <= 16);
        assert!(l.try_take(&15, t0 + Duration::from_millis(21)).is_err());
        // Key 0 was evicted: it starts afresh.
        l.try_take(&0, t0 + Duration::from_millis(22)).unwrap();
    }

    #[test]
    fn a_requester_stopped_by_its_pair_limit_leaves_the_targets_budget_to_others() {
        let t0 = Instant::now();
        // Pairs: 3 at once; targets: 5 at once; both one per minute after that.
        let mut l = PrekeyPopLimiter::new((1, 3), (1, 5), 100);
        let (mallory, alice, bob, victim) = ([1; 16], [2; 16], [3; 16], [9; 16]);
        for _ in 0..3 {
            l.try_pop(&mallory, &victim, t0).unwrap();
        }
        for _ in 0..100 {
            assert!(matches!(
                l.try_pop(&mallory, &victim, t0),
                Err(PopRefused::Pair(_))
            ));
        }
        // Mallory's refused attempts spent nothing of the victim's budget: 2 are left.
        l.try_pop(&alice, &victim, t0).unwrap();
        l.try_pop(&alice, &victim, t0).unwrap();
        let refused = l.try_pop(&bob, &victim, t0).unwrap_err();
        assert!(matches!(refused, PopRefused::Target(_)), "{refused:?}");
        assert!(refused.retry_after() <= Duration::from_secs(60));
        // Bob's pair token came back with the refusal: after the target refills one
        // token, Bob still has all three of his.
        let later = t0 + Duration::from_secs(60);
        l.try_pop(&bob, &victim, later).unwrap();
        // Another target is untouched.
        l.try_pop(&mallory, &[8; 16], t0).unwrap();
        assert_eq!(l.len(), (4, 2));
    }

    /// The defaults leave a meeting of 1,000 participants untouched: the leader pops
    /// one prekey of each of the 999 others for the invitations, all 999 reply at
    /// once (999 pops of the leader's prekeys within a second), and then 20 rekeys in
    /// 20 seconds each pop one prekey of every member, with 3 resends to everyone of
    /// the first.
    #[test]
    fn the_default_limits_let_a_1000_participant_meeting_start_and_rekey_at_once() {
        let l = crate::config::Limits::default();
        let mut pops = PrekeyPopLimiter::new(
            (
                l.prekey_pops_per_pair_per_minute,
                l.prekey_pops_per_pair_burst,
            ),
            (
                l.prekey_pops_per_target_per_minute,
                l.prekey_pops_per_target_burst,
            ),
            l.max_rate_limit_entries,
        );
        let t0 = Instant::now();
        let leader = [0u8; 16];
        let members: Vec<[u8; 16]> = (1..1000u32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect();
        for member in &members {
            pops.try_pop(&leader, member, t0).unwrap();
            pops.try_pop(member, &leader, t0).unwrap();
        }
        for resend in 0..3 {
            let now = t0 + Duration::from_millis(250 << resend);
            for member in &members {
                pops.try_pop(&leader, member, now).unwrap();
            }
        }
        for rekey in 1..=20 {
            let now = t0 + Duration::from_secs(rekey);
            for member in &members {
                pops.try_pop(&leader, member, now).unwrap();
            }
        }
        assert_eq!(pops.len(), (2 * 999, 1000));
    }

    #[test]
    fn source_keys_group_an_ipv6_64_and_unmap_ipv4() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        assert_eq!(source_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }
}
