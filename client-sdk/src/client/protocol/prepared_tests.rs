use conclave_proto::v1;

use super::*;
use crate::client::protocol::fixtures::{dev, device, meeting_id, member, recipient, started};
use crate::meeting::rekey::RekeyConfig;
use crate::time::DAY_MS;

const T0: UnixMillis = UnixMillis(1_000_000);
/// The settling time of these tests, ms.
const PREPARE_AFTER_MS: u64 = 1_000;

fn preparations() -> Preparations {
    Preparations::new(Some(PREPARE_AFTER_MS))
}

fn at(ms: u64) -> UnixMillis {
    UnixMillis(T0.0 + ms)
}

/// Device 1's preparation for devices `ns` (generation 0, prekeys valid for a week).
fn prepared_for(ns: &[u8], now: UnixMillis) -> PreparedRekey {
    let recipients: Vec<_> = ns.iter().map(|n| recipient(*n, 0, 7 * DAY_MS)).collect();
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
    let seal = PreparedSeal::new(&device(1), &recipients, now, &mut rng).expect("prepared");
    let members: Vec<RosterMember> = ns.iter().map(|n| member(*n, 0)).collect();
    PreparedRekey::new(seal, &members)
}

use rand_core::SeedableRng;

/// Device 1 leads a meeting with devices 2 and 3, and checked it at `T0`.
fn checked(preps: &mut Preparations) -> MeetingState {
    let state = started(meeting_id(7));
    preps.observe(&state, T0);
    assert_eq!(
        preps.plan(&state, at(PREPARE_AFTER_MS)),
        Plan::Make(vec![member(2, 0), member(3, 0)])
    );
    state
}

/// [`checked`], then device 1's preparation for devices `ns`, made at 1 s.
fn made_for(ns: &[u8]) -> (Preparations, MeetingState) {
    let mut preps = preparations();
    let state = checked(&mut preps);
    preps.made(
        &meeting_id(7),
        Some(prepared_for(ns, at(1_000))),
        at(1_000),
        0,
    );
    (preps, state)
}

#[test]
fn a_leader_prepares_once_its_meeting_has_settled() {
    let mut preps = preparations();
    let state = started(meeting_id(7));
    preps.observe(&state, T0);
    assert_eq!(preps.next_at(), Some(at(PREPARE_AFTER_MS)));
    assert!(preps.due(at(PREPARE_AFTER_MS - 1)).is_empty());
    assert_eq!(preps.due(at(PREPARE_AFTER_MS)), vec![meeting_id(7)]);
    // Observing again (other outputs of the same epoch) does not push the check back.
    preps.observe(&state, at(500));
    assert_eq!(preps.next_at(), Some(at(PREPARE_AFTER_MS)));
    assert_eq!(
        preps.plan(&state, at(PREPARE_AFTER_MS)),
        Plan::Make(vec![member(2, 0), member(3, 0)])
    );
    // Checked at this epoch: nothing is scheduled until it changes.
    preps.observe(&state, at(2_000));
    assert_eq!(preps.next_at(), None);
}

/// After a Rekey used the preparation (or a join added a member), the new epoch is
/// checked once it settles, although a refresh of the old preparation was scheduled
/// far later.
#[test]
fn a_new_epoch_is_checked_once_it_settles() {
    let (mut preps, mut state) = made_for(&[2, 3]);
    assert_eq!(preps.next_at(), Some(at(1_000 + MAX_AGE_MS)));
    state
        .remove(&[], &[dev(3)], at(2_000))
        .expect("the leader removes");
    state.handle_timeout(at(3_000), &mut rand_chacha::ChaCha20Rng::from_seed([1; 32]));
    while let Some(out) = state.poll_output() {
        if let crate::meeting::rekey::MeetingOutput::Send {
            rekey_epoch: Some(e),
            ..
        } = out
        {
            let taken = preps.take_for(&meeting_id(7), &[member(2, 0)], at(3_000));
            assert!(taken.is_some());
            state.rekey_delivered(e, at(3_010)).expect("delivered");
        }
    }
    assert_eq!(state.phase(), Phase::Steady);
    preps.observe(&state, at(3_010));
    assert_eq!(preps.next_at(), Some(at(3_010 + PREPARE_AFTER_MS)));
    assert_eq!(
        preps.plan(&state, at(4_010)),
        Plan::Make(vec![member(2, 0)])
    );
}

