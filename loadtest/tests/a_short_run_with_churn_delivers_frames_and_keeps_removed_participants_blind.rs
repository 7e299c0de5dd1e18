//! CI smoke: a bounded run (two meetings × five participants, a few seconds, churn that
//! includes a leave, a join and a removal) against the in-process SFU, with the
//! baseline relay. Asserts that frames flowed, nothing failed to decrypt, a removed
//! participant decrypted nothing after its removal, chat (reliable in-meeting messages)
//! arrived in each sender's order through the churn, and the JSON report carries the
//! documented keys. No timing thresholds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use conclave_loadtest::report::{ChurnKind, render_html, render_json, render_summary};
use conclave_loadtest::{Options, run};

#[test]
fn a_short_run_with_churn_delivers_frames_and_keeps_removed_participants_blind() {
    let options = Options::try_parse_from([
        "conclave-loadtest",
        "--embedded",
        "--meetings",
        "2",
        "--participants",
        "5",
        "--duration",
        "9",
        "--churn",
        "24",
        "--settle-ms",
        "500",
        "--baseline",
        "--chat-per-minute",
        "120",
        "--quiet",
    ])
    .unwrap();
    let report = run(options).expect("the run completes");
    println!("{}", render_summary(&report));

    assert!(report.frames_sent > 0);
    assert!(report.frames_expected > 0);
    assert!(report.frames_received > 0);
    assert!((0.0..=1.0).contains(&report.loss_ratio));
    assert!(report.latency_ms.count > 0);
    assert_eq!(report.decrypt_failures, 0, "{:?}", report.problems);
    assert_eq!(report.removed_decrypted_frames, 0, "{:?}", report.problems);
    let kinds: Vec<ChurnKind> = report.churn_events.iter().map(|e| e.kind).collect();
    for kind in [ChurnKind::Leave, ChurnKind::Join, ChurnKind::Remove] {
        assert!(kinds.contains(&kind), "churn had {kinds:?}");
    }
    assert!(report.rekey_ms.count >= 2);
    // Chat went on through the churn, each sender's messages in order.
    let chat = report.chat.as_ref().expect("chat ran");
    assert!(chat.sent > 0 && chat.received > 0, "{chat:?}");
    assert_eq!(chat.out_of_order, 0);
    let baseline = report.baseline.as_ref().expect("baseline ran");
    assert!(baseline.frames_received > 0);
    assert!(
        report
            .sfu_metrics
            .as_ref()
            .is_some_and(|m| m.datagrams_forwarded > 0)
    );

    let json: serde_json::Value = serde_json::from_str(&render_json(&report).unwrap()).unwrap();
    for key in [
        "/frames_sent",
        "/frames_received",
        "/loss_ratio",
        "/frames_beyond_expected",
        "/verdict/outcome",
        "/verdict/reasons",
        "/latency_ms/p50",
        "/latency_ms/p99",
        "/decrypt_failures",
        "/removed_decrypted_frames",
        "/rekey_ms/p50",
        "/rekey_ms/p99",
        "/sfu_cpu_seconds",
        "/sfu_peak_rss_bytes",
        "/loadgen_cpu_us_per_received_frame",
        "/sfu_rss_kib_per_participant",
        "/chat/received",
        "/chat/latency_ms/p99",
    ] {
        assert!(json.pointer(key).is_some(), "JSON report lacks {key}");
    }
    assert!(render_html(&report).starts_with("<!DOCTYPE html>"));
}
