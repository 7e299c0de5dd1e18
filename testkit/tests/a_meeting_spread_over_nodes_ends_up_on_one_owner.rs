//! Three real `conclave-sfu` processes on 127.0.0.1–3 sharing one PostgreSQL: the
//! members of one meeting connect first to three different nodes. The node where the
//! meeting's room is first opened owns it; the others' joins are redirected there, their
//! clients move by themselves, and everyone hears everyone with equal safety codes.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_sdk::client::MediaKind;
use conclave_sfu::store::ClusterStore;
use conclave_testkit::User;
use conclave_testkit::clients::deliver;
use conclave_testkit::cluster::open;
use conclave_testkit::process::ProcessCluster;

const SFU: &str = env!("CARGO_BIN_EXE_conclave-sfu-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_whose_members_start_on_three_nodes_ends_up_on_one_owner() {
    let cluster = ProcessCluster::start(SFU, 3).await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let a = alice.connect_with(cluster.client_config(0)).await;
    let mut b = bob.connect_with(cluster.client_config(1)).await;
    let mut c = carol.connect_with(cluster.client_config(2)).await;

    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    // The invitations reach bob and carol live on their own nodes.
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_c = c.accept_next(&[MediaKind::Audio]).await;

    // Their joins were redirected to node one, which owns the room.
    let owner = cluster.nodes[0].addr.to_string();
    for device in [&mut b, &mut c] {
        assert_eq!(device.wait_redirected().await, owner);
    }
    let routing = *meeting_a.id().routing_id().as_bytes();
    let store = open(&cluster.url).await;
    let (node, _) = tokio::task::spawn_blocking(move || store.room_owner(&routing).unwrap())
        .await
        .unwrap()
        .expect("the room has an owner");
    assert_eq!(node.node_id.as_str(), "node-1");

    deliver(&meeting_a, MediaKind::Audio, b"a to b", &mut meeting_b).await;
    deliver(&meeting_b, MediaKind::Audio, b"b to c", &mut meeting_c).await;
    deliver(&meeting_c, MediaKind::Audio, b"c to a", &mut meeting_a).await;
    let code = meeting_a.safety_code();
    assert_eq!(meeting_b.safety_code(), code);
    assert_eq!(meeting_c.safety_code(), code);
}
