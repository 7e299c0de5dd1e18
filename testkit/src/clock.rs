//! Time for tests: the system clock as the crypto core takes it, a fixed instant for
//! deterministic fixtures, and the one upper bound on waiting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conclave_core::UnixMillis;

pub use conclave_core::test_util::NOW;

/// Upper bound for anything a test waits for (a connection, an event, a frame, a
/// server stop). Only a bound: tests never assert on timing, and a healthy run waits
/// far less.
pub const WAIT: Duration = Duration::from_secs(20);

/// The system clock in the form the crypto core takes (`now` arguments).
pub fn now() -> UnixMillis {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixMillis(ms)
}
