//! Media frames over datagrams: fragmentation and reassembly of SFrame ciphertexts.
//!
//! # Data flow
//!
//! ```text
//! sender:   encoded frame ──MediaEnvelope::wrap (sequence, capture time)──▶ plaintext
//!           plaintext ──SframeSender::encrypt(frame_metadata(kind, key, n))──▶ ciphertext
//!           ciphertext ──fragment()──▶ [header(i of n) || chunk i] ──▶ QUIC datagrams ──▶ SFU
//!
//! receiver: datagram ──DatagramHeader::decode──▶ (header, payload)
//!           ──Reassembler::push──▶ AssembledFrame (when its last missing fragment arrives)
//!           ──SframeReceiver::decrypt(frame.metadata(), ciphertext)──▶ plaintext
//!           ──MediaEnvelope::unwrap──▶ (sequence, capture time) + encoded frame
//! ```
//!
//! [`fragment`] cuts one SFrame ciphertext into at most [`MAX_FRAGMENTS`] datagrams of
//! nearly equal size, each a 14-byte [`DatagramHeader`] followed by one chunk. The SFU
//! forwards datagrams one by one (and stamps the sender slot); a receiver keeps one
//! [`Reassembler`] per room, which collects the chunks of each frame, keyed by
//! `(sender slot, frame number, media kind)`, and returns the whole ciphertext once the
//! last missing chunk arrived.
//!
//! The media kind, keyframe flag and frame number travel in the clear, because the SFU
//! needs them to forward and to drop under congestion. [`frame_metadata`] turns them into
//! bytes a sender authenticates with the frame as SFrame metadata, so an SFU that alters
//! them makes the frame fail to decrypt ([`AssembledFrame::metadata`] is the
//! receiver's side).
//!
//! # Invariants
//!
//! * The module is **sans-IO**: no I/O, no clock (time is an argument, `now_ms`, in any
//!   monotonic milliseconds) and no randomness. Nothing here panics on any input.
//! * Every buffer is bounded. A datagram payload is at most [`MAX_FRAGMENT_PAYLOAD`]
//!   bytes, a frame at most [`MAX_FRAGMENTS`] fragments, and a [`Reassembler`] holds at
//!   most [`ReassemblyConfig::max_pending_frames`] partial frames using at most
//!   [`ReassemblyConfig::max_pending_bytes`] bytes of buffers (counted by allocated
//!   capacity); above either bound it evicts the oldest partial frame.
//! * A partial frame lives at most [`ReassemblyConfig::timeout_ms`] after its first
//!   fragment; a frame is returned at most once per reassembly, and only when every
//!   fragment `0..count` has arrived with the same fragment count and keyframe flag.
//! * Reassembly is not authentication: a returned ciphertext is whatever the fragments
//!   carried, and only SFrame decryption tells whether it is genuine.
//!
//! # Cost
//!
//! Per datagram, [`Reassembler::push`] copies the payload once into the frame's buffer,
//! which is sized for the whole frame on its first fragment; the only allocation is that
//! buffer, which becomes [`AssembledFrame::ciphertext`]. Fragments that arrive out of
//! order cost one more allocation and copy at completion. Single-fragment frames skip the
//! pending-frame table altogether, and [`Reassembler::push_ref`] hands them out borrowed
//! from the datagram, without a copy or an allocation. Lookups are `O(log pending)`.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use conclave_proto::datagram::{DatagramHeader, DatagramHeaderError, HEADER_LEN, MAX_FRAGMENTS};
pub use conclave_proto::datagram::{MediaKind, RoomHandle, Slot};
use conclave_proto::limits::MAX_DATAGRAM_BYTES;

mod envelope;
mod frame_ref;
#[cfg(test)]
mod tests;

pub use envelope::{ENVELOPE_LEN, ENVELOPE_VERSION, MediaEnvelope};
pub use frame_ref::FrameRef;

/// Version byte at the front of [`frame_metadata`].
pub const FRAME_METADATA_VERSION: u8 = 1;

