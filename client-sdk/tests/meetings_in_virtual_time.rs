//! Multi-party meetings driven in virtual time: several `ClientCore`s and the
//! in-memory server of `conclave_testkit::sim` (the SFU's own room registry, a
//! directory and a mailbox). No sockets and no sleeps: a test that waits twenty
//! seconds of protocol time runs in milliseconds, the same way every time. The
//! real-network tests beside this file prove the shell and the real server.

use std::time::Duration;

use conclave_sdk::client::client_core::{Command, Reply};
use conclave_sdk::client::{
    ClientError, ClientEvent, DisconnectReason, MeetingEvent, MessageRefusal, RefusalReason,
};
use conclave_sdk::meeting::Epoch;
use conclave_sdk::meeting::rekey::EndReason;
use conclave_sdk::transport::{ClosedReason, TransportError};
use conclave_testkit::User;
use conclave_testkit::sim::{ClientIdx, Sim};

fn users() -> (User, User, User) {
    (User::new("alice"), User::new("bob"), User::new("carol"))
}

fn ended(
    sim: &mut Sim,
    c: ClientIdx,
    meeting: conclave_sdk::meeting::MeetingId,
) -> Option<EndReason> {
    sim.meeting_events(c, meeting)
        .into_iter()
        .find_map(|e| match e {
            MeetingEvent::Ended { reason } => Some(reason),
            _ => None,
        })
}

#[test]
fn three_participants_agree_on_safety_codes_and_words() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    sim.advance(Duration::from_secs(3));
    let codes: Vec<_> = c
        .iter()
        .map(|i| sim.meeting(*i, meeting).safety_code())
        .collect();
    assert!(codes[0].is_some());
    assert!(codes.iter().all(|code| *code == codes[0]), "{codes:?}");
    let words: Vec<_> = c
        .iter()
        .map(|i| sim.meeting(*i, meeting).safety_words())
        .collect();
    assert!(
        words[0].is_some(),
        "the safety-words round did not complete"
    );
    assert!(words.iter().all(|w| *w == words[0]), "{words:?}");
    for i in &c {
        assert_eq!(sim.meeting(*i, meeting).participants().len(), 3);
    }
}

#[test]
fn a_reject_rekeys_the_meeting_without_the_rejecter() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let a = sim.add_client(&alice);
    let b = sim.add_client(&bob);
    let c = sim.add_client(&carol);
    let meeting = sim.start_meeting(a, &[bob.id(), carol.id()]);
    sim.accept_invitation(b, meeting);
    assert!(matches!(
        sim.call(c, Command::Reject { meeting }),
        Ok(Reply::Done)
    ));
    sim.advance(Duration::from_secs(2));
    for i in [a, b] {
        let m = sim.meeting(i, meeting);
        assert!(m.sending_epoch() > Epoch(0), "no rekey after the reject");
        assert_eq!(m.participants().len(), 2);
        assert!(m.participants().iter().all(|p| p.user_id != carol.id()));
    }
    assert_eq!(
        sim.meeting(a, meeting).safety_code(),
        sim.meeting(b, meeting).safety_code()
    );
}

#[test]
fn a_removed_participant_holds_no_later_key() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let before = sim.meeting(c[0], meeting).sending_epoch();
    sim.remove(c[0], meeting, &[carol.id()]);
    sim.advance(Duration::from_secs(2));
    let after = sim.meeting(c[0], meeting).sending_epoch();
    assert!(after > before, "removal did not rekey");
    assert_eq!(sim.meeting(c[1], meeting).sending_epoch(), after);
    assert_eq!(ended(&mut sim, c[2], meeting), Some(EndReason::Removed));
    let carol_meeting = sim.meeting(c[2], meeting);
    assert!(carol_meeting.is_ended());
    assert!(carol_meeting.held_epochs().iter().all(|e| *e < after));
}

#[test]
fn when_the_leader_leaves_the_next_leader_rekeys() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let before = sim.meeting(c[1], meeting).sending_epoch();
    sim.leave(c[0], meeting);
    sim.advance(Duration::from_secs(3));
    assert_eq!(ended(&mut sim, c[0], meeting), Some(EndReason::Left));
    let epoch = sim.meeting(c[1], meeting).sending_epoch();
    assert!(epoch > before, "nobody rekeyed after the leader left");
    assert_eq!(sim.meeting(c[2], meeting).sending_epoch(), epoch);
    let leaders: Vec<bool> = [c[1], c[2]]
        .iter()
        .map(|i| sim.meeting(*i, meeting).is_leader())
        .collect();
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    assert!(
        sim.meeting(c[1], meeting)
            .participants()
            .iter()
            .all(|p| p.user_id != alice.id())
    );
}

