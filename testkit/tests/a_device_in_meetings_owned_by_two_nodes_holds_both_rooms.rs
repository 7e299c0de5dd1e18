//! Three real `conclave-sfu` processes on 127.0.0.1–3 sharing one PostgreSQL. Alice is
//! in two meetings at once whose rooms two different nodes own: node one (where her
//! client connected) and node two (where the other meeting's host opened it). Her
//! client keeps its primary connection on node one and joins the second room on a
//! rooms-only connection to node two, so media flows in both meetings at once and
//! neither room pushes her out of the other (a client with one connection would bounce
//! between the two owners). When node two is killed, only the second meeting pauses;
//! it resumes on another node while the first never notices.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_sdk::client::{ClientEvent, MediaKind, Meeting, MeetingEvent};
use conclave_sdk::meeting::MeetingId;
use conclave_sfu::store::ClusterStore;
use conclave_testkit::User;
use conclave_testkit::clients::deliver_keeping_events;
use conclave_testkit::cluster::open;
use conclave_testkit::process::ProcessCluster;

const SFU: &str = env!("CARGO_BIN_EXE_conclave-sfu-under-test");

/// A frame each way between `x` and `y` arrives (their control events stay queued).
async fn both_ways(x: &mut Meeting, y: &mut Meeting, tag: &str) {
    let there = format!("{tag}: there");
    let back = format!("{tag}: back");
    deliver_keeping_events(x, MediaKind::Audio, there.as_bytes(), y).await;
    deliver_keeping_events(y, MediaKind::Audio, back.as_bytes(), x).await;
}

/// The control events queued on `meeting`.
fn control_events(meeting: &mut Meeting) -> Vec<MeetingEvent> {
    std::iter::from_fn(|| meeting.try_next_control_event()).collect()
}

/// The node id that owns `meeting`'s room in the shared store.
async fn owner(cluster: &ProcessCluster, meeting: MeetingId) -> String {
    let routing = *meeting.routing_id().as_bytes();
    let store = open(&cluster.url).await;
    let (node, _) = tokio::task::spawn_blocking(move || store.room_owner(&routing).unwrap())
        .await
        .unwrap()
        .expect("the room has an owner");
    node.node_id.as_str().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_in_meetings_owned_by_two_nodes_holds_both_rooms() {
    let mut cluster = ProcessCluster::start(SFU, 3).await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let mut a = alice.connect_with(cluster.client_config(0)).await;
    let mut b = bob.connect_with(cluster.client_config(0)).await;
    let c = carol.connect_with(cluster.client_config(1)).await;

    // Meeting one: alice hosts bob; its room is opened on node one.
    let (mut one_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut one_b = b.accept_next(&[MediaKind::Audio]).await;
    both_ways(&mut one_a, &mut one_b, "one").await;
    // Meeting two: carol hosts alice; its room is opened on node two.
    let (mut two_c, _) = c
        .client
        .start_meeting(&[alice.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut two_a = a.accept_next(&[MediaKind::Audio]).await;
    assert_eq!(a.wait_redirected().await, cluster.nodes[1].addr.to_string());
    assert_eq!(owner(&cluster, one_a.id()).await, "node-1");
    assert_eq!(owner(&cluster, two_a.id()).await, "node-2");

    // Both meetings flow, round after round: holding one room never costs the other.
    for round in 0..5 {
        both_ways(&mut one_a, &mut one_b, &format!("one, round {round}")).await;
        both_ways(&mut two_a, &mut two_c, &format!("two, round {round}")).await;
    }
    assert_eq!(owner(&cluster, one_a.id()).await, "node-1");
    assert_eq!(owner(&cluster, two_a.id()).await, "node-2");
    let before: Vec<ClientEvent> = std::iter::from_fn(|| a.events.try_recv()).collect();
    assert!(
        !before.iter().any(|e| matches!(
            e,
            ClientEvent::Disconnected { .. } | ClientEvent::RoomRedirected { .. }
        )),
        "alice's client moved: {before:?}"
    );
    let _ = (control_events(&mut one_a), control_events(&mut two_a));

    // Node two dies: meeting two pauses and resumes on another node; meeting one,
    // whose room and alice's primary connection are on node one, never notices.
    cluster.nodes[1].kill_9();
    both_ways(&mut two_a, &mut two_c, "two, after the kill").await;
    both_ways(&mut one_a, &mut one_b, "one, after the kill").await;
    assert_ne!(owner(&cluster, two_a.id()).await, "node-2");
    assert_eq!(owner(&cluster, one_a.id()).await, "node-1");
    let two_events = control_events(&mut two_a);
    let interrupted = two_events
        .iter()
        .position(|e| matches!(e, MeetingEvent::MediaInterrupted));
    let resumed = two_events
        .iter()
        .position(|e| matches!(e, MeetingEvent::MediaResumed));
    assert!(
        matches!((interrupted, resumed), (Some(i), Some(r)) if i < r),
        "{two_events:?}"
    );
    let one_events = control_events(&mut one_a);
    assert!(
        !one_events
            .iter()
            .any(|e| matches!(e, MeetingEvent::MediaInterrupted)),
        "{one_events:?}"
    );
    let after: Vec<ClientEvent> = std::iter::from_fn(|| a.events.try_recv()).collect();
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, ClientEvent::Disconnected { .. })),
        "alice's primary connection dropped: {after:?}"
    );
}
