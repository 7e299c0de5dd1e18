//! The binary media-datagram header.
//!
//! Every media QUIC datagram is `header (14 bytes) || SFrame ciphertext`. The header holds
//! only what forwarding needs; all of it is big-endian:
//!
//! ```text
//!  0       1       2               6       8               12      13      14
//!  +-------+-------+---------------+-------+---------------+-------+-------+----------
//!  |version| flags |  room handle  | slot  | frame number  | frag  | frag  | SFrame
//!  |  (1)  |       |     (u32)     | (u16) |     (u32)     | index | count | ciphertext
//!  +-------+-------+---------------+-------+---------------+-------+-------+----------
//!  flags: bit 0 = keyframe, bits 1..=2 = media kind (0 audio, 1 video, 2 data), bits 3..=7 = 0
//! ```
//!
//! * `room handle` ([`RoomHandle`]): a small number the SFU assigned to the room on this
//!   connection (it replaces the 32-byte routing id on the hot path).
//! * `slot` ([`Slot`]): the sender slot. Clients may write anything; the SFU overwrites
//!   it in place with the slot it assigned to the sending connection
//!   ([`write_sender_slot`]), so a client cannot impersonate another sender.
//! * `frame number`, `fragment index` and `fragment count`: reassembly of media frames
//!   larger than one datagram; `fragment index < fragment count <= MAX_FRAGMENTS`.
//!
//! Decoding is strict: unknown versions, reserved bits, unknown media kinds and
//! inconsistent fragment fields are errors, never guesses. Nothing here allocates.

use std::fmt;

use thiserror::Error;

use crate::limits::MAX_DATAGRAM_BYTES;

/// The only header version this crate produces and accepts.
pub const DATAGRAM_VERSION: u8 = 1;

/// Length of the encoded header in bytes.
pub const HEADER_LEN: usize = 14;

/// Most fragments one media frame may be split into.
pub const MAX_FRAGMENTS: u8 = 64;

const FLAG_KEYFRAME: u8 = 0b0000_0001;
const MEDIA_KIND_SHIFT: u8 = 1;
const MEDIA_KIND_MASK: u8 = 0b0000_0110;
const RESERVED_MASK: u8 = 0b1111_1000;
const SLOT_OFFSET: usize = 6;

/// Media carried by a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaKind {
    /// Audio frames: forwarded first under congestion.
    Audio,
    /// Video frames: dropped first under congestion.
    Video,
    /// Lossy in-meeting messages (cursor positions, live captions): one datagram each,
    /// never fragmented, forwarded like video (dropped first under congestion). The
    /// SDK sends them through its message API, not as media frames.
    Data,
}

impl MediaKind {
    fn to_bits(self) -> u8 {
        match self {
            MediaKind::Audio => 0,
            MediaKind::Video => 1,
            MediaKind::Data => 2,
        }
    }

    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(MediaKind::Audio),
            1 => Some(MediaKind::Video),
            2 => Some(MediaKind::Data),
            _ => None,
        }
    }

    /// `kinds` as a repeated protobuf field (invitations and replies).
    #[must_use]
    pub fn to_wire(kinds: &[MediaKind]) -> Vec<i32> {
        kinds
            .iter()
            .map(|k| crate::v1::MediaKind::from(*k) as i32)
            .collect()
    }

    /// The kinds of a repeated protobuf field; values this version does not know (and
    /// `UNSPECIFIED`) are skipped.
    #[must_use]
    pub fn from_wire(kinds: &[i32]) -> Vec<MediaKind> {
        kinds
            .iter()
            .filter_map(|k| crate::v1::MediaKind::try_from(*k).ok())
            .filter_map(|k| MediaKind::try_from(k).ok())
            .collect()
    }
}

/// The one media kind, as it is named inside containers.
impl From<MediaKind> for crate::v1::MediaKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => crate::v1::MediaKind::Audio,
            MediaKind::Video => crate::v1::MediaKind::Video,
            MediaKind::Data => crate::v1::MediaKind::Data,
        }
    }
}

