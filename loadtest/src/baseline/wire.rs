//! What the bare clients put in a datagram, and the relay's one-message join.
//!
//! Every datagram starts with a 24-byte little-endian header:
//!
//! | bytes  | field                                            |
//! |--------|--------------------------------------------------|
//! | 0..4   | stream id (`u32`: one per sender and media kind) |
//! | 4..12  | frame sequence number (`u64`, per stream)        |
//! | 12..20 | send time, µs since the run's shared base        |
//! | 20..22 | fragment index (`u16`)                           |
//! | 22..24 | fragment count (`u16`, at least 1)               |
//!
//! followed by zero padding up to the datagram's size. An audio frame is one datagram
//! (fragment 0 of 1); a video frame is split into fragments of at most
//! [`MAX_DATAGRAM_BYTES`] bytes, every one carrying the same stream, sequence number and
//! send time.

use bytes::Bytes;

/// Length of [`Header`] on the wire.
pub(crate) const HEADER_LEN: usize = 24;

/// Largest datagram a bare client sends.
pub(crate) const MAX_DATAGRAM_BYTES: usize = 1100;

/// Frame bytes one video fragment carries after its header.
pub(crate) const MAX_FRAGMENT_DATA: usize = MAX_DATAGRAM_BYTES - HEADER_LEN;

/// Length of the join message (the group index, `u32` LE) a client sends on its one
/// bidirectional stream.
pub(crate) const JOIN_LEN: usize = 4;

/// The relay's answer once the connection is in its group.
pub(crate) const JOIN_ACK: u8 = 1;

/// The header of a bare client's datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Which stream (sender and media kind) sent it.
    pub(crate) stream: u32,
    /// The frame's sequence number in its stream.
    pub(crate) seq: u64,
    /// When the frame was sent, µs since the run's base instant.
    pub(crate) sent_us: u64,
    /// Index of this fragment in the frame.
    pub(crate) fragment: u16,
    /// Fragments in the frame (at least 1).
    pub(crate) fragments: u16,
}

impl Header {
    /// A datagram of `len` bytes (at least [`HEADER_LEN`]): this header, then zeros.
    pub(crate) fn datagram(&self, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len.max(HEADER_LEN));
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.sent_us.to_le_bytes());
        out.extend_from_slice(&self.fragment.to_le_bytes());
        out.extend_from_slice(&self.fragments.to_le_bytes());
        out.resize(len.max(HEADER_LEN), 0);
        Bytes::from(out)
    }

    /// Parses the front of a datagram. `None` for anything that is not a well-formed
    /// header: too short, no fragments, or a fragment index out of range.
    pub(crate) fn parse(datagram: &[u8]) -> Option<Header> {
        let (stream, rest) = datagram.split_first_chunk::<4>()?;
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (sent_us, rest) = rest.split_first_chunk::<8>()?;
        let (fragment, rest) = rest.split_first_chunk::<2>()?;
        let (fragments, _) = rest.split_first_chunk::<2>()?;
        let header = Header {
            stream: u32::from_le_bytes(*stream),
            seq: u64::from_le_bytes(*seq),
            sent_us: u64::from_le_bytes(*sent_us),
            fragment: u16::from_le_bytes(*fragment),
            fragments: u16::from_le_bytes(*fragments),
        };
        (header.fragments >= 1 && header.fragment < header.fragments).then_some(header)
    }
}

/// The join message for group `group`.
pub(crate) fn join_message(group: u32) -> [u8; JOIN_LEN] {
    group.to_le_bytes()
}

/// Parses a join message: exactly [`JOIN_LEN`] bytes.
pub(crate) fn parse_join(message: &[u8]) -> Option<u32> {
    let bytes: [u8; JOIN_LEN] = message.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: Header = Header {
        stream: 0x0102_0304,
        seq: 0x1122_3344_5566_7788,
        sent_us: 987_654_321,
        fragment: 2,
        fragments: 3,
    };

    #[test]
    fn header_round_trips_and_pads() {
        let d = SAMPLE.datagram(120);
        assert_eq!(d.len(), 120);
        assert_eq!(&d[..4], &[4, 3, 2, 1], "little endian");
        assert!(d[HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(Header::parse(&d), Some(SAMPLE));
        // A size below the header still yields a whole header.
        let d = SAMPLE.datagram(3);
        assert_eq!(d.len(), HEADER_LEN);
        assert_eq!(Header::parse(&d), Some(SAMPLE));
    }

    #[test]
    fn short_or_garbage_datagrams_are_refused() {
        let d = SAMPLE.datagram(HEADER_LEN);
        for len in 0..HEADER_LEN {
            assert_eq!(Header::parse(&d[..len]), None, "{len} bytes");
        }
        assert_eq!(Header::parse(&[]), None);
        let no_fragments = Header {
            fragment: 0,
            fragments: 0,
            ..SAMPLE
        };
        assert_eq!(Header::parse(&no_fragments.datagram(40)), None);
        let out_of_range = Header {
            fragment: 3,
            fragments: 3,
            ..SAMPLE
        };
        assert_eq!(Header::parse(&out_of_range.datagram(40)), None);
        // Arbitrary bytes never panic; whatever parses is self-consistent.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            if let Some(h) = Header::parse(&garbage) {
                assert!(h.fragment < h.fragments);
            }
        }
    }

    #[test]
    fn join_message_is_exactly_four_bytes() {
        assert_eq!(parse_join(&join_message(7)), Some(7));
        assert_eq!(parse_join(&[1, 2, 3]), None);
        assert_eq!(parse_join(&[1, 2, 3, 4, 5]), None);
    }
}
