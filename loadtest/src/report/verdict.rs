//! The verdict: the key figures of a run judged against their targets, the loud
//! lines for figures that can only mean a bug, and the outcome. Computed here
//! only ([`Verdict::of`]); the terminal summary, the JSON and the HTML page render
//! this one value, so they always agree.

use serde::Serialize;

use super::numbers::{NA, count, dist, loss_pct, qty};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within the target.
    Met,
    /// Outside the target.
    Missed,
    /// Nothing to judge.
    NotMeasured,
}

/// One key figure judged against its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// The measured figure (or why there is none).
    pub value: String,
    /// The target, for display.
    pub target: &'static str,
    /// The judgement.
    pub status: Status,
}

impl Check {
    /// "rekey p99 412.0 ms (target ≤ 300 ms)".
    fn reason(&self) -> String {
        format!("{} {} (target {})", self.name, self.value, self.target)
    }
}

/// Pass or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every measured target met and no bug seen.
    Pass,
    /// A target missed or a bug seen.
    Fail,
}

/// The run judged: one value that every rendering shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Pass or fail.
    pub outcome: Outcome,
    /// "FAIL: 3 of 5 targets met, 1 missed, 1 not measured".
    pub headline: String,
    /// Why it failed, one line per missed target ("loss 2.164 % (target ≤ 0.1 %)");
    /// empty when it passed.
    pub reasons: Vec<String>,
    /// The targets this run could not judge (nobody left, no rekey, ...).
    pub not_measured: Vec<String>,
    /// Every key figure against its target.
    pub checks: Vec<Check>,
    /// Lines that must not be missed: each one is a bug in the system under test
    /// (the run exits with status 2).
    pub alarms: Vec<String>,
}

impl Verdict {
    /// Judges `r`.
    #[must_use]
    pub fn of(r: &Report) -> Self {
        let checks = checks(r);
        let alarms = alarms(r);
        let with = |s: Status| checks.iter().filter(move |c| c.status == s);
        let reasons: Vec<String> = with(Status::Missed).map(Check::reason).collect();
        let not_measured: Vec<String> = with(Status::NotMeasured)
            .map(|c| c.name.to_owned())
            .collect();
        let outcome = if reasons.is_empty() && alarms.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail
        };
        let mut headline = format!(
            "{}: {} of {} targets met",
            match outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
            },
            with(Status::Met).count(),
            checks.len()
        );
        if !reasons.is_empty() {
            headline.push_str(&format!(", {} missed", reasons.len()));
        }
        if !not_measured.is_empty() {
            headline.push_str(&format!(", {} not measured", not_measured.len()));
        }
        Verdict {
            outcome,
            headline,
            reasons,
            not_measured,
            checks,
            alarms,
        }
    }

    /// Whether the run saw a security bug (exit status 2).
    #[must_use]
    pub fn security_failure(&self) -> bool {
        !self.alarms.is_empty()
    }
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
fn checks(r: &Report) -> Vec<Check> {
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
                loss_pct(r.loss_ratio)
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
fn alarms(r: &Report) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::super::fixture::report;
    use super::*;

    #[test]
    fn a_missed_target_fails_with_its_reason() {
        let v = Verdict::of(&report());
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.headline, "FAIL: 4 of 5 targets met, 1 missed");
        assert_eq!(
            v.reasons,
            vec!["rekey p99 266.0 ms, 1 incomplete (target ≤ 300 ms)".to_owned()]
        );
        assert!(v.alarms.is_empty() && !v.security_failure());
    }

    #[test]
    fn targets_met_pass_and_unmeasured_ones_are_named() {
        let mut r = report();
        r.rekey_ms.incomplete = 0;
        let v = Verdict::of(&r);
        assert_eq!(v.outcome, Outcome::Pass);
        assert_eq!(v.headline, "PASS: 5 of 5 targets met");
        assert!(v.reasons.is_empty());
        r.churn_events.clear();
        r.rekey_ms = super::super::RekeyStats::default();
        let v = Verdict::of(&r);
        assert_eq!(v.outcome, Outcome::Pass);
        assert_eq!(v.headline, "PASS: 3 of 5 targets met, 2 not measured");
        assert_eq!(
            v.not_measured,
            vec!["removed participants' decrypted frames", "rekey p99"]
        );
    }

    #[test]
    fn a_bug_fails_and_is_a_security_failure() {
        let mut r = report();
        r.rekey_ms.incomplete = 0;
        r.decrypt_failures = 1;
        let v = Verdict::of(&r);
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(v.security_failure());
        assert_eq!(
            v.reasons,
            vec!["decrypt failures 1 (target = 0)".to_owned()]
        );
    }

    #[test]
    fn more_frames_than_expected_is_no_negative_loss() {
        let mut r = report();
        r.loss_ratio = -0.0;
        r.frames_beyond_expected = 12;
        let v = Verdict::of(&r);
        let loss = v.checks.iter().find(|c| c.name == "loss");
        assert_eq!(loss.map(|c| c.value.as_str()), Some("0.000 %"));
        assert_eq!(loss.map(|c| c.status), Some(Status::Met));
    }
}
