//! The report's figures as labelled rows grouped in sections. The terminal
//! summary and the HTML page both render these, so the two always show the same
//! numbers. Strings are raw here: each renderer escapes them for its medium.

use super::numbers::{NA, count, dist, list, loss_pct, num, qty, rate};
use super::verdict::{LATENCY_P99_TARGET_MS, LOSS_TARGET, REKEY_P99_TARGET_MS, loss_measured};
use super::{ChurnKind, Percentiles, Report};

/// One labelled figure.
pub(super) struct Row {
    /// What the figure is.
    pub(super) label: String,
    /// The figure, with its unit.
    pub(super) value: String,
    /// Whether the figure shows a problem worth highlighting.
    pub(super) alert: bool,
}

/// A titled group of rows.
pub(super) struct Section {
    /// Heading.
    pub(super) title: &'static str,
    /// Figures.
    pub(super) rows: Vec<Row>,
}

fn row(label: &str, value: impl Into<String>) -> Row {
    flagged(label, value, false)
}

fn flagged(label: &str, value: impl Into<String>, alert: bool) -> Row {
    Row {
        label: label.to_owned(),
        value: value.into(),
        alert,
    }
}

/// "p50 / p99 ms (n)" of connect/join times.
fn p50_p99(p: &Percentiles) -> String {
    let s = dist(p, &[p.p50, p.p99], 1);
    if p.count == 0 {
        s
    } else {
        format!("{s} ({} samples)", count(p.count))
    }
}

/// "embedded · 4 meetings × 25 participants · 60.0 s".
pub(super) fn headline(r: &Report) -> String {
    let s = &r.scenario;
    format!(
        "{} · {} meetings × {} participants · {}",
        s.target,
        s.meetings,
        s.participants,
        qty(Some(s.duration_s), 1, "s")
    )
}

/// "8 CPUs, linux x86_64, SFU in this process".
pub(super) fn machine(r: &Report) -> String {
    let m = &r.machine;
    let sfu = if m.sfu_in_process {
        "SFU in the load generator's process"
    } else {
        "SFU in a separate process"
    };
    format!("{} CPUs, {}, {sfu}", m.cpus, m.os)
}

/// Every figure of the report except the time series and the problems list.
pub(super) fn sections(r: &Report) -> Vec<Section> {
    let mut out = vec![
        scenario(r),
        frames(r),
        latency(r),
        throughput(r),
        security(r),
        joins(r),
        rekeys(r),
        sfu(r),
        Section {
            title: "Load generator",
            rows: vec![row("cpu", loadgen_cpu(r))],
        },
    ];
    if let Some(c) = &r.chat {
        out.push(chat(c));
    }
    if let Some(c) = &r.cluster {
        out.push(cluster(c));
    }
    if r.baseline.is_some() || r.forwarding_efficiency.is_some() {
        out.push(baseline(r));
    }
    out
}

/// The load generator's CPU, with its cost per received frame when known.
fn loadgen_cpu(r: &Report) -> String {
    let mut cpu = qty(r.loadgen_cpu_seconds, 1, "s");
    if let Some(us) = r.loadgen_cpu_us_per_received_frame {
        cpu.push_str(&format!(" ({us:.2} µs per received frame"));
        if let Some(frames) = r.frames_per_udp_datagram_received {
            cpu.push_str(&format!(", {frames:.2} frames per UDP datagram"));
        }
        cpu.push(')');
    }
    cpu
}

/// Per node: participants that connected there first, and there at the end.
fn cluster(c: &super::ClusterLoad) -> Section {
    let mut rows: Vec<Row> = c
        .nodes
        .iter()
        .map(|n| {
            row(
                &format!("node {}", n.address),
                format!(
                    "{} connected first, {} with their room there at the end",
                    n.connected_first, n.placed_last
                ),
            )
        })
        .collect();
    rows.push(row("redirects followed", count(c.redirects)));
    Section {
        title: "Cluster",
        rows,
    }
}