#[test]
fn a_late_joiner_holds_only_keys_from_its_own_epoch_on() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob]);
    let d = sim.add_client(&carol);
    let invited = sim.call(
        c[0],
        Command::Invite {
            meeting,
            users: vec![carol.id()],
            media_kinds: Vec::new(),
        },
    );
    assert!(matches!(invited, Ok(Reply::Invited(_))), "{invited:?}");
    assert!(sim.is_invited(d, meeting));
    sim.accept_invitation(d, meeting);
    sim.advance(Duration::from_secs(2));
    let epoch = sim.meeting(c[0], meeting).sending_epoch();
    assert!(
        epoch > Epoch(0),
        "adding a participant did not move to a new epoch"
    );
    let held = sim.meeting(d, meeting).held_epochs();
    assert!(
        held.iter().all(|e| *e >= epoch),
        "late joiner holds {held:?}, joined at {epoch}"
    );
    assert_eq!(
        sim.meeting(c[1], meeting).safety_code(),
        sim.meeting(d, meeting).safety_code()
    );
}

#[test]
fn a_device_that_vanishes_is_rekeyed_out_after_the_drop_window() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let before = sim.meeting(c[0], meeting).sending_epoch();
    sim.go_offline(c[2]);
    // The drop window is 2 s; nothing happens before it ends.
    sim.advance(Duration::from_millis(1_500));
    assert_eq!(sim.meeting(c[0], meeting).participants().len(), 3);
    sim.advance(Duration::from_secs(3));
    assert!(sim.meeting(c[0], meeting).sending_epoch() > before);
    assert_eq!(sim.meeting(c[0], meeting).participants().len(), 2);
    assert_eq!(sim.meeting(c[1], meeting).participants().len(), 2);
}

#[test]
fn a_device_back_within_the_drop_window_stays_and_catches_up() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let before = sim.meeting(c[0], meeting).sending_epoch();
    sim.go_offline(c[1]);
    sim.advance(Duration::from_millis(300));
    sim.go_online(c[1]);
    let back = sim.advance_until(Duration::from_secs(1), |s| s.is_connected(c[1]));
    assert!(back, "bob did not reconnect");
    let events = sim.take_events(c[1]);
    assert!(
        events.iter().any(|e| matches!(e, ClientEvent::Reconnected)),
        "{events:?}"
    );
    // The app learns why, as a typed reason with quinn's error underneath.
    let reason = events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Disconnected { reason } => Some(reason),
            _ => None,
        })
        .expect("a Disconnected event before Reconnected");
    assert!(
        matches!(
            reason,
            DisconnectReason::Transport(TransportError::Closed(ClosedReason::Connection(
                quinn::ConnectionError::TimedOut
            )))
        ),
        "{reason:?}"
    );
    let root = std::iter::successors(Some(reason as &dyn std::error::Error), |e| e.source())
        .last()
        .expect("the chain starts at the reason");
    assert!(
        root.downcast_ref::<quinn::ConnectionError>().is_some(),
        "{root}"
    );
    sim.advance(Duration::from_secs(5));
    // The meeting itself said its media paused, then resumed.
    let bobs = sim.meeting_events(c[1], meeting);
    let at = |pick: fn(&MeetingEvent) -> bool| bobs.iter().position(pick);
    let interrupted = at(|e| matches!(e, MeetingEvent::MediaInterrupted));
    let resumed = at(|e| matches!(e, MeetingEvent::MediaResumed));
    assert!(
        matches!((interrupted, resumed), (Some(i), Some(r)) if i < r),
        "{bobs:?}"
    );
    assert_eq!(sim.meeting(c[0], meeting).sending_epoch(), before);
    assert_eq!(sim.meeting(c[0], meeting).participants().len(), 3);
    // A removal while bob is connected again reaches him.
    sim.remove(c[0], meeting, &[carol.id()]);
    sim.advance(Duration::from_secs(2));
    let epoch = sim.meeting(c[0], meeting).sending_epoch();
    assert!(epoch > before);
    assert_eq!(sim.meeting(c[1], meeting).sending_epoch(), epoch);
}

