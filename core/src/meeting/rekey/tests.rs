//! Meeting state machines of several devices, wired together in memory and driven
//! with virtual time.

use std::collections::BTreeMap;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;

fn payload(body: Body) -> v1::ContainerPayload {
    v1::ContainerPayload {
        body: Some(body),
        ..Default::default()
    }
}

const CFG: RekeyConfig = RekeyConfig {
    coalesce: Duration::from_millis(20),
    grace: Duration::from_millis(1_000),
    switch_deadline: Duration::from_millis(500),
    key_request: Duration::from_millis(300),
};

fn dev(n: u8) -> DeviceId {
    DeviceId::from_slice(&[n; 16]).unwrap()
}

fn user(n: u8) -> UserId {
    UserId::from_slice(&[n; 32]).unwrap()
}

/// The user signing key of user `n` (deterministic, so tests are reproducible).
fn user_key(n: u8) -> crate::identity::UserSigningKey {
    crate::identity::UserSigningKey::generate(&mut ChaCha20Rng::seed_from_u64(u64::from(n)))
}

/// Device `dev_n` of user `user_n` at `index`, with a real certificate signed by the
/// user's key (cached: P-384 key generation is not free).
fn member(user_n: u8, dev_n: u8, index: u32) -> RosterMember {
    thread_local! {
        static DEVICES: std::cell::RefCell<BTreeMap<(u8, u8), crate::identity::VerifiedDevice>> =
            const { std::cell::RefCell::new(BTreeMap::new()) };
    }
    let key = user_key(user_n);
    let identity = crate::identity::UserIdentity {
        user_id: user(user_n),
        key: key.public_key(),
    };
    let device = DEVICES.with(|d| {
        d.borrow_mut()
            .entry((user_n, dev_n))
            .or_insert_with(|| {
                let mut rng = ChaCha20Rng::seed_from_u64(1_000 + u64::from(dev_n));
                crate::identity::DeviceIdentity::create_with_id(
                    &key,
                    user(user_n),
                    dev(dev_n),
                    UnixMillis(0),
                    u64::MAX / 2,
                    &mut rng,
                )
                .unwrap()
                .public()
                .clone()
            })
            .clone()
    });
    RosterMember::new(&identity, device, index)
}

/// Every device's state, plus a log of what was sent.
struct Net {
    states: BTreeMap<DeviceId, MeetingState>,
    now: u64,
    rng: ChaCha20Rng,
    /// (from, recipients, payload kind)
    sent: Vec<(DeviceId, Vec<DeviceId>, &'static str)>,
    /// Whether the SFU announces room rotations (a test can make it withhold them).
    announce: bool,
    /// Rekeys to this device are dropped (yet reported delivered), as a hostile
    /// server colluding with a removed participant would (review M3).
    withhold_rekeys_from: Option<DeviceId>,
    /// Devices that paused sending, and the room epoch that made them.
    paused: Vec<(DeviceId, Epoch)>,
    refused: Vec<(DeviceId, RekeyError)>,
    /// Invitees a leader reported unanswered at their ring deadline.
    unanswered: Vec<DeviceId>,
}

fn kind(p: &v1::ContainerPayload) -> &'static str {
    match p.body {
        Some(Body::MeetingInvite(_)) => "invite",
        Some(Body::InviteReply(_)) => "reply",
        Some(Body::Rekey(_)) => "rekey",
        Some(Body::EpochSwitch(_)) => "switch",
        Some(Body::Leave(_)) => "leave",
        Some(Body::Remove(_)) => "remove",
        Some(Body::KeyRequest(_)) => "keyrequest",
        _ => "other",
    }
}

impl Net {
    /// Device 1 (user 1, index 0) leads; `others` are (user, device, index).
    fn new(others: &[(u8, u8, u32)]) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let meeting = MeetingId::from_slice(&[9; 32]).unwrap();
        let mut members = vec![member(1, 1, 0)];
        members.extend(others.iter().map(|(u, d, i)| member(*u, *d, *i)));
        let roster = Roster::new(members).unwrap();
        let key = MeetingKey::generate(Epoch(1), &mut rng);
        let leader = MeetingState::start(meeting, dev(1), roster, key, CFG).unwrap();
        let invite = match leader
            .invite(&[MediaKind::Audio], UnixMillis(u64::MAX))
            .unwrap()
            .to_wire()
            .body
            .clone()
        {
            Some(Body::MeetingInvite(i)) => i,
            _ => unreachable!(),
        };
        let mut states = BTreeMap::from([(dev(1), leader)]);
        for (_, d, _) in others {
            states.insert(
                dev(*d),
                MeetingState::from_invite(dev(*d), &invite, CFG, UnixMillis(1_000)).unwrap(),
            );
        }
        Net {
            states,
            now: 1_000,
            rng,
            sent: Vec::new(),
            refused: Vec::new(),
            announce: true,
            withhold_rekeys_from: None,
            paused: Vec::new(),
            unanswered: Vec::new(),
        }
    }

    fn state(&self, d: u8) -> &MeetingState {
        &self.states[&dev(d)]
    }

    fn with<T>(&mut self, d: u8, f: impl FnOnce(&mut MeetingState, UnixMillis) -> T) -> T {
        let now = UnixMillis(self.now);
        let out = f(self.states.get_mut(&dev(d)).unwrap(), now);
        self.run();
        out
    }

    /// Delivers every output until quiet; a delivered Rekey is reported back.
    fn run(&mut self) {
        for _ in 0..1_000 {
            let mut work = Vec::new();
            for (d, s) in &mut self.states {
                while let Some(o) = s.poll_output() {
                    work.push((*d, o));
                }
            }
            if work.is_empty() {
                return;
            }
            for (from, out) in work {
                if let MeetingOutput::SendingPaused { room_epoch } = out {
                    self.paused.push((from, room_epoch));
                    continue;
                }
                if let MeetingOutput::Unanswered { device } = out {
                    self.unanswered.push(device);
                    continue;
                }
                if let MeetingOutput::RotateRoom { to, .. } = out {
                    // The SFU announces the room's new epoch to every member.
                    let now = UnixMillis(self.now);
                    for (d, s) in &mut self.states {
                        if *d != from && self.announce && !s.is_ended() {
                            let _ = s.room_epoch(to, now);
                        }
                    }
                    continue;
                }
                if let MeetingOutput::Send {
                    recipients,
                    message,
                    rekey_epoch,
                } = out
                {
                    let payload = message.to_wire();
                    self.sent.push((from, recipients.clone(), kind(&payload)));
                    for r in &recipients {
                        if Some(*r) == self.withhold_rekeys_from
                            && matches!(payload.body, Some(Body::Rekey(_)))
                        {
                            continue;
                        }
                        if let Some(s) = self.states.get_mut(r) {
                            if s.is_ended() {
                                continue;
                            }
                            if let Err(e) =
                                s.on_message(from, &recipients, &payload, UnixMillis(self.now))
                            {
                                self.refused.push((*r, e));
                            }
                        }
                    }
                    if let Some(epoch) = rekey_epoch {
                        let now = UnixMillis(self.now);
                        self.states
                            .get_mut(&from)
                            .unwrap()
                            .rekey_delivered(epoch, now)
                            .unwrap();
                    }
                }
            }
        }
        panic!("outputs never settled");
    }

    /// Advances virtual time, firing every timer on the way.
    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            let next = self
                .states
                .values()
                .filter_map(MeetingState::poll_timeout)
                .map(|t| t.0)
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            let now = UnixMillis(self.now);
            for s in self.states.values_mut() {
                s.handle_timeout(now, &mut self.rng);
            }
            self.run();
        }
        self.now = end;
    }

    fn count(&self, what: &str) -> usize {
        self.sent.iter().filter(|(_, _, k)| *k == what).count()
    }

    fn recipients_of_last(&self, what: &str) -> Vec<DeviceId> {
        self.sent
            .iter()
            .rev()
            .find(|(_, _, k)| *k == what)
            .map(|(_, r, _)| r.clone())
            .unwrap()
    }
}