/// Length of [`frame_metadata`] in bytes.
pub const FRAME_METADATA_LEN: usize = 6;

/// Largest payload (fragment of a ciphertext) one datagram can carry, in bytes.
pub const MAX_FRAGMENT_PAYLOAD: usize = MAX_DATAGRAM_BYTES - HEADER_LEN;

/// [`MAX_FRAGMENTS`] as a `usize`.
const MAX_FRAGMENTS_USIZE: usize = MAX_FRAGMENTS as usize;

/// Why a frame could not be fragmented.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The ciphertext is empty.
    #[error(
        "cannot fragment an empty media frame: an SFrame ciphertext is never empty, so pass \
         the output of SframeSender::encrypt"
    )]
    Empty,

    /// The ciphertext needs more than [`MAX_FRAGMENTS`] datagrams.
    #[error(
        "media frame of {len} bytes exceeds the {max}-byte limit for this datagram size \
         ({MAX_FRAGMENTS} fragments); encode the frame at a lower bitrate or split it into \
         several frames"
    )]
    TooLarge {
        /// Length of the ciphertext.
        len: usize,
        /// Largest ciphertext accepted for this datagram size ([`max_frame_ciphertext`]).
        max: usize,
    },

    /// The datagram size leaves no room for a payload after the header.
    #[error(
        "datagram size of {max_datagram} bytes leaves no room for media after the \
         {HEADER_LEN}-byte header; pass the connection's maximum datagram size"
    )]
    DatagramTooSmall {
        /// The datagram size asked for (after clamping to the protocol limit).
        max_datagram: usize,
    },

    /// A decrypted frame does not start with a media envelope this version reads (a
    /// sender running another protocol version, or a participant sending junk).
    #[error(
        "a decrypted media frame has no valid media envelope (shorter than {ENVELOPE_LEN} \
         bytes, or another envelope version): the sender runs an incompatible SDK"
    )]
    Envelope,

    /// A datagram header could not be encoded (a bug in this module, not a caller error).
    #[error("media datagram header could not be encoded: {0}")]
    Header(#[from] DatagramHeaderError),
}

/// The bytes a sender authenticates as SFrame metadata with a media frame, so the SFU
/// cannot alter the unencrypted media kind, keyframe flag or frame number undetected.
///
/// Layout: `[version = 1, flags, frame_number (u32, big-endian)]`, where `flags` has
/// the bit layout of the datagram header's flags byte: bit 0 keyframe, bits 1–2 media
/// kind (0 audio, 1 video, 2 data).
///
/// The sender passes it to `SframeSender::encrypt`; the receiver passes the same bytes,
/// rebuilt from the received header fields ([`AssembledFrame::metadata`]), to
/// `SframeReceiver::decrypt`.
#[must_use]
pub fn frame_metadata(
    kind: MediaKind,
    keyframe: bool,
    frame_number: u32,
) -> [u8; FRAME_METADATA_LEN] {
    let header = DatagramHeader {
        room_handle: RoomHandle(0),
        sender_slot: Slot(0),
        media_kind: kind,
        keyframe,
        frame_number,
        fragment_index: 0,
        fragment_count: 1,
    };
    // Encoding a header is the single definition of the flags byte. Fragment 0 of 1 is
    // always valid, so `encode` cannot fail and the fallback is unreachable.
    let flags = header.encode().map_or(0, |[_, flags, ..]| flags);
    let [f0, f1, f2, f3] = frame_number.to_be_bytes();
    [FRAME_METADATA_VERSION, flags, f0, f1, f2, f3]
}

/// The datagram size `fragment` uses for `max_datagram`: at most the protocol limit.
fn clamp_datagram(max_datagram: usize) -> usize {
    max_datagram.min(MAX_DATAGRAM_BYTES)
}

