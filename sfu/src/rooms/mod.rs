//! The room registry: a sans-IO state machine for room membership and access.
//!
//! Inputs are method calls carrying `now_ms`; outputs are polled with
//! [`RoomRegistry::poll_output`]. The registry does no I/O, spawns nothing and reads no
//! clock. The server layer feeds it, persists the [`RoomRecord`]s it returns *before*
//! answering the client, and applies its outputs: control events to connections and new
//! fan-out tables to the media plane.
//!
//! # Rules
//! * A room is known by its routing id and holds only the current epoch and room-auth
//!   public key. Joining means a valid join proof for the current epoch, bound to the
//!   connection's TLS exporter and challenge.
//! * Rotations are authorized by **device**, not by connection: a room records the
//!   devices that may rotate it, in succession order (the meeting's key leader first,
//!   then the next devices in line, as the leader lists them; at most
//!   [`MAX_ROOM_LEADERS`]), persisted with the room. Only the first of them may rotate,
//!   or a later one once every device before it has been out of the room for the
//!   succession grace (`succession_grace_ms`), so a successor takes over when the
//!   leader has really gone, never while it is muted or reconnecting. Leadership
//!   survives a reconnect and a server restart (the record keeps the list); a member
//!   that is not on the list can never rotate, so it cannot take a room over and brick
//!   it. Each rotation names the next list.
//! * A rotation moves to a strictly greater epoch, is signed by the current room-auth
//!   key and carries the leader's own proof for the new epoch. Every other member must
//!   prove the new epoch within the grace window or is evicted.
//! * A room may be rotated `rotation_burst` times at once, then once per
//!   `rotation_interval_ms` (a token bucket per room, spent only by authorized
//!   rotations); beyond that a rotation is refused with the wait.
//! * Slots are unique within a room and never reused while the room lives: every join
//!   takes the next of the 65,536 slots, and once all have been handed out the room
//!   refuses newcomers ([`RoomError::SlotsExhausted`]) until it is empty and opened
//!   anew (under a new handle). Room handles are unique across the server.
//! * A room whose last member leaves, explicitly or not, stops being live; its durable
//!   record is kept (the server layer forgets it after `room_idle_ttl_secs`), so that
//!   nobody can re-create the room under another key meanwhile.
//! * Eviction deadlines are indexed by rotation (one entry per rotation), so finding
//!   the next deadline costs O(log rotations pending), not a scan of every member.

mod error;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use conclave_core::meeting::{RoomAuthPublic, RoutingId};
use conclave_proto::datagram::{RoomHandle, Slot};
use conclave_proto::v1;

pub use error::RoomError;

use crate::store::{DeviceIdBytes, MAX_ROOM_LEADERS, RoomRecord, RoutingIdBytes};

/// A connection, as the registry knows it.
pub type ConnId = u64;

/// Limits the registry enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Members of one room.
    pub max_members_per_room: usize,
    /// Rooms one connection may be in.
    pub max_rooms_per_connection: usize,
    /// Time members have to prove a new epoch, ms.
    pub rotation_grace_ms: u64,
    /// How long every leader device before a successor must have been out of the room
    /// before the successor may rotate it, ms.
    pub succession_grace_ms: u64,
    /// Rotations of one room at once (token-bucket burst).
    pub rotation_burst: u32,
    /// After the burst, one rotation per this many ms.
    pub rotation_interval_ms: u64,
}

/// A request to open (or join an existing room at the same epoch and key).
#[derive(Debug, Clone)]
pub struct OpenRequest<'a> {
    /// Routing id.
    pub routing_id: RoutingIdBytes,
    /// Epoch the opener holds.
    pub epoch: u64,
    /// Room-auth public key of `epoch`.
    pub auth_public: [u8; 32],
    /// Join proof.
    pub join_signature: &'a [u8],
    /// The devices that may rotate the room, key leader first (used when the room is
    /// created; a stored or live room keeps its own list).
    pub leaders: &'a [DeviceIdBytes],
}

