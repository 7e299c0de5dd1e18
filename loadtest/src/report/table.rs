//! The terminal summary printed after a run: plain text (no colour, whatever the
//! output), an aligned two-column table in sections (figures outside their target
//! are marked `!`), the footnotes, the problems, the verdict with its reasons and,
//! last, a loud line for every bug seen.

use super::Report;
use super::fields;
use super::verdict::Verdict;

/// Problems listed one by one; the rest are counted.
const MAX_PROBLEMS: usize = 5;

/// Renders the report as a terminal table.
#[must_use]
pub fn render_summary(report: &Report) -> String {
    let sections = fields::sections(report);
    let width = sections
        .iter()
        .flat_map(|s| &s.rows)
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("Conclave load test: {}\n", clean(&fields::headline(report)));
    for section in &sections {
        out.push_str(section.title);
        out.push('\n');
        for row in &section.rows {
            let mark = if row.alert { '!' } else { ' ' };
            let label = clean(&row.label);
            out.push_str(&format!("{mark} {label:<width$}  {}\n", clean(&row.value)));
        }
    }
    for note in fields::footnotes(report) {
        out.push_str(&format!("{note}\n"));
    }
    if !report.problems.is_empty() {
        out.push_str(&format!("Problems ({})\n", report.problems.len()));
        for problem in report.problems.iter().take(MAX_PROBLEMS) {
            out.push_str(&format!("  - {}\n", clean(problem)));
        }
        let more = report.problems.len().saturating_sub(MAX_PROBLEMS);
        if more > 0 {
            out.push_str(&format!("  … and {more} more in the JSON/HTML report\n"));
        }
    }
    let verdict = Verdict::of(report);
    out.push_str(&verdict_lines(&verdict));
    for alarm in &verdict.alarms {
        out.push_str(alarm);
        out.push('\n');
    }
    out
}

/// "Verdict: FAIL: 3 of 5 targets met, 1 missed", then one line per reason and
/// one naming the targets not measured.
fn verdict_lines(v: &Verdict) -> String {
    let mut out = format!("Verdict: {}\n", v.headline);
    for reason in &v.reasons {
        out.push_str(&format!("  missed: {reason}\n"));
    }
    if !v.not_measured.is_empty() {
        out.push_str(&format!("  not measured: {}\n", v.not_measured.join(", ")));
    }
    out
}

/// Replaces control characters (a hostile target or problem string could carry
/// terminal escape sequences).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::report;
    use super::*;

    #[test]
    fn summary_shows_the_key_numbers() {
        let s = render_summary(&report());
        println!("{s}");
        for needle in [
            "embedded · 4 meetings × 25 participants · 60.0 s",
            "4 × 25 (100 participants)",
            "50 fps × 160 B",
            "seed",
            "314,400",
            "7,545,600",
            "7,545,012",
            "0.008 %",
            "1.80 / 3.20 / 7.90 ms",
            "48.20 / 2.10 ms",
            "jitter mean / max",
            "MB/s in / out",
            "frames decrypted after removal",
            "connect p50 / p99",
            "41.3 / 118.0 ms (102 samples)",
            "142.5 / 266.0 / 266.0 ms",
            "21.4 s",
            "2.84 µs",
            "412.0 MiB (whole process: SFU and load generator)",
            "12 (no_room: 9, stale_epoch: 3)",
            "96.3 s",
            "forwarding efficiency",
            "0.46",
            "Problems (2)",
            "Verdict: FAIL: 4 of 5 targets met, 1 missed\n",
            "  missed: rekey p99 266.0 ms, 1 incomplete (target ≤ 300 ms)\n",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
        assert!(!s.contains("!!!"), "{s}");
        assert!(!s.contains("NaN"), "{s}");
        assert!(!s.contains('\u{1b}'), "no colour codes: {s}");
        assert!(!s.contains("beyond expected"), "no surplus, no row: {s}");
        assert!(s.lines().count() <= 60, "{} lines", s.lines().count());
    }

    #[test]
    fn a_surplus_shows_as_zero_loss_with_a_footnote() {
        let mut r = report();
        r.frames_received = r.frames_expected;
        r.loss_ratio = -0.0;
        r.frames_beyond_expected = 37;
        let s = render_summary(&r);
        assert!(s.contains("  loss "), "{s}");
        assert!(s.contains("0.000 %"), "{s}");
        assert!(!s.contains("-0.000"), "{s}");
        assert!(s.contains("beyond expected ¹"), "{s}");
        assert!(s.contains("37"), "{s}");
        assert!(s.contains("¹ delivered inside a receiver's window"), "{s}");
    }

    #[test]
    fn bugs_are_loud() {
        let mut r = report();
        r.decrypt_failures = 3;
        r.removed_decrypted_frames = 7;
        let s = render_summary(&r);
        assert!(
            s.contains("!!! 3 DECRYPT FAILURES — this is a bug !!!"),
            "{s}"
        );
        assert!(
            s.contains("!!! 7 FRAMES DECRYPTED BY REMOVED PARTICIPANTS"),
            "{s}"
        );
        assert!(s.contains("! decrypt failures"), "{s}");
        assert!(s.lines().count() <= 62, "{} lines", s.lines().count());
    }

    #[test]
    fn missing_figures_are_na_and_input_is_cleaned() {
        let mut r = report();
        r.sfu_cpu_seconds = None;
        r.sfu_peak_rss_bytes = None;
        r.sfu_metrics = None;
        r.baseline = None;
        r.forwarding_efficiency = None;
        r.loss_ratio = f64::NAN;
        r.scenario.target = "evil\u{1b}[31m".to_owned();
        r.problems = (0..20).map(|i| format!("problem {i}")).collect();
        let s = render_summary(&r);
        assert!(s.contains("n/a (metrics not read)"), "{s}");
        assert!(!s.contains("NaN") && !s.contains('\u{1b}'), "{s}");
        assert!(!s.contains("Baseline"), "{s}");
        assert!(s.contains("… and 15 more"), "{s}");
        assert!(s.lines().count() <= 60, "{} lines", s.lines().count());
    }
}
