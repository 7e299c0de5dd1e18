//! The bare clients: one quinn endpoint and connection each, on the caller's runtime.
//! Senders tick at their frame rate and send the [`Header`] datagrams; receivers count
//! the frames of the measured window and their one-way latency.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::time::{Instant, MissedTickBehavior};

use super::tls::SERVER_NAME;
use super::wire::{HEADER_LEN, Header, JOIN_ACK, MAX_FRAGMENT_DATA, join_message};
use crate::LoadError;
use crate::stats::LatencyHistogram;

/// Bound on connecting and joining one client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Incomplete video frames older than this are forgotten, µs.
const FRAGMENT_TTL_US: u64 = 2_000_000;

/// How often the incomplete-frame table is swept, µs.
const FRAGMENT_SWEEP_US: u64 = 500_000;

/// Most incomplete video frames one receiver tracks; fragments of further frames are
/// ignored until a sweep makes room.
const MAX_PENDING_FRAMES: usize = 65_536;

/// Seed of the senders' phase offsets (one stream of it per stream id).
const PHASE_SEED: u64 = 0x6261_7365_6c69_6e65;

/// Phase of a run, as every sender sees it at each tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Connected, sending, not measured.
    WarmUp = 0,
    /// The measured window.
    Measured = 1,
    /// Senders stop at their next tick.
    Ended = 2,
}

/// Where one stream's measured window begins and ends: sequence numbers, published by
/// the stream's sender itself. The sender stores `start` before it sends the frame
/// numbered `start` and `end` instead of sending the frame numbered `end`, so a
/// receiver holding frame `seq` of the window sees `start <= seq` (and `seq < end`),
/// and every frame the sender counts as sent in the window is one receivers may count.
#[derive(Debug)]
pub(crate) struct StreamWindow {
    start: AtomicU64,
    end: AtomicU64,
}

impl StreamWindow {
    /// Frames the stream sent in its window (0 if its sender never reached it).
    pub(crate) fn sent(&self) -> u64 {
        let start = self.start.load(Ordering::Acquire);
        let end = self.end.load(Ordering::Acquire);
        if start == u64::MAX || end == u64::MAX {
            0
        } else {
            end.saturating_sub(start)
        }
    }

    /// Whether frame `seq` belongs to the window.
    fn contains(&self, seq: u64) -> bool {
        seq >= self.start.load(Ordering::Acquire) && seq < self.end.load(Ordering::Acquire)
    }
}

/// State shared by the coordinator, senders and receivers.
#[derive(Debug)]
pub(crate) struct Window {
    phase: AtomicU8,
    base: Instant,
    streams: Vec<StreamWindow>,
}

impl Window {
    /// A window in [`Phase::WarmUp`] for `streams` streams.
    pub(crate) fn new(streams: usize) -> Window {
        Window {
            phase: AtomicU8::new(Phase::WarmUp as u8),
            base: Instant::now(),
            streams: (0..streams)
                .map(|_| StreamWindow {
                    start: AtomicU64::new(u64::MAX),
                    end: AtomicU64::new(u64::MAX),
                })
                .collect(),
        }
    }

    /// Moves to `phase`.
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::WarmUp,
            1 => Phase::Measured,
            _ => Phase::Ended,
        }
    }

    /// Every stream's window.
    pub(crate) fn streams(&self) -> &[StreamWindow] {
        &self.streams
    }

    /// µs since the base instant.
    fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A connected bare client.
#[derive(Debug)]
pub(crate) struct Client {
    /// Its endpoint (kept alive with the connection).
    pub(crate) endpoint: quinn::Endpoint,
    /// Its connection to the relay, in its group.
    pub(crate) connection: quinn::Connection,
}

