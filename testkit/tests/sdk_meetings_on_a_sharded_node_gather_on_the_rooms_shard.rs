//! SDK clients against a node served by four shards: whichever shard a device's
//! connection reached, its meeting's room is joined on the room's shard (a device
//! elsewhere follows the shard redirect by itself, on a connection of its own to the
//! same address), and media flows among all of them, through a leave and its rekey.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_sdk::client::{ClientEvent, MediaKind};
use conclave_testkit::clients::{deliver, wait_epoch_above};
use conclave_testkit::meeting::Group;
use conclave_testkit::sfu::{TestSfu, client_test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_meets_on_the_rooms_shard_whichever_shard_it_reached() {
    let sfu = TestSfu::start_sharded(client_test_config(), 4).await;
    let Group {
        mut devices,
        mut meetings,
        ..
    } = Group::start(
        &sfu,
        ["alice", "bob", "carol", "dave", "erin", "frank"],
        &[MediaKind::Audio],
    )
    .await;
    let [first, rest @ ..] = &mut meetings;
    for (i, other) in rest.iter_mut().enumerate() {
        deliver(first, MediaKind::Audio, format!("to {i}").as_bytes(), other).await;
        deliver(
            other,
            MediaKind::Audio,
            format!("from {i}").as_bytes(),
            first,
        )
        .await;
        assert_eq!(other.safety_code(), first.safety_code());
    }

    // Six devices on four shards: all six reach the room's own shard first with
    // probability 4^-6, so some device moved. A shard redirect names no other node.
    let mut moved = 0;
    for device in &mut devices {
        while let Some(event) = device.events.try_recv() {
            if let ClientEvent::RoomRedirected { address, .. } = event {
                assert!(
                    address.is_empty(),
                    "a shard redirect named a node: {address}"
                );
                moved += 1;
            }
        }
    }
    assert!(moved > 0, "no device was redirected to the room's shard");

    // A leave rekeys the room on its shard; the others go on.
    let epoch = meetings[0].sending_epoch();
    let [.., last] = &meetings;
    last.leave().await.unwrap();
    for m in meetings.iter().take(5) {
        wait_epoch_above(m, epoch).await;
    }
    let [a, b, ..] = &mut meetings;
    deliver(a, MediaKind::Audio, b"after the leave", b).await;
}
