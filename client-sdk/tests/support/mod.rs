//! Shared helpers for the SDK's integration tests: a real SFU on 127.0.0.1:0 and real
//! clients connected to it.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod hostile;

use conclave_sdk::client::{
    Client, ClientConfig, ClientEvent, ClientEvents, DeviceCredentials, Invitation, MediaFrame,
    MediaKind, Meeting, MeetingEvent,
};
use conclave_sdk::identity::UserSigningKey;
use conclave_sdk::meeting::rekey::RekeyConfig;
use conclave_sdk::transport::ServerTrust;
use conclave_sdk::{DeviceId, UnixMillis, UserId};
use conclave_sfu::config::Config;
use conclave_sfu::embedded::EmbeddedSfu;
use conclave_sfu::server::hooks::Adversary;
use conclave_sfu::store::{MemoryStore, Store};
use rand_core::OsRng;

/// Upper bound for anything a test waits for; tests never assert on timing.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn now() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

/// An SFU running in this process.
pub struct Sfu {
    pub addr: SocketAddr,
    pub trust: ServerTrust,
    pub store: Arc<dyn Store>,
    /// The hostile hand of a server started with [`Sfu::start_hostile`].
    pub adversary: Option<Arc<Adversary>>,
    server: Option<EmbeddedSfu>,
    dir: tempfile::TempDir,
    config: Config,
}

pub fn sfu_config() -> Config {
    let mut config = Config::default();
    config.metrics_listen = None;
    config.timing.rotation_grace_ms = 1_000;
    // Below the test clients' drop window (2 s): a successor may take over in time.
    config.timing.leader_succession_ms = 1_000;
    config
}

impl Sfu {
    pub async fn start() -> Self {
        Self::start_with(Arc::new(MemoryStore::new())).await
    }

    pub async fn start_with(store: Arc<dyn Store>) -> Self {
        Self::start_configured(store, sfu_config()).await
    }

    /// A real server that a test can make hostile through [`Sfu::adversary`] (it is
    /// honest until the test installs rules).
    pub async fn start_hostile() -> Self {
        Self::start_hostile_configured(sfu_config()).await
    }

    /// [`Sfu::start_hostile`] with its own configuration.
    pub async fn start_hostile_configured(config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = conclave_sfu::tls::load_or_generate_dev(dir.path()).unwrap();
        Self::serve_with(
            Arc::new(MemoryStore::new()),
            "127.0.0.1:0".parse().unwrap(),
            dir,
            &identity,
            config,
            Some(Arc::new(Adversary::new())),
        )
        .await
    }

    /// The adversary of a hostile server.
    pub fn adversary(&self) -> &Adversary {
        self.adversary
            .as_ref()
            .expect("started with Sfu::start_hostile")
    }

    /// A server with its own configuration (e.g. a short QUIC idle timeout).
    pub async fn start_configured(store: Arc<dyn Store>, config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = conclave_sfu::tls::load_or_generate_dev(dir.path()).unwrap();
        Self::serve(
            store,
            "127.0.0.1:0".parse().unwrap(),
            dir,
            &identity,
            config,
        )
        .await
    }

    /// A server presenting `identity` (e.g. a CA-issued certificate).
    pub async fn start_with_identity(identity: conclave_sfu::tls::ServerIdentity) -> Self {
        let store = Arc::new(MemoryStore::new());
        let dir = tempfile::tempdir().unwrap();
        Self::serve(
            store,
            "127.0.0.1:0".parse().unwrap(),
            dir,
            &identity,
            sfu_config(),
        )
        .await
    }

    async fn serve(
        store: Arc<dyn Store>,
        addr: SocketAddr,
        dir: tempfile::TempDir,
        identity: &conclave_sfu::tls::ServerIdentity,
        config: Config,
    ) -> Self {
        Self::serve_with(store, addr, dir, identity, config, None).await
    }

    async fn serve_with(
        store: Arc<dyn Store>,
        addr: SocketAddr,
        dir: tempfile::TempDir,
        identity: &conclave_sfu::tls::ServerIdentity,
        config: Config,
        adversary: Option<Arc<Adversary>>,
    ) -> Self {
        // After a restart the old endpoint's socket may take a moment to close.
        let deadline = std::time::Instant::now() + WAIT;
        let server = loop {
            let started = match &adversary {
                Some(a) => EmbeddedSfu::start_hostile(
                    addr,
                    identity,
                    config.clone(),
                    Arc::clone(&store),
                    Arc::clone(a),
                ),
                None => EmbeddedSfu::start(addr, identity, config.clone(), Arc::clone(&store)),
            };
            match started {
                Ok(server) => break server,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot start the SFU on {addr}: {e}"),
            }
        };
        Sfu {
            addr: server.addr(),
            trust: ServerTrust::PinnedSha256(server.fingerprint_sha256()),
            store,
            adversary,
            server: Some(server),
            dir,
            config,
        }
    }

    /// Stops the server (gracefully) and starts it again on the same address, store
    /// and certificate: every client connection drops and must reconnect.
    pub async fn restart(self) -> Sfu {
        self.restart_after(Duration::ZERO).await
    }