/// A request to move a room to a new epoch.
#[derive(Debug, Clone)]
pub struct RotateRequest<'a> {
    /// Routing id.
    pub routing_id: RoutingIdBytes,
    /// The new epoch, greater than the current one.
    pub next_epoch: u64,
    /// Room-auth public key of the new epoch.
    pub next_auth_public: [u8; 32],
    /// Signature of the current key over the rotation.
    pub rotation_signature: &'a [u8],
    /// The rotator's join proof for the new epoch.
    pub join_signature: &'a [u8],
    /// The devices that may rotate the room from the new epoch on, key leader first.
    pub next_leaders: &'a [DeviceIdBytes],
}

/// A successful open or join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Room handle for datagram headers.
    pub handle: RoomHandle,
    /// This connection's sender slot.
    pub slot: Slot,
    /// Current epoch.
    pub epoch: u64,
    /// Slots of the other members.
    pub member_slots: Vec<Slot>,
    /// Whether this connection's device is the room's key leader (first on its list).
    pub leader: bool,
    /// A record to persist before answering (`None` if nothing changed).
    pub persist: Option<RoomRecord>,
}

/// A fan-out target of the media plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The member connection.
    pub conn: ConnId,
    /// Its slot.
    pub slot: Slot,
}

/// A control event for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A member joined the room.
    MemberJoined {
        /// Room handle.
        handle: RoomHandle,
        /// Its slot.
        slot: Slot,
        /// Its device, if the connection authenticated.
        device: Option<DeviceIdBytes>,
    },
    /// A member left, was evicted or disconnected.
    MemberLeft {
        /// Room handle.
        handle: RoomHandle,
        /// Its slot.
        slot: Slot,
        /// Its device, if the connection authenticated.
        device: Option<DeviceIdBytes>,
    },
    /// The room moved to a new epoch; prove it within `grace_ms`.
    EpochChanged {
        /// Room handle.
        handle: RoomHandle,
        /// The new epoch.
        epoch: u64,
        /// Grace window, ms.
        grace_ms: u64,
    },
    /// This connection was removed for not proving the epoch in time.
    Evicted {
        /// Room handle.
        handle: RoomHandle,
    },
}

impl From<Joined> for v1::RoomJoined {
    /// The answer to an open or join as the control protocol carries it.
    fn from(j: Joined) -> Self {
        v1::RoomJoined {
            room_handle: j.handle.get(),
            slot: u32::from(j.slot.get()),
            epoch: j.epoch,
            member_slots: j
                .member_slots
                .into_iter()
                .map(|s| u32::from(s.get()))
                .collect(),
            leader: j.leader,
        }
    }
}

impl From<RoomEvent> for v1::event::Event {
    /// The event as the control protocol carries it.
    fn from(event: RoomEvent) -> Self {
        use v1::event::Event;
        match event {
            RoomEvent::MemberJoined {
                handle,
                slot,
                device,
            } => Event::MemberJoined(v1::MemberJoined {
                room_handle: handle.get(),
                slot: u32::from(slot.get()),
                device_id: device.map(|d| d.to_vec()).unwrap_or_default(),
            }),
            RoomEvent::MemberLeft {
                handle,
                slot,
                device,
            } => Event::MemberLeft(v1::MemberLeft {
                room_handle: handle.get(),
                slot: u32::from(slot.get()),
                device_id: device.map(|d| d.to_vec()).unwrap_or_default(),
            }),
            RoomEvent::EpochChanged {
                handle,
                epoch,
                grace_ms,
            } => Event::EpochChanged(v1::EpochChanged {
                room_handle: handle.get(),
                epoch,
                grace_ms,
            }),
            RoomEvent::Evicted { handle } => Event::RoomEvicted(v1::RoomEvicted {
                room_handle: handle.get(),
                reason: v1::EvictReason::EpochNotProven as i32,
            }),
        }
    }
}

