//! Cluster mode under load while PostgreSQL crashes and comes back (immediate shutdown,
//! crash recovery, same data): every registration, prekey upload and mailbox entry a
//! node acknowledged before, during or after the restart is there afterwards. Requests
//! that meet the outage fail (the client retries); none is acknowledged and then lost.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::v1::DeliveryStatus;
use conclave_sdk::identity::PrekeyPool;
use conclave_sfu::store::Store;
use conclave_sfu::store::postgres::testing;
use conclave_testkit::User;
use conclave_testkit::clock::WAIT;
use conclave_testkit::cluster::{TestCluster, open};
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::mailbox::{junk_container, status_for};
use conclave_testkit::sfu::TestSfu;

const WORKERS: usize = 4;
const PREKEYS: usize = 5;

/// What the nodes acknowledged.
#[derive(Default)]
struct Acked {
    devices: Vec<[u8; 16]>,
    prekeys: Vec<[u8; 16]>,
    containers: Vec<Vec<u8>>,
}

/// One round: a new user registers a device, uploads prekeys and sends a container to
/// the inbox. Returns whether every step was acknowledged.
async fn round(node: &TestSfu, name: &str, inbox: &[u8], acked: &Mutex<Acked>) -> bool {
    let user = User::new(name);
    let device = user.device();
    let id = *device.device_id().as_bytes();
    let client = TestClient::connect(node).await;
    if client.register(&user, &device).await.is_err() {
        return false;
    }
    acked.lock().unwrap().devices.push(id);
    let mut pool = PrekeyPool::new(&device);
    if client
        .upload_prekeys(&device, &mut pool, PREKEYS)
        .await
        .is_err()
    {
        return false;
    }
    acked.lock().unwrap().prekeys.push(id);
    let container = junk_container(&device, 300);
    match client
        .send_container(&[inbox.to_vec()], container.clone())
        .await
    {
        Ok(sent) if status_for(&sent, inbox) == DeliveryStatus::Stored => {
            acked.lock().unwrap().containers.push(container);
            true
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_prekeys_and_mailbox_entries_acknowledged_under_load_survive_a_postgres_crash()
 {
    let server = Arc::new(
        tokio::task::spawn_blocking(testing::dedicated_server)
            .await
            .unwrap(),
    );
    let url = {
        let server = Arc::clone(&server);
        tokio::task::spawn_blocking(move || server.fresh_database())
            .await
            .unwrap()
    };
    let cluster = Arc::new(TestCluster::start_on(url.clone(), 2).await);
    let inbox_user = User::new("inbox");
    let (inbox_client, inbox_device) = TestClient::registered(&cluster.nodes[1], &inbox_user).await;
    inbox_client.conn.close().await;
    let inbox = inbox_device.device_id().as_bytes().to_vec();

    let acked = Arc::new(Mutex::new(Acked::default()));
    let rounds = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (cluster, acked, rounds, failed, stop, inbox) = (
            Arc::clone(&cluster),
            Arc::clone(&acked),
            Arc::clone(&rounds),
            Arc::clone(&failed),
            Arc::clone(&stop),
            inbox.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let node = &cluster.nodes[(w + i) % cluster.nodes.len()];
                if round(node, &format!("load-{w}-{i}"), &inbox, &acked).await {
                    rounds.fetch_add(1, Ordering::AcqRel);
                } else {
                    failed.fetch_add(1, Ordering::AcqRel);
                    // The store is down: back off a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                i += 1;
            }
        }));
    }
    let wait_for_rounds = |at_least: usize| {
        let rounds = Arc::clone(&rounds);
        async move {
            tokio::time::timeout(WAIT, async {
                while rounds.load(Ordering::Acquire) < at_least {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("the load makes progress");
        }
    };

    wait_for_rounds(12).await;
    let before = rounds.load(Ordering::Acquire);
    {
        let server = Arc::clone(&server);
        tokio::task::spawn_blocking(move || server.restart())
            .await
            .unwrap();
    }
    // The load goes on after the restart, on both nodes.
    wait_for_rounds(before + 12).await;
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.unwrap();
    }

    // The crash met requests in flight (they failed and were not acknowledged).
    assert!(
        failed.load(Ordering::Acquire) > 0,
        "the restart happened under load"
    );
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.devices.len() >= 24, "{} devices", acked.devices.len());
    let store = open(&url).await;
    let inbox_id: [u8; 16] = inbox.as_slice().try_into().unwrap();
    tokio::task::spawn_blocking(move || {
        for id in &acked.devices {
            assert!(
                store.device(id).unwrap().is_some(),
                "an acknowledged registration was lost"
            );
        }
        for id in &acked.prekeys {
            assert_eq!(
                store.prekey_count(id).unwrap(),
                PREKEYS,
                "acknowledged prekeys were lost"
            );
        }
        let stored: HashSet<Vec<u8>> = store
            .mailbox_list(&inbox_id, 0, 100_000)
            .unwrap()
            .into_iter()
            .map(|e| e.container)
            .collect();
        for container in &acked.containers {
            assert!(
                stored.contains(container),
                "an acknowledged mailbox entry was lost"
            );
        }
    })
    .await
    .unwrap();
}
