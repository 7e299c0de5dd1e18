//! Two real `conclave-sfu` processes sharing one PostgreSQL, each serving its port with
//! four shards. A meeting's room lives on one node (its owner, by the cluster's claim)
//! and on one shard of it: a device connected elsewhere is redirected to the owner,
//! then, on the owner, to the room's shard (the same address, a steering byte), and
//! joins there. Media flows both ways; every redirect named the owner's address.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_sdk::client::{ClientEvent, MediaKind};
use conclave_testkit::User;
use conclave_testkit::clients::deliver_keeping_events;
use conclave_testkit::process::ProcessCluster;

const SFU: &str = env!("CARGO_BIN_EXE_conclave-sfu-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_another_node_reaches_the_owners_shard_for_the_room() {
    let cluster = ProcessCluster::start_sharded(SFU, 2, 4).await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.connect_with(cluster.client_config(0)).await;
    let mut b = bob.connect_with(cluster.client_config(1)).await;

    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    for round in 0..3 {
        let (there, back) = (format!("there {round}"), format!("back {round}"));
        deliver_keeping_events(
            &meeting_a,
            MediaKind::Audio,
            there.as_bytes(),
            &mut meeting_b,
        )
        .await;
        deliver_keeping_events(
            &meeting_b,
            MediaKind::Audio,
            back.as_bytes(),
            &mut meeting_a,
        )
        .await;
    }
    assert_eq!(meeting_a.safety_code(), meeting_b.safety_code());

    // Bob was sent to node one (the owner) at least once; any further redirect, and
    // any of alice's, was to a shard of node one: the same address.
    let owner = cluster.nodes[0].addr.to_string();
    let redirects = |events: Vec<ClientEvent>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::RoomRedirected { address, .. } => Some(address),
                _ => None,
            })
            .collect()
    };
    let of_b = redirects(std::iter::from_fn(|| b.events.try_recv()).collect());
    let of_a = redirects(std::iter::from_fn(|| a.events.try_recv()).collect());
    assert!(!of_b.is_empty(), "bob was not redirected to the owner");
    assert!(
        of_b.iter().chain(&of_a).all(|addr| *addr == owner),
        "a redirect named another node: bob {of_b:?}, alice {of_a:?}"
    );
}
