//! Room registry behaviour, driven with virtual time.

use conclave_core::meeting::{Epoch, MeetingId, MeetingKey, RoomAuthKey, RoutingId};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;

const GRACE: u64 = 1_000;
const SUCCESSION: u64 = 5_000;
const ROTATION_BURST: u32 = 3;
const ROTATION_INTERVAL: u64 = 200;

/// The device each test connection authenticated as.
fn dev(conn: ConnId) -> DeviceIdBytes {
    [conn as u8; 16]
}

struct Fixture {
    reg: RoomRegistry,
    routing: RoutingId,
    rng: ChaCha20Rng,
}

fn binding(conn: ConnId) -> Vec<u8> {
    vec![conn as u8; 32]
}
fn challenge(conn: ConnId) -> Vec<u8> {
    vec![0xC0 ^ conn as u8; 32]
}

impl Fixture {
    fn new() -> Self {
        Self::with_limits(8, 4)
    }

    fn with_limits(max_members: usize, max_rooms: usize) -> Self {
        let mut reg = RoomRegistry::new(RoomLimits {
            max_members_per_room: max_members,
            max_rooms_per_connection: max_rooms,
            rotation_grace_ms: GRACE,
            succession_grace_ms: SUCCESSION,
            rotation_burst: ROTATION_BURST,
            rotation_interval_ms: ROTATION_INTERVAL,
        });
        for c in 1..=10 {
            reg.connect(c, &binding(c), &challenge(c));
            reg.authenticate(c, dev(c));
        }
        Fixture {
            reg,
            routing: MeetingId::from_slice(&[7; 32]).unwrap().routing_id(),
            rng: ChaCha20Rng::seed_from_u64(1),
        }
    }

    fn key(&mut self, epoch: u64) -> RoomAuthKey {
        MeetingKey::generate(Epoch(epoch), &mut self.rng).room_auth_key(&self.routing)
    }

    fn open(&mut self, conn: ConnId, key: &RoomAuthKey) -> Result<Joined, RoomError> {
        self.open_listing(conn, key, &[dev(conn)], None, 0)
    }

    /// Opens with `leaders` as the room's leader devices, over `stored` if given.
    fn open_listing(
        &mut self,
        conn: ConnId,
        key: &RoomAuthKey,
        leaders: &[DeviceIdBytes],
        stored: Option<RoomRecord>,
        now: u64,
    ) -> Result<Joined, RoomError> {
        let sig = key.sign_join(&binding(conn), &challenge(conn)).unwrap();
        let req = OpenRequest {
            routing_id: *self.routing.as_bytes(),
            epoch: key.epoch(),
            auth_public: key.public().to_bytes(),
            join_signature: &sig,
            leaders,
        };
        self.reg.open(conn, &req, stored, now)
    }

    fn join(&mut self, conn: ConnId, key: &RoomAuthKey) -> Result<Joined, RoomError> {
        let sig = key.sign_join(&binding(conn), &challenge(conn)).unwrap();
        self.reg
            .join(conn, self.routing.as_bytes(), key.epoch(), &sig, 0)
    }

    fn rotate(
        &mut self,
        conn: ConnId,
        current: &RoomAuthKey,
        next: &RoomAuthKey,
        now: u64,
    ) -> Result<RoomRecord, RoomError> {
        let rot = current.sign_rotation(next).unwrap();
        let join = next.sign_join(&binding(conn), &challenge(conn)).unwrap();
        let req = RotateRequest {
            routing_id: *self.routing.as_bytes(),
            next_epoch: next.epoch(),
            next_auth_public: next.public().to_bytes(),
            rotation_signature: &rot,
            join_signature: &join,
            next_leaders: &[],
        };
        self.reg.rotate(conn, &req, now)
    }

    fn drain(&mut self) -> Vec<RoomOutput> {
        std::iter::from_fn(|| self.reg.poll_output()).collect()
    }

    fn last_routes(&mut self) -> Vec<Route> {
        self.drain()
            .into_iter()
            .filter_map(|o| match o {
                RoomOutput::Routes { routes, .. } => Some(routes),
                _ => None,
            })
            .next_back()
            .unwrap()
    }
}

