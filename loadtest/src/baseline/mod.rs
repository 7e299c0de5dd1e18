//! The `--baseline` run: the same fan-out shape through a bare QUIC datagram relay.
//!
//! The relay (`relay`) is a quinn endpoint on its own runtime that puts each
//! connection in the group (meeting) named by its first message and forwards every
//! datagram it receives, as is, to every other connection of the group. It has no
//! directory, rooms, authentication, header parsing or congestion policy, so its CPU
//! per forwarded datagram is what QUIC itself (TLS record protection, packetisation,
//! UDP system calls, quinn's connection state machines) costs on this machine: the
//! transport's limit, which no SFU built on the same transport can beat. The report
//! divides it by the SFU's CPU per forwarded datagram to get the SFU's forwarding
//! efficiency.
//!
//! The clients are bare too (`peer`): one quinn endpoint and connection each (as a
//! real SDK client has), on the caller's runtime, with the SDK's and the SFU's
//! datagram-relevant transport settings (`tls`). Senders send fixed-size frames at
//! their frame rate; video frames are split into datagrams of at most 1100 bytes.
//! Every datagram carries its stream, sequence number and send time (`wire`), so
//! receivers measure loss and one-way latency exactly: after a one-second warm-up each
//! sender publishes the sequence numbers its measured window starts and ends at, and a
//! frame counts as received when it (all of its fragments) arrived inside the window.

mod peer;
mod relay;
mod tls;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use self::peer::{Client, Phase, SendSpec, StreamWindow, Tally, Window};
use self::relay::{Relay, RelayRuntime};
use self::wire::{HEADER_LEN, MAX_DATAGRAM_BYTES, MAX_FRAGMENT_DATA};
use crate::LoadError;
use crate::probe;
use crate::report::BaselineReport;
use crate::stats::{LatencyHistogram, percentiles_ms};

/// Media runs this long before the measured window opens.
const WARM_UP: Duration = Duration::from_secs(1);

/// After the window closes, receivers wait this long for frames still in flight.
const DRAIN: Duration = Duration::from_millis(500);

/// Clients connecting at the same time.
const CONNECT_CONCURRENCY: usize = 64;

/// Extra time, beyond one frame period, senders get to notice the window closed and
/// receivers get to return their counts.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Largest number of clients (participants in all meetings).
const MAX_CLIENTS: usize = 100_000;

/// Largest frame rate.
const MAX_FPS: u32 = 1_000;

/// Largest video frame: its fragment count must fit the header's `u16`.
const MAX_VIDEO_FRAME_BYTES: usize = MAX_FRAGMENT_DATA * u16::MAX as usize;

/// Longest measured window.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The fan-out shape to reproduce.
#[derive(Debug, Clone)]
pub struct BaselineShape {
    /// Meetings (relay groups).
    pub meetings: usize,
    /// Participants per meeting (at least 2).
    pub participants: usize,
    /// Per meeting: how many participants send audio (the first ones).
    pub audio_senders: usize,
    /// Audio frames per second per sender.
    pub audio_fps: u32,
    /// Payload bytes per audio frame: the whole datagram, header included (24 to 1100).
    pub audio_bytes: usize,
    /// Per meeting: how many participants send video (the first ones, so they overlap
    /// the audio senders); 0 = none.
    pub video_senders: usize,
    /// Bytes per video frame, split into datagrams of at most 1100 bytes each (every
    /// one carrying a 24-byte header besides its share of the frame).
    pub video_frame_bytes: usize,
    /// Video frames per second per sender.
    pub video_fps: u32,
    /// Length of the measured window.
    pub duration: std::time::Duration,
    /// Worker threads of the relay's own runtime.
    pub relay_threads: usize,
    /// Pack window for small datagrams (zero: forward each as it comes); see
    /// `relay`.
    pub pack: std::time::Duration,
}