/// Largest ciphertext [`fragment`] accepts for datagrams of at most `max_datagram` bytes
/// (clamped to `MAX_DATAGRAM_BYTES`): [`MAX_FRAGMENTS`] payloads of
/// `max_datagram - HEADER_LEN` bytes, or 0 if no payload fits.
#[must_use]
pub fn max_frame_ciphertext(max_datagram: usize) -> usize {
    clamp_datagram(max_datagram).saturating_sub(HEADER_LEN) * MAX_FRAGMENTS_USIZE
}

/// Splits one SFrame `ciphertext` into datagrams of at most `max_datagram` bytes, header
/// included (`max_datagram` is clamped to `MAX_DATAGRAM_BYTES`; pass the connection's
/// current maximum datagram size).
///
/// Each datagram is a [`DatagramHeader`] (`room_handle`, sender slot 0 for the SFU to
/// stamp, `kind`, `keyframe`, `frame_number`, fragment `i` of `n`) followed by chunk `i`.
/// `n = ceil(len / (max_datagram - HEADER_LEN))` and the chunks are as equal as possible:
/// the first `len % n` chunks are one byte longer than the rest. All datagrams share one
/// allocation.
///
/// # Errors
///
/// [`MediaError::Empty`] for an empty ciphertext, [`MediaError::DatagramTooSmall`] if
/// `max_datagram <= HEADER_LEN`, and [`MediaError::TooLarge`] if the ciphertext needs
/// more than [`MAX_FRAGMENTS`] datagrams (see [`max_frame_ciphertext`]).
pub fn fragment(
    room_handle: RoomHandle,
    kind: MediaKind,
    keyframe: bool,
    frame_number: u32,
    ciphertext: &[u8],
    max_datagram: usize,
) -> Result<Vec<Bytes>, MediaError> {
    let max_datagram = clamp_datagram(max_datagram);
    let Some(chunk_max) = max_datagram
        .checked_sub(HEADER_LEN)
        .filter(|&chunk| chunk > 0)
    else {
        return Err(MediaError::DatagramTooSmall { max_datagram });
    };
    let len = ciphertext.len();
    if len == 0 {
        return Err(MediaError::Empty);
    }
    let count = len.div_ceil(chunk_max);
    let too_large = MediaError::TooLarge {
        len,
        max: max_frame_ciphertext(max_datagram),
    };
    if count > MAX_FRAGMENTS_USIZE {
        return Err(too_large);
    }
    let fragment_count = u8::try_from(count).map_err(|_| too_large)?;

    let (base, longer) = (len / count, len % count);
    let mut wire = Vec::with_capacity(count * HEADER_LEN + len);
    let mut ends = [0usize; MAX_FRAGMENTS_USIZE];
    let mut rest = ciphertext;
    for (fragment_index, end) in (0..fragment_count).zip(ends.iter_mut()) {
        let header = DatagramHeader {
            room_handle,
            sender_slot: Slot(0),
            media_kind: kind,
            keyframe,
            frame_number,
            fragment_index,
            fragment_count,
        };
        wire.extend_from_slice(&header.encode()?);
        let size = base + usize::from(usize::from(fragment_index) < longer);
        let (chunk, tail) = rest.split_at_checked(size).unwrap_or((rest, &[]));
        wire.extend_from_slice(chunk);
        rest = tail;
        *end = wire.len();
    }

    let wire = Bytes::from(wire);
    let mut start = 0;
    Ok(ends
        .iter()
        .take(count)
        .map(|&end| {
            let datagram = wire.slice(start..end);
            start = end;
            datagram
        })
        .collect())
}

/// A media frame reassembled from its datagrams: still SFrame-encrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    /// The sender slot the SFU stamped on the fragments.
    pub sender_slot: Slot,
    /// Audio or video.
    pub kind: MediaKind,
    /// Whether the frame is a video keyframe (as claimed by the sender).
    pub keyframe: bool,
    /// The sender's frame number.
    pub frame_number: u32,
    /// The whole SFrame ciphertext.
    pub ciphertext: Vec<u8>,
}

