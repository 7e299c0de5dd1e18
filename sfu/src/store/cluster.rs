//! What the nodes of a cluster share besides the [`Store`](super::Store): who they
//! are, their leases, and which node owns each room under which fence.
//!
//! # The rules
//! * A node heartbeats its lease ([`ClusterStore::heartbeat`]); the store computes the
//!   expiry on its own clock (PostgreSQL's), so node clocks never need to agree.
//! * A room is owned by at most one node whose lease is alive. Claiming is one
//!   conditional write ([`ClusterStore::claim_room`]): it succeeds if the room has no
//!   owner, or its owner's lease has expired, and then returns a new **fence**, larger
//!   than every fence the room had. Two nodes racing for one room: exactly one wins.
//! * Every write an owner makes about its room carries the fence
//!   ([`ClusterStore::put_room_fenced`]) and changes nothing unless that fence is still
//!   the room's and its owner's lease is alive, so a node that was paused past its lease
//!   cannot overwrite what the new owner wrote.
//! * Mailbox writes are signalled to every node ([`ClusterStore::watch_mailboxes`]), so
//!   a container reaches its recipient live on whichever node it is connected to.
//! * A node stopping cleanly releases its lease and its rooms
//!   ([`ClusterStore::release_node`]), so other nodes take them over at once.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::{DeviceIdBytes, RoomRecord, RoutingIdBytes, StoreError};

/// Signals queued from the store's mailbox watcher to the server, at most.
pub const MAILBOX_SIGNAL_QUEUE: usize = 4096;

/// A hint from the store that a mailbox changed on some node. Signals carry no
/// entries: the server reads them from the mailbox, so a lost signal loses nothing
/// once a rescan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailboxSignal {
    /// New entries for this device were committed.
    NewMail(DeviceIdBytes),
    /// Signals may have been missed (the watcher reconnected, or its queue was
    /// full): read the mailbox of every connected device.
    Rescan,
}

/// A node's name in the cluster: 1..=64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Checks and wraps a node id.
    pub fn new(id: impl Into<String>) -> Result<NodeId, String> {
        let id = id.into();
        let valid = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(NodeId(id))
        } else {
            Err(format!(
                "node id {id:?} must be 1 to 64 characters of letters, digits, '.', '_' or '-'"
            ))
        }
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

/// Where clients reach a node: `host:port`, the host an IP address (IPv6 in brackets)
/// or a DNS name (clients resolve it), such as `203.0.113.7:4433` or
/// `sfu-0.example.com:4433`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddress(String);

impl NodeAddress {
    /// Checks `address` as `host:port` (a non-zero port, a host of at most 253 bytes
    /// of letters, digits, `.`, `-` and `_`, or a bracketed IPv6 address).
    pub fn new(address: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "{address:?} is not host:port (an IP address, [IPv6] or DNS name, and a port 1-65535)"
            )
        };
        if address.parse::<SocketAddr>().is_ok() {
            return Ok(NodeAddress(address));
        }
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && !host.starts_with(['-', '.'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if port_ok && host_ok {
            Ok(NodeAddress(address))
        } else {
            Err(bad())
        }
    }

    /// As `host:port`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<SocketAddr> for NodeAddress {
    fn from(addr: SocketAddr) -> Self {
        NodeAddress(addr.to_string())
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How clients reach a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub node_id: NodeId,
    /// The QUIC address it advertises to clients.
    pub quic_addr: NodeAddress,
    /// The TLS server name clients verify it as.
    pub server_name: String,
}

/// A room ownership token: every claim of a room gets a larger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub u64);

/// The outcome of [`ClusterStore::claim_room`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomClaim {
    /// This node owns the room under this fence (newly claimed, or already its own).
    Owned(Fence),
    /// Another node with a live lease owns it: send clients there.
    OwnedElsewhere {
        /// The owner.
        owner: NodeInfo,
        /// Its fence.
        fence: Fence,
        /// Its lease, as it stands now.
        lease: OwnerLease,
    },
}

/// How an owner's lease stands, on the store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerLease {
    /// Since its last heartbeat. A node that has missed several heartbeats is likely
    /// dead (its clients cannot reach it either): sending clients there only delays them
    /// until its lease runs out. Zero when unknown (a node of an older version, which
    /// does not record when it renewed).
    pub silent_for: Duration,
    /// Until its lease runs out and the room can be claimed.
    pub left: Duration,
}

/// Leases and room ownership, shared by the nodes of a cluster.
pub trait ClusterStore: Send + Sync + 'static {
    /// Registers or updates `node` and extends its lease to `lease` from now on the
    /// store's clock.
    fn heartbeat(&self, node: &NodeInfo, lease: Duration) -> Result<(), StoreError>;

    /// Ends `node`'s lease now and gives up its rooms (a clean stop).
    fn release_node(&self, node: &NodeId) -> Result<(), StoreError>;

    /// Nodes whose lease is alive, by id.
    fn live_nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;

    /// Claims `room` for `node` (see the module docs). Fails with `LeaseExpired` if
    /// `node`'s own lease is not alive.
    fn claim_room(&self, room: &RoutingIdBytes, node: &NodeId) -> Result<RoomClaim, StoreError>;

    /// The live owner of `room` and its fence, if any.
    fn room_owner(&self, room: &RoutingIdBytes) -> Result<Option<(NodeInfo, Fence)>, StoreError>;

    /// Creates or replaces `room`'s record if `fence` is still the room's and its
    /// owner's lease is alive; returns whether it was written.
    fn put_room_fenced(
        &self,
        room: &RoutingIdBytes,
        record: &RoomRecord,
        fence: Fence,
    ) -> Result<bool, StoreError>;

    /// Starts watching every node's mailbox writes: a signal per device with new
    /// entries, and a [`MailboxSignal::Rescan`] first and whenever signals may have been
    /// lost. Runs until the receiver is dropped. The queue holds at most
    /// [`MAILBOX_SIGNAL_QUEUE`] signals; when it is full, one `Rescan` replaces what did
    /// not fit.
    fn watch_mailboxes(&self) -> Result<tokio::sync::mpsc::Receiver<MailboxSignal>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_short_and_plain() {
        assert!(NodeId::new("sfu-1.eu_west").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_addresses_are_host_and_port() {
        for good in [
            "203.0.113.7:4433",
            "[2001:db8::1]:4433",
            "sfu-0.conclave-sfu.media.svc.cluster.local:4433",
            "localhost:1",
        ] {
            assert!(NodeAddress::new(good.into()).is_ok(), "{good}");
        }
        for bad in [
            "",
            "sfu-0",
            "sfu-0:0",
            "sfu-0:70000",
            ":4433",
            "-sfu:4433",
            "a b:4433",
            "ü.example:4433",
            "2001:db8::1:4433",
        ] {
            assert!(NodeAddress::new(bad.into()).is_err(), "{bad:?}");
        }
    }
}
