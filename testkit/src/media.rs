//! The media plane under test: members, tagged datagram bursts, and checks of what
//! arrived, with the marker technique.
//!
//! The marker technique: a sender sends its datagrams, then a *marker* datagram on a
//! path that is delivered to the receiver. The server forwards one connection's
//! datagrams in order, and loopback neither loses nor reorders them at these rates, so
//! once the receiver holds the marker everything sent before it that was going to
//! arrive has arrived. Absence is then checked after a positive signal, never after a
//! guessed delay.

use std::collections::BTreeSet;
use std::time::Duration;

use conclave_proto::datagram::{DatagramHeader, MediaKind, RoomHandle, Slot};

use crate::clock::WAIT;
use crate::identity::User;
use crate::protocol::TestClient;
use crate::sfu::TestSfu;

/// How long a receiver listens for datagrams that must not come, after its markers
/// have arrived (a second, weaker check on top of the marker technique).
pub const QUIET: Duration = Duration::from_millis(300);

/// Connects and registers a fresh device of a fresh user called `name`.
pub async fn member(server: &TestSfu, name: &str) -> TestClient {
    let user = User::new(name);
    TestClient::registered(server, &user).await.0
}

const MAGIC: &[u8; 4] = b"tag1";

/// What a test datagram's payload says about itself: who sent it (a test-chosen
/// number, independent of slots), its sequence number, and whether it is a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    /// Who sent it.
    pub sender: u8,
    /// Its sequence number.
    pub seq: u32,
    /// Whether it is the sender's marker.
    pub marker: bool,
}

impl Tag {
    /// The payload: the tag, then opaque bytes.
    pub fn encode(self) -> Vec<u8> {
        let mut p = MAGIC.to_vec();
        p.push(self.sender);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.push(u8::from(self.marker));
        // Some opaque "ciphertext" after the tag, as a real frame would have.
        p.extend_from_slice(&[0x5a; 16]);
        p
    }

    /// The tag of a test payload (`None` for other payloads).
    pub fn decode(payload: &[u8]) -> Option<Tag> {
        let rest = payload.strip_prefix(MAGIC)?;
        let (&sender, rest) = rest.split_first()?;
        let (seq, rest) = rest.split_first_chunk::<4>()?;
        let (&marker, _) = rest.split_first()?;
        Some(Tag {
            sender,
            seq: u32::from_be_bytes(*seq),
            marker: marker == 1,
        })
    }
}

/// One datagram as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Got {
    /// The header as forwarded.
    pub header: DatagramHeader,
    /// The payload's tag, if it has one.
    pub tag: Option<Tag>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Sends `count` tagged audio datagrams (sequence numbers `0..count`) in room
/// `handle`, claiming `slot` in the header.
pub fn send_burst(client: &TestClient, handle: RoomHandle, slot: Slot, sender: u8, count: u32) {
    for seq in 0..count {
        let tag = Tag {
            sender,
            seq,
            marker: false,
        };
        client.send_media(handle, slot, MediaKind::Audio, seq, &tag.encode());
    }
}

/// Sends `sender`'s marker in room `handle`.
pub fn send_marker(client: &TestClient, handle: RoomHandle, sender: u8) {
    let tag = Tag {
        sender,
        seq: u32::MAX,
        marker: true,
    };
    client.send_media(handle, Slot(0), MediaKind::Audio, u32::MAX, &tag.encode());
}

/// Receives until the markers of every `(room handle, sender)` in `markers` have
/// arrived; returns every non-marker datagram received meanwhile. Panics (naming the
/// missing markers) if they do not all arrive within [`WAIT`].
pub async fn collect_until_markers(client: &TestClient, markers: &[(RoomHandle, u8)]) -> Vec<Got> {
    let mut missing: BTreeSet<(RoomHandle, u8)> = markers.iter().copied().collect();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((header, payload)) = client.recv_media(left).await else {
            panic!(
                "markers {missing:?} did not arrive within {WAIT:?}; got meanwhile: {:?}",
                got.iter()
                    .map(|g: &Got| (g.header, g.tag))
                    .collect::<Vec<_>>()
            );
        };
        let tag = Tag::decode(&payload);
        if let Some(t) = tag.filter(|t| t.marker) {
            if missing.remove(&(header.room_handle, t.sender)) {
                continue;
            }
        }
        got.push(Got {
            header,
            tag,
            payload,
        });
    }
    got
}

/// Asserts that nothing arrives within [`QUIET`] (after the markers proved the path
/// is drained).
pub async fn assert_quiet(client: &TestClient, who: &str) {
    if let Some((h, p)) = client.recv_media(QUIET).await {
        panic!(
            "{who} received an unexpected datagram: {h:?} {:?}",
            Tag::decode(&p)
        );
    }
}

/// The sequence numbers received from `sender` in room `handle`, stamped with `slot`.
/// Panics if a datagram from `sender` in that room carries another slot.
pub fn seqs_from(got: &[Got], handle: RoomHandle, sender: u8, slot: Slot) -> Vec<u32> {
    got.iter()
        .filter(|g| g.header.room_handle == handle && g.tag.is_some_and(|t| t.sender == sender))
        .map(|g| {
            assert_eq!(
                g.header.sender_slot, slot,
                "datagram of sender {sender} in room {handle} carries the wrong slot: {g:?}"
            );
            g.tag.map(|t| t.seq).unwrap_or_default()
        })
        .collect()
}

/// Asserts that `got` holds exactly `0..count` from each `(handle, sender, slot)` in
/// `expected`, once each, and nothing else.
pub fn assert_exactly(got: &[Got], expected: &[(RoomHandle, u8, Slot)], count: u32, who: &str) {
    let mut accounted = 0;
    for &(handle, sender, slot) in expected {
        let mut seqs = seqs_from(got, handle, sender, slot);
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (0..count).collect::<Vec<_>>(),
            "{who}: datagrams of sender {sender} in room {handle}"
        );
        accounted += seqs.len();
    }
    if accounted != got.len() {
        let extra: Vec<_> = got
            .iter()
            .filter(|g| {
                !expected.iter().any(|&(h, s, _)| {
                    g.header.room_handle == h && g.tag.is_some_and(|t| t.sender == s)
                })
            })
            .map(|g| (g.header, g.tag))
            .collect();
        panic!(
            "{who} received {} datagrams it should not have, starting with {:?}",
            extra.len(),
            extra.get(..3).unwrap_or(&extra)
        );
    }
}
