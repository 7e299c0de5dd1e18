//! The SFU's sans-IO room registry driven by a sequence of operations read from the
//! input: connect, open, join, rotate, leave, disconnect and timeouts, with connection
//! ids, rooms, epochs, keys, signatures and times chosen by the input.
//!
//! Signatures are either garbage from the input or genuine ones, made with room-auth
//! keys derived from a few fixed seeds (`MeetingKey::from_slice`) for the room and
//! epoch the input names, over the binding and challenge of the connection it names.
//! The harness keeps what the server would keep (the durable room records) and uses
//! it to aim rotations at the room's current epoch, so inputs easily reach joins,
//! rotations, re-proofs, evictions and leaderless rooms.
//!
//! After every operation the outputs are drained and checked: no panic; a fan-out
//! table never lists a connection or a slot twice nor more members than the limit; no
//! connection is in more rooms than the limit; departed and evicted connections are
//! out of the room; a successful join or open is reflected in its room's table;
//! `room_count` matches the live tables; after `handle_timeout(now)` no deadline is
//! left at or before `now`.
#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::OnceLock;

use conclave_core::meeting::{Epoch, MeetingKey, RoomAuthKey, RoutingId};
use conclave_proto::datagram::{RoomHandle, Slot};
use conclave_sfu::rooms::{
    ConnId, Joined, OpenRequest, RoomEvent, RoomLimits, RoomOutput, RoomRegistry, RotateRequest,
    Route,
};
use conclave_sfu::store::{RoomRecord, RoutingIdBytes};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Rooms the input can name.
const ROOMS: u8 = 3;
/// Key seeds per (room, epoch): the room's genuine key is one of them.
const SEEDS: u8 = 3;
/// Connections one input may open.
const MAX_CONNS: usize = 10;
/// Operations per input.
const MAX_OPS: usize = 64;
/// A connection id the registry never heard of.
const STRANGER: ConnId = 1_000;

fn routing(room: u8) -> RoutingId {
    RoutingId::from_bytes([0x40 + room; 32])
}

fn binding(conn: ConnId) -> [u8; 32] {
    let mut b = [0xb1; 32];
    b[..8].copy_from_slice(&conn.to_be_bytes());
    b
}

fn challenge(conn: ConnId) -> [u8; 32] {
    let mut c = [0xc4; 32];
    c[24..].copy_from_slice(&conn.to_be_bytes());
    c
}

/// Which room-auth key to use.
#[derive(Debug, Clone, Copy)]
struct KeySpec {
    room: u8,
    epoch: u64,
    seed: u8,
}

impl KeySpec {
    /// Mostly the key of `room` at `epoch` (one of the seeds), sometimes a key of the
    /// next epoch or of another room.
    fn read(u: &mut Unstructured<'_>, room: u8, epoch: u64) -> Result<KeySpec> {
        let b: u8 = u.arbitrary()?;
        let seed = b % SEEDS;
        Ok(match (b / SEEDS) % 8 {
            6 => KeySpec {
                room,
                epoch: epoch.wrapping_add(1),
                seed,
            },
            7 => KeySpec {
                room: (room + 1) % ROOMS,
                epoch,
                seed,
            },
            _ => KeySpec { room, epoch, seed },
        })
    }

    fn id(self) -> (u8, u64, u8) {
        (self.room, self.epoch, self.seed)
    }

    /// The key (derived once per process and cached: deriving and signing dominate the
    /// cost of an input, the registry's own verification is what is being tested).
    fn key(self) -> Rc<RoomAuthKey> {
        cached(&KEYS, self.id(), || {
            Rc::new(
                MeetingKey::from_slice(Epoch(self.epoch), &[self.seed + 1; 32])
                    .expect("32-byte key")
                    .room_auth_key(&routing(self.room)),
            )
        })
    }

