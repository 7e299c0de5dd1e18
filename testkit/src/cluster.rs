//! A cluster of in-process SFU nodes on one real PostgreSQL (a fresh database of the
//! test process's throwaway server, see `conclave_sfu::store::postgres::testing`).

use std::sync::Arc;
use std::time::Duration;

use conclave_sfu::cluster::LeaseConfig;
use conclave_sfu::store::postgres::testing;
use conclave_sfu::store::{PgOptions, PgStore};
use conclave_sfu::tls;

use crate::proxy::TcpProxy;
use crate::sfu::{TestSfu, test_config};

/// Short leases, so that tests of expiry do not wait long.
pub fn test_lease() -> LeaseConfig {
    LeaseConfig {
        lease: Duration::from_secs(3),
        renew_every: Duration::from_millis(500),
        retry_every: Duration::from_millis(100),
        margin: Duration::from_millis(300),
    }
}

/// Nodes `node-1` … `node-n`, sharing one database and one certificate.
pub struct TestCluster {
    /// The nodes, in order.
    pub nodes: Vec<TestSfu>,
    /// The database URL (to open more stores on it).
    pub url: String,
    /// The proxy between `node-1` and PostgreSQL, for [`TestCluster::start_with_proxy`].
    pub proxy: Option<TcpProxy>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` nodes with [`test_config`] and [`test_lease`], and waits until every
    /// node holds its lease.
    pub async fn start(n: usize) -> Self {
        Self::launch(testing::fresh_database(), n, false).await
    }

    /// Like [`TestCluster::start`], on the database at `url` (e.g. of a
    /// [`testing::dedicated_server`] the test restarts).
    pub async fn start_on(url: String, n: usize) -> Self {
        Self::launch(url, n, false).await
    }

    /// Like [`TestCluster::start`], with `node-1` reaching PostgreSQL through a
    /// [`TcpProxy`] the test can cut.
    pub async fn start_with_proxy(n: usize) -> Self {
        Self::launch(testing::fresh_database(), n, true).await
    }

    async fn launch(url: String, n: usize, proxy_first: bool) -> Self {
        let mut proxy = None;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let identity = tls::load_or_generate_dev(dir.path())
            .expect("a dev certificate")
            .0;
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let store = if i == 1 && proxy_first {
                let (authority, target) = authority_of(&url).await;
                let started = TcpProxy::start(target).await;
                let via = url.replacen(&authority, &started.addr.to_string(), 1);
                proxy = Some(started);
                open(&via).await
            } else {
                open(&url).await
            };
            let identity = tls::ServerIdentity {
                cert_chain: identity.cert_chain.clone(),
                key: identity.key.clone_key(),
                fingerprint_sha256: identity.fingerprint_sha256,
            };
            let node = TestSfu::start_node(
                &format!("node-{i}"),
                test_config(),
                store,
                identity,
                test_lease(),
            )
            .await;
            nodes.push(node);
        }
        let cluster = TestCluster {
            nodes,
            url,
            proxy,
            _dir: dir,
        };
        cluster.wait_for_leases(n).await;
        cluster
    }

    /// Waits (bounded) until `n` nodes hold a live lease.
    pub async fn wait_for_leases(&self, n: usize) {
        wait_for_live_nodes(&self.url, n).await;
    }
}

/// Waits (bounded) until `n` nodes hold a live lease in the database at `url`.
pub async fn wait_for_live_nodes(url: &str, n: usize) {
    let probe = open(url).await;
    let deadline = tokio::time::Instant::now() + crate::clock::WAIT;
    loop {
        let store = Arc::clone(&probe);
        let live = tokio::task::spawn_blocking(move || {
            conclave_sfu::store::ClusterStore::live_nodes(&*store)
        })
        .await
        .expect("the probe does not panic")
        .expect("the store answers");
        if live.len() >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} nodes hold a lease",
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `host:port` part of a PostgreSQL URL and the address it resolves to.
async fn authority_of(url: &str) -> (String, std::net::SocketAddr) {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let after_user = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    let authority = after_user
        .split(['/', '?'])
        .next()
        .unwrap_or(after_user)
        .to_string();
    let target = tokio::net::lookup_host(&authority)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("the test database's address {authority} does not resolve"));
    (authority, target)
}

/// A store on `url` (opened on the blocking pool: connecting waits for PostgreSQL).
pub async fn open(url: &str) -> Arc<PgStore> {
    let mut options = PgOptions::new(url);
    options.pool_size = 4;
    tokio::task::spawn_blocking(move || PgStore::connect(&options))
        .await
        .expect("connecting does not panic")
        .map(Arc::new)
        .expect("the test database accepts the schema")
}
