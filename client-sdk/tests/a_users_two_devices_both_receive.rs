//! Multi-device: every device of an invited user gets its own destination entry and
//! can join; removing the user removes all of its devices.

use conclave_sdk::client::{MediaKind, MeetingEvent};
use conclave_sdk::meeting::rekey::EndReason;
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_two_devices_both_receive_and_removing_the_user_removes_both() {
    let sfu = TestSfu::start_for_clients().await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let a = alice.connect(&sfu).await;
    let mut phone = bob.connect(&sfu).await;
    let mut laptop = bob.connect(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    assert_ne!(phone.id(), laptop.id());

    let (meeting_a, report) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let bob_devices: Vec<_> = report
        .invited
        .iter()
        .filter(|(u, _)| *u == bob.id())
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(bob_devices.len(), 2, "each of Bob's devices is invited");
    assert!(bob_devices.contains(&phone.id()) && bob_devices.contains(&laptop.id()));

    let mut on_phone = phone.accept_next(&[MediaKind::Audio]).await;
    let mut on_laptop = laptop.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_c = c.accept_next(&[MediaKind::Audio]).await;
    assert_eq!(meeting_a.participants().len(), 4);
    deliver(&meeting_a, MediaKind::Audio, b"to both", &mut on_phone).await;
    deliver(&meeting_a, MediaKind::Audio, b"to both", &mut on_laptop).await;
    // The two devices are distinct senders.
    let f = deliver(&on_phone, MediaKind::Audio, b"from phone", &mut meeting_c).await;
    assert_eq!((f.user_id, f.device_id), (bob.id(), phone.id()));
    let f = deliver(&on_laptop, MediaKind::Audio, b"from laptop", &mut meeting_c).await;
    assert_eq!((f.user_id, f.device_id), (bob.id(), laptop.id()));

    let epoch = meeting_a.sending_epoch();
    meeting_a.remove(&[bob.id()]).await.unwrap();
    for m in [&mut on_phone, &mut on_laptop] {
        let reason = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(MeetingEvent::Ended { reason }) = m.next_event().await {
                    return reason;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(reason, EndReason::Removed);
    }
    wait_epoch_above(&meeting_c, epoch).await;
    wait_participants(&meeting_c, 2).await;
    deliver(&meeting_a, MediaKind::Audio, b"just us", &mut meeting_c).await;
}
