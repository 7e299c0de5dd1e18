//! Cluster mode: a node that can no longer reach PostgreSQL cannot renew its lease. Before
//! the lease can run out at the store it tells its clients to move and refuses room
//! requests; once the lease has run out, another node takes its room over. A room on
//! another node is not disturbed at any point.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use conclave_proto::v1::{ErrorCode, event::Event};
use conclave_testkit::clock::WAIT;
use conclave_testkit::cluster::TestCluster;
use conclave_testkit::media::member;
use conclave_testkit::protocol::rooms::TestRoom;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgres_fences_itself_and_another_node_takes_over() {
    let metrics = conclave_sfu::metrics_http::install_recorder().unwrap();
    let mut cluster = TestCluster::start_with_proxy(2).await;
    let mut alice = member(&cluster.nodes[0], "alice").await;
    let room = TestRoom::new();
    let key = room.auth();
    alice.open_room(&key, &room.routing).await.unwrap();
    let dave = member(&cluster.nodes[1], "dave").await;
    let other = TestRoom::new();
    let other_key = other.auth();
    dave.open_room(&other_key, &other.routing).await.unwrap();
    let bob = member(&cluster.nodes[1], "bob").await;
    let erin = member(&cluster.nodes[1], "erin").await;

    cluster
        .proxy
        .as_mut()
        .expect("node one is proxied")
        .cut()
        .await;

    // Node one's lease runs out locally first: it tells its clients to move...
    alice
        .event(|e| matches!(e, Event::ShuttingDown(_)).then_some(()))
        .await;
    // ...and takes no room requests while it holds no lease.
    let refused = alice.open_room(&key, &room.routing).await.unwrap_err();
    assert_eq!(
        refused.server_code(),
        Some(ErrorCode::Unavailable),
        "{refused}"
    );

    // Once the lease has run out at the store, node two takes the room over. Until
    // then it points at node one, or, once node one has missed two heartbeats, asks
    // the client to retry when node one's lease has run out.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match bob.open_room(&key, &room.routing).await {
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.server_code(),
                    Some(ErrorCode::WrongNode | ErrorCode::Unavailable)
                ) =>
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never taken over: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    // Node two's own room was never disturbed.
    erin.join_room(&other_key, &other.routing).await.unwrap();

    // The operator saw it: heartbeats failed, a lease was lost, rooms were claimed
    // (both nodes record into this process's one recorder).
    let text = metrics.render();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("conclave_cluster_heartbeat_failures_total ") >= 1.0,
        "{text}"
    );
    assert!(
        value("conclave_cluster_leases_lost_total ") >= 1.0,
        "{text}"
    );
    assert!(
        value("conclave_cluster_room_claims_total{outcome=\"owned\"} ") >= 3.0,
        "{text}"
    );
}
