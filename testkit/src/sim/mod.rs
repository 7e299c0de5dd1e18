//! Several [`ClientCore`]s and one in-memory [`SimServer`] in virtual time: meeting
//! tests without sockets, tasks or sleeps.
//!
//! [`Sim::progress`] moves everything that can move without time passing: each core's
//! actions, its request in flight (answered by the server, with the server's events
//! for it first, as the real shell feeds them), its events for the app, and the
//! server's queued events. [`Sim::advance`] then moves time forward from deadline to
//! deadline (the cores' timers, the rooms' grace windows), progressing after each, so
//! a test that waits 20 virtual seconds runs in milliseconds and the same way every
//! time: each core's randomness comes from a seeded generator.
//!
//! ```
//! use std::time::Duration;
//! use conclave_testkit::sim::Sim;
//! use conclave_testkit::User;
//!
//! let mut sim = Sim::new();
//! let (alice, bob) = (User::new("alice"), User::new("bob"));
//! let a = sim.add_client(&alice);
//! let b = sim.add_client(&bob);
//! let meeting = sim.start_meeting(a, &[bob.id()]);
//! sim.accept_invitation(b, meeting);
//! sim.advance(Duration::from_secs(2));
//! assert_eq!(sim.meeting(a, meeting).safety_code(), sim.meeting(b, meeting).safety_code());
//! ```

mod server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use conclave_core::UnixMillis;
use conclave_proto::datagram::RoomHandle;
use conclave_proto::frame::TLS_EXPORTER_LEN;
use conclave_sdk::client::client_core::{
    Action, AppEvent, ClientCore, Command, CommandId, ConnectionId, MeetingMedia, Reply,
};
use conclave_sdk::client::{
    ClientConfig, ClientError, ClientEvent, InviteReport, MediaKind, Meeting, MeetingEvent,
};
use conclave_sdk::meeting::MeetingId;
use conclave_sdk::transport::{ClosedReason, ServerTrust, TransportError};
use conclave_sdk::{DeviceId, UserId};
use conclave_sfu::rooms::ConnId;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub use server::{Hostility, SimServer, sim_room_limits};

use crate::clients::test_timers;
use crate::identity::User;

/// Steps one [`Sim::progress`] may take before it is taken for a livelock.
const MAX_STEPS: usize = 1_000_000;
/// Deadlines one [`Sim::advance`] may pass.
const MAX_DEADLINES: usize = 100_000;

/// Index of a client in its [`Sim`].
pub type ClientIdx = usize;

/// One simulated device.
pub struct SimClient {
    /// Its user.
    pub user: UserId,
    /// Its device.
    pub device: DeviceId,
    core: ClientCore,
    /// The core's connections and the server's ids for them (rooms-only connections
    /// to "other nodes" reach the same simulated server).
    links: Vec<(ConnectionId, ConnId)>,
    /// Whether connection attempts succeed.
    online: bool,
    events: Vec<ClientEvent>,
    replies: HashMap<CommandId, Result<Reply, ClientError>>,
    next_command: u64,
    meetings: HashMap<MeetingId, Meeting>,
    /// Room handle → meeting media, as the core linked them.
    rooms: HashMap<RoomHandle, MeetingMedia>,
    ready: Option<Result<(), ClientError>>,
}

/// The simulated world.
pub struct Sim {
    /// The server (make it hostile through [`SimServer::hostility`]).
    pub server: SimServer,
    clients: Vec<SimClient>,
    start: Instant,
    now: Instant,
    wall_at_start: u64,
    /// How far every wall clock (the server's and the devices') has jumped ahead of
    /// the monotonic clocks, ms.
    wall_jump_ms: u64,
    next_binding: u64,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    /// An empty world with a server on [`sim_room_limits`].
    pub fn new() -> Self {
        let now = Instant::now();
        Sim {
            server: SimServer::new(sim_room_limits()),
            clients: Vec::new(),
            start: now,
            now,
            wall_at_start: crate::clock::now().0,
            wall_jump_ms: 0,
            next_binding: 1,
        }
    }

