//! A realistic report for the renderers' tests: 4 meetings × 25 participants for
//! 60 s, audio from everyone, two video senders per meeting, some churn with one
//! incomplete rekey, and a baseline run.

use std::collections::BTreeMap;

use super::{
    BaselineReport, ChurnEvent, ChurnKind, Jitter, LatencyBucket, Machine, Percentiles, RekeyStats,
    Report, SCHEMA_VERSION, ScenarioEcho, SfuMetrics, Throughput, TimelinePoint,
};

fn churn(at_s: f64, kind: ChurnKind, meeting: usize, after: usize, ms: Option<f64>) -> ChurnEvent {
    ChurnEvent {
        at_s,
        kind,
        meeting,
        participants_after: after,
        ms,
    }
}

fn timeline() -> Vec<TimelinePoint> {
    (1..=60u32)
        .map(|t| {
            let wave = f64::from(t % 7) / 7.0;
            let participants = match t {
                9..=17 | 27..=34 | 45..=53 => 99,
                54..=60 => 98,
                _ => 100,
            };
            let spike = if t == 27 || t == 45 { 9.0 } else { 0.0 };
            let measured = t != 46;
            TimelinePoint {
                t_s: f64::from(t),
                participants,
                frames_in_per_s: 5_200.0 + 80.0 * wave,
                frames_out_per_s: 124_800.0 + 1_900.0 * wave,
                p50_ms: measured.then_some(1.7 + 0.2 * wave),
                p99_ms: measured.then_some(7.2 + 1.4 * wave + spike),
            }
        })
        .collect()
}

fn histogram() -> Vec<LatencyBucket> {
    let counts = [
        0, 0, 120, 30_400, 1_210_000, 4_800_000, 1_250_000, 210_000, 38_000, 6_400, 92,
    ];
    let mut le_us = 64.0;
    counts
        .into_iter()
        .map(|count| {
            let bucket = LatencyBucket {
                le_ms: le_us / 1_000.0,
                count,
            };
            le_us *= 2.0;
            bucket
        })
        .collect()
}

/// The fixture.
pub(super) fn report() -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        scenario: ScenarioEcho {
            target: "embedded".to_owned(),
            meetings: 4,
            participants: 25,
            duration_s: 60.0,
            audio_fps: 50,
            audio_bytes: 160,
            senders: 1.0,
            video_senders: 2,
            video_kbps: 1_500,
            video_fps: 30,
            ramp: 10.0,
            churn: 6.0,
            rekey_preparation: true,
            seed: 42,
            sfu_threads: 1,
            sfu_pack_ms: 2,
            client_threads: 8,
        },
        machine: Machine {
            cpus: 8,
            os: "linux x86_64".to_owned(),
            sfu_in_process: true,
        },
        frames_sent: 314_400,
        frames_received: 7_545_012,
        frames_expected: 7_545_600,
        loss_ratio: 588.0 / 7_545_600.0,
        frames_beyond_expected: 0,
        duplicates: 1,
        send_shortfall: 0,
        latency_ms: Percentiles {
            count: 7_545_012,
            mean: 2.1,
            p50: 1.8,
            p90: 3.2,
            p99: 7.9,
            max: 48.2,
        },
        jitter_ms: Jitter {
            mean: 0.41,
            max: 3.87,
        },
        throughput: Throughput {
            frames_in_per_s: 5_240.0,
            frames_out_per_s: 125_750.2,
            bytes_in_per_s: 2_300_000.0,
            bytes_out_per_s: 55_190_000.0,
        },
        decrypt_failures: 0,
        unknown_key_frames: 412,
        frames_dropped_queue_full: 0,
        connect_ms: Percentiles {
            count: 102,
            mean: 48.0,
            p50: 41.3,
            p90: 77.0,
            p99: 118.0,
            max: 131.9,
        },
        join_ms: Percentiles {
            count: 102,
            mean: 230.0,
            p50: 212.4,
            p90: 281.0,
            p99: 310.2,
            max: 310.2,
        },
        rekey_ms: RekeyStats {
            count: 4,
            incomplete: 1,
            p50: Some(142.5),
            p99: Some(266.0),
            max: Some(266.0),
        },
        removed_decrypted_frames: 0,
        chat: None,
        churn_events: vec![
            churn(8.2, ChurnKind::Leave, 0, 24, Some(142.5)),
            churn(17.9, ChurnKind::Join, 0, 25, Some(310.2)),
            churn(26.4, ChurnKind::Remove, 2, 24, Some(118.0)),
            churn(35.0, ChurnKind::Join, 2, 25, Some(290.4)),
            churn(44.7, ChurnKind::Leave, 1, 24, None),
            churn(53.1, ChurnKind::Remove, 3, 24, Some(266.0)),
        ],
        sfu_cpu_seconds: Some(21.4),
        sfu_peak_rss_bytes: Some(412 * 1024 * 1024),
        sfu_cpu_us_per_forwarded_datagram: Some(21.4e6 / 7_548_480.0),
        loadgen_cpu_seconds: Some(96.3),
        loadgen_cpu_us_per_received_frame: Some(4.1),
        loadgen_udp_datagrams_received: 1_258_080,
        frames_per_udp_datagram_received: Some(6.0),
        loadgen_cpu_us_per_udp_datagram_received: Some(96.3e6 / 1_258_080.0),
        sfu_rss_kib_per_participant: None,
        sfu_metrics: Some(SfuMetrics {
            datagrams_received: 314_520,
            datagrams_forwarded: 7_548_480,
            datagrams_dropped: BTreeMap::from([
                ("no_room".to_owned(), 9),
                ("stale_epoch".to_owned(), 3),
            ]),
            room_evictions: 0,
        }),
        timeline: timeline(),
        latency_histogram: histogram(),
        baseline: Some(BaselineReport {
            frames_sent: 314_400,
            frames_received: 7_545_600,
            frames_expected: 7_545_600,
            loss_ratio: 0.0,
            latency_ms: Percentiles {
                count: 7_545_600,
                mean: 1.02,
                p50: 0.92,
                p90: 1.6,
                p99: 3.1,
                max: 21.7,
            },
            relay_cpu_seconds: 9.8,
            datagrams_forwarded: 7_545_600,
            relay_cpu_us_per_forwarded_datagram: Some(1.30),
            client_cpu_seconds: Some(30.2),
            client_cpu_us_per_received_frame: Some(30.2e6 / 7_545_600.0),
            client_udp_datagrams_received: 7_000_000,
            client_cpu_us_per_udp_datagram_received: Some(30.2e6 / 7_000_000.0),
        }),
        forwarding_efficiency: Some(1.30 / (21.4e6 / 7_548_480.0)),
        problems: vec![
            "meeting 1: rekey after a leave at 44.7 s did not complete within 5000 ms".to_owned(),
            "meeting 0: 1 frame received twice".to_owned(),
        ],
        cluster: None,
    }
}
