//! The media reader: one task per connection hands each datagram to its meeting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use conclave_proto::datagram::{DatagramHeader, RoomHandle};

use crate::client::shared::MeetingShared;

/// Room handle → meeting, read by the media reader for every datagram.
pub(super) type Rooms = Arc<RwLock<HashMap<RoomHandle, Arc<MeetingShared>>>>;

/// Routes room `handle`'s datagrams to `meeting` (and no other room's).
pub(super) fn link_room(rooms: &Rooms, handle: RoomHandle, meeting: Arc<MeetingShared>) {
    let mut rooms = rooms.write().unwrap_or_else(PoisonError::into_inner);
    rooms.retain(|_, existing| existing.id != meeting.id);
    rooms.insert(handle, meeting);
}

/// Stops routing room `handle`'s datagrams, and its meeting's frames stop going out
/// there.
pub(super) fn unlink_room(rooms: &Rooms, handle: RoomHandle) {
    let removed = rooms
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&handle);
    if let Some(meeting) = removed {
        meeting.set_room(None);
    }
}

/// Unlinks every room (the connection is closing).
pub(super) fn unlink_all(rooms: &Rooms) {
    let all: Vec<_> = rooms
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for (_, meeting) in all {
        meeting.set_room(None);
    }
}

/// Reads media datagrams until the connection closes and hands each to its meeting.
pub(super) async fn read_media(
    conn: quinn::Connection,
    rooms: Rooms,
    origin: Instant,
    received: Arc<AtomicU64>,
) {
    while let Ok(datagram) = conn.read_datagram().await {
        received.fetch_add(1, Ordering::Relaxed);
        let Ok((header, payload)) = DatagramHeader::decode(&datagram) else {
            continue;
        };
        // Handled under the read lock (only the shell writes, when a room is joined
        // or left), so the per-datagram path clones nothing.
        let rooms = rooms.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(meeting) = rooms.get(&header.room_handle) {
            let now_ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
            meeting.on_datagram(&header, payload, now_ms);
        }
    }
}
