//! SFU throughput on this machine: control requests per second and media datagrams
//! forwarded per second, with a real server (redb store) and real QUIC clients in one
//! process on loopback. Client and server share the machine's cores, so the figures
//! are a floor for the server alone; `conclave-loadtest` measures the server process.
//!
//! Run: `cargo bench -p conclave-testkit --bench throughput [-- --store postgres]`.
//! With `--store postgres` the server is one node of a cluster (lease, room claims,
//! fenced room writes) on a throwaway PostgreSQL (as the tests start it, or the one
//! `CONCLAVE_TEST_POSTGRES` names) instead of a single node on redb: the same
//! scenarios, so the two can be compared.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conclave_proto::datagram::{MediaKind, Slot};
use conclave_proto::v1::{self, client_frame::Request};
use conclave_sdk::identity::PrekeyPool;
use conclave_sfu::store::{RedbStore, Store};
use conclave_testkit::identity::User;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::mailbox::junk_container;
use conclave_testkit::protocol::rooms::{TestRoom, handle_of};
use conclave_testkit::sfu::{TestSfu, test_config};

const CONTROL_CLIENTS: usize = 8;
const CONTROL_SECONDS: u64 = 3;
const ROOM_MEMBERS: usize = 10;
const MEDIA_SECONDS: u64 = 5;
const AUDIO_BYTES: usize = 120;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config();
        config.limits.requests_per_second = 1_000_000;
        config.limits.request_burst = 1_000_000;
        config.limits.max_prekeys_per_device = 100_000;
        config.limits.max_prekeys_per_upload = 1_000;
        config.limits.registrations_per_ip_burst = 1_000;
        config.limits.max_mailbox_per_device = 1_000_000;
        config.limits.max_mailbox_entries_per_sender_per_device = 1_000_000;
        config.limits.max_mailbox_bytes_per_sender = 1 << 30;
        config.limits.max_mailbox_bytes = 1 << 32;
        let postgres = std::env::args()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "--store" && w[1] == "postgres");
        let server = if postgres {
            let url = conclave_sfu::store::postgres::testing::fresh_database();
            let store = conclave_testkit::cluster::open(&url).await;
            let identity = conclave_sfu::tls::load_or_generate_dev(dir.path())
                .unwrap()
                .0;
            let lease = conclave_sfu::cluster::LeaseConfig::default();
            let server = TestSfu::start_node("bench-1", config, store, identity, lease).await;
            conclave_testkit::cluster::wait_for_live_nodes(&url, 1).await;
            println!("store: PostgreSQL, the server one node of a cluster");
            server
        } else {
            let store: Arc<dyn Store> =
                Arc::new(RedbStore::open(&dir.path().join("bench.redb")).unwrap());
            println!("store: redb, a single node");
            TestSfu::start_with(config, store).await
        };
        control_get_time(&server).await;
        control_fetch_bundles(&server).await;
        control_send_container(&server).await;
        forwarding(&server).await;
    });
}

async fn clients(server: &TestSfu, n: usize) -> Vec<(TestClient, User)> {
    let mut out = Vec::new();
    for i in 0..n {
        let user = User::new(&format!("bench-{}-{i}", rand_suffix()));
        let (client, _device) = TestClient::registered(server, &user).await;
        out.push((client, user));
    }
    out
}

/// A fresh suffix per call, so every benchmark user is a new username.
fn rand_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Lightweight requests: framing, dispatch, response.
async fn control_get_time(server: &TestSfu) {
    let clients: Vec<TestClient> = clients(server, CONTROL_CLIENTS)
        .await
        .into_iter()
        .map(|(client, _)| client)
        .collect();
    request_loop("control GetTime", clients, |client| async move {
        client
            .request(Request::GetTime(v1::GetTime {}))
            .await
            .unwrap();
        true
    })
    .await;
}

/// Sends requests with `request` on every client for `CONTROL_SECONDS` (a client stops
/// early when `request` says `false`) and prints the rate.
async fn request_loop<C, F, Fut>(what: &str, clients: Vec<C>, request: F)
where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(CONTROL_SECONDS);
    let mut tasks = Vec::new();
    for client in clients {
        let (done, request, client) = (Arc::clone(&done), request.clone(), Arc::new(client));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if !request(Arc::clone(&client)).await {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what}: {n} requests in {secs:.1} s by {} connections = {:.0} requests/s",
        CONTROL_CLIENTS,
        n as f64 / secs
    );
}