#[test]
fn a_leave_rekeys_to_the_remaining_devices_only() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let versions: Vec<u64> = [1, 2].map(|d| net.state(d).roster_version()).to_vec();
    net.with(3, |s, _| s.leave()).unwrap();
    assert!(net.state(3).is_ended());
    assert_eq!(net.count("rekey"), 0, "coalescing window first");
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(2)]);
    for (d, before) in [1, 2].into_iter().zip(versions) {
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
        assert!(!net.state(d).roster().contains(&dev(3)));
        // What is derived from the roster (the safety code) is computed again.
        assert_ne!(net.state(d).roster_version(), before);
        // The old epoch stays decryptable for the grace window only.
        assert!(net.state(d).key(Epoch(1)).is_some());
    }
    assert!(net.state(3).key(Epoch(2)).is_none());
    net.advance(ms(CFG.grace));
    for d in [1, 2] {
        assert!(net.state(d).key(Epoch(1)).is_none());
        assert_eq!(net.state(d).epochs().collect::<Vec<_>>(), vec![Epoch(2)]);
    }
    assert!(net.refused.is_empty(), "{:?}", net.refused);
}

#[test]
fn a_reject_rekeys() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let reply = payload(Body::InviteReply(v1::InviteReply {
        meeting_id: vec![9; 32],
        decision: v1::invite_reply::Decision::Reject as i32,
        media_kinds: vec![],
    }));
    net.with(1, |s, now| s.on_message(dev(2), &[dev(1)], &reply, now))
        .unwrap();
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(3)]);
    assert_eq!(net.state(3).sending_epoch(), Epoch(2));
    assert!(net.state(2).key(Epoch(2)).is_none());
}

fn reply(decision: v1::invite_reply::Decision) -> v1::ContainerPayload {
    payload(Body::InviteReply(v1::InviteReply {
        meeting_id: vec![9; 32],
        decision: decision as i32,
        media_kinds: vec![],
    }))
}

impl Net {
    /// Device `d`'s answer to its invitation reaches the leader (device 1) now.
    fn answer(&mut self, d: u8, decision: v1::invite_reply::Decision) {
        self.with(1, |s, now| {
            s.on_message(dev(d), &[dev(1)], &reply(decision), now)
        })
        .unwrap();
    }
}

#[test]
fn an_invitee_who_does_not_answer_by_the_ring_deadline_is_rekeyed_out_as_a_reject() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let deadline = UnixMillis(net.now + 45_000);
    net.with(1, |s, _| s.ring(&[dev(2), dev(3)], deadline))
        .unwrap();
    // Device 2 accepts in time; device 3 never answers.
    net.advance(10_000);
    net.answer(2, v1::invite_reply::Decision::Accept);
    net.advance(34_999 + ms(ANSWER_GRACE));
    assert_eq!(
        net.count("rekey"),
        0,
        "nothing happens before the deadline and its grace"
    );
    net.advance(1 + ms(CFG.coalesce));
    assert_eq!(net.unanswered, vec![dev(3)]);
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.recipients_of_last("remove"), vec![dev(3)]);
    assert!(
        net.state(3).is_ended(),
        "told, so a late accept cannot leave it stuck"
    );
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(2)]);
    assert_eq!(net.state(2).sending_epoch(), Epoch(2));
    assert!(!net.state(1).roster().contains(&dev(3)));
    assert!(net.state(3).key(Epoch(2)).is_none());
    // Rekeyed out as for a reject: nothing more rings, nothing more rekeys.
    net.advance(120_000);
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.unanswered, vec![dev(3)]);
}

#[test]
fn an_answer_arriving_just_after_the_deadline_keeps_the_invitee_in() {
    // Sent before the deadline, delayed on its way (a prekey wait, a reconnect).
    let mut net = Net::new(&[(2, 2, 1)]);
    let deadline = UnixMillis(net.now + 45_000);
    net.with(1, |s, _| s.ring(&[dev(2)], deadline)).unwrap();
    net.advance(45_000 + ms(ANSWER_GRACE) - 1_000);
    net.answer(2, v1::invite_reply::Decision::Accept);
    net.advance(60_000);
    assert!(net.unanswered.is_empty());
    assert_eq!(net.count("rekey"), 0);
    assert_eq!(net.count("remove"), 0);
    assert!(net.state(1).roster().contains(&dev(2)));
}

