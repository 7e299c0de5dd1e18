//! Issue 17 (rekey in 150 ms): the key leader wraps its next Rekey for every
//! participant while the meeting is steady, so a departure costs no directory round
//! trip and no key agreement. A participant removed after that preparation had an
//! entry wrapped for it; the Rekey must still name only the remaining devices, and the
//! removed device's own keys must not open it, even with the container in hand (the
//! server hands every container to whoever it likes).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conclave_proto::Message as _;
use conclave_proto::v1::{self, client_frame::Request};
use conclave_sdk::client::{DeviceCredentials, MediaKind, Meeting};
use conclave_sdk::container::{ContainerError, ReplayCache, SealedContainer};
use conclave_sdk::identity::PrekeyPool;
use conclave_testkit::prelude::*;

/// Waits until `meeting`'s next Rekey is prepared for `n` devices.
async fn wait_prepared(meeting: &Meeting, n: usize) {
    tokio::time::timeout(WAIT, async {
        while meeting.prepared_rekey_devices() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the key leader prepares its next rekey within the wait bound");
}

/// The device ids a container's header names.
fn named_devices(container: &[u8]) -> Vec<Vec<u8>> {
    let wire = v1::Container::decode(container).unwrap();
    let header = v1::ContainerHeader::decode(wire.header.as_slice()).unwrap();
    header
        .entries
        .into_iter()
        .map(|e| e.recipient_device_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_participant_cannot_open_a_rekey_that_was_prepared_for_it() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let ThreeParty {
        users: [alice, bob, mallory],
        devices: [a, b, m],
        meetings: [meeting_a, mut meeting_b, mut meeting_m],
    } = ThreeParty::start(&sfu, ["alice", "bob", "mallory"], &[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"before", &mut meeting_m).await;
    let epoch = meeting_a.sending_epoch();
    wait_prepared(&meeting_a, 2).await;
    assert_eq!(
        meeting_b.prepared_rekey_devices(),
        0,
        "only the key leader prepares"
    );

    // From here on, count the directory fetches of Bob's prekeys by Alice's device.
    let bob_fetches = Arc::new(AtomicUsize::new(0));
    let (counter, alice_device, bob_device) = (Arc::clone(&bob_fetches), a.id(), b.id());
    sfu.adversary().on_requests(Box::new(move |device, frame| {
        if device == Some(*alice_device.as_bytes())
            && let Some(Request::FetchBundles(fetch)) = &frame.request
            && fetch.device_ids.iter().any(|d| d == bob_device.as_bytes())
        {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        true
    }));
    let sent_before = sfu.adversary().containers().len();

    meeting_a.remove(&[mallory.id()]).await.unwrap();
    let new_epoch = wait_epoch_above(&meeting_a, epoch).await;
    wait_epoch_above(&meeting_b, epoch).await;
    let f = deliver(&meeting_a, MediaKind::Audio, b"after", &mut meeting_b).await;
    assert_eq!(f.epoch, new_epoch);

    // The Rekey: Alice's container to Bob after the removal. It names Bob alone.
    let rekey: Vec<u8> = sfu.adversary().containers()[sent_before..]
        .iter()
        .filter(|(sender, c)| {
            sender == a.id().as_bytes() && named_devices(c).contains(&b.id().as_bytes().to_vec())
        })
        .map(|(_, c)| c.clone())
        .next()
        .expect("the Rekey passed through the server");
    assert_eq!(named_devices(&rekey), vec![b.id().as_bytes().to_vec()]);

    // Mallory's device, with every prekey it still holds (the one Alice's preparation
    // took among them), cannot open it.
    let exported = m.client.export_credentials().await.unwrap();
    let credentials = DeviceCredentials::import(&exported, now()).unwrap();
    let prekeys = m.client.export_prekeys().await.unwrap();
    let mut pool = PrekeyPool::from_bytes(credentials.device(), &prekeys).unwrap();
    let opened = SealedContainer::decode(&rekey).unwrap().open(
        &alice.identity,
        credentials.device(),
        &mut pool,
        &mut ReplayCache::new(16),
        now(),
    );
    assert!(
        matches!(opened, Err(ContainerError::NotARecipient { .. })),
        "the removed device is not a recipient: {opened:?}"
    );
    // And it decrypted nothing of the new epoch.
    while let Some(f) = meeting_m.try_recv_frame() {
        assert!(
            f.epoch < new_epoch,
            "the removed device decrypted the new epoch"
        );
    }
    // The Rekey was the prepared one: Bob's prekeys were not fetched for it.
    assert_eq!(
        bob_fetches.load(Ordering::SeqCst),
        0,
        "the Rekey used Bob's prepared entry"
    );
    drop(bob);
}