#[test]
fn a_rekey_sent_while_a_member_is_offline_reaches_it_from_the_mailbox() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    sim.go_offline(c[1]);
    sim.remove(c[0], meeting, &[carol.id()]);
    sim.advance(Duration::from_millis(500));
    sim.go_online(c[1]);
    sim.advance(Duration::from_secs(3));
    let epoch = sim.meeting(c[0], meeting).sending_epoch();
    assert!(epoch > Epoch(0));
    assert_eq!(sim.meeting(c[1], meeting).sending_epoch(), epoch);
    assert_eq!(sim.meeting(c[1], meeting).participants().len(), 2);
}

#[test]
fn a_member_whose_rekeys_the_server_withholds_pauses_instead_of_sending_on_an_old_key() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let bob_device = sim.client(c[1]).device;
    sim.server
        .hostility
        .withhold_containers_to
        .insert(bob_device);
    sim.remove(c[0], meeting, &[carol.id()]);
    sim.advance(Duration::from_secs(3));
    let room_epoch = sim.meeting(c[0], meeting).sending_epoch();
    assert!(room_epoch > Epoch(0));
    let events = sim.meeting_events(c[1], meeting);
    assert!(
        events.iter().any(
            |e| matches!(e, MeetingEvent::SendingPaused { room_epoch: r } if *r == room_epoch)
        ),
        "bob did not pause: {events:?}"
    );
    assert!(
        !sim.meeting(c[1], meeting)
            .held_epochs()
            .contains(&room_epoch)
    );
}

#[test]
fn a_substituted_identity_key_from_the_directory_gets_nothing_sealed() {
    let (alice, bob, _) = users();
    let mut sim = Sim::new();
    let (c, _first) = sim.group(&[&alice, &bob]);
    // Bob's key is pinned now; the directory then answers with another key.
    let mallory = User::new("mallory");
    let fake_key = mallory.identity.key.to_bytes().to_vec();
    sim.server.hostility.rewrite_bundles = Some(Box::new(move |bundles| {
        for user in &mut bundles.users {
            user.user_public_key = fake_key.clone();
        }
    }));
    let second = sim.try_start_meeting(c[0], &[bob.id()]);
    assert!(
        matches!(second, Err(ClientError::NobodyToInvite)),
        "{second:?}"
    );
    let events = sim.take_events(c[0]);
    assert!(
        events.iter().any(|e| matches!(
            e,
            ClientEvent::DirectoryRefused(r) if r.reason == RefusalReason::IdentityChanged
        )),
        "{events:?}"
    );
}

#[test]
fn an_unanswered_invitation_expires_and_its_key_is_dropped() {
    let (alice, bob, _) = users();
    let mut sim = Sim::new();
    let mut config = Sim::client_config();
    config.ring_timeout = Duration::from_secs(30);
    let a = sim.add_client_with(&alice, config);
    let b = sim.add_client(&bob);
    let meeting = sim.start_meeting(a, &[bob.id()]);
    assert!(sim.is_invited(b, meeting));
    sim.advance(Duration::from_secs(31));
    let events = sim.take_events(b);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::MissedCall(i) if i.meeting_id == meeting)),
        "{events:?}"
    );
    let late = sim.try_accept(b, meeting);
    assert!(matches!(late, Err(ClientError::NoInvitation)), "{late:?}");
}

#[test]
fn when_the_leader_vanishes_a_successor_takes_over() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let before = sim.meeting(c[1], meeting).sending_epoch();
    sim.go_offline(c[0]);
    sim.advance(Duration::from_secs(10));
    let epoch = sim.meeting(c[1], meeting).sending_epoch();
    assert!(
        epoch > before,
        "no successor rekeyed the vanished leader out"
    );
    assert_eq!(sim.meeting(c[2], meeting).sending_epoch(), epoch);
    for i in [c[1], c[2]] {
        let participants = sim.meeting(i, meeting).participants();
        assert_eq!(participants.len(), 2);
        assert!(participants.iter().all(|p| p.user_id != alice.id()));
    }
    assert_eq!(
        sim.meeting(c[1], meeting).safety_code(),
        sim.meeting(c[2], meeting).safety_code()
    );
}

