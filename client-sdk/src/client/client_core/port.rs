//! The boundary between the protocol engine and whoever drives [`ClientCore`]: the
//! queues of inputs and outputs and the slots awaited answers land in.
//!
//! The engine's straight-line code awaits three things only, all of them futures over
//! this port that never register a waker: the next input, the answer to the request it
//! just queued, and the outcome of the connection attempt it just asked for.
//! [`ClientCore`] polls the engine after every input it is handed; the engine runs
//! until it waits for something the port does not hold yet. Nothing here blocks, spawns
//! or reads a clock.
//!
//! [`ClientCore`]: super::ClientCore

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use conclave_proto::v1::{self, client_frame::Request, response};

use super::{
    Action, AppEvent, Command, CommandId, ConnectionId, MAX_QUEUED_APP_EVENTS, OutgoingRequest,
    RequestId, ServerTarget,
};
use crate::client::shared::lock;
use crate::transport::TransportError;
use conclave_proto::frame::TLS_EXPORTER_LEN;

/// What the engine handles one at a time, in arrival order.
#[derive(Debug)]
pub(super) enum Input {
    Command(CommandId, Command),
    Event(ConnectionId, v1::event::Event),
    Disconnected(ConnectionId, TransportError),
    /// Some timer may be due (the engine checks each against `now`).
    Timeout,
}

impl Input {
    /// What the input holds of the server's bytes: an event's encoded length, else 0.
    pub(super) fn bytes(&self) -> usize {
        match self {
            Input::Event(_, event) => event.encoded_len(),
            _ => 0,
        }
    }
}

/// The outcome of a connection attempt.
pub(super) type Connected = Result<[u8; TLS_EXPORTER_LEN], TransportError>;

#[derive(Debug)]
pub(super) struct Port {
    pub(super) now: Instant,
    pub inputs: VecDeque<Input>,
    /// [`Input::bytes`] of everything in `inputs` (call [`Port::recount_inputs`] after
    /// removing inputs other than by [`PortHandle::next_input`]).
    pub input_bytes: usize,
    pub requests: VecDeque<OutgoingRequest>,
    pub actions: VecDeque<Action>,
    pub app_events: VecDeque<AppEvent>,
    /// The answer to the one request in flight.
    answer: Option<(RequestId, Result<response::Result, TransportError>)>,
    /// The request in flight, if any.
    awaiting: Option<RequestId>,
    /// The outcome of the connection attempt in flight.
    connected: Option<(ConnectionId, Connected)>,
    connecting: Option<ConnectionId>,
    next_request: u64,
    next_connection: u64,
    /// When the engine next wants [`Input::Timeout`], as it said when it went idle.
    pub timeout: Option<Instant>,
    /// This device's wall clock, ms since the Unix epoch, as last reported, and the
    /// monotonic time it was reported at.
    pub wall: (u64, Instant),
}

impl Port {
    /// Sets `input_bytes` anew from the queue.
    pub(super) fn recount_inputs(&mut self) {
        self.input_bytes = self.inputs.iter().map(Input::bytes).sum();
    }
}

/// The engine's and the core's shared view of the port.
#[derive(Debug, Clone)]
pub(super) struct PortHandle(Arc<Mutex<Port>>);

impl PortHandle {
    pub(super) fn new(now: Instant, wall: u64) -> Self {
        PortHandle(Arc::new(Mutex::new(Port {
            now,
            inputs: VecDeque::new(),
            input_bytes: 0,
            requests: VecDeque::new(),
            actions: VecDeque::new(),
            app_events: VecDeque::new(),
            answer: None,
            awaiting: None,
            connected: None,
            connecting: None,
            next_request: 1,
            next_connection: 1,
            timeout: None,
            wall: (wall, now),
        })))
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Port) -> T) -> T {
        f(&mut lock(&self.0))
    }

    pub(super) fn now(&self) -> Instant {
        self.with(|p| p.now)
    }

    pub(super) fn act(&self, action: Action) {
        self.with(|p| p.actions.push_back(action));
    }

    /// Queues `event` for the app. Client events beyond [`MAX_QUEUED_APP_EVENTS`]
    /// are dropped (with a warning) while the app does not drain them; command replies
    /// and the connection outcome never are.
    pub(super) fn emit(&self, event: AppEvent) {
        self.with(|p| {
            if matches!(event, AppEvent::Client(_)) && p.app_events.len() >= MAX_QUEUED_APP_EVENTS {
                tracing::warn!("client event queue full; event dropped");
                return;
            }
            p.app_events.push_back(event);
        });
    }

    /// This device's wall clock now: the last reported reading plus the monotonic time
    /// since, ms since the Unix epoch.
    pub(super) fn wall_ms(&self) -> u64 {
        self.with(|p| {
            let (wall, at) = p.wall;
            let since = p.now.saturating_duration_since(at);
            wall.saturating_add(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// The next input, once there is one.
    pub(super) async fn next_input(&self) -> Input {
        poll_fn(|_| {
            let input = self.with(|p| {
                let input = p.inputs.pop_front()?;
                p.input_bytes = p.input_bytes.saturating_sub(input.bytes());
                Some(input)
            });
            match input {
                Some(input) => Poll::Ready(input),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Queues `request` on `conn` and waits for its answer.
    pub(super) async fn request(
        &self,
        conn: ConnectionId,
        request: Request,
    ) -> Result<response::Result, TransportError> {
        let id = self.with(|p| {
            let id = RequestId(p.next_request);
            p.next_request += 1;
            p.awaiting = Some(id);
            p.requests.push_back(OutgoingRequest { id, conn, request });
            id
        });
        poll_fn(|_| {
            self.with(|p| match p.answer.take() {
                Some((answered, result)) if answered == id => {
                    p.awaiting = None;
                    Poll::Ready(result)
                }
                other => {
                    p.answer = other;
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Asks for a new connection and waits for the attempt's outcome.
    pub(super) async fn connect(&self, to: Option<ServerTarget>) -> (ConnectionId, Connected) {
        let id = self.with(|p| {
            let id = ConnectionId(p.next_connection);
            p.next_connection += 1;
            p.connecting = Some(id);
            p.actions.push_back(Action::Connect { conn: id, to });
            id
        });
        poll_fn(|_| {
            self.with(|p| match p.connected.take() {
                Some((conn, outcome)) if conn == id => {
                    p.connecting = None;
                    Poll::Ready((conn, outcome))
                }
                other => {
                    p.connected = other;
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Delivers the answer to request `id`; `false` if no such request is in flight.
    pub(super) fn answer(
        &self,
        id: RequestId,
        result: Result<response::Result, TransportError>,
    ) -> bool {
        self.with(|p| {
            if p.awaiting != Some(id) {
                return false;
            }
            p.answer = Some((id, result));
            true
        })
    }

    /// Delivers the outcome of connection attempt `conn`; `false` if none is pending.
    pub(super) fn connected(&self, conn: ConnectionId, outcome: Connected) -> bool {
        self.with(|p| {
            if p.connecting != Some(conn) {
                return false;
            }
            p.connected = Some((conn, outcome));
            true
        })
    }

    /// Whether the engine waits for an answer or a connection attempt (inputs queue
    /// meanwhile).
    pub(super) fn is_waiting(&self) -> bool {
        self.with(|p| p.awaiting.is_some() || p.connecting.is_some())
    }
}
