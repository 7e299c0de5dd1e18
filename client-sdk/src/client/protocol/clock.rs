//! The server's master clock, as seen from this device (sans-IO).
//!
//! Certificates, prekeys, containers and invitations are judged by the server's clock
//! (the design's master clock), learned at each connection's hello as an offset from
//! this device's wall clock. A compromised server could rewind it to make expired
//! certificates verify again, so that offset is clamped (review L3).
//!
//! The offset follows the wall clock, so a device that sleeps (its monotonic clock
//! stops, its wall clock does not) still agrees with the server when it wakes. But the
//! meeting state's deadlines (switching to a new epoch, dropping an old epoch's key,
//! asking for a withheld key) and invitation expiries are server times too: a server
//! that answered a reconnect's hello with a clock a day behind pushed every pending
//! deadline a day out, and could keep a device sending on an epoch key that a removed
//! participant holds. So the server's time seen here also has a **floor** on the
//! monotonic clock: the furthest any hello read, run on since by the monotonic clock,
//! less [`REWIND_TOLERANCE_MS`]. No hello can move the time below it, so none can push
//! a deadline out by more than the tolerance. The device's own wall clock being set
//! moves the offset with it at the next hello, as before; a monotonic clock stopped in
//! sleep only lowers the floor.

use crate::UnixMillis;

/// How far a later hello may move the server's time back (latency differs between
/// hellos; a cluster's nodes differ by a little). A hello further behind only pulls
/// the time down to the floor, and is reported.
pub(crate) const REWIND_TOLERANCE_MS: u64 = 5_000;

/// The server's clock as an offset from this device's wall clock, and its floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerClock {
    offset_ms: i64,
    /// The furthest reading so far and the monotonic time it was taken at (none before
    /// the first hello).
    furthest: Option<Reading>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    server_ms: u64,
    mono_ms: u64,
}

impl Reading {
    /// This reading run on to monotonic time `mono_ms`.
    fn at(self, mono_ms: u64) -> u64 {
        self.server_ms
            .saturating_add(mono_ms.saturating_sub(self.mono_ms))
    }
}

impl ServerClock {
    /// The clock after a hello reading `server_ms` when this device's wall clock reads
    /// `local_ms` and its monotonic clock `mono_ms`: the offset (clamped to
    /// `max_offset_ms`) is taken, and the floor rises if this reading is the furthest.
    pub(crate) fn sync(
        self,
        server_ms: u64,
        local_ms: u64,
        mono_ms: u64,
        max_offset_ms: u64,
    ) -> Synced {
        let max = i128::from(max_offset_ms.min(i64::MAX as u64));
        let raw = i128::from(server_ms) - i128::from(local_ms);
        let offset = raw.clamp(-max, max);
        let offset_ms = i64::try_from(offset).unwrap_or(0);
        let reading = Reading {
            server_ms: local_ms.saturating_add_signed(offset_ms),
            mono_ms,
        };
        let before = self.furthest.map(|f| f.at(mono_ms));
        let furthest = match self.furthest {
            Some(f) if f.at(mono_ms) >= reading.server_ms => f,
            _ => reading,
        };
        Synced {
            clock: ServerClock {
                offset_ms,
                furthest: Some(furthest),
            },
            clamped: offset != raw,
            behind_ms: before.map_or(0, |b| b.saturating_sub(reading.server_ms)),
        }
    }

    /// The server's time when this device's wall clock reads `local_ms` and its
    /// monotonic clock `mono_ms`.
    pub(crate) fn at(self, local_ms: u64, mono_ms: u64) -> UnixMillis {
        let by_offset = local_ms.saturating_add_signed(self.offset_ms);
        let floor = self
            .furthest
            .map_or(0, |f| f.at(mono_ms).saturating_sub(REWIND_TOLERANCE_MS));
        UnixMillis(by_offset.max(floor))
    }
}