#[test]
fn a_made_preparation_is_refreshed_before_it_ages_out() {
    let (mut preps, state) = made_for(&[2, 3]);
    assert_eq!(preps.next_at(), Some(at(1_000 + MAX_AGE_MS)));
    assert_eq!(preps.plan(&state, at(2_000)), Plan::Nothing);
    // Past its age it is made anew, for everyone.
    assert_eq!(
        preps.plan(&state, at(1_000 + MAX_AGE_MS)),
        Plan::Make(vec![member(2, 0), member(3, 0)])
    );
}

#[test]
fn a_member_without_an_entry_is_topped_up() {
    let (mut preps, state) = made_for(&[2]);
    assert_eq!(
        preps.plan(&state, at(2_000)),
        Plan::TopUp(vec![member(3, 0)])
    );
}

/// An entry made for keys the roster no longer pins (the device's certificate was
/// replaced) is never used: that device is wrapped for again.
#[test]
fn an_entry_for_keys_no_longer_pinned_is_not_used() {
    let (mut preps, _) = made_for(&[2, 3]);
    let recipients = [member(2, 0), member(3, 1)];
    let (ready, served, missing) = preps
        .take_for(&meeting_id(7), &recipients, at(2_000))
        .expect("ready");
    assert_eq!(served, vec![dev(2)]);
    assert_eq!(missing, vec![member(3, 1)]);
    // Its stale entry is gone from what the Rekey holds, so the device's fresh entry
    // goes in instead (before, adding it failed as a duplicate and the Rekey reached
    // nobody).
    let mut ready = ready;
    assert!(!ready.seal.has(&dev(3)));
    ready
        .seal
        .add(&device(1), &[recipient(3, 1, 7 * DAY_MS)], at(2_000))
        .expect("the fresh entry is added");
}

/// A preparation is never used once it is [`MAX_AGE_MS`] old, even when the leader
/// could not look at it in time (offline, or in the middle of a rekey).
#[test]
fn an_aged_preparation_is_never_used() {
    let (mut preps, _) = made_for(&[2, 3]);
    let recipients = [member(2, 0)];
    assert!(
        preps
            .take_for(&meeting_id(7), &recipients, at(1_000 + MAX_AGE_MS))
            .is_none()
    );
    assert_eq!(preps.devices(&meeting_id(7)), 0);
}

#[test]
fn an_aged_preparation_is_dropped_even_during_a_rekey() {
    let (mut preps, mut state) = made_for(&[2, 3]);
    state
        .remove(&[], &[dev(3)], at(2_000))
        .expect("the leader removes");
    assert_eq!(preps.plan(&state, at(1_000 + MAX_AGE_MS)), Plan::Nothing);
    assert_eq!(preps.devices(&meeting_id(7)), 0);
}

/// A member whose certificate or prekey keeps expiring within the margin cannot make
/// the leader fetch and wrap in a loop: the next check is at least
/// [`RETRY_AFTER_MS`] away.
#[test]
fn entries_that_expire_at_once_do_not_make_the_leader_fetch_in_a_loop() {
    let mut preps = preparations();
    let state = checked(&mut preps);
    let now = at(2_000);
    let soon = recipient(3, 0, now.0 + EXPIRY_MARGIN_MS / 2);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
    let seal = PreparedSeal::new(&device(1), &[soon], now, &mut rng).expect("prepared");
    preps.made(
        &meeting_id(7),
        Some(PreparedRekey::new(seal, &[member(3, 0)])),
        now,
        0,
    );
    assert_eq!(preps.next_at(), Some(UnixMillis(now.0 + RETRY_AFTER_MS)));
    // And the directory's own wait, when longer, is kept.
    preps.made(&meeting_id(7), None, now, 45_000);
    assert_eq!(preps.next_at(), Some(UnixMillis(now.0 + 45_000)));
    assert_eq!(
        preps.plan(&state, UnixMillis(now.0 + 45_000)),
        Plan::TopUp(vec![member(2, 0), member(3, 0)])
    );
}

/// After the connection is lost every preparation is dropped, and the meeting is
/// checked again once it is observed steady.
#[test]
fn a_lost_connection_drops_every_preparation() {
    let (mut preps, state) = made_for(&[2, 3]);
    preps.connection_lost();
    assert_eq!(preps.devices(&meeting_id(7)), 0);
    assert_eq!(preps.next_at(), None);
    preps.observe(&state, at(5_000));
    assert_eq!(preps.next_at(), Some(at(5_000 + PREPARE_AFTER_MS)));
}

