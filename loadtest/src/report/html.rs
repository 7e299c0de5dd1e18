//! HTML report (being written).
use super::Report;

/// Renders the report as one self-contained HTML page.
#[must_use]
pub fn render_html(report: &Report) -> String {
    format!("<pre>{}</pre>", report.frames_sent)
}
