//! An invitee rejects: the key leader rekeys the meeting to the devices that remain.

use conclave_sdk::client::{MediaKind, MeetingEvent};
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_triggers_a_rekey() {
    let sfu = TestSfu::start_for_clients().await;
    let ([_alice, bob, carol], [a, mut b, mut c]) =
        connect_users(&sfu, ["alice", "bob", "carol"]).await;
    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let start_epoch = meeting_b.sending_epoch();
    let invitation = c.invitation().await;
    c.client.reject(&invitation).await.unwrap();

    // The leader sees the reject ...
    let rejected_by = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(MeetingEvent::Reply {
                from,
                accepted: false,
                ..
            }) = meeting_a.next_event().await
            {
                return from.user_id;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(rejected_by, carol.id());
    // ... and both remaining devices move to a new epoch without Carol.
    let epoch = wait_epoch_above(&meeting_a, start_epoch).await;
    assert_eq!(wait_epoch_above(&meeting_b, start_epoch).await, epoch);
    wait_participants(&meeting_b, 2).await;
    assert!(
        meeting_a
            .participants()
            .iter()
            .all(|p| p.user_id != carol.id())
    );
    let f = deliver(
        &meeting_a,
        MediaKind::Audio,
        b"after reject",
        &mut meeting_b,
    )
    .await;
    assert_eq!(f.epoch, epoch);
    // The old epoch's key is dropped once the grace window passes.
    tokio::time::timeout(WAIT, async {
        while meeting_b.held_epochs() != vec![epoch] {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the previous epoch is dropped after the grace window");
    // Answering again is refused.
    assert!(c.client.accept(&invitation, &[]).await.is_err());
}
