//! The simulated server: a directory, a mailbox and the SFU's own sans-IO
//! [`RoomRegistry`], answering control requests in memory.
//!
//! It keeps the rules clients rely on (one-time prekeys are handed out once, then the
//! last-resort prekey; containers wait in the mailbox until acknowledged; rooms are the
//! real registry with its join proofs, rotations, grace windows and succession) and
//! leaves out what the real server's own tests cover (signature checks on
//! registration, rate limits, quotas, persistence). Tests make it hostile through
//! [`Hostility`]: everything it answers goes through those hooks first.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use conclave_proto::Message as _;
use conclave_proto::datagram::{RoomHandle, Slot};
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};
use conclave_sdk::transport::{ClosedReason, TransportError};
use conclave_sdk::{DeviceId, UserId};
use conclave_sfu::rooms::{
    ConnId, OpenRequest, RoomError, RoomLimits, RoomOutput, RoomRegistry, RotateRequest,
};

/// How the simulated server misbehaves. Every hook is off by default.
#[derive(Default)]
pub struct Hostility {
    /// Containers for these devices are accepted (reported `Stored`) and silently
    /// dropped.
    pub withhold_containers_to: HashSet<DeviceId>,
    /// Called on every directory answer before it leaves the server (substitute keys,
    /// add devices, drop users...).
    #[allow(clippy::type_complexity)]
    pub rewrite_bundles: Option<Box<dyn FnMut(&mut v1::Bundles) + Send>>,
    /// Sees every request of an authenticated device first; an answer it returns is
    /// sent instead of carrying the request out (fail it, fake it), `None` lets it
    /// through.
    #[allow(clippy::type_complexity)]
    pub intercept: Option<
        Box<
            dyn FnMut(DeviceId, &Request) -> Option<Result<response::Result, TransportError>>
                + Send,
        >,
    >,
}

struct Device {
    certificate: v1::DeviceCertificate,
    prekeys: VecDeque<v1::SignedPrekey>,
    last_resort: Option<v1::SignedPrekey>,
}

struct User {
    public_key: Vec<u8>,
    devices: Vec<DeviceId>,
}

struct Conn {
    device: Option<DeviceId>,
    /// Authenticated as a rooms-only connection: nothing but room events is pushed.
    rooms_only: bool,
    challenge: Vec<u8>,
    events: VecDeque<v1::event::Event>,
}

/// The server. Connections are numbered by the server; see [`SimServer::connect`].
pub struct SimServer {
    users: HashMap<UserId, User>,
    devices: HashMap<DeviceId, Device>,
    /// Device → (mailbox id, container), oldest first.
    mailbox: HashMap<DeviceId, BTreeMap<u64, Vec<u8>>>,
    next_mailbox_id: u64,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    rooms: RoomRegistry,
    /// Room handle → member connections and their slots (the registry's routes).
    routes: HashMap<RoomHandle, Vec<(ConnId, Slot)>>,
    /// Devices whose prekeys run low below this count get `PrekeysLow`.
    low_prekeys: u32,
    /// How the server misbehaves.
    pub hostility: Hostility,
}

/// The room limits of the real server's defaults, with its test timers.
pub fn sim_room_limits() -> RoomLimits {
    RoomLimits {
        max_members_per_room: 64,
        max_rooms_per_connection: 16,
        rotation_grace_ms: 5_000,
        succession_grace_ms: 1_000,
        rotation_burst: 8,
        rotation_interval_ms: 100,
    }
}

impl SimServer {
    /// An empty server with `limits` for its rooms.
    pub fn new(limits: RoomLimits) -> Self {
        SimServer {
            users: HashMap::new(),
            devices: HashMap::new(),
            mailbox: HashMap::new(),
            next_mailbox_id: 1,
            conns: HashMap::new(),
            next_conn: 1,
            rooms: RoomRegistry::new(limits),
            routes: HashMap::new(),
            low_prekeys: 10,
            hostility: Hostility::default(),
        }
    }

