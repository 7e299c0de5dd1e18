//! The report's four charts: latency distribution, latency over time, throughput
//! over time and rekey/join times per churn event.

use plotters::style::RGBColor;

use super::chart::{self, Bar, BarChart, Point, Series, Style, XyChart};
use super::numbers::{count, ms_label, pct, qty, rate};
use super::verdict::{LATENCY_P99_TARGET_MS, REKEY_P99_TARGET_MS};
use super::{ChurnEvent, ChurnKind, Report, TimelinePoint};

const BLUE: RGBColor = RGBColor(0x1f, 0x6f, 0xeb);
const ORANGE: RGBColor = RGBColor(0xd4, 0x76, 0x0a);
const GREEN: RGBColor = RGBColor(0x1a, 0x7f, 0x37);
const RED: RGBColor = RGBColor(0xcf, 0x22, 0x2e);
const PURPLE: RGBColor = RGBColor(0x82, 0x50, 0xdf);
const TEAL: RGBColor = RGBColor(0x0a, 0x8a, 0x8a);
const GREY: RGBColor = RGBColor(0x8c, 0x95, 0x9f);

/// The churn kind as in the JSON.
pub(super) fn kind(k: ChurnKind) -> &'static str {
    match k {
        ChurnKind::Leave => "leave",
        ChurnKind::Remove => "remove",
        ChurnKind::Join => "join",
    }
}

/// (a) Frames per latency bucket, bars beyond the p99 target in orange.
pub(super) fn latency_histogram(r: &Report) -> String {
    let total: u64 = r.latency_histogram.iter().map(|b| b.count).sum();
    let target = LATENCY_P99_TARGET_MS;
    let bars = r
        .latency_histogram
        .iter()
        .map(|b| Bar {
            label: ms_label(b.le_ms),
            value: b.count as f64,
            color: if b.le_ms <= target { BLUE } else { ORANGE },
            tip: format!(
                "≤ {} ms: {} frames ({} of all)",
                ms_label(b.le_ms),
                count(b.count),
                pct(b.count as f64 / total as f64)
            ),
        })
        .collect();
    chart::bar_chart(&BarChart {
        title: "Latency distribution (one-way, every frame)".to_owned(),
        x_label: "bucket upper bound (ms, log-spaced)".to_owned(),
        y_label: "frames".to_owned(),
        bars,
        legend: vec![
            ("≤ 30 ms (p99 target)".to_owned(), BLUE),
            ("> 30 ms".to_owned(), ORANGE),
        ],
    })
}

/// One line series over the timeline.
fn timeline_series(
    r: &Report,
    name: &str,
    color: RGBColor,
    style: Style,
    y: impl Fn(&TimelinePoint) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_owned(),
        color,
        style,
        points: r
            .timeline
            .iter()
            .map(|p| Point {
                x: p.t_s,
                y: y(p),
                tip: String::new(),
            })
            .collect(),
    }
}

/// One tooltip per second with every figure of that second.
fn timeline_bands(r: &Report) -> Vec<(f64, String)> {
    r.timeline
        .iter()
        .map(|p| {
            let tip = format!(
                "t = {}\nlatency p50 {} / p99 {}\nframes/s in {} / out {}\n{} participants",
                qty(Some(p.t_s), 0, "s"),
                qty(p.p50_ms, 2, "ms"),
                qty(p.p99_ms, 2, "ms"),
                rate(p.frames_in_per_s),
                rate(p.frames_out_per_s),
                p.participants
            );
            (p.t_s, tip)
        })
        .collect()
}

/// (b) Latency p50 and p99 per second, with the p99 target line.
pub(super) fn latency_timeline(r: &Report) -> String {
    chart::xy_chart(&XyChart {
        title: "Latency over time (per second)".to_owned(),
        x_label: "time since the measured phase began (s)".to_owned(),
        y_label: "one-way latency (ms)".to_owned(),
        series: vec![
            timeline_series(r, "p50", BLUE, Style::Line, |p| p.p50_ms),
            timeline_series(r, "p99", ORANGE, Style::Line, |p| p.p99_ms),
        ],
        right: None,
        target: Some((LATENCY_P99_TARGET_MS, "p99 target 30 ms".to_owned())),
        bands: timeline_bands(r),
    })
}

/// (c) Frames in and out per second, participants on the right-hand axis.
pub(super) fn throughput_timeline(r: &Report) -> String {
    let participants = |p: &TimelinePoint| Some(p.participants as f64);
    chart::xy_chart(&XyChart {
        title: "Throughput over time".to_owned(),
        x_label: "time since the measured phase began (s)".to_owned(),
        y_label: "frames per second".to_owned(),
        series: vec![
            timeline_series(r, "sent (in)", BLUE, Style::Line, |p| {
                Some(p.frames_in_per_s)
            }),
            timeline_series(r, "received (out)", GREEN, Style::Line, |p| {
                Some(p.frames_out_per_s)
            }),
        ],
        right: Some((
            "participants".to_owned(),
            timeline_series(r, "participants", GREY, Style::Dashed, participants),
        )),
        target: None,
        bands: timeline_bands(r),
    })
}

fn departure(e: &ChurnEvent) -> bool {
    matches!(e.kind, ChurnKind::Leave | ChurnKind::Remove)
}

/// "rekey after a leave at 8.2 s, meeting 0 (24 participants after): 142.5 ms".
fn churn_tip(e: &ChurnEvent) -> String {
    let what = if departure(e) {
        format!("rekey after a {}", kind(e.kind))
    } else {
        "join".to_owned()
    };
    let ms =
        e.ms.map_or_else(|| "incomplete".to_owned(), |ms| qty(Some(ms), 1, "ms"));
    format!(
        "{what} at {}, meeting {} ({} participants after): {ms}",
        qty(Some(e.at_s), 1, "s"),
        e.meeting,
        e.participants_after
    )
}

fn churn_series(
    events: &[ChurnEvent],
    name: &str,
    color: RGBColor,
    style: Style,
    keep: fn(&ChurnEvent) -> bool,
) -> Series {
    Series {
        name: name.to_owned(),
        color,
        style,
        points: events
            .iter()
            .filter(|e| keep(e))
            .map(|e| Point {
                x: e.at_s,
                y: e.ms,
                tip: churn_tip(e),
            })
            .collect(),
    }
}

/// (d) One dot per rekey (leave/remove) and join, a cross per incomplete one.
pub(super) fn churn_chart(events: &[ChurnEvent]) -> String {
    let all = [
        churn_series(events, "rekey (leave/remove)", PURPLE, Style::Dots, |e| {
            departure(e) && e.ms.is_some()
        }),
        churn_series(events, "join", TEAL, Style::Dots, |e| {
            e.kind == ChurnKind::Join && e.ms.is_some()
        }),
        churn_series(events, "incomplete", RED, Style::Missing, |e| {
            e.ms.is_none()
        }),
    ];
    chart::xy_chart(&XyChart {
        title: "Rekey and join times per churn event".to_owned(),
        x_label: "time since the measured phase began (s)".to_owned(),
        y_label: "rekey / join time (ms)".to_owned(),
        series: all.into_iter().filter(|s| !s.points.is_empty()).collect(),
        right: None,
        target: Some((REKEY_P99_TARGET_MS, "rekey p99 target 300 ms".to_owned())),
        bands: Vec::new(),
    })
}