#[test]
fn a_preparation_serves_one_rekey() {
    let (mut preps, state) = made_for(&[2, 3]);
    let recipients = [member(2, 0)];
    let (_, served, missing) = preps
        .take_for(&meeting_id(7), &recipients, at(2_000))
        .expect("ready");
    assert_eq!((served, missing), (vec![dev(2)], vec![]));
    assert!(
        preps
            .take_for(&meeting_id(7), &recipients, at(2_000))
            .is_none()
    );
    // The next check makes a new one.
    assert_eq!(
        preps.plan(&state, at(3_000)),
        Plan::Make(vec![member(2, 0), member(3, 0)])
    );
}

/// A receiver must find its prekey valid when the Rekey arrives: an entry whose prekey
/// expires within the margin is neither used nor kept, and the refresh is scheduled
/// before the margin begins.
#[test]
fn entries_near_their_expiry_are_wrapped_anew() {
    let mut preps = preparations();
    let state = checked(&mut preps);
    let short = recipient(3, 0, T0.0 + 5 * EXPIRY_MARGIN_MS);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([6; 32]);
    let seal = PreparedSeal::new(
        &device(1),
        &[recipient(2, 0, 7 * DAY_MS), short],
        at(0),
        &mut rng,
    )
    .expect("prepared");
    preps.made(
        &meeting_id(7),
        Some(PreparedRekey::new(seal, &[member(2, 0), member(3, 0)])),
        at(0),
        0,
    );
    let refresh = T0.0 + 4 * EXPIRY_MARGIN_MS;
    assert_eq!(preps.next_at(), Some(UnixMillis(refresh)));
    assert_eq!(
        preps.plan(&state, UnixMillis(refresh)),
        Plan::TopUp(vec![member(3, 0)])
    );
    let (_, served, missing) = preps
        .take_for(
            &meeting_id(7),
            &[member(2, 0), member(3, 0)],
            UnixMillis(refresh),
        )
        .expect("ready");
    assert_eq!(served, vec![dev(2)]);
    assert_eq!(missing, vec![member(3, 0)]);
}

#[test]
fn nothing_is_prepared_while_a_rekey_is_under_way() {
    let mut preps = preparations();
    let mut state = started(meeting_id(7));
    state
        .remove(&[], &[dev(3)], T0)
        .expect("the leader removes");
    preps.observe(&state, T0);
    assert_eq!(preps.next_at(), None);
    assert_eq!(preps.plan(&state, at(5_000)), Plan::Nothing);
}

#[test]
fn a_failed_preparation_is_tried_again_later() {
    let mut preps = preparations();
    checked(&mut preps);
    preps.failed(&meeting_id(7), at(1_000));
    assert_eq!(preps.next_at(), Some(at(1_000 + RETRY_AFTER_MS)));
}

/// A device that is not (or no longer) the key leader holds no preparation: the keys
/// of a Rekey it will never send must not linger.
#[test]
fn only_the_key_leader_keeps_a_preparation() {
    let (mut preps, leader) = made_for(&[2, 3]);
    let invite = v1::MeetingInvite {
        meeting_id: meeting_id(7).as_bytes().to_vec(),
        epoch: 0,
        meeting_key: vec![9; 32],
        roster: leader.roster().to_proto(),
        key_leader_device_id: dev(1).as_bytes().to_vec(),
        ..Default::default()
    };
    let follower =
        MeetingState::from_invite(dev(2), &invite, RekeyConfig::default(), UnixMillis(0))
            .expect("joined");
    preps.observe(&follower, at(2_000));
    assert_eq!(preps.next_at(), None);
    assert!(
        preps
            .take_for(&meeting_id(7), &[member(3, 0)], at(2_000))
            .is_none()
    );

    let mut ended = started(meeting_id(8));
    preps.observe(&ended, T0);
    assert!(preps.next_at().is_some());
    ended.leave().expect("leaves");
    preps.observe(&ended, T0);
    assert_eq!(preps.next_at(), None);
}

#[test]
fn without_a_settling_time_nothing_is_prepared() {
    let mut preps = Preparations::new(None);
    let state = started(meeting_id(7));
    preps.observe(&state, T0);
    assert_eq!(preps.next_at(), None);
    assert_eq!(preps.plan(&state, at(5_000)), Plan::Nothing);
}

#[test]
fn a_preparation_prints_no_key() {
    let prepared = prepared_for(&[2], T0);
    let shown = format!("{prepared:?}");
    assert!(shown.starts_with("PreparedRekey"), "{shown}");
    assert!(shown.contains("members: 1"), "{shown}");
}
