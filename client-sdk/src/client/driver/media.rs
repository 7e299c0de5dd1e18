//! The media reader: one task per connection hands each burst of datagrams to their
//! meetings.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use conclave_proto::datagram::{DatagramHeader, HEADER_LEN, RoomHandle};

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

/// Most datagrams handled as one burst: taken from the connection without waiting,
/// decrypted under one lock per meeting and handed to the app at once.
const MAX_BURST: usize = 64;

/// Reads media datagrams until the connection closes and hands them to their meetings.
///
/// Datagrams are taken in bursts: after one arrives, every datagram the connection
/// already holds (up to [`MAX_BURST`]) is taken without waiting, and the burst is
/// handled with one clock reading, one read of the room table, and one lock and one
/// hand-over to the app per run of the same room: the app is woken at most once per
/// burst, not per frame.
pub(super) async fn read_media(
    conn: quinn::Connection,
    rooms: Rooms,
    origin: Instant,
    received: Arc<AtomicU64>,
) {
    let mut burst: Vec<Bytes> = Vec::with_capacity(MAX_BURST);
    let mut headers = Vec::with_capacity(MAX_BURST);
    let mut frames = Vec::with_capacity(MAX_BURST);
    while let Ok(first) = conn.read_datagram().await {
        burst.push(first);
        take_ready(&conn, &mut burst);
        received.fetch_add(burst.len() as u64, Ordering::Relaxed);
        let now_ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        decode_headers(&burst, &mut headers);
        {
            // Handled under the read lock (only the shell writes, when a room is
            // joined or left), so the per-datagram path clones nothing.
            let rooms = rooms.read().unwrap_or_else(PoisonError::into_inner);
            for_each_room_run(&headers, |handle, run| {
                if let Some(meeting) = rooms.get(&handle) {
                    let datagrams = run.iter().filter_map(|(header, at)| {
                        let payload = burst.get(*at)?.get(HEADER_LEN..)?;
                        Some((*header, payload))
                    });
                    meeting.on_datagrams(datagrams, now_ms, &mut frames);
                }
            });
        }
        burst.clear();
    }
}

/// Decodes the header of each datagram of `burst` once, into `headers` (with the
/// datagram's index); undecodable datagrams are left out.
fn decode_headers(burst: &[Bytes], headers: &mut Vec<(DatagramHeader, usize)>) {
    headers.clear();
    headers.extend(
        burst
            .iter()
            .enumerate()
            .filter_map(|(i, d)| DatagramHeader::decode(d).ok().map(|(h, _)| (h, i))),
    );
}

/// Appends the datagrams `conn` already holds to `burst`, without waiting, until it
/// holds [`MAX_BURST`].
fn take_ready(conn: &quinn::Connection, burst: &mut Vec<Bytes>) {
    let mut cx = Context::from_waker(Waker::noop());
    while burst.len() < MAX_BURST {
        let next = pin!(conn.read_datagram());
        match next.poll(&mut cx) {
            Poll::Ready(Ok(datagram)) => burst.push(datagram),
            // None held now, or the connection closed (the next await reports it).
            Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
}

/// Calls `f` with each run of consecutive decoded datagrams of one room, in arrival
/// order.
fn for_each_room_run(
    headers: &[(DatagramHeader, usize)],
    mut f: impl FnMut(RoomHandle, &[(DatagramHeader, usize)]),
) {
    let mut start = 0;
    while let Some((first, _)) = headers.get(start) {
        let room = first.room_handle;
        let len = headers
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|(h, _)| h.room_handle == room)
            .count();
        f(room, headers.get(start..start + len).unwrap_or_default());
        start += len;
    }
}

#[cfg(test)]
mod tests;