#[test]
fn a_reject_before_the_ring_deadline_rekeys_once_not_twice() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let deadline = UnixMillis(net.now + 45_000);
    net.with(1, |s, _| s.ring(&[dev(2), dev(3)], deadline))
        .unwrap();
    net.answer(2, v1::invite_reply::Decision::Accept);
    net.answer(3, v1::invite_reply::Decision::Reject);
    net.advance(60_000);
    assert_eq!(net.count("rekey"), 1);
    assert!(net.unanswered.is_empty());
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(2)]);
}

#[test]
fn a_joiner_added_mid_meeting_rings_until_it_answers() {
    let mut net = Net::new(&[(2, 2, 1)]);
    let deadline = UnixMillis(net.now + 30_000);
    net.with(1, |s, now| {
        s.add_participants(vec![member(4, 4, 2)], &[MediaKind::Audio], deadline, now)
    })
    .unwrap();
    // The joiner never opens its invite, let alone answers.
    net.advance(31_000 + ms(ANSWER_GRACE) + ms(CFG.coalesce));
    assert_eq!(net.unanswered, vec![dev(4)]);
    assert!(!net.state(1).roster().contains(&dev(4)));
    assert!(net.state(2).roster().len() == 2);
}

#[test]
fn only_the_leader_rings_invitees() {
    let mut net = Net::new(&[(2, 2, 1)]);
    assert_eq!(
        net.with(2, |s, now| s.ring(&[dev(1)], now)),
        Err(RekeyError::LeaderOnly("ring invitees"))
    );
}

#[test]
fn removing_a_user_removes_all_their_devices_and_they_lose_every_key() {
    // User 2 has devices 2 and 4.
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (2, 4, 3)]);
    net.with(1, |s, now| s.remove(&[user(2)], &[], now))
        .unwrap();
    for d in [2, 4] {
        assert!(net.state(d).is_ended());
        assert_eq!(net.state(d).epochs().count(), 0);
    }
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(3)]);
    assert_eq!(net.state(3).roster().len(), 2);
    // Non-leaders cannot remove.
    assert_eq!(
        net.with(3, |s, now| s.remove(&[user(1)], &[], now)),
        Err(RekeyError::LeaderOnly("remove participants"))
    );
}

#[test]
fn concurrent_departures_coalesce_into_one_rekey() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3), (5, 5, 4)]);
    net.with(2, |s, _| s.leave()).unwrap();
    net.advance(5);
    net.with(3, |s, _| s.leave()).unwrap();
    net.with(1, |s, now| {
        s.device_dropped(dev(4), now);
    });
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(5)]);
    // O(N): one Rekey container; the room's rotation announces the switch.
    assert_eq!(net.count("switch"), 0);
    assert_eq!(net.state(5).sending_epoch(), Epoch(2));
}

#[test]
fn when_the_leader_leaves_the_lowest_sender_index_takes_over_and_rekeys() {
    let mut net = Net::new(&[(2, 2, 5), (3, 3, 2), (4, 4, 7)]);
    net.with(1, |s, _| s.leave()).unwrap();
    // Device 3 has the lowest remaining sender index.
    for d in [2, 3, 4] {
        assert_eq!(net.state(d).leader(), dev(3));
    }
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.count("rekey"), 1);
    let (from, recipients, _) = net
        .sent
        .iter()
        .find(|(_, _, k)| *k == "rekey")
        .unwrap()
        .clone();
    assert_eq!(from, dev(3));
    assert_eq!(recipients, vec![dev(2), dev(4)]);
    for d in [2, 3, 4] {
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
    }
    assert!(net.refused.is_empty(), "{:?}", net.refused);
}

#[test]
fn departures_during_a_rekey_wait_for_the_next_one() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    net.with(2, |s, _| s.leave()).unwrap();
    // Hold the leader's Rekey in flight: fire its timer without delivering outputs.
    net.now += ms(CFG.coalesce);
    let now = UnixMillis(net.now);
    let leader = net.states.get_mut(&dev(1)).unwrap();
    leader.handle_timeout(now, &mut net.rng);
    let mut held = Vec::new();
    while let Some(o) = leader.poll_output() {
        held.push(o);
    }
    assert!(held.iter().any(|o| matches!(
        o,
        MeetingOutput::Send {
            rekey_epoch: Some(Epoch(2)),
            ..
        }
    )));
    // Device 3 leaves while epoch 2 is in flight: no second Rekey yet.
    leader.device_dropped(dev(3), now);
    assert!(
        leader
            .poll_timeout()
            .is_none_or(|t| t.0 > net.now + ms(CFG.coalesce))
    );
    leader.rekey_delivered(Epoch(2), now).unwrap();
    assert_eq!(leader.sending_epoch(), Epoch(2));
    // After the switch the queued departure rekeys to epoch 3 without device 3.
    net.run();
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.state(1).sending_epoch(), Epoch(3));
    assert!(!net.state(1).roster().contains(&dev(3)));
}

fn rekey_payload(epoch: u64, roster: &Roster, leader: u8) -> v1::ContainerPayload {
    payload(Body::Rekey(v1::Rekey {
        meeting_id: vec![9; 32],
        epoch,
        meeting_key: vec![1; 32],
        roster: roster.to_proto(),
        key_leader_device_id: dev(leader).as_bytes().to_vec(),
        reason: RekeyReason::Leave as i32,
    }))
}