/// What the server layer must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomOutput {
    /// Send `event` to `conn`.
    Event {
        /// Recipient connection.
        conn: ConnId,
        /// The event.
        event: RoomEvent,
    },
    /// The fan-out table of room `handle` is now `routes` (empty: the room is gone).
    Routes {
        /// Room handle.
        handle: RoomHandle,
        /// Every member.
        routes: Vec<Route>,
    },
    /// `conn` is no longer a member of room `handle` (left, evicted or disconnected).
    Departed {
        /// The connection.
        conn: ConnId,
        /// Room handle.
        handle: RoomHandle,
    },
}

#[derive(Debug)]
struct Member {
    slot: Slot,
    device: Option<DeviceIdBytes>,
    /// Deadline to prove the current epoch, if not yet proven.
    prove_by_ms: Option<u64>,
}

#[derive(Debug)]
struct Room {
    routing_id: RoutingId,
    handle: RoomHandle,
    epoch: u64,
    auth: RoomAuthPublic,
    /// Devices that may rotate, in succession order.
    leaders: Vec<DeviceIdBytes>,
    /// Since when each leader device has been out of the room (absent: present).
    absent_since: BTreeMap<DeviceIdBytes, u64>,
    members: BTreeMap<ConnId, Member>,
    /// Slots handed out so far; the next join gets this one (slots are never reused).
    slots_issued: u32,
    /// Rotations this room may still make now.
    rotations: RotationBudget,
}

/// A room's token bucket of rotations, in virtual time.
#[derive(Debug)]
struct RotationBudget {
    tokens: u32,
    /// When `tokens` was last brought up to date.
    refilled_at_ms: u64,
}

impl RotationBudget {
    fn full(burst: u32, now_ms: u64) -> Self {
        RotationBudget {
            tokens: burst,
            refilled_at_ms: now_ms,
        }
    }

    /// Adds the tokens earned since the last refill (one per `interval_ms`, at most
    /// `burst` held); `Err` with the wait if none is available.
    fn ready(&mut self, now_ms: u64, burst: u32, interval_ms: u64) -> Result<(), u64> {
        let interval_ms = interval_ms.max(1);
        if self.tokens >= burst {
            self.refilled_at_ms = now_ms;
        } else {
            let earned = now_ms.saturating_sub(self.refilled_at_ms) / interval_ms;
            if earned > 0 {
                let tokens = u64::from(self.tokens).saturating_add(earned);
                self.tokens = u32::try_from(tokens.min(u64::from(burst))).unwrap_or(burst);
                self.refilled_at_ms = if self.tokens >= burst {
                    now_ms
                } else {
                    self.refilled_at_ms
                        .saturating_add(earned.saturating_mul(interval_ms))
                };
            }
        }
        if self.tokens > 0 {
            return Ok(());
        }
        let next = self.refilled_at_ms.saturating_add(interval_ms);
        Err(next.saturating_sub(now_ms).max(1))
    }

    fn take(&mut self) {
        self.tokens = self.tokens.saturating_sub(1);
    }
}

#[derive(Debug)]
struct Connection {
    tls_binding: Vec<u8>,
    challenge: Vec<u8>,
    /// The authenticated device.
    device: Option<DeviceIdBytes>,
    rooms: Vec<RoutingIdBytes>,
}

