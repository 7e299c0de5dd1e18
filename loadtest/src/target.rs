//! The SFU under test: started in this process on its own runtime (`--embedded`), a
//! cluster of nodes started in this process on a throwaway PostgreSQL
//! (`--local-cluster N`), or running ones (`--server`, once per node). Knows how to
//! read its CPU time, peak memory and counters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use conclave_sdk::transport::ServerTrust;
use conclave_sfu::embedded::EmbeddedSfu;
use conclave_sfu::store::MemoryStore;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::LoadError;
use crate::metrics;
use crate::options::Options;
use crate::probe;
use crate::report::SfuMetrics;

/// Name prefix of the in-process SFU's threads (their CPU time is the SFU's).
pub(crate) const SFU_THREADS: &str = "sfu-rt";

/// The process-wide metrics recorder (installed once; the SFU's counters land in it).
fn recorder() -> Option<&'static PrometheusHandle> {
    static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    RECORDER
        .get_or_init(|| conclave_sfu::metrics_http::install_recorder().ok())
        .as_ref()
}

/// One reading of the SFU at a phase boundary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reading {
    pub(crate) sfu_cpu: Option<f64>,
    pub(crate) process_cpu: Option<f64>,
    pub(crate) metrics: Option<SfuMetrics>,
    /// Resident memory of the SFU process (`--sfu-pid`), bytes.
    pub(crate) sfu_rss: Option<u64>,
}

struct Embedded {
    runtime: tokio::runtime::Runtime,
    /// One, or the nodes of a local cluster.
    sfus: Vec<EmbeddedSfu>,
    _dir: tempfile::TempDir,
}

/// The SFU under test.
pub(crate) struct Target {
    /// Its address, or its nodes' addresses (participants connect first to each in
    /// turn).
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) trust: ServerTrust,
    pub(crate) server_name: String,
    pub(crate) label: String,
    embedded: Option<Embedded>,
    metrics_url: Option<String>,
    sfu_pid: Option<u32>,
    /// Resident memory of the SFU process (`--sfu-pid`) before any participant
    /// connected, bytes.
    pub(crate) sfu_rss_at_start: Option<u64>,
    pub(crate) readings: Mutex<Vec<Reading>>,
    pub(crate) problems: Mutex<Vec<String>>,
    /// CPU of the in-process SFU's threads (its runtimes and their blocking pools).
    sfu_threads_cpu: probe::ThreadsCpu,
}

