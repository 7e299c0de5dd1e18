//! The media plane: forwarding datagrams among the members of a room.
//!
//! One task per connection reads its datagrams and fans each out. Per datagram:
//!
//! 1. the size and the 14-byte header are checked ([`DatagramHeader::decode`]);
//! 2. the room handle is looked up in the *connection's own* membership table (an
//!    [`ArcSwap`] snapshot: no lock, nothing shared with other rooms);
//! 3. the datagram is copied once into a pooled ingress buffer and the sender slot the
//!    server assigned is stamped over whatever the client wrote;
//! 4. the stamped bytes are handed to every other member's connection as a
//!    reference-counted [`Bytes`] (no copy, no allocation per receiver). In the server
//!    each receiver is a [`pacer::PacedSink`]: small datagrams wait up to the pack
//!    window and then go to quinn together, which packs them into as few QUIC packets
//!    as fit.
//!
//! Under congestion (a receiver's datagram send buffer filling up) video is dropped
//! first, while more than half the buffer is in use; audio only when it does not fit at
//! all. Every drop is counted with its reason.
//!
//! The room tables are replaced (not mutated) by the control plane when membership
//! changes, so the hot path only ever loads a snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use conclave_proto::datagram::{DatagramHeader, MediaKind, RoomHandle, Slot, write_sender_slot};

use crate::rooms::ConnId;
use crate::telemetry::{DropReason, MediaCounters};

/// Where a receiver's datagrams go: implemented by `quinn::Connection`, and by test sinks.
pub trait DatagramSink {
    /// Free bytes in the outgoing datagram buffer.
    fn send_buffer_space(&self) -> usize;
    /// Queues a datagram.
    fn send(&self, datagram: Bytes) -> Result<(), SinkError>;
    /// The largest datagram the receiver's path takes now (`None`: it takes none).
    fn max_datagram_size(&self) -> Option<usize> {
        Some(usize::MAX)
    }
}

/// Why a sink refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkError {
    /// Larger than the receiver's path allows.
    TooLarge,
    /// The receiver is gone or does not take datagrams.
    Gone,
}

impl DatagramSink for quinn::Connection {
    fn send_buffer_space(&self) -> usize {
        self.datagram_send_buffer_space()
    }

    fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
        self.send_datagram(datagram).map_err(|e| match e {
            quinn::SendDatagramError::TooLarge => SinkError::TooLarge,
            _ => SinkError::Gone,
        })
    }

    fn max_datagram_size(&self) -> Option<usize> {
        quinn::Connection::max_datagram_size(self)
    }
}

/// A member of a room as the media plane sees it.
#[derive(Debug, Clone)]
pub struct Target<S> {
    /// The member's connection id.
    pub conn: ConnId,
    /// Where its datagrams go.
    pub sink: S,
}

/// A room's fan-out table.
#[derive(Debug)]
pub struct RoomMedia<S> {
    targets: ArcSwap<Vec<Target<S>>>,
}