/// Runs `shape` through a bare QUIC relay and measures it. The relay runs on its own
/// runtime (threads named `relay-rt`, whose CPU is reported); the clients run on the
/// caller's. Connects every client (each within 10 s), runs media for a one-second
/// warm-up, measures for `shape.duration`, waits 500 ms for stragglers and stops.
///
/// # Errors
///
/// [`LoadError::Options`] for an impossible shape, [`LoadError::Setup`] or
/// [`LoadError::Start`] when the relay cannot start, [`LoadError::Participant`] when a
/// client cannot connect and join in time.
pub async fn run_baseline(shape: &BaselineShape) -> Result<BaselineReport, LoadError> {
    let layout = Layout::new(shape)?;
    let (server_config, client_config) = tls::configs()?;
    let runtime = RelayRuntime::new(shape.relay_threads)?;
    let result = match Relay::start(&runtime, server_config, shape.meetings, shape.pack).await {
        Ok(relay) => {
            let result = measure(shape, &layout, &relay, client_config).await;
            relay.close();
            if relay.send_errors() > 0 {
                tracing::debug!(
                    refused = relay.send_errors(),
                    "baseline relay forwards refused"
                );
            }
            result
        }
        Err(e) => Err(e),
    };
    runtime.shutdown().await;
    result
}

/// Stream ids: meeting-major; within a meeting the audio senders' streams, then the
/// video senders'.
#[derive(Debug, Clone, Copy)]
struct Layout {
    meetings: usize,
    participants: usize,
    audio_senders: usize,
    video_senders: usize,
}

impl Layout {
    /// Validates `shape`.
    fn new(shape: &BaselineShape) -> Result<Layout, LoadError> {
        let bad = |msg: String| Err(LoadError::Options(format!("baseline: {msg}")));
        let clients = shape.meetings.checked_mul(shape.participants);
        if shape.meetings == 0 || shape.participants < 2 {
            return bad("needs at least one meeting of at least 2 participants".into());
        }
        if clients.is_none_or(|c| c > MAX_CLIENTS) {
            return bad(format!("at most {MAX_CLIENTS} participants in all"));
        }
        if shape.audio_senders > shape.participants || shape.video_senders > shape.participants {
            return bad("more senders than participants".into());
        }
        if shape.audio_senders + shape.video_senders == 0 {
            return bad("no senders".into());
        }
        if shape.audio_senders > 0 {
            if !(1..=MAX_FPS).contains(&shape.audio_fps) {
                return bad(format!("audio fps must be 1 to {MAX_FPS}"));
            }
            if !(HEADER_LEN..=MAX_DATAGRAM_BYTES).contains(&shape.audio_bytes) {
                return bad(format!(
                    "audio frames must be {HEADER_LEN} to {MAX_DATAGRAM_BYTES} bytes"
                ));
            }
        }
        if shape.video_senders > 0 {
            if !(1..=MAX_FPS).contains(&shape.video_fps) {
                return bad(format!("video fps must be 1 to {MAX_FPS}"));
            }
            if !(1..=MAX_VIDEO_FRAME_BYTES).contains(&shape.video_frame_bytes) {
                return bad(format!(
                    "video frames must be 1 to {MAX_VIDEO_FRAME_BYTES} bytes"
                ));
            }
        }
        if shape.duration.is_zero() || shape.duration > MAX_DURATION {
            return bad("the duration must be positive and at most a day".into());
        }
        if shape.relay_threads == 0 {
            return bad("the relay needs at least one thread".into());
        }
        Ok(Layout {
            meetings: shape.meetings,
            participants: shape.participants,
            audio_senders: shape.audio_senders,
            video_senders: shape.video_senders,
        })
    }

    /// Streams per meeting.
    fn per_meeting(&self) -> usize {
        self.audio_senders + self.video_senders
    }

    /// Streams in all.
    fn streams(&self) -> usize {
        self.meetings * self.per_meeting()
    }

    /// Id of the first stream of `meeting` (ids fit `u32`: validated in [`Layout::new`]).
    fn first_stream(&self, meeting: usize) -> u32 {
        u32::try_from(meeting * self.per_meeting()).unwrap_or(u32::MAX)
    }
}

