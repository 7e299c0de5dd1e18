//! What the real binary acknowledged survives `kill -9`: registrations, uploaded
//! prekeys (and the fact that one was handed out), stored mailbox entries and their
//! acknowledgement. Each phase runs a fresh process on the same data directory.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use conclave_proto::v1::{self, DeliveryStatus};
use conclave_sdk::container::ReplayCache;
use conclave_sdk::identity::{PrekeyPool, VerifiedDevice, VerifiedPrekey};
use conclave_sdk::time::DAY_MS;
use conclave_sdk::transport::ServerTrust;
use conclave_testkit::clock::now;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::{open_text, recipients_from, seal_text, status_for};
use conclave_testkit::protocol::{TestClient, device_id_bytes};

/// A running `conclave-sfu` process.
struct Sfu {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
    trust: ServerTrust,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Sfu {
    /// Starts the binary on a fresh port with `data_dir` and waits (bounded) for its
    /// banner.
    async fn start(data_dir: &Path) -> Sfu {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Sfu::start_blocking(&data_dir))
            .await
            .unwrap()
    }

    fn start_blocking(data_dir: &Path) -> Sfu {
        let mut child = Command::new(env!("CARGO_BIN_EXE_conclave-sfu-under-test"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut sfu = Sfu {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            fingerprint: String::new(),
            trust: ServerTrust::SystemRoots,
            stderr: Some(stderr),
        };
        let listening = sfu.expect_line(&lines, "conclave-sfu listening on ");
        sfu.addr = listening.strip_suffix(" (udp)").unwrap().parse().unwrap();
        sfu.fingerprint = sfu.expect_line(&lines, "certificate sha-256 fingerprint: ");
        sfu.trust = ServerTrust::pinned_hex(&sfu.fingerprint).unwrap();
        sfu
    }

    fn expect_line(&mut self, lines: &mpsc::Receiver<String>, prefix: &str) -> String {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => match line.strip_prefix(prefix) {
                Some(rest) => rest.to_owned(),
                None => panic!("expected {prefix:?}, got {line:?}"),
            },
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().unwrap().join().unwrap();
                panic!("no line {prefix:?} ({e}); stderr:\n{stderr}");
            }
        }
    }

    async fn client(&self) -> TestClient {
        TestClient::connect_to(self.addr, &self.trust).await
    }

    /// SIGKILL: no shutdown path runs.
    async fn kill_9(mut self) {
        tokio::task::spawn_blocking(move || {
            self.child.kill().unwrap();
            let status = self.child.wait().unwrap();
            assert!(!status.success(), "killed, not exited: {status}");
        })
        .await
        .unwrap();
    }
}

impl Drop for Sfu {
    /// A failed test must not leave the server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn prekey_id_in(bundles: &v1::Bundles, user: &User) -> Option<u64> {
    let bundle = bundles
        .users
        .iter()
        .find(|b| b.user_id.as_slice() == user.identity.user_id.as_bytes())
        .unwrap();
    let [device] = bundle.devices.as_slice() else {
        panic!("expected one device, got {:?}", bundle.devices);
    };
    let verified =
        VerifiedDevice::verify(device.certificate.as_ref().unwrap(), &user.identity, now())
            .unwrap();
    device.prekey.as_ref().map(|p| {
        VerifiedPrekey::verify(p, &verified, now())
            .unwrap()
            .prekey_id()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_prekeys_and_mailbox_entries_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let alice = User::new("alice");
    let bob = User::new("bob");
    let carol = User::new("carol");

    // Phase 1: everyone registers; Bob and Carol upload prekeys. Then kill -9.
    let sfu = Sfu::start(&data_dir).await;
    let fingerprint = sfu.fingerprint.clone();
    let (_alice_client, alice_device) = {
        let c = sfu.client().await;
        let d = alice.device();
        assert!(c.register(&alice, &d).await.unwrap().new_user);
        (c, d)
    };
    let bob_device = bob.device();
    let mut bob_pool = PrekeyPool::new(&bob_device);
    {
        let c = sfu.client().await;
        c.register(&bob, &bob_device).await.unwrap();
        assert_eq!(
            c.upload_prekeys(&bob_device, &mut bob_pool, 5)
                .await
                .unwrap(),
            5
        );
    }
    let carol_device = carol.device();
    let mut carol_pool = PrekeyPool::new(&carol_device);
    {
        let c = sfu.client().await;
        c.register(&carol, &carol_device).await.unwrap();
        c.upload_prekeys(&carol_device, &mut carol_pool, 5)
            .await
            .unwrap();
    }
    sfu.kill_9().await;

    // Phase 2: a new process on the same data directory, same certificate.
    let sfu = Sfu::start(&data_dir).await;
    assert_eq!(sfu.fingerprint, fingerprint, "the certificate survived");
    let alice_client = sfu.client().await;
    let auth = alice_client.authenticate(&alice_device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 0, "Alice's registration survived");
    let bundles = alice_client.fetch_bundles(&[&bob, &carol]).await.unwrap();
    let first_bob_prekey = prekey_id_in(&bundles, &bob).expect("Bob's prekeys survived");
    // Carol has not connected to this process: she is offline, the entry is stored.
    let container = seal_text(
        &alice_device,
        &recipients_from(&bundles, &[&carol]),
        "see you tomorrow",
        DAY_MS,
    );
    let carol_id = device_id_bytes(&carol_device);
    let sent = alice_client
        .send_container(std::slice::from_ref(&carol_id), container.clone())
        .await
        .unwrap();
    assert_eq!(status_for(&sent, &carol_id), DeliveryStatus::Stored);
    sfu.kill_9().await;

    // Phase 3: Carol gets the entry; the prekey handed out before the crash stays used.
    let sfu = Sfu::start(&data_dir).await;
    assert_eq!(sfu.fingerprint, fingerprint);
    let mut carol_client = sfu.client().await;
    let auth = carol_client.authenticate(&carol_device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 1, "the stored entry survived");
    let delivery = carol_client.mailbox_delivery().await;
    assert_eq!(delivery.container, container);
    let (text, _) = open_text(
        &delivery.container,
        &alice.identity,
        &carol_device,
        &mut carol_pool,
        &mut ReplayCache::default(),
    )
    .unwrap();
    assert_eq!(text, "see you tomorrow");
    assert_eq!(carol_client.ack(&[delivery.mailbox_id]).await.unwrap(), 1);

    let alice_client = sfu.client().await;
    alice_client.authenticate(&alice_device).await.unwrap();
    let bundles = alice_client.fetch_bundles(&[&bob]).await.unwrap();
    let second_bob_prekey = prekey_id_in(&bundles, &bob).expect("Bob still has prekeys");
    assert_ne!(
        second_bob_prekey, first_bob_prekey,
        "a prekey handed out before the crash is never handed out again"
    );
    sfu.kill_9().await;

    // Phase 4: the acknowledgement survived too; Bob holds the 3 prekeys left.
    let sfu = Sfu::start(&data_dir).await;
    let carol_client = sfu.client().await;
    let auth = carol_client.authenticate(&carol_device).await.unwrap();
    assert_eq!(auth.mailbox_pending, 0, "the acknowledgement survived");
    let bob_client = sfu.client().await;
    let auth = bob_client.authenticate(&bob_device).await.unwrap();
    assert_eq!(auth.prekeys_held, 3);
    sfu.kill_9().await;
}