fn scenario(r: &Report) -> Section {
    let s = &r.scenario;
    let audio = if s.audio_fps == 0 || s.senders <= 0.0 {
        "none".to_owned()
    } else {
        let share = num(s.senders * 100.0, 0);
        let (fps, bytes) = (s.audio_fps, s.audio_bytes);
        format!("{fps} fps × {bytes} B, {share} % of participants send")
    };
    let video = if s.video_senders == 0 {
        "none".to_owned()
    } else {
        let (n, kbps, fps) = (s.video_senders, s.video_kbps, s.video_fps);
        format!("{n} senders/meeting × {kbps} kbit/s @ {fps} fps")
    };
    let kinds = |k: ChurnKind| r.churn_events.iter().filter(|e| e.kind == k).count();
    let mut churn = qty(Some(s.churn), 1, "events/min");
    if !r.churn_events.is_empty() {
        churn.push_str(&format!(
            " ({} leave, {} remove, {} join)",
            kinds(ChurnKind::Leave),
            kinds(ChurnKind::Remove),
            kinds(ChurnKind::Join)
        ));
    }
    let total = s.meetings.saturating_mul(s.participants);
    Section {
        title: "Scenario",
        rows: vec![
            row("target", s.target.clone()),
            row("machine", machine(r)),
            row(
                "meetings × participants",
                format!("{} × {} ({total} participants)", s.meetings, s.participants),
            ),
            row("duration", qty(Some(s.duration_s), 1, "s")),
            row("audio", audio),
            row("video", video),
            row("ramp", qty(Some(s.ramp), 1, "joins/s")),
            row("churn", churn),
            row("seed", s.seed.to_string()),
        ],
    }
}

/// Marks the "beyond expected" row and its footnote.
const BEYOND_MARK: &str = "¹";

/// Notes under the figures, each explaining a row marked with its sign; empty when
/// no marked row is shown.
pub(super) fn footnotes(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if r.frames_beyond_expected > 0 {
        out.push(format!(
            "{BEYOND_MARK} delivered inside a receiver's window but numbered past its end (sent as it closed):\n  \
             not lost, not expected, not counted as received; the loss leaves them out \
             (docs/loadtest.md)."
        ));
    }
    out
}

fn frames(r: &Report) -> Section {
    let loss = if loss_measured(r) {
        loss_pct(r.loss_ratio)
    } else {
        NA.to_owned()
    };
    let mut shortfall = count(r.send_shortfall);
    if r.send_shortfall > 0 {
        shortfall.push_str(" (the load generator fell behind)");
    }
    let mut rows = vec![
        row("sent", count(r.frames_sent)),
        row("expected", count(r.frames_expected)),
        row("received", count(r.frames_received)),
        flagged("loss", loss, loss_measured(r) && r.loss_ratio > LOSS_TARGET),
    ];
    if r.frames_beyond_expected > 0 {
        rows.push(row(
            &format!("beyond expected {BEYOND_MARK}"),
            count(r.frames_beyond_expected),
        ));
    }
    rows.extend([
        row("duplicates", count(r.duplicates)),
        flagged("send shortfall", shortfall, r.send_shortfall > 0),
        row(
            "dropped, reader too slow",
            count(r.frames_dropped_queue_full),
        ),
    ]);
    Section {
        title: "Frames",
        rows,
    }
}

fn latency(r: &Report) -> Section {
    let l = &r.latency_ms;
    let jitter = if l.count == 0 {
        NA.to_owned()
    } else {
        list(&[Some(r.jitter_ms.mean), Some(r.jitter_ms.max)], 2, "ms")
    };
    Section {
        title: "Latency",
        rows: vec![
            flagged(
                "p50 / p90 / p99",
                dist(l, &[l.p50, l.p90, l.p99], 2),
                l.count > 0 && l.p99 > LATENCY_P99_TARGET_MS,
            ),
            row("max / mean", dist(l, &[l.max, l.mean], 2)),
            row("jitter mean / max", jitter),
        ],
    }
}

fn throughput(r: &Report) -> Section {
    let t = &r.throughput;
    let mb = |v: f64| num(v / 1e6, 2);
    Section {
        title: "Throughput",
        rows: vec![
            row(
                "frames/s in / out",
                format!("{} / {}", rate(t.frames_in_per_s), rate(t.frames_out_per_s)),
            ),
            row(
                "MB/s in / out",
                format!("{} / {}", mb(t.bytes_in_per_s), mb(t.bytes_out_per_s)),
            ),
        ],
    }
}

fn security(r: &Report) -> Section {
    Section {
        title: "Security",
        rows: vec![
            flagged(
                "decrypt failures",
                count(r.decrypt_failures),
                r.decrypt_failures > 0,
            ),
            row("unknown-key frames", count(r.unknown_key_frames)),
            flagged(
                "frames decrypted after removal",
                count(r.removed_decrypted_frames),
                r.removed_decrypted_frames > 0,
            ),
        ],
    }
}