    /// A join signature by this key over `binding_of`'s TLS binding and
    /// `challenge_of`'s challenge.
    fn sign_join(self, binding_of: ConnId, challenge_of: ConnId) -> Vec<u8> {
        cached(&JOINS, (self.id(), binding_of, challenge_of), || {
            self.key()
                .sign_join(&binding(binding_of), &challenge(challenge_of))
                .expect("short binding and challenge")
        })
        .to_vec()
    }

    /// A rotation signature by this key to `next`, if the SDK signs one.
    fn sign_rotation(self, next: KeySpec) -> Option<[u8; 64]> {
        cached(&ROTATIONS, (self.id(), next.id()), || {
            self.key().sign_rotation(&next.key()).ok()
        })
    }
}

type KeyId = (u8, u64, u8);
type RotationCache = HashMap<(KeyId, KeyId), Option<[u8; 64]>>;

thread_local! {
    static KEYS: RefCell<HashMap<KeyId, Rc<RoomAuthKey>>> = RefCell::default();
    static JOINS: RefCell<HashMap<(KeyId, ConnId, ConnId), [u8; 64]>> = RefCell::default();
    static ROTATIONS: RefCell<RotationCache> = RefCell::default();
}

/// Looks `k` up in a bounded per-thread cache, computing it on a miss.
fn cached<K, V>(
    cache: &'static std::thread::LocalKey<RefCell<HashMap<K, V>>>,
    k: K,
    make: impl FnOnce() -> V,
) -> V
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    if let Some(v) = cache.with(|c| c.borrow().get(&k).cloned()) {
        return v;
    }
    let v = make();
    cache.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(k, v.clone());
    });
    v
}

/// Prints each operation's outcome when `CONCLAVE_FUZZ_TRACE` is set, so
/// `-runs=0` over a corpus shows which paths it reaches.
fn trace(what: &str, outcome: &dyn std::fmt::Debug) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("CONCLAVE_FUZZ_TRACE").is_some()) {
        eprintln!("outcome {what} {outcome:?}");
    }
}

fn read_epoch(u: &mut Unstructured<'_>) -> Result<u64> {
    let b: u8 = u.arbitrary()?;
    Ok(match b {
        0..=239 => u64::from(b % 6),
        240..=247 => u64::MAX - u64::from(b - 240),
        _ => u.arbitrary()?,
    })
}

fn garbage(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=80)?;
    Ok(u.bytes(len)?.to_vec())
}

fn public_key(u: &mut Unstructured<'_>, key: &KeySpec) -> Result<[u8; 32]> {
    if u.ratio(1, 16)? {
        u.arbitrary()
    } else {
        Ok(key.key().public().to_bytes())
    }
}

struct Harness {
    reg: RoomRegistry,
    limits: RoomLimits,
    now: u64,
    conns: Vec<ConnId>,
    /// What the server would have persisted.
    store: HashMap<RoutingIdBytes, RoomRecord>,
    /// The fan-out tables, as the outputs describe them.
    routes: HashMap<RoomHandle, Vec<Route>>,
    /// The handle each room got when last joined.
    handles: HashMap<RoutingIdBytes, RoomHandle>,
}

/// The device a connection authenticates as: four devices, so reconnects happen.
fn device(conn: ConnId) -> conclave_sfu::store::DeviceIdBytes {
    [(conn % 4) as u8; 16]
}

/// Up to five leader devices (one more than a room accepts).
fn leaders(u: &mut Unstructured<'_>) -> Result<Vec<conclave_sfu::store::DeviceIdBytes>> {
    let n = u.int_in_range(0..=5)?;
    (0..n).map(|_| Ok([u.int_in_range(0..=4)?; 16])).collect()
}

