//! Terminal summary (being written).
use super::Report;

/// Renders the report as a terminal table.
#[must_use]
pub fn render_summary(report: &Report) -> String {
    format!("frames sent {}", report.frames_sent)
}