#[test]
fn forged_or_replayed_control_messages_are_refused_and_change_nothing() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let full = net.state(2).roster().clone();
    let without_3 = full.without(&[dev(3)]);
    let s = net.states.get_mut(&dev(2)).unwrap();
    let now = UnixMillis(1_000);
    // From a device that is not the leader (device 3 tries to cut device 1 out).
    let forged = rekey_payload(2, &full.without(&[dev(1)]), 3);
    assert_eq!(
        s.on_message(dev(3), &[dev(2)], &forged, now),
        Err(RekeyError::NotLeader { what: "Rekey" })
    );
    // Not a later epoch.
    assert!(matches!(
        s.on_message(dev(1), &[dev(2)], &rekey_payload(1, &without_3, 1), now),
        Err(RekeyError::BadEpoch { got: Epoch(1), .. })
    ));
    // Sent to a device off the new roster (the leader also sealed it to device 3).
    assert_eq!(
        s.on_message(
            dev(1),
            &[dev(2), dev(3)],
            &rekey_payload(2, &without_3, 1),
            now
        ),
        Err(RekeyError::BadRoster(
            "the rekey was sent to a device off the new roster"
        ))
    );
    // A roster that adds a device.
    let mut grown: Vec<RosterMember> = full.iter().cloned().collect();
    grown.push(member(8, 8, 9));
    let grown = Roster::new(grown).unwrap();
    assert!(matches!(
        s.on_message(
            dev(1),
            &[dev(2), dev(3), dev(8)],
            &rekey_payload(2, &grown, 1),
            now
        ),
        Err(RekeyError::BadRoster(_))
    ));
    // Another meeting.
    let mut other = rekey_payload(2, &without_3, 1);
    if let Some(Body::Rekey(r)) = &mut other.body {
        r.meeting_id = vec![8; 32];
    }
    assert_eq!(
        s.on_message(dev(1), &[dev(2)], &other, now),
        Err(RekeyError::WrongMeeting)
    );
    // A switch from a non-leader, and a switch to an epoch never installed.
    let switch = |epoch| {
        payload(Body::EpochSwitch(v1::EpochSwitch {
            meeting_id: vec![9; 32],
            epoch,
            joined: vec![],
        }))
    };
    assert_eq!(
        s.on_message(dev(3), &[dev(2)], &switch(2), now),
        Err(RekeyError::NotLeader {
            what: "EpochSwitch"
        })
    );
    assert!(matches!(
        s.on_message(dev(1), &[dev(2)], &switch(5), now),
        Err(RekeyError::BadEpoch { got: Epoch(5), .. })
    ));
    // A Remove from a non-leader.
    let remove = payload(Body::Remove(v1::Remove {
        meeting_id: vec![9; 32],
        user_ids: vec![],
        device_ids: vec![dev(2).as_bytes().to_vec()],
    }));
    assert_eq!(
        s.on_message(dev(3), &[dev(2)], &remove, now),
        Err(RekeyError::NotLeader { what: "Remove" })
    );
    // Nothing changed.
    assert_eq!(s.sending_epoch(), Epoch(1));
    assert_eq!(s.epochs().collect::<Vec<_>>(), vec![Epoch(1)]);
    assert_eq!(s.roster(), &full);
    assert!(!s.is_ended());
    assert!(s.poll_output().is_none());
}

/// A key leader sending a Rekey faster than the switch deadline (each replacing the
/// pending one before anybody switches) cannot make a device hold keys without bound:
/// a replaced pending epoch's key goes a switch deadline and a grace later.
#[test]
fn rekeys_replacing_each_other_before_the_switch_do_not_pile_up_keys() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let roster = net.state(2).roster().clone();
    let s = net.states.get_mut(&dev(2)).unwrap();
    let step = ms(CFG.switch_deadline) / 2;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut now = UnixMillis(1_000);
    for epoch in 2..200 {
        s.on_message(
            dev(1),
            &[dev(2), dev(3)],
            &rekey_payload(epoch, &roster, 1),
            now,
        )
        .unwrap();
        now = UnixMillis(now.0 + step);
        s.handle_timeout(now, &mut rng);
        assert_eq!(
            s.sending_epoch(),
            Epoch(1),
            "no switch: each Rekey came first"
        );
        let held = s.epochs().count();
        let window = ms(CFG.switch_deadline) + ms(CFG.grace);
        let bound = 2 + usize::try_from(window / step).unwrap() + 1;
        assert!(
            held <= bound,
            "{held} keys held at epoch {epoch} (at most {bound})"
        );
    }
    // Every replaced epoch's key was dropped and said so.
    let dropped = std::iter::from_fn(|| s.poll_output())
        .filter(|o| matches!(o, MeetingOutput::DropEpoch { .. }))
        .count();
    assert!(dropped > 150, "{dropped} epochs dropped");
}

#[test]
fn a_valid_rekey_installs_for_receiving_before_the_switch() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let without_3 = net.state(2).roster().without(&[dev(3)]);
    let s = net.states.get_mut(&dev(2)).unwrap();
    let now = UnixMillis(1_000);
    s.on_message(dev(1), &[dev(2)], &rekey_payload(2, &without_3, 1), now)
        .unwrap();
    assert!(matches!(
        s.poll_output(),
        Some(MeetingOutput::ReceiveEpoch { epoch: Epoch(2) })
    ));
    // Still sending on epoch 1 until the leader says switch.
    assert_eq!(s.sending_epoch(), Epoch(1));
    assert!(s.key(Epoch(2)).is_some());
}