#[test]
fn opener_leads_and_joiners_get_distinct_slots() {
    let mut f = Fixture::new();
    let k = f.key(1);
    let a = f.open(1, &k).unwrap();
    assert!(a.leader);
    assert_eq!(a.persist.unwrap().epoch, 1);
    let b = f.join(2, &k).unwrap();
    assert!(!b.leader);
    assert_eq!(b.handle, a.handle);
    assert_ne!(b.slot, a.slot);
    assert_eq!(b.member_slots, vec![a.slot]);
    let outputs = f.drain();
    assert!(outputs.contains(&RoomOutput::Event {
        conn: 1,
        event: RoomEvent::MemberJoined {
            handle: a.handle,
            slot: b.slot,
            device: Some(dev(2)),
        }
    }));
    let routes = outputs
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Routes { routes, .. } => Some(routes.clone()),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(routes.len(), 2);
}

#[test]
fn join_needs_a_proof_for_this_connection_and_epoch() {
    let mut f = Fixture::new();
    let k = f.key(1);
    f.open(1, &k).unwrap();
    // A proof made for connection 3's TLS session does not work on connection 2.
    let sig = k.sign_join(&binding(3), &challenge(3)).unwrap();
    let routing = *f.routing.as_bytes();
    assert_eq!(
        f.reg.join(2, &routing, 1, &sig, 0),
        Err(RoomError::BadProof)
    );
    // A key of another epoch is refused.
    let other = f.key(2);
    assert_eq!(f.join(2, &other), Err(RoomError::WrongEpoch { current: 1 }));
    // Garbage signature.
    assert_eq!(
        f.reg.join(2, &routing, 1, &[0; 3], 0),
        Err(RoomError::BadProof)
    );
    // Unknown room.
    assert_eq!(
        f.reg.join(2, &[9; 32], 1, &sig, 0),
        Err(RoomError::NoSuchRoom)
    );
}

#[test]
fn reopening_with_another_key_conflicts() {
    let mut f = Fixture::new();
    let k = f.key(1);
    f.open(1, &k).unwrap();
    let other = f.key(1);
    assert_eq!(f.open(2, &other), Err(RoomError::Conflict));
    // Same key: a join.
    let j = f.open(2, &k).unwrap();
    assert!(!j.leader);
    assert!(j.persist.is_none());
}

#[test]
fn stored_record_guards_reopening_after_restart() {
    let mut f = Fixture::new();
    let old = f.key(1);
    let current = f.key(2);
    let stored = RoomRecord {
        epoch: 2,
        auth_public: current.public().to_bytes(),
        updated_at_ms: 0,
        leaders: vec![dev(1)],
    };
    let sig = old.sign_join(&binding(1), &challenge(1)).unwrap();
    let req = OpenRequest {
        routing_id: *f.routing.as_bytes(),
        epoch: 1,
        auth_public: old.public().to_bytes(),
        join_signature: &sig,
        leaders: &[],
    };
    // A removed participant holding the old epoch cannot resurrect the room.
    assert_eq!(
        f.reg.open(1, &req, Some(stored.clone()), 0),
        Err(RoomError::WrongEpoch { current: 2 })
    );
    let sig = current.sign_join(&binding(1), &challenge(1)).unwrap();
    let req = OpenRequest {
        routing_id: *f.routing.as_bytes(),
        epoch: 2,
        auth_public: current.public().to_bytes(),
        join_signature: &sig,
        leaders: &[],
    };
    assert!(f.reg.open(1, &req, Some(stored), 0).is_ok());
}

#[test]
fn only_the_leader_rotates_and_unproven_members_are_evicted_after_grace() {
    let mut f = Fixture::new();
    let k1 = f.key(1);
    let k2 = f.key(2);
    let a = f.open(1, &k1).unwrap();
    f.join(2, &k1).unwrap();
    let c = f.join(3, &k1).unwrap();
    f.drain();
    assert_eq!(f.rotate(2, &k1, &k2, 100), Err(RoomError::NotLeader));
    let rec = f.rotate(1, &k1, &k2, 100).unwrap();
    assert_eq!(rec.epoch, 2);
    let outputs = f.drain();
    for conn in [2, 3] {
        assert!(outputs.contains(&RoomOutput::Event {
            conn,
            event: RoomEvent::EpochChanged {
                handle: a.handle,
                epoch: 2,
                grace_ms: GRACE
            }
        }));
    }
    assert_eq!(f.reg.poll_timeout(), Some(100 + GRACE));
    // Member 2 proves the new epoch; member 3 does not.
    let again = f.join(2, &k2).unwrap();
    assert_eq!(again.handle, a.handle);
    // Old-epoch proofs no longer work.
    assert_eq!(f.join(3, &k1), Err(RoomError::WrongEpoch { current: 2 }));
    f.reg.handle_timeout(100 + GRACE - 1);
    assert!(f.drain().is_empty());
    f.reg.handle_timeout(100 + GRACE);
    let outputs = f.drain();
    assert!(outputs.contains(&RoomOutput::Event {
        conn: 3,
        event: RoomEvent::Evicted { handle: a.handle }
    }));
    assert!(outputs.contains(&RoomOutput::Departed {
        conn: 3,
        handle: a.handle
    }));
    assert!(outputs.contains(&RoomOutput::Event {
        conn: 1,
        event: RoomEvent::MemberLeft {
            handle: a.handle,
            slot: c.slot,
            device: Some(dev(3)),
        }
    }));
    let routes: Vec<ConnId> = match outputs.last().unwrap() {
        RoomOutput::Routes { routes, .. } => routes.iter().map(|r| r.conn).collect(),
        other => panic!("expected routes last, got {other:?}"),
    };
    assert_eq!(routes, vec![1, 2]);
    assert_eq!(f.reg.poll_timeout(), None);
}