    /// The client configuration of simulated devices: the real-network tests' short
    /// timers (see [`test_timers`]).
    pub fn client_config() -> ClientConfig {
        let mut config = ClientConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            ServerTrust::SystemRoots,
        );
        test_timers(&mut config);
        config
    }

    /// Virtual time since the world began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn wall_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start
            .saturating_add(elapsed)
            .saturating_add(self.wall_jump_ms)
    }

    /// Every wall clock jumps `d` ahead while the monotonic clocks stand still: what a
    /// device sees after sleeping (its monotonic clock stops; real time goes on).
    pub fn jump_wall_clocks(&mut self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.wall_jump_ms = self.wall_jump_ms.saturating_add(ms);
        self.progress();
    }

    /// Connects a new device of `user` with [`Sim::client_config`].
    pub fn add_client(&mut self, user: &User) -> ClientIdx {
        self.add_client_with(user, Self::client_config())
    }

    /// Connects a new device of `user` with `config`; panics if it cannot connect.
    pub fn add_client_with(&mut self, user: &User, config: ClientConfig) -> ClientIdx {
        let credentials = user.credentials();
        let device = credentials.device_id();
        let index = self.clients.len();
        let seed = u64::try_from(index).unwrap_or(u64::MAX);
        let rng = Box::new(ChaCha20Rng::seed_from_u64(seed));
        let core = ClientCore::new(
            config,
            credentials,
            rng,
            self.now,
            UnixMillis(self.wall_ms()),
        );
        self.clients.push(SimClient {
            user: user.id(),
            device,
            core,
            links: Vec::new(),
            online: true,
            events: Vec::new(),
            replies: HashMap::new(),
            next_command: 0,
            meetings: HashMap::new(),
            rooms: HashMap::new(),
            ready: None,
        });
        self.progress();
        match self.clients[index].ready.take() {
            Some(Ok(())) => index,
            other => panic!("simulated client did not connect: {other:?}"),
        }
    }

    /// The client at `c`.
    pub fn client(&self, c: ClientIdx) -> &SimClient {
        &self.clients[c]
    }

    /// Takes the client events `c` received so far.
    pub fn take_events(&mut self, c: ClientIdx) -> Vec<ClientEvent> {
        std::mem::take(&mut self.clients[c].events)
    }

    /// Hands `command` to client `c` and progresses; returns its tag.
    pub fn command(&mut self, c: ClientIdx, command: Command) -> CommandId {
        let client = &mut self.clients[c];
        let id = CommandId(client.next_command);
        client.next_command += 1;
        client.core.handle_command(id, command, self.now);
        self.progress();
        id
    }

    /// The reply to command `id` of client `c` (panics if it has none yet).
    pub fn reply(&mut self, c: ClientIdx, id: CommandId) -> Result<Reply, ClientError> {
        self.clients[c]
            .replies
            .remove(&id)
            .unwrap_or_else(|| panic!("client {c} has not answered command {id:?}"))
    }

    /// Runs `command` on client `c` and returns its reply.
    pub fn call(&mut self, c: ClientIdx, command: Command) -> Result<Reply, ClientError> {
        let id = self.command(c, command);
        self.reply(c, id)
    }

    /// Client `c` starts a meeting with `invitees` (audio and video); panics on error.
    pub fn start_meeting(&mut self, c: ClientIdx, invitees: &[UserId]) -> MeetingId {
        self.try_start_meeting(c, invitees)
            .unwrap_or_else(|e| panic!("start_meeting failed: {e}"))
            .0
    }

    /// Client `c` starts a meeting with `invitees`.
    pub fn try_start_meeting(
        &mut self,
        c: ClientIdx,
        invitees: &[UserId],
    ) -> Result<(MeetingId, InviteReport), ClientError> {
        let command = Command::StartMeeting {
            invitees: invitees.to_vec(),
            media_kinds: vec![MediaKind::Audio, MediaKind::Video],
        };
        match self.call(c, command)? {
            Reply::Started(parts, report) => {
                let id = parts.id();
                self.clients[c]
                    .meetings
                    .insert(id, parts.into_detached_meeting());
                Ok((id, report))
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// Client `c` accepts its invitation to `meeting`; panics on error.
    pub fn accept_invitation(&mut self, c: ClientIdx, meeting: MeetingId) {
        self.try_accept(c, meeting)
            .unwrap_or_else(|e| panic!("accept failed: {e}"));
    }

    /// Client `c` accepts its invitation to `meeting`.
    pub fn try_accept(&mut self, c: ClientIdx, meeting: MeetingId) -> Result<(), ClientError> {
        let command = Command::Accept {
            meeting,
            media_kinds: vec![MediaKind::Audio, MediaKind::Video],
        };
        match self.call(c, command)? {
            Reply::Accepted(parts) => {
                self.clients[c]
                    .meetings
                    .insert(meeting, parts.into_detached_meeting());
                Ok(())
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// One device per user of `users`; the first starts a meeting with all the
    /// others, who accept, and the meeting settles (one virtual second).
    pub fn group(&mut self, users: &[&User]) -> (Vec<ClientIdx>, MeetingId) {
        let clients: Vec<ClientIdx> = users.iter().map(|u| self.add_client(u)).collect();
        let invitees: Vec<UserId> = users[1..].iter().map(|u| u.id()).collect();
        let meeting = self.start_meeting(clients[0], &invitees);
        for c in &clients[1..] {
            assert!(self.is_invited(*c, meeting), "client {c} got no invitation");
            self.accept_invitation(*c, meeting);
        }
        self.advance(Duration::from_secs(1));
        (clients, meeting)
    }

    /// Client `c` (the key leader) removes `users` from `meeting`; panics on error.
    pub fn remove(&mut self, c: ClientIdx, meeting: MeetingId, users: &[UserId]) {
        let command = Command::Remove {
            meeting,
            users: users.to_vec(),
        };
        if let Err(e) = self.call(c, command) {
            panic!("remove failed: {e}");
        }
    }

    /// Client `c` leaves `meeting`; panics on error.
    pub fn leave(&mut self, c: ClientIdx, meeting: MeetingId) {
        if let Err(e) = self.call(c, Command::Leave { meeting }) {
            panic!("leave failed: {e}");
        }
    }

    /// The meeting `meeting` as client `c` sees it.
    pub fn meeting(&mut self, c: ClientIdx, meeting: MeetingId) -> &mut Meeting {
        self.clients[c]
            .meetings
            .get_mut(&meeting)
            .unwrap_or_else(|| panic!("client {c} is not in meeting {meeting:?}"))
    }

    /// Whether client `c` has received an invitation to `meeting` (and not answered).
    pub fn is_invited(&self, c: ClientIdx, meeting: MeetingId) -> bool {
        self.clients[c]
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::Invited(i) if i.meeting_id == meeting))
    }

    /// The meeting events of `meeting` that client `c` received since the last call.
    pub fn meeting_events(&mut self, c: ClientIdx, meeting: MeetingId) -> Vec<MeetingEvent> {
        let meeting = self.meeting(c, meeting);
        std::iter::from_fn(|| meeting.try_next_control_event()).collect()
    }

    /// Cuts client `c` off: its connection drops and reconnecting fails until
    /// [`Sim::go_online`].
    pub fn go_offline(&mut self, c: ClientIdx) {
        let now_ms = self.wall_ms();
        let client = &mut self.clients[c];
        client.online = false;
        client.rooms.clear();
        for (conn, server_conn) in std::mem::take(&mut client.links) {
            self.server.disconnect(server_conn, now_ms);
            client.core.handle_disconnected(
                conn,
                TransportError::Closed(ClosedReason::Connection(quinn::ConnectionError::TimedOut)),
                self.now,
            );
        }
        self.progress();
    }

    /// Lets client `c` connect again (its next reconnect attempt succeeds).
    pub fn go_online(&mut self, c: ClientIdx) {
        self.clients[c].online = true;
    }

    /// Server time now, ms since the Unix epoch.
    pub fn server_ms(&self) -> u64 {
        self.wall_ms()
    }

    /// Whether client `c` is connected.
    pub fn is_connected(&self, c: ClientIdx) -> bool {
        !self.clients[c].links.is_empty()
    }

    /// Client `c`'s open connections (its primary one and any rooms-only ones).
    pub fn connections(&self, c: ClientIdx) -> usize {
        self.clients[c].links.len()
    }

    /// Moves everything that can move without time passing.
    pub fn progress(&mut self) {
        for _ in 0..MAX_STEPS {
            let mut moved = false;
            for c in 0..self.clients.len() {
                moved |= self.step_client(c);
            }
            if !moved {
                return;
            }
        }
        panic!("the simulation did not settle after {MAX_STEPS} steps");
    }

    /// Moves time forward by `d`, firing every deadline on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..MAX_DEADLINES {
            let next = self.next_deadline().filter(|t| *t <= target);
            self.now = next.unwrap_or(target).max(self.now);
            let (now, now_ms) = (self.now, self.wall_ms());
            self.server.handle_timeout(now_ms);
            for client in &mut self.clients {
                client.core.handle_timeout(now);
            }
            self.progress();
            if next.is_none() {
                return;
            }
        }
        panic!("more than {MAX_DEADLINES} deadlines in {d:?} of virtual time");
    }

    /// Advances until `done` holds, at most `limit` of virtual time; whether it held.
    pub fn advance_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Sim) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while !done(self) {
            if self.now >= end {
                return false;
            }
            let step = self
                .next_deadline()
                .filter(|t| *t <= end)
                .map_or(end - self.now, |t| t.saturating_duration_since(self.now));
            self.advance(step.max(Duration::from_millis(1)));
        }
        true
    }

    fn next_deadline(&self) -> Option<Instant> {
        let server = self
            .server
            .poll_timeout()
            .map(|ms| self.now + Duration::from_millis(ms.saturating_sub(self.wall_ms())));
        self.clients
            .iter()
            .filter_map(|c| c.core.poll_timeout())
            .chain(server)
            .min()
    }

    fn step_client(&mut self, c: ClientIdx) -> bool {
        let now = self.now;
        let now_ms = self.wall_ms();
        let client = &mut self.clients[c];
        // The shell reports the device's clock before every input; so does the sim.
        client.core.handle_wall_clock(UnixMillis(now_ms), now);
        if let Some(action) = client.core.poll_action() {
            match action {
                Action::Connect { conn, .. } => {
                    if client.online {
                        let mut binding = [0u8; TLS_EXPORTER_LEN];
                        binding[..8].copy_from_slice(&self.next_binding.to_be_bytes());
                        self.next_binding += 1;
                        let server_conn = self.server.connect(&binding);
                        client.links.push((conn, server_conn));
                        client.core.handle_connected(conn, binding, now);
                    } else {
                        let offline = TransportError::Handshake(quinn::ConnectionError::TimedOut);
                        client.core.handle_connect_failed(conn, offline, now);
                    }
                }
                Action::Close { conn } => {
                    if let Some(at) = client.links.iter().position(|(c, _)| *c == conn) {
                        let (_, server_conn) = client.links.remove(at);
                        if client.links.is_empty() {
                            client.rooms.clear();
                        }
                        self.server.disconnect(server_conn, now_ms);
                    }
                }
                Action::LinkRoom {
                    handle, meeting, ..
                } => {
                    client.rooms.retain(|_, m| m.id() != meeting.id());
                    client.rooms.insert(handle, meeting);
                }
                Action::UnlinkRoom { handle, .. } => {
                    client.rooms.remove(&handle);
                }
                other => panic!("unknown action {other:?}"),
            }
            return true;
        }
        if let Some(request) = client.core.poll_request() {
            let link = client.links.iter().find(|(c, _)| *c == request.conn);
            let answer = match link.copied() {
                Some((conn, server_conn)) => {
                    let answer = self.server.handle(server_conn, request.request, now_ms);
                    while let Some(event) = self.server.poll_event(server_conn) {
                        client.core.handle_event(conn, event, now);
                    }
                    answer
                }
                _ => Err(TransportError::Closed(ClosedReason::Gone)),
            };
            client.core.handle_response(request.id, answer, now);
            return true;
        }
        if let Some(event) = client.core.poll_app_event() {
            match event {
                AppEvent::Ready => client.ready = Some(Ok(())),
                AppEvent::ConnectFailed(e) => client.ready = Some(Err(e)),
                AppEvent::Client(event) => client.events.push(event),
                AppEvent::Reply { command, result } => {
                    client.replies.insert(command, result);
                }
                other => panic!("unknown app event {other:?}"),
            }
            return true;
        }
        if !client.core.is_waiting() {
            for &(conn, server_conn) in &client.links {
                if let Some(event) = self.server.poll_event(server_conn) {
                    client.core.handle_event(conn, event, now);
                    return true;
                }
            }
        }
        false
    }
}
