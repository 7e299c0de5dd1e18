use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use conclave_proto::v1::RekeyReason;

use super::*;
use crate::client::protocol::fixtures::{dev, meeting_id, member};
use crate::meeting::rekey::{ControlMessage, Roster, RosterMember};
use crate::meeting::{Epoch, MeetingKey};

/// A Rekey of `epoch` whose key is 32 bytes of 0xAB.
fn rekey(recipients: Vec<RosterMember>, epoch: u64) -> Outgoing {
    let epoch = Epoch(epoch);
    let key = MeetingKey::from_slice(epoch, &[0xAB; 32]).expect("32 bytes");
    Outgoing {
        meeting: meeting_id(7),
        recipients,
        message: MeetingMessage {
            meeting_id: meeting_id(7),
            body: ControlMessage::Rekey {
                key,
                roster: Roster::default(),
                leader: dev(1),
                reason: RekeyReason::Remove,
            },
        },
        rekey_epoch: Some(epoch),
        attempt: 0,
    }
}

fn devices(out: &Outgoing) -> Vec<DeviceId> {
    out.devices().collect()
}

/// Review L6: a Rekey queued while the connection was down goes out after the
/// reconnect only to the devices still on the roster; a device removed meanwhile never
/// gets the new meeting key.
#[test]
fn a_rekey_queued_while_disconnected_skips_devices_removed_meanwhile() {
    let (me, bob, carol) = (member(1, 0), member(2, 0), member(3, 0));
    let mut outbox = Outbox::default();
    assert!(outbox.wait_for_connection(rekey(vec![bob.clone(), carol.clone()], 1)));
    // Carol is removed while this device is offline.
    let roster = Roster::new([me, bob]).unwrap();
    let flushed = outbox.take_waiting(|_| Some(&roster));
    assert_eq!(flushed.len(), 1);
    assert_eq!(devices(&flushed[0]), vec![dev(2)]);
    assert!(outbox.take_waiting(|_| Some(&roster)).is_empty());
}

/// A device whose certificate changed since the message was made is not sent the
/// message: containers are sealed only to the keys pinned on the roster.
#[test]
fn a_queued_message_skips_a_device_whose_pinned_keys_changed() {
    let (me, bob, carol) = (member(1, 0), member(2, 0), member(3, 0));
    let mut outbox = Outbox::default();
    assert!(outbox.wait_for_connection(rekey(vec![bob, carol.clone()], 1)));
    let roster = Roster::new([me, member(2, 1), carol]).unwrap();
    let flushed = outbox.take_waiting(|_| Some(&roster));
    assert_eq!(devices(&flushed[0]), vec![dev(3)]);
}

/// A `Leave` of a meeting that ended here still reaches every member.
#[test]
fn a_message_of_a_meeting_that_ended_here_keeps_every_recipient() {
    let mut outbox = Outbox::default();
    let mut leave = rekey(vec![member(2, 0), member(3, 0)], 0);
    leave.rekey_epoch = None;
    assert!(outbox.wait_for_connection(leave));
    let flushed = outbox.take_waiting(|_| None);
    assert_eq!(devices(&flushed[0]), vec![dev(2), dev(3)]);
}

