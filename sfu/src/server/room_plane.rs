//! Room requests, and applying the registry's outputs to connections and the media plane.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_proto::datagram::RoomHandle;
use conclave_proto::v1::{self, ErrorCode, response};
use metrics::{counter, gauge};
use tokio::sync::watch;
use tracing::debug;

use super::session::{After, Handled, Session, short};
use super::{RequestError, Shared, now_ms};
use crate::media::pacer::PacedSink;
use crate::media::{Membership, RoomMedia, Target};
use crate::rooms::{OpenRequest, RoomEvent, RoomOutput, RoomRegistry, RotateRequest};
use crate::store::{DeviceIdBytes, MAX_ROOM_LEADERS, RoutingIdBytes};
use crate::telemetry;

/// Largest `SendRoomMessage` payload, bytes (a reliable in-meeting message of the
/// largest body fits).
pub(crate) const MAX_ROOM_MESSAGE_BYTES: usize = conclave_proto::limits::MAX_ROOM_MESSAGE_BYTES;

/// The registry plus the media plane's room tables, behind one control-plane lock
/// (never taken on the datagram path).
#[derive(Debug)]
pub(crate) struct RoomPlane {
    pub(crate) registry: RoomRegistry,
    media: HashMap<RoomHandle, Arc<RoomMedia<Arc<PacedSink<quinn::Connection>>>>>,
    members: HashMap<RoomHandle, usize>,
}

impl RoomPlane {
    pub(crate) fn new(registry: RoomRegistry) -> Self {
        RoomPlane {
            registry,
            media: HashMap::new(),
            members: HashMap::new(),
        }
    }

    pub(crate) fn live_routing_ids(&self) -> BTreeSet<RoutingIdBytes> {
        self.registry.live_routing_ids().collect()
    }

    /// Applies every pending registry output. Routing changes are applied before any
    /// event is sent, so a member told about a join or an eviction never races the
    /// media plane (a newcomer already receives; an evicted member already does not).
    pub(crate) fn apply(&mut self, shared: &Shared) {
        let mut events = Vec::new();
        while let Some(output) = self.registry.poll_output() {
            match output {
                RoomOutput::Event { conn, event } => events.push((conn, event)),
                RoomOutput::Routes { handle, routes } => {
                    if routes.is_empty() {
                        self.media.remove(&handle);
                        self.members.remove(&handle);
                        continue;
                    }
                    let room = Arc::clone(self.media.entry(handle).or_default());
                    let mut targets = Vec::with_capacity(routes.len());
                    for route in &routes {
                        let Some(conn) = shared.conns.get(&route.conn) else {
                            continue;
                        };
                        conn.media.upsert(Membership {
                            handle,
                            slot: route.slot,
                            room: Arc::clone(&room),
                        });
                        targets.push(Target {
                            conn: route.conn,
                            sink: Arc::clone(&conn.sink),
                        });
                    }
                    self.members.insert(handle, targets.len());
                    room.set_targets(targets);
                }
                RoomOutput::Departed { conn, handle } => {
                    if let Some(c) = shared.conns.get(&conn) {
                        c.media.remove(handle);
                    }
                }
            }
        }
        for (conn, event) in events {
            if matches!(event, RoomEvent::Evicted { .. }) {
                counter!(telemetry::ROOM_EVICTIONS).increment(1);
            }
            if let Some(handle) = shared.conns.get(&conn) {
                handle.push_event(v1::event::Event::from(event));
            }
        }
        gauge!(telemetry::ROOMS).set(self.registry.room_count() as f64);
        gauge!(telemetry::ROOM_MEMBERS).set(self.members.values().sum::<usize>() as f64);
    }
}

fn routing_id(bytes: &[u8]) -> Result<RoutingIdBytes, RequestError> {
    bytes
        .try_into()
        .map_err(|_| RequestError::bad_request("routing_id is not 32 bytes"))
}