impl AssembledFrame {
    /// The SFrame metadata the sender must have authenticated with this frame
    /// ([`frame_metadata`] of the received kind, keyframe flag and frame number).
    #[must_use]
    pub fn metadata(&self) -> [u8; FRAME_METADATA_LEN] {
        frame_metadata(self.kind, self.keyframe, self.frame_number)
    }
}

impl fmt::Debug for AssembledFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssembledFrame")
            .field("sender_slot", &self.sender_slot)
            .field("kind", &self.kind)
            .field("keyframe", &self.keyframe)
            .field("frame_number", &self.frame_number)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Bounds of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Most partial frames held at once (default 64). At the bound, a new frame evicts
    /// the oldest partial one; 0 disables reassembly of multi-fragment frames.
    pub max_pending_frames: usize,
    /// Most bytes of fragment buffers held at once, counted by allocated capacity
    /// (default 4 MiB). A frame can need up to `MAX_FRAGMENTS * MAX_FRAGMENT_PAYLOAD`
    /// (about 93 KiB); a smaller bound drops such frames.
    pub max_pending_bytes: usize,
    /// How long a partial frame may wait for its missing fragments, measured from its
    /// first fragment, in milliseconds (default 1,000).
    pub timeout_ms: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_pending_frames: 64,
            max_pending_bytes: 4 * 1024 * 1024,
            timeout_ms: 1_000,
        }
    }
}

/// Counters of a [`Reassembler`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Frames returned (single-fragment ones included).
    pub completed: u64,
    /// Partial frames dropped because their timeout passed.
    pub expired: u64,
    /// Partial frames dropped to respect the frame or byte bound.
    pub evicted: u64,
    /// Fragments ignored because the same fragment of the pending frame had arrived.
    pub duplicates: u64,
    /// Partial frames dropped because a fragment disagreed with them (fragment count or
    /// keyframe flag), plus fragments dropped because they were malformed themselves
    /// (fragment fields out of range, payload larger than [`MAX_FRAGMENT_PAYLOAD`]).
    pub inconsistent: u64,
}

/// Identifies a frame within a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FrameKey {
    sender_slot: Slot,
    frame_number: u32,
    kind: u8,
}

impl FrameKey {
    fn of(header: &DatagramHeader) -> Self {
        FrameKey {
            sender_slot: header.sender_slot,
            frame_number: header.frame_number,
            // Only distinguishes kinds; the wire encoding is the datagram header's.
            kind: match header.media_kind {
                MediaKind::Audio => 0,
                MediaKind::Video => 1,
                _ => u8::MAX,
            },
        }
    }
}

/// Orders partial frames by age: first-fragment time, then arrival.
type AgeKey = (u64, u64);

/// A frame some of whose fragments have arrived.
///
/// Payloads are appended to `buf` in arrival order; `order` and `lens` remember where
/// each fragment went, so a frame that arrived in order is complete as it is and any
/// other is put in order once at completion.
struct Partial {
    age: AgeKey,
    count: u8,
    keyframe: bool,
    /// Bit `i` is set once fragment `i` arrived.
    received: u64,
    /// Number of fragments received; `order[..received_count]` is valid.
    received_count: u8,
    /// Whether fragment `k` was the `k`-th to arrive, for every arrived fragment.
    in_order: bool,
    /// Length of fragment `i`'s payload (valid where `received` has bit `i`).
    lens: [u16; MAX_FRAGMENTS_USIZE],
    /// Fragment indices in arrival order.
    order: [u8; MAX_FRAGMENTS_USIZE],
    buf: Vec<u8>,
    /// Bytes charged against `max_pending_bytes`: `buf.capacity()` when last counted.
    charged: usize,
}

/// What adding a fragment to a partial frame did.
enum Added {
    Duplicate,
    Stored,
    Complete,
}

