//! When churn happens and what (sans-IO): a fixed period, cycling leave, join,
//! remove, join (so meetings keep their size), in meetings drawn from a seeded RNG.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::report::ChurnKind;

const CYCLE: [ChurnKind; 4] = [
    ChurnKind::Leave,
    ChurnKind::Join,
    ChurnKind::Remove,
    ChurnKind::Join,
];

/// The churn schedule.
#[derive(Debug)]
pub(crate) struct ChurnPlan {
    period_us: u64,
    next_at_us: Option<u64>,
    step: usize,
    meetings: usize,
    rng: ChaCha20Rng,
}

impl ChurnPlan {
    /// `per_minute` events from `start_us` on (none when 0).
    pub(crate) fn new(per_minute: f64, meetings: usize, seed: u64, start_us: u64) -> Self {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // validated > 0
        let period_us = if per_minute > 0.0 {
            (60_000_000.0 / per_minute) as u64
        } else {
            u64::MAX
        };
        ChurnPlan {
            period_us,
            next_at_us: (per_minute > 0.0).then(|| start_us.saturating_add(period_us)),
            step: 0,
            meetings: meetings.max(1),
            rng: ChaCha20Rng::seed_from_u64(seed ^ 0xC4_0C4),
        }
    }

    /// When the next event is due.
    pub(crate) fn next_at(&self) -> Option<u64> {
        self.next_at_us
    }

    /// The event due at `now_us`, if any: (kind, meeting index).
    pub(crate) fn poll(&mut self, now_us: u64) -> Option<(ChurnKind, usize)> {
        let at = self.next_at_us.filter(|at| *at <= now_us)?;
        self.next_at_us = Some(at.saturating_add(self.period_us));
        let kind = CYCLE.get(self.step % CYCLE.len()).copied()?;
        self.step += 1;
        let meetings = u64::try_from(self.meetings).unwrap_or(u64::MAX);
        let meeting = usize::try_from(self.rng.next_u64() % meetings).unwrap_or(0);
        Some((kind, meeting))
    }

    /// A random index below `n` (for picking a participant), `None` if `n` is 0.
    pub(crate) fn pick(&mut self, n: usize) -> Option<usize> {
        let n64 = u64::try_from(n).ok().filter(|n| *n > 0)?;
        usize::try_from(self.rng.next_u64() % n64).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_at_the_rate_in_the_cycle_and_reproducibly() {
        let mut a = ChurnPlan::new(12.0, 3, 7, 0);
        let mut b = ChurnPlan::new(12.0, 3, 7, 0);
        assert_eq!(a.next_at(), Some(5_000_000));
        assert_eq!(a.poll(4_999_999), None);
        let mut kinds = Vec::new();
        for i in 1..=4u64 {
            let e = a.poll(i * 5_000_000).unwrap();
            assert_eq!(Some(e), b.poll(i * 5_000_000));
            assert!(e.1 < 3);
            kinds.push(e.0);
        }
        assert_eq!(kinds, CYCLE.to_vec());
        assert_eq!(ChurnPlan::new(0.0, 1, 1, 0).next_at(), None);
    }
}