impl<S> Default for RoomMedia<S> {
    fn default() -> Self {
        RoomMedia {
            targets: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl<S> RoomMedia<S> {
    /// Replaces the fan-out table.
    pub fn set_targets(&self, targets: Vec<Target<S>>) {
        self.targets.store(Arc::new(targets));
    }

    /// The member connections.
    pub fn conns(&self) -> Vec<ConnId> {
        self.targets.load().iter().map(|t| t.conn).collect()
    }

    /// Current number of targets.
    pub fn len(&self) -> usize {
        self.targets.load().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One room membership of a connection.
#[derive(Debug)]
pub struct Membership<S> {
    /// The room handle clients put in datagram headers.
    pub handle: RoomHandle,
    /// The slot stamped on this connection's datagrams in that room.
    pub slot: Slot,
    /// The room's fan-out table.
    pub room: Arc<RoomMedia<S>>,
}

impl<S> Clone for Membership<S> {
    fn clone(&self) -> Self {
        Membership {
            handle: self.handle,
            slot: self.slot,
            room: Arc::clone(&self.room),
        }
    }
}

/// A connection's memberships (at most `max_rooms_per_connection`, so a linear scan).
#[derive(Debug)]
pub struct ConnMedia<S> {
    memberships: ArcSwap<Vec<Membership<S>>>,
}

impl<S> Default for ConnMedia<S> {
    fn default() -> Self {
        ConnMedia {
            memberships: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl<S> ConnMedia<S> {
    /// Adds or replaces the membership for `m.handle`.
    pub fn upsert(&self, m: Membership<S>) {
        self.memberships.rcu(|current| {
            let mut next: Vec<Membership<S>> = current
                .iter()
                .filter(|x| x.handle != m.handle)
                .cloned()
                .collect();
            next.push(m.clone());
            next
        });
    }

    /// Removes the membership for `handle`.
    pub fn remove(&self, handle: RoomHandle) {
        self.memberships.rcu(|current| {
            current
                .iter()
                .filter(|x| x.handle != handle)
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// The membership for `handle`, if this connection is in that room.
    pub fn get(&self, handle: RoomHandle) -> Option<Membership<S>> {
        self.memberships
            .load()
            .iter()
            .find(|m| m.handle == handle)
            .cloned()
    }

    /// Removes every membership.
    pub fn clear(&self) {
        self.memberships.store(Arc::new(Vec::new()));
    }
}

/// Size of one pooled ingress chunk. Forwarded datagrams are slices of it; it is
/// reclaimed once every receiver's copy has been sent.
const INGRESS_CHUNK: usize = 64 * 1024;

/// The per-connection forwarding state.
///
/// # Run loop
/// One task per connection reads its datagrams and calls [`Forwarder::forward`] for
/// each, with the connection's [`ConnMedia`] table (kept up to date by the control
/// plane from the room registry's outputs) and its counters, which it flushes to the
/// metrics now and then. Nothing on this path waits or takes a lock shared with other
/// rooms. Connection 1 sends into a room with connection 2:
///
/// ```
/// use std::cell::RefCell;
/// use std::sync::Arc;
///
/// use bytes::Bytes;
/// use conclave_proto::datagram::{DatagramHeader, MediaKind, RoomHandle, Slot};
/// use conclave_sfu::media::{ConnMedia, DatagramSink, Forwarder, Membership, RoomMedia, SinkError, Target};
/// use conclave_sfu::telemetry::MediaCounters;
///
/// /// A receiver's connection: here, a list of what it was sent.
/// #[derive(Default)]
/// struct Inbox(RefCell<Vec<Bytes>>);
/// impl DatagramSink for &Inbox {
///     fn send_buffer_space(&self) -> usize { 1 << 20 }
///     fn send(&self, datagram: Bytes) -> Result<(), SinkError> {
///         self.0.borrow_mut().push(datagram);
///         Ok(())
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (sender, receiver) = (Inbox::default(), Inbox::default());
/// // What the control plane set up when both joined room 9 (slots 0 and 1).
/// let room = Arc::new(RoomMedia::default());
/// room.set_targets(vec![Target { conn: 1, sink: &sender }, Target { conn: 2, sink: &receiver }]);
/// let table = ConnMedia::default();
/// table.upsert(Membership { handle: RoomHandle(9), slot: Slot(0), room: Arc::clone(&room) });
///
/// let mut forwarder = Forwarder::new(1, 1_400, 64 * 1024);
/// let mut counters = MediaCounters::new();
/// let datagrams = conclave_core::media::fragment(RoomHandle(9), MediaKind::Audio, false, 1, b"sframe ciphertext", 1_200)?;
/// for datagram in &datagrams {
///     forwarder.forward(datagram, &table, &mut counters);
/// }
/// let got = receiver.0.borrow();
/// assert_eq!(got.len(), 1);
/// assert_eq!(DatagramHeader::decode(&got[0])?.0.sender_slot, Slot(0)); // stamped by the server
/// assert!(sender.0.borrow().is_empty()); // never echoed back
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Forwarder {
    me: ConnId,
    max_datagram_bytes: usize,
    video_headroom: usize,
    ingress: BytesMut,
}

impl Forwarder {
    /// A forwarder for the datagrams of connection `me`. Video is dropped for a
    /// receiver whose free datagram send buffer is below `video_headroom` bytes.
    #[must_use]
    pub fn new(me: ConnId, max_datagram_bytes: usize, video_headroom: usize) -> Self {
        Forwarder {
            me,
            max_datagram_bytes,
            video_headroom,
            ingress: BytesMut::new(),
        }
    }

    /// Forwards one received datagram to the other members of its room, counting
    /// everything in `counters`.
    pub fn forward<S: DatagramSink>(
        &mut self,
        datagram: &[u8],
        table: &ConnMedia<S>,
        counters: &mut MediaCounters,
    ) {
        counters.received(datagram.len());
        if datagram.len() > self.max_datagram_bytes {
            counters.dropped(DropReason::Oversize, 1);
            return;
        }
        let Ok((header, _)) = DatagramHeader::decode(datagram) else {
            counters.dropped(DropReason::Malformed, 1);
            return;
        };
        let memberships = table.memberships.load();
        let Some(membership) = memberships.iter().find(|m| m.handle == header.room_handle) else {
            counters.dropped(DropReason::NotMember, 1);
            return;
        };
        let stamped = self.stamp(datagram, membership.slot);
        // Video and lossy messages give way to audio under congestion.
        let video = header.media_kind != MediaKind::Audio;
        let len = stamped.len();
        let targets = membership.room.targets.load();
        for target in targets.iter().filter(|t| t.conn != self.me) {
            let space = target.sink.send_buffer_space();
            if video && space < len.saturating_add(self.video_headroom) {
                counters.dropped(DropReason::CongestionVideo, 1);
                continue;
            }
            if space < len {
                counters.dropped(DropReason::CongestionAudio, 1);
                continue;
            }
            match target.sink.send(stamped.clone()) {
                Ok(()) => counters.sent(len),
                Err(SinkError::TooLarge) => counters.dropped(DropReason::TooLargeForReceiver, 1),
                Err(SinkError::Gone) => counters.dropped(DropReason::ReceiverGone, 1),
            }
        }
    }

    /// Copies `datagram` into the ingress chunk and stamps `slot` over its sender slot.
    fn stamp(&mut self, datagram: &[u8], slot: Slot) -> Bytes {
        if self.ingress.capacity() < datagram.len() {
            // Reclaims the chunk in place when every earlier slice has been dropped,
            // otherwise allocates a fresh chunk: amortized, not per datagram.
            self.ingress.reserve(INGRESS_CHUNK.max(datagram.len()));
        }
        self.ingress.extend_from_slice(datagram);
        // Invariant: `datagram` decoded as a header above, so it is at least HEADER_LEN
        // bytes long and the slot field exists; the error branch is unreachable.
        let _ = write_sender_slot(&mut self.ingress, slot);
        self.ingress.split().freeze()
    }
}

pub mod pacer;
#[cfg(test)]
mod tests;
