//! A connection's control session: request dispatch, hello and device authentication.
//!
//! Order: `Hello` first (the answer carries the challenge), then `Register` or
//! `Authenticate`, then everything else. `GetTime` is allowed at any point.

use std::sync::Arc;
use std::time::Instant;

use conclave_core::identity::{UserIdentity, UserPublicKey, VerifiedDevice};
use conclave_core::{UnixMillis, UserId};
use conclave_proto::Message;
use conclave_proto::frame::CONTROL_PROTOCOL_VERSION;
use conclave_proto::v1::{self, ClientFrame, ErrorCode, client_frame::Request, response};
use metrics::{counter, histogram};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::handle::{ConnHandle, Outbound};
use super::{RequestError, Shared, close_code, now_ms};
use crate::ratelimit::{TokenBucket, source_key};
use crate::rooms::ConnId;
use crate::store::{DeviceIdBytes, DeviceRecord, RegisterOutcome};
use crate::telemetry;

/// The authenticated device of a session.
#[derive(Debug)]
pub(crate) struct AuthedDevice {
    pub(crate) record: DeviceRecord,
    pub(crate) verified: VerifiedDevice,
    /// The connection carries rooms only (`ConnectionRole::Rooms`): it is not the
    /// device's entry in `Shared::online`, nothing but room events is pushed on it, and
    /// directory and mailbox requests are refused.
    pub(crate) rooms_only: bool,
}

#[derive(Debug)]
enum Stage {
    Fresh,
    Greeted,
    Authenticated(Box<AuthedDevice>),
}

/// Work to do after the response has been queued.
pub(crate) enum After {
    Nothing,
    /// Push the device's waiting mailbox entries, then warn if prekeys are low.
    DeliverMailbox {
        prekeys_held: usize,
    },
}

pub(crate) type Handled = Result<(response::Result, After), RequestError>;

