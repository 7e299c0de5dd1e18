//! The verdict: the key figures of a run judged against their targets, and the
//! loud lines for figures that can only mean a bug.

use super::numbers::{NA, count, dist, pct, qty};
use super::{ChurnKind, Report};

/// Loss target: at most 0.1 % of the expected frames lost.
pub(super) const LOSS_TARGET: f64 = 0.001;
/// One-way latency p99 target, ms.
pub(super) const LATENCY_P99_TARGET_MS: f64 = 30.0;
/// Rekey p99 target, ms.
pub(super) const REKEY_P99_TARGET_MS: f64 = 300.0;

/// Whether the loss ratio means something.
pub(super) fn loss_measured(r: &Report) -> bool {
    r.frames_expected > 0 && r.loss_ratio.is_finite()
}

/// Outcome of one check against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Within the target.
    Met,
    /// Outside the target.
    Missed,
    /// Nothing to judge.
    NotMeasured,
}

/// One key figure judged against its target.
pub(super) struct Check {
    /// What is checked.
    pub(super) name: &'static str,
    /// The measured figure (or why there is none).
    pub(super) value: String,
    /// The target, for display.
    pub(super) target: &'static str,
    /// The judgement.
    pub(super) status: Status,
}

/// Whether any participant left or was removed (so the removed-participant check
/// and rekey times mean something).
fn had_departures(r: &Report) -> bool {
    r.rekey_ms.count > 0
        || r.churn_events
            .iter()
            .any(|e| matches!(e.kind, ChurnKind::Leave | ChurnKind::Remove))
}

/// The key figures against their targets.
pub(super) fn verdict(r: &Report) -> Vec<Check> {
    let l = &r.latency_ms;
    let k = &r.rekey_ms;
    let judge = |measured: bool, met: bool| match (measured, met) {
        (false, _) => Status::NotMeasured,
        (true, true) => Status::Met,
        (true, false) => Status::Missed,
    };
    let departures = had_departures(r);
    let mut rekey = qty(k.p99, 1, "ms");
    if k.incomplete > 0 {
        rekey.push_str(&format!(", {} incomplete", count(k.incomplete)));
    }
    let rekey_status = if k.incomplete > 0 {
        Status::Missed
    } else {
        let p99 = k.p99.filter(|p| p.is_finite());
        judge(p99.is_some(), p99.is_some_and(|p| p <= REKEY_P99_TARGET_MS))
    };
    vec![
        Check {
            name: "loss",
            value: if loss_measured(r) {
                pct(r.loss_ratio)
            } else {
                NA.to_owned()
            },
            target: "≤ 0.1 %",
            status: judge(loss_measured(r), r.loss_ratio <= LOSS_TARGET),
        },
        Check {
            name: "latency p99",
            value: dist(l, &[l.p99], 2),
            target: "≤ 30 ms",
            status: judge(
                l.count > 0 && l.p99.is_finite(),
                l.p99 <= LATENCY_P99_TARGET_MS,
            ),
        },
        Check {
            name: "decrypt failures",
            value: count(r.decrypt_failures),
            target: "= 0",
            status: judge(true, r.decrypt_failures == 0),
        },
        Check {
            name: "removed participants' decrypted frames",
            value: if departures {
                count(r.removed_decrypted_frames)
            } else {
                "n/a (nobody left)".to_owned()
            },
            target: "= 0",
            status: judge(
                departures || r.removed_decrypted_frames > 0,
                r.removed_decrypted_frames == 0,
            ),
        },
        Check {
            name: "rekey p99",
            value: rekey,
            target: "≤ 300 ms",
            status: rekey_status,
        },
    ]
}

/// Lines that must not be missed: each one is a bug in the system under test.
pub(super) fn alarms(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if r.decrypt_failures > 0 {
        let s = if r.decrypt_failures == 1 { "" } else { "S" };
        out.push(format!(
            "!!! {} DECRYPT FAILURE{s} — this is a bug !!!",
            count(r.decrypt_failures)
        ));
    }
    if r.removed_decrypted_frames > 0 {
        out.push(format!(
            "!!! {} FRAMES DECRYPTED BY REMOVED PARTICIPANTS AFTER THEIR REMOVAL — this is a bug !!!",
            count(r.removed_decrypted_frames)
        ));
    }
    out
}
