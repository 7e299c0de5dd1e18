//! Latency in microseconds in an HDR histogram (3 significant digits, 1 µs .. 60 s).

use hdrhistogram::Histogram;

use crate::report::{LatencyBucket, Percentiles};

/// Highest latency recorded, µs (larger samples are clamped to it).
const MAX_US: u64 = 60_000_000;

/// A latency histogram, µs.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        // Bounds are constants within hdrhistogram's limits (1 ≤ low, high ≥ 2·low,
        // sigfig ≤ 5), so creation cannot fail.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_US, 3).expect("valid constant bounds");
        LatencyHistogram(h)
    }
}

impl LatencyHistogram {
    /// Records one sample, µs (clamped to the histogram's range).
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides: adding cannot fail; a failure would only lose
        // samples of a report, never panic.
        let _ = self.0.add(&other.0);
    }

    /// Samples recorded.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.0.reset();
    }

    /// Value at quantile `q` (0..=1), ms; `None` when empty.
    #[must_use]
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.is_empty()).then(|| us_to_ms(self.0.value_at_quantile(q)))
    }

    /// Log-spaced buckets (powers of two of µs) up to the largest sample.
    #[must_use]
    pub fn buckets(&self) -> Vec<LatencyBucket> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut low = 0u64;
        let mut high = 64u64;
        let max = self.0.max();
        loop {
            let count = self.0.count_between(low.saturating_add(1), high);
            out.push(LatencyBucket {
                le_ms: us_to_ms(high),
                count,
            });
            if high >= max || high >= MAX_US {
                break;
            }
            low = high;
            high = high.saturating_mul(2);
        }
        if let Some(first) = out.first_mut() {
            first.count = first.count.saturating_add(self.0.count_between(0, 0));
        }
        out
    }
}

/// Percentiles of `h`, ms.
#[must_use]
pub fn percentiles_ms(h: &LatencyHistogram) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.0.len(),
        mean: h.0.mean() / 1_000.0,
        p50: us_to_ms(h.0.value_at_quantile(0.50)),
        p90: us_to_ms(h.0.value_at_quantile(0.90)),
        p99: us_to_ms(h.0.value_at_quantile(0.99)),
        max: us_to_ms(h.0.max()),
    }
}

#[allow(clippy::cast_precision_loss)] // µs values below 2^52
fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = LatencyHistogram::default();
        for us in 1..=1_000 {
            h.record_us(us * 10);
        }
        let p = percentiles_ms(&h);
        assert_eq!(p.count, 1_000);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.02, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn buckets_hold_every_sample() {
        let mut h = LatencyHistogram::default();
        for us in [1, 50, 100, 5_000, 90_000_000] {
            h.record_us(us);
        }
        let total: u64 = h.buckets().iter().map(|b| b.count).sum();
        assert_eq!(total, 5);
        assert_eq!(percentiles_ms(&LatencyHistogram::default()).count, 0);
    }
}