/// A container's media kind, unless it is `UNSPECIFIED`.
impl TryFrom<crate::v1::MediaKind> for MediaKind {
    type Error = crate::v1::MediaKind;

    fn try_from(kind: crate::v1::MediaKind) -> Result<Self, Self::Error> {
        match kind {
            crate::v1::MediaKind::Audio => Ok(MediaKind::Audio),
            crate::v1::MediaKind::Video => Ok(MediaKind::Video),
            crate::v1::MediaKind::Data => Ok(MediaKind::Data),
            other => Err(other),
        }
    }
}

/// The SFU-assigned handle of a room on one connection (datagram headers carry it).
///
/// Control messages carry it as a plain `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomHandle(pub u32);

impl RoomHandle {
    /// The handle as the wire carries it.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The bare number, as the wire carries it.
impl fmt::Display for RoomHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A member's sender slot in a room, as the SFU assigned it.
///
/// Unique within a room while the room lives. Datagram headers carry it as a `u16`,
/// control messages as a `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u16);

impl Slot {
    /// The slot as datagram headers carry it.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// The bare number, as the wire carries it.
impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A decoded media-datagram header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramHeader {
    /// The SFU-assigned room handle on this connection.
    pub room_handle: RoomHandle,
    /// The sender slot (stamped by the SFU on forwarded datagrams).
    pub sender_slot: Slot,
    /// Audio or video.
    pub media_kind: MediaKind,
    /// Whether this fragment belongs to a video keyframe.
    pub keyframe: bool,
    /// Per-sender frame number (wraps around).
    pub frame_number: u32,
    /// Index of this fragment within the frame, `< fragment_count`.
    pub fragment_index: u8,
    /// Number of fragments of the frame, `1..=MAX_FRAGMENTS`.
    pub fragment_count: u8,
}

/// Why a datagram header could not be decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DatagramHeaderError {
    /// The datagram is shorter than a header.
    #[error("datagram of {len} bytes is shorter than the {HEADER_LEN}-byte media header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The datagram exceeds the maximum size.
    #[error("datagram of {len} bytes exceeds the {MAX_DATAGRAM_BYTES}-byte limit")]
    TooLong {
        /// Bytes received.
        len: usize,
    },
    /// The header version is not one this implementation speaks.
    #[error("unsupported media header version {version} (this build speaks {DATAGRAM_VERSION})")]
    UnsupportedVersion {
        /// Version found.
        version: u8,
    },
    /// Reserved flag bits were set.
    #[error("reserved media header flag bits are set ({flags:#010b}); sender is not conformant")]
    ReservedFlags {
        /// The flags byte.
        flags: u8,
    },
    /// The media kind bits name no known media kind.
    #[error("unknown media kind {bits} in media header")]
    UnknownMediaKind {
        /// The media kind bits.
        bits: u8,
    },
    /// Fragment index/count are inconsistent or out of bounds.
    #[error(
        "invalid fragmentation: index {index} of {count} (count must be 1..={MAX_FRAGMENTS}, index < count)"
    )]
    BadFragment {
        /// Fragment index.
        index: u8,
        /// Fragment count.
        count: u8,
    },
}

