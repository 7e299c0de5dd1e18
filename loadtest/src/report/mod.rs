//! The run's report: one serde type with a stable, documented JSON schema
//! (`docs/loadtest.md`), a terminal summary and a self-contained HTML page. The
//! verdict is judged once ([`Verdict::of`]) and rendered by all three.
//!
//! Every duration is in milliseconds (`*_ms`), every rate per second (`*_per_s`).
//! Figures that could not be measured are `null`, never zero.

mod chart;
mod escape;
mod fields;
#[cfg(test)]
mod fixture;
mod html;
mod json;
mod numbers;
mod plots;
mod table;
#[cfg(test)]
mod tests;
mod verdict;

use std::collections::BTreeMap;

use serde::Serialize;

pub use html::render_html;
pub use json::render_json;
pub use table::render_summary;
pub use verdict::{Check, Outcome, Status, Verdict};

/// Version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// Percentiles of a distribution, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

/// What was run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioEcho {
    /// `"embedded"` or the server address.
    pub target: String,
    /// Meetings.
    pub meetings: usize,
    /// Participants per meeting at the start.
    pub participants: usize,
    /// Measured duration, s.
    pub duration_s: f64,
    /// Audio frames per second per sender.
    pub audio_fps: u32,
    /// Audio frame size, bytes.
    pub audio_bytes: usize,
    /// Share of participants sending audio.
    pub senders: f64,
    /// Video senders per meeting.
    pub video_senders: usize,
    /// Video bit rate per sender, kbit/s.
    pub video_kbps: u32,
    /// Video frames per second per sender.
    pub video_fps: u32,
    /// Joins per second during the ramp.
    pub ramp: f64,
    /// Churn events per minute.
    pub churn: f64,
    /// Whether key leaders wrapped their next Rekey ahead of time (not
    /// `--no-rekey-preparation`).
    pub rekey_preparation: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Worker threads of the in-process SFU (and of the baseline relay).
    pub sfu_threads: usize,
    /// The in-process SFU's pack window, ms (`--sfu-pack-ms`; not the `--server`'s).
    pub sfu_pack_ms: u64,
    /// Worker threads of the participants' runtime.
    pub client_threads: usize,
}

/// Where the run happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Operating system and architecture.
    pub os: String,
    /// Whether the SFU shared the machine (and the process) with the load generator.
    pub sfu_in_process: bool,
}

/// Throughput through the SFU, as the participants saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Throughput {
    /// Frames sent by all participants, per second.
    pub frames_in_per_s: f64,
    /// Frames received (decrypted) by all participants, per second.
    pub frames_out_per_s: f64,
    /// Media payload bytes sent, per second.
    pub bytes_in_per_s: f64,
    /// Media payload bytes received, per second.
    pub bytes_out_per_s: f64,
}

/// Jitter (RFC 3550 interarrival jitter per sender→receiver pair), ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Jitter {
    /// Mean over pairs.
    pub mean: f64,
    /// Worst pair.
    pub max: f64,
}

/// Kind of a churn event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnKind {
    /// A participant left.
    Leave,
    /// The key leader removed a participant.
    Remove,
    /// The key leader invited a new participant.
    Join,
}

/// One churn event and, for leave/remove, its rekey.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnEvent {
    /// Seconds since the measured phase began.
    pub at_s: f64,
    /// What happened.
    pub kind: ChurnKind,
    /// Meeting index.
    pub meeting: usize,
    /// Participants in the meeting afterwards.
    pub participants_after: usize,
    /// Leave/remove: from the call to every remaining device sending on the new
    /// epoch, ms; join: from the invite to the joiner in the room. `null` if it did
    /// not complete within the bound.
    pub ms: Option<f64>,
}

/// Rekey times (leave/remove to every remaining device sending on the new epoch).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RekeyStats {
    /// Rekeys started.
    pub count: u64,
    /// Rekeys that did not complete within the bound.
    pub incomplete: u64,
    /// Median, ms (`null` without samples).
    pub p50: Option<f64>,
    /// 99th percentile, ms.
    pub p99: Option<f64>,
    /// Largest, ms.
    pub max: Option<f64>,
}