/// Binds a client endpoint, connects to the relay and joins group `group`, all within
/// [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(
    relay: SocketAddr,
    config: quinn::ClientConfig,
    group: u32,
    name: String,
) -> Result<Client, LoadError> {
    let fail = |action: &'static str, reason: String| LoadError::Participant {
        participant: name.clone(),
        action,
        reason,
    };
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(|e| fail("bind a UDP socket", e.to_string()))?;
    endpoint.set_default_client_config(config);
    let joined = async {
        let connection = endpoint
            .connect(relay, SERVER_NAME)
            .map_err(|e| fail("connect", e.to_string()))?
            .await
            .map_err(|e| fail("connect", e.to_string()))?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| fail("join", e.to_string()))?;
        send.write_all(&join_message(group))
            .await
            .map_err(|e| fail("join", e.to_string()))?;
        send.finish().map_err(|e| fail("join", e.to_string()))?;
        let ack = recv
            .read_to_end(1)
            .await
            .map_err(|e| fail("join", e.to_string()))?;
        if ack != [JOIN_ACK] {
            return Err(fail("join", format!("unexpected answer {ack:?}")));
        }
        Ok(connection)
    };
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, joined)
        .await
        .map_err(|_| fail("connect", format!("no join within {CONNECT_TIMEOUT:?}")))??;
    Ok(Client {
        endpoint,
        connection,
    })
}

/// What one sender sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendSpec {
    /// Its stream id.
    pub(crate) stream: u32,
    /// Frames per second (at least 1).
    pub(crate) fps: u32,
    /// Audio: the datagram's size, header included. Video: the frame's bytes, split
    /// over fragments of at most [`MAX_FRAGMENT_DATA`] bytes, each behind a header.
    pub(crate) frame_bytes: usize,
    /// Whether this is a video stream.
    pub(crate) video: bool,
}

impl SendSpec {
    /// Datagram sizes of one frame, in fragment order.
    fn fragment_sizes(&self) -> Vec<usize> {
        if !self.video {
            return vec![self.frame_bytes.max(HEADER_LEN)];
        }
        let mut left = self.frame_bytes.max(1);
        let mut sizes = Vec::with_capacity(left.div_ceil(MAX_FRAGMENT_DATA));
        while left > 0 {
            let chunk = left.min(MAX_FRAGMENT_DATA);
            sizes.push(HEADER_LEN + chunk);
            left -= chunk;
        }
        sizes
    }
}

/// Sends `spec`'s frames at its rate, with a random phase, until [`Phase::Ended`];
/// returns the datagrams quinn refused.
pub(crate) async fn send(
    connection: quinn::Connection,
    window: Arc<Window>,
    spec: SendSpec,
) -> u64 {
    let Some(slot) = usize::try_from(spec.stream)
        .ok()
        .and_then(|i| window.streams.get(i))
    else {
        return 0;
    };
    let sizes = fragment_sizes_u16(&spec);
    let period = Duration::from_secs(1) / spec.fps.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(PHASE_SEED ^ u64::from(spec.stream));
    #[allow(clippy::cast_precision_loss)] // 53 random bits → a fraction of [0, 1)
    let fraction = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut ticker = tokio::time::interval_at(Instant::now() + period.mul_f64(fraction), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let mut in_window = false;
    let mut refused = 0u64;
    loop {
        ticker.tick().await;
        match window.phase() {
            Phase::WarmUp => {}
            Phase::Measured => {
                if !in_window {
                    slot.start.store(seq, Ordering::Release);
                    in_window = true;
                }
            }
            Phase::Ended => {
                if !in_window {
                    // Never ticked inside the window: an empty one.
                    slot.start.store(seq, Ordering::Release);
                }
                slot.end.store(seq, Ordering::Release);
                return refused;
            }
        }
        let sent_us = window.now_us();
        for (fragment, (size, fragments)) in (0u16..).zip(sizes.iter().copied()) {
            let header = Header {
                stream: spec.stream,
                seq,
                sent_us,
                fragment,
                fragments,
            };
            if connection.send_datagram(header.datagram(size)).is_err() {
                refused += 1;
            }
        }
        seq += 1;
    }
}

/// [`SendSpec::fragment_sizes`] with each size's fragment count as a `u16` (the count
/// is validated against `u16::MAX` before the run; larger frames are cut to it).
fn fragment_sizes_u16(spec: &SendSpec) -> Vec<(usize, u16)> {
    let mut sizes = spec.fragment_sizes();
    sizes.truncate(usize::from(u16::MAX));
    let count = u16::try_from(sizes.len()).unwrap_or(u16::MAX);
    sizes.into_iter().map(|s| (s, count)).collect()
}

/// What one receiver counted.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Id of the first stream of the receiver's group.
    pub(crate) first_stream: u32,
    /// Frames of the measured window received, per stream of the receiver's group
    /// (index = stream id − the group's first stream id).
    pub(crate) frames: Vec<u64>,
    /// Their one-way latency, µs.
    pub(crate) latency: LatencyHistogram,
    /// Datagrams that were not a frame of this group.
    pub(crate) ignored: u64,
}