    /// Like [`Sfu::restart`], staying down for `pause` first (clients' reconnect
    /// attempts fail meanwhile and back off by their own settings). A hostile server
    /// comes back with the same adversary.
    pub async fn restart_after(mut self, pause: Duration) -> Sfu {
        let server = self.server.take().unwrap();
        tokio::time::timeout(WAIT, server.stop())
            .await
            .expect("server stops")
            .expect("clean stop");
        tokio::time::sleep(pause).await;
        let (identity, _) = conclave_sfu::tls::load_or_generate_dev(self.dir.path()).unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let config = self.config.clone();
        let adversary = self.adversary.take();
        Sfu::serve_with(
            Arc::clone(&self.store),
            self.addr,
            dir,
            &identity,
            config,
            adversary,
        )
        .await
    }

    /// A client configuration for this server with short test timers.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.addr, self.trust.clone());
        config.rekey = RekeyConfig::default();
        config.rekey.coalesce_ms = 20;
        config.rekey.grace_ms = 300;
        config.rekey.switch_deadline_ms = 1_000;
        config.rekey.key_request_ms = 200;
        config.drop_after_ms = 2_000;
        config.prekey_target = 40;
        config
    }
}

/// A user (its signing key) whose devices connect as clients.
pub struct User {
    pub name: String,
    pub key: UserSigningKey,
}

impl User {
    pub fn new(name: &str) -> Self {
        User {
            name: name.to_string(),
            key: UserSigningKey::generate(&mut OsRng),
        }
    }

    pub fn id(&self) -> UserId {
        UserId::from_username(&self.name).unwrap()
    }

    /// The user's id and identity (user signing) public key.
    pub fn identity(&self) -> conclave_sdk::identity::UserIdentity {
        conclave_sdk::identity::UserIdentity {
            user_id: self.id(),
            key: self.key.public_key(),
        }
    }

    pub fn credentials(&self) -> DeviceCredentials {
        DeviceCredentials::create(&self.name, &self.key, now(), &mut OsRng).unwrap()
    }

    /// Connects a new device of this user.
    pub async fn connect(&self, sfu: &Sfu) -> Device {
        self.connect_with(sfu.client_config()).await
    }

    /// Connects a new device whose tasks run on `runtime` (shut that runtime down to
    /// make the device vanish without a word, as if its process died).
    pub async fn connect_on(
        &self,
        runtime: &tokio::runtime::Handle,
        config: ClientConfig,
    ) -> Device {
        let credentials = self.credentials();
        let (client, events) =
            tokio::time::timeout(WAIT, runtime.spawn(Client::connect(config, credentials)))
                .await
                .expect("connect in bounded time")
                .expect("connect task")
                .expect("connect");
        Device { client, events }
    }

    /// Connects the device of `credentials` (which the test created, e.g. to keep a
    /// copy of its keys).
    pub async fn connect_credentials(&self, sfu: &Sfu, credentials: DeviceCredentials) -> Device {
        let (client, events) =
            tokio::time::timeout(WAIT, Client::connect(sfu.client_config(), credentials))
                .await
                .expect("connect in bounded time")
                .expect("connect");
        Device { client, events }
    }

    pub async fn connect_with(&self, config: ClientConfig) -> Device {
        let (client, events) =
            tokio::time::timeout(WAIT, Client::connect(config, self.credentials()))
                .await
                .expect("connect in bounded time")
                .expect("connect");
        Device { client, events }
    }
}

/// One connected device.
pub struct Device {
    pub client: Client,
    pub events: ClientEvents,
}

impl Device {
    pub fn id(&self) -> DeviceId {
        self.client.device_id()
    }

    /// Waits for an invitation.
    pub async fn invitation(&mut self) -> Invitation {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await.expect("client running") {
                    ClientEvent::Invited(i) => return i,
                    _ => continue,
                }
            }
        })
        .await
        .expect("an invitation within the wait bound")
    }

    /// Waits for an invitation and accepts it.
    pub async fn accept_next(&mut self, kinds: &[MediaKind]) -> Meeting {
        let invitation = self.invitation().await;
        self.client
            .accept(&invitation, kinds)
            .await
            .expect("accept")
    }

    pub async fn wait_for(&mut self, mut pick: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                let e = self.events.recv().await.expect("client running");
                if pick(&e) {
                    return e;
                }
            }
        })
        .await
        .expect("event within the wait bound")
    }
}

/// Sends `payload` from `meeting` until a frame with exactly that payload reaches
/// `receiver` (media is loss-tolerant and joins are asynchronous, so tests resend
/// rather than sleep). Other frames are skipped. Returns the received frame.
pub async fn deliver(
    from: &Meeting,
    kind: MediaKind,
    payload: &[u8],
    receiver: &mut Meeting,
) -> MediaFrame {
    tokio::time::timeout(WAIT, async {
        loop {
            let _ = from.send_frame(kind, false, payload);
            let got = tokio::time::timeout(Duration::from_millis(50), async {
                loop {
                    match receiver.next_event().await {
                        Some(MeetingEvent::Frame(f)) if f.data == payload => return Some(f),
                        Some(_) => continue,
                        None => return None,
                    }
                }
            })
            .await;
            if let Ok(Some(frame)) = got {
                return frame;
            }
        }
    })
    .await
    .expect("the frame arrives within the wait bound")
}

/// Waits until `meeting` sends on an epoch above `epoch`.
pub async fn wait_epoch_above(meeting: &Meeting, epoch: u64) -> u64 {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = meeting.sending_epoch();
            if e > epoch {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the meeting moves to a new epoch within the wait bound")
}

/// Waits until `meeting` has `n` participants.
pub async fn wait_participants(meeting: &Meeting, n: usize) {
    tokio::time::timeout(WAIT, async {
        while meeting.participants().len() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the roster reaches the expected size");
}
