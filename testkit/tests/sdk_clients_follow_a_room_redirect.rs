//! Cluster mode with real SDK clients: a device connected to a node that does not own
//! its meeting's room is redirected to the owner, moves its connection there by itself
//! and joins; media flows both ways. The app sees one meeting.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_sdk::client::MediaKind;
use conclave_testkit::User;
use conclave_testkit::clients::deliver;
use conclave_testkit::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_another_node_follows_the_redirect_to_the_rooms_owner() {
    let cluster = TestCluster::start(2).await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.connect(&cluster.nodes[0]).await;
    let mut b = bob.connect(&cluster.nodes[1]).await;

    // Alice's meeting room opens on node one, its owner from now on.
    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    // The invitation reaches bob live on node two; his join there is redirected.
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;

    // Bob's join on node two was answered with a redirect; his client moved.
    assert_eq!(b.wait_redirected().await, cluster.nodes[0].addr.to_string());

    deliver(&meeting_a, MediaKind::Audio, b"to bob", &mut meeting_b).await;
    deliver(&meeting_b, MediaKind::Audio, b"to alice", &mut meeting_a).await;
    assert_eq!(meeting_a.safety_code(), meeting_b.safety_code());
    drop(a);
}
