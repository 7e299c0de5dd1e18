//! Shards: one node's UDP port served by one thread per core, each room on one thread.
//!
//! A [`Listener`] binds `N` sockets to the node's one port (`SO_REUSEPORT`) and gives
//! each to a *shard*: an OS thread running a single-threaded tokio runtime with its own
//! quinn endpoint. The kernel steers every datagram to the shard that holds its
//! connection by the first byte of the destination connection ID (`bpf`, [`steer`]).
//! Rooms are assigned to shards by their routing id ([`steer::shard_of_room`]); a
//! connection asking to open or join a room of another shard is redirected to it
//! (`WRONG_NODE` with this node's address and a steering byte, the redirect cluster
//! mode uses between nodes), and the client opens a rooms-only connection that lands
//! there. So a room's connections, their datagram forwarding and quinn's per-connection
//! work all run on one thread: no cross-thread wake-up or contended lock per datagram,
//! which is what made a multi-threaded runtime cost 1.3–1.5× a single thread per
//! forwarded datagram (docs/benchmarks.md). The control plane (directory, mailbox,
//! room registry, store) is shared by all shards.
//!
//! One shard needs none of this: [`Listener::from`] a quinn endpoint serves on the
//! caller's runtime, as the tests and the embedded server do.

mod bpf;
mod socket;
pub mod steer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub use socket::MAX_GSO_SEGMENTS;
pub use steer::MAX_SHARDS;

/// Why a [`Listener`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The shard count is 0 or above [`MAX_SHARDS`].
    #[error("{0} shards asked for: choose 1 to {MAX_SHARDS} (one per core is the default)")]
    Shards(usize),
    /// The sockets could not be bound (address in use, permission, no interface) or
    /// steered (more than one shard needs Linux).
    #[error("cannot bind {addr}/udp: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A shard's runtime or thread could not start.
    #[error("cannot start shard {shard}: {source}")]
    Thread {
        /// The shard.
        shard: usize,
        /// Why.
        source: std::io::Error,
    },
}

impl ListenError {
    /// The I/O error underneath, if any (e.g. to tell "address in use" apart).
    #[must_use]
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            ListenError::Bind { source, .. } | ListenError::Thread { source, .. } => {
                Some(source.kind())
            }
            ListenError::Shards(_) => None,
        }
    }
}

/// One shard's endpoint and where its tasks run.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) endpoint: quinn::Endpoint,
    /// The shard's runtime; `None`: the runtime [`crate::run`] is called on.
    pub(crate) runtime: Option<Handle>,
}

/// The node's QUIC port, served by one or more shards. Dropping it stops the shard
/// threads (after [`crate::run`] has closed their endpoints).
#[derive(Debug)]
pub struct Listener {
    shards: Vec<Shard>,
    /// Stops each shard thread (which then ends on its own).
    stops: Vec<oneshot::Sender<()>>,
    local_addr: SocketAddr,
}

/// How long a stopping shard waits for its blocking tasks (store calls) to finish.
const SHARD_STOP_GRACE: Duration = Duration::from_secs(2);

impl Listener {
    /// Binds `addr` (port 0 picks a free port) with `shards` shards, each on a thread
    /// of its own named `{thread_name}-{index}`, serving `server_config`. One shard
    /// runs on a thread too (use [`Listener::from`] a quinn endpoint to serve on the
    /// caller's runtime instead). Each shard runs its store calls on at most
    /// `store_threads` more threads (its runtime's blocking pool; at least 1):
    /// [`crate::config::Config::store_threads_per_shard`].
    pub fn bind(
        addr: SocketAddr,
        server_config: quinn::ServerConfig,
        shards: usize,
        thread_name: &str,
        store_threads: usize,
    ) -> Result<Self, ListenError> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(ListenError::Shards(shards));
        }
        let sockets =
            bpf::bind_group(addr, shards).map_err(|source| ListenError::Bind { addr, source })?;
        let local_addr = sockets
            .first()
            .map(std::net::UdpSocket::local_addr)
            .transpose()
            .map_err(|source| ListenError::Bind { addr, source })?
            .unwrap_or(addr);
        let mut listener = Listener {
            shards: Vec::with_capacity(shards),
            stops: Vec::with_capacity(shards),
            local_addr,
        };
        for (index, socket) in sockets.into_iter().enumerate() {
            let thread = format!("{thread_name}-{index}");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(store_threads.max(1))
                .enable_all()
                .thread_name(&thread)
                .build()
                .map_err(|source| ListenError::Thread {
                    shard: index,
                    source,
                })?;
            let mut endpoint_config = quinn::EndpointConfig::default();
            endpoint_config.cid_generator(move || Box::new(steer::ShardCids::new(index, shards)));
            let endpoint = {
                // quinn spawns its endpoint driver on the runtime entered here, and
                // registers the socket with that runtime's reactor.
                let _entered = runtime.enter();
                let quinn_runtime = quinn::TokioRuntime;
                let socket = socket::CappedSocket::wrap(&quinn_runtime, socket, MAX_GSO_SEGMENTS)
                    .map_err(|source| ListenError::Bind { addr, source })?;
                quinn::Endpoint::new_with_abstract_socket(
                    endpoint_config,
                    Some(server_config.clone()),
                    socket,
                    Arc::new(quinn_runtime),
                )
                .map_err(|source| ListenError::Bind { addr, source })?
            };
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(thread)
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(SHARD_STOP_GRACE);
                })
                .map_err(|source| ListenError::Thread {
                    shard: index,
                    source,
                })?;
            listener.stops.push(stop);
            listener.shards.push(Shard {
                index,
                endpoint,
                runtime: Some(handle),
            });
        }
        Ok(listener)
    }

    /// The bound address (the one port every shard shares).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many shards serve the port.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// A handle that can reload the server configuration while [`crate::run`] owns the
    /// listener.
    #[must_use]
    pub fn config_handle(&self) -> ConfigHandle {
        ConfigHandle {
            endpoints: self.shards.iter().map(|s| s.endpoint.clone()).collect(),
        }
    }
}

/// Reloads the server configuration of every shard of a [`Listener`] (SIGHUP).
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    endpoints: Vec<quinn::Endpoint>,
}

impl ConfigHandle {
    /// Replaces the server configuration of every shard, for new connections.
    pub fn set_server_config(&self, config: &quinn::ServerConfig) {
        for endpoint in &self.endpoints {
            endpoint.set_server_config(Some(config.clone()));
        }
    }
}

impl From<quinn::Endpoint> for Listener {
    /// One shard: `endpoint`, served on the runtime [`crate::run`] is called on.
    fn from(endpoint: quinn::Endpoint) -> Self {
        let local_addr = endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Listener {
            shards: vec![Shard {
                index: 0,
                endpoint,
                runtime: None,
            }],
            stops: Vec::new(),
            local_addr,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Each thread ends on its own once its runtime has shut down; joining them
        // here could block a runtime thread.
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests;
