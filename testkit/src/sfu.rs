//! The SFU under test: a real server in this process on 127.0.0.1 (any free port), with
//! a throwaway certificate that clients pin, an in-memory store unless the test brings
//! one, and optionally the hostile hand of `conclave-sfu`'s `adversary` feature.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_sdk::transport::ServerTrust;
use conclave_sfu::cluster::LeaseConfig;
use conclave_sfu::config::Config;
use conclave_sfu::embedded::EmbeddedSfu;
use conclave_sfu::server::hooks::Adversary;
use conclave_sfu::store::{ClusterStore, MemoryStore, NodeId, NodeInfo, PgStore, Store};
use conclave_sfu::tls::{self, ServerIdentity};
use conclave_sfu::{ClusterNode, SfuError};

use crate::clock::WAIT;

/// The configuration of the server's system tests (clients that speak the protocol
/// directly): fast sweeps (1 s) and a short rotation grace (500 ms), no metrics
/// listener.
pub fn test_config() -> Config {
    let mut config = quiet_config();
    config.timing.rotation_grace_ms = 500;
    config.timing.sweep_interval_secs = 1;
    config
}

/// [`test_config`] as `edit` changes it (e.g. a lower limit).
pub fn test_config_with(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    edit(&mut config);
    config
}

/// The configuration of tests with SDK clients: a rotation grace and a leader
/// succession of 1 s, below the test clients' drop window (2 s, see
/// [`TestSfu::client_config`]), so a successor can take over in time.
pub fn client_test_config() -> Config {
    let mut config = quiet_config();
    config.timing.rotation_grace_ms = 1_000;
    config.timing.leader_succession_ms = 1_000;
    config
}

/// [`client_test_config`] with the request budget and the directory's prekey-pop
/// limits lifted, for tests where an attacker drains a victim's prekeys (a test that
/// wants one limit back sets it afterwards).
pub fn drain_test_config() -> Config {
    let mut config = client_test_config();
    let limits = &mut config.limits;
    limits.requests_per_second = 1_000_000;
    limits.request_burst = 1_000_000;
    limits.prekey_pops_per_pair_burst = 1_000_000;
    limits.prekey_pops_per_pair_per_minute = 1_000_000;
    limits.prekey_pops_per_target_burst = 1_000_000;
    limits.prekey_pops_per_target_per_minute = 1_000_000;
    config
}

/// The default configuration without the metrics listener (which would need a port of
/// its own): what the examples and benchmarks run.
pub fn quiet_config() -> Config {
    let mut config = Config::default();
    config.metrics_listen = None;
    // A client that does not move when told is closed after 2 s, not 25.
    config.timing.drain_grace_secs = 2;
    config
}

/// An SFU running in this process.
pub struct TestSfu {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// How clients trust it: its certificate's pinned SHA-256.
    pub trust: ServerTrust,
    /// Its store, shared with the test (and kept across restarts).
    pub store: Arc<dyn Store>,
    identity: ServerIdentity,
    config: Config,
    adversary: Option<Arc<Adversary>>,
    /// For a cluster node: its id, its cluster store and lease timing.
    cluster: Option<(NodeId, Arc<dyn ClusterStore>, LeaseConfig)>,
    server: Option<EmbeddedSfu>,
    /// Shards serving the port: 1 serves on the test's runtime.
    shards: usize,
    /// Holds the generated development certificate.
    _dir: tempfile::TempDir,
}

impl TestSfu {
    /// A server with [`test_config`] and a memory store.
    pub async fn start() -> Self {
        Self::start_with(test_config(), Arc::new(MemoryStore::new())).await
    }

    /// A server with [`test_config_with`]`(edit)` and a memory store.
    pub async fn start_edited(edit: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(test_config_with(edit), Arc::new(MemoryStore::new())).await
    }

    /// A server with [`client_test_config`] and a memory store, for SDK clients.
    pub async fn start_for_clients() -> Self {
        Self::start_with(client_test_config(), Arc::new(MemoryStore::new())).await
    }

    /// A server with its own configuration and store.
    pub async fn start_with(config: Config, store: Arc<dyn Store>) -> Self {
        Self::launch(config, store, None, None).await
    }

    /// A real server that a test can make hostile through [`TestSfu::adversary`] (it
    /// is honest until the test installs rules), with a memory store.
    pub async fn start_hostile(config: Config) -> Self {
        let adversary = Some(Arc::new(Adversary::new()));
        Self::launch(config, Arc::new(MemoryStore::new()), None, adversary).await
    }

    /// One node of a cluster: `store` is the cluster's PostgreSQL store (this node's own
    /// connection pool), `identity` the certificate every node of the test cluster
    /// presents.
    pub async fn start_node(
        node_id: &str,
        config: Config,
        store: Arc<PgStore>,
        identity: ServerIdentity,
        lease: LeaseConfig,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cluster: Arc<dyn ClusterStore> = Arc::clone(&store) as _;
        let mut sfu = TestSfu {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            trust: ServerTrust::PinnedSha256(identity.fingerprint_sha256),
            store,
            identity,
            config,
            adversary: None,
            cluster: Some((
                NodeId::new(node_id).expect("a valid node id"),
                cluster,
                lease,
            )),
            server: None,
            shards: 1,
            _dir: dir,
        };
        sfu.serve().await;
        sfu
    }

