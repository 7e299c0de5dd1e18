//! The server's master clock, as seen from this device (sans-IO).
//!
//! Certificates, prekeys, containers and invitations are judged by the server's clock
//! (the design's master clock), learned at each connection's hello. A compromised
//! server could rewind it to make expired certificates verify again, so its offset from
//! this device's clock is clamped (review L3).

use crate::UnixMillis;

/// The server's clock as an offset from this device's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerClock {
    offset_ms: i64,
}

impl ServerClock {
    /// The clock for a server reading `server_ms` at local time `local_ms`, and whether
    /// its offset had to be clamped to `max_offset_ms`.
    pub(crate) fn sync(server_ms: u64, local_ms: u64, max_offset_ms: u64) -> (Self, bool) {
        let max = i128::from(max_offset_ms.min(i64::MAX as u64));
        let raw = i128::from(server_ms) - i128::from(local_ms);
        let offset = raw.clamp(-max, max);
        let clock = ServerClock {
            offset_ms: i64::try_from(offset).unwrap_or(0),
        };
        (clock, offset != raw)
    }

    /// The server's time when this device's clock reads `local_ms`.
    pub(crate) fn at(self, local_ms: u64) -> UnixMillis {
        UnixMillis(local_ms.saturating_add_signed(self.offset_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review L3: a server clock far from this device's is clamped to the bound, so a
    /// compromised server cannot make expired certificates verify again by rewinding
    /// time by a year.
    #[test]
    fn the_servers_clock_offset_is_clamped_to_the_bound() {
        let local = 1_000_000_000_000;
        let hour = 3_600_000;
        let (clock, clamped) = ServerClock::sync(local + hour, local, 24 * hour);
        assert!(!clamped);
        assert_eq!(clock.at(local), UnixMillis(local + hour));
        let year = 365 * 24 * hour;
        let (clock, clamped) = ServerClock::sync(local - year, local, 24 * hour);
        assert!(clamped);
        assert_eq!(clock.at(local), UnixMillis(local - 24 * hour));
        let (clock, clamped) = ServerClock::sync(u64::MAX, 0, u64::MAX);
        assert!(clamped, "an offset beyond i64 is clamped too");
        assert_eq!(clock.offset_ms, i64::MAX);
    }
}
