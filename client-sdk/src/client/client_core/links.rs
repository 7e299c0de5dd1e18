//! Where each meeting's room lives: on the primary connection, or, in a cluster, on a
//! rooms-only connection to the node that owns it.
//!
//! The primary connection reaches one of the configured servers and carries the
//! directory, the mailbox and the rooms that node owns. A join refused with
//! `WRONG_NODE` names the room's owner; the meeting's [`Entry::node`] then points there
//! and its room is joined on a rooms-only connection to that node (one per node, shared
//! by every meeting whose room it owns, at most [`MAX_ROOM_LINKS`]). So a device in two
//! meetings owned by two nodes holds both rooms at once instead of moving between them.
//!
//! Invariants:
//! * A meeting's room handle (`Entry::room`) is in the `rooms` of the link
//!   [`Engine::room_link`] names for it, and in no other link's.
//! * A rooms-only link stays open while some meeting's `node` names it; an idle one is
//!   closed ([`Engine::close_idle_room_links`]).
//! * When a rooms-only link ends, its meetings fall back to the primary connection (the
//!   node it reaches knows the room's new owner, and redirects again) and rejoin after
//!   a short jittered wait.

use std::collections::HashMap;
use std::time::Duration;

use conclave_proto::datagram::RoomHandle;
use conclave_proto::v1::{self, client_frame::Request, response};

use super::engine::{Engine, Entry, Link};
use super::{Action, ConnectionId, ServerTarget};
use crate::client::{ClientError, ConnectionProblem, MeetingEvent};
use crate::meeting::MeetingId;
use crate::transport::TransportError;

/// Rooms-only connections a client keeps at most: one per cluster node that owns the
/// room of one of its meetings.
pub(super) const MAX_ROOM_LINKS: usize = 8;
/// How long the meetings of a room node whose connection ended wait before joining
/// again through the primary connection (plus up to 10 % jitter), unless the node
/// said how long.
const ROOM_NODE_LOST_RETRY: Duration = Duration::from_millis(250);
/// Bounds on the wait a node's `ShuttingDown` can ask for.
const MIN_SHUTDOWN_WAIT: Duration = Duration::from_millis(50);
const MAX_SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// The meeting's room is gone from its connection: media pauses until it is joined
/// again (the app is told once).
pub(super) fn lose_room(entry: &mut Entry) {
    if entry.room.is_some() && !entry.interrupted {
        entry.interrupted = true;
        entry.shared.emit(MeetingEvent::MediaInterrupted);
    }
    entry.shared.set_room(None);
    entry.room = None;
    entry.proven = None;
    entry.wanted = None;
}

impl Engine {
    /// Whether `conn` is one of the rooms-only connections.
    pub(super) fn is_room_link(&self, conn: ConnectionId) -> bool {
        self.room_links.iter().any(|l| l.conn == conn)
    }

    fn links_mut(&mut self) -> impl Iterator<Item = &mut Link> {
        self.link.iter_mut().chain(self.room_links.iter_mut())
    }

    /// The authenticated connection `conn`, primary or rooms-only.
    pub(super) fn link_by_conn(&self, conn: ConnectionId) -> Option<&Link> {
        self.link
            .iter()
            .chain(self.room_links.iter())
            .find(|l| l.conn == conn)
    }

    /// The meeting whose room has `handle` on connection `conn`.
    pub(super) fn meeting_of(&self, conn: ConnectionId, handle: RoomHandle) -> Option<MeetingId> {
        self.link_by_conn(conn)?.meeting_of(handle)
    }

    /// The connection meeting `id`'s room is on, or is to be joined on, if it is up.
    pub(super) fn room_link(&self, id: MeetingId) -> Option<&Link> {
        match &self.meetings.get(&id)?.node {
            None => self.link.as_ref(),
            Some(node) => self
                .room_links
                .iter()
                .find(|l| l.node.as_ref() == Some(node)),
        }
    }

    /// Whether a join of `entry`'s room can be tried now: its node is another one (a
    /// connection to it is opened on demand), or the primary connection is up.
    pub(super) fn can_join(&self, entry: &Entry) -> bool {
        entry.node.is_some() || self.link.is_some()
    }

    /// The connection to join meeting `id`'s room on, connecting to its node first if
    /// needed. `None`: there is none now (the primary connection is down, and its
    /// reconnect rejoins the room; or the owner cannot be reached, and the meeting
    /// falls back to the primary connection and tries again later).
    pub(super) async fn room_link_for(&mut self, id: MeetingId) -> Option<ConnectionId> {
        if let Some(link) = self.room_link(id) {
            return Some(link.conn);
        }
        let node = self.meetings.get(&id)?.node.clone()?;
        if self.room_links.len() >= MAX_ROOM_LINKS {
            tracing::warn!(
                address = %node.address,
                limit = MAX_ROOM_LINKS,
                "too many room nodes at once; joining through the primary connection later"
            );
        } else {
            match self.establish_room_link(node.clone()).await {
                Ok(conn) => return Some(conn),
                Err(e) => tracing::info!(
                    address = %node.address,
                    error = %e,
                    "cannot reach the node that owns a meeting's room; joining through the primary connection later"
                ),
            }
        }
        if let Some(entry) = self.meetings.get_mut(&id) {
            entry.node = None;
        }
        self.retry_join_later(id, None);
        None
    }

