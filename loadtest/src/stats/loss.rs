//! The loss ratio of a run from its frame counts: never negative, never above 1.

/// `1 − received / expected`, clamped to `0.0..=1.0`; `0.0` when nothing was
/// expected (the report then shows the loss as not measured). More frames received
/// than expected is no loss (and is reported apart, as
/// [`surplus`]), never a negative one.
#[must_use]
pub fn loss_ratio(received: u64, expected: u64) -> f64 {
    if expected == 0 || received >= expected {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // frame counts far below 2^52
    let ratio = 1.0 - received as f64 / expected as f64;
    ratio.clamp(0.0, 1.0)
}

/// Frames received beyond those expected (0 when fewer arrived).
#[must_use]
pub fn surplus(received: u64, expected: u64) -> u64 {
    received.saturating_sub(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_never_negative_and_the_surplus_is_counted() {
        assert_eq!(loss_ratio(1_001, 1_000), 0.0);
        assert!(loss_ratio(1_001, 1_000).is_sign_positive(), "not -0.0");
        assert_eq!(surplus(1_001, 1_000), 1);
        assert_eq!(loss_ratio(1_000, 1_000), 0.0);
        assert!(loss_ratio(1_000, 1_000).is_sign_positive(), "not -0.0");
        assert_eq!(surplus(1_000, 1_000), 0);
        assert_eq!(loss_ratio(0, 0), 0.0);
    }

    #[test]
    fn loss_is_the_missing_share() {
        assert!((loss_ratio(999, 1_000) - 0.001).abs() < 1e-12);
        assert_eq!(loss_ratio(0, 1_000), 1.0);
        assert_eq!(surplus(999, 1_000), 0);
    }
}