    /// A server presenting `identity` (e.g. a CA-issued certificate), with a memory
    /// store.
    pub async fn start_with_identity(identity: ServerIdentity, config: Config) -> Self {
        Self::launch(config, Arc::new(MemoryStore::new()), Some(identity), None).await
    }

    /// A server whose port is served by `shards` shards (threads of their own, as
    /// `conclave-sfu --worker-threads` runs), with `config` and a memory store.
    pub async fn start_sharded(config: Config, shards: usize) -> Self {
        Self::launch_sharded(config, Arc::new(MemoryStore::new()), None, None, shards).await
    }

    async fn launch(
        config: Config,
        store: Arc<dyn Store>,
        identity: Option<ServerIdentity>,
        adversary: Option<Arc<Adversary>>,
    ) -> Self {
        Self::launch_sharded(config, store, identity, adversary, 1).await
    }

    async fn launch_sharded(
        config: Config,
        store: Arc<dyn Store>,
        identity: Option<ServerIdentity>,
        adversary: Option<Arc<Adversary>>,
        shards: usize,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let identity = match identity {
            Some(identity) => identity,
            None => {
                tls::load_or_generate_dev(dir.path())
                    .expect("a dev certificate")
                    .0
            }
        };
        let mut sfu = TestSfu {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            trust: ServerTrust::PinnedSha256(identity.fingerprint_sha256),
            store,
            identity,
            config,
            adversary,
            cluster: None,
            server: None,
            shards,
            _dir: dir,
        };
        sfu.serve().await;
        sfu
    }

    /// Starts the server on `self.addr`, retrying for a moment: after a restart the
    /// old endpoint's socket may take a moment to close.
    async fn serve(&mut self) {
        let deadline = Instant::now() + WAIT;
        let server = loop {
            let identity = copy_identity(&self.identity);
            let (config, store) = (self.config.clone(), Arc::clone(&self.store));
            let started = match (&self.adversary, &self.cluster) {
                (Some(a), _) => {
                    EmbeddedSfu::start_hostile(self.addr, &identity, config, store, Arc::clone(a))
                }
                (None, Some((node_id, cluster, lease))) => {
                    let (node_id, cluster, lease) = (node_id.clone(), Arc::clone(cluster), *lease);
                    EmbeddedSfu::start_cluster(self.addr, &identity, config, store, move |addr| {
                        ClusterNode {
                            info: NodeInfo {
                                node_id,
                                quic_addr: addr.into(),
                                server_name: "localhost".into(),
                            },
                            store: cluster,
                            lease,
                        }
                    })
                }
                (None, None) if self.shards > 1 => EmbeddedSfu::start_sharded(
                    self.addr,
                    &identity,
                    config,
                    store,
                    self.shards,
                    "test-shard",
                ),
                (None, None) => EmbeddedSfu::start(self.addr, &identity, config, store),
            };
            match started {
                Ok(server) => break server,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot start the SFU on {}: {e}", self.addr),
            }
        };
        self.addr = server.addr();
        self.server = Some(server);
    }

    /// The adversary of a server started with [`TestSfu::start_hostile`].
    pub fn adversary(&self) -> &Adversary {
        self.adversary
            .as_ref()
            .expect("started with TestSfu::start_hostile")
    }

    /// The certificate's SHA-256 fingerprint as hex (what a running server prints).
    pub fn fingerprint_hex(&self) -> String {
        self.identity.fingerprint_hex()
    }

    /// Stops the server gracefully (clients are told) and starts it again on the same
    /// address, store and certificate: every client connection drops, and connected
    /// devices are offline until they reconnect. A hostile server comes back with the
    /// same adversary.
    pub async fn restart(self) -> Self {
        self.restart_after(Duration::ZERO).await
    }

    /// Like [`TestSfu::restart`], staying down for `pause` first (clients' reconnect
    /// attempts fail meanwhile and back off by their own settings).
    pub async fn restart_after(mut self, pause: Duration) -> Self {
        self.shut_down().await.expect("clean stop");
        tokio::time::sleep(pause).await;
        self.serve().await;
        self
    }

    /// Like [`TestSfu::restart`], with another configuration.
    pub async fn restart_with(mut self, config: Config) -> Self {
        self.config = config;
        self.restart().await
    }

    /// Triggers a graceful shutdown and waits (bounded) for the server to finish.
    pub async fn stop(mut self) -> Result<(), SfuError> {
        self.shut_down().await
    }

    async fn shut_down(&mut self) -> Result<(), SfuError> {
        let server = self.server.take().expect("the server is running");
        tokio::time::timeout(WAIT, server.stop())
            .await
            .expect("the server stops in bounded time")
    }
}

/// A second handle on the same certificate and key.
fn copy_identity(identity: &ServerIdentity) -> ServerIdentity {
    ServerIdentity {
        cert_chain: identity.cert_chain.clone(),
        key: identity.key.clone_key(),
        fingerprint_sha256: identity.fingerprint_sha256,
    }
}
