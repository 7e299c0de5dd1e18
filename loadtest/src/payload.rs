//! The load test's frame payload: who sent it, its sequence number and when, inside
//! the SFrame encryption (so it is authenticated and measured after decryption).
//!
//! Layout (little endian): magic `b"CL"`, version 1, media kind, sender id `u32`,
//! sequence `u64`, send time `u64` (µs on the run's clock); then zero padding to the
//! frame size.

/// Bytes of the header; frames are at least this long.
pub const HEADER_LEN: usize = 24;

const MAGIC: [u8; 2] = *b"CL";
const VERSION: u8 = 1;

/// The header of one load-test frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// 0 audio, 1 video.
    pub kind: u8,
    /// The sending stream (one per participant and media kind).
    pub sender: u32,
    /// Per-stream sequence number, from 0.
    pub seq: u64,
    /// Send time, µs on the run's clock.
    pub sent_us: u64,
}

impl FrameHeader {
    /// Writes the header and pads to `len` bytes (at least [`HEADER_LEN`]) into `buf`.
    pub fn write(&self, len: usize, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(self.kind);
        buf.extend_from_slice(&self.sender.to_le_bytes());
        buf.extend_from_slice(&self.seq.to_le_bytes());
        buf.extend_from_slice(&self.sent_us.to_le_bytes());
        buf.resize(len.max(HEADER_LEN), 0);
    }

    /// Reads a header; `None` for anything that is not a load-test frame.
    #[must_use]
    pub fn read(data: &[u8]) -> Option<Self> {
        let header: &[u8; HEADER_LEN] = data.get(..HEADER_LEN)?.try_into().ok()?;
        let (magic, rest) = header.split_first_chunk::<2>()?;
        let (&[version, kind], rest) = rest.split_first_chunk::<2>()?;
        if *magic != MAGIC || version != VERSION {
            return None;
        }
        let (sender, rest) = rest.split_first_chunk::<4>()?;
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (sent, _) = rest.split_first_chunk::<8>()?;
        Some(FrameHeader {
            kind,
            sender: u32::from_le_bytes(*sender),
            seq: u64::from_le_bytes(*seq),
            sent_us: u64::from_le_bytes(*sent),
        })
    }
}

#[cfg(test)]
mod tests {
    use rand_core::{RngCore, SeedableRng};

    use super::*;

    #[test]
    fn a_header_round_trips_with_padding() {
        let h = FrameHeader {
            kind: 1,
            sender: 77,
            seq: 1 << 40,
            sent_us: 123_456_789,
        };
        let mut buf = Vec::new();
        h.write(120, &mut buf);
        assert_eq!(buf.len(), 120);
        assert_eq!(FrameHeader::read(&buf), Some(h));
        h.write(3, &mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
    }

    #[test]
    fn short_foreign_or_random_bytes_are_not_frames() {
        assert_eq!(FrameHeader::read(&[]), None);
        assert_eq!(FrameHeader::read(b"CL"), None);
        assert_eq!(FrameHeader::read(&[0; 64]), None);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let mut buf = vec![0u8; 64];
        for len in 0..64 {
            rng.fill_bytes(&mut buf);
            let _ = FrameHeader::read(buf.get(..len).unwrap_or_default());
        }
    }
}