/// One second of the measured phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the measured phase began (end of the interval).
    pub t_s: f64,
    /// Participants in meetings.
    pub participants: usize,
    /// Frames sent per second.
    pub frames_in_per_s: f64,
    /// Frames received per second.
    pub frames_out_per_s: f64,
    /// Latency median in this interval, ms.
    pub p50_ms: Option<f64>,
    /// Latency 99th percentile in this interval, ms.
    pub p99_ms: Option<f64>,
}

/// One bucket of the latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyBucket {
    /// Upper bound of the bucket, ms.
    pub le_ms: f64,
    /// Frames in the bucket.
    pub count: u64,
}

/// The SFU's own counters (a Prometheus scrape after the run).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SfuMetrics {
    /// Datagrams received from clients.
    pub datagrams_received: u64,
    /// Datagrams forwarded to clients.
    pub datagrams_forwarded: u64,
    /// Datagrams dropped, by reason.
    pub datagrams_dropped: BTreeMap<String, u64>,
    /// Room evictions (connections that did not prove a new epoch in time).
    pub room_evictions: u64,
}

/// The bare-QUIC relay run in the same shape (`--baseline`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BaselineReport {
    /// Frames (datagrams) sent by the bare clients.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Frames that should have arrived.
    pub frames_expected: u64,
    /// `1 - received / expected`.
    pub loss_ratio: f64,
    /// One-way latency.
    pub latency_ms: Percentiles,
    /// CPU time of the relay's threads, s.
    pub relay_cpu_seconds: f64,
    /// Datagrams the relay forwarded.
    pub datagrams_forwarded: u64,
    /// Relay CPU per forwarded datagram, µs.
    pub relay_cpu_us_per_forwarded_datagram: Option<f64>,
    /// CPU seconds of the bare clients in the measured window (the process's, less
    /// the relay's threads).
    pub client_cpu_seconds: Option<f64>,
    /// `client_cpu_seconds` per frame received, µs: what QUIC alone costs a receiver
    /// (no SFrame, no SDK) in this shape, with the relay forwarding each datagram as
    /// it comes.
    pub client_cpu_us_per_received_frame: Option<f64>,
    /// UDP datagrams the bare clients received in the window.
    pub client_udp_datagrams_received: u64,
    /// `client_cpu_seconds` per UDP datagram received, µs.
    pub client_cpu_us_per_udp_datagram_received: Option<f64>,
}

