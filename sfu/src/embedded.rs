//! An SFU running inside the calling process, on a tokio task: for integration tests,
//! examples and `conclave-loadtest --embedded`. It is the real server ([`crate::run`])
//! behind a small handle that knows its address and certificate fingerprint and stops
//! it gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::shards::{ListenError, Listener};
use crate::store::Store;
use crate::tls::{ServerIdentity, TlsError};
use crate::{SfuError, run};

/// The future that tells an embedded server to stop.
type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Why an embedded server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The TLS configuration could not be built from the identity.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The shards could not start (sockets, threads).
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The UDP socket could not be bound (address in use, permission).
    #[error("cannot bind {addr}/udp: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running in-process SFU. Dropping it aborts the server; [`EmbeddedSfu::stop`]
/// shuts it down gracefully.
#[derive(Debug)]
pub struct EmbeddedSfu {
    addr: SocketAddr,
    fingerprint_sha256: [u8; 32],
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), SfuError>>>,
}

impl EmbeddedSfu {
    /// Binds `listen` (port 0 picks a free port) and starts serving with `identity`'s
    /// certificate, `config` and `store`, on the current tokio runtime.
    pub fn start(
        listen: SocketAddr,
        identity: &ServerIdentity,
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Self, EmbeddedError> {
        Self::launch(
            listen,
            identity,
            config,
            store,
            |endpoint, store, config, stop| tokio::spawn(run(endpoint, store, config, stop)),
        )
    }

    /// [`EmbeddedSfu::start`] with `shards` shards, each a thread of its own named
    /// `{thread_name}-{index}` (as `conclave-sfu --worker-threads` runs), on the
    /// address's one port. The shards' threads stop with the server.
    pub fn start_sharded(
        listen: SocketAddr,
        identity: &ServerIdentity,
        config: Config,
        store: Arc<dyn Store>,
        shards: usize,
        thread_name: &str,
    ) -> Result<Self, EmbeddedError> {
        let server_config = crate::tls::server_config(identity, &config.timing, &config.limits)?;
        let store_threads = config.store_threads_per_shard(shards);
        let listener = Listener::bind(listen, server_config, shards, thread_name, store_threads)?;
        Ok(Self::serve(
            listener,
            identity,
            store,
            config,
            |listener, store, config, stop| tokio::spawn(run(listener, store, config, stop)),
        ))
    }

    /// [`EmbeddedSfu::start`] with `adversary` attached: the real server, made hostile
    /// by the rules the test installs on it (feature `adversary`, tests only).
    #[cfg(feature = "adversary")]
    pub fn start_hostile(
        listen: SocketAddr,
        identity: &ServerIdentity,
        config: Config,
        store: Arc<dyn Store>,
        adversary: Arc<crate::server::hooks::Adversary>,
    ) -> Result<Self, EmbeddedError> {
        Self::launch(
            listen,
            identity,
            config,
            store,
            |endpoint, store, config, stop| {
                tokio::spawn(crate::server::run_hostile(
                    endpoint, store, config, adversary, stop,
                ))
            },
        )
    }

    /// [`EmbeddedSfu::start`] as one node of a cluster: `node` builds this node's
    /// cluster identity from the bound address (so port 0 works).
    pub fn start_cluster(
        listen: SocketAddr,
        identity: &ServerIdentity,
        config: Config,
        store: Arc<dyn Store>,
        node: impl FnOnce(SocketAddr) -> crate::ClusterNode + Send + 'static,
    ) -> Result<Self, EmbeddedError> {
        Self::launch(
            listen,
            identity,
            config,
            store,
            |endpoint, store, config, stop| {
                let addr = endpoint.local_addr();
                tokio::spawn(crate::run_cluster(
                    endpoint,
                    store,
                    node(addr),
                    config,
                    stop,
                ))
            },
        )
    }

    fn launch<S>(
        listen: SocketAddr,
        identity: &ServerIdentity,
        config: Config,
        store: Arc<dyn Store>,
        spawn: S,
    ) -> Result<Self, EmbeddedError>
    where
        S: FnOnce(Listener, Arc<dyn Store>, Config, StopSignal) -> JoinHandle<Result<(), SfuError>>,
    {
        let server_config = crate::tls::server_config(identity, &config.timing, &config.limits)?;
        let endpoint = quinn::Endpoint::server(server_config, listen).map_err(|source| {
            EmbeddedError::Bind {
                addr: listen,
                source,
            }
        })?;
        Ok(Self::serve(
            Listener::from(endpoint),
            identity,
            store,
            config,
            spawn,
        ))
    }

    fn serve<S>(
        listener: Listener,
        identity: &ServerIdentity,
        store: Arc<dyn Store>,
        config: Config,
        spawn: S,
    ) -> Self
    where
        S: FnOnce(Listener, Arc<dyn Store>, Config, StopSignal) -> JoinHandle<Result<(), SfuError>>,
    {
        let addr = listener.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(
            listener,
            store,
            config,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        );
        EmbeddedSfu {
            addr,
            fingerprint_sha256: identity.fingerprint_sha256,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The UDP address the server listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 of the server's certificate (what clients pin).
    #[must_use]
    pub fn fingerprint_sha256(&self) -> [u8; 32] {
        self.fingerprint_sha256
    }

    /// Shuts down gracefully (clients are told) and waits for the server to finish.
    pub async fn stop(mut self) -> Result<(), SfuError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| SfuError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedSfu {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
