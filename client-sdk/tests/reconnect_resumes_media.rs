//! The connection drops (the SFU restarts on the same address): both clients reconnect,
//! rejoin the meeting's room at the current epoch without the app's help, and media
//! resumes. The app only sees Disconnected and Reconnected events.

mod support;

use conclave_sdk::client::{ClientEvent, MediaKind};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resumes_media() {
    let sfu = Sfu::start().await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.connect(&sfu).await;
    let mut b = bob.connect(&sfu).await;
    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"before", &mut meeting_b).await;
    let epoch = meeting_a.sending_epoch();

    let sfu = sfu.restart().await;
    for device in [&mut a, &mut b] {
        device
            .wait_for(|e| matches!(e, ClientEvent::Disconnected { .. }))
            .await;
        device
            .wait_for(|e| matches!(e, ClientEvent::Reconnected))
            .await;
    }

    // Same meeting, same epoch, media flows both ways again.
    let f = deliver(&meeting_a, MediaKind::Audio, b"after", &mut meeting_b).await;
    assert_eq!(f.epoch, epoch);
    deliver(&meeting_b, MediaKind::Audio, b"after too", &mut meeting_a).await;
    assert_eq!(meeting_a.participants().len(), 2);
    drop(sfu);
}