impl DatagramHeader {
    /// Decodes the header at the front of `datagram` and returns it with the remaining
    /// bytes (the SFrame ciphertext). Never panics, never allocates.
    pub fn decode(datagram: &[u8]) -> Result<(Self, &[u8]), DatagramHeaderError> {
        if datagram.len() > MAX_DATAGRAM_BYTES {
            return Err(DatagramHeaderError::TooLong {
                len: datagram.len(),
            });
        }
        let Some((header, payload)) = datagram.split_first_chunk::<HEADER_LEN>() else {
            return Err(DatagramHeaderError::TooShort {
                len: datagram.len(),
            });
        };
        let [
            version,
            flags,
            h0,
            h1,
            h2,
            h3,
            s0,
            s1,
            f0,
            f1,
            f2,
            f3,
            fragment_index,
            fragment_count,
        ] = *header;
        if version != DATAGRAM_VERSION {
            return Err(DatagramHeaderError::UnsupportedVersion { version });
        }
        if flags & RESERVED_MASK != 0 {
            return Err(DatagramHeaderError::ReservedFlags { flags });
        }
        let kind_bits = (flags & MEDIA_KIND_MASK) >> MEDIA_KIND_SHIFT;
        let media_kind = MediaKind::from_bits(kind_bits)
            .ok_or(DatagramHeaderError::UnknownMediaKind { bits: kind_bits })?;
        check_fragment(fragment_index, fragment_count)?;
        Ok((
            DatagramHeader {
                room_handle: RoomHandle(u32::from_be_bytes([h0, h1, h2, h3])),
                sender_slot: Slot(u16::from_be_bytes([s0, s1])),
                media_kind,
                keyframe: flags & FLAG_KEYFRAME != 0,
                frame_number: u32::from_be_bytes([f0, f1, f2, f3]),
                fragment_index,
                fragment_count,
            },
            payload,
        ))
    }

    /// Encodes the header into its 14-byte wire form. Fails only if the fragment fields
    /// violate the invariants `decode` enforces.
    pub fn encode(&self) -> Result<[u8; HEADER_LEN], DatagramHeaderError> {
        check_fragment(self.fragment_index, self.fragment_count)?;
        let mut flags = self.media_kind.to_bits() << MEDIA_KIND_SHIFT;
        if self.keyframe {
            flags |= FLAG_KEYFRAME;
        }
        let [h0, h1, h2, h3] = self.room_handle.0.to_be_bytes();
        let [s0, s1] = self.sender_slot.0.to_be_bytes();
        let [f0, f1, f2, f3] = self.frame_number.to_be_bytes();
        Ok([
            DATAGRAM_VERSION,
            flags,
            h0,
            h1,
            h2,
            h3,
            s0,
            s1,
            f0,
            f1,
            f2,
            f3,
            self.fragment_index,
            self.fragment_count,
        ])
    }
}

fn check_fragment(index: u8, count: u8) -> Result<(), DatagramHeaderError> {
    if count == 0 || count > MAX_FRAGMENTS || index >= count {
        return Err(DatagramHeaderError::BadFragment { index, count });
    }
    Ok(())
}