impl Partial {
    fn new(header: &DatagramHeader, payload_len: usize, age: AgeKey) -> Self {
        let count = usize::from(header.fragment_count);
        // Sized for `fragment`'s near-equal chunks whichever fragment comes first: with
        // chunks of `q` or `q + 1` bytes the total is at most `count * q + count - 1`.
        let estimate = (count * payload_len + count - 1).min(count * MAX_FRAGMENT_PAYLOAD);
        let buf = Vec::with_capacity(estimate);
        Partial {
            age,
            count: header.fragment_count,
            keyframe: header.keyframe,
            received: 0,
            received_count: 0,
            in_order: true,
            lens: [0; MAX_FRAGMENTS_USIZE],
            order: [0; MAX_FRAGMENTS_USIZE],
            charged: buf.capacity(),
            buf,
        }
    }

    fn matches(&self, header: &DatagramHeader) -> bool {
        self.count == header.fragment_count && self.keyframe == header.keyframe
    }

    /// Stores fragment `index` (validated: `< count <= 64`, payload within bounds).
    fn add(&mut self, index: u8, payload: &[u8]) -> Added {
        let bit = 1u64.checked_shl(u32::from(index)).unwrap_or(0);
        if self.received & bit != 0 {
            return Added::Duplicate;
        }
        let (Some(len), Some(slot), Ok(payload_len)) = (
            self.lens.get_mut(usize::from(index)),
            self.order.get_mut(usize::from(self.received_count)),
            u16::try_from(payload.len()),
        ) else {
            // Unreachable for validated fragments; treated as a duplicate (ignored).
            return Added::Duplicate;
        };
        *len = payload_len;
        *slot = index;
        self.in_order &= index == self.received_count;
        self.received |= bit;
        self.received_count += 1;
        self.buf.extend_from_slice(payload);
        if self.received_count == self.count {
            Added::Complete
        } else {
            Added::Stored
        }
    }

    /// The whole ciphertext of a complete frame.
    fn into_ciphertext(self) -> Vec<u8> {
        if self.in_order {
            return self.buf;
        }
        let count = usize::from(self.count);
        let mut starts = [0usize; MAX_FRAGMENTS_USIZE];
        let mut at = 0;
        for &index in self.order.iter().take(count) {
            if let (Some(start), Some(&len)) = (
                starts.get_mut(usize::from(index)),
                self.lens.get(usize::from(index)),
            ) {
                *start = at;
                at += usize::from(len);
            }
        }
        let mut ciphertext = Vec::with_capacity(self.buf.len());
        for (&start, &len) in starts.iter().zip(&self.lens).take(count) {
            if let Some(chunk) = self.buf.get(start..start + usize::from(len)) {
                ciphertext.extend_from_slice(chunk);
            }
        }
        ciphertext
    }
}

/// Reassembles the media frames of one room from their datagrams.
///
/// Keep one per room (meeting) on a connection. Partial frames are keyed by
/// `(sender slot, frame number, media kind)` and dropped after
/// [`ReassemblyConfig::timeout_ms`]; the table is bounded by
/// [`ReassemblyConfig::max_pending_frames`] and [`ReassemblyConfig::max_pending_bytes`].
/// Drive time with [`push`](Self::push) and, while frames are pending,
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout).
///
/// A frame that completed forgets its fragments: a stray duplicate fragment arriving
/// afterwards starts a new partial frame, which never completes and expires.
///
/// # Run loop
/// For each datagram of the room: decode its header, [`push`](Self::push) it with the
/// current time, and decrypt each frame it completes; when no datagram comes, call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout) so
/// that abandoned partial frames are freed.
///
/// ```
/// use conclave_core::media::{self, Reassembler, ReassemblyConfig};
/// use conclave_proto::datagram::{DatagramHeader, MediaKind, RoomHandle};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ciphertext = vec![0x5a; 3_000]; // an SFrame ciphertext
/// let datagrams = media::fragment(RoomHandle(9), MediaKind::Video, true, 42, &ciphertext, 1_200)?;
/// assert!(datagrams.len() > 1);
///
/// let mut reassembler = Reassembler::new(ReassemblyConfig::default());
/// let mut now_ms = 1_000;
/// let mut frames = Vec::new();
/// for datagram in datagrams.iter().rev() { // any order
///     let (header, payload) = DatagramHeader::decode(datagram)?;
///     frames.extend(reassembler.push(&header, payload, now_ms));
///     now_ms += 1;
/// }
/// assert_eq!(frames.len(), 1);
/// assert_eq!(frames[0].ciphertext, ciphertext);
/// if let Some(at) = reassembler.poll_timeout() {
///     reassembler.handle_timeout(at); // nothing pending here, so never reached
/// }
/// assert_eq!(reassembler.pending_frames(), 0);
/// # Ok(())
/// # }
/// ```
pub struct Reassembler {
    config: ReassemblyConfig,
    by_key: BTreeMap<FrameKey, Partial>,
    by_age: BTreeMap<AgeKey, FrameKey>,
    /// Sum of `charged` over `by_key`.
    pending_bytes: usize,
    /// Arrival sequence number of the next new partial frame.
    next_seq: u64,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// An empty reassembler with the given bounds.
    #[must_use]
    pub fn new(config: ReassemblyConfig) -> Self {
        Reassembler {
            config,
            by_key: BTreeMap::new(),
            by_age: BTreeMap::new(),
            pending_bytes: 0,
            next_seq: 0,
            stats: ReassemblyStats::default(),
        }
    }

