//! The scheduler's rules in virtual time.

use super::*;

const DELAY: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_secs(10);

fn rules() -> Rules {
    Rules {
        delay: DELAY,
        min_interval: INTERVAL,
        max_interval: INTERVAL * 8,
        max_attempts: 3,
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(60),
        max_tracked_devices: 4,
    }
}

fn dev(n: u8) -> DeviceIdBytes {
    [n; 16]
}

/// Every job due by `now`.
fn drain(s: &mut Scheduler, now: Instant) -> Vec<Job> {
    std::iter::from_fn(|| s.poll_job(now)).collect()
}

#[test]
fn a_wake_up_goes_out_after_the_delay_not_before() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    assert_eq!(s.stored(dev(1), false, 5_000, t0), Noted::Scheduled);
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY));
    assert!(drain(&mut s, t0 + DELAY - Duration::from_millis(1)).is_empty());
    let jobs = drain(&mut s, t0 + DELAY);
    assert_eq!(
        jobs,
        [Job {
            device: dev(1),
            urgent: false,
            expires_at_ms: 5_000,
            attempt: 1
        }]
    );
    assert_eq!(
        s.completed(&dev(1), Outcome::Sent, t0 + DELAY),
        Concluded::Done
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_flood_of_containers_to_one_device_makes_one_wake_up_per_interval() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    let mut sent = 0;
    let mut now = t0;
    // 1,000 containers over 30 s of virtual time.
    for i in 0..1_000u64 {
        now = t0 + Duration::from_millis(i * 30);
        s.stored(dev(1), i == 900, 10_000 + i, now);
        for job in drain(&mut s, now) {
            sent += 1;
            s.completed(&job.device, Outcome::Sent, now);
        }
    }
    for job in drain(&mut s, now + INTERVAL) {
        sent += 1;
        assert!(job.urgent, "the urgent container's wake-up is urgent");
        assert_eq!(job.expires_at_ms, 10_999, "the latest expiry is carried");
        s.completed(&job.device, Outcome::Sent, now + INTERVAL);
    }
    // t = 1 s, 11 s (10 s later), 31 s (20 s: the device never answered): the rest
    // are folded into those.
    assert_eq!(sent, 3);
}

#[test]
fn containers_during_an_attempt_make_one_follow_up_after_the_interval() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    let job = s.poll_job(t0 + DELAY).unwrap();
    assert_eq!(s.stored(dev(1), true, 9, t0 + DELAY), Noted::Folded);
    assert_eq!(s.stored(dev(1), false, 2, t0 + DELAY), Noted::Folded);
    s.completed(&job.device, Outcome::Sent, t0 + DELAY);
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY + INTERVAL));
    let next = drain(&mut s, t0 + DELAY + INTERVAL);
    assert_eq!(next.len(), 1);
    assert!(next[0].urgent);
    assert_eq!(next[0].expires_at_ms, 9);
}

#[test]
fn a_busy_push_service_is_retried_with_doubling_backoff_then_given_up() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    let mut now = t0 + DELAY;
    let retry = Outcome::Retry { retry_after: None };
    let job = s.poll_job(now).unwrap();
    assert_eq!(job.attempt, 1);
    assert_eq!(s.completed(&dev(1), retry, now), Concluded::Retrying);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(2)));
    now += Duration::from_secs(2);
    assert_eq!(s.poll_job(now).unwrap().attempt, 2);
    assert_eq!(s.completed(&dev(1), retry, now), Concluded::Retrying);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(4)));
    now += Duration::from_secs(4);
    assert_eq!(s.poll_job(now).unwrap().attempt, 3);
    assert_eq!(s.completed(&dev(1), retry, now), Concluded::GaveUp);
    assert_eq!(s.poll_timeout(), None);
    // Kept for the interval: the next container waits for it.
    s.stored(dev(1), false, 1, now);
    assert_eq!(s.poll_timeout(), Some(now + INTERVAL));
}

#[test]
fn retry_after_is_honoured_within_the_bounds() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    s.poll_job(t0 + DELAY).unwrap();
    let long = Outcome::Retry {
        retry_after: Some(Duration::from_secs(3_600)),
    };
    s.completed(&dev(1), long, t0 + DELAY);
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY + Duration::from_secs(60)));
    s.poll_job(t0 + DELAY + Duration::from_secs(60)).unwrap();
    let short = Outcome::Retry {
        retry_after: Some(Duration::from_millis(1)),
    };
    let at = t0 + DELAY + Duration::from_secs(60);
    s.completed(&dev(1), short, at);
    // Never sooner than the backoff (2 s · 2 for the second retry).
    assert_eq!(s.poll_timeout(), Some(at + Duration::from_secs(4)));
}

#[test]
fn a_device_that_connects_is_not_woken() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), true, 1, t0);
    s.connected(&dev(1), t0);
    assert_eq!(s.poll_timeout(), None);
    assert!(drain(&mut s, t0 + INTERVAL).is_empty());
    assert_eq!(s.tracked(), 0);
}

