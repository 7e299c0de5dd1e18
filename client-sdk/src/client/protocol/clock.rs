//! The server's master clock, as seen from this device (sans-IO).
//!
//! Certificates, prekeys, containers and invitations are judged by the server's clock
//! (the design's master clock), learned at each connection's hello. A compromised
//! server could rewind it to make expired certificates verify again, so its offset from
//! this device's clock is clamped (review L3).

use crate::UnixMillis;

/// The server's clock as an offset from this device's.
///
/// Invariant: once synced, the offset never decreases, so the server's time as seen
/// here never runs backwards. The meeting state's deadlines (switching to a new epoch,
/// dropping an old epoch's key, asking for a withheld key) and invitation expiries are
/// server times: a server that answered a reconnect's hello with a clock a day behind
/// would otherwise have pushed every pending deadline a day out, and kept a device
/// sending on an epoch key that a removed participant holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerClock {
    offset_ms: i64,
    /// Whether a hello set the offset (before the first, it is 0).
    synced: bool,
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
            synced: true,
        };
        (clock, offset != raw)
    }

    /// This clock after another hello (a reconnect): as [`Self::sync`], except that the
    /// server's time never moves backwards; a later reading behind the current offset
    /// keeps the current offset. Returns the clock, whether the reading was clamped to
    /// `max_offset_ms`, and whether it was behind (and so ignored).
    pub(crate) fn resync(self, server_ms: u64, local_ms: u64, max_offset_ms: u64) -> Resync {
        let (next, clamped) = Self::sync(server_ms, local_ms, max_offset_ms);
        if self.synced && next.offset_ms < self.offset_ms {
            Resync {
                clock: self,
                clamped,
                behind_ms: self.offset_ms.abs_diff(next.offset_ms),
            }
        } else {
            Resync {
                clock: next,
                clamped,
                behind_ms: 0,
            }
        }
    }

    /// The server's time when this device's clock reads `local_ms`.
    pub(crate) fn at(self, local_ms: u64) -> UnixMillis {
        UnixMillis(local_ms.saturating_add_signed(self.offset_ms))
    }
}

/// What [`ServerClock::resync`] made of a hello's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resync {
    /// The clock to use from now on.
    pub clock: ServerClock,
    /// The reading was further from this device's clock than allowed.
    pub clamped: bool,
    /// How far behind the current clock the reading was, ms (0: not behind).
    pub behind_ms: u64,
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

    /// A server that answers a reconnect's hello with a clock behind the one it gave
    /// before cannot move this device's deadlines out: the time seen here never runs
    /// backwards once synced. Forward readings are taken.
    #[test]
    fn a_later_hello_never_moves_the_servers_time_backwards() {
        let local = 1_000_000_000_000;
        let hour = 3_600_000;
        let max = 24 * hour;
        let first = ServerClock::default().resync(local + 5_000, local, max);
        assert_eq!(first.behind_ms, 0);
        assert_eq!(first.clock.at(local), UnixMillis(local + 5_000));
        // A day behind at the reconnect: ignored.
        let later = local + 60_000;
        let rewound = first.clock.resync(later - max, later, max);
        assert_eq!(rewound.clock, first.clock);
        assert_eq!(rewound.behind_ms, max + 5_000);
        assert_eq!(rewound.clock.at(later), UnixMillis(later + 5_000));
        // Ahead: taken.
        let ahead = rewound.clock.resync(later + 9_000, later, max);
        assert_eq!(ahead.behind_ms, 0);
        assert_eq!(ahead.clock.at(later), UnixMillis(later + 9_000));
        // The first hello may set any offset within the bound, behind zero too.
        let behind = ServerClock::default().resync(local - hour, local, max);
        assert_eq!(behind.clock.at(local), UnixMillis(local - hour));
    }
}