fn device_ids(ids: &[Vec<u8>], what: &str) -> Result<Vec<DeviceIdBytes>, RequestError> {
    if ids.len() > MAX_ROOM_LEADERS {
        return Err(RequestError::bad_request(format!(
            "{what}: at most {MAX_ROOM_LEADERS} devices"
        )));
    }
    ids.iter()
        .map(|id| {
            id.as_slice().try_into().map_err(|_| {
                RequestError::bad_request(format!("{what}: a device id is not 16 bytes"))
            })
        })
        .collect()
}

fn public_key(bytes: &[u8], what: &str) -> Result<[u8; 32], RequestError> {
    bytes
        .try_into()
        .map_err(|_| RequestError::bad_request(format!("{what} is not 32 bytes")))
}

impl Session {
    /// Runs `f` on the registry under the lock and applies its outputs.
    fn with_rooms<T>(&self, f: impl FnOnce(&mut RoomRegistry) -> T) -> T {
        let mut plane = self.shared.rooms();
        let out = f(&mut plane.registry);
        plane.apply(&self.shared);
        out
    }

    /// Takes a token of this device's budget of new room records: an open that would
    /// create a record (none stored, room not live) costs one, given back if the open
    /// fails. Returns whether one was taken.
    fn charge_new_room_record(
        &self,
        device: &DeviceIdBytes,
        id: &RoutingIdBytes,
        stored: bool,
    ) -> Result<bool, RequestError> {
        if stored || self.shared.rooms().registry.is_live(id) {
            return Ok(false);
        }
        let taken = self.shared.room_records().try_take(device, Instant::now());
        let Err(wait) = taken else {
            return Ok(true);
        };
        counter!(telemetry::ROOM_RECORDS_RATE_LIMITED).increment(1);
        let limits = &self.shared.config.limits;
        let retry_after_ms = u64::try_from(wait.as_millis().saturating_add(1))
            .unwrap_or(u64::MAX)
            .max(1);
        let mut err = RequestError::new(
            ErrorCode::RateLimited,
            format!(
                "this device created too many new rooms: at most {} at once, then {} per \
                 hour (room_records_per_device_burst, room_records_per_device_per_hour); \
                 retry in {} s",
                limits.room_records_per_device_burst,
                limits.room_records_per_device_per_hour,
                retry_after_ms.div_ceil(1000)
            ),
        );
        err.retry_after_ms = retry_after_ms;
        Err(err)
    }

    pub(super) async fn open_room(&mut self, r: v1::OpenRoom) -> Handled {
        let device = self.device()?.record.device_id;
        let id = routing_id(&r.routing_id)?;
        let auth_public = public_key(&r.room_auth_public_key, "room_auth_public_key")?;
        // In a cluster, only the room's owner reads and writes its record.
        let shared = Arc::clone(&self.shared);
        if let Some(cluster) = &shared.cluster {
            cluster.claim(&shared, id).await?;
        }
        self.on_room_shard(&id)?;
        let stored = self
            .shared
            .blocking("room lookup", move |s| s.room(&id))
            .await?;
        let leaders = device_ids(&r.leader_device_ids, "leader_device_ids")?;
        let charged = self.charge_new_room_record(&device, &id, stored.is_some())?;
        let refund = |shared: &Shared| {
            if charged {
                shared.room_records().refund(&device);
            }
        };
        let conn = self.conn.id;
        let req = OpenRequest {
            routing_id: id,
            epoch: r.epoch,
            auth_public,
            join_signature: &r.join_signature,
            leaders: &leaders,
        };
        let now = now_ms();
        let mut j = self
            .with_rooms(|reg| reg.open(conn, &req, stored, now))
            .inspect_err(|_| refund(&self.shared))?;
        if let Some(record) = j.persist.take() {
            if let Err(e) = self.persist_room(id, record).await {
                // Not durable: undo, so memory never runs ahead of the store.
                let _ = self.with_rooms(|reg| reg.leave(conn, &id, now));
                refund(&self.shared);
                return Err(e);
            }
        }
        debug!(conn, room = %short(&id), handle = j.handle.get(), slot = j.slot.get(), "room opened or joined");
        Ok((response::Result::RoomJoined(j.into()), After::Nothing))
    }