#[test]
fn a_device_that_connects_during_an_attempt_gets_no_retry_or_follow_up() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    s.poll_job(t0 + DELAY).unwrap();
    s.stored(dev(1), false, 1, t0 + DELAY);
    s.connected(&dev(1), t0);
    let outcome = Outcome::Retry { retry_after: None };
    assert_eq!(s.completed(&dev(1), outcome, t0 + DELAY), Concluded::Done);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_gone_subscription_ends_the_wake_up_and_counts_against_the_rate_limit() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    s.poll_job(t0 + DELAY).unwrap();
    assert_eq!(
        s.completed(&dev(1), Outcome::Failed, t0 + DELAY),
        Concluded::Done
    );
    assert_eq!(s.poll_timeout(), None);
    s.stored(dev(1), false, 1, t0 + DELAY);
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY + INTERVAL));
}

#[test]
fn state_is_bounded_and_idle_records_make_room() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    for n in 0..4 {
        assert_eq!(s.stored(dev(n), false, 1, t0), Noted::Scheduled);
    }
    assert_eq!(s.stored(dev(9), false, 1, t0), Noted::Refused);
    // Folding into a tracked device still works at the bound.
    assert_eq!(s.stored(dev(0), false, 1, t0), Noted::Folded);
    for job in drain(&mut s, t0 + DELAY) {
        s.completed(&job.device, Outcome::Sent, t0 + DELAY);
    }
    // Kept for the rate limit until their interval passes.
    assert_eq!(s.tracked(), 4);
    assert_eq!(s.stored(dev(9), false, 1, t0 + DELAY), Noted::Refused);
    let later = t0 + DELAY + INTERVAL;
    assert_eq!(s.stored(dev(9), false, 1, later), Noted::Scheduled);
    assert_eq!(s.tracked(), 1);
}

#[test]
fn skipped_wake_ups_leave_no_state() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    s.poll_job(t0 + DELAY).unwrap();
    s.completed(&dev(1), Outcome::Skipped, t0 + DELAY);
    assert_eq!(s.tracked(), 0);
    // An unknown completion is harmless.
    assert_eq!(s.completed(&dev(7), Outcome::Sent, t0), Concluded::Done);
}

#[test]
fn containers_during_failing_attempts_never_outpace_the_backoff() {
    // The push service answers 429 with a long Retry-After while containers keep
    // coming: requests go no faster than the backoff, and the attempts still run out.
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    let mut now = t0 + DELAY;
    let mut requests = Vec::new();
    let mut gave_up = false;
    for _ in 0..100 {
        let Some(job) = s.poll_job(now) else {
            // A container half a second later, then on to the next due time.
            s.stored(dev(1), false, 1, now + Duration::from_millis(500));
            now = s.poll_timeout().unwrap();
            continue;
        };
        requests.push((now, job.attempt));
        s.stored(dev(1), false, 1, now);
        let busy = Outcome::Retry {
            retry_after: Some(Duration::from_secs(3_600)),
        };
        if s.completed(&dev(1), busy, now) == Concluded::GaveUp {
            gave_up = true;
            break;
        }
    }
    assert!(gave_up, "{requests:?}");
    let attempts: Vec<u32> = requests.iter().map(|(_, a)| *a).collect();
    assert_eq!(attempts, [1, 2, 3]);
    for pair in requests.windows(2) {
        // retry_max (60 s) each time: Retry-After within the bound.
        assert_eq!(pair[1].0 - pair[0].0, Duration::from_secs(60));
    }
}

#[test]
fn the_interval_doubles_while_the_device_does_not_answer_and_resets_when_it_connects() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    let mut now = t0;
    let mut gaps = Vec::new();
    let mut last: Option<Instant> = None;
    for _ in 0..6 {
        s.stored(dev(1), false, 1, now);
        now = s.poll_timeout().unwrap();
        let job = s.poll_job(now).unwrap();
        s.completed(&job.device, Outcome::Sent, now);
        if let Some(last) = last {
            gaps.push((now - last).as_secs());
        }
        last = Some(now);
    }
    // 1 s delay, then 10, 20, 40, 80 s, capped at 80 (max_interval).
    assert_eq!(gaps, [10, 20, 40, 80, 80]);
    s.connected(&dev(1), now);
    s.stored(dev(1), false, 1, now);
    assert_eq!(s.poll_timeout(), Some(now + INTERVAL));
}

#[test]
fn due_urgent_wake_ups_go_out_before_normal_ones() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    s.stored(dev(1), false, 1, t0);
    s.stored(dev(2), false, 1, t0 + Duration::from_millis(1));
    s.stored(dev(3), true, 1, t0 + Duration::from_millis(2));
    // A normal one made urgent by a later container moves ahead too.
    s.stored(dev(2), true, 1, t0 + Duration::from_millis(3));
    let order: Vec<u8> = drain(&mut s, t0 + DELAY * 2)
        .iter()
        .map(|j| j.device[0])
        .collect();
    assert_eq!(order, [2, 3, 1]);
}

#[test]
fn three_refusals_in_a_row_drop_the_subscription() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(rules());
    let mut now = t0;
    let mut concluded = Vec::new();
    for _ in 0..3 {
        s.stored(dev(1), false, 1, now);
        now = s.poll_timeout().unwrap();
        s.poll_job(now).unwrap();
        concluded.push(s.completed(&dev(1), Outcome::Rejected, now));
    }
    assert_eq!(
        concluded,
        [
            Concluded::Done,
            Concluded::Done,
            Concluded::DropSubscription
        ]
    );
}