/// Everything one run measured. See `docs/loadtest.md` for the schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What was run.
    pub scenario: ScenarioEcho,
    /// Where.
    pub machine: Machine,
    /// Frames sent by all participants in the measured phase.
    pub frames_sent: u64,
    /// Frames received and decrypted by participants inside their measurement windows.
    pub frames_received: u64,
    /// Frames that should have been received (per sender→receiver pair, frames sent
    /// while both were in the meeting).
    pub frames_expected: u64,
    /// `1 - frames_received / frames_expected`, never below 0.
    pub loss_ratio: f64,
    /// Frames that arrived inside a receiver's window but were numbered past the
    /// window's end snapshot (sent in the instant it was taken): delivered, but
    /// neither expected nor counted as received. Not a loss, not a duplicate.
    pub frames_beyond_expected: u64,
    /// Frames received more than once.
    pub duplicates: u64,
    /// Frames scheduled but not sent because the load generator fell behind.
    pub send_shortfall: u64,
    /// One-way latency, sender's clock to receiver after decryption (same process).
    pub latency_ms: Percentiles,
    /// Jitter.
    pub jitter_ms: Jitter,
    /// Throughput.
    pub throughput: Throughput,
    /// Frames that failed authentication (must be 0).
    pub decrypt_failures: u64,
    /// Frames under a key the receiver did not hold (yet, or any more).
    pub unknown_key_frames: u64,
    /// Frames the SDK dropped because the receiver read too slowly.
    pub frames_dropped_queue_full: u64,
    /// Connect time (registration, authentication, prekeys), ms.
    pub connect_ms: Percentiles,
    /// Join time (invitation received to room joined), ms.
    pub join_ms: Percentiles,
    /// Rekey times.
    pub rekey_ms: RekeyStats,
    /// Frames removed participants decrypted that were sent after their removal took
    /// effect (must be 0).
    pub removed_decrypted_frames: u64,
    /// Churn events.
    pub churn_events: Vec<ChurnEvent>,
    /// In-meeting chat during the measured phase (`--chat-per-minute`); `null` without.
    pub chat: Option<ChatReport>,
    /// CPU seconds of the SFU (its runtime's threads when in-process; the process
    /// given by `--sfu-pid` otherwise); `null` when not measurable.
    pub sfu_cpu_seconds: Option<f64>,
    /// Peak resident memory, bytes: of the SFU process (`--sfu-pid`), or of the whole
    /// load-test process when the SFU runs in it (see `machine.sfu_in_process`).
    pub sfu_peak_rss_bytes: Option<u64>,
    /// SFU CPU per forwarded datagram, µs.
    pub sfu_cpu_us_per_forwarded_datagram: Option<f64>,
    /// CPU seconds of the load generator (participants), s.
    pub loadgen_cpu_seconds: Option<f64>,
    /// `loadgen_cpu_seconds` per frame received inside the windows, µs: the
    /// participants' whole cost (sending, receiving, bookkeeping) per received frame.
    pub loadgen_cpu_us_per_received_frame: Option<f64>,
    /// UDP datagrams the participants' connections received in the measured phase
    /// (QUIC's counters, `Client::network_stats`).
    pub loadgen_udp_datagrams_received: u64,
    /// `frames_received` ÷ `loadgen_udp_datagrams_received`: media frames per UDP
    /// datagram a participant receives (the SFU packs small ones together).
    pub frames_per_udp_datagram_received: Option<f64>,
    /// `loadgen_cpu_seconds` ÷ `loadgen_udp_datagrams_received`, µs.
    pub loadgen_cpu_us_per_udp_datagram_received: Option<f64>,
    /// Growth of the SFU process's resident memory (`--sfu-pid`) from before the
    /// first participant connected to the end of the measured phase, per participant
    /// of the scenario, KiB.
    pub sfu_rss_kib_per_participant: Option<f64>,
    /// The SFU's counters, when its metrics could be read.
    pub sfu_metrics: Option<SfuMetrics>,
    /// Per-second timeline of the measured phase.
    pub timeline: Vec<TimelinePoint>,
    /// Latency distribution (log-spaced buckets).
    pub latency_histogram: Vec<LatencyBucket>,
    /// The bare relay in the same shape, with `--baseline`.
    pub baseline: Option<BaselineReport>,
    /// Relay CPU per forwarded datagram ÷ SFU CPU per forwarded datagram (1.0 = the
    /// SFU forwards as cheaply as a bare QUIC relay), with `--baseline`.
    pub forwarding_efficiency: Option<f64>,
    /// Problems seen during the run (failed joins, incomplete rekeys, ...).
    pub problems: Vec<String>,
    /// With several servers (`--server` repeated, `--local-cluster`): how the
    /// participants spread over the nodes and how many redirects they followed.
    pub cluster: Option<ClusterLoad>,
}

/// Reliable in-meeting messages sent during the measured phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatReport {
    /// Messages the participants sent (the server took them).
    pub sent: u64,
    /// Sends refused (by the SDK or the server: rate limits among them).
    pub failed: u64,
    /// Messages received, summed over receivers.
    pub received: u64,
    /// `sent` × (participants − 1): what full meetings would receive. Churn makes
    /// meetings smaller for a while, so with `--churn` fewer arrive without any loss.
    pub expected: u64,
    /// Messages that arrived before an earlier one of the same sender (must be 0).
    pub out_of_order: u64,
    /// One-way latency from send to the receiver's app, ms.
    pub latency_ms: Percentiles,
}

/// How a run spread over the nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterLoad {
    /// One entry per node, in `--server` order.
    pub nodes: Vec<NodeLoad>,
    /// Redirects the participants followed (a room join answered `WRONG_NODE`: the
    /// client moved to the room's owner).
    pub redirects: u64,
}

/// One node's share of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeLoad {
    /// Its address.
    pub address: String,
    /// Participants that connected to it first (the servers are dealt in turn).
    pub connected_first: usize,
    /// Participants whose meeting's room is on it at the end of the run: where their
    /// last redirect sent it, or where they connected first.
    pub placed_last: usize,
}
