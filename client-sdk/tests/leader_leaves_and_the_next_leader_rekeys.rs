//! The key leader leaves: the remaining device with the lowest sender index becomes
//! leader, rekeys, and rotates the room; media keeps flowing among the others.

use std::time::Duration;

use conclave_sdk::client::MediaKind;
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_leaves_and_the_next_leader_rekeys() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty {
        users: [alice, _bob, _carol],
        devices: [_a, _b, _c],
        meetings: [meeting_a, mut meeting_b, mut meeting_c],
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;
    deliver(&meeting_b, MediaKind::Audio, b"hello carol", &mut meeting_c).await;
    let epoch = meeting_b.sending_epoch();

    // The successor is decided by sender index, the same on every device.
    let successor = meeting_b
        .participants()
        .into_iter()
        .filter(|p| p.user_id != alice.id())
        .min_by_key(|p| p.sender_index)
        .unwrap();

    meeting_a.leave().await.unwrap();
    assert!(meeting_a.is_ended());

    let new_epoch = wait_epoch_above(&meeting_b, epoch).await;
    assert_eq!(wait_epoch_above(&meeting_c, epoch).await, new_epoch);
    wait_participants(&meeting_b, 2).await;
    wait_participants(&meeting_c, 2).await;
    for m in [&meeting_b, &meeting_c] {
        let leader = m.participants().into_iter().find(|p| p.is_leader).unwrap();
        assert_eq!(leader.device_id, successor.device_id);
    }
    // Media flows both ways on the new epoch, also after the SFU's rotation grace
    // window (nobody was evicted: the new leader rotated the room and both proved it).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let f = deliver(&meeting_b, MediaKind::Audio, b"bob after", &mut meeting_c).await;
    assert_eq!(f.epoch, new_epoch);
    let f = deliver(&meeting_c, MediaKind::Audio, b"carol after", &mut meeting_b).await;
    assert_eq!(f.epoch, new_epoch);
}