    /// Rooms live on one shard each: a connection of another shard is sent there
    /// (after the cluster claim, so that a room of another node is redirected once, to
    /// that node).
    fn on_room_shard(&self, id: &RoutingIdBytes) -> Result<(), RequestError> {
        let shards = self.shared.shards;
        let shard = crate::shards::steer::shard_of_room(id, shards);
        if shard == self.conn.shard {
            return Ok(());
        }
        counter!(telemetry::SHARD_REDIRECTS).increment(1);
        // The shard's own index as the byte (below MAX_SHARDS, so it steers there):
        // every redirect to a shard names it alike, and a client reuses one
        // connection for all the rooms of that shard.
        let byte = u8::try_from(shard).unwrap_or(0);
        let node = self.shared.cluster.as_ref().map(|c| c.info());
        Err(RequestError::wrong_shard(node, byte))
    }

    pub(super) async fn join_room(&mut self, r: &v1::JoinRoom) -> Handled {
        self.device()?;
        let id = routing_id(&r.routing_id)?;
        let shared = Arc::clone(&self.shared);
        if let Some(cluster) = &shared.cluster {
            cluster.claim(&shared, id).await?;
        }
        self.on_room_shard(&id)?;
        let conn = self.conn.id;
        let now = now_ms();
        let j = self.with_rooms(|reg| reg.join(conn, &id, r.epoch, &r.join_signature, now))?;
        Ok((response::Result::RoomJoined(j.into()), After::Nothing))
    }

    pub(super) async fn rotate_room(&mut self, r: v1::RotateRoom) -> Handled {
        self.device()?;
        let id = routing_id(&r.routing_id)?;
        let next = public_key(&r.next_room_auth_public_key, "next_room_auth_public_key")?;
        let next_leaders = device_ids(&r.next_leader_device_ids, "next_leader_device_ids")?;
        let shared = Arc::clone(&self.shared);
        if let Some(cluster) = &shared.cluster {
            cluster.claim(&shared, id).await?;
        }
        let conn = self.conn.id;
        let req = RotateRequest {
            routing_id: id,
            next_epoch: r.next_epoch,
            next_auth_public: next,
            rotation_signature: &r.rotation_signature,
            join_signature: &r.join_signature,
            next_leaders: &next_leaders,
        };
        let now = now_ms();
        let record = self.with_rooms(|reg| reg.rotate(conn, &req, now))?;
        self.shared.room_timer.notify_one();
        // The rotation is in force in memory (members were told); persist it so a
        // restart cannot bring back the old epoch.
        self.persist_room(id, record).await?;
        debug!(conn, room = %short(&id), epoch = r.next_epoch, "room rotated");
        Ok((
            response::Result::RoomRotated(v1::RoomRotated {
                epoch: r.next_epoch,
            }),
            After::Nothing,
        ))
    }

    /// Writes a room's record: fenced in a cluster, plainly on a single node.
    async fn persist_room(
        &self,
        id: RoutingIdBytes,
        record: crate::store::RoomRecord,
    ) -> Result<(), RequestError> {
        match &self.shared.cluster {
            Some(cluster) => cluster.persist(id, record).await,
            None => {
                self.shared
                    .blocking("room persist", move |s| s.put_room(&id, &record))
                    .await
            }
        }
    }

