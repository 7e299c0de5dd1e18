//! An offline invitee woken by push, who joins and chats.
//!
//! Bob's phone registers for push wake-ups and goes to sleep (its app stores two
//! things: the credentials and the push keys). Alice calls him: his invitation waits in
//! the server's mailbox, and the server sends his push endpoint an encrypted, VAPID-signed
//! wake-up. Bob's push handler opens it, the app connects, the invitation arrives, Bob
//! answers, and they chat.
//!
//! The SFU and a stand-in push service (HTTPS on 127.0.0.1, from the test kit) run in
//! this process. In an app, the push service is the platform's (a browser's, a
//! UnifiedPush distributor, or the operator's gateway to APNs/FCM: `docs/sdk.md`).
//!
//! ```sh
//! cargo run -p conclave-sdk --example push_wake_up
//! ```
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use conclave_sdk::OsRng;
use conclave_sdk::client::{
    Client, ClientEvent, Delivery, DeviceCredentials, MediaKind, Meeting, MeetingEvent,
};
use conclave_sdk::identity::UserSigningKey;
use conclave_sdk::push::{PushKeys, WakeAction, open_wake_up};
use conclave_sfu::config::PushConfig;
use conclave_sfu::push::VapidKey;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::push_service::LocalPushService;
use conclave_testkit::sfu::{TestSfu, quiet_config};
use conclave_testkit::{WAIT, now};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    // The operator's side: a push service it allows, its VAPID key, the SFU.
    let push_service = LocalPushService::start().await;
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("vapid.pem");
    std::fs::write(&key_file, VapidKey::generate_pem()?.as_bytes())?;
    let mut push = PushConfig::default();
    push.vapid_key_file = key_file;
    push.contact = "mailto:ops@example.com".into();
    push.allowed_hosts = vec![push_service.allowed_host()];
    push.ca_file = Some(push_service.ca_file.clone());
    // The stand-in push service is on 127.0.0.1 (a real one resolves to public addresses).
    push.allow_private_addresses = true;
    let mut config = quiet_config();
    config.push = Some(push);
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let client_config = || conclave_sdk::client::ClientConfig::new(sfu.addr, sfu.trust.clone());

    // Bob's phone, first run: register, subscribe to push, store, sleep.
    let bob_key = UserSigningKey::generate(&mut OsRng);
    let bob = DeviceCredentials::create("bob", &bob_key, now(), &mut OsRng)?;
    let bob_id = bob.user().user_id;
    let (client, mut events) = Client::connect(client_config(), bob).await?;
    wait_for_prekeys(&mut events).await?;
    let server_key = client.push_server_key().await?;
    let keys = PushKeys::generate(&mut OsRng);
    // Here the app subscribes with its platform's push service under `server_key` and
    // gets an endpoint; the stand-in service hands out its own.
    let endpoint = push_service.endpoint("bob-phone");
    client.register_push(&endpoint, &keys).await?;
    println!(
        "bob: subscribed at {endpoint} (server key {}…), going offline",
        hex(&server_key[..6])
    );
    let stored_credentials = client.export_credentials().await?;
    let stored_push_keys = keys.to_bytes();
    client.close().await;

    // Alice calls Bob.
    let alice_key = UserSigningKey::generate(&mut OsRng);
    let alice = DeviceCredentials::create("alice", &alice_key, now(), &mut OsRng)?;
    let (alice_client, _alice_events) = Client::connect(client_config(), alice).await?;
    let (mut alice_meeting, _) = alice_client
        .start_meeting(&[bob_id], &[MediaKind::Audio])
        .await?;
    println!("alice: calling bob");

    // The push service receives the wake-up; Bob's phone gets it from there.
    let pushed = push_service.wait_for(1).await;
    let pushed = pushed.first().context("no push request")?;
    let body = &pushed.body;
    println!(
        "push service: {} bytes for {} (urgency {}, ttl {} s), unreadable to it",
        body.len(),
        pushed.path,
        pushed.header("urgency").unwrap_or("?"),
        pushed.header("ttl").unwrap_or("?"),
    );

    // Bob's push handler: open it with the stored keys; connect.
    let keys = PushKeys::from_bytes(&stored_push_keys)?;
    let wake = open_wake_up(&keys, body)?;
    println!(
        "bob: woken ({} waiting, urgent: {})",
        wake.pending, wake.urgent
    );
    if wake.action() != WakeAction::ConnectAndFetch {
        bail!("unexpected wake-up action");
    }
    let bob = DeviceCredentials::import(&stored_credentials, now())?;
    let (bob_client, mut bob_events) = Client::connect(client_config(), bob).await?;
    let invitation = loop {
        match tokio::time::timeout(WAIT, bob_events.recv()).await {
            Ok(Some(ClientEvent::Invited(invitation))) => break invitation,
            Ok(Some(_)) => {}
            _ => bail!("no invitation after the wake-up"),
        }
    };
    let mut bob_meeting = bob_client.accept(&invitation, &[MediaKind::Audio]).await?;
    println!("bob: answered");

    // And they chat (end-to-end encrypted, signed by each device).
    say(&alice_meeting, "Bob! You picked up.").await?;
    hear(&mut bob_meeting, "bob").await?;
    say(&bob_meeting, "The push woke me.").await?;
    hear(&mut alice_meeting, "alice").await?;

    bob_client.close().await;
    alice_client.close().await;
    sfu.stop().await?;
    Ok(())
}

async fn wait_for_prekeys(events: &mut conclave_sdk::client::ClientEvents) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(ClientEvent::PrekeysUploaded { .. })) => return Ok(()),
            Ok(Some(_)) => {}
            _ => bail!("prekeys were not uploaded"),
        }
    }
}

/// Sends a chat line, retrying while the room is still being joined.
async fn say(meeting: &Meeting, text: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        match meeting
            .send_message(Delivery::Reliable, "chat", text.as_bytes())
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).context("send a chat line"),
        }
    }
}

/// Waits for the next chat line and prints it.
async fn hear(meeting: &mut Meeting, me: &str) -> anyhow::Result<()> {
    loop {
        let event = tokio::time::timeout(WAIT, meeting.next_event())
            .await
            .context("no chat line in time")?
            .context("meeting ended")?;
        if let MeetingEvent::Message(m) = event {
            println!("{me}: ◀ {:?}", String::from_utf8_lossy(&m.body));
            return Ok(());
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