/// Resends to the missed devices back off (250, 500, 1,000 ms), stop after three, and
/// follow the roster like queued messages.
#[test]
fn resends_back_off_stop_and_follow_the_roster() {
    let t0 = Instant::now();
    let (me, bob, carol) = (member(1, 0), member(2, 0), member(3, 0));
    let roster = Roster::new([me.clone(), bob.clone(), carol.clone()]).unwrap();
    let mut outbox = Outbox::default();
    let mut out = rekey(vec![bob.clone(), carol.clone()], 1);
    let reached = BTreeSet::from([dev(2)]);
    let mut at = t0;
    for (attempt, delay) in [250u64, 500, 1_000].into_iter().enumerate() {
        let outcome = outbox.sent(&out, &reached, 0, at);
        assert!(outcome.resending, "attempt {attempt} is resent");
        assert_eq!(
            outcome.rekey_delivered,
            Some(Epoch(1)),
            "Bob got it: the meeting switches"
        );
        assert!(outcome.dropped.is_empty());
        let due = at + Duration::from_millis(delay);
        assert_eq!(outbox.next_resend(), Some(due));
        assert!(
            outbox
                .take_due_resends(due - Duration::from_millis(1), |_| Some(&roster))
                .is_empty()
        );
        let mut resent = outbox.take_due_resends(due, |_| Some(&roster));
        assert_eq!(resent.len(), 1);
        out = resent.remove(0);
        assert_eq!(devices(&out), vec![dev(3)]);
        assert_eq!(out.attempt, u32::try_from(attempt).unwrap() + 1);
        at = due;
    }
    let outcome = outbox.sent(&out, &BTreeSet::new(), 0, at);
    assert!(!outcome.resending, "the resends are spent");
    assert_eq!(outcome.dropped, vec![dev(3)]);
    assert_eq!(outbox.next_resend(), None);

    // A resend whose recipient was removed meanwhile is not sent at all... unless it
    // is a Rekey whose delivery still has to be accounted for.
    let mut reply = rekey(vec![carol], 0);
    reply.rekey_epoch = None;
    outbox.sent(&reply, &BTreeSet::new(), 0, t0);
    let without_carol = Roster::new([me, bob]).unwrap();
    let far = t0 + Duration::from_secs(60);
    assert!(
        outbox
            .take_due_resends(far, |_| Some(&without_carol))
            .is_empty()
    );
}

/// Review L7: a Rekey that reached nobody does not switch the meeting while it is
/// being resent; once the resends are spent, the unreachable devices are dropped and
/// the meeting switches without them.
#[test]
fn a_rekey_that_reached_nobody_switches_only_once_its_resends_are_spent() {
    let t0 = Instant::now();
    let mut outbox = Outbox::default();
    let mut out = rekey(vec![member(2, 0)], 4);
    let outcome = outbox.sent(&out, &BTreeSet::new(), 0, t0);
    assert_eq!(outcome.rekey_delivered, None);
    assert!(outcome.resending);
    out.attempt = RESEND_ATTEMPTS;
    let outcome = outbox.sent(&out, &BTreeSet::new(), 0, t0);
    assert_eq!(
        outcome,
        SendOutcome {
            rekey_delivered: Some(Epoch(4)),
            dropped: vec![dev(2)],
            resending: false,
        }
    );
}

/// The directory's prekey rate limit sets the resend delay, up to 10 s.
#[test]
fn the_directorys_wait_sets_the_resend_delay_within_a_bound() {
    let t0 = Instant::now();
    let mut outbox = Outbox::default();
    let out = rekey(vec![member(2, 0)], 1);
    outbox.sent(&out, &BTreeSet::new(), 3_000, t0);
    assert_eq!(
        outbox.next_resend(),
        Some(t0 + Duration::from_millis(3_000))
    );
    let mut outbox = Outbox::default();
    outbox.sent(&out, &BTreeSet::new(), u64::MAX, t0);
    assert_eq!(
        outbox.next_resend(),
        Some(t0 + Duration::from_millis(MAX_RESEND_WAIT_MS))
    );
}

/// The outbox holds at most `MAX_OUTBOX` messages; more are refused, not queued.
#[test]
fn the_outbox_is_bounded() {
    let mut outbox = Outbox::default();
    for _ in 0..MAX_OUTBOX {
        assert!(outbox.wait_for_connection(rekey(Vec::new(), 1)));
    }
    assert!(!outbox.wait_for_connection(rekey(Vec::new(), 1)));
    assert_eq!(outbox.take_waiting(|_| None).len(), MAX_OUTBOX);
}

/// The payload may carry a meeting key: `Debug` never shows it.
#[test]
fn debug_output_never_shows_the_payload() {
    let out = rekey(Vec::new(), 1);
    let shown = format!("{out:?}");
    assert!(!shown.contains("171"), "{shown}");
    assert!(!shown.to_lowercase().contains("ab, ab"), "{shown}");
    assert!(!shown.contains("meeting_key"), "{shown}");
}