/// Leaders of a stored `RoomRecord`: at most `MAX_ROOM_LEADERS`, as every store can hold
/// (the registry refuses longer lists before persisting, the redb codec refuses longer
/// values as corrupt). A five-leader record is not something a store can return, and
/// the registry rightly passes stored leaders through unchanged, so the harness must not
/// invent one (campaign crash `crash-059a0eab…`: a fabricated five-leader record tripped
/// the persisted-record assertion in `open`).
fn stored_leaders(u: &mut Unstructured<'_>) -> Result<Vec<conclave_sfu::store::DeviceIdBytes>> {
    let mut leaders = leaders(u)?;
    leaders.truncate(conclave_sfu::store::MAX_ROOM_LEADERS);
    Ok(leaders)
}

impl Harness {
    fn new(u: &mut Unstructured<'_>) -> Result<Harness> {
        let shape: u8 = u.arbitrary()?;
        let limits = RoomLimits {
            max_members_per_room: 1 + usize::from(shape % 4),
            max_rooms_per_connection: 1 + usize::from((shape / 4) % 3),
            rotation_grace_ms: u64::from(u.arbitrary::<u16>()?),
            succession_grace_ms: u64::from(u.arbitrary::<u16>()?),
            rotation_burst: 1 + u32::from(shape % 3),
            rotation_interval_ms: u64::from(u.arbitrary::<u16>()?),
        };
        let now = match shape / 12 % 4 {
            0 => 0,
            1 | 2 => 1_700_000_000_000,
            _ => u64::MAX - 5_000,
        };
        Ok(Harness {
            reg: RoomRegistry::new(limits),
            limits,
            now,
            conns: Vec::new(),
            store: HashMap::new(),
            routes: HashMap::new(),
            handles: HashMap::new(),
        })
    }

    fn conn(&self, u: &mut Unstructured<'_>) -> Result<ConnId> {
        let b: u8 = u.arbitrary()?;
        if b == u8::MAX || self.conns.is_empty() {
            return Ok(STRANGER + ConnId::from(b % 2));
        }
        Ok(self.conns[usize::from(b) % self.conns.len()])
    }

    fn room(u: &mut Unstructured<'_>) -> Result<u8> {
        Ok(u.arbitrary::<u8>()? % ROOMS)
    }

    /// A join signature by `key` for `conn`: mostly genuine, sometimes made for another
    /// connection, sometimes garbage.
    fn join_signature(
        &self,
        u: &mut Unstructured<'_>,
        key: KeySpec,
        conn: ConnId,
    ) -> Result<Vec<u8>> {
        Ok(match u.arbitrary::<u8>()? % 8 {
            0..=4 => key.sign_join(conn, conn),
            5 => key.sign_join(self.conn(u)?, conn),
            6 => {
                let other = self.conn(u)?;
                key.sign_join(other, other)
            }
            _ => garbage(u)?,
        })
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        match u.int_in_range(0..=9)? {
            0 => {
                if self.conns.len() < MAX_CONNS {
                    // Ids are never reused, as in the server.
                    let id = self.conns.len() as ConnId + 1;
                    self.reg.connect(id, &binding(id), &challenge(id));
                    // Four devices: some connections are the same device reconnecting.
                    if u.ratio(7, 8)? {
                        self.reg.authenticate(id, device(id));
                    }
                    self.conns.push(id);
                }
                self.drain();
            }
            1 | 2 => self.open(u)?,
            3 | 4 => self.join(u)?,
            5 | 6 => self.rotate(u)?,
            7 => {
                let (conn, room) = (self.conn(u)?, Self::room(u)?);
                let result = self.reg.leave(conn, routing(room).as_bytes(), self.now);
                trace("leave", &result);
                self.drain();
            }
            8 => {
                let conn = self.conn(u)?;
                self.reg.disconnect(conn, self.now);
                self.drain();
                for table in self.routes.values() {
                    assert!(table.iter().all(|r| r.conn != conn), "{conn} disconnected");
                }
            }
            _ => {
                // Advance the clock, or jump to the next deadline.
                self.now = if u.arbitrary()? {
                    self.now.saturating_add(u64::from(u.arbitrary::<u16>()?))
                } else {
                    self.reg.poll_timeout().unwrap_or(self.now).max(self.now)
                };
                self.reg.handle_timeout(self.now);
                self.drain();
                if let Some(next) = self.reg.poll_timeout() {
                    assert!(next > self.now, "deadline {next} left at {}", self.now);
                }
            }
        }
        Ok(())
    }

