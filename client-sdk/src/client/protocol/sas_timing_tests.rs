//! The round timers in virtual time.
#![allow(clippy::unwrap_used)]

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_round_starts_once_the_epoch_has_settled_and_a_newer_epoch_restarts_the_wait() {
    let t0 = Instant::now();
    let mut timing = SasTiming::default();
    timing.epoch_entered(Epoch(3), t0);
    assert_eq!(timing.next_wake(), Some(t0 + SETTLE));
    assert_eq!(timing.start_due(t0 + SETTLE - ms(1)), None);
    // The same epoch again (another input of the same switch) keeps the timer.
    timing.epoch_entered(Epoch(3), t0 + ms(200));
    // A newer epoch before the start: its own full wait, one round for the last epoch.
    timing.epoch_entered(Epoch(4), t0 + ms(300));
    assert_eq!(timing.start_due(t0 + SETTLE), None);
    assert_eq!(timing.next_wake(), Some(t0 + ms(300) + SETTLE));
    assert_eq!(timing.start_due(t0 + ms(300) + SETTLE), Some(Epoch(4)));
    assert_eq!(timing.start_due(t0 + ms(5_000)), None);
}

#[test]
fn periodic_resends_back_off_and_stop() {
    let t0 = Instant::now();
    let mut timing = SasTiming::default();
    timing.epoch_entered(Epoch(1), t0);
    let start = t0 + SETTLE;
    assert_eq!(timing.start_due(start), Some(Epoch(1)));
    let mut now = start;
    let mut gaps = Vec::new();
    while let Some(at) = timing.next_wake() {
        assert!(!timing.resend_due(at - ms(1)));
        assert!(timing.resend_due(at));
        gaps.push(at - now);
        now = at;
    }
    assert_eq!(
        gaps,
        vec![ms(1_000), ms(2_000), ms(4_000), ms(8_000)],
        "RESENDS resends, each wait twice the one before"
    );
    assert_eq!(u32::try_from(gaps.len()).unwrap(), RESENDS);
}

#[test]
fn a_member_joining_brings_a_resend_forward_once_for_a_burst() {
    let t0 = Instant::now();
    let mut timing = SasTiming::default();
    timing.epoch_entered(Epoch(1), t0);
    // Before the round starts, a join needs nothing: the start reaches the room.
    timing.member_joined(t0 + ms(10));
    assert_eq!(timing.next_wake(), Some(t0 + SETTLE));
    let start = t0 + SETTLE;
    timing.start_due(start);
    // A burst of joins: one resend, JOIN_COALESCE after the first.
    timing.member_joined(start + ms(100));
    timing.member_joined(start + ms(120));
    timing.member_joined(start + ms(150));
    let first = start + ms(100) + JOIN_COALESCE;
    assert_eq!(timing.next_wake(), Some(first));
    assert!(timing.resend_due(first));
    // The periodic schedule goes on afterwards, all RESENDS of it.
    let mut periodic = 0;
    while let Some(at) = timing.next_wake() {
        assert!(timing.resend_due(at));
        periodic += 1;
    }
    assert_eq!(periodic, RESENDS);
}

#[test]
fn a_join_after_the_resends_are_spent_resends_once_and_a_new_epoch_cancels_resends() {
    let t0 = Instant::now();
    let mut timing = SasTiming::default();
    timing.epoch_entered(Epoch(1), t0);
    timing.start_due(t0 + SETTLE);
    while let Some(at) = timing.next_wake() {
        timing.resend_due(at);
    }
    let late = t0 + ms(60_000);
    timing.member_joined(late);
    assert!(timing.resend_due(late + JOIN_COALESCE));
    assert_eq!(timing.next_wake(), None);
    // A resend pending for the old round is dropped when a new epoch comes.
    timing.member_joined(late + ms(1_000));
    timing.epoch_entered(Epoch(2), late + ms(1_001));
    assert_eq!(timing.next_wake(), Some(late + ms(1_001) + SETTLE));
}

/// A server that announces the same member joining over and over (or a meeting whose
/// members trickle in for hours) gets one resend per join, and the periodic schedule
/// stays as it was. Before, every join-triggered resend doubled the periodic interval:
/// after ~62 joins `Instant + Duration` overflowed and the client core panicked.
#[test]
fn joins_announced_without_end_never_stretch_the_schedule_or_overflow_it() {
    let t0 = Instant::now();
    let mut timing = SasTiming::default();
    timing.epoch_entered(Epoch(1), t0);
    let start = t0 + SETTLE;
    assert_eq!(timing.start_due(start), Some(Epoch(1)));
    let longest = FIRST_RESEND * 2u32.pow(RESENDS);
    let mut now = start;
    let mut resends = 0u32;
    for _ in 0..10_000 {
        now += ms(150);
        timing.member_joined(now);
        let wake = timing.next_wake().unwrap();
        assert!(wake <= now + longest, "a timer {:?} away", wake - now);
        while let Some(at) = timing.next_wake().filter(|at| *at < now + ms(150)) {
            assert!(timing.resend_due(at));
            resends += 1;
        }
    }
    // One resend per join (they are further apart than JOIN_COALESCE), plus the
    // periodic ones of the first seconds.
    assert!(
        (10_000..=10_000 + RESENDS).contains(&resends),
        "{resends} resends"
    );
    // The joins stop: nothing is left but the last join's resend.
    let mut left = 0;
    while let Some(at) = timing.next_wake() {
        assert!(timing.resend_due(at));
        left += 1;
    }
    assert!(left <= 1, "{left} resends after the joins stopped");
}
