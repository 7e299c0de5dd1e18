//! Measurement: per-receiver loss windows, latency histograms, jitter and the
//! per-slice timeline, merged into the report at the end.

mod latency;
mod loss;
mod timeline;
mod window;

pub use latency::{LatencyHistogram, percentiles_ms};
pub use loss::{loss_ratio, surplus};
pub use timeline::Timeline;
pub use window::{Counted, ReceiverWindow};
