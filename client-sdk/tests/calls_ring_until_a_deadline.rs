//! Ringing (issue 19, point 2), in virtual time with `conclave_testkit::sim`: an
//! invitation rings until the caller's deadline (`ClientConfig::ring_timeout`). Then
//! the invitee's app gets a missed call and cannot join with it any more, and the
//! caller's meeting, after waiting `ANSWER_GRACE` for a reply still on its way, rekeys
//! the invitee out as for a reject. An invitation opened from
//! the mailbox after its deadline never rings: it is a missed call at once.

use std::time::Duration;

use conclave_sdk::client::{ClientError, ClientEvent, Invitation, MeetingEvent};
use conclave_sdk::meeting::Epoch;
use conclave_sdk::meeting::rekey::ANSWER_GRACE;
use conclave_testkit::User;
use conclave_testkit::sim::{ClientIdx, Sim};

const RING: Duration = Duration::from_secs(45);

/// Alice, Bob and Carol, each with one connected device (`a`, `b`, `c`).
struct Three {
    sim: Sim,
    alice: User,
    bob: User,
    carol: User,
    a: ClientIdx,
    b: ClientIdx,
    c: ClientIdx,
}

fn three() -> Three {
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let mut sim = Sim::new();
    let a = sim.add_client(&alice);
    let b = sim.add_client(&bob);
    let c = sim.add_client(&carol);
    Three {
        sim,
        alice,
        bob,
        carol,
        a,
        b,
        c,
    }
}

/// The missed calls among `events`.
fn missed_in(events: &[ClientEvent]) -> Vec<&Invitation> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MissedCall(i) => Some(i),
            _ => None,
        })
        .collect()
}

fn missed_calls(sim: &mut Sim, c: ClientIdx) -> Vec<Invitation> {
    missed_in(&sim.take_events(c))
        .into_iter()
        .cloned()
        .collect()
}

#[test]
fn the_default_ring_is_45_seconds() {
    assert_eq!(Sim::client_config().ring_timeout, RING);
}

#[test]
fn an_unanswered_call_becomes_a_missed_call_and_the_caller_rekeys_without_the_invitee() {
    let Three {
        mut sim,
        alice,
        bob,
        carol,
        a,
        b,
        c,
    } = three();
    let meeting = sim.start_meeting(a, &[bob.id(), carol.id()]);
    sim.accept_invitation(b, meeting);
    assert!(sim.is_invited(c, meeting), "Carol's phone rings");

    sim.advance(RING - Duration::from_secs(1));
    let so_far = sim.take_events(c);
    assert!(
        !so_far
            .iter()
            .any(|e| matches!(e, ClientEvent::MissedCall(_))),
        "still ringing just before the deadline: {so_far:?}"
    );
    assert_eq!(sim.meeting(a, meeting).participants().len(), 3);

    sim.advance(Duration::from_secs(3));
    // Carol's app: a missed call from Alice, and the invitation is gone.
    let missed = missed_calls(&mut sim, c);
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0].meeting_id, meeting);
    assert_eq!(missed[0].from.user_id, alice.id());
    let late = sim.try_accept(c, meeting);
    assert!(matches!(late, Err(ClientError::NoInvitation)), "{late:?}");
    // Alice's meeting waits ANSWER_GRACE for a reply still on its way, then rings Carol
    // out: unanswered, rekeyed out; Alice and Bob on a new epoch.
    assert_eq!(
        sim.meeting(a, meeting).participants().len(),
        3,
        "not before the grace"
    );
    sim.advance(ANSWER_GRACE);
    assert!(
        sim.meeting_events(a, meeting).iter().any(|e| matches!(
            e,
            MeetingEvent::Unanswered { participant } if participant.user_id == carol.id()
        )),
        "the caller is told who did not answer"
    );
    for i in [a, b] {
        let m = sim.meeting(i, meeting);
        assert!(
            m.sending_epoch() > Epoch(0),
            "no rekey after the ring deadline"
        );
        assert_eq!(m.participants().len(), 2);
        assert!(m.participants().iter().all(|p| p.user_id != carol.id()));
    }
    assert_eq!(
        sim.meeting(a, meeting).safety_code(),
        sim.meeting(b, meeting).safety_code()
    );
}