#[test]
fn a_late_joiner_gets_the_ratcheted_key_and_cannot_decrypt_earlier_epochs() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let versions: Vec<u64> = [1, 2, 3].map(|d| net.state(d).roster_version()).to_vec();
    let invite = net
        .with(1, |s, now| {
            s.add_participants(
                vec![member(6, 6, 3)],
                &[MediaKind::Audio],
                UnixMillis(u64::MAX),
                now,
            )
        })
        .unwrap();
    let Some(Body::MeetingInvite(invite)) = invite.to_wire().body.clone() else {
        panic!("expected an invite");
    };
    let joiner = MeetingState::from_invite(dev(6), &invite, CFG, UnixMillis(net.now)).unwrap();
    assert_eq!(invite.epoch, 2);
    // Existing members ratcheted to the same key; the joiner holds only epoch 2.
    let expected = net.state(1).key(Epoch(1)).unwrap().ratchet().unwrap();
    for (d, before) in [1, 2, 3].into_iter().zip(versions) {
        let s = net.state(d);
        assert_ne!(s.roster_version(), before, "the roster changed");
        assert_eq!(s.sending_epoch(), Epoch(2));
        assert_eq!(
            s.key(Epoch(2)).unwrap().expose_secret(),
            expected.expose_secret()
        );
        assert!(s.roster().contains(&dev(6)));
    }
    assert_eq!(
        joiner.key(Epoch(2)).unwrap().expose_secret(),
        expected.expose_secret()
    );
    assert_eq!(joiner.epochs().collect::<Vec<_>>(), vec![Epoch(2)]);
    assert!(joiner.key(Epoch(1)).is_none());
    assert!(net.refused.is_empty(), "{:?}", net.refused);
    // Only the leader adds participants, and a joiner cannot be added twice.
    assert_eq!(
        net.with(2, |s, now| s.add_participants(
            vec![member(7, 7, 9)],
            &[],
            UnixMillis(0),
            now
        ))
        .unwrap_err(),
        RekeyError::LeaderOnly("add participants")
    );
    assert!(matches!(
        net.with(1, |s, now| s.add_participants(
            vec![member(6, 6, 8)],
            &[],
            UnixMillis(0),
            now
        )),
        Err(RekeyError::BadRoster(_))
    ));
}

impl Net {
    /// The device's process dies: it sends and receives nothing more.
    fn crash(&mut self, d: u8) {
        self.states.remove(&dev(d));
    }

    /// Every device in `ds` sees device `gone` drop out.
    fn see_dropped(&mut self, ds: &[u8], gone: u8) {
        for d in ds {
            self.with(*d, |s, now| s.device_dropped(dev(gone), now));
        }
    }
}

#[test]
fn a_leader_that_drops_out_is_succeeded_by_the_lowest_sender_index() {
    let mut net = Net::new(&[(2, 2, 5), (3, 3, 2), (4, 4, 7)]);
    net.crash(1);
    net.see_dropped(&[2, 3, 4], 1);
    for d in [2, 3, 4] {
        assert_eq!(net.state(d).leader(), dev(3));
    }
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(2), dev(4)]);
    for d in [2, 3, 4] {
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
        assert!(!net.state(d).roster().contains(&dev(1)));
    }
    assert!(net.refused.is_empty(), "{:?}", net.refused);
}

#[test]
fn a_successors_rekey_that_arrives_before_the_drop_is_seen_is_held_until_then() {
    let mut net = Net::new(&[(2, 2, 5), (3, 3, 2), (4, 4, 7)]);
    net.crash(1);
    // Only the successor has seen the leader go; its Rekey and switch reach the
    // others first.
    net.see_dropped(&[3], 1);
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.state(3).sending_epoch(), Epoch(2));
    for d in [2, 4] {
        assert_eq!(net.state(d).leader(), dev(1), "held, not obeyed");
        assert!(net.state(d).key(Epoch(2)).is_none());
        assert_eq!(net.state(d).sending_epoch(), Epoch(1));
    }
    // Once each sees the leader drop, the held Rekey and switch apply.
    net.see_dropped(&[2, 4], 1);
    for d in [2, 4] {
        assert_eq!(net.state(d).leader(), dev(3));
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
        assert!(!net.state(d).roster().contains(&dev(1)));
    }
    assert!(net.refused.is_empty(), "{:?}", net.refused);
}

#[test]
fn a_rekey_that_cuts_out_a_live_leader_is_never_obeyed() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let without_1 = net.state(3).roster().without(&[dev(1)]);
    // Device 2 (lowest index after the leader) tries to take the meeting over.
    net.with(3, |s, now| {
        s.on_message(dev(2), &[dev(3)], &rekey_payload(2, &without_1, 2), now)
    })
    .unwrap();
    assert!(net.state(3).key(Epoch(2)).is_none());
    // The leader moves the meeting on: the held Rekey is discarded for good.
    net.with(1, |s, now| s.remove(&[], &[dev(2)], now)).unwrap();
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.state(3).sending_epoch(), Epoch(2));
    assert_eq!(net.state(3).leader(), dev(1));
    let held = net.state(3).key(Epoch(2)).unwrap().expose_secret().to_vec();
    assert_ne!(held, vec![1; 32], "the forged key was never installed");
}

#[test]
fn a_successor_also_rekeys_out_devices_that_dropped_while_the_leader_went_down() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    net.crash(4);
    net.crash(1);
    // Device 4's drop is seen before the leader's (or both at one deadline).
    net.see_dropped(&[2, 3], 4);
    net.see_dropped(&[2, 3], 1);
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(3)]);
    for d in [2, 3] {
        assert_eq!(net.state(d).roster().len(), 2);
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
    }
}

#[test]
fn a_successor_keeps_out_whoever_the_crashed_leaders_pending_rekey_left_out() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    // The leader removes device 2, sends the Rekey, and crashes before the switch.
    net.now += 1;
    let now = UnixMillis(net.now);
    let leader = net.states.get_mut(&dev(1)).unwrap();
    leader.remove(&[], &[dev(2)], now).unwrap();
    leader.handle_timeout(UnixMillis(net.now + ms(CFG.coalesce)), &mut net.rng);
    let mut outputs = Vec::new();
    while let Some(o) = leader.poll_output() {
        outputs.push(o);
    }
    net.crash(1);
    for o in outputs {
        if let MeetingOutput::Send {
            recipients,
            message,
            ..
        } = o
        {
            let payload = message.to_wire();
            for r in &recipients {
                if let Some(s) = net.states.get_mut(r) {
                    let _ = s.on_message(dev(1), &recipients, &payload, now);
                }
            }
        }
    }
    assert!(net.state(2).is_ended());
    assert!(
        net.state(3).key(Epoch(2)).is_some(),
        "the leader's Rekey is pending"
    );
    net.see_dropped(&[3, 4], 1);
    // Device 2 had the lowest index but was being removed: device 3 leads.
    assert_eq!(net.state(4).leader(), dev(3));
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(4)]);
    for d in [3, 4] {
        assert_eq!(net.state(d).sending_epoch(), Epoch(3));
        assert!(!net.state(d).roster().contains(&dev(2)));
    }
}