    fn open(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let (conn, room, epoch) = (self.conn(u)?, Self::room(u)?, read_epoch(u)?);
        let key = KeySpec::read(u, room, epoch)?;
        let join_signature = self.join_signature(u, key, conn)?;
        let routing_id = *routing(room).as_bytes();
        let stored = match u.arbitrary::<u8>()? % 8 {
            0..=5 => self.store.get(&routing_id).cloned(),
            6 => None,
            _ => Some(RoomRecord {
                epoch: read_epoch(u)?,
                auth_public: public_key(u, &key)?,
                updated_at_ms: u.arbitrary()?,
                leaders: stored_leaders(u)?,
            }),
        };
        let listed = leaders(u)?;
        let req = OpenRequest {
            routing_id,
            epoch,
            auth_public: public_key(u, &key)?,
            join_signature: &join_signature,
            leaders: &listed,
        };
        let persist_fails = u.ratio(1, 16)?;
        let result = self.reg.open(conn, &req, stored, self.now);
        trace("open", &result.as_ref().map(|j| j.persist.is_some()));
        self.drain();
        match result {
            Ok(joined) => {
                assert_eq!(joined.epoch, epoch);
                if let Some(record) = &joined.persist {
                    assert!(joined.member_slots.is_empty());
                    assert!(record.leaders.len() <= conclave_sfu::store::MAX_ROOM_LEADERS);
                    assert_eq!((record.epoch, record.auth_public), (epoch, req.auth_public));
                }
                self.check_joined(conn, routing_id, &joined);
                if joined.persist.is_some() && persist_fails {
                    // The server undoes an open it could not persist.
                    self.reg
                        .leave(conn, &routing_id, self.now)
                        .expect("the opener is a member");
                    self.drain();
                    assert!(!self.reg.is_live(&routing_id));
                } else if let Some(record) = joined.persist {
                    self.store.insert(routing_id, record);
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        Ok(())
    }

    fn join(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let (conn, room) = (self.conn(u)?, Self::room(u)?);
        let routing_id = *routing(room).as_bytes();
        // Mostly the room's current epoch (from the durable record), or any.
        let epoch = match self.store.get(&routing_id) {
            Some(r) if u.ratio(3, 4)? => r.epoch,
            _ => read_epoch(u)?,
        };
        let key = KeySpec::read(u, room, epoch)?;
        let signature = self.join_signature(u, key, conn)?;
        let result = self
            .reg
            .join(conn, &routing_id, epoch, &signature, self.now);
        trace("join", &result.as_ref().map(|j| j.leader));
        self.drain();
        match result {
            Ok(joined) => {
                assert_eq!(joined.epoch, epoch);
                assert!(joined.persist.is_none());
                self.check_joined(conn, routing_id, &joined);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        Ok(())
    }

    fn rotate(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let (conn, room) = (self.conn(u)?, Self::room(u)?);
        let routing_id = *routing(room).as_bytes();
        let current_epoch = match self.store.get(&routing_id) {
            Some(r) if u.ratio(7, 8)? => r.epoch,
            _ => read_epoch(u)?,
        };
        let current = KeySpec::read(u, room, current_epoch)?;
        let next_epoch = match u.arbitrary::<u8>()? % 8 {
            0..=5 => current_epoch.wrapping_add(1),
            6 => current_epoch.wrapping_add(2),
            _ => read_epoch(u)?,
        };
        let next = KeySpec::read(u, room, next_epoch)?;
        let rotation_signature = match current.sign_rotation(next) {
            Some(sig) if !u.ratio(1, 16)? => sig.to_vec(),
            _ => garbage(u)?,
        };
        let join_signature = self.join_signature(u, next, conn)?;
        let next_leaders = leaders(u)?;
        let req = RotateRequest {
            routing_id,
            next_epoch,
            next_auth_public: public_key(u, &next)?,
            rotation_signature: &rotation_signature,
            join_signature: &join_signature,
            next_leaders: &next_leaders,
        };
        let result = self.reg.rotate(conn, &req, self.now);
        trace("rotate", &result.as_ref().map(|_| ()));
        self.drain();
        match result {
            Ok(record) => {
                assert_eq!(
                    (record.epoch, record.auth_public),
                    (next_epoch, req.next_auth_public)
                );
                let handle = self.handles[&routing_id];
                assert!(
                    self.routes[&handle].iter().any(|r| r.conn == conn),
                    "the rotator stays a member"
                );
                self.store.insert(routing_id, record);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        Ok(())
    }

    /// A successful open or join is reflected in the room's fan-out table.
    fn check_joined(&mut self, conn: ConnId, routing_id: RoutingIdBytes, joined: &Joined) {
        assert!(self.reg.is_live(&routing_id));
        for (other, handle) in &self.handles {
            if *other != routing_id && *handle == joined.handle {
                assert!(
                    !self.reg.is_live(other),
                    "two live rooms share handle {handle}"
                );
            }
        }
        self.handles.insert(routing_id, joined.handle);
        let table = &self.routes[&joined.handle];
        assert!(table.contains(&Route {
            conn,
            slot: joined.slot
        }));
        let mut others: Vec<Slot> = table
            .iter()
            .filter(|r| r.conn != conn)
            .map(|r| r.slot)
            .collect();
        others.sort_unstable();
        let mut claimed = joined.member_slots.clone();
        claimed.sort_unstable();
        assert_eq!(claimed, others, "member_slots lists the other members");
    }

    /// Applies every pending output to the model and checks it.
    fn drain(&mut self) {
        let mut departed = Vec::new();
        while let Some(output) = self.reg.poll_output() {
            match output {
                RoomOutput::Routes { handle, routes } => {
                    let conns: BTreeSet<ConnId> = routes.iter().map(|r| r.conn).collect();
                    let slots: BTreeSet<Slot> = routes.iter().map(|r| r.slot).collect();
                    assert_eq!(conns.len(), routes.len(), "a connection listed twice");
                    assert_eq!(slots.len(), routes.len(), "a slot listed twice");
                    assert!(routes.len() <= self.limits.max_members_per_room);
                    if routes.is_empty() {
                        self.routes.remove(&handle);
                    } else {
                        self.routes.insert(handle, routes);
                    }
                }
                RoomOutput::Departed { conn, handle } => departed.push((conn, handle)),
                RoomOutput::Event { conn, event } => {
                    trace("event", &event);
                    if let RoomEvent::Evicted { handle } = event {
                        departed.push((conn, handle));
                    }
                }
            }
        }
        for (conn, handle) in departed {
            if let Some(table) = self.routes.get(&handle) {
                assert!(
                    table.iter().all(|r| r.conn != conn),
                    "{conn} departed from {handle} but is still routed"
                );
            }
        }
        let mut rooms_of: HashMap<ConnId, usize> = HashMap::new();
        for table in self.routes.values() {
            for route in table {
                *rooms_of.entry(route.conn).or_default() += 1;
            }
        }
        assert!(
            rooms_of
                .values()
                .all(|n| *n <= self.limits.max_rooms_per_connection)
        );
        assert_eq!(self.reg.room_count(), self.routes.len());
        assert_eq!(self.reg.live_routing_ids().count(), self.routes.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut u) else {
        return;
    };
    for _ in 0..MAX_OPS {
        if u.is_empty() || harness.step(&mut u).is_err() {
            break;
        }
    }
});
