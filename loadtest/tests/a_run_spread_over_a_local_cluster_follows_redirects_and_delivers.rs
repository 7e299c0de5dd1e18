//! Cluster mode under the load test: `--local-cluster 3` starts three nodes on one
//! throwaway PostgreSQL and deals the participants over them in turn, so most meetings
//! have members whose first node does not own the meeting's room. They follow the
//! redirects to the owner, frames flow, nothing fails to decrypt, and the report says
//! where the participants went. No timing thresholds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use conclave_loadtest::report::render_summary;
use conclave_loadtest::{Options, run};

#[test]
fn a_run_spread_over_a_local_cluster_follows_redirects_and_delivers() {
    let options = Options::try_parse_from([
        "conclave-loadtest",
        "--local-cluster",
        "3",
        "--meetings",
        "3",
        "--participants",
        "4",
        "--duration",
        "3",
        "--settle-ms",
        "500",
        "--quiet",
    ])
    .unwrap();
    let report = run(options).expect("the run completes");
    println!("{}", render_summary(&report));

    assert!(report.frames_received > 0, "{:?}", report.problems);
    assert_eq!(report.decrypt_failures, 0, "{:?}", report.problems);
    let cluster = report.cluster.as_ref().expect("a cluster section");
    assert_eq!(cluster.nodes.len(), 3);
    // Twelve participants dealt over three nodes: four connect first to each.
    for node in &cluster.nodes {
        assert_eq!(node.connected_first, 4, "{cluster:?}");
    }
    let placed: usize = cluster.nodes.iter().map(|n| n.placed_last).sum();
    assert_eq!(placed, 12, "{cluster:?}");
    // Each meeting's members are spread over the three nodes: those not on the
    // owner's node were redirected there.
    assert!(cluster.redirects >= 3, "{cluster:?}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    for key in [
        "/cluster/redirects",
        "/cluster/nodes/0/address",
        "/cluster/nodes/0/connected_first",
        "/cluster/nodes/0/placed_last",
    ] {
        assert!(json.pointer(key).is_some(), "{key} missing");
    }
}