/// Store-bound requests: each pops one prekey in a durable (fsync) redb transaction.
async fn control_fetch_bundles(server: &TestSfu) {
    let owner = User::new(&format!("bench-owner-{}", rand_suffix()));
    let owner_client = TestClient::connect(server).await;
    let owner_device = owner.device();
    owner_client.register(&owner, &owner_device).await.unwrap();
    let mut pool = PrekeyPool::new(&owner_device);
    for _ in 0..5 {
        owner_client
            .upload_prekeys(&owner_device, &mut pool, 200)
            .await
            .unwrap();
    }
    let clients: Vec<TestClient> = clients(server, CONTROL_CLIENTS)
        .await
        .into_iter()
        .map(|(client, _)| client)
        .collect();
    let owner = Arc::new(owner);
    request_loop(
        "control FetchBundles (one durable prekey pop each)",
        clients,
        move |client| {
            let owner = Arc::clone(&owner);
            async move {
                let b = client.fetch_bundles(&[&owner]).await.unwrap();
                !b.users[0].devices[0].prekeys_exhausted
            }
        },
    )
    .await;
}

/// Store-bound requests: each stores a 1 KiB container for one recipient device (one
/// durable transaction with the mailbox quotas checked, then the delivery).
async fn control_send_container(server: &TestSfu) {
    let recipient = User::new(&format!("bench-inbox-{}", rand_suffix()));
    let (_inbox, recipient_device) = TestClient::registered(server, &recipient).await;
    let to = vec![recipient_device.device_id().as_bytes().to_vec()];
    let mut senders = Vec::new();
    for i in 0..CONTROL_CLIENTS {
        let user = User::new(&format!("bench-sender-{}-{i}", rand_suffix()));
        senders.push(TestClient::registered(server, &user).await);
    }
    request_loop(
        "control SendContainer (1 KiB, one recipient, stored durably)",
        senders,
        move |sender| {
            let to = to.clone();
            async move {
                let (client, device) = &*sender;
                let container = junk_container(device, 1024);
                client.send_container(&to, container).await.unwrap();
                true
            }
        },
    )
    .await;
}

/// One room of `ROOM_MEMBERS`; every member sends audio datagrams as fast as the
/// loop goes (paced in bursts); counts what every member receives.
async fn forwarding(server: &TestSfu) {
    let room = TestRoom::new();
    let members = clients(server, ROOM_MEMBERS).await;
    let mut joined = Vec::new();
    for (i, (client, _)) in members.into_iter().enumerate() {
        let j = if i == 0 {
            client.open_room(&room.auth(), &room.routing).await.unwrap()
        } else {
            client.join_room(&room.auth(), &room.routing).await.unwrap()
        };
        joined.push((Arc::new(client), handle_of(&j)));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(MEDIA_SECONDS);
    let mut tasks = Vec::new();
    for (client, handle) in &joined {
        let (c, h, sent) = (Arc::clone(client), *handle, Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            let payload = [0x5a; AUDIO_BYTES];
            let mut frame = 0u32;
            while Instant::now() < stop_at {
                for _ in 0..20 {
                    c.send_media(h, Slot(0), MediaKind::Audio, frame, &payload);
                    frame = frame.wrapping_add(1);
                }
                sent.fetch_add(20, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
        let (c, received) = (Arc::clone(client), Arc::clone(&received));
        tasks.push(tokio::spawn(async move {
            let end = stop_at + Duration::from_millis(500);
            while let Ok(Ok(_)) = tokio::time::timeout_at(end.into(), c.conn.read_datagram()).await
            {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // How many DATAGRAM frames each QUIC packet from the server carried, seen at the
    // receivers (quinn packs the datagrams queued for one receiver into one packet).
    let (mut frames, mut packets) = (0u64, 0u64);
    for (client, _) in &joined {
        let stats = client.conn.quic().stats();
        frames += stats.frame_rx.datagram;
        packets += stats.udp_rx.datagrams;
    }
    let sent = sent.load(Ordering::Relaxed);
    let received = received.load(Ordering::Relaxed);
    let expected = sent * (ROOM_MEMBERS as u64 - 1);
    println!(
        "forwarding, 1 room x {ROOM_MEMBERS} members, {AUDIO_BYTES}-byte payloads: sent {sent}, \
         delivered {received} of {expected} ({:.2}% loss) = {:.0} datagrams forwarded/s",
        100.0 * (1.0 - received as f64 / expected.max(1) as f64),
        received as f64 / MEDIA_SECONDS as f64
    );
    println!(
        "coalescing: {frames} media datagrams arrived in {packets} UDP packets = {:.1} per packet",
        frames as f64 / packets.max(1) as f64
    );
}
