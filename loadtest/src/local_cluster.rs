//! `--local-cluster N`: N SFU nodes in this process, on 127.0.0.1 … 127.0.0.N, sharing
//! one throwaway PostgreSQL (started as the tests start it: `initdb` in a temporary
//! directory, removed when this process exits). Each node has its own connection pool
//! and lease, like separate machines would; they share this process's SFU runtime
//! (its threads are the SFU's CPU in the report) and its metrics.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_sfu::ClusterNode;
use conclave_sfu::cluster::LeaseConfig;
use conclave_sfu::config::Config;
use conclave_sfu::embedded::EmbeddedSfu;
use conclave_sfu::store::{ClusterStore, NodeId, NodeInfo, PgOptions, PgStore};
use conclave_sfu::tls::ServerIdentity;

use crate::LoadError;

/// How long the nodes have to acquire their leases.
const LEASE_WAIT: Duration = Duration::from_secs(30);

/// Starts `n` nodes on `runtime` and waits until each holds its lease.
pub(crate) fn start(
    runtime: &tokio::runtime::Runtime,
    n: usize,
    identity: &ServerIdentity,
    config: &Config,
) -> Result<Vec<EmbeddedSfu>, LoadError> {
    let url = conclave_sfu::store::postgres::testing::fresh_database();
    let mut sfus = Vec::with_capacity(n);
    let mut probe = None;
    for i in 1..=n {
        let octet = u8::try_from(i).map_err(|_| LoadError::Options("too many nodes".into()))?;
        let listen = SocketAddr::from((Ipv4Addr::new(127, 0, 0, octet), 0));
        let mut options = PgOptions::new(url.clone());
        options.pool_size = 8;
        let store = Arc::new(PgStore::connect(&options).map_err(|e| LoadError::Start {
            what: "PostgreSQL store",
            addr: listen,
            reason: e.to_string(),
        })?);
        let cluster: Arc<dyn ClusterStore> = Arc::clone(&store) as _;
        probe.get_or_insert_with(|| Arc::clone(&cluster));
        let node_id = NodeId::new(format!("node-{i}")).map_err(LoadError::Setup)?;
        let _guard = runtime.enter();
        let sfu =
            EmbeddedSfu::start_cluster(listen, identity, config.clone(), store, move |addr| {
                ClusterNode {
                    info: NodeInfo {
                        node_id,
                        quic_addr: addr.into(),
                        server_name: "localhost".into(),
                    },
                    store: cluster,
                    lease: LeaseConfig::default(),
                }
            })
            .map_err(|e| LoadError::Start {
                what: "cluster node",
                addr: listen,
                reason: e.to_string(),
            })?;
        sfus.push(sfu);
    }
    let probe = probe.ok_or_else(|| LoadError::Options("a cluster needs nodes".into()))?;
    let deadline = Instant::now() + LEASE_WAIT;
    loop {
        let live = probe
            .live_nodes()
            .map_err(|e| LoadError::Setup(format!("cluster leases: {e}")))?;
        if live.len() >= n {
            return Ok(sfus);
        }
        if Instant::now() > deadline {
            return Err(LoadError::Setup(format!(
                "only {} of {n} cluster nodes acquired a lease within {LEASE_WAIT:?}",
                live.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
