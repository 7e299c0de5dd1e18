//! One load-test run: start (or reach) the SFU, simulate, optionally run the
//! baseline, and assemble the report.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use conclave_sdk::client::ClientConfig;
use indicatif::{ProgressBar, ProgressStyle};

use crate::LoadError;
use crate::options::Options;
use crate::report::{
    BaselineReport, Jitter, Machine, RekeyStats, Report, SCHEMA_VERSION, ScenarioEcho, Throughput,
};
use crate::sim::{self, SimOutcome};
use crate::stats::{LatencyHistogram, loss_ratio, percentiles_ms, surplus};
use crate::target::{Reading, Target};

/// Prekeys each simulated device keeps on the server beyond one per participant (a
/// leader receives a reply from every invitee at once; the SDK tops the pool up).
const SPARE_PREKEYS: u32 = 20;

/// Runs the scenario described by `options` and returns its report. Blocking: it
/// creates its own runtimes (call it from `main` or a plain `#[test]`, not from async
/// code).
pub fn run(options: Options) -> Result<Report, LoadError> {
    run_with(options, &|| {})
}

/// [`run`], calling `on_teardown` once the measurement is over (or the run failed),
/// before participants and servers are stopped: what they log from then on is an
/// expected consequence of stopping (the binary lowers the log filter, see
/// [`crate::console::Logging::quiet_teardown`]). It may be called more than once.
pub fn run_with(options: Options, on_teardown: &dyn Fn()) -> Result<Report, LoadError> {
    options.validate()?;
    let options = Arc::new(options);
    let target = Target::start(&options)?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads.unwrap_or(cpus))
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .map_err(|e| LoadError::Setup(format!("participants' runtime: {e}")))?;
    let progress = progress_bar(crate::console::progress_visible(
        options.quiet,
        std::io::stderr().is_terminal(),
    ));
    let first = *target
        .addrs
        .first()
        .ok_or_else(|| LoadError::Options("no server to test".into()))?;
    let mut config = ClientConfig::new(first, target.trust.clone());
    config.server_name = target.server_name.clone();
    config.prekey_target = u32::try_from(options.participants)
        .unwrap_or(u32::MAX)
        .saturating_add(SPARE_PREKEYS);
    config.frame_queue = 4_096;
    // Hundreds of participants answer their invitations as the ramp connects them,
    // which on a busy machine takes longer than a phone would ring: ring as long as
    // the SDK allows, so no participant is rung out while the meeting forms.
    config.ring_timeout = conclave_sdk::client::MAX_RING_TIMEOUT;
    if options.no_rekey_preparation {
        config.prepare_rekeys_after = None;
    }
    let outcome = runtime.block_on(sim::simulate(
        Arc::clone(&options),
        config,
        target.addrs.clone(),
        progress.clone(),
        &*target,
        on_teardown,
    ));
    progress.finish_and_clear();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            on_teardown();
            runtime.shutdown_timeout(Duration::from_secs(2));
            return Err(e);
        }
    };
    let baseline = if options.baseline {
        Some(runtime.block_on(crate::baseline::run_baseline(&baseline_shape(&options)))?)
    } else {
        None
    };
    let report = assemble(&options, &target, outcome, baseline, cpus);
    // The participants vanish with their runtime; then the SFU stops (Target's drop).
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(target);
    Ok(report)
}

/// Name of the load generator's runtime threads (the participants; with
/// `--baseline`, the bare clients too).
pub(crate) const CLIENT_THREADS: &str = "client-rt";

/// The live progress bar on stderr, or a hidden one.
fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The same fan-out for the bare relay.
fn baseline_shape(o: &Options) -> crate::baseline::BaselineShape {
    crate::baseline::BaselineShape {
        meetings: o.meetings,
        participants: o.participants,
        audio_senders: o.audio_senders(),
        audio_fps: o.audio_fps,
        audio_bytes: o.audio_bytes,
        video_senders: o.video_senders,
        video_frame_bytes: o.video_frame_bytes(),
        video_fps: o.video_fps,
        duration: Duration::from_secs_f64(o.duration),
        relay_threads: o.sfu_threads,
        pack: Duration::from_millis(o.baseline_pack_ms),
    }
}

/// Nearest-rank percentile of sorted samples.
fn rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted.get(i).copied()
}

