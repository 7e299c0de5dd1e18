//! The terminal summary, the JSON and the HTML page carry one and the same
//! verdict: same outcome, same headline, same reasons.

use super::escape::escape;
use super::fixture::report;
use super::{Outcome, Report, Verdict, render_html, render_json, render_summary};

/// Checks the three renderings of `r` against [`Verdict::of`].
fn renderings_agree(r: &Report) -> Verdict {
    let verdict = Verdict::of(r);
    let summary = render_summary(r);
    let html = render_html(r);
    let json: serde_json::Value = serde_json::from_str(&render_json(r).unwrap()).unwrap();

    // JSON: the verdict object is the verdict, field by field.
    assert_eq!(json["verdict"], serde_json::to_value(&verdict).unwrap());
    let outcome = match verdict.outcome {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
    };
    assert_eq!(json["verdict"]["outcome"], outcome);

    // Terminal: the headline after "Verdict: ", each reason on its own line.
    let line = format!("Verdict: {}\n", verdict.headline);
    assert_eq!(summary.matches(&line).count(), 1, "{summary}");
    assert!(verdict.headline.starts_with(&outcome.to_uppercase()));
    for reason in &verdict.reasons {
        assert!(
            summary.contains(&format!("  missed: {reason}\n")),
            "{summary}"
        );
    }
    assert_eq!(
        summary.matches("  missed: ").count(),
        verdict.reasons.len(),
        "{summary}"
    );

    // HTML: the same headline and reasons (escaped), nothing more.
    let heading = format!("<h2>Verdict: {}</h2>", escape(&verdict.headline));
    assert_eq!(html.matches(&heading).count(), 1);
    for reason in &verdict.reasons {
        assert!(html.contains(&format!("<li>missed: {}</li>", escape(reason))));
    }
    assert_eq!(html.matches("<li>missed: ").count(), verdict.reasons.len());
    for alarm in &verdict.alarms {
        assert!(summary.contains(alarm.as_str()));
        assert!(html.contains(&escape(alarm)));
    }
    verdict
}

#[test]
fn terminal_json_and_html_give_the_same_verdict() {
    // The fixture: one target missed (an incomplete rekey).
    let v = renderings_agree(&report());
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.reasons.len(), 1);

    // Everything met.
    let mut r = report();
    r.rekey_ms.incomplete = 0;
    assert_eq!(renderings_agree(&r).outcome, Outcome::Pass);

    // Several targets missed and a security bug.
    let mut r = report();
    r.loss_ratio = 0.02;
    r.latency_ms.p99 = 398.85;
    r.decrypt_failures = 2;
    let v = renderings_agree(&r);
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.reasons.len(), 4);
    assert_eq!(v.alarms.len(), 1);

    // More frames than expected: no negative loss anywhere.
    let mut r = report();
    r.loss_ratio = -0.0;
    r.frames_beyond_expected = 5;
    r.rekey_ms.incomplete = 0;
    assert_eq!(renderings_agree(&r).outcome, Outcome::Pass);
    assert!(!render_summary(&r).contains("-0.000"));
    assert!(!render_html(&r).contains("-0.000"));
}