/// Overwrites the sender slot of an encoded datagram in place (the SFU's stamp).
///
/// Returns [`DatagramHeaderError::TooShort`] if `datagram` cannot hold a header; the
/// caller is expected to have decoded the header first.
pub fn write_sender_slot(datagram: &mut [u8], slot: Slot) -> Result<(), DatagramHeaderError> {
    let len = datagram.len();
    let field = datagram
        .get_mut(SLOT_OFFSET..SLOT_OFFSET + 2)
        .filter(|_| len >= HEADER_LEN)
        .ok_or(DatagramHeaderError::TooShort { len })?;
    field.copy_from_slice(&slot.0.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DatagramHeader {
        DatagramHeader {
            room_handle: RoomHandle(0xDEAD_BEEF),
            sender_slot: Slot(513),
            media_kind: MediaKind::Video,
            keyframe: true,
            frame_number: 0x0102_0304,
            fragment_index: 2,
            fragment_count: 3,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let header = sample();
        let mut wire = header.encode().unwrap().to_vec();
        wire.extend_from_slice(b"sframe");
        let (decoded, payload) = DatagramHeader::decode(&wire).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(payload, b"sframe");
    }

    #[test]
    fn wire_layout_is_fixed() {
        let wire = sample().encode().unwrap();
        assert_eq!(
            wire,
            [
                1, 0b011, 0xDE, 0xAD, 0xBE, 0xEF, 0x02, 0x01, 1, 2, 3, 4, 2, 3
            ]
        );
    }

    #[test]
    fn rejects_short_datagram() {
        let wire = sample().encode().unwrap();
        assert_eq!(
            DatagramHeader::decode(&wire[..13]),
            Err(DatagramHeaderError::TooShort { len: 13 })
        );
    }

    #[test]
    fn rejects_oversized_datagram() {
        let big = vec![0u8; MAX_DATAGRAM_BYTES + 1];
        assert!(matches!(
            DatagramHeader::decode(&big),
            Err(DatagramHeaderError::TooLong { .. })
        ));
    }

    #[test]
    fn rejects_unknown_version_reserved_bits_and_media_kind() {
        let mut wire = sample().encode().unwrap();
        wire[0] = 2;
        assert_eq!(
            DatagramHeader::decode(&wire),
            Err(DatagramHeaderError::UnsupportedVersion { version: 2 })
        );
        let mut wire = sample().encode().unwrap();
        wire[1] |= 0b1000_0000;
        assert!(matches!(
            DatagramHeader::decode(&wire),
            Err(DatagramHeaderError::ReservedFlags { .. })
        ));
        let mut wire = sample().encode().unwrap();
        wire[1] = 0b110;
        assert_eq!(
            DatagramHeader::decode(&wire),
            Err(DatagramHeaderError::UnknownMediaKind { bits: 3 })
        );
    }

    #[test]
    fn rejects_inconsistent_fragments() {
        for (index, count) in [(0, 0), (3, 3), (0, MAX_FRAGMENTS + 1)] {
            let mut wire = sample().encode().unwrap();
            wire[12] = index;
            wire[13] = count;
            assert_eq!(
                DatagramHeader::decode(&wire),
                Err(DatagramHeaderError::BadFragment { index, count })
            );
            let header = DatagramHeader {
                fragment_index: index,
                fragment_count: count,
                ..sample()
            };
            assert!(header.encode().is_err());
        }
    }

    #[test]
    fn stamping_the_slot_overwrites_only_the_slot() {
        let mut wire = sample().encode().unwrap().to_vec();
        wire.extend_from_slice(b"payload");
        write_sender_slot(&mut wire, Slot(7)).unwrap();
        let (decoded, payload) = DatagramHeader::decode(&wire).unwrap();
        assert_eq!(decoded.sender_slot, Slot(7));
        assert_eq!(
            decoded,
            DatagramHeader {
                sender_slot: Slot(7),
                ..sample()
            }
        );
        assert_eq!(payload, b"payload");
        assert!(write_sender_slot(&mut [0u8; 7], Slot(1)).is_err());
    }

    #[test]
    fn every_header_length_and_byte_value_is_handled_without_panic() {
        // Exhaustive over the flag byte and fragment bytes, plus every short length.
        let base = sample().encode().unwrap();
        for len in 0..=HEADER_LEN {
            let _ = DatagramHeader::decode(&base[..len]);
        }
        for flags in 0..=u8::MAX {
            for frag in 0..=u8::MAX {
                let mut wire = base;
                wire[1] = flags;
                wire[12] = frag;
                wire[13] = frag.wrapping_mul(7);
                if let Ok((h, _)) = DatagramHeader::decode(&wire) {
                    assert_eq!(h.encode().unwrap(), wire);
                }
            }
        }
    }

    #[test]
    fn handles_and_slots_are_the_bare_wire_numbers() {
        assert_eq!(RoomHandle(0xDEAD_BEEF).get(), 0xDEAD_BEEF);
        assert_eq!(Slot(513).get(), 513);
        assert_eq!(RoomHandle(42).to_string(), "42");
        assert_eq!(format!("{:>5}", Slot(7)), "    7");
    }

    #[test]
    fn media_kinds_round_trip_through_the_wire_and_unknown_ones_are_skipped() {
        let kinds = [MediaKind::Video, MediaKind::Audio];
        assert_eq!(MediaKind::from_wire(&MediaKind::to_wire(&kinds)), kinds);
        assert_eq!(
            MediaKind::from_wire(&[0, 1, 2, 3, 4, -1]),
            [MediaKind::Audio, MediaKind::Video, MediaKind::Data]
        );
    }
}