    /// A new connection with TLS exporter `tls_binding`.
    pub fn connect(&mut self, tls_binding: &[u8]) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let challenge = conn.to_be_bytes().repeat(4);
        self.rooms.connect(conn, tls_binding, &challenge);
        self.conns.insert(
            conn,
            Conn {
                device: None,
                rooms_only: false,
                challenge,
                events: VecDeque::new(),
            },
        );
        conn
    }

    /// Connection `conn` is gone: it leaves its rooms.
    pub fn disconnect(&mut self, conn: ConnId, now_ms: u64) {
        if self.conns.remove(&conn).is_some() {
            self.rooms.disconnect(conn, now_ms);
            self.apply_room_outputs();
        }
    }

    /// Whether `conn` is connected.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The next event for `conn`.
    pub fn poll_event(&mut self, conn: ConnId) -> Option<v1::event::Event> {
        self.conns.get_mut(&conn)?.events.pop_front()
    }

    /// Whether `conn` has events queued.
    pub fn has_events(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| !c.events.is_empty())
    }

    /// When the rooms next need [`SimServer::handle_timeout`], ms.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.rooms.poll_timeout()
    }

    /// Time passed (rotation grace windows end).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.rooms.handle_timeout(now_ms);
        self.apply_room_outputs();
    }

    /// Containers waiting in `device`'s mailbox.
    pub fn mailbox_len(&self, device: &DeviceId) -> usize {
        self.mailbox.get(device).map_or(0, BTreeMap::len)
    }

    /// Stores `container` (any bytes) in `device`'s mailbox and delivers it if the
    /// device is connected, as if someone had sent it.
    pub fn inject_container(&mut self, device: DeviceId, container: Vec<u8>, now_ms: u64) {
        let mailbox_id = self.next_mailbox_id;
        self.next_mailbox_id += 1;
        self.mailbox
            .entry(device)
            .or_default()
            .insert(mailbox_id, container.clone());
        let event = v1::event::Event::Mailbox(v1::MailboxDelivery {
            mailbox_id,
            container: container.into(),
            stored_at_ms: now_ms,
        });
        self.push_to_device(&device, &event);
    }

    /// Answers `request` from `conn` at `now_ms`.
    pub fn handle(
        &mut self,
        conn: ConnId,
        request: Request,
        now_ms: u64,
    ) -> Result<response::Result, TransportError> {
        let Some(state) = self.conns.get(&conn) else {
            return Err(TransportError::Closed(ClosedReason::Gone));
        };
        let device = state.device;
        if let (Some(d), Some(intercept)) = (device, self.hostility.intercept.as_mut())
            && let Some(answer) = intercept(d, &request)
        {
            return answer;
        }
        match (request, device) {
            (Request::Hello(_), _) => Ok(response::Result::Hello(v1::HelloOk {
                protocol_version: 1,
                challenge: state.challenge.clone(),
                server_time_ms: now_ms,
                max_frame_bytes: 1 << 20,
                max_datagram_bytes: 1200,
            })),
            (Request::Register(r), _) => self.register(conn, r),
            (Request::Authenticate(a), _) => self.authenticate(conn, &a, now_ms),
            (request, None) => Err(refused(
                ErrorCode::Unauthenticated,
                &format!("{request:?} before authenticating"),
            )),
            (Request::UploadPrekeys(u), Some(device)) => Ok(self.upload(device, u)),
            (Request::FetchBundles(f), Some(_)) => Ok(self.bundles(&f)),
            (Request::SendContainer(s), Some(_)) => Ok(self.send_container(s, now_ms)),
            (Request::AckContainers(a), Some(device)) => {
                let mailbox = self.mailbox.entry(device).or_default();
                let before = mailbox.len();
                for id in a.mailbox_ids {
                    mailbox.remove(&id);
                }
                let deleted = u32::try_from(before - mailbox.len()).unwrap_or(u32::MAX);
                Ok(response::Result::ContainersAcked(v1::ContainersAcked {
                    deleted,
                }))
            }
            (Request::GetTime(_), Some(_)) => Ok(response::Result::ServerTime(v1::ServerTime {
                server_time_ms: now_ms,
            })),
            (Request::OpenRoom(o), Some(_)) => self.open_room(conn, &o, now_ms),
            (Request::JoinRoom(j), Some(_)) => {
                let routing = bytes32(&j.routing_id)?;
                let joined = self
                    .rooms
                    .join(conn, &routing, j.epoch, &j.join_signature, now_ms)
                    .map_err(room_error);
                self.apply_room_outputs();
                joined.map(|j| response::Result::RoomJoined(j.into()))
            }
            (Request::RotateRoom(r), Some(_)) => {
                let leaders = device_ids16(&r.next_leader_device_ids)?;
                let rotate = RotateRequest {
                    routing_id: bytes32(&r.routing_id)?,
                    next_epoch: r.next_epoch,
                    next_auth_public: bytes32(&r.next_room_auth_public_key)?,
                    rotation_signature: &r.rotation_signature,
                    join_signature: &r.join_signature,
                    next_leaders: &leaders,
                };
                let rotated = self.rooms.rotate(conn, &rotate, now_ms).map_err(room_error);
                self.apply_room_outputs();
                rotated.map(|record| {
                    response::Result::RoomRotated(v1::RoomRotated {
                        epoch: record.epoch,
                    })
                })
            }
            (Request::LeaveRoom(l), Some(_)) => {
                let left = self
                    .rooms
                    .leave(conn, &bytes32(&l.routing_id)?, now_ms)
                    .map_err(room_error);
                self.apply_room_outputs();
                left.map(|()| response::Result::RoomLeft(v1::RoomLeft {}))
            }
            (Request::SendRoomMessage(m), Some(_)) => Ok(self.room_message(conn, m)),
            (Request::RequestKeyframe(r), Some(_)) => self.request_keyframe(conn, &r),
            // The simulated server offers no push (the real one's is tested against a
            // real SFU and a local push service).
            (
                Request::GetPushKey(_)
                | Request::SetPushSubscription(_)
                | Request::ClearPushSubscription(_),
                Some(_),
            ) => Err(refused(
                ErrorCode::NotOffered,
                "the simulated server offers no push",
            )),
        }
    }

    fn register(
        &mut self,
        conn: ConnId,
        r: v1::Register,
    ) -> Result<response::Result, TransportError> {
        let certificate = r
            .certificate
            .ok_or_else(|| refused(ErrorCode::BadRequest, "no certificate"))?;
        let body = v1::DeviceCertificateBody::decode(certificate.body.as_slice())
            .map_err(|_| refused(ErrorCode::BadRequest, "undecodable certificate"))?;
        let (Some(user), Some(device)) = (
            UserId::from_slice(&body.user_id),
            DeviceId::from_slice(&body.device_id),
        ) else {
            return Err(refused(ErrorCode::BadRequest, "bad ids"));
        };
        let entry = self.users.entry(user).or_insert_with(|| User {
            public_key: r.user_public_key.clone(),
            devices: Vec::new(),
        });
        if entry.public_key != r.user_public_key {
            return Err(refused(ErrorCode::UserKeyMismatch, "user key mismatch"));
        }
        let new_user = entry.devices.is_empty();
        if !entry.devices.contains(&device) {
            entry.devices.push(device);
        }
        self.devices.insert(
            device,
            Device {
                certificate,
                prekeys: VecDeque::new(),
                last_resort: None,
            },
        );
        self.authenticated(conn, device, false);
        Ok(response::Result::Registered(v1::Registered {
            new_user,
            prekeys_held: 0,
            server_time_ms: 0,
        }))
    }

    fn authenticate(
        &mut self,
        conn: ConnId,
        a: &v1::Authenticate,
        now_ms: u64,
    ) -> Result<response::Result, TransportError> {
        let device = DeviceId::from_slice(&a.device_id)
            .filter(|d| self.devices.contains_key(d))
            .ok_or_else(|| refused(ErrorCode::NotFound, "unknown device"))?;
        let rooms_only = a.role == v1::ConnectionRole::Rooms as i32;
        self.authenticated(conn, device, rooms_only);
        let held = self.devices.get(&device).map_or(0, |d| d.prekeys.len());
        Ok(response::Result::Authenticated(v1::Authenticated {
            prekeys_held: u32::try_from(held).unwrap_or(u32::MAX),
            mailbox_pending: u32::try_from(self.mailbox_len(&device)).unwrap_or(u32::MAX),
            server_time_ms: now_ms,
        }))
    }

    /// `conn` is `device` now: it gets the device's waiting containers, and rotations
    /// are authorized by its id.
    fn authenticated(&mut self, conn: ConnId, device: DeviceId, rooms_only: bool) {
        let mut id16 = [0u8; 16];
        id16.copy_from_slice(device.as_bytes());
        self.rooms.authenticate(conn, id16);
        let waiting: Vec<(u64, Vec<u8>)> = self
            .mailbox
            .get(&device)
            .filter(|_| !rooms_only)
            .map(|m| m.iter().map(|(id, c)| (*id, c.clone())).collect())
            .unwrap_or_default();
        if let Some(state) = self.conns.get_mut(&conn) {
            state.device = Some(device);
            state.rooms_only = rooms_only;
            for (mailbox_id, container) in waiting {
                state
                    .events
                    .push_back(v1::event::Event::Mailbox(v1::MailboxDelivery {
                        mailbox_id,
                        container: container.into(),
                        stored_at_ms: 0,
                    }));
            }
        }
    }

    fn upload(&mut self, device: DeviceId, u: v1::UploadPrekeys) -> response::Result {
        let Some(d) = self.devices.get_mut(&device) else {
            return response::Result::PrekeysUploaded(v1::PrekeysUploaded { prekeys_held: 0 });
        };
        if u.replace {
            d.prekeys.clear();
            d.last_resort = None;
        }
        d.prekeys.extend(u.prekeys);
        if u.last_resort.is_some() {
            d.last_resort = u.last_resort;
        }
        response::Result::PrekeysUploaded(v1::PrekeysUploaded {
            prekeys_held: u32::try_from(d.prekeys.len()).unwrap_or(u32::MAX),
        })
    }

    fn bundles(&mut self, f: &v1::FetchBundles) -> response::Result {
        let only: HashSet<DeviceId> = f
            .device_ids
            .iter()
            .filter_map(|d| DeviceId::from_slice(d))
            .collect();
        let mut answer = v1::Bundles::default();
        let mut low = Vec::new();
        for user_id in f.user_ids.iter().filter_map(|u| UserId::from_slice(u)) {
            let Some(user) = self.users.get(&user_id) else {
                continue;
            };
            let mut bundle = v1::UserBundle {
                user_id: user_id.as_bytes().to_vec(),
                user_public_key: user.public_key.clone(),
                devices: Vec::new(),
            };
            for device_id in &user.devices {
                if !only.is_empty() && !only.contains(device_id) {
                    continue;
                }
                let Some(device) = self.devices.get_mut(device_id) else {
                    continue;
                };
                let mut entry = v1::DeviceBundle {
                    certificate: Some(device.certificate.clone()),
                    ..Default::default()
                };
                if !f.certificates_only {
                    match device.prekeys.pop_front() {
                        Some(prekey) => {
                            entry.prekey = Some(prekey);
                            if device.prekeys.len() < self.low_prekeys as usize {
                                low.push((*device_id, device.prekeys.len()));
                            }
                        }
                        None => match &device.last_resort {
                            Some(last) => {
                                entry.prekey = Some(last.clone());
                                entry.last_resort = true;
                            }
                            None => entry.prekeys_exhausted = true,
                        },
                    }
                }
                bundle.devices.push(entry);
            }
            answer.users.push(bundle);
        }
        for (device, held) in low {
            let event = v1::event::Event::PrekeysLow(v1::PrekeysLow {
                prekeys_held: u32::try_from(held).unwrap_or(u32::MAX),
                threshold: self.low_prekeys,
            });
            self.push_to_device(&device, &event);
        }
        if let Some(rewrite) = self.hostility.rewrite_bundles.as_mut() {
            rewrite(&mut answer);
        }
        response::Result::Bundles(answer)
    }

    fn send_container(&mut self, s: v1::SendContainer, now_ms: u64) -> response::Result {
        let mut results = Vec::new();
        for recipient in &s.recipient_device_ids {
            let Some(device) =
                DeviceId::from_slice(recipient).filter(|d| self.devices.contains_key(d))
            else {
                results.push(v1::RecipientResult {
                    device_id: recipient.clone(),
                    status: v1::DeliveryStatus::UnknownDevice as i32,
                });
                continue;
            };
            if self.hostility.withhold_containers_to.contains(&device) {
                results.push(v1::RecipientResult {
                    device_id: recipient.clone(),
                    status: v1::DeliveryStatus::Stored as i32,
                });
                continue;
            }
            let mailbox_id = self.next_mailbox_id;
            self.next_mailbox_id += 1;
            self.mailbox
                .entry(device)
                .or_default()
                .insert(mailbox_id, s.container.clone());
            let event = v1::event::Event::Mailbox(v1::MailboxDelivery {
                mailbox_id,
                container: s.container.clone().into(),
                stored_at_ms: now_ms,
            });
            let delivered = self.push_to_device(&device, &event);
            let status = if delivered {
                v1::DeliveryStatus::Delivered
            } else {
                v1::DeliveryStatus::Stored
            };
            results.push(v1::RecipientResult {
                device_id: recipient.clone(),
                status: status as i32,
            });
        }
        response::Result::ContainerSent(v1::ContainerSent { results })
    }

    /// Queues `event` on every connection of `device`; whether there was one.
    fn push_to_device(&mut self, device: &DeviceId, event: &v1::event::Event) -> bool {
        let mut any = false;
        for state in self.conns.values_mut() {
            if state.device.as_ref() == Some(device) && !state.rooms_only {
                state.events.push_back(event.clone());
                any = true;
            }
        }
        any
    }

    fn open_room(
        &mut self,
        conn: ConnId,
        o: &v1::OpenRoom,
        now_ms: u64,
    ) -> Result<response::Result, TransportError> {
        let leaders = device_ids16(&o.leader_device_ids)?;
        let open = OpenRequest {
            routing_id: bytes32(&o.routing_id)?,
            epoch: o.epoch,
            auth_public: bytes32(&o.room_auth_public_key)?,
            join_signature: &o.join_signature,
            leaders: &leaders,
        };
        let joined = self
            .rooms
            .open(conn, &open, None, now_ms)
            .map_err(room_error);
        self.apply_room_outputs();
        joined.map(|j| response::Result::RoomJoined(j.into()))
    }

    fn room_message(&mut self, conn: ConnId, m: v1::SendRoomMessage) -> response::Result {
        let members = self
            .routes
            .get(&RoomHandle(m.room_handle))
            .cloned()
            .unwrap_or_default();
        let Some(slot) = members.iter().find(|(c, _)| *c == conn).map(|(_, s)| *s) else {
            return response::Result::RoomMessageSent(v1::RoomMessageSent { recipients: 0 });
        };
        let mut recipients = 0;
        for (member, _) in members.iter().filter(|(c, _)| *c != conn) {
            if let Some(state) = self.conns.get_mut(member) {
                state
                    .events
                    .push_back(v1::event::Event::RoomMessage(v1::RoomMessage {
                        room_handle: m.room_handle,
                        slot: u32::from(slot.get()),
                        payload: m.payload.clone(),
                    }));
                recipients += 1;
            }
        }
        response::Result::RoomMessageSent(v1::RoomMessageSent { recipients })
    }

    fn request_keyframe(
        &mut self,
        conn: ConnId,
        r: &v1::RequestKeyframe,
    ) -> Result<response::Result, TransportError> {
        let members = self
            .routes
            .get(&RoomHandle(r.room_handle))
            .cloned()
            .unwrap_or_default();
        if !members.iter().any(|(c, _)| *c == conn) {
            return Err(refused(ErrorCode::BadRequest, "not in that room"));
        }
        let target = members
            .iter()
            .find(|(c, s)| *c != conn && u32::from(s.get()) == r.slot)
            .map(|(c, _)| *c);
        let Some(state) = target.and_then(|c| self.conns.get_mut(&c)) else {
            return Err(refused(
                ErrorCode::NotFound,
                "no other member holds that slot",
            ));
        };
        state
            .events
            .push_back(v1::event::Event::KeyframeRequested(v1::KeyframeRequested {
                room_handle: r.room_handle,
            }));
        Ok(response::Result::KeyframeRequestSent(
            v1::KeyframeRequestSent {},
        ))
    }

    /// Carries out the registry's outputs: room events to connections, fan-out tables.
    fn apply_room_outputs(&mut self) {
        while let Some(output) = self.rooms.poll_output() {
            match output {
                RoomOutput::Event { conn, event } => {
                    if let Some(state) = self.conns.get_mut(&conn) {
                        state.events.push_back(v1::event::Event::from(event));
                    }
                }
                RoomOutput::Routes { handle, routes } => {
                    let members = routes.iter().map(|r| (r.conn, r.slot)).collect();
                    self.routes.insert(handle, members);
                }
                RoomOutput::Departed { .. } => {}
            }
        }
    }
}

