//! Push wake-up throughput: how fast one node wakes many offline devices.
//!
//! An SFU in this process (release profile under `cargo bench`) with push configured
//! (no delay, no per-sender budget in the way) and a local HTTPS push service on
//! 127.0.0.1. `--devices N` devices register a push subscription each and disconnect;
//! one sender then stores one container for all of them (in sends of at most 1,000
//! recipients). The bench measures the time from the first send until the push service
//! has received every wake-up (each one encrypted with RFC 8291, signed with VAPID and
//! POSTed over TLS), and the process's CPU time over that span (the SFU, its push task
//! and the push service, which decrypts nothing).
//!
//! `cargo bench -p conclave-testkit --bench push -- [--devices N] [--concurrency C]`
//! (default: 1,000 devices, 32 requests in flight).
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_proto::v1;
use conclave_sdk::push::PushKeys;
use conclave_sfu::config::PushConfig;
use conclave_sfu::push::VapidKey;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::TestClient;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::device_id_bytes;
use conclave_testkit::protocol::mailbox::junk_container;
use conclave_testkit::push_service::LocalPushService;
use conclave_testkit::sfu::{TestSfu, quiet_config};
use rand_core::OsRng;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// CPU time of this process (user + system) from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm field")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    let devices = arg("--devices", 1_000);
    let concurrency = arg("--concurrency", 32);
    let service = LocalPushService::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("vapid.pem");
    std::fs::write(&key_file, VapidKey::generate_pem().expect("key").as_bytes()).expect("write");
    let mut push = PushConfig::default();
    push.vapid_key_file = key_file;
    push.contact = "mailto:bench@conclave.test".into();
    push.allowed_hosts = vec![service.allowed_host()];
    push.ca_file = Some(service.ca_file.clone());
    // The local push service is on 127.0.0.1.
    push.allow_private_addresses = true;
    push.delay_ms = 0;
    push.wakeups_per_sender_per_minute = u32::MAX / 2;
    push.wakeup_burst_per_sender = u32::MAX / 2;
    push.max_concurrent_requests = concurrency;
    let mut config = quiet_config();
    config.push = Some(push);
    config.limits.registrations_per_ip_burst = u32::MAX / 2;
    config.limits.registrations_per_ip_per_hour = u32::MAX / 2;
    config.limits.requests_per_second = 1_000_000;
    config.limits.request_burst = 1_000_000;
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;

    let keys = PushKeys::generate(&mut OsRng);
    let mut ids = Vec::with_capacity(devices);
    for i in 0..devices {
        let (client, device) = TestClient::registered(&sfu, &User::new(&format!("d{i}"))).await;
        let set = client
            .request(v1::client_frame::Request::SetPushSubscription(
                v1::SetPushSubscription {
                    endpoint: service.endpoint(&format!("d{i}")),
                    p256dh: keys.public_key().to_vec(),
                    auth: keys.auth_secret().to_vec(),
                },
            ))
            .await;
        assert!(set.is_ok(), "{set:?}");
        ids.push(device_id_bytes(&device));
    }
    println!("{devices} devices registered with push subscriptions and offline");
    let (sender, sender_device) = TestClient::registered(&sfu, &User::new("sender")).await;

    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for chunk in ids.chunks(1_000) {
        sender
            .send_container(chunk, junk_container(&sender_device, 200))
            .await
            .expect("send");
    }
    let stored = t0.elapsed();
    service.wait_for(devices).await;
    let elapsed = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let requests = service.requests();
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    println!(
        "{devices} wake-ups in {:.2} s ({:.0}/s; containers stored after {:.0} ms); \
         CPU {:.2} s ({:.0} µs per wake-up, whole process); {} bytes each; {} in flight",
        elapsed.as_secs_f64(),
        devices as f64 / elapsed.as_secs_f64(),
        stored.as_secs_f64() * 1e3,
        cpu,
        cpu * 1e6 / devices as f64,
        bytes / requests.len().max(1),
        concurrency,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    sfu.stop().await.expect("stop");
}