/// Connects the clients, runs the phases and adds up the counts.
async fn measure(
    shape: &BaselineShape,
    layout: &Layout,
    relay: &Relay,
    client_config: quinn::ClientConfig,
) -> Result<BaselineReport, LoadError> {
    let clients = connect_all(layout, relay, client_config).await?;
    let window = Arc::new(Window::new(layout.streams()));
    let running = Running {
        window: Arc::clone(&window),
        clients,
    };
    let clients = &running.clients;

    let mut receivers = Vec::with_capacity(clients.len());
    let mut senders = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let meeting = index / layout.participants;
        let participant = index % layout.participants;
        let first = layout.first_stream(meeting);
        receivers.push(tokio::spawn(peer::receive(
            client.connection.clone(),
            Arc::clone(&window),
            first,
            layout.per_meeting(),
        )));
        let offset = |i: usize| first.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
        if participant < layout.audio_senders {
            let spec = SendSpec {
                stream: offset(participant),
                fps: shape.audio_fps,
                frame_bytes: shape.audio_bytes,
                video: false,
            };
            senders.push(tokio::spawn(peer::send(
                client.connection.clone(),
                Arc::clone(&window),
                spec,
            )));
        }
        if participant < layout.video_senders {
            let spec = SendSpec {
                stream: offset(layout.audio_senders + participant),
                fps: shape.video_fps,
                frame_bytes: shape.video_frame_bytes,
                video: true,
            };
            senders.push(tokio::spawn(peer::send(
                client.connection.clone(),
                Arc::clone(&window),
                spec,
            )));
        }
    }

    tokio::time::sleep(WARM_UP).await;
    let threads = Threads::new();
    let before = Counters::read(&threads, relay, clients);
    window.set_phase(Phase::Measured);
    tokio::time::sleep(shape.duration).await;
    window.set_phase(Phase::Ended);
    let after = Counters::read(&threads, relay, clients);

    let slowest_period = Duration::from_secs(1) / shape.audio_fps.min(shape.video_fps).max(1);
    let (refused, unfinished) = join_all(senders, slowest_period + STOP_GRACE).await;
    tokio::time::sleep(DRAIN).await;
    drop(running);
    let (tallies, lost_tallies) = join_all(receivers, STOP_GRACE).await;
    if unfinished + lost_tallies > 0 || refused.iter().sum::<u64>() > 0 {
        tracing::warn!(
            unfinished_senders = unfinished,
            lost_receivers = lost_tallies,
            refused_datagrams = refused.iter().sum::<u64>(),
            "baseline run incomplete"
        );
    }

    Ok(report(layout, &window, &tallies, &after.since(&before)))
}

/// What the relay and the clients have spent and moved so far.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// CPU seconds of the relay's threads.
    relay_cpu: Option<f64>,
    /// Datagrams the relay forwarded.
    forwarded: u64,
    /// CPU seconds of the clients' runtime threads.
    client_cpu: Option<f64>,
    /// UDP datagrams the clients received.
    client_udp_received: u64,
}

/// The threads whose CPU the run measures.
struct Threads {
    relay: probe::ThreadsCpu,
    clients: probe::ThreadsCpu,
}

impl Threads {
    fn new() -> Self {
        Threads {
            relay: probe::ThreadsCpu::new(relay::THREAD_NAME),
            clients: probe::ThreadsCpu::new(crate::run::CLIENT_THREADS),
        }
    }
}

impl Counters {
    fn read(threads: &Threads, relay: &Relay, clients: &[Client]) -> Self {
        Counters {
            relay_cpu: threads.relay.read(),
            forwarded: relay.forwarded(),
            client_cpu: threads.clients.read(),
            client_udp_received: clients
                .iter()
                .map(|c| c.connection.stats().udp_rx.datagrams)
                .sum(),
        }
    }

    /// The difference from `earlier`.
    fn since(&self, earlier: &Self) -> Self {
        let cpu = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some((a - b).max(0.0)),
            _ => None,
        };
        Counters {
            relay_cpu: cpu(self.relay_cpu, earlier.relay_cpu),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            client_cpu: cpu(self.client_cpu, earlier.client_cpu),
            client_udp_received: self
                .client_udp_received
                .saturating_sub(earlier.client_udp_received),
        }
    }
}