/// A refusal as the transport reports it.
fn refused(code: ErrorCode, message: &str) -> TransportError {
    TransportError::Server {
        code,
        message: message.to_string(),
        retry_after_ms: 0,
        room_epoch: 0,
        redirect: None,
    }
}

/// A registry refusal with the code, epoch and retry time the real server sends.
fn room_error(e: RoomError) -> TransportError {
    let (code, room_epoch, retry_after_ms) = match e {
        RoomError::WrongEpoch { current } => (ErrorCode::WrongEpoch, current, 0),
        RoomError::BadProof => (ErrorCode::BadProof, 0, 0),
        RoomError::Conflict => (ErrorCode::RoomConflict, 0, 0),
        RoomError::NoSuchRoom => (ErrorCode::NotFound, 0, 0),
        RoomError::NotLeader => (ErrorCode::NotLeader, 0, 0),
        RoomError::LeaderPresent { retry_after_ms } => {
            (ErrorCode::NotLeader, 0, retry_after_ms.unwrap_or(0).max(1))
        }
        RoomError::RotationRateLimited { retry_after_ms } => {
            (ErrorCode::RateLimited, 0, retry_after_ms.max(1))
        }
        RoomError::RoomFull { .. } | RoomError::TooManyRooms { .. } | RoomError::SlotsExhausted => {
            (ErrorCode::LimitExceeded, 0, 0)
        }
        _ => (ErrorCode::BadRequest, 0, 0),
    };
    TransportError::Server {
        code,
        message: e.to_string(),
        retry_after_ms,
        room_epoch,
        redirect: None,
    }
}

fn bytes32(bytes: &[u8]) -> Result<[u8; 32], TransportError> {
    bytes
        .try_into()
        .map_err(|_| refused(ErrorCode::BadRequest, "not 32 bytes"))
}

fn device_ids16(ids: &[Vec<u8>]) -> Result<Vec<[u8; 16]>, TransportError> {
    ids.iter()
        .map(|d| {
            d.as_slice()
                .try_into()
                .map_err(|_| refused(ErrorCode::BadRequest, "device id is not 16 bytes"))
        })
        .collect()
}
