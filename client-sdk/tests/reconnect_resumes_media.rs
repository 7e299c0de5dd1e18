//! The connection drops (the SFU restarts on the same address): both clients reconnect,
//! rejoin the meeting's room at the current epoch without the app's help, and media
//! resumes. The app only sees Disconnected and Reconnected events.

use conclave_sdk::client::{ClientEvent, DisconnectReason, MediaKind};
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resumes_media() {
    let sfu = TestSfu::start_for_clients().await;
    let ([_alice, bob], [mut a, mut b]) = connect_users(&sfu, ["alice", "bob"]).await;
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
        // A graceful restart announces itself: the client closes on the server's
        // word instead of waiting for the connection to break.
        let event = device
            .wait_for(|e| matches!(e, ClientEvent::Disconnected { .. }))
            .await;
        assert!(
            matches!(
                event,
                ClientEvent::Disconnected {
                    reason: DisconnectReason::ServerShuttingDown { .. }
                }
            ),
            "{event:?}"
        );
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