/// KiB of resident memory the SFU grew by per participant, if both readings exist.
fn rss_per_participant(
    before: Option<u64>,
    after: Option<u64>,
    participants: usize,
) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if participants > 0 => {
            Some(a.saturating_sub(b) as f64 / 1024.0 / participants as f64)
        }
        _ => None,
    }
}

#[allow(clippy::too_many_lines)] // one flat mapping from measurements to report fields
fn assemble(
    o: &Options,
    target: &Target,
    sim: SimOutcome,
    baseline: Option<BaselineReport>,
    cpus: usize,
) -> Report {
    let readings: Vec<Reading> = target
        .readings
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let (first, last) = (readings.first(), readings.get(1));
    let diff = |f: fn(&Reading) -> Option<f64>| match (first.and_then(f), last.and_then(f)) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    let sfu_cpu = diff(|r| r.sfu_cpu);
    let process_cpu = diff(|r| r.process_cpu);
    let sfu_metrics = match (
        first.and_then(|r| r.metrics.as_ref()),
        last.and_then(|r| r.metrics.as_ref()),
    ) {
        (Some(a), Some(b)) => Some(crate::metrics::delta(b, a)),
        _ => None,
    };
    let sfu_us = match (sfu_cpu, sfu_metrics.as_ref()) {
        (Some(cpu), Some(m)) if m.datagrams_forwarded > 0 => {
            Some(cpu * 1e6 / m.datagrams_forwarded as f64)
        }
        _ => None,
    };
    let loadgen_cpu = process_cpu.map(|p| {
        if target.in_process() {
            (p - sfu_cpu.unwrap_or(0.0)).max(0.0)
        } else {
            p
        }
    });

    let mut latency = LatencyHistogram::default();
    let (mut expected, mut received, mut duplicates, mut beyond) = (0, 0, 0, 0);
    let (mut decrypt_failures, mut unknown_key, mut queue_full, mut foreign) = (0, 0, 0, 0);
    let mut jitters = Vec::new();
    for r in &sim.receivers {
        latency.merge(&r.latency);
        expected += r.window.expected();
        received += r.window.received();
        duplicates += r.window.duplicates();
        beyond += r.window.beyond_expected();
        jitters.extend(r.window.jitters_us().map(|j| j / 1e3));
        decrypt_failures += r.stats.decrypt_failures;
        unknown_key += r.stats.unknown_key;
        queue_full += r.stats.frames_dropped_queue_full;
        foreign += r.foreign_frames;
    }
    let mut problems = sim.problems.clone();
    problems.extend(
        target
            .problems
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default(),
    );
    if decrypt_failures > 0 {
        problems.push(format!(
            "{decrypt_failures} frames FAILED DECRYPTION: this is a bug"
        ));
    }
    if foreign > 0 {
        problems.push(format!(
            "{foreign} decrypted frames were not load-test frames"
        ));
    }
    let measured = sim.measured_s.max(1e-9);
    let (_, bytes_in, _, bytes_out) = sim.timeline.as_ref().map_or((0, 0, 0, 0), |t| t.totals());
    let mut rekeys = sim.rekey.clone();
    rekeys.sort_by(f64::total_cmp);
    let forwarding_efficiency = match (&baseline, sfu_us) {
        (Some(b), Some(s)) if s > 0.0 => b.relay_cpu_us_per_forwarded_datagram.map(|r| r / s),
        _ => None,
    };
    Report {
        schema_version: SCHEMA_VERSION,
        scenario: ScenarioEcho {
            target: target.label.clone(),
            meetings: o.meetings,
            participants: o.participants,
            duration_s: o.duration,
            audio_fps: o.audio_fps,
            audio_bytes: o.audio_bytes,
            senders: o.senders,
            video_senders: o.video_senders,
            video_kbps: o.video_kbps,
            video_fps: o.video_fps,
            ramp: o.ramp,
            churn: o.churn,
            rekey_preparation: !o.no_rekey_preparation,
            seed: o.seed,
            sfu_threads: o.sfu_threads,
            sfu_pack_ms: o.sfu_pack_ms,
            client_threads: o.client_threads.unwrap_or(cpus),
        },
        machine: Machine {
            cpus,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            sfu_in_process: target.in_process(),
        },
        frames_sent: sim.frames_sent,
        frames_received: received,
        frames_expected: expected,
        loss_ratio: loss_ratio(received, expected),
        // Windows never count more than they expect; the aggregate check is a guard.
        frames_beyond_expected: beyond + surplus(received, expected),
        duplicates,
        send_shortfall: sim.send_shortfall,
        latency_ms: percentiles_ms(&latency),
        jitter_ms: Jitter {
            mean: if jitters.is_empty() {
                0.0
            } else {
                jitters.iter().sum::<f64>() / jitters.len() as f64
            },
            max: jitters.iter().copied().fold(0.0, f64::max),
        },
        throughput: Throughput {
            frames_in_per_s: sim.frames_sent as f64 / measured,
            frames_out_per_s: received as f64 / measured,
            bytes_in_per_s: bytes_in as f64 / measured,
            bytes_out_per_s: bytes_out as f64 / measured,
        },
        decrypt_failures,
        unknown_key_frames: unknown_key,
        frames_dropped_queue_full: queue_full,
        connect_ms: percentiles_ms(&sim.connect),
        join_ms: percentiles_ms(&sim.join),
        rekey_ms: RekeyStats {
            count: rekeys.len() as u64 + sim.rekeys_incomplete,
            incomplete: sim.rekeys_incomplete,
            p50: rank(&rekeys, 0.50),
            p99: rank(&rekeys, 0.99),
            max: rekeys.last().copied(),
        },
        removed_decrypted_frames: sim.removed_decrypted_frames,
        chat: (o.chat_per_minute > 0.0).then(|| {
            let mut latency = LatencyHistogram::default();
            let (mut received, mut out_of_order) = (0, 0);
            for r in &sim.receivers {
                latency.merge(&r.chat.latency);
                received += r.chat.received;
                out_of_order += r.chat.out_of_order;
            }
            crate::report::ChatReport {
                sent: sim.chat_sent,
                failed: sim.chat_failed,
                received,
                expected: sim
                    .chat_sent
                    .saturating_mul(o.participants.saturating_sub(1) as u64),
                out_of_order,
                latency_ms: percentiles_ms(&latency),
            }
        }),
        churn_events: sim.churn_events.clone(),
        sfu_cpu_seconds: sfu_cpu,
        sfu_peak_rss_bytes: target.peak_rss_bytes(),
        sfu_cpu_us_per_forwarded_datagram: sfu_us,
        loadgen_cpu_seconds: loadgen_cpu,
        loadgen_cpu_us_per_received_frame: loadgen_cpu
            .filter(|_| received > 0)
            .map(|cpu| cpu * 1e6 / received as f64),
        loadgen_udp_datagrams_received: sim.udp_datagrams_received,
        frames_per_udp_datagram_received: (sim.udp_datagrams_received > 0)
            .then(|| received as f64 / sim.udp_datagrams_received as f64),
        loadgen_cpu_us_per_udp_datagram_received: loadgen_cpu
            .filter(|_| sim.udp_datagrams_received > 0)
            .map(|cpu| cpu * 1e6 / sim.udp_datagrams_received as f64),
        sfu_rss_kib_per_participant: rss_per_participant(
            target.sfu_rss_at_start,
            last.and_then(|r| r.sfu_rss),
            o.meetings * o.participants,
        ),
        sfu_metrics,
        timeline: sim
            .timeline
            .as_ref()
            .map(|t| t.points(o.duration))
            .unwrap_or_default(),
        latency_histogram: latency.buckets(),
        baseline,
        forwarding_efficiency,
        problems,
        cluster: sim.cluster.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(rank(&v, 0.5), Some(2.0));
        assert_eq!(rank(&v, 0.99), Some(4.0));
        assert_eq!(rank(&[], 0.5), None);
    }

    #[test]
    fn rss_growth_is_shared_over_the_participants() {
        assert_eq!(
            rss_per_participant(Some(10 << 20), Some(20 << 20), 100),
            Some(102.4)
        );
        // Memory handed back to the system is no growth.
        assert_eq!(rss_per_participant(Some(20), Some(10), 2), Some(0.0));
        assert_eq!(rss_per_participant(None, Some(10), 2), None);
        assert_eq!(rss_per_participant(Some(1), Some(10), 0), None);
    }
}
