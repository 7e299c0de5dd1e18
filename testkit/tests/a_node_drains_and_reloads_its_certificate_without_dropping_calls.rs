//! A node's life in production, with real `conclave-sfu` processes on a real
//! PostgreSQL:
//! * drain: SIGTERM during a live meeting; its clients are told to move, the meeting
//!   resumes on the other node, and the drained node exits 0 within its grace period;
//! * reload: SIGHUP after the certificate files were replaced; new connections see the
//!   new certificate (a client pinning the old one is refused) while a meeting that was
//!   already running keeps its media flowing; a broken file on a later SIGHUP is refused
//!   and the certificate in use stays.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use conclave_sdk::client::{Client, ClientEvent, MediaKind, Meeting};
use conclave_sdk::transport::ServerTrust;
use conclave_sfu::tls;
use conclave_testkit::User;
use conclave_testkit::clients::{Device, deliver};
use conclave_testkit::process::ProcessCluster;

const SFU: &str = env!("CARGO_BIN_EXE_conclave-sfu-under-test");
/// The nodes' drain grace in tests (`testkit::process`), plus room for the exit.
const DRAIN_BOUND: Duration = Duration::from_secs(5 + 5);

/// Two devices in one meeting, both connected first to node `first`.
async fn call(cluster: &ProcessCluster, first: usize) -> (Device, Device, Meeting, Meeting) {
    let (host, guest) = (User::new("host"), User::new("guest"));
    let a = host.connect_with(cluster.client_config(first)).await;
    let mut b = guest.connect_with(cluster.client_config(first)).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[guest.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let mut meeting_a = meeting_a;
    both_ways(&mut meeting_a, &mut meeting_b, "before").await;
    (a, b, meeting_a, meeting_b)
}

async fn both_ways(a: &mut Meeting, b: &mut Meeting, tag: &str) {
    deliver(a, MediaKind::Audio, format!("{tag}: a to b").as_bytes(), b).await;
    deliver(b, MediaKind::Audio, format!("{tag}: b to a").as_bytes(), a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_meetings_to_another_and_exits_cleanly() {
    let mut cluster = ProcessCluster::start(SFU, 2).await;
    let (mut a, mut b, mut meeting_a, mut meeting_b) = call(&cluster, 0).await;

    cluster.nodes[0].start_drain();
    // Told to move, both clients reconnect to node two and the meeting resumes there.
    for device in [&mut a, &mut b] {
        device
            .wait_for(|e| {
                matches!(
                    e,
                    ClientEvent::Disconnected {
                        reason: conclave_sdk::client::DisconnectReason::ServerShuttingDown { .. }
                    }
                )
            })
            .await;
    }
    both_ways(&mut meeting_a, &mut meeting_b, "after the drain").await;
    let node = &mut cluster.nodes[0];
    let status = tokio::task::block_in_place(|| node.wait_exit(DRAIN_BOUND))
        .expect("the drained node exits within its grace period");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_serves_new_connections_while_calls_go_on() {
    let cluster = ProcessCluster::start(SFU, 1).await;
    let (_a, _b, mut meeting_a, mut meeting_b) = call(&cluster, 0).await;

    // The operator replaces the certificate files and sends SIGHUP.
    let fresh = tempfile::tempdir().unwrap();
    let (renewed, _) = tls::load_or_generate_dev(fresh.path()).unwrap();
    for file in [tls::DEV_CERT_FILE, tls::DEV_KEY_FILE] {
        std::fs::copy(fresh.path().join(file), cluster.certs.join(file)).unwrap();
    }
    cluster.nodes[0].hangup();

    // New connections get the new certificate (the reload is asynchronous: try until
    // it has happened, bounded).
    let mut config = cluster.client_config(0);
    config.trust = ServerTrust::PinnedSha256(renewed.fingerprint_sha256);
    let carol = User::new("carol");
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match Client::connect(config.clone(), carol.credentials()).await {
                Ok(connected) => return connected,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("a client pinning the new certificate connects after SIGHUP");
    drop(connected);
    let dave = User::new("dave");
    let old = Client::connect(cluster.client_config(0), dave.credentials()).await;
    assert!(
        old.is_err(),
        "a client pinning the old certificate is refused"
    );

    // The meeting that was running keeps flowing on its old connections.
    both_ways(&mut meeting_a, &mut meeting_b, "after the reload").await;

    // A broken file on the next SIGHUP is refused; the certificate in use stays.
    std::fs::write(cluster.certs.join(tls::DEV_CERT_FILE), b"not a certificate").unwrap();
    cluster.nodes[0].hangup();
    let refused = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if cluster.nodes[0]
                .log_tail(20)
                .contains("certificate not reloaded")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "{}", cluster.nodes[0].log_tail(20));
    let erin = User::new("erin");
    let still = Client::connect(config, erin.credentials()).await;
    assert!(still.is_ok(), "the renewed certificate is still served");
    both_ways(&mut meeting_a, &mut meeting_b, "after a refused reload").await;
}
