//! An invitee that is offline when invited gets the invitation from its mailbox when it
//! connects again (restored from the one stored credentials object, which carries its
//! prekey pool), and can join.

use conclave_sdk::client::{Client, ClientEvent, DeviceCredentials, MediaKind};
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_invitee_gets_the_invite_from_the_mailbox_on_connect() {
    let sfu = TestSfu::start_for_clients().await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.connect(&sfu).await;

    // Bob registers once and goes offline; the app stores one object.
    let (client, mut events) = Client::connect(sfu.client_config(), bob.credentials())
        .await
        .unwrap();
    // Wait until the prekeys are on the server, then store the credentials with them.
    loop {
        if let Some(ClientEvent::PrekeysUploaded { .. }) = events.recv().await {
            break;
        }
    }
    let stored = client.export_credentials().await.unwrap();
    client.close().await;

    // Alice invites Bob while he is offline: the invite waits in his mailbox.
    let (meeting_a, report) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    assert_eq!(report.invited.len(), 1);

    // Bob's app restarts from storage.
    let restored = DeviceCredentials::import(&stored, now()).unwrap();
    let (client, events) = Client::connect(sfu.client_config(), restored)
        .await
        .unwrap();
    let mut b = Device { client, events };
    let invitation = b.invitation().await;
    assert_eq!(invitation.meeting_id, meeting_a.id());
    let mut meeting_b = b
        .client
        .accept(&invitation, &[MediaKind::Audio])
        .await
        .unwrap();
    deliver(&meeting_a, MediaKind::Audio, b"you made it", &mut meeting_b).await;
}

/// A device restarted without its saved prekey pool replaces the server's stale
/// prekeys (whose private halves are gone), so new invitations still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_restarted_without_its_prekeys_replaces_the_stale_ones() {
    let sfu = TestSfu::start_for_clients().await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.connect(&sfu).await;
    let credentials = bob.credentials();
    let stored_certificate = credentials.certificate().clone();
    let stored_secrets = credentials.export_secrets();
    let (client, _events) = Client::connect(sfu.client_config(), credentials)
        .await
        .unwrap();
    client.close().await;

    let restored = DeviceCredentials::restore(
        &bob.name,
        bob.key.public_key(),
        &stored_certificate,
        &stored_secrets,
        now(),
    )
    .unwrap();
    let (client, events) = Client::connect(sfu.client_config(), restored)
        .await
        .unwrap();
    let mut b = Device { client, events };
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    deliver(
        &meeting_a,
        MediaKind::Audio,
        b"fresh prekeys",
        &mut meeting_b,
    )
    .await;
}