#[test]
fn rotation_must_increase_epoch_and_be_signed_by_current_key() {
    let mut f = Fixture::new();
    let k1 = f.key(1);
    let k2 = f.key(2);
    f.open(1, &k1).unwrap();
    // Signed by a stranger's key of epoch 1.
    let stranger = f.key(1);
    assert_eq!(f.rotate(1, &stranger, &k2, 0), Err(RoomError::BadProof));
    f.rotate(1, &k1, &k2, 0).unwrap();
    // Back to an older (or equal) epoch.
    let k1b = f.key(1);
    let k2b = f.key(2);
    assert!(matches!(
        f.rotate(1, &k1b, &k2b, 0),
        Err(RoomError::WrongEpoch { current: 2 })
    ));
}

/// Review M1: a member not on the room's leader list can never rotate, even when the
/// leader is gone, so it cannot move the room to an epoch of its choosing and brick it.
#[test]
fn a_member_off_the_leader_list_never_rotates() {
    let mut f = Fixture::new();
    let k1 = f.key(1);
    let k2 = f.key(2);
    f.open_listing(1, &k1, &[dev(1), dev(2)], None, 0).unwrap();
    f.join(2, &k1).unwrap();
    f.join(3, &k1).unwrap();
    f.reg.leave(1, f.routing.as_bytes(), 0).unwrap();
    assert_eq!(f.rotate(3, &k1, &k2, 60_000), Err(RoomError::NotLeader));
}

/// A listed successor takes over only once the leader has been out of the room for the
/// succession grace: never while the leader is present (muted or not), and not during a
/// reconnect blip.
#[test]
fn a_successor_rotates_only_after_the_leader_was_gone_for_the_grace() {
    let mut f = Fixture::new();
    let k1 = f.key(1);
    let k2 = f.key(2);
    f.open_listing(1, &k1, &[dev(1), dev(2)], None, 0).unwrap();
    assert!(!f.join(2, &k1).unwrap().leader);
    assert_eq!(
        f.rotate(2, &k1, &k2, 100),
        Err(RoomError::LeaderPresent {
            retry_after_ms: None
        })
    );
    f.reg.disconnect(1, 1_000);
    assert_eq!(
        f.rotate(2, &k1, &k2, 2_000),
        Err(RoomError::LeaderPresent {
            retry_after_ms: Some(SUCCESSION - 1_000)
        })
    );
    f.rotate(2, &k1, &k2, 1_000 + SUCCESSION).unwrap();
    assert!(f.join(2, &k2).unwrap().leader);
}