/// All rooms of one server.
///
/// # Run loop
/// The server layer feeds every connection's room requests and disconnects in with
/// the current time, persists the [`RoomRecord`] a call returns before it answers,
/// applies every [`RoomOutput`] ([`RoomRegistry::poll_output`]: events to connections,
/// fan-out tables to the media plane), and calls [`RoomRegistry::handle_timeout`] at
/// [`RoomRegistry::poll_timeout`] (rotation grace windows). Two connections meet in a
/// room:
///
/// ```
/// use conclave_core::meeting::{Epoch, MeetingId, MeetingKey};
/// use conclave_sfu::rooms::{OpenRequest, RoomLimits, RoomOutput, RoomRegistry};
/// use rand_core::OsRng;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut registry = RoomRegistry::new(RoomLimits {
///     max_members_per_room: 100,
///     max_rooms_per_connection: 8,
///     rotation_grace_ms: 2_000,
///     succession_grace_ms: 10_000,
///     rotation_burst: 4,
///     rotation_interval_ms: 1_000,
/// });
/// // Each connection: its TLS exporter value and challenge, then its device.
/// for (conn, device) in [(1, [1u8; 16]), (2, [2u8; 16])] {
///     registry.connect(conn, &[conn as u8; 32], &[0xC0; 32]);
///     registry.authenticate(conn, device);
/// }
/// // The members hold the meeting key; the server sees only the routing id and the
/// // room-auth public key.
/// let key = MeetingKey::generate(Epoch::ZERO, &mut OsRng);
/// let routing = MeetingId::from_slice(&[7; 32]).ok_or("32 bytes")?.routing_id();
/// let auth = key.room_auth_key(&routing);
/// let mut now_ms = 0;
/// let proof = auth.sign_join(&[1u8; 32], &[0xC0; 32])?;
/// let opened = registry.open(1, &OpenRequest {
///     routing_id: *routing.as_bytes(),
///     epoch: 0,
///     auth_public: auth.public().to_bytes(),
///     join_signature: &proof,
///     leaders: &[[1u8; 16]],
/// }, None, now_ms)?;
/// // (persist `opened.persist`, then answer RoomJoined with the handle and slot)
/// now_ms += 10;
/// let proof = auth.sign_join(&[2u8; 32], &[0xC0; 32])?;
/// let joined = registry.join(2, routing.as_bytes(), 0, &proof, now_ms)?;
/// assert_ne!(opened.slot, joined.slot);
/// let mut fan_out = 0;
/// while let Some(output) = registry.poll_output() {
///     match output {
///         RoomOutput::Event { .. } => {}                          // to that connection
///         RoomOutput::Routes { routes, .. } => fan_out = routes.len(), // to the media plane
///         RoomOutput::Departed { .. } => {}
///     }
/// }
/// assert_eq!(fan_out, 2);
/// if let Some(at) = registry.poll_timeout() {
///     registry.handle_timeout(at); // no rotation pending here
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RoomRegistry {
    limits: RoomLimits,
    rooms: HashMap<RoutingIdBytes, Room>,
    handles: HashMap<RoomHandle, RoutingIdBytes>,
    conns: HashMap<ConnId, Connection>,
    next_handle: u32,
    outputs: VecDeque<RoomOutput>,
    /// (deadline, room) of every rotation whose grace window has not been handled
    /// yet. An entry may be stale (the members proved, or the room is gone); it is
    /// dropped when its deadline is handled.
    deadlines: BTreeSet<(u64, RoutingIdBytes)>,
}

impl RoomRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new(limits: RoomLimits) -> Self {
        RoomRegistry {
            limits,
            rooms: HashMap::new(),
            handles: HashMap::new(),
            conns: HashMap::new(),
            next_handle: 1,
            outputs: VecDeque::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Registers a connection's join context: its TLS exporter value and the
    /// challenge the server issued to it. Registering a connected id again replaces
    /// the context but keeps its memberships.
    pub fn connect(&mut self, conn: ConnId, tls_binding: &[u8], challenge: &[u8]) {
        let ctx = self.conns.entry(conn).or_insert_with(|| Connection {
            tls_binding: Vec::new(),
            challenge: Vec::new(),
            device: None,
            rooms: Vec::new(),
        });
        ctx.tls_binding = tls_binding.to_vec();
        ctx.challenge = challenge.to_vec();
    }

    /// Records the device a connection authenticated as (rotations are authorized by
    /// device).
    pub fn authenticate(&mut self, conn: ConnId, device: DeviceIdBytes) {
        if let Some(ctx) = self.conns.get_mut(&conn) {
            ctx.device = Some(device);
        }
    }

    /// Whether a room is live (has members) in this registry.
    #[must_use]
    pub fn is_live(&self, routing_id: &RoutingIdBytes) -> bool {
        self.rooms.contains_key(routing_id)
    }

    /// Routing ids of the live rooms.
    pub fn live_routing_ids(&self) -> impl Iterator<Item = RoutingIdBytes> + '_ {
        self.rooms.keys().copied()
    }

