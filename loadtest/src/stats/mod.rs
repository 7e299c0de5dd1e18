//! Measurement: per-receiver loss windows, latency histograms, jitter and the
//! per-second timeline, merged into the report at the end.

mod latency;

pub use latency::{LatencyHistogram, percentiles_ms};