fn switch_payload(epoch: u64) -> v1::ContainerPayload {
    payload(Body::EpochSwitch(v1::EpochSwitch {
        meeting_id: vec![9; 32],
        epoch,
        joined: vec![],
    }))
}

#[test]
fn a_participant_cannot_jump_the_succession_order_with_a_held_rekey() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3), (5, 5, 4)]);
    // Device 4 (third in line) plants a Rekey of its own at device 5.
    let own = net.state(5).roster().without(&[dev(1), dev(2), dev(3)]);
    net.with(5, |s, now| {
        s.on_message(dev(4), &[dev(5)], &rekey_payload(2, &own, 4), now)?;
        s.on_message(dev(4), &[dev(5)], &switch_payload(2), now)
    })
    .unwrap();
    net.crash(1);
    net.see_dropped(&[5], 1);
    assert_eq!(
        net.state(5).leader(),
        dev(2),
        "the succession order decides"
    );
    assert!(
        net.state(5).key(Epoch(2)).is_none(),
        "device 4's key was not installed"
    );
    net.see_dropped(&[2, 3, 4], 1);
    net.advance(ms(CFG.coalesce));
    for d in [2, 3, 4, 5] {
        assert_eq!(net.state(d).leader(), dev(2));
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
    }
    let key = net.state(5).key(Epoch(2)).unwrap().expose_secret().to_vec();
    assert_eq!(
        key,
        net.state(2).key(Epoch(2)).unwrap().expose_secret().to_vec()
    );
}

#[test]
fn after_the_leader_leaves_only_its_successor_may_rekey() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    net.with(1, |s, _| s.leave()).unwrap();
    // Inside device 2's coalescing window, device 3 tries to rekey first.
    let own = net.state(4).roster().without(&[dev(2)]);
    net.with(4, |s, now| {
        s.on_message(dev(3), &[dev(4)], &rekey_payload(2, &own, 3), now)?;
        s.on_message(dev(3), &[dev(4)], &switch_payload(2), now)
    })
    .unwrap();
    assert_eq!(net.state(4).sending_epoch(), Epoch(1), "held, not obeyed");
    net.advance(ms(CFG.coalesce));
    for d in [2, 3, 4] {
        assert_eq!(net.state(d).leader(), dev(2));
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
    }
    let key = net.state(4).key(Epoch(2)).unwrap().expose_secret().to_vec();
    assert_eq!(
        key,
        net.state(2).key(Epoch(2)).unwrap().expose_secret().to_vec()
    );
}

#[test]
fn succession_skips_a_successor_already_seen_dropping_out() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    net.crash(2);
    net.crash(1);
    net.see_dropped(&[3, 4], 2);
    net.see_dropped(&[3, 4], 1);
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.recipients_of_last("rekey"), vec![dev(4)]);
    for d in [3, 4] {
        assert_eq!(net.state(d).leader(), dev(3));
        assert_eq!(net.state(d).roster().len(), 2);
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
    }
}

#[test]
fn a_device_the_crashed_leaders_rekey_missed_follows_once_the_removed_successor_goes() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    // The leader removes device 2; its Rekey reaches device 3 only; it crashes.
    let now = UnixMillis(net.now);
    let leader = net.states.get_mut(&dev(1)).unwrap();
    leader.remove(&[], &[dev(2)], now).unwrap();
    leader.handle_timeout(UnixMillis(net.now + ms(CFG.coalesce)), &mut net.rng);
    let outputs: Vec<MeetingOutput> = std::iter::from_fn(|| leader.poll_output()).collect();
    net.crash(1);
    for o in outputs {
        if let MeetingOutput::Send {
            recipients,
            message,
            ..
        } = o
        {
            let payload = message.to_wire();
            for r in recipients.iter().filter(|r| **r != dev(4)) {
                if let Some(s) = net.states.get_mut(r) {
                    let _ = s.on_message(dev(1), &recipients, &payload, now);
                }
            }
        }
    }
    assert!(net.state(2).is_ended());
    net.see_dropped(&[3, 4], 1);
    assert_eq!(net.state(3).leader(), dev(3));
    assert_eq!(
        net.state(4).leader(),
        dev(2),
        "device 4 never saw the removal"
    );
    net.advance(ms(CFG.coalesce));
    assert_eq!(
        net.state(4).sending_epoch(),
        Epoch(1),
        "device 3's rekey is held"
    );
    // Device 2 ended and left the room: device 4 sees it go, and follows device 3.
    net.see_dropped(&[4], 2);
    for d in [3, 4] {
        assert_eq!(net.state(d).leader(), dev(3));
        assert_eq!(net.state(d).sending_epoch(), Epoch(3));
        assert!(!net.state(d).roster().contains(&dev(2)));
    }
}

#[test]
fn a_rekey_costs_one_container_and_the_rooms_rotation_switches_everyone() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    net.with(4, |s, _| s.leave()).unwrap();
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.count("rekey"), 1);
    assert_eq!(net.count("switch"), 0, "no second container round");
    for d in [1, 2, 3] {
        assert_eq!(net.state(d).sending_epoch(), Epoch(2));
    }
}

#[test]
fn a_rotation_announced_before_the_rekey_arrives_switches_on_arrival() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let without_3 = net.state(2).roster().without(&[dev(3)]);
    let s = net.states.get_mut(&dev(2)).unwrap();
    let now = UnixMillis(1_000);
    s.room_epoch(Epoch(2), now).unwrap();
    assert_eq!(
        s.sending_epoch(),
        Epoch(1),
        "no key for epoch 2 yet: nothing to switch to"
    );
    s.on_message(dev(1), &[dev(2)], &rekey_payload(2, &without_3, 1), now)
        .unwrap();
    assert_eq!(s.sending_epoch(), Epoch(2));
    assert!(!s.roster().contains(&dev(3)));
}

