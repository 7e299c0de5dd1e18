//! A device comes back to a stored backlog four times its event budget (16 junk
//! containers of about 1 MB against the smallest budget, 4 MiB). The server delivers
//! stored entries within the mailbox window the device asked for (a quarter of its
//! budget: one such entry at a time), as the device reports them handled, so the
//! backlog streams through on one connection while the device looks the sender up
//! and acknowledges. Without the window the server queues the whole backlog before
//! its next answer, and the device's budget overflows while it waits for that answer
//! (`FellBehind`), on every reconnection.

#![allow(clippy::unwrap_used)]

use conclave_sdk::client::ClientEvent;
use conclave_testkit::hostile::raw_device;
use conclave_testkit::prelude::*;
use conclave_testkit::protocol::mailbox::junk_container;

const BACKLOG: usize = 16;
const CONTAINER_BYTES: usize = 1_000_000;
const BUDGET: usize = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_backlog_larger_than_the_event_budget_streams_through() {
    let sfu = TestSfu::start_for_clients().await;
    let (alice, mallory) = (User::new("alice"), User::new("mallory"));
    let (a, alice_creds) = alice.connect_keeping_a_copy(&sfu).await;
    let alice_device = a.id().as_bytes().to_vec();
    a.client.close().await;

    let mallory_creds = mallory.credentials();
    let m = raw_device(&sfu, &mallory_creds).await;
    for _ in 0..BACKLOG {
        let sent = m
            .send_container(
                std::slice::from_ref(&alice_device),
                junk_container(mallory_creds.device(), CONTAINER_BYTES),
            )
            .await
            .unwrap();
        assert_eq!(sent.results.len(), 1);
    }

    let mut config = sfu.client_config();
    config.event_queue_bytes = BUDGET;
    let mut a = Device::connect(config, alice_creds).await;
    let mut refused = 0;
    while refused < BACKLOG {
        match a
            .wait_for(|e| {
                matches!(
                    e,
                    ClientEvent::MessageRefused { .. } | ClientEvent::Disconnected { .. }
                )
            })
            .await
        {
            ClientEvent::MessageRefused { .. } => refused += 1,
            ClientEvent::Disconnected { reason } => {
                panic!("disconnected after {refused} of {BACKLOG} entries: {reason}")
            }
            _ => unreachable!("wait_for returns a matching event"),
        }
    }
}