fn chat(c: &super::ChatReport) -> Section {
    Section {
        title: "Chat",
        rows: vec![
            flagged(
                "sent (refused)",
                format!("{} ({})", count(c.sent), count(c.failed)),
                c.failed > 0,
            ),
            row(
                "received / expected",
                format!("{} / {}", count(c.received), count(c.expected)),
            ),
            flagged("out of order", count(c.out_of_order), c.out_of_order > 0),
            row("latency p50 / p99", p50_p99(&c.latency_ms)),
        ],
    }
}

fn joins(r: &Report) -> Section {
    Section {
        title: "Joins",
        rows: vec![
            row("connect p50 / p99", p50_p99(&r.connect_ms)),
            row("join p50 / p99", p50_p99(&r.join_ms)),
        ],
    }
}

fn rekeys(r: &Report) -> Section {
    let k = &r.rekey_ms;
    Section {
        title: "Rekeys",
        rows: vec![
            row("count", count(k.count)),
            flagged("incomplete", count(k.incomplete), k.incomplete > 0),
            flagged(
                "p50 / p99 / max",
                list(&[k.p50, k.p99, k.max], 1, "ms"),
                k.p99.is_some_and(|p| p > REKEY_P99_TARGET_MS),
            ),
        ],
    }
}

fn sfu(r: &Report) -> Section {
    let mib = r.sfu_peak_rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0));
    let mut rss = qty(mib, 1, "MiB");
    if r.machine.sfu_in_process && mib.is_some() {
        rss.push_str(" (whole process: SFU and load generator)");
    }
    if let Some(kib) = r.sfu_rss_kib_per_participant {
        rss.push_str(&format!(" (grew {kib:.1} KiB per participant)"));
    }
    let mut rows = vec![
        row("cpu", qty(r.sfu_cpu_seconds, 1, "s")),
        row(
            "cpu per forwarded datagram",
            qty(r.sfu_cpu_us_per_forwarded_datagram, 2, "µs"),
        ),
        row("peak RSS", rss),
    ];
    match &r.sfu_metrics {
        Some(m) => {
            let dropped: u64 = m.datagrams_dropped.values().sum();
            let reasons: Vec<String> = m
                .datagrams_dropped
                .iter()
                .map(|(reason, n)| format!("{reason}: {}", count(*n)))
                .collect();
            let dropped = if reasons.is_empty() {
                "0".to_owned()
            } else {
                format!("{} ({})", count(dropped), reasons.join(", "))
            };
            rows.push(row(
                "datagrams in / forwarded",
                format!(
                    "{} / {}",
                    count(m.datagrams_received),
                    count(m.datagrams_forwarded)
                ),
            ));
            rows.push(row("datagrams dropped", dropped));
            rows.push(row("room evictions", count(m.room_evictions)));
        }
        None => rows.push(row("counters", "n/a (metrics not read)")),
    }
    Section { title: "SFU", rows }
}

fn baseline(r: &Report) -> Section {
    let mut rows = Vec::new();
    if let Some(b) = &r.baseline {
        let l = &b.latency_ms;
        let loss = if b.frames_expected > 0 {
            loss_pct(b.loss_ratio)
        } else {
            NA.to_owned()
        };
        rows.push(row(
            "frames sent / received",
            format!("{} / {}", count(b.frames_sent), count(b.frames_received)),
        ));
        rows.push(row("loss", loss));
        rows.push(row("latency p50 / p99", dist(l, &[l.p50, l.p99], 2)));
        rows.push(row(
            "relay cpu",
            format!(
                "{} ({} per datagram)",
                qty(Some(b.relay_cpu_seconds), 1, "s"),
                qty(b.relay_cpu_us_per_forwarded_datagram, 2, "µs")
            ),
        ));
        rows.push(row(
            "client cpu",
            format!(
                "{} per frame, {} per UDP datagram",
                qty(b.client_cpu_us_per_received_frame, 2, "µs"),
                qty(b.client_cpu_us_per_udp_datagram_received, 2, "µs")
            ),
        ));
    }
    let efficiency = match r.forwarding_efficiency {
        Some(e) if e.is_finite() => format!("{e:.2} (1.00 = as cheap as a bare QUIC relay)"),
        _ => NA.to_owned(),
    };
    rows.push(row("forwarding efficiency", efficiency));
    Section {
        title: "Baseline (bare QUIC relay)",
        rows,
    }
}