    /// Feeds one received datagram, split by `DatagramHeader::decode` into `header` and
    /// `payload`, at time `now_ms`. Returns the frame once its last missing fragment
    /// arrived; a single-fragment frame is returned at once.
    ///
    /// First drops partial frames whose timeout passed at `now_ms`. Then:
    /// * a fragment that disagrees with the pending frame of its key (fragment count or
    ///   keyframe flag) drops that frame (counted `inconsistent`) and starts it over;
    /// * a fragment that already arrived is ignored (counted `duplicates`);
    /// * a new frame that would exceed the frame or byte bound evicts the oldest partial
    ///   frames first (counted `evicted`);
    /// * a header with fragment fields out of range or a payload over
    ///   [`MAX_FRAGMENT_PAYLOAD`] bytes is ignored (counted `inconsistent`).
    pub fn push(
        &mut self,
        header: &DatagramHeader,
        payload: &[u8],
        now_ms: u64,
    ) -> Option<AssembledFrame> {
        self.push_ref(header, payload, now_ms)
            .map(FrameRef::into_assembled)
    }

    /// [`Reassembler::push`] for every datagram but a well-formed single-datagram
    /// frame (which [`Reassembler::push_ref`] completes without a copy).
    fn push_fragment(
        &mut self,
        header: &DatagramHeader,
        payload: &[u8],
        now_ms: u64,
    ) -> Option<AssembledFrame> {
        self.handle_timeout(now_ms);
        let (index, count) = (header.fragment_index, header.fragment_count);
        if count == 0 || count > MAX_FRAGMENTS || index >= count {
            self.stats.inconsistent += 1;
            return None;
        }
        if payload.len() > MAX_FRAGMENT_PAYLOAD {
            self.stats.inconsistent += 1;
            return None;
        }
        let key = FrameKey::of(header);
        let partial = match self.by_key.get_mut(&key) {
            Some(partial) if partial.matches(header) => partial,
            existing => {
                if existing.is_some() {
                    self.remove(&key);
                    self.stats.inconsistent += 1;
                }
                return self.start(key, header, payload, now_ms);
            }
        };
        match partial.add(index, payload) {
            Added::Duplicate => {
                self.stats.duplicates += 1;
                None
            }
            Added::Complete => {
                let partial = self.remove(&key)?;
                Some(self.complete(header, partial.into_ciphertext()))
            }
            Added::Stored => {
                // The buffer grows only if fragments are larger than the first suggested.
                let capacity = partial.buf.capacity();
                if capacity != partial.charged {
                    self.pending_bytes = self.pending_bytes - partial.charged + capacity;
                    partial.charged = capacity;
                    self.enforce_byte_bound(key);
                }
                None
            }
        }
    }