/// The clients while media runs. Dropped (at the end of the run, or with the run's
/// future if the caller cancels it) it closes the window, so every sender stops at
/// its next tick, and closes every client, so every receiver returns.
struct Running {
    window: Arc<Window>,
    clients: Vec<Client>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.window.set_phase(Phase::Ended);
        for client in &self.clients {
            // Closing the endpoint closes its one connection, which ends its receiver.
            client.endpoint.close(0u32.into(), b"baseline done");
        }
    }
}

/// Connects every client, [`CONNECT_CONCURRENCY`] at a time, in (meeting, participant)
/// order.
async fn connect_all(
    layout: &Layout,
    relay: &Relay,
    config: quinn::ClientConfig,
) -> Result<Vec<Client>, LoadError> {
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let mut pending = Vec::with_capacity(layout.meetings * layout.participants);
    for meeting in 0..layout.meetings {
        for participant in 0..layout.participants {
            let gate = Arc::clone(&gate);
            let config = config.clone();
            let addr = relay.addr();
            let group = u32::try_from(meeting).unwrap_or(u32::MAX);
            pending.push(tokio::spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = gate.acquire_owned().await;
                peer::connect(
                    addr,
                    config,
                    group,
                    format!("baseline m{meeting}p{participant}"),
                )
                .await
            }));
        }
    }
    let mut clients = Vec::with_capacity(pending.len());
    let mut pending = pending.into_iter();
    while let Some(task) = pending.next() {
        let client = match task.await {
            Ok(result) => result,
            Err(e) => Err(LoadError::Setup(format!("baseline connect task: {e}"))),
        };
        match client {
            Ok(client) => clients.push(client),
            Err(e) => {
                pending.for_each(|t| t.abort());
                return Err(e);
            }
        }
    }
    Ok(clients)
}

/// Awaits every task until `deadline` from now; aborts the rest. Returns the outputs
/// of the tasks that finished and how many did not.
async fn join_all<T>(tasks: Vec<JoinHandle<T>>, deadline: Duration) -> (Vec<T>, usize) {
    let until = tokio::time::Instant::now() + deadline;
    let mut done = Vec::with_capacity(tasks.len());
    let mut missing = 0;
    for mut task in tasks {
        match tokio::time::timeout_at(until, &mut task).await {
            Ok(Ok(output)) => done.push(output),
            Ok(Err(_)) => missing += 1,
            Err(_) => {
                task.abort();
                missing += 1;
            }
        }
    }
    (done, missing)
}