#[test]
fn a_call_answered_before_the_deadline_goes_on_past_it() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut sim = Sim::new();
    let a = sim.add_client(&alice);
    let b = sim.add_client(&bob);
    let meeting = sim.start_meeting(a, &[bob.id()]);
    sim.advance(RING / 2);
    sim.accept_invitation(b, meeting);
    sim.advance(RING * 2);
    assert_eq!(
        sim.meeting(a, meeting).sending_epoch(),
        Epoch(0),
        "no rekey"
    );
    assert_eq!(sim.meeting(a, meeting).participants().len(), 2);
    assert!(missed_calls(&mut sim, b).is_empty());
    assert!(
        !sim.meeting_events(a, meeting)
            .iter()
            .any(|e| matches!(e, MeetingEvent::Unanswered { .. }))
    );
}

#[test]
fn a_callee_stops_ringing_when_the_caller_hangs_up() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut sim = Sim::new();
    let a = sim.add_client(&alice);
    let b = sim.add_client(&bob);
    let meeting = sim.start_meeting(a, &[bob.id()]);
    assert!(sim.is_invited(b, meeting));
    sim.advance(Duration::from_secs(5));
    sim.leave(a, meeting);
    sim.advance(Duration::from_secs(2));
    let missed = missed_calls(&mut sim, b);
    assert_eq!(
        missed.len(),
        1,
        "the call ended before the deadline: {missed:?}"
    );
    assert_eq!(missed[0].from.user_id, alice.id());
    assert!(matches!(
        sim.try_accept(b, meeting),
        Err(ClientError::NoInvitation)
    ));
}

#[test]
fn a_callee_removed_before_answering_stops_ringing() {
    let Three {
        mut sim,
        bob,
        carol,
        a,
        b,
        c,
        ..
    } = three();
    let meeting = sim.start_meeting(a, &[bob.id(), carol.id()]);
    sim.accept_invitation(b, meeting);
    sim.remove(a, meeting, &[carol.id()]);
    sim.advance(Duration::from_secs(2));
    let missed = missed_calls(&mut sim, c);
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert!(matches!(
        sim.try_accept(c, meeting),
        Err(ClientError::NoInvitation)
    ));
}

#[test]
fn an_invitation_read_from_the_mailbox_after_its_deadline_is_a_missed_call_not_a_ring() {
    let Three {
        mut sim,
        alice,
        bob,
        carol,
        a,
        b,
        c,
    } = three();
    sim.go_offline(c);
    let meeting = sim.start_meeting(a, &[bob.id(), carol.id()]);
    sim.accept_invitation(b, meeting);
    sim.advance(RING + Duration::from_secs(60));
    sim.go_online(c);
    sim.advance(Duration::from_secs(5));
    let events = sim.take_events(c);
    assert!(
        !events.iter().any(|e| matches!(e, ClientEvent::Invited(_))),
        "an invitation past its deadline must not ring: {events:?}"
    );
    let missed = missed_in(&events);
    assert_eq!(missed.len(), 1, "{events:?}");
    assert_eq!(missed[0].meeting_id, meeting);
    assert_eq!(missed[0].from.user_id, alice.id());
    assert!(!sim.is_invited(c, meeting));
    assert!(matches!(
        sim.try_accept(c, meeting),
        Err(ClientError::NoInvitation)
    ));
    assert!(
        sim.meeting(a, meeting)
            .participants()
            .iter()
            .all(|p| p.user_id != carol.id())
    );
}

#[test]
fn a_ring_timeout_out_of_bounds_is_clamped() {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut sim = Sim::new();
    let mut config = Sim::client_config();
    config.ring_timeout = Duration::from_secs(24 * 3600);
    let a = sim.add_client_with(&alice, config);
    let b = sim.add_client(&bob);
    let meeting = sim.start_meeting(a, &[bob.id()]);
    let invited = sim
        .take_events(b)
        .into_iter()
        .find_map(|e| match e {
            ClientEvent::Invited(i) => Some(i),
            _ => None,
        })
        .expect("Bob is invited");
    let rings_for = invited.expires_at.0.saturating_sub(sim.server_ms());
    assert!(
        rings_for <= conclave_sdk::client::MAX_RING_TIMEOUT.as_millis() as u64,
        "rings for {rings_for} ms"
    );
    sim.advance(conclave_sdk::client::MAX_RING_TIMEOUT + Duration::from_secs(1));
    assert_eq!(missed_calls(&mut sim, b).len(), 1);
    let _ = meeting;
}