#[test]
fn junk_in_the_mailbox_is_refused_acknowledged_and_deleted() {
    let (alice, _, _) = users();
    let mut sim = Sim::new();
    let a = sim.add_client(&alice);
    let device = sim.client(a).device;
    let now = sim.server_ms();
    for i in 0..5u8 {
        sim.server
            .inject_container(device, vec![i; 40 + usize::from(i)], now);
    }
    sim.progress();
    // Acknowledgements are batched: let the batch go out.
    sim.advance(Duration::from_secs(2));
    let refused = sim
        .take_events(a)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                ClientEvent::MessageRefused {
                    reason: MessageRefusal::Undecodable(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(refused, 5, "each junk entry is refused as undecodable");
    assert_eq!(sim.server.mailbox_len(&device), 0);
}

#[test]
fn the_leader_rotates_the_room_only_after_its_rekey_reached_someone() {
    use conclave_proto::v1::{self, client_frame::Request, response};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let before = sim.meeting(c[0], meeting).sending_epoch();
    let alice_device = sim.client(c[0]).device;
    // Alice's first two container sends fail; a rotation before one went through is a
    // rotation to a key nobody holds.
    let failures = Arc::new(AtomicUsize::new(0));
    let too_early = Arc::new(AtomicBool::new(false));
    let (f, early) = (Arc::clone(&failures), Arc::clone(&too_early));
    sim.server.hostility.intercept = Some(Box::new(move |device, request| {
        if device != alice_device {
            return None;
        }
        match request {
            Request::SendContainer(_) if f.fetch_add(1, Ordering::SeqCst) < 2 => {
                Some(Ok(response::Result::Error(v1::Error {
                    code: v1::ErrorCode::Internal as i32,
                    message: "storage failed (injected)".into(),
                    ..Default::default()
                })))
            }
            Request::RotateRoom(_) if f.load(Ordering::SeqCst) < 3 => {
                early.store(true, Ordering::SeqCst);
                None
            }
            _ => None,
        }
    }));
    sim.remove(c[0], meeting, &[carol.id()]);
    sim.advance(Duration::from_secs(5));
    assert!(failures.load(Ordering::SeqCst) >= 3);
    assert!(
        !too_early.load(Ordering::SeqCst),
        "the room rotated to a key that had reached nobody"
    );
    let epoch = sim.meeting(c[0], meeting).sending_epoch();
    assert!(epoch > before);
    assert_eq!(sim.meeting(c[1], meeting).sending_epoch(), epoch);
}

/// A sleeping device's monotonic clock stops while real time goes on. Its protocol
/// time follows the wall clock it reports, so after three days asleep it still opens
/// what others seal now (a core that derived wall time from its monotonic clock would
/// be days behind and refuse every container as expired).
#[test]
fn after_days_asleep_a_device_still_opens_fresh_containers() {
    let (alice, bob, carol) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob, &carol]);
    let before = sim.meeting(c[0], meeting).sending_epoch();
    sim.jump_wall_clocks(Duration::from_secs(3 * 24 * 3600));
    // Alice reconnects (a fresh Hello: the server's clock is three days on); Bob
    // keeps his connection, and his clock sync from before the sleep.
    sim.go_offline(c[0]);
    sim.go_online(c[0]);
    assert!(sim.advance_until(Duration::from_secs(2), |s| s.is_connected(c[0])));
    sim.remove(c[0], meeting, &[carol.id()]);
    sim.advance(Duration::from_secs(2));
    let epoch = sim.meeting(c[0], meeting).sending_epoch();
    assert!(epoch > before);
    assert_eq!(sim.meeting(c[1], meeting).sending_epoch(), epoch);
    let refused: Vec<_> = sim
        .take_events(c[1])
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::MessageRefused { .. }))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

/// The connection drops again while the reconnect stocks prekeys: the client keeps
/// trying instead of staying offline.
#[test]
fn a_reconnect_lost_while_stocking_prekeys_is_tried_again() {
    use conclave_proto::v1::client_frame::Request;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (alice, bob, _) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob]);
    let bob_device = sim.client(c[1]).device;
    sim.go_offline(c[1]);
    let failed = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&failed);
    sim.server.hostility.intercept = Some(Box::new(move |device, request| {
        (device == bob_device
            && matches!(request, Request::UploadPrekeys(_))
            && !f.swap(true, Ordering::SeqCst))
        .then(|| {
            Err(TransportError::Closed(ClosedReason::Connection(
                quinn::ConnectionError::Reset,
            )))
        })
    }));
    sim.go_online(c[1]);
    let back = sim.advance_until(Duration::from_secs(10), |s| {
        failed.load(Ordering::SeqCst) && s.is_connected(c[1])
    });
    assert!(back, "bob stayed offline after the interrupted reconnect");
    sim.advance(Duration::from_secs(1));
    assert!(sim.is_connected(c[1]));
    assert_eq!(
        sim.meeting(c[0], meeting).sending_epoch(),
        sim.meeting(c[1], meeting).sending_epoch()
    );
}