    /// Number of live rooms.
    #[must_use]
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Next output to apply, if any.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.outputs.pop_front()
    }

    /// Earliest deadline at which [`RoomRegistry::handle_timeout`] may have work (a
    /// rotation's grace window ends; its members may all have proved meanwhile).
    /// O(1): read from the index of rotation deadlines.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Opens a room, or joins it when it already exists (live or in `stored`) at the
    /// same epoch and key. `stored` is the durable record, if any.
    pub fn open(
        &mut self,
        conn: ConnId,
        req: &OpenRequest<'_>,
        stored: Option<RoomRecord>,
        now_ms: u64,
    ) -> Result<Joined, RoomError> {
        let auth = RoomAuthPublic::from_slice(&req.auth_public).map_err(|_| {
            RoomError::BadRequest("room-auth public key is not a valid Ed25519 key")
        })?;
        if let Some(room) = self.rooms.get(&req.routing_id) {
            if room.epoch != req.epoch {
                return Err(RoomError::WrongEpoch {
                    current: room.epoch,
                });
            }
            if room.auth != auth {
                return Err(RoomError::Conflict);
            }
            return self.join(conn, &req.routing_id, req.epoch, req.join_signature, now_ms);
        }
        if let Some(rec) = &stored {
            if rec.epoch != req.epoch {
                return Err(RoomError::WrongEpoch { current: rec.epoch });
            }
            if rec.auth_public != req.auth_public {
                return Err(RoomError::Conflict);
            }
        }
        if req.leaders.len() > MAX_ROOM_LEADERS {
            return Err(RoomError::BadRequest("more than 4 leader devices"));
        }
        let routing_id = RoutingId::from_slice(&req.routing_id)
            .ok_or(RoomError::BadRequest("routing id is not 32 bytes"))?;
        let ctx = self.conns.get(&conn).ok_or(RoomError::UnknownConnection)?;
        if ctx.rooms.len() >= self.limits.max_rooms_per_connection {
            return Err(RoomError::TooManyRooms {
                limit: self.limits.max_rooms_per_connection,
            });
        }
        auth.verify_join(
            &routing_id,
            req.epoch,
            &ctx.tls_binding,
            &ctx.challenge,
            req.join_signature,
        )
        .map_err(|_| RoomError::BadProof)?;
        let device = ctx.device;
        // A stored room keeps its leaders (a restart must not hand leadership to
        // whoever reconnects first); a new room (or a record from before leaders were
        // recorded) takes the opener's list, or the opener itself.
        let leaders = match stored.as_ref().map(|r| r.leaders.clone()) {
            Some(stored) if !stored.is_empty() => stored,
            _ if !req.leaders.is_empty() => req.leaders.to_vec(),
            _ => device.into_iter().collect(),
        };
        let absent_since = leaders
            .iter()
            .filter(|d| Some(**d) != device)
            .map(|d| (*d, now_ms))
            .collect();
        let handle = self.allocate_handle();
        let mut room = Room {
            routing_id,
            handle,
            epoch: req.epoch,
            auth,
            leaders,
            absent_since,
            members: BTreeMap::new(),
            slots_issued: 0,
            rotations: RotationBudget::full(self.limits.rotation_burst, now_ms),
        };
        let slot = room.allocate_slot()?;
        room.members.insert(
            conn,
            Member {
                slot,
                device,
                prove_by_ms: None,
            },
        );
        let leader = device.is_some() && room.leaders.first() == device.as_ref();
        let persist_leaders = room.leaders.clone();
        self.rooms.insert(req.routing_id, room);
        self.handles.insert(handle, req.routing_id);
        if let Some(ctx) = self.conns.get_mut(&conn) {
            ctx.rooms.push(req.routing_id);
        }
        self.push_routes(&req.routing_id);
        Ok(Joined {
            handle,
            slot,
            epoch: req.epoch,
            member_slots: Vec::new(),
            leader,
            persist: Some(RoomRecord {
                epoch: req.epoch,
                auth_public: req.auth_public,
                updated_at_ms: now_ms,
                leaders: persist_leaders,
            }),
        })
    }

    /// Joins a live room at its current epoch, or re-proves membership after a
    /// rotation (then the existing handle and slot are returned).
    pub fn join(
        &mut self,
        conn: ConnId,
        routing_id: &RoutingIdBytes,
        epoch: u64,
        join_signature: &[u8],
        _now_ms: u64,
    ) -> Result<Joined, RoomError> {
        let ctx = self.conns.get(&conn).ok_or(RoomError::UnknownConnection)?;
        let room = self
            .rooms
            .get_mut(routing_id)
            .ok_or(RoomError::NoSuchRoom)?;
        if epoch != room.epoch {
            return Err(RoomError::WrongEpoch {
                current: room.epoch,
            });
        }
        let already = room.members.contains_key(&conn);
        if !already {
            if room.members.len() >= self.limits.max_members_per_room {
                return Err(RoomError::RoomFull {
                    limit: self.limits.max_members_per_room,
                });
            }
            if ctx.rooms.len() >= self.limits.max_rooms_per_connection {
                return Err(RoomError::TooManyRooms {
                    limit: self.limits.max_rooms_per_connection,
                });
            }
            if !room.has_free_slot() {
                return Err(RoomError::SlotsExhausted);
            }
        }
        room.auth
            .verify_join(
                &room.routing_id,
                epoch,
                &ctx.tls_binding,
                &ctx.challenge,
                join_signature,
            )
            .map_err(|_| RoomError::BadProof)?;
        let handle = room.handle;
        let member_slots: Vec<Slot> = room
            .members
            .iter()
            .filter(|(c, _)| **c != conn)
            .map(|(_, m)| m.slot)
            .collect();
        let device = ctx.device;
        let slot = if let Some(member) = room.members.get_mut(&conn) {
            member.prove_by_ms = None;
            member.slot
        } else {
            let slot = room.allocate_slot()?;
            room.members.insert(
                conn,
                Member {
                    slot,
                    device,
                    prove_by_ms: None,
                },
            );
            if let Some(device) = &device {
                room.absent_since.remove(device);
            }
            for other in room.members.keys().filter(|c| **c != conn) {
                self.outputs.push_back(RoomOutput::Event {
                    conn: *other,
                    event: RoomEvent::MemberJoined {
                        handle,
                        slot,
                        device,
                    },
                });
            }
            slot
        };
        let leader = device.is_some() && room.leaders.first() == device.as_ref();
        if !already {
            if let Some(ctx) = self.conns.get_mut(&conn) {
                ctx.rooms.push(*routing_id);
            }
            self.push_routes(routing_id);
        }
        Ok(Joined {
            handle,
            slot,
            epoch,
            member_slots,
            leader,
            persist: None,
        })
    }

    /// Moves a room to a new epoch. Only a leader device may rotate (see the module
    /// rules). Returns the record to persist.
    pub fn rotate(
        &mut self,
        conn: ConnId,
        req: &RotateRequest<'_>,
        now_ms: u64,
    ) -> Result<RoomRecord, RoomError> {
        let ctx = self.conns.get(&conn).ok_or(RoomError::UnknownConnection)?;
        let room = self
            .rooms
            .get_mut(&req.routing_id)
            .ok_or(RoomError::NoSuchRoom)?;
        if !room.members.contains_key(&conn) {
            return Err(RoomError::NotMember);
        }
        room.authorize_rotation(ctx.device, now_ms, self.limits.succession_grace_ms)?;
        // Only an authorized rotation is counted against the room's budget, so no one
        // else can spend it; the token is taken once the rotation is accepted.
        room.rotations
            .ready(
                now_ms,
                self.limits.rotation_burst,
                self.limits.rotation_interval_ms,
            )
            .map_err(|retry_after_ms| RoomError::RotationRateLimited { retry_after_ms })?;
        if req.next_leaders.len() > MAX_ROOM_LEADERS {
            return Err(RoomError::BadRequest("more than 4 leader devices"));
        }
        // No list: the rotating device alone leads from the new epoch on.
        let next_leaders: Vec<DeviceIdBytes> = if req.next_leaders.is_empty() {
            ctx.device.into_iter().collect()
        } else {
            req.next_leaders.to_vec()
        };
        if req.next_epoch <= room.epoch {
            return Err(RoomError::WrongEpoch {
                current: room.epoch,
            });
        }
        let next = RoomAuthPublic::from_slice(&req.next_auth_public).map_err(|_| {
            RoomError::BadRequest("next room-auth public key is not a valid Ed25519 key")
        })?;
        room.auth
            .verify_rotation(
                &room.routing_id,
                req.next_epoch,
                &next,
                req.rotation_signature,
            )
            .map_err(|_| RoomError::BadProof)?;
        next.verify_join(
            &room.routing_id,
            req.next_epoch,
            &ctx.tls_binding,
            &ctx.challenge,
            req.join_signature,
        )
        .map_err(|_| RoomError::BadProof)?;
        room.rotations.take();
        room.epoch = req.next_epoch;
        room.auth = next;
        room.leaders = next_leaders.clone();
        room.absent_since = room
            .leaders
            .iter()
            .filter(|d| !room.members.values().any(|m| m.device == Some(**d)))
            .map(|d| (*d, now_ms))
            .collect();
        let deadline = now_ms.saturating_add(self.limits.rotation_grace_ms);
        let handle = room.handle;
        if room.members.keys().any(|c| *c != conn) {
            self.deadlines.insert((deadline, req.routing_id));
        }
        for (member_conn, member) in &mut room.members {
            if *member_conn == conn {
                member.prove_by_ms = None;
                continue;
            }
            member.prove_by_ms = Some(deadline);
            self.outputs.push_back(RoomOutput::Event {
                conn: *member_conn,
                event: RoomEvent::EpochChanged {
                    handle,
                    epoch: req.next_epoch,
                    grace_ms: self.limits.rotation_grace_ms,
                },
            });
        }
        Ok(RoomRecord {
            epoch: req.next_epoch,
            auth_public: req.next_auth_public,
            updated_at_ms: now_ms,
            leaders: next_leaders,
        })
    }

    /// Leaves a room explicitly.
    pub fn leave(
        &mut self,
        conn: ConnId,
        routing_id: &RoutingIdBytes,
        now_ms: u64,
    ) -> Result<(), RoomError> {
        let room = self.rooms.get(routing_id).ok_or(RoomError::NoSuchRoom)?;
        if !room.members.contains_key(&conn) {
            return Err(RoomError::NotMember);
        }
        self.remove_member(conn, routing_id, Departure::Left, now_ms);
        Ok(())
    }

    /// Forgets a connection (closed or lost): it leaves every room it was in. The
    /// durable records of rooms it leaves empty are kept, so members can come back.
    pub fn disconnect(&mut self, conn: ConnId, now_ms: u64) {
        let rooms = self
            .conns
            .get(&conn)
            .map(|c| c.rooms.clone())
            .unwrap_or_default();
        for routing_id in rooms {
            self.remove_member(conn, &routing_id, Departure::Disconnected, now_ms);
        }
        self.conns.remove(&conn);
    }

    /// Evicts every member whose proof deadline is at or before `now_ms`. Visits only
    /// the rooms whose rotation deadlines have passed.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let mut overdue = BTreeSet::new();
        while let Some(&(deadline, routing_id)) = self.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop_first();
            let Some(room) = self.rooms.get(&routing_id) else {
                continue;
            };
            for (conn, member) in &room.members {
                if member.prove_by_ms.is_some_and(|d| d <= now_ms) {
                    overdue.insert((*conn, routing_id));
                }
            }
        }
        for (conn, routing_id) in overdue {
            self.remove_member(conn, &routing_id, Departure::Evicted, now_ms);
        }
    }

    fn remove_member(
        &mut self,
        conn: ConnId,
        routing_id: &RoutingIdBytes,
        why: Departure,
        now_ms: u64,
    ) {
        let Some(room) = self.rooms.get_mut(routing_id) else {
            return;
        };
        let Some(member) = room.members.remove(&conn) else {
            return;
        };
        let handle = room.handle;
        if let Some(device) = member.device
            && room.leaders.contains(&device)
            && !room.members.values().any(|m| m.device == Some(device))
        {
            room.absent_since.insert(device, now_ms);
        }
        if let Some(ctx) = self.conns.get_mut(&conn) {
            ctx.rooms.retain(|r| r != routing_id);
        }
        self.outputs
            .push_back(RoomOutput::Departed { conn, handle });
        if why == Departure::Evicted {
            self.outputs.push_back(RoomOutput::Event {
                conn,
                event: RoomEvent::Evicted { handle },
            });
        }
        let others: Vec<ConnId> = room.members.keys().copied().collect();
        for other in others {
            self.outputs.push_back(RoomOutput::Event {
                conn: other,
                event: RoomEvent::MemberLeft {
                    handle,
                    slot: member.slot,
                    device: member.device,
                },
            });
        }
        if room.members.is_empty() {
            // The room stops being live; its durable record stays (see the module
            // rules), whether the last member left explicitly or not.
            self.rooms.remove(routing_id);
            self.handles.remove(&handle);
        }
        self.push_routes_for_handle(handle, routing_id);
    }

    fn push_routes(&mut self, routing_id: &RoutingIdBytes) {
        if let Some(handle) = self.rooms.get(routing_id).map(|r| r.handle) {
            self.push_routes_for_handle(handle, routing_id);
        }
    }

    fn push_routes_for_handle(&mut self, handle: RoomHandle, routing_id: &RoutingIdBytes) {
        let routes = self
            .rooms
            .get(routing_id)
            .map(|room| {
                room.members
                    .iter()
                    .map(|(conn, m)| Route {
                        conn: *conn,
                        slot: m.slot,
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.outputs
            .push_back(RoomOutput::Routes { handle, routes });
    }

    fn allocate_handle(&mut self) -> RoomHandle {
        loop {
            let h = RoomHandle(self.next_handle);
            self.next_handle = self.next_handle.wrapping_add(1).max(1);
            if !self.handles.contains_key(&h) {
                return h;
            }
        }
    }
}

impl Room {
    /// Whether `device` may rotate now: it is on the leader list and every device
    /// before it has been out of the room for `grace_ms`.
    fn authorize_rotation(
        &self,
        device: Option<DeviceIdBytes>,
        now_ms: u64,
        grace_ms: u64,
    ) -> Result<(), RoomError> {
        let device = device.ok_or(RoomError::NotLeader)?;
        let position = self
            .leaders
            .iter()
            .position(|d| *d == device)
            .ok_or(RoomError::NotLeader)?;
        let mut wait = 0u64;
        for before in self.leaders.iter().take(position) {
            match self.absent_since.get(before) {
                None => {
                    return Err(RoomError::LeaderPresent {
                        retry_after_ms: None,
                    });
                }
                Some(since) => {
                    let ready = since.saturating_add(grace_ms);
                    wait = wait.max(ready.saturating_sub(now_ms));
                }
            }
        }
        if wait > 0 {
            return Err(RoomError::LeaderPresent {
                retry_after_ms: Some(wait),
            });
        }
        Ok(())
    }

    /// Whether a slot never handed out in this room's life is left.
    fn has_free_slot(&self) -> bool {
        self.slots_issued <= u32::from(u16::MAX)
    }

    /// The next slot never handed out in this room's life (so no current or past
    /// member holds it), or `SlotsExhausted` once all 65,536 have been.
    fn allocate_slot(&mut self) -> Result<Slot, RoomError> {
        let slot = u16::try_from(self.slots_issued).map_err(|_| RoomError::SlotsExhausted)?;
        self.slots_issued += 1;
        Ok(Slot(slot))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    Left,
    Disconnected,
    Evicted,
}