#[test]
fn a_withheld_rotation_cannot_keep_a_device_on_the_old_key() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    net.announce = false;
    net.with(3, |s, _| s.leave()).unwrap();
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.state(1).sending_epoch(), Epoch(2));
    assert_eq!(
        net.state(2).sending_epoch(),
        Epoch(1),
        "waits for the announcement"
    );
    net.advance(ms(CFG.switch_deadline));
    assert_eq!(
        net.state(2).sending_epoch(),
        Epoch(2),
        "switched at its own deadline"
    );
    assert_eq!(net.state(2).roster().len(), 2);
}

#[test]
fn an_announcement_past_every_held_key_only_pauses_sending() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let s = net.states.get_mut(&dev(2)).unwrap();
    s.room_epoch(Epoch(7), UnixMillis(1_000)).unwrap();
    assert_eq!(s.sending_epoch(), Epoch(1));
    assert!(s.key(Epoch(7)).is_none());
    assert!(s.is_sending_paused());
    assert!(matches!(
        s.poll_output(),
        Some(MeetingOutput::SendingPaused {
            room_epoch: Epoch(7)
        })
    ));
    assert!(s.poll_output().is_none(), "the key is asked for only later");
    assert_eq!(s.roster().len(), 3, "an announcement changes no roster");
}

/// Review M3: a hostile server withholds a member's Rekey (and still reports it
/// delivered) so that the member keeps sending on the key the removed participant
/// holds. The room's move to the new epoch makes the member stop sending at once, and
/// its key request to the leader brings the key.
#[test]
fn a_member_whose_rekey_is_withheld_stops_sending_and_asks_the_leader_for_the_key() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    net.withhold_rekeys_from = Some(dev(2));
    net.with(1, |s, now| s.remove(&[], &[dev(4)], now)).unwrap();
    net.advance(ms(CFG.coalesce));
    assert_eq!(net.state(1).sending_epoch(), Epoch(2));
    assert_eq!(net.state(3).sending_epoch(), Epoch(2));
    assert!(
        net.state(2).is_sending_paused(),
        "no longer sending on epoch 1, which the removed device holds"
    );
    assert_eq!(net.paused, vec![(dev(2), Epoch(2))]);

    // The key request; the first answer (after the leader's coalescing window) is
    // withheld too, so it asks again.
    net.advance(ms(CFG.key_request) + ms(CFG.coalesce));
    assert_eq!(net.count("keyrequest"), 1);
    assert!(net.state(2).is_sending_paused());
    net.withhold_rekeys_from = None;
    net.advance(2 * ms(CFG.key_request));
    assert_eq!(net.count("keyrequest"), 2, "asked again after the backoff");
    let s = net.state(2);
    assert!(!s.is_sending_paused());
    assert_eq!(s.sending_epoch(), Epoch(2));
    assert!(!s.roster().contains(&dev(4)));
    assert_eq!(
        net.recipients_of_last("rekey"),
        vec![dev(2)],
        "resent to the asking device alone"
    );
    net.advance(10 * ms(CFG.key_request));
    assert_eq!(
        net.count("keyrequest"),
        2,
        "no requests once it has the key"
    );
}

/// A member that missed a Rekey and then a join (whose ratchet it cannot follow) gets
/// a resend whose roster lists the joiner.
#[test]
fn a_resent_key_brings_the_devices_that_joined_meanwhile() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3)]);
    net.withhold_rekeys_from = Some(dev(2));
    net.with(1, |s, now| s.remove(&[], &[dev(4)], now)).unwrap();
    net.advance(ms(CFG.coalesce));
    net.with(1, |s, now| {
        s.add_participants(
            vec![member(5, 5, 4)],
            &[MediaKind::Audio],
            UnixMillis(u64::MAX),
            now,
        )
    })
    .unwrap();
    assert_eq!(net.state(1).sending_epoch(), Epoch(3));
    assert!(net.state(2).is_sending_paused());
    net.withhold_rekeys_from = None;
    net.advance(ms(CFG.key_request) + ms(CFG.coalesce));
    let s = net.state(2);
    assert_eq!(s.sending_epoch(), Epoch(3));
    assert!(!s.is_sending_paused());
    assert!(s.roster().contains(&dev(5)));
    assert!(!s.roster().contains(&dev(4)));
}

#[test]
fn key_requests_are_answered_only_for_roster_devices_and_at_a_bounded_rate() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    net.with(3, |s, _| s.leave()).unwrap();
    net.advance(ms(CFG.coalesce));
    let request = payload(Body::KeyRequest(v1::KeyRequest {
        meeting_id: vec![9; 32],
        held_epoch: 1,
        room_epoch: 2,
    }));
    let now = UnixMillis(net.now);
    let leader = net.states.get_mut(&dev(1)).unwrap();
    assert_eq!(
        leader.on_message(dev(3), &[dev(1)], &request, now),
        Err(RekeyError::NotParticipant),
        "the departed device gets nothing"
    );
    leader.on_message(dev(2), &[dev(1)], &request, now).unwrap();
    assert!(
        leader.poll_output().is_none(),
        "answered after the coalescing window"
    );
    let answer_at = UnixMillis(now.0 + ms(CFG.coalesce));
    assert_eq!(leader.poll_timeout(), Some(answer_at));
    leader.handle_timeout(answer_at, &mut ChaCha20Rng::seed_from_u64(7));
    assert!(matches!(
        leader.poll_output(),
        Some(MeetingOutput::Send { ref recipients, .. }) if recipients == &vec![dev(2)]
    ));
    assert_eq!(
        leader.on_message(dev(2), &[dev(1)], &request, now),
        Err(RekeyError::TooSoon)
    );
    let current = payload(Body::KeyRequest(v1::KeyRequest {
        meeting_id: vec![9; 32],
        held_epoch: 2,
        room_epoch: 9,
    }));
    let later = UnixMillis(now.0 + ms(CFG.key_request));
    leader
        .on_message(dev(2), &[dev(1)], &current, later)
        .unwrap();
    assert!(
        leader.poll_output().is_none(),
        "a device that holds the current key gets nothing"
    );
    let member = net.states.get_mut(&dev(2)).unwrap();
    assert_eq!(
        member.on_message(dev(1), &[dev(2)], &request, now),
        Err(RekeyError::LeaderOnly("answer key requests"))
    );
}