/// What [`ServerClock::sync`] made of a hello's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Synced {
    /// The clock to use from now on.
    pub clock: ServerClock,
    /// The reading was further from this device's clock than allowed.
    pub clamped: bool,
    /// How far behind the furthest reading so far (run on to now) this one was, ms.
    pub behind_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    const LOCAL: u64 = 1_000_000_000_000;

    /// Review L3: a server clock far from this device's is clamped to the bound, so a
    /// compromised server cannot make expired certificates verify again by rewinding
    /// time by a year.
    #[test]
    fn the_servers_clock_offset_is_clamped_to_the_bound() {
        let fresh = ServerClock::default();
        let synced = fresh.sync(LOCAL + HOUR, LOCAL, 0, 24 * HOUR);
        assert!(!synced.clamped);
        assert_eq!(synced.clock.at(LOCAL, 0), UnixMillis(LOCAL + HOUR));
        let year = 365 * 24 * HOUR;
        let synced = fresh.sync(LOCAL - year, LOCAL, 0, 24 * HOUR);
        assert!(synced.clamped);
        assert_eq!(synced.clock.at(LOCAL, 0), UnixMillis(LOCAL - 24 * HOUR));
        let synced = fresh.sync(u64::MAX, 0, 0, u64::MAX);
        assert!(synced.clamped, "an offset beyond i64 is clamped too");
        assert_eq!(synced.clock.offset_ms, i64::MAX);
    }

    /// A server that answers a reconnect's hello with a clock a day behind the one it
    /// gave before moves the time seen here back by the tolerance at most, so no
    /// deadline moves out by more.
    #[test]
    fn a_later_hello_cannot_move_the_servers_time_back_beyond_the_tolerance() {
        let max = 24 * HOUR;
        let first = ServerClock::default().sync(LOCAL + 5_000, LOCAL, 0, max);
        assert_eq!(first.behind_ms, 0);
        assert_eq!(first.clock.at(LOCAL, 0), UnixMillis(LOCAL + 5_000));
        // A minute later, a day behind.
        let later = LOCAL + 60_000;
        let rewound = first.clock.sync(later - max, later, 60_000, max);
        assert_eq!(rewound.behind_ms, max + 5_000);
        let floor = LOCAL + 65_000 - REWIND_TOLERANCE_MS;
        assert_eq!(rewound.clock.at(later, 60_000), UnixMillis(floor));
        // Rewinding again and again does not lower the floor.
        let again = rewound.clock.sync(later - max, later, 60_000, max).clock;
        assert_eq!(again.at(later, 60_000), UnixMillis(floor));
        // Forwards is taken.
        let ahead = again.sync(later + 9_000, later, 60_000, max);
        assert_eq!(ahead.behind_ms, 0);
        assert_eq!(ahead.clock.at(later, 60_000), UnixMillis(later + 9_000));
    }

    /// The offset follows the wall clock: a device asleep for days (its monotonic clock
    /// stopped) agrees with the server when it wakes, and a device whose wall clock was
    /// set forwards or back is put right by its next hello.
    #[test]
    fn the_offset_follows_the_wall_clock_through_sleep_and_clock_changes() {
        let max = 24 * HOUR;
        let synced = ServerClock::default().sync(LOCAL, LOCAL, 0, max).clock;
        let days = 3 * 24 * HOUR;
        assert_eq!(synced.at(LOCAL + days, 10), UnixMillis(LOCAL + days));
        // The wall clock is set an hour forwards ten seconds later; the next hello
        // (the server's clock ran on) sets the offset back, and time runs on.
        let next = synced.sync(LOCAL + 10_000, LOCAL + HOUR + 10_000, 10_000, max);
        assert_eq!(next.behind_ms, 0);
        assert_eq!(
            next.clock.at(LOCAL + HOUR + 11_000, 11_000),
            UnixMillis(LOCAL + 11_000)
        );
    }
}