/// Leadership belongs to the leader's device: it survives a reconnect (a new
/// connection of the same device) and a server restart (the stored record keeps the
/// list), whoever re-opens the room first.
#[test]
fn leadership_survives_a_reconnect_and_a_restart() {
    let mut f = Fixture::new();
    let k1 = f.key(1);
    let k2 = f.key(2);
    let k3 = f.key(3);
    f.open_listing(1, &k1, &[dev(1)], None, 0).unwrap();
    f.join(2, &k1).unwrap();
    // The leader's device reconnects as connection 5.
    f.reg.disconnect(1, 10);
    f.reg.authenticate(5, dev(1));
    assert_eq!(f.rotate(2, &k1, &k2, 20), Err(RoomError::NotLeader));
    assert!(f.join(5, &k1).unwrap().leader);
    let record = f.rotate(5, &k1, &k2, 30).unwrap();
    assert_eq!(record.leaders, vec![dev(1)]);

    // Restart: a fresh registry; member 2 re-opens the room from the record first.
    let mut g = Fixture::new();
    g.routing = f.routing;
    let reopened = g.open_listing(2, &k2, &[dev(2)], Some(record), 0).unwrap();
    assert!(!reopened.leader);
    assert_eq!(reopened.persist.unwrap().leaders, vec![dev(1)]);
    assert_eq!(g.rotate(2, &k2, &k3, 100_000), Err(RoomError::NotLeader));
    assert!(g.join(1, &k2).unwrap().leader);
    g.rotate(1, &k2, &k3, 100_000).unwrap();
}

#[test]
fn the_last_member_leaving_or_disconnecting_ends_the_live_room() {
    let mut f = Fixture::new();
    let k = f.key(1);
    f.open(1, &k).unwrap();
    f.drain();
    f.reg.disconnect(1, 0);
    assert!(!f.reg.is_live(f.routing.as_bytes()));

    f.reg.connect(1, &binding(1), &challenge(1));
    f.open(1, &k).unwrap();
    f.drain();
    f.reg.leave(1, f.routing.as_bytes(), 0).unwrap();
    assert!(!f.reg.is_live(f.routing.as_bytes()));
    let outputs = f.drain();
    assert!(matches!(
        outputs.last(),
        Some(RoomOutput::Routes { routes, .. }) if routes.is_empty()
    ));
}

#[test]
fn limits_are_enforced() {
    let mut f = Fixture::with_limits(2, 1);
    let k = f.key(1);
    f.open(1, &k).unwrap();
    f.join(2, &k).unwrap();
    assert_eq!(f.join(3, &k), Err(RoomError::RoomFull { limit: 2 }));
    // Connection 1 is in one room already.
    let other_routing = MeetingId::from_slice(&[8; 32]).unwrap().routing_id();
    let other = MeetingKey::generate(Epoch(1), &mut f.rng).room_auth_key(&other_routing);
    let sig = other.sign_join(&binding(1), &challenge(1)).unwrap();
    let req = OpenRequest {
        routing_id: *other_routing.as_bytes(),
        epoch: 1,
        auth_public: other.public().to_bytes(),
        join_signature: &sig,
        leaders: &[],
    };
    assert_eq!(
        f.reg.open(1, &req, None, 0),
        Err(RoomError::TooManyRooms { limit: 1 })
    );
}

#[test]
fn slots_are_not_reused_while_the_room_lives() {
    let mut f = Fixture::new();
    let k = f.key(1);
    f.open(1, &k).unwrap();
    let b = f.join(2, &k).unwrap();
    f.reg.leave(2, f.routing.as_bytes(), 0).unwrap();
    let c = f.join(3, &k).unwrap();
    assert_ne!(b.slot, c.slot);
    let routes = f.last_routes();
    assert_eq!(routes.len(), 2);
}

/// Every join takes a slot never handed out before in this room's life; once all
/// 65,536 are spent the room refuses newcomers (members re-proving keep theirs) rather
/// than hand a departed member's slot to someone else. The room emptied and opened anew
/// starts over, under a new handle.
#[test]
fn a_room_never_hands_out_a_slot_twice_and_refuses_joins_once_all_are_spent() {
    let mut f = Fixture::new();
    let k = f.key(1);
    let first = f.open(1, &k).unwrap();
    assert_eq!(first.slot, Slot(0));
    // Connection 2 joins and leaves again and again: 65,535 more slots, each new.
    let sig = k.sign_join(&binding(2), &challenge(2)).unwrap();
    let routing = *f.routing.as_bytes();
    let mut seen = vec![false; 1 << 16];
    seen[usize::from(first.slot.get())] = true;
    for _ in 1..(1u32 << 16) {
        let j = f.reg.join(2, &routing, 1, &sig, 0).unwrap();
        assert!(
            !seen[usize::from(j.slot.get())],
            "slot {} handed out twice",
            j.slot
        );
        seen[usize::from(j.slot.get())] = true;
        f.reg.leave(2, &routing, 0).unwrap();
        f.drain();
    }
    assert!(seen.iter().all(|s| *s));
    // Every slot is spent: a newcomer is refused with a clear error ...
    let refused = f.join(3, &k).unwrap_err();
    assert_eq!(refused, RoomError::SlotsExhausted);
    assert!(refused.to_string().contains("65536"), "{refused}");
    // ... while the member still in the room re-proves and keeps its slot.
    assert_eq!(f.join(1, &k).unwrap().slot, first.slot);
    // Emptied and opened anew, the room starts over under another handle.
    f.reg.leave(1, &routing, 0).unwrap();
    let again = f.open(3, &k).unwrap();
    assert_eq!(again.slot, Slot(0));
    assert_ne!(again.handle, first.handle);
}

