//! The JSON report: every field of [`Report`] (schema in `docs/loadtest.md`) plus
//! the [`Verdict`], the same one the terminal summary and the HTML page show.

use serde::Serialize;

use super::Report;
use super::verdict::Verdict;

/// The report as written to `--json`: its fields, then `verdict`.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a Report,
    verdict: Verdict,
}

/// Renders the report as pretty-printed JSON, verdict included.
///
/// # Errors
/// Only if serde_json cannot serialise a value (it can serialise every field of
/// [`Report`]; non-finite floats become `null`).
pub fn render_json(report: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&JsonReport {
        report,
        verdict: Verdict::of(report),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixture::report;
    use super::*;

    #[test]
    fn json_carries_the_figures_and_the_verdict() {
        let mut r = report();
        r.frames_beyond_expected = 3;
        let json: serde_json::Value = serde_json::from_str(&render_json(&r).unwrap()).unwrap();
        assert_eq!(json.pointer("/schema_version"), Some(&2.into()));
        assert_eq!(json.pointer("/frames_beyond_expected"), Some(&3.into()));
        assert_eq!(json.pointer("/verdict/outcome"), Some(&"fail".into()));
        assert_eq!(
            json.pointer("/verdict/checks/4/status"),
            Some(&"missed".into())
        );
    }
}
