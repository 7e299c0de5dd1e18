//! Wall-clock time as the crypto core sees it: an injected value, never read here.

use std::fmt;

/// Milliseconds since the Unix epoch, as given by the caller (normally the server's
/// master clock). The crypto core never reads a clock itself; every operation that
/// depends on time takes a `now: UnixMillis` parameter, so tests drive it with
/// virtual time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self + ms`, saturating at the far future instead of wrapping.
    #[must_use]
    pub fn saturating_add(self, ms: u64) -> Self {
        UnixMillis(self.0.saturating_add(ms))
    }

    /// The raw millisecond count.
    #[must_use]
    pub fn as_millis(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// One minute in milliseconds.
pub const MINUTE_MS: u64 = 60_000;
/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// How far a peer's timestamp may lie in our future before it is rejected.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * MINUTE_MS;
