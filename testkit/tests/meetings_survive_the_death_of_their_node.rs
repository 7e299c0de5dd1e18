//! Failover with real processes: three `conclave-sfu` nodes on 127.0.0.1–3 sharing one
//! real PostgreSQL, SDK clients that know every node. When the node owning a meeting's
//! room is killed (`kill -9`) or frozen past its lease (`SIGSTOP`), the meeting's
//! clients notice, reconnect to another node, wait out the dead owner's lease and
//! rejoin there at their current epoch, without the app's help: media flows again.
//! A meeting on another node is not disturbed. A frozen owner that wakes up does not
//! take its old room back.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use conclave_sdk::client::{ClientEvent, MediaKind, Meeting};
use conclave_sfu::store::{ClusterStore, Fence, NodeInfo};
use conclave_testkit::User;
use conclave_testkit::clients::{Device, deliver};
use conclave_testkit::cluster::open;
use conclave_testkit::process::ProcessCluster;

const SFU: &str = env!("CARGO_BIN_EXE_conclave-sfu-under-test");

/// Two devices in one meeting, both connected first to node `first`.
struct Call {
    host: Device,
    guest: Device,
    host_meeting: Meeting,
    guest_meeting: Meeting,
}

impl Call {
    async fn start(cluster: &ProcessCluster, first: usize, names: (&str, &str)) -> Call {
        let (host_user, guest_user) = (User::new(names.0), User::new(names.1));
        let host = host_user.connect_with(cluster.client_config(first)).await;
        let mut guest = guest_user.connect_with(cluster.client_config(first)).await;
        let (host_meeting, _) = host
            .client
            .start_meeting(&[guest_user.id()], &[MediaKind::Audio])
            .await
            .unwrap();
        let guest_meeting = guest.accept_next(&[MediaKind::Audio]).await;
        let mut call = Call {
            host,
            guest,
            host_meeting,
            guest_meeting,
        };
        call.media_flows(b"hello").await;
        call
    }

    /// A frame each way arrives.
    async fn media_flows(&mut self, tag: &[u8]) {
        let there = [tag, b" to guest"].concat();
        let back = [tag, b" to host"].concat();
        deliver(
            &self.host_meeting,
            MediaKind::Audio,
            &there,
            &mut self.guest_meeting,
        )
        .await;
        deliver(
            &self.guest_meeting,
            MediaKind::Audio,
            &back,
            &mut self.host_meeting,
        )
        .await;
    }

    /// Both clients reported that they reconnected by themselves.
    async fn both_reconnected(&mut self) {
        for device in [&mut self.host, &mut self.guest] {
            device
                .wait_for(|e| matches!(e, ClientEvent::Reconnected))
                .await;
        }
    }

    async fn owner(&self, cluster: &ProcessCluster) -> Option<(NodeInfo, Fence)> {
        let routing = *self.host_meeting.id().routing_id().as_bytes();
        let store = open(&cluster.url).await;
        tokio::task::spawn_blocking(move || store.room_owner(&routing).unwrap())
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meetings_owned_by_a_killed_node_resume_media_on_another_node() {
    let mut cluster = ProcessCluster::start(SFU, 3).await;
    let mut doomed = Call::start(&cluster, 0, ("alice", "bob")).await;
    let mut also_doomed = Call::start(&cluster, 0, ("carol", "dave")).await;
    let mut elsewhere = Call::start(&cluster, 1, ("erin", "frank")).await;
    let (owner, fence) = doomed.owner(&cluster).await.expect("an owner");
    assert_eq!(owner.node_id.as_str(), "node-1");
    let epochs = (
        doomed.host_meeting.sending_epoch(),
        also_doomed.host_meeting.sending_epoch(),
    );

    cluster.nodes[0].kill_9();

    // Both meetings come back on another node, at the epochs they had (no rekey was
    // needed: nobody left), and their clients say they reconnected.
    doomed.media_flows(b"after the kill").await;
    also_doomed.media_flows(b"after the kill").await;
    doomed.both_reconnected().await;
    also_doomed.both_reconnected().await;
    assert_eq!(doomed.host_meeting.sending_epoch(), epochs.0);
    assert_eq!(also_doomed.host_meeting.sending_epoch(), epochs.1);
    assert_eq!(
        doomed.host_meeting.safety_code(),
        doomed.guest_meeting.safety_code()
    );
    let (new_owner, new_fence) = doomed.owner(&cluster).await.expect("a new owner");
    assert_ne!(new_owner.node_id.as_str(), "node-1");
    assert!(new_fence > fence, "a takeover gets a larger fence");
    // The meeting on node two went on.
    elsewhere.media_flows(b"meanwhile").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_frozen_past_its_lease_loses_its_room_and_does_not_take_it_back() {
    let cluster = ProcessCluster::start(SFU, 3).await;
    let mut call = Call::start(&cluster, 0, ("alice", "bob")).await;
    let (owner, fence) = call.owner(&cluster).await.expect("an owner");
    assert_eq!(owner.node_id.as_str(), "node-1");

    // Frozen: no heartbeat, no packet. The clients move and the room is taken over
    // once node one's lease has run out.
    cluster.nodes[0].freeze();
    call.media_flows(b"while frozen").await;
    call.both_reconnected().await;
    let (taker, taken) = call.owner(&cluster).await.expect("a new owner");
    assert_ne!(taker.node_id.as_str(), "node-1");
    assert!(taken > fence);

    // Node one wakes up: its lease is over, so it drops what it had (telling nobody,
    // its clients are gone) and renews; it does not take the room back, and the call
    // on the new owner is not disturbed.
    cluster.nodes[0].resume();
    cluster.wait_for_leases(3).await;
    call.media_flows(b"after the thaw").await;
    assert_eq!(call.owner(&cluster).await, Some((taker, taken)));
    let store = Arc::new(open(&cluster.url).await);
    let live = tokio::task::spawn_blocking(move || store.live_nodes().unwrap())
        .await
        .unwrap();
    assert!(
        live.iter().any(|n| n.node_id.as_str() == "node-1"),
        "{live:?}"
    );
}