    /// Relays a small opaque message to the other member connections of a room this
    /// connection is in (never to itself, never to another room).
    pub(super) fn send_room_message(&mut self, r: v1::SendRoomMessage) -> Handled {
        self.device()?;
        if r.payload.len() > MAX_ROOM_MESSAGE_BYTES {
            return Err(RequestError::limit(format!(
                "room message of {} bytes exceeds {MAX_ROOM_MESSAGE_BYTES}",
                r.payload.len()
            )));
        }
        let Some(membership) = self.conn.media.get(RoomHandle(r.room_handle)) else {
            return Err(RequestError::bad_request(
                "this connection is not in that room (join it first)",
            ));
        };
        let me = self.conn.id;
        let members = membership.room.conns();
        // The other members get it: the sender's own connection is not a recipient.
        let recipients_now = members.len().saturating_sub(1) as u64;
        let cost = (r.payload.len() as u64).saturating_mul(recipients_now);
        let now = Instant::now();
        let limits = &self.shared.config.limits;
        let bucket = self.relay_bucket.get_or_insert_with(|| {
            crate::ratelimit::TokenBucket::new(
                limits.room_message_bytes_per_second,
                limits.room_message_burst_bytes,
                now,
            )
        });
        if let Err(wait) = bucket.try_take_n(cost, now) {
            let mut err = RequestError::new(
                ErrorCode::RateLimited,
                "room messages relayed too fast on this connection \
                 (limits.room_message_bytes_per_second); slow down",
            );
            err.retry_after_ms = u64::try_from(wait.as_micros().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1);
            return Err(err);
        }
        let mut recipients = 0u32;
        for conn in members {
            if conn == me {
                continue;
            }
            let Some(handle) = self.shared.conns.get(&conn).map(|h| Arc::clone(&h)) else {
                continue;
            };
            let event = v1::event::Event::RoomMessage(v1::RoomMessage {
                room_handle: r.room_handle,
                slot: u32::from(membership.slot.get()),
                payload: r.payload.clone(),
            });
            if handle.push_event(event) {
                recipients = recipients.saturating_add(1);
            }
        }
        Ok((
            response::Result::RoomMessageSent(v1::RoomMessageSent { recipients }),
            After::Nothing,
        ))
    }

    /// Relays a keyframe request to the member connection holding `slot` in a room
    /// this connection is in. Requests count against the connection's request rate
    /// like any other; receivers coalesce what reaches them.
    pub(super) fn request_keyframe(&mut self, r: &v1::RequestKeyframe) -> Handled {
        self.device()?;
        let handle = RoomHandle(r.room_handle);
        let Some(membership) = self.conn.media.get(handle) else {
            return Err(RequestError::bad_request(
                "this connection is not in that room (join it first)",
            ));
        };
        let target = membership
            .room
            .conns()
            .into_iter()
            .filter(|conn| *conn != self.conn.id)
            .filter_map(|conn| self.shared.conns.get(&conn).map(|h| Arc::clone(&h)))
            .find(|h| {
                h.media
                    .get(handle)
                    .is_some_and(|m| u32::from(m.slot.get()) == r.slot)
            });
        let Some(target) = target else {
            return Err(RequestError::not_found("no other member holds that slot"));
        };
        target.push_event(v1::event::Event::KeyframeRequested(v1::KeyframeRequested {
            room_handle: r.room_handle,
        }));
        Ok((
            response::Result::KeyframeRequestSent(v1::KeyframeRequestSent {}),
            After::Nothing,
        ))
    }

    pub(super) fn leave_room(&mut self, r: &v1::LeaveRoom) -> Handled {
        self.device()?;
        let id = routing_id(&r.routing_id)?;
        let conn = self.conn.id;
        let now = now_ms();
        self.with_rooms(|reg| reg.leave(conn, &id, now))
            .map_err(RequestError::from)?;
        Ok((response::Result::RoomLeft(v1::RoomLeft {}), After::Nothing))
    }
}

/// Evicts members that did not prove a new epoch in time.
pub(super) async fn timer_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let next = shared.rooms().registry.poll_timeout();
        let wait = match next {
            Some(deadline) => Duration::from_millis(deadline.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.room_timer.notified() => continue,
            _ = stop.changed() => return,
        }
        let mut plane = shared.rooms();
        plane.registry.handle_timeout(now_ms());
        plane.apply(&shared);
    }
}