/// Receives until the connection closes; counts complete frames of the measured
/// window from streams `first_stream .. first_stream + streams`.
pub(crate) async fn receive(
    connection: quinn::Connection,
    window: Arc<Window>,
    first_stream: u32,
    streams: usize,
) -> Tally {
    let mut tally = Tally {
        first_stream,
        frames: vec![0; streams],
        ..Tally::default()
    };
    let mut pending = PendingFrames::default();
    while let Ok(datagram) = connection.read_datagram().await {
        let Some(header) = Header::parse(&datagram) else {
            tally.ignored += 1;
            continue;
        };
        let local = header
            .stream
            .checked_sub(first_stream)
            .and_then(|i| usize::try_from(i).ok());
        let (Some(count), Some(slot)) = (
            local.and_then(|i| tally.frames.get_mut(i)),
            usize::try_from(header.stream)
                .ok()
                .and_then(|i| window.streams.get(i)),
        ) else {
            tally.ignored += 1;
            continue;
        };
        if !slot.contains(header.seq) {
            continue;
        }
        let now_us = window.now_us();
        if header.fragments == 1 || pending.complete(&header, now_us) {
            *count += 1;
            tally
                .latency
                .record_us(now_us.saturating_sub(header.sent_us));
        }
    }
    tally
}

/// Video frames with some but not all fragments received: fragments seen and when the
/// first arrived, µs.
#[derive(Debug, Default)]
struct PendingFrames {
    frames: HashMap<(u32, u64), (u16, u64)>,
    swept_us: u64,
}

impl PendingFrames {
    /// Counts one fragment; whether it completed its frame.
    fn complete(&mut self, header: &Header, now_us: u64) -> bool {
        if now_us.saturating_sub(self.swept_us) >= FRAGMENT_SWEEP_US {
            self.frames
                .retain(|_, (_, first)| now_us.saturating_sub(*first) < FRAGMENT_TTL_US);
            self.swept_us = now_us;
        }
        let key = (header.stream, header.seq);
        if let Some((seen, _)) = self.frames.get_mut(&key) {
            *seen = seen.saturating_add(1);
            if *seen >= header.fragments {
                self.frames.remove(&key);
                return true;
            }
        } else if self.frames.len() < MAX_PENDING_FRAMES {
            self.frames.insert(key, (1, now_us));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64, fragment: u16, fragments: u16) -> Header {
        Header {
            stream: 1,
            seq,
            sent_us: 0,
            fragment,
            fragments,
        }
    }

    #[test]
    fn video_frames_are_split_at_the_fragment_limit() {
        let video = |frame_bytes| SendSpec {
            stream: 0,
            fps: 30,
            frame_bytes,
            video: true,
        };
        assert_eq!(video(100).fragment_sizes(), [HEADER_LEN + 100]);
        assert_eq!(
            video(MAX_FRAGMENT_DATA * 2 + 5).fragment_sizes(),
            [1100, 1100, HEADER_LEN + 5]
        );
        let audio = SendSpec {
            video: false,
            frame_bytes: 120,
            ..video(0)
        };
        assert_eq!(audio.fragment_sizes(), [120]);
    }

    #[test]
    fn a_frame_completes_with_its_last_fragment_and_stale_ones_expire() {
        let mut p = PendingFrames::default();
        assert!(!p.complete(&header(1, 0, 3), 10));
        assert!(!p.complete(&header(1, 2, 3), 20));
        assert!(p.complete(&header(1, 1, 3), 30));
        assert!(p.frames.is_empty());
        assert!(!p.complete(&header(2, 0, 2), 40));
        // Far later: the sweep forgets frame 2, so its last fragment starts over.
        assert!(!p.complete(&header(2, 1, 2), 40 + FRAGMENT_TTL_US + FRAGMENT_SWEEP_US));
        assert_eq!(p.frames.len(), 1);
    }
}