    /// Opens a rooms-only connection to `node` and authenticates on it.
    async fn establish_room_link(
        &mut self,
        node: ServerTarget,
    ) -> Result<ConnectionId, ClientError> {
        let (conn, outcome) = self.port.connect(Some(node.clone())).await;
        let tls_binding = outcome?;
        match self
            .authenticate_as(conn, tls_binding, v1::ConnectionRole::Rooms)
            .await
        {
            Ok(hello) => {
                tracing::info!(address = %node.address, "connected to a room's node");
                self.room_links.push(Link {
                    conn,
                    tls_binding,
                    challenge: hello.challenge,
                    rooms: HashMap::new(),
                    node: Some(node),
                });
                Ok(conn)
            }
            Err(e) => {
                self.port.act(Action::Close { conn });
                Err(e)
            }
        }
    }

    /// Sends a request on connection `conn` (primary or rooms-only). A rooms-only
    /// connection that broke sends its meetings back to the primary connection.
    pub(super) async fn request_on(
        &mut self,
        conn: ConnectionId,
        request: Request,
    ) -> Result<response::Result, ClientError> {
        if self.link.as_ref().is_some_and(|l| l.conn == conn) {
            return self.request(request).await;
        }
        if !self.is_room_link(conn) {
            return Err(ClientError::reconnecting());
        }
        match self.port.request(conn, request).await {
            Ok(r) => Ok(r),
            Err(e @ TransportError::Closed(_)) => {
                let announced = self.announced_shutdown(conn);
                self.room_link_lost(conn, announced.map(Duration::from_millis))
                    .await;
                Err(ClientError::Connection(ConnectionProblem::Transport(e)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An event on a rooms-only connection: room events, or the node's shutdown.
    pub(super) async fn on_room_link_event(&mut self, conn: ConnectionId, event: v1::event::Event) {
        match event {
            v1::event::Event::ShuttingDown(s) => {
                let wait = Duration::from_millis(s.reconnect_after_ms);
                self.room_link_lost(conn, Some(wait)).await;
            }
            event => self.on_room_event(conn, event).await,
        }
    }

    /// Rooms-only connection `conn` ended (or its node is shutting down and asked to
    /// come back after `wait`): its meetings lose their rooms and join again through
    /// the primary connection, whose node knows where each room is now.
    pub(super) async fn room_link_lost(&mut self, conn: ConnectionId, wait: Option<Duration>) {
        let Some(at) = self.room_links.iter().position(|l| l.conn == conn) else {
            return;
        };
        let link = self.room_links.swap_remove(at);
        self.port.act(Action::Close { conn });
        let wait = wait.map_or(ROOM_NODE_LOST_RETRY, |w| {
            w.clamp(MIN_SHUTDOWN_WAIT, MAX_SHUTDOWN_WAIT)
        });
        let now = self.instant();
        for entry in self.meetings.values_mut().filter(|e| e.node == link.node) {
            lose_room(entry);
            entry.node = None;
            entry.redirects = 0;
            let jitter = wait / 10 * (self.rng.next_u32() % 1_000) / 1_000;
            entry.rejoin_at = Some(now + wait + jitter);
        }
        tracing::info!(
            address = %link.node.as_ref().map_or("", |n| n.address.as_str()),
            "a room node's connection is gone; its meetings rejoin through the primary connection"
        );
    }

    /// Takes meeting `id`'s room off every connection except `keep` (the room moved,
    /// or the meeting joined it on `keep`).
    pub(super) fn unlink_meeting(&mut self, id: MeetingId, keep: Option<ConnectionId>) {
        let mut unlinked = Vec::new();
        for link in self.links_mut() {
            if Some(link.conn) == keep {
                continue;
            }
            link.rooms.retain(|handle, meeting| {
                let gone = *meeting == id;
                if gone {
                    unlinked.push((link.conn, *handle));
                }
                !gone
            });
        }
        for (conn, handle) in unlinked {
            self.port.act(Action::UnlinkRoom { conn, handle });
        }
    }

    /// Closes the rooms-only connections no meeting needs any more.
    pub(super) fn close_idle_room_links(&mut self) {
        let meetings = &self.meetings;
        let (keep, idle): (Vec<Link>, Vec<Link>) = std::mem::take(&mut self.room_links)
            .into_iter()
            .partition(|l| meetings.values().any(|e| e.node == l.node));
        self.room_links = keep;
        for link in idle {
            tracing::debug!(
                address = %link.node.as_ref().map_or("", |n| n.address.as_str()),
                "closing a room node's connection no meeting uses"
            );
            self.port.act(Action::Close { conn: link.conn });
        }
    }
}