/// A burst of key requests (every member asks at once when the server delivered a
/// switch late) is answered by one resend to all of them, not one container each.
#[test]
fn a_burst_of_key_requests_gets_one_resend_to_all_who_asked() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2), (4, 4, 3), (5, 5, 4)]);
    let request = payload(Body::KeyRequest(v1::KeyRequest {
        meeting_id: vec![9; 32],
        held_epoch: 0,
        room_epoch: 1,
    }));
    let now = UnixMillis(net.now);
    let leader = net.states.get_mut(&dev(1)).unwrap();
    for d in [2, 3, 4] {
        leader.on_message(dev(d), &[dev(1)], &request, now).unwrap();
    }
    assert!(leader.poll_output().is_none());
    let at = UnixMillis(now.0 + ms(CFG.coalesce));
    leader.handle_timeout(at, &mut ChaCha20Rng::seed_from_u64(7));
    let Some(MeetingOutput::Send {
        recipients,
        message,
        rekey_epoch: None,
    }) = leader.poll_output()
    else {
        panic!("one resend");
    };
    assert_eq!(recipients, vec![dev(2), dev(3), dev(4)]);
    assert!(matches!(
        message.body,
        ControlMessage::Rekey {
            reason: RekeyReason::Resend,
            ..
        }
    ));
    assert!(
        leader.poll_output().is_none(),
        "nothing more: one container for all"
    );
    assert_eq!(leader.poll_timeout().filter(|t| *t <= at), None);
}

/// Only the leader may resend with added devices: anyone else's Rekey (and the
/// leader's ordinary Rekeys) only remove.
#[test]
fn a_resend_that_adds_devices_is_refused_from_anyone_but_the_leader() {
    let mut net = Net::new(&[(2, 2, 1), (3, 3, 2)]);
    let with_5 = Roster::new(
        net.state(2)
            .roster()
            .iter()
            .cloned()
            .chain([member(5, 5, 4)]),
    )
    .unwrap();
    let mut forged = rekey_payload(2, &with_5, 3);
    if let Some(Body::Rekey(r)) = &mut forged.body {
        r.reason = RekeyReason::Resend as i32;
    }
    let now = UnixMillis(net.now);
    let s = net.states.get_mut(&dev(2)).unwrap();
    assert!(s.on_message(dev(3), &[dev(2)], &forged, now).is_err());
    let ordinary = rekey_payload(2, &with_5, 1);
    assert!(matches!(
        s.on_message(dev(1), &[dev(2)], &ordinary, now),
        Err(RekeyError::BadRoster(_))
    ));
    assert_eq!(s.sending_epoch(), Epoch(1));
    assert!(!s.roster().contains(&dev(5)));
}

/// Review H1: a roster entry's certificate must be signed by the entry's identity key
/// and name the entry's device; a device listed under another user is refused.
#[test]
fn a_roster_entry_whose_certificate_does_not_prove_its_user_is_refused() {
    let now = UnixMillis(1_000);
    let honest = Roster::new([member(1, 1, 0), member(2, 2, 1)]).unwrap();
    assert!(Roster::from_proto(&honest.to_proto(), &Roster::default(), now).is_ok());

    // Device 2 (of user 2) listed under user 1, with user 1's key.
    let mut entries = honest.to_proto();
    let victim = member(1, 1, 0);
    entries[1].user_id = victim.user_id.as_bytes().to_vec();
    entries[1].identity_key = victim.identity_key.to_vec();
    let err = Roster::from_proto(&entries, &Roster::default(), now).unwrap_err();
    assert!(matches!(err, RekeyError::BadRoster(_)), "{err}");

    // An entry naming another device than its certificate.
    let mut entries = honest.to_proto();
    entries[1].device_id = dev(9).as_bytes().to_vec();
    assert!(Roster::from_proto(&entries, &Roster::default(), now).is_err());

    // An entry without a certificate.
    let mut entries = honest.to_proto();
    entries[0].certificate = None;
    assert!(Roster::from_proto(&entries, &Roster::default(), now).is_err());
}

/// The leader's rekey cycle, phase by phase: a removal gathers departures
/// (`Coalescing`), the Rekey goes out (`Delivering`), its delivery switches
/// (`Steady`), leaving ends (`Ended`). Adding participants waits for `Steady`.
#[test]
fn the_leaders_phases_follow_its_rekey_cycle() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let roster = Roster::new([member(1, 1, 0), member(2, 2, 1), member(3, 3, 2)]).unwrap();
    let meeting = MeetingId::from_slice(&[4; 32]).unwrap();
    let key = MeetingKey::generate(Epoch(0), &mut rng);
    let mut s = MeetingState::start(meeting, dev(1), roster, key, CFG).unwrap();
    assert_eq!(s.phase(), Phase::Steady);
    s.remove(&[user(3)], &[], UnixMillis(1_000)).unwrap();
    assert_eq!(s.phase(), Phase::Coalescing { rekey_at: 1_020 });
    let busy = s.add_participants(
        vec![member(4, 4, 3)],
        &[],
        UnixMillis(u64::MAX),
        UnixMillis(1_000),
    );
    assert!(matches!(busy, Err(RekeyError::Busy)));
    s.handle_timeout(UnixMillis(1_020), &mut rng);
    assert_eq!(s.phase(), Phase::Delivering { epoch: Epoch(1) });
    assert!(s.rekey_delivered(Epoch(2), UnixMillis(1_030)).is_err());
    assert_eq!(s.phase(), Phase::Delivering { epoch: Epoch(1) });
    s.rekey_delivered(Epoch(1), UnixMillis(1_030)).unwrap();
    assert_eq!(s.phase(), Phase::Steady);
    assert_eq!(s.sending_epoch(), Epoch(1));
    s.leave().unwrap();
    assert_eq!(s.phase(), Phase::Ended(EndReason::Left));
    assert!(s.is_ended());
}
