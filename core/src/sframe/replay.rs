//! Per-KID replay protection: a sliding window over the last 1024 frame counters.
//!
//! The window remembers the newest accepted counter `newest` and one bit for each counter
//! in `newest - 1023 ..= newest`, stored as a ring of sixteen `u64` words indexed by
//! `ctr % 1024` (no allocation, constant size). A counter is fresh if it is newer than
//! `newest`, or inside the window with its bit clear. Anything further behind cannot be
//! proven fresh and is rejected as too old.
//!
//! Use [`ReplayWindow::check`] before decrypting and [`ReplayWindow::accept`] only after
//! the frame authenticated, so forged frames can never burn a counter.

use super::{Kid, SframeError};

/// Number of counters the replay window tracks.
pub const REPLAY_WINDOW_SIZE: u64 = 1024;

/// Bits per bitmap word.
const WORD_BITS: u64 = u64::BITS as u64;
/// Number of bitmap words.
const WORDS: usize = (REPLAY_WINDOW_SIZE / WORD_BITS) as usize;

/// Sliding-window replay detector for the frames of one KID.
#[derive(Clone)]
pub struct ReplayWindow {
    kid: Kid,
    newest: Option<u64>,
    seen: [u64; WORDS],
}

impl ReplayWindow {
    /// An empty window for frames carrying `kid` (the KID only labels errors).
    #[must_use]
    pub const fn new(kid: Kid) -> Self {
        Self {
            kid,
            newest: None,
            seen: [0; WORDS],
        }
    }

    /// The newest counter accepted so far, if any.
    #[must_use]
    pub const fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Checks whether `ctr` may still be accepted, without recording it.
    ///
    /// # Errors
    /// [`SframeError::Replayed`] if `ctr` was already accepted, [`SframeError::TooOld`] if
    /// it is 1024 or more behind the newest accepted counter.
    pub fn check(&self, ctr: u64) -> Result<(), SframeError> {
        let Some(newest) = self.newest else {
            return Ok(());
        };
        if ctr > newest {
            return Ok(());
        }
        let kid = self.kid.value();
        if newest - ctr >= REPLAY_WINDOW_SIZE {
            return Err(SframeError::TooOld { kid, ctr });
        }
        if self.is_marked(ctr) {
            return Err(SframeError::Replayed { kid, ctr });
        }
        Ok(())
    }

    /// Records `ctr` as received. Call only after the frame authenticated and
    /// [`check`](Self::check) passed; a counter that is already too old is ignored.
    pub fn accept(&mut self, ctr: u64) {
        match self.newest {
            Some(newest) if ctr <= newest => {
                if newest - ctr < REPLAY_WINDOW_SIZE {
                    self.mark(ctr, true);
                }
            }
            Some(newest) if ctr - newest < REPLAY_WINDOW_SIZE => {
                // Slide forward: counters newest+1 ..= ctr enter the window unseen.
                for skipped in newest + 1..=ctr {
                    self.mark(skipped, false);
                }
                self.mark(ctr, true);
                self.newest = Some(ctr);
            }
            _ => {
                // First frame, or a jump past the whole window: nothing old stays inside.
                self.seen = [0; WORDS];
                self.mark(ctr, true);
                self.newest = Some(ctr);
            }
        }
    }

    /// Word index and bit mask of `ctr` in the ring.
    fn slot(ctr: u64) -> (usize, u64) {
        let position = ctr % REPLAY_WINDOW_SIZE;
        // position / 64 < WORDS, so the cast cannot truncate.
        ((position / WORD_BITS) as usize, 1 << (position % WORD_BITS))
    }

    fn is_marked(&self, ctr: u64) -> bool {
        let (word, mask) = Self::slot(ctr);
        self.seen.get(word).is_some_and(|bits| bits & mask != 0)
    }

    fn mark(&mut self, ctr: u64, seen: bool) {
        let (word, mask) = Self::slot(ctr);
        if let Some(bits) = self.seen.get_mut(word) {
            if seen {
                *bits |= mask;
            } else {
                *bits &= !mask;
            }
        }
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("kid", &self.kid)
            .field("newest", &self.newest)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID: Kid = Kid::new(0x1005);

    fn accept_checked(window: &mut ReplayWindow, ctr: u64) -> Result<(), SframeError> {
        window.check(ctr)?;
        window.accept(ctr);
        Ok(())
    }

    #[test]
    fn window_accepts_increasing_counters_once() {
        let mut window = ReplayWindow::new(KID);
        for ctr in 0..3000 {
            accept_checked(&mut window, ctr).unwrap();
            assert_eq!(
                window.check(ctr),
                Err(SframeError::Replayed {
                    kid: KID.value(),
                    ctr
                })
            );
        }
        assert_eq!(window.newest(), Some(2999));
    }

    #[test]
    fn window_check_alone_does_not_record() {
        let mut window = ReplayWindow::new(KID);
        window.check(5).unwrap();
        window.check(5).unwrap();
        accept_checked(&mut window, 5).unwrap();
        assert!(window.check(5).is_err());
    }

    #[test]
    fn window_accepts_out_of_order_counter_inside_window_once() {
        let mut window = ReplayWindow::new(KID);
        accept_checked(&mut window, 100).unwrap();
        accept_checked(&mut window, 98).unwrap();
        accept_checked(&mut window, 99).unwrap();
        assert!(matches!(
            window.check(98),
            Err(SframeError::Replayed { ctr: 98, .. })
        ));
        assert_eq!(window.newest(), Some(100));
    }

    #[test]
    fn window_rejects_counters_behind_the_window_as_too_old() {
        let mut window = ReplayWindow::new(KID);
        accept_checked(&mut window, 2000).unwrap();
        let oldest_allowed = 2000 - (REPLAY_WINDOW_SIZE - 1);
        assert_eq!(
            window.check(oldest_allowed - 1),
            Err(SframeError::TooOld {
                kid: KID.value(),
                ctr: oldest_allowed - 1
            })
        );
        accept_checked(&mut window, oldest_allowed).unwrap();
    }

    #[test]
    fn window_slide_forgets_bits_of_counters_that_left_the_window() {
        let mut window = ReplayWindow::new(KID);
        accept_checked(&mut window, 10).unwrap();
        // 1034 maps to the same ring slot as 10; the slide must clear it first.
        accept_checked(&mut window, 1033).unwrap();
        accept_checked(&mut window, 1034).unwrap();
        assert!(matches!(window.check(10), Err(SframeError::TooOld { .. })));
        // Counters skipped by the slide are still acceptable.
        accept_checked(&mut window, 500).unwrap();
    }

    #[test]
    fn window_big_jump_forward_slides_the_whole_window() {
        let mut window = ReplayWindow::new(KID);
        for ctr in 0..10 {
            accept_checked(&mut window, ctr).unwrap();
        }
        accept_checked(&mut window, 1_000_000).unwrap();
        assert!(matches!(window.check(9), Err(SframeError::TooOld { .. })));
        // The slot of 1_000_000 - 1024 was cleared, so its neighbour in the window is fresh.
        accept_checked(&mut window, 1_000_000 - 1023).unwrap();
        accept_checked(&mut window, u64::MAX).unwrap();
        assert!(window.check(u64::MAX).is_err());
    }

    #[test]
    fn window_accept_of_too_old_counter_is_ignored() {
        let mut window = ReplayWindow::new(KID);
        window.accept(5000);
        window.accept(1);
        assert_eq!(window.newest(), Some(5000));
        assert!(matches!(window.check(1), Err(SframeError::TooOld { .. })));
    }
}