#[test]
fn nodes_that_disagree_about_a_rooms_owner_cannot_bounce_a_client_forever() {
    use conclave_proto::v1::{ErrorCode, Redirect, client_frame::Request};
    let (alice, bob, _) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob]);
    let bob_device = sim.client(c[1]).device;
    // From now on every room request of bob's is answered "another node owns it".
    sim.server.hostility.intercept = Some(Box::new(move |device, request| {
        (device == bob_device && matches!(request, Request::JoinRoom(_) | Request::OpenRoom(_)))
            .then(|| {
                Err(TransportError::Server {
                    code: ErrorCode::WrongNode,
                    message: "owned elsewhere (injected)".into(),
                    retry_after_ms: 0,
                    room_epoch: 0,
                    redirect: Some(Redirect {
                        address: "127.0.0.9:4433".into(),
                        server_name: "elsewhere".into(),
                        fence: 1,
                        connection_id_byte: None,
                    }),
                })
            })
    }));
    sim.go_offline(c[1]);
    let _ = sim.take_events(c[1]);
    sim.go_online(c[1]);
    sim.advance(Duration::from_secs(30));
    let events = sim.take_events(c[1]);
    let redirects = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::RoomRedirected { .. }))
        .count();
    // Three redirects in a row at most, then joins again with a backoff that doubles
    // (0.5 s, 1 s, 2 s, ...): a handful of rounds in 30 s, not a tight loop.
    assert!(
        (1..=8).contains(&redirects),
        "followed {redirects} redirects in 30 s"
    );
    let dropped = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Disconnected { .. }))
        .count();
    assert_eq!(
        dropped, 0,
        "a room redirect never drops the primary connection"
    );
    // The rooms-only connection the redirects opened is closed once unused.
    assert_eq!(sim.connections(c[1]), 1);
    // Bob stops moving and stays connected (the control plane works on any node);
    // alice, who never hears from him in the room, rekeys him out as for any device
    // that vanished.
    assert!(sim.is_connected(c[1]));
    assert_eq!(sim.meeting(c[0], meeting).participants().len(), 1);
}

#[test]
fn a_room_join_refused_while_a_node_fails_over_is_tried_again_until_it_succeeds() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use conclave_proto::v1::{ErrorCode, client_frame::Request};
    let (alice, bob, _) = users();
    let mut sim = Sim::new();
    let (c, meeting) = sim.group(&[&alice, &bob]);
    let bob_device = sim.client(c[1]).device;
    // Bob's next two joins are refused as a node in a failover refuses them: first
    // UNAVAILABLE with the time left on the dead owner's lease, then INTERNAL (its store
    // is busy recovering). The third goes through.
    let joins = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&joins);
    sim.server.hostility.intercept = Some(Box::new(move |device, request| {
        if device != bob_device || !matches!(request, Request::JoinRoom(_) | Request::OpenRoom(_)) {
            return None;
        }
        let (code, retry_after_ms) = match seen.fetch_add(1, Ordering::SeqCst) {
            0 => (ErrorCode::Unavailable, 300),
            1 => (ErrorCode::Internal, 0),
            _ => return None,
        };
        Some(Err(TransportError::Server {
            code,
            message: "failing over (injected)".into(),
            retry_after_ms,
            room_epoch: 0,
            redirect: None,
        }))
    }));
    sim.go_offline(c[1]);
    sim.go_online(c[1]);
    sim.advance(Duration::from_secs(10));
    // Bob came back into the room by himself, within alice's patience for a vanished
    // device (two seconds here), so she did not rekey him out.
    assert!(
        joins.load(Ordering::SeqCst) >= 3,
        "bob's joins were retried"
    );
    assert!(sim.is_connected(c[1]));
    assert_eq!(sim.meeting(c[0], meeting).participants().len(), 2);
    assert_eq!(
        sim.meeting(c[0], meeting).sending_epoch(),
        sim.meeting(c[1], meeting).sending_epoch()
    );
}
