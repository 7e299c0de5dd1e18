//! The measured phase in time slices: frames in and out, bytes and latency per slice,
//! filled by every participant task and read by the progress bar and the report.

use std::sync::Mutex;

use super::{LatencyHistogram, percentiles_ms};
use crate::report::TimelinePoint;

/// Most slices kept: long runs get wider slices.
const MAX_SLICES: u64 = 600;

#[derive(Debug, Default, Clone)]
struct Slice {
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    participants: usize,
    latency: LatencyHistogram,
}

/// Slices of the measured phase (thread-safe; participants add to it a few times per
/// second).
#[derive(Debug)]
pub struct Timeline {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    origin_us: Option<u64>,
    width_us: u64,
    slices: Vec<Slice>,
}

impl Timeline {
    /// A timeline for a measured phase of `duration_s` seconds.
    #[must_use]
    pub fn new(duration_s: f64) -> Self {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // ≤ 86400 s
        let secs = duration_s.ceil().max(1.0) as u64;
        let width_s = secs.div_ceil(MAX_SLICES).max(1);
        Timeline {
            inner: Mutex::new(Inner {
                origin_us: None,
                width_us: width_s * 1_000_000,
                slices: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock only loses report data; keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The measured phase starts at `now_us`; earlier additions are ignored.
    pub fn start(&self, now_us: u64) {
        self.lock().origin_us = Some(now_us);
    }

    fn with_slice(&self, at_us: u64, f: impl FnOnce(&mut Slice)) {
        let mut inner = self.lock();
        let Some(origin) = inner.origin_us else {
            return;
        };
        let Some(since) = at_us.checked_sub(origin) else {
            return;
        };
        let index = usize::try_from(since / inner.width_us).unwrap_or(usize::MAX);
        if index >= usize::try_from(MAX_SLICES * 2).unwrap_or(usize::MAX) {
            return; // past the end (drain phase)
        }
        if inner.slices.len() <= index {
            inner.slices.resize(index + 1, Slice::default());
        }
        if let Some(slice) = inner.slices.get_mut(index) {
            f(slice);
        }
    }

    /// A participant sent `frames` frames, `bytes` bytes, up to `at_us`.
    pub fn add_sent(&self, at_us: u64, frames: u64, bytes: u64) {
        self.with_slice(at_us, |s| {
            s.frames_in += frames;
            s.bytes_in += bytes;
        });
    }

    /// A participant received `frames` frames with these latencies, up to `at_us`.
    pub fn add_received(&self, at_us: u64, frames: u64, bytes: u64, latency: &LatencyHistogram) {
        self.with_slice(at_us, |s| {
            s.frames_out += frames;
            s.bytes_out += bytes;
            s.latency.merge(latency);
        });
    }

    /// Participants in meetings at `at_us`.
    pub fn set_participants(&self, at_us: u64, n: usize) {
        self.with_slice(at_us, |s| s.participants = s.participants.max(n));
    }

    /// Frames received per second and p99 (ms) of the last complete slice before
    /// `now_us`, for the progress bar.
    #[must_use]
    pub fn recent(&self, now_us: u64) -> Option<(f64, Option<f64>)> {
        let inner = self.lock();
        let since = now_us.checked_sub(inner.origin_us?)?;
        let index = usize::try_from(since / inner.width_us)
            .ok()?
            .checked_sub(1)?;
        let slice = inner.slices.get(index)?;
        #[allow(clippy::cast_precision_loss)]
        let per_s = slice.frames_out as f64 / (inner.width_us as f64 / 1e6);
        Some((per_s, slice.latency.quantile_ms(0.99)))
    }

    /// Totals over the measured phase: (frames in, bytes in, frames out, bytes out).
    #[must_use]
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.lock().slices.iter().fold((0, 0, 0, 0), |t, s| {
            (
                t.0 + s.frames_in,
                t.1 + s.bytes_in,
                t.2 + s.frames_out,
                t.3 + s.bytes_out,
            )
        })
    }

    /// Report points for the first `duration_s` seconds.
    #[must_use]
    pub fn points(&self, duration_s: f64) -> Vec<TimelinePoint> {
        let inner = self.lock();
        #[allow(clippy::cast_precision_loss)]
        let width_s = inner.width_us as f64 / 1e6;
        let mut last_participants = 0;
        inner
            .slices
            .iter()
            .enumerate()
            .map(|(i, s)| {
                #[allow(clippy::cast_precision_loss)]
                let t_s = (i + 1) as f64 * width_s;
                (t_s, s)
            })
            .take_while(|(t_s, _)| *t_s <= duration_s + width_s / 2.0)
            .map(|(t_s, s)| {
                if s.participants > 0 {
                    last_participants = s.participants;
                }
                let p = percentiles_ms(&s.latency);
                #[allow(clippy::cast_precision_loss)]
                TimelinePoint {
                    t_s,
                    participants: last_participants,
                    frames_in_per_s: s.frames_in as f64 / width_s,
                    frames_out_per_s: s.frames_out as f64 / width_s,
                    p50_ms: (p.count > 0).then_some(p.p50),
                    p99_ms: (p.count > 0).then_some(p.p99),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additions_land_in_their_second_and_before_the_start_are_ignored() {
        let t = Timeline::new(3.0);
        t.add_sent(10, 5, 500);
        t.start(1_000_000);
        t.add_sent(1_500_000, 50, 5_000);
        let mut h = LatencyHistogram::default();
        h.record_us(2_000);
        t.add_received(2_100_000, 40, 4_000, &h);
        t.set_participants(2_100_000, 7);
        let points = t.points(3.0);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].frames_in_per_s, 50.0);
        assert_eq!(points[1].frames_out_per_s, 40.0);
        assert_eq!(points[1].participants, 7);
        assert!(points[1].p99_ms.is_some_and(|p| (p - 2.0).abs() < 0.01));
        assert_eq!(t.recent(3_000_000).map(|r| r.0), Some(40.0));
    }
}