    /// Starts a new partial frame with its first fragment.
    fn start(
        &mut self,
        key: FrameKey,
        header: &DatagramHeader,
        payload: &[u8],
        now_ms: u64,
    ) -> Option<AssembledFrame> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut partial = Partial::new(header, payload.len(), (now_ms, seq));
        if self.config.max_pending_frames == 0 || partial.charged > self.config.max_pending_bytes {
            // The new frame alone exceeds a bound: evicting others would not help.
            self.stats.evicted += 1;
            return None;
        }
        // A first fragment is never a duplicate, nor complete (its count is at least 2).
        let _ = partial.add(header.fragment_index, payload);
        while self.by_key.len() >= self.config.max_pending_frames
            || self.pending_bytes + partial.charged > self.config.max_pending_bytes
        {
            if !self.evict_oldest(None) {
                break;
            }
        }
        self.pending_bytes += partial.charged;
        self.by_age.insert(partial.age, key);
        self.by_key.insert(key, partial);
        None
    }

    /// Evicts the oldest frames other than `keep` until the byte bound holds; if `keep`
    /// alone exceeds it, evicts `keep` too.
    fn enforce_byte_bound(&mut self, keep: FrameKey) {
        while self.pending_bytes > self.config.max_pending_bytes {
            if !self.evict_oldest(Some(keep)) {
                if self.remove(&keep).is_some() {
                    self.stats.evicted += 1;
                }
                return;
            }
        }
    }

    /// Evicts the oldest partial frame except `keep`; false if there is none.
    fn evict_oldest(&mut self, keep: Option<FrameKey>) -> bool {
        let Some(key) = self
            .by_age
            .values()
            .find(|&&key| Some(key) != keep)
            .copied()
        else {
            return false;
        };
        self.remove(&key);
        self.stats.evicted += 1;
        true
    }

    /// Removes a partial frame from both tables and releases its bytes.
    fn remove(&mut self, key: &FrameKey) -> Option<Partial> {
        let partial = self.by_key.remove(key)?;
        self.by_age.remove(&partial.age);
        self.pending_bytes -= partial.charged;
        Some(partial)
    }

    /// Fast path of a single-fragment frame: nothing to store. A partial frame under
    /// the same key disagrees on the fragment count.
    fn single(&mut self, key: &FrameKey) {
        if !self.by_key.is_empty() && self.remove(key).is_some() {
            self.stats.inconsistent += 1;
        }
    }

    fn complete(&mut self, header: &DatagramHeader, ciphertext: Vec<u8>) -> AssembledFrame {
        self.stats.completed += 1;
        AssembledFrame {
            sender_slot: header.sender_slot,
            kind: header.media_kind,
            keyframe: header.keyframe,
            frame_number: header.frame_number,
            ciphertext,
        }
    }

    /// Drops every partial frame whose timeout passed at `now_ms` (counted `expired`):
    /// those whose first fragment arrived at or before `now_ms - timeout_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some((&(started_ms, _), &key)) = self.by_age.first_key_value() {
            if now_ms < started_ms.saturating_add(self.config.timeout_ms) {
                return;
            }
            self.remove(&key);
            self.stats.expired += 1;
        }
    }

    /// When the oldest partial frame expires: the time at which to call
    /// [`handle_timeout`](Self::handle_timeout), or `None` if no frame is pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.by_age
            .first_key_value()
            .map(|(&(started_ms, _), _)| started_ms.saturating_add(self.config.timeout_ms))
    }

    /// Number of partial frames held.
    #[must_use]
    pub fn pending_frames(&self) -> usize {
        self.by_key.len()
    }

    /// Bytes of fragment buffers held (allocated capacity), at most
    /// [`ReassemblyConfig::max_pending_bytes`].
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Counters since creation.
    #[must_use]
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// The bounds this reassembler was created with.
    #[must_use]
    pub fn config(&self) -> ReassemblyConfig {
        self.config
    }
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(ReassemblyConfig::default())
    }
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("config", &self.config)
            .field("pending_frames", &self.by_key.len())
            .field("pending_bytes", &self.pending_bytes)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