impl Target {
    /// Starts the in-process SFU or describes the remote one.
    pub(crate) fn start(options: &Options) -> Result<Arc<Target>, LoadError> {
        if let Some(&addr) = options.server.first() {
            let trust = match (&options.pin, &options.ca) {
                (Some(pin), _) => ServerTrust::pinned_hex(pin)
                    .map_err(|e| LoadError::Options(format!("--pin: {e}")))?,
                (None, Some(ca)) => {
                    ServerTrust::CaPem(std::fs::read(ca).map_err(|source| LoadError::Io {
                        path: ca.display().to_string(),
                        source,
                    })?)
                }
                (None, None) => ServerTrust::SystemRoots,
            };
            let label = if options.server.len() == 1 {
                addr.to_string()
            } else {
                format!("cluster of {} nodes from {addr}", options.server.len())
            };
            return Ok(Arc::new(Target {
                addrs: options.server.clone(),
                trust,
                server_name: options.server_name.clone(),
                label,
                embedded: None,
                metrics_url: options.metrics_url.clone(),
                sfu_pid: options.sfu_pid,
                sfu_rss_at_start: options.sfu_pid.and_then(probe::pid_rss_bytes),
                readings: Mutex::new(Vec::new()),
                problems: Mutex::new(Vec::new()),
                sfu_threads_cpu: probe::ThreadsCpu::new(SFU_THREADS),
            }));
        }
        let _ = recorder();
        // The SFU's control runtime; its connections are served by `sfu_threads`
        // shards, each a thread of its own (as `conclave-sfu --worker-threads` runs).
        // A local cluster runs its nodes on this runtime's threads.
        let control_threads = if options.local_cluster.is_some() {
            options.sfu_threads
        } else {
            1
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(control_threads)
            .thread_name(SFU_THREADS)
            .enable_all()
            .build()
            .map_err(|e| LoadError::Setup(format!("SFU runtime: {e}")))?;
        let dir = tempfile::tempdir().map_err(|source| LoadError::Io {
            path: "temporary directory".into(),
            source,
        })?;
        let (identity, _) = conclave_sfu::tls::load_or_generate_dev(dir.path())
            .map_err(|e| LoadError::Setup(format!("SFU certificate: {e}")))?;
        let mut config = conclave_sfu::config::Config::default();
        config.metrics_listen = None;
        // Every simulated participant registers from 127.0.0.1: lift the per-address
        // registration limit (a defence against account floods, not load).
        config.limits.registrations_per_ip_burst = u32::MAX;
        config.limits.registrations_per_ip_per_hour = u32::MAX;
        // The run is over when the SFU stops: no calls to hand over, so a short drain.
        config.timing.drain_grace_secs = 1;
        config.timing.media_pack_ms = options.sfu_pack_ms;
        let (sfus, label) = match options.local_cluster {
            Some(n) => (
                crate::local_cluster::start(&runtime, n, &identity, &config)?,
                format!("local cluster of {n} nodes (PostgreSQL)"),
            ),
            None => {
                let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
                let _guard = runtime.enter();
                let sfu = EmbeddedSfu::start_sharded(
                    listen,
                    &identity,
                    config,
                    Arc::new(MemoryStore::new()),
                    options.sfu_threads,
                    SFU_THREADS,
                )
                .map_err(|e| LoadError::Start {
                    what: "SFU",
                    addr: listen,
                    reason: e.to_string(),
                })?;
                (vec![sfu], "embedded".into())
            }
        };
        Ok(Arc::new(Target {
            addrs: sfus.iter().map(EmbeddedSfu::addr).collect(),
            trust: ServerTrust::PinnedSha256(identity.fingerprint_sha256),
            server_name: "localhost".into(),
            label,
            embedded: Some(Embedded {
                runtime,
                sfus,
                _dir: dir,
            }),
            metrics_url: None,
            sfu_pid: None,
            sfu_rss_at_start: None,
            readings: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
            sfu_threads_cpu: probe::ThreadsCpu::new(SFU_THREADS),
        }))
    }

    /// Whether the SFU runs in this process.
    pub(crate) fn in_process(&self) -> bool {
        self.embedded.is_some()
    }

    /// The SFU's CPU seconds so far.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        if self.in_process() {
            self.sfu_threads_cpu.read()
        } else {
            self.sfu_pid.and_then(probe::pid_cpu_seconds)
        }
    }

    /// Peak RSS: of the SFU process, or of this whole process when it hosts the SFU.
    pub(crate) fn peak_rss_bytes(&self) -> Option<u64> {
        if self.in_process() {
            probe::process_peak_rss_bytes()
        } else {
            self.sfu_pid.and_then(probe::pid_peak_rss_bytes)
        }
    }

    /// The SFU's counters now.
    pub(crate) async fn metrics(&self) -> Option<SfuMetrics> {
        if self.in_process() {
            return recorder().map(|r| metrics::parse(&r.render()));
        }
        let url = self.metrics_url.as_ref()?;
        match tokio::time::timeout(Duration::from_secs(10), metrics::scrape(url)).await {
            Ok(Ok(text)) => Some(metrics::parse(&text)),
            Ok(Err(e)) => {
                self.problem(format!("metrics: {e}"));
                None
            }
            Err(_) => {
                self.problem(format!("metrics: {url} did not answer in 10 s"));
                None
            }
        }
    }

    pub(crate) fn problem(&self, p: String) {
        self.problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(p);
    }
}

impl crate::sim::Probe for Target {
    async fn mark(&self) {
        let reading = Reading {
            sfu_cpu: self.cpu_seconds(),
            process_cpu: probe::process_cpu_seconds(),
            metrics: self.metrics().await,
            sfu_rss: self.sfu_pid.and_then(probe::pid_rss_bytes),
        };
        self.readings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(reading);
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut e) = self.embedded.take() {
            for sfu in e.sfus.drain(..) {
                // Graceful stop, bounded; the runtime is ours and idle otherwise.
                let _ = e.runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(5), sfu.stop()).await
                });
            }
            e.runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
