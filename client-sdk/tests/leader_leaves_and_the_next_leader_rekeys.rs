//! The key leader leaves: the remaining device with the lowest sender index becomes
//! leader, rekeys, and rotates the room; media keeps flowing among the others.

mod support;

use std::time::Duration;

use conclave_sdk::client::MediaKind;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_leaves_and_the_next_leader_rekeys() {
    let sfu = Sfu::start().await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let a = alice.connect(&sfu).await;
    let mut b = bob.connect(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_c = c.accept_next(&[MediaKind::Audio]).await;
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