/// One connection's control session.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Arc<ConnHandle>,
    tx: mpsc::Sender<Outbound>,
    binding: [u8; 32],
    challenge: [u8; 32],
    stage: Stage,
    bucket: Option<TokenBucket>,
    /// Room-message bytes relayed (payload × recipients), per second.
    pub(super) relay_bucket: Option<TokenBucket>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        conn: Arc<ConnHandle>,
        tx: mpsc::Sender<Outbound>,
        binding: [u8; 32],
        challenge: [u8; 32],
    ) -> Self {
        Session {
            shared,
            conn,
            tx,
            binding,
            challenge,
            stage: Stage::Fresh,
            bucket: None,
            relay_bucket: None,
        }
    }

    pub(crate) fn conn_id(&self) -> ConnId {
        self.conn.id
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        matches!(self.stage, Stage::Authenticated(_))
    }

    /// Whether the session is authenticated as a rooms-only connection.
    fn is_rooms_only(&self) -> bool {
        matches!(&self.stage, Stage::Authenticated(d) if d.rooms_only)
    }

    pub(crate) fn device_id(&self) -> Option<DeviceIdBytes> {
        match &self.stage {
            Stage::Authenticated(d) => Some(d.record.device_id),
            _ => None,
        }
    }

    /// The authenticated device, or `UNAUTHENTICATED`.
    pub(crate) fn device(&self) -> Result<&AuthedDevice, RequestError> {
        match &self.stage {
            Stage::Authenticated(d) => Ok(d),
            _ => Err(RequestError::unauthenticated(
                "send Hello, then Register or Authenticate, before this request",
            )),
        }
    }

    /// Queues a frame for the writer, waiting while the queue is full (in frames or
    /// in bytes): the client's own requests and deliveries slow down with its reading.
    pub(crate) async fn send(&self, frame: v1::ServerFrame) {
        let Some(queued) = self.conn.reserve(&frame).await else {
            return;
        };
        let _ = self.tx.send(Outbound::Frame(Box::new(frame), queued)).await;
    }

    /// Queues an event for the writer (waits if the queue is full).
    pub(crate) async fn send_event(&self, event: v1::event::Event) {
        self.send(v1::ServerFrame {
            kind: Some(v1::server_frame::Kind::Event(v1::Event {
                event: Some(event),
            })),
        })
        .await;
    }

    async fn respond(&self, request_id: u64, result: response::Result) {
        self.send(v1::ServerFrame {
            kind: Some(v1::server_frame::Kind::Response(v1::Response {
                request_id,
                result: Some(result),
            })),
        })
        .await;
    }

    /// Answers a frame that did not decode.
    pub(crate) async fn malformed(&self, why: &str) {
        self.refuse_frame(format!("undecodable control frame: {why}"))
            .await;
    }

    /// Answers a frame that cannot be served (under request id 0: it has none), with
    /// `BAD_REQUEST` and `message`.
    pub(crate) async fn refuse_frame(&self, message: String) {
        counter!(telemetry::CONTROL_REQUESTS, "kind" => "malformed", "outcome" => "bad_request")
            .increment(1);
        let err = RequestError::bad_request(message);
        self.respond(0, response::Result::Error(err.to_proto()))
            .await;
    }

    /// Tells the client the server is going away and finishes the stream.
    pub(crate) async fn shutting_down(&self) {
        self.send_event(v1::event::Event::ShuttingDown(v1::ShuttingDown {
            reconnect_after_ms: self.shared.config.timing.shutdown_reconnect_after_ms,
        }))
        .await;
        let _ = self.finish().await;
    }

    /// Asks the writer to finish the stream after what is queued.
    pub(crate) async fn finish(&self) -> Result<(), ()> {
        self.tx.send(Outbound::Finish).await.map_err(|_| ())
    }

    /// Handles one request and queues its response (and follow-up events).
    pub(crate) async fn handle(&mut self, frame: ClientFrame, now: Instant) {
        let request_id = frame.request_id;
        let Some(request) = frame.request else {
            self.respond(
                request_id,
                response::Result::Error(
                    RequestError::bad_request("frame carries no request (unknown request type?)")
                        .to_proto(),
                ),
            )
            .await;
            return;
        };
        let kind = kind_label(&request);
        if let Err(wait) = self.rate_limit(now) {
            counter!(telemetry::CONTROL_REQUESTS, "kind" => kind, "outcome" => "rate_limited")
                .increment(1);
            let mut err = RequestError::new(
                ErrorCode::RateLimited,
                "too many control requests on this connection; slow down",
            );
            // Rounded up, so waiting exactly this long is always enough.
            err.retry_after_ms = u64::try_from(wait.as_micros().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1);
            self.respond(request_id, response::Result::Error(err.to_proto()))
                .await;
            return;
        }
        let started = Instant::now();
        let outcome = self.dispatch(request).await;
        histogram!(telemetry::CONTROL_REQUEST_SECONDS, "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok((result, after)) => {
                counter!(telemetry::CONTROL_REQUESTS, "kind" => kind, "outcome" => "ok")
                    .increment(1);
                self.respond(request_id, result).await;
                self.after(after).await;
            }
            Err(err) => {
                // A new device's first `Authenticate` is answered NOT_FOUND (it then
                // registers): the protocol working, not an error.
                let outcome = if kind == "authenticate" && err.code == ErrorCode::NotFound {
                    "unregistered"
                } else {
                    "error"
                };
                counter!(telemetry::CONTROL_REQUESTS, "kind" => kind, "outcome" => outcome)
                    .increment(1);
                debug!(conn = self.conn.id, kind, code = ?err.code, "request refused");
                self.respond(request_id, response::Result::Error(err.to_proto()))
                    .await;
            }
        }
    }

    fn rate_limit(&mut self, now: Instant) -> Result<(), std::time::Duration> {
        let limits = &self.shared.config.limits;
        self.bucket
            .get_or_insert_with(|| {
                TokenBucket::new(limits.requests_per_second, limits.request_burst, now)
            })
            .try_take(now)
    }

    async fn dispatch(&mut self, request: Request) -> Handled {
        match request {
            Request::Hello(r) => self.hello(&r),
            Request::GetTime(_) => Ok((
                response::Result::ServerTime(v1::ServerTime {
                    server_time_ms: now_ms(),
                }),
                After::Nothing,
            )),
            Request::Register(r) => self.register(r).await,
            Request::Authenticate(r) => self.authenticate(r).await,
            Request::UploadPrekeys(_)
            | Request::FetchBundles(_)
            | Request::SendContainer(_)
            | Request::AckContainers(_)
            | Request::SetPushSubscription(_)
            | Request::ClearPushSubscription(_)
                if self.is_rooms_only() =>
            {
                Err(RequestError::bad_request(
                    "this connection carries rooms only (Authenticate.role = ROOMS): send directory and mailbox requests on the device's primary connection",
                ))
            }
            Request::UploadPrekeys(r) => self.upload_prekeys(r).await,
            Request::FetchBundles(r) => self.fetch_bundles(r).await,
            Request::SendContainer(r) => self.send_container(r).await,
            Request::AckContainers(r) => self.ack_containers(r).await,
            Request::GetPushKey(_) => self.get_push_key(),
            Request::SetPushSubscription(r) => self.set_push_subscription(r).await,
            Request::ClearPushSubscription(_) => self.clear_push_subscription().await,
            Request::OpenRoom(_) | Request::JoinRoom(_) if self.shared.health.is_draining() => {
                Err(RequestError::new(
                    ErrorCode::Unavailable,
                    "this node is draining: reconnect to another node and join there",
                ))
            }
            Request::OpenRoom(r) => self.open_room(r).await,
            Request::JoinRoom(r) => self.join_room(&r).await,
            Request::RotateRoom(r) => self.rotate_room(r).await,
            Request::LeaveRoom(r) => self.leave_room(&r),
            Request::SendRoomMessage(r) => self.send_room_message(r),
            Request::RequestKeyframe(r) => self.request_keyframe(&r),
        }
    }

    async fn after(&mut self, after: After) {
        match after {
            After::Nothing => {}
            After::DeliverMailbox { prekeys_held } => {
                if let Some(device) = self.device_id()
                    && self.conn.mailbox.window.is_open()
                {
                    // The pass waits for the client's reports, which are requests
                    // this session must be free to answer.
                    super::delivery::spawn_pass(
                        Arc::clone(&self.shared),
                        Arc::clone(&self.conn),
                        device,
                    );
                } else if let Some(device) = self.device_id() {
                    // Without a window the backlog is queued before the next answer.
                    let end = super::delivery::deliver_pass(&self.shared, &self.conn, device).await;
                    if end == super::delivery::PassEnd::StoreFailed {
                        // Try again in the background, with backoff.
                        super::delivery::spawn_pass(
                            Arc::clone(&self.shared),
                            Arc::clone(&self.conn),
                            device,
                        );
                    }
                }
                self.warn_if_prekeys_low(prekeys_held).await;
            }
        }
    }

    pub(crate) async fn warn_if_prekeys_low(&self, held: usize) {
        let threshold = self.shared.config.limits.prekeys_low_threshold;
        if held < threshold {
            self.send_event(v1::event::Event::PrekeysLow(v1::PrekeysLow {
                prekeys_held: to_u32(held),
                threshold: to_u32(threshold),
            }))
            .await;
        }
    }

    fn hello(&mut self, r: &v1::Hello) -> Handled {
        if !matches!(self.stage, Stage::Fresh) {
            return Err(RequestError::bad_request(
                "Hello was already sent on this connection",
            ));
        }
        if r.protocol_version < CONTROL_PROTOCOL_VERSION {
            return Err(RequestError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "control protocol version {} is not supported; this server speaks {CONTROL_PROTOCOL_VERSION}",
                    r.protocol_version
                ),
            ));
        }
        self.stage = Stage::Greeted;
        self.conn.mailbox.window.open(r.mailbox_window_bytes);
        Ok((
            response::Result::Hello(v1::HelloOk {
                protocol_version: CONTROL_PROTOCOL_VERSION,
                challenge: self.challenge.to_vec(),
                server_time_ms: now_ms(),
                max_frame_bytes: to_u32(self.shared.config.limits.max_frame_bytes),
                max_datagram_bytes: to_u32(self.shared.config.limits.max_datagram_bytes),
            }),
            After::Nothing,
        ))
    }

    fn require_greeted(&self) -> Result<(), RequestError> {
        match self.stage {
            Stage::Greeted => Ok(()),
            Stage::Fresh => Err(RequestError::unauthenticated(
                "send Hello first: its answer carries the challenge to sign",
            )),
            Stage::Authenticated(_) => Err(RequestError::bad_request(
                "this connection is already authenticated",
            )),
        }
    }

    async fn register(&mut self, r: v1::Register) -> Handled {
        self.require_greeted()?;
        self.registration_allowed()?;
        let user_key = UserPublicKey::from_bytes(&r.user_public_key).map_err(|_| {
            RequestError::bad_request("user_public_key is not a 32-byte Ed25519 key")
        })?;
        let certificate = r
            .certificate
            .ok_or_else(|| RequestError::bad_request("certificate is missing"))?;
        if certificate.body.len() > conclave_proto::limits::MAX_SIGNED_OBJECT_BYTES {
            return Err(RequestError::bad_request("certificate body is too large"));
        }
        let body = v1::DeviceCertificateBody::decode(certificate.body.as_slice())
            .map_err(|_| RequestError::bad_request("certificate body does not decode"))?;
        let user_id = UserId::from_slice(&body.user_id)
            .ok_or_else(|| RequestError::bad_request("certificate user id is not 32 bytes"))?;
        let identity = UserIdentity {
            user_id,
            key: user_key,
        };
        let verified = VerifiedDevice::verify(&certificate, &identity, UnixMillis(now_ms()))
            .map_err(|e| RequestError::bad_proof(format!("device certificate refused: {e}")))?;
        verified
            .verify_auth_challenge(&self.binding, &self.challenge, &r.auth_signature)
            .map_err(|e| RequestError::bad_proof(format!("device auth proof refused: {e}")))?;
        let record = DeviceRecord {
            user_id: *user_id.as_bytes(),
            device_id: *verified.device_id().as_bytes(),
            certificate: certificate.encode_to_vec(),
        };
        let key_bytes = user_key.to_bytes();
        let max_devices = self.shared.config.limits.max_devices_per_user;
        let rec = record.clone();
        let outcome = self
            .shared
            .blocking("registration", move |s| {
                s.register_device(&key_bytes, &rec, max_devices)
            })
            .await?;
        let device_id = record.device_id;
        let held = if outcome == RegisterOutcome::AlreadyRegistered {
            self.shared
                .blocking("prekey count", move |s| s.prekey_count(&device_id))
                .await?
        } else {
            counter!(telemetry::DEVICES_REGISTERED).increment(1);
            0
        };
        info!(
            conn = self.conn.id,
            device = %short(&device_id),
            new_user = outcome == RegisterOutcome::NewUser,
            "device registered"
        );
        self.become_authenticated(record, verified, false);
        Ok((
            response::Result::Registered(v1::Registered {
                new_user: outcome == RegisterOutcome::NewUser,
                prekeys_held: to_u32(held),
                server_time_ms: now_ms(),
            }),
            After::DeliverMailbox { prekeys_held: held },
        ))
    }

    /// Takes a registration token of this connection's source address. Every
    /// `Register` attempt costs one, before the signature checks, so a flood of
    /// registrations (valid or not) from one address is cut off cheaply.
    fn registration_allowed(&self) -> Result<(), RequestError> {
        let source = source_key(self.conn.connection.remote_address().ip());
        let taken = self
            .shared
            .registrations()
            .try_take(&source, Instant::now());
        let Err(wait) = taken else {
            return Ok(());
        };
        counter!(telemetry::REGISTRATIONS_RATE_LIMITED).increment(1);
        let limits = &self.shared.config.limits;
        let retry_after_ms = u64::try_from(wait.as_millis().saturating_add(1))
            .unwrap_or(u64::MAX)
            .max(1);
        info!(
            conn = self.conn.id,
            "registration refused: per-address rate limit"
        );
        let mut err = RequestError::new(
            ErrorCode::RateLimited,
            format!(
                "too many registrations from this network address: at most {} at once, then \
                 {} per hour (registrations_per_ip_burst, registrations_per_ip_per_hour); \
                 retry in {} s",
                limits.registrations_per_ip_burst,
                limits.registrations_per_ip_per_hour,
                retry_after_ms.div_ceil(1000)
            ),
        );
        err.retry_after_ms = retry_after_ms;
        Err(err)
    }

    async fn authenticate(&mut self, r: v1::Authenticate) -> Handled {
        self.require_greeted()?;
        let rooms_only = match v1::ConnectionRole::try_from(r.role) {
            Ok(v1::ConnectionRole::Primary) => false,
            Ok(v1::ConnectionRole::Rooms) => true,
            Err(_) => {
                return Err(RequestError::bad_request(
                    "unknown connection role: use PRIMARY (0) or ROOMS (1)",
                ));
            }
        };
        let device_id: DeviceIdBytes = r
            .device_id
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::bad_request("device_id is not 16 bytes"))?;
        let (record, user_key, held, pending) = self
            .shared
            .blocking("authentication", move |s| {
                let Some(record) = s.device(&device_id)? else {
                    return Ok(None);
                };
                let key = s.user_key(&record.user_id)?;
                let held = s.prekey_count(&device_id)?;
                let pending = s.mailbox_count(&device_id)?;
                Ok(key.map(|k| (record, k, held, pending)))
            })
            .await?
            .ok_or_else(|| {
                RequestError::new(
                    ErrorCode::NotFound,
                    "this device is not registered here: send Register instead",
                )
            })?;
        let certificate = v1::DeviceCertificate::decode(record.certificate.as_slice())
            .map_err(|_| RequestError::internal("certificate load"))?;
        let identity = UserIdentity {
            user_id: UserId::from_slice(&record.user_id)
                .ok_or_else(|| RequestError::internal("certificate load"))?,
            key: UserPublicKey::from_bytes(&user_key)
                .map_err(|_| RequestError::internal("user key load"))?,
        };
        let verified = VerifiedDevice::verify(&certificate, &identity, UnixMillis(now_ms()))
            .map_err(|e| {
                RequestError::bad_proof(format!(
                    "stored device certificate no longer verifies ({e}); register a new device"
                ))
            })?;
        verified
            .verify_auth_challenge(&self.binding, &self.challenge, &r.auth_signature)
            .map_err(|e| RequestError::bad_proof(format!("device auth proof refused: {e}")))?;
        debug!(conn = self.conn.id, device = %short(&device_id), rooms_only, "device authenticated");
        self.become_authenticated(record, verified, rooms_only);
        let after = if rooms_only {
            After::Nothing
        } else {
            After::DeliverMailbox { prekeys_held: held }
        };
        Ok((
            response::Result::Authenticated(v1::Authenticated {
                prekeys_held: to_u32(held),
                mailbox_pending: to_u32(pending),
                server_time_ms: now_ms(),
            }),
            after,
        ))
    }

    fn become_authenticated(
        &mut self,
        record: DeviceRecord,
        verified: VerifiedDevice,
        rooms_only: bool,
    ) {
        let device_id = record.device_id;
        let _ = self.conn.device.set(device_id);
        self.shared
            .rooms()
            .registry
            .authenticate(self.conn.id, device_id);
        if !rooms_only {
            // The device's primary connection (a rooms-only one is not its entry for
            // pushes, and replaces no other connection): no push wake-up is needed.
            if let Some(push) = &self.shared.push {
                push.connected(device_id);
            }
            if let Some(previous) = self.shared.online.insert(device_id, self.conn.id)
                && previous != self.conn.id
                && let Some(old) = self.shared.conns.get(&previous)
            {
                info!(
                    conn = previous,
                    "device connected again; closing its older connection"
                );
                old.connection
                    .close(close_code::REPLACED.into(), b"device connected elsewhere");
            }
        }
        self.stage = Stage::Authenticated(Box::new(AuthedDevice {
            record,
            verified,
            rooms_only,
        }));
        self.conn
            .open_receive_window(self.shared.config.limits.max_frame_bytes);
    }
}

/// A short, non-identifying prefix of an id for logs.
pub(crate) fn short(id: &[u8]) -> String {
    hex::encode(id.get(..4).unwrap_or(id))
}

/// Saturating conversion for counts reported to clients.
pub(crate) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn kind_label(request: &Request) -> &'static str {
    match request {
        Request::Hello(_) => "hello",
        Request::Register(_) => "register",
        Request::Authenticate(_) => "authenticate",
        Request::UploadPrekeys(_) => "upload_prekeys",
        Request::FetchBundles(_) => "fetch_bundles",
        Request::SendContainer(_) => "send_container",
        Request::AckContainers(_) => "ack_containers",
        Request::GetTime(_) => "get_time",
        Request::OpenRoom(_) => "open_room",
        Request::JoinRoom(_) => "join_room",
        Request::RotateRoom(_) => "rotate_room",
        Request::LeaveRoom(_) => "leave_room",
        Request::SendRoomMessage(_) => "send_room_message",
        Request::RequestKeyframe(_) => "request_keyframe",
        Request::GetPushKey(_) => "get_push_key",
        Request::SetPushSubscription(_) => "set_push_subscription",
        Request::ClearPushSubscription(_) => "clear_push_subscription",
    }
}