/// The leader may rotate a burst of times at once, then once per interval; a rotation
/// beyond that is refused with the wait, before anything changes. Refused attempts do
/// not use up the budget.
#[test]
fn rotations_beyond_the_burst_are_refused_until_the_interval_passes() {
    let mut f = Fixture::new();
    let mut keys = vec![f.key(1)];
    f.open(1, &keys[0]).unwrap();
    f.join(2, &keys[0]).unwrap();
    for epoch in 2..=u64::from(ROTATION_BURST) + 1 {
        keys.push(f.key(epoch));
        let n = keys.len();
        f.rotate(1, &keys[n - 2], &keys[n - 1], 1_000).unwrap();
    }
    let current = keys.pop().unwrap();
    let next = f.key(current.epoch() + 1);
    f.drain();
    assert_eq!(
        f.rotate(1, &current, &next, 1_000),
        Err(RoomError::RotationRateLimited {
            retry_after_ms: ROTATION_INTERVAL
        })
    );
    assert_eq!(
        f.rotate(1, &current, &next, 1_050),
        Err(RoomError::RotationRateLimited {
            retry_after_ms: ROTATION_INTERVAL - 50
        })
    );
    // Nothing happened: no event, the room is still at the old epoch.
    assert!(f.drain().is_empty());
    assert_eq!(
        f.join(2, &current).unwrap().epoch,
        current.epoch(),
        "the refused rotation changed nothing"
    );
    f.rotate(1, &current, &next, 1_000 + ROTATION_INTERVAL)
        .unwrap();
    // A non-leader never spends the room's budget.
    let after = f.key(next.epoch() + 1);
    assert_eq!(f.rotate(2, &next, &after, 5_000), Err(RoomError::NotLeader));
    let err = RoomError::RotationRateLimited { retry_after_ms: 7 };
    assert!(err.to_string().contains("room_rotation"), "{err}");
}

/// The eviction timer is driven by an index of rotation deadlines, not by a scan of
/// every member: it reports the earliest deadline of any room, is not fooled by
/// members that proved in time, and evicts only the overdue.
#[test]
fn eviction_deadlines_come_from_the_rotations_of_every_room() {
    let mut f = Fixture::new();
    let k1 = f.key(1);
    f.open(1, &k1).unwrap();
    f.join(2, &k1).unwrap();
    f.join(3, &k1).unwrap();
    assert_eq!(f.reg.poll_timeout(), None);
    let k2 = f.key(2);
    f.rotate(1, &k1, &k2, 100).unwrap();
    assert_eq!(f.reg.poll_timeout(), Some(100 + GRACE));
    // A second room rotates later; the first deadline still comes first.
    let mut g_routing = MeetingId::from_slice(&[9; 32]).unwrap().routing_id();
    std::mem::swap(&mut f.routing, &mut g_routing);
    let g1 = f.key(1);
    f.open(4, &g1).unwrap();
    f.join(5, &g1).unwrap();
    let g2 = f.key(2);
    f.rotate(4, &g1, &g2, 300).unwrap();
    assert_eq!(f.reg.poll_timeout(), Some(100 + GRACE));
    std::mem::swap(&mut f.routing, &mut g_routing);
    // Connection 2 proves in time, 3 does not.
    f.join(2, &k2).unwrap();
    f.drain();
    f.reg.handle_timeout(100 + GRACE);
    let outputs = f.drain();
    let evicted: Vec<ConnId> = outputs
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Event {
                conn,
                event: RoomEvent::Evicted { .. },
            } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, vec![3]);
    assert_eq!(f.reg.poll_timeout(), Some(300 + GRACE));
    f.reg.handle_timeout(300 + GRACE);
    assert!(f.drain().iter().any(|o| matches!(
        o,
        RoomOutput::Event {
            conn: 5,
            event: RoomEvent::Evicted { .. }
        }
    )));
    assert_eq!(f.reg.poll_timeout(), None);
}