/// Adds up the receivers' counts against what the senders published.
fn report(
    layout: &Layout,
    window: &Window,
    tallies: &[Tally],
    measured: &Counters,
) -> BaselineReport {
    let (cpu_seconds, forwarded) = (measured.relay_cpu, measured.forwarded);
    let sent: Vec<u64> = window.streams().iter().map(StreamWindow::sent).collect();
    let frames_sent: u64 = sent.iter().sum();
    // Each stream's frames are expected by every participant of its meeting but its
    // sender (receivers whose counts were lost included: their frames count as lost).
    let others = u64::try_from(layout.participants - 1).unwrap_or(u64::MAX);
    let frames_expected = frames_sent.saturating_mul(others);
    let mut frames_received = 0u64;
    let mut latency = LatencyHistogram::default();
    for tally in tallies {
        let first = usize::try_from(tally.first_stream).unwrap_or(usize::MAX);
        for (i, &count) in tally.frames.iter().enumerate() {
            let expected = sent.get(first.saturating_add(i)).copied().unwrap_or(0);
            frames_received += count.min(expected);
        }
        latency.merge(&tally.latency);
    }
    #[allow(clippy::cast_precision_loss)] // frame counts far below 2^52
    let loss_ratio = if frames_expected == 0 {
        0.0
    } else {
        (1.0 - frames_received as f64 / frames_expected as f64).clamp(0.0, 1.0)
    };
    #[allow(clippy::cast_precision_loss)] // datagram counts far below 2^52
    let per_datagram = cpu_seconds
        .filter(|_| forwarded > 0)
        .map(|s| s * 1e6 / forwarded as f64);
    let udp = measured.client_udp_received;
    #[allow(clippy::cast_precision_loss)] // frame and datagram counts far below 2^52
    let client_per = |count: u64| {
        measured
            .client_cpu
            .filter(|_| count > 0)
            .map(|s| s * 1e6 / count as f64)
    };
    BaselineReport {
        frames_sent,
        frames_received,
        frames_expected,
        loss_ratio,
        latency_ms: percentiles_ms(&latency),
        relay_cpu_seconds: cpu_seconds.unwrap_or(0.0),
        datagrams_forwarded: forwarded,
        relay_cpu_us_per_forwarded_datagram: per_datagram,
        client_cpu_seconds: measured.client_cpu,
        client_cpu_us_per_received_frame: client_per(frames_received),
        client_udp_datagrams_received: udp,
        client_cpu_us_per_udp_datagram_received: client_per(udp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BaselineShape {
        BaselineShape {
            meetings: 1,
            participants: 3,
            audio_senders: 2,
            audio_fps: 50,
            audio_bytes: 120,
            video_senders: 0,
            video_frame_bytes: 0,
            video_fps: 0,
            duration: Duration::from_secs(1),
            relay_threads: 1,
            pack: Duration::ZERO,
        }
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let refused = |shape: BaselineShape| {
            assert!(
                matches!(Layout::new(&shape), Err(LoadError::Options(_))),
                "{shape:?}"
            );
        };
        assert!(Layout::new(&tiny()).is_ok());
        refused(BaselineShape {
            participants: 1,
            ..tiny()
        });
        refused(BaselineShape {
            meetings: 0,
            ..tiny()
        });
        refused(BaselineShape {
            audio_senders: 4,
            ..tiny()
        });
        refused(BaselineShape {
            audio_senders: 0,
            ..tiny()
        });
        refused(BaselineShape {
            audio_bytes: 23,
            ..tiny()
        });
        refused(BaselineShape {
            audio_bytes: 1101,
            ..tiny()
        });
        refused(BaselineShape {
            audio_fps: 0,
            ..tiny()
        });
        refused(BaselineShape {
            video_senders: 1,
            ..tiny()
        });
        refused(BaselineShape {
            duration: Duration::ZERO,
            ..tiny()
        });
        refused(BaselineShape {
            relay_threads: 0,
            ..tiny()
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_flow_through_the_bare_relay() {
        let report = run_baseline(&tiny()).await.unwrap();
        assert!(report.frames_sent > 0, "{report:?}");
        assert!(report.frames_expected > 0, "{report:?}");
        assert!(report.frames_received > 0, "{report:?}");
        assert!((0.0..=1.0).contains(&report.loss_ratio), "{report:?}");
        assert!(report.latency_ms.count > 0, "{report:?}");
        // 2 senders, each heard by the 2 other participants.
        assert_eq!(report.frames_expected, report.frames_sent * 2, "{report:?}");
        assert!(report.datagrams_forwarded > 0, "{report:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packed_frames_flow_through_the_bare_relay_and_the_clients_are_measured() {
        let report = run_baseline(&BaselineShape {
            pack: Duration::from_millis(2),
            ..tiny()
        })
        .await
        .unwrap();
        // Held frames reach the receivers only through the flush task.
        assert!(report.frames_received > 0, "{report:?}");
        assert!(report.latency_ms.count > 0, "{report:?}");
        assert!(report.client_udp_datagrams_received > 0, "{report:?}");
        assert!(report.client_cpu_seconds.is_some(), "{report:?}");
        assert!(
            report.client_cpu_us_per_udp_datagram_received.is_some(),
            "{report:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn video_frames_are_reassembled() {
        let shape = BaselineShape {
            audio_senders: 1,
            video_senders: 1,
            video_frame_bytes: 3_000,
            video_fps: 15,
            ..tiny()
        };
        let report = run_baseline(&shape).await.unwrap();
        assert!(report.frames_received > 0, "{report:?}");
        assert!(
            report.frames_received <= report.frames_expected,
            "{report:?}"
        );
        assert!(report.latency_ms.count > 0, "{report:?}");
    }
}
