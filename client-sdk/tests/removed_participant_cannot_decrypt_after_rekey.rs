//! The key leader removes a participant: the meeting rekeys to the remaining devices,
//! the removed device cannot decrypt anything sent on the new epoch, and once the room
//! rotates the SFU stops routing datagrams to it.

use std::time::Duration;

use conclave_sdk::client::{MediaKind, MeetingEvent};
use conclave_sdk::meeting::rekey::EndReason;
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_participant_cannot_decrypt_frames_after_the_rekey_and_stops_receiving_datagrams() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty {
        users: [_alice, _bob, mallory],
        devices: [_a, _b, m],
        meetings: [meeting_a, mut meeting_b, mut meeting_m],
    } = ThreeParty::start(&sfu, ["alice", "bob", "mallory"], &[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"before", &mut meeting_m).await;
    let epoch = meeting_a.sending_epoch();

    meeting_a.remove(&[mallory.id()]).await.unwrap();

    // Mallory learns she was removed and holds no key any more.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match meeting_m.next_event().await {
                Some(MeetingEvent::Ended { reason }) => return reason,
                Some(_) => continue,
                None => panic!("event stream ended without an Ended event"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, EndReason::Removed);
    assert!(meeting_m.is_ended());

    // Alice and Bob move to a new epoch and keep talking.
    let new_epoch = wait_epoch_above(&meeting_a, epoch).await;
    wait_epoch_above(&meeting_b, epoch).await;
    let f = deliver(&meeting_a, MediaKind::Audio, b"after", &mut meeting_b).await;
    assert_eq!(f.epoch, new_epoch);
    wait_participants(&meeting_a, 2).await;
    assert!(
        meeting_b
            .participants()
            .iter()
            .all(|p| p.user_id != mallory.id())
    );

    // Mallory's device decrypted nothing of the new epoch (it has no key) ...
    while let Some(f) = meeting_m.try_recv_frame() {
        assert!(
            f.epoch < new_epoch,
            "removed device decrypted a frame of the new epoch"
        );
    }
    // ... and after the rotation's grace window the SFU routes nothing to it: no
    // datagram of any kind arrives any more, however much Alice sends.
    let stats_before = meeting_m.stats();
    tokio::time::sleep(Duration::from_millis(1_500)).await; // SFU grace (1 s) elapses
    let datagrams_before = m.client.datagrams_received();
    for i in 0..50u8 {
        meeting_a
            .send_frame(MediaKind::Audio, false, &[i; 100])
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"still flowing",
        &mut meeting_b,
    )
    .await;
    let stats_after = meeting_m.stats();
    assert_eq!(stats_after.frames_received, stats_before.frames_received);
    assert_eq!(stats_after.unknown_key, stats_before.unknown_key);
    assert_eq!(
        m.client.datagrams_received(),
        datagrams_before,
        "no datagram reaches the removed device"
    );
    assert_eq!(
        meeting_m
            .send_frame(MediaKind::Audio, false, b"x")
            .unwrap_err()
            .to_string(),
        "the meeting has ended for this device"
    );
}
