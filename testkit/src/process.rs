//! Real SFU processes in cluster mode on one real PostgreSQL, for what only a process
//! can show: `kill -9` (no shutdown path runs), `SIGSTOP`/`SIGCONT` (a node frozen
//! past its lease comes back), a PostgreSQL restart under them.
//!
//! Node `i` (from 1) listens on `127.0.0.i` with a port of its own, so each node has
//! its own address as in production; all share one certificate (one pin for the
//! clients) and one database. Cargo hands the binary's path only to tests of this
//! package, so a test passes `env!("CARGO_BIN_EXE_conclave-sfu-under-test")`.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use conclave_sdk::client::ClientConfig;
use conclave_sdk::transport::ServerTrust;
use conclave_sfu::store::postgres::testing;
use conclave_sfu::tls;

use crate::clients::test_timers;

/// How long a node has to print its banner.
const START_WAIT: Duration = Duration::from_secs(30);

/// One `conclave-sfu` process of a cluster.
pub struct NodeProcess {
    /// Its id (`node-i`).
    pub node_id: String,
    /// Its QUIC address (also the one it advertises).
    pub addr: SocketAddr,
    command: Vec<String>,
    child: Child,
    /// Where its stderr (the log) goes, appended across restarts.
    log: PathBuf,
}

impl NodeProcess {
    /// Starts the binary `bin` with `args`, its log appended to `log`, and waits
    /// (bounded) for its banner.
    fn spawn(
        bin: &Path,
        node_id: &str,
        addr: SocketAddr,
        args: Vec<String>,
        log: PathBuf,
    ) -> NodeProcess {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        // Keeps draining stdout for the life of the process.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut command = vec![bin.display().to_string()];
        command.extend(args);
        let mut node = NodeProcess {
            node_id: node_id.to_string(),
            addr,
            command,
            child,
            log,
        };
        loop {
            match lines.recv_timeout(START_WAIT) {
                Ok(line) if line.starts_with("conclave-sfu listening on ") => return node,
                Ok(_) => {}
                Err(e) => {
                    node.stop_now();
                    panic!(
                        "{node_id} printed no banner ({e}); log:\n{}",
                        node.log_tail(50)
                    );
                }
            }
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts this node again (same id, address, database and certificate) after it
    /// exited or was killed.
    pub fn restart(&mut self) {
        assert!(
            !matches!(self.child.try_wait(), Ok(None)),
            "{} is still running",
            self.node_id
        );
        let (bin, args) = self.command.split_first().expect("a command line");
        let fresh = NodeProcess::spawn(
            Path::new(bin),
            &self.node_id,
            self.addr,
            args.to_vec(),
            self.log.clone(),
        );
        *self = fresh;
    }

    /// `SIGKILL`: no shutdown path runs; its lease and rooms stay in the store until
    /// the lease runs out.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("the node process can be killed");
        let status = self.child.wait().expect("the killed node is reaped");
        assert!(!status.success(), "killed, not exited: {status}");
    }

    /// `SIGSTOP`: the process freezes (no heartbeat, no packet) until [`Self::resume`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// `SIGCONT` after [`Self::freeze`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// `SIGTERM`: a clean stop (the node releases its lease and rooms); waits for it.
    pub fn terminate(&mut self) {
        self.signal("-TERM");
        let status = self.child.wait().expect("the node exits");
        assert!(status.success(), "{} exited with {status}", self.node_id);
    }

    /// `SIGTERM` without waiting: the node starts draining.
    pub fn start_drain(&self) {
        self.signal("-TERM");
    }

    /// Waits (bounded by `within`) for the process to exit; its status, or `None` if
    /// it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SIGHUP`: the node reloads its certificate and key.
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .arg(which)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {which} {}", self.child.id());
    }

    /// Kills the process if it runs (thawing it first, if frozen).
    fn stop_now(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for NodeProcess {
    /// A failed test must not leave a server running (or frozen); it shows the log.
    fn drop(&mut self) {
        self.stop_now();
        if thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.node_id, self.log_tail(80));
        }
    }
}

/// `n` node processes on one fresh database.
pub struct ProcessCluster {
    /// The nodes; `nodes[i]` is `node-{i+1}` on `127.0.0.{i+1}`.
    pub nodes: Vec<NodeProcess>,
    /// The database URL.
    pub url: String,
    /// The clients' one trust setting (the shared certificate's pin).
    pub trust: ServerTrust,
    /// The directory of the nodes' shared certificate and key (`tls::DEV_CERT_FILE`,
    /// `tls::DEV_KEY_FILE`), which a reload test may replace.
    pub certs: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProcessCluster {
    /// Starts `n` nodes of the binary `bin` with the default lease settings and waits
    /// until all hold their lease.
    pub async fn start(bin: &str, n: usize) -> ProcessCluster {
        Self::start_with_lease(bin, n, None).await
    }

    /// Like [`ProcessCluster::start`], with `lease_ms` and `renew_ms` (the `[cluster]`
    /// settings) if given.
    pub async fn start_with_lease(
        bin: &str,
        n: usize,
        lease: Option<(u64, u64)>,
    ) -> ProcessCluster {
        Self::launch(bin, n, lease, 1).await
    }

    /// Like [`ProcessCluster::start`], each node serving its port with `shards` shards
    /// (`--worker-threads`; the others run one, so that which node and shard a room
    /// lives on is only the cluster's choice).
    pub async fn start_sharded(bin: &str, n: usize, shards: usize) -> ProcessCluster {
        Self::launch(bin, n, None, shards).await
    }

    async fn launch(
        bin: &str,
        n: usize,
        lease: Option<(u64, u64)>,
        shards: usize,
    ) -> ProcessCluster {
        let bin = PathBuf::from(bin);
        let url = testing::fresh_database();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certs = dir.path().join("certs");
        let identity = tls::load_or_generate_dev(&certs)
            .expect("a dev certificate")
            .0;
        let trust = ServerTrust::PinnedSha256(identity.fingerprint_sha256);
        let root = dir.path().to_path_buf();
        let database = url.clone();
        let nodes = tokio::task::spawn_blocking(move || {
            (1..=n)
                .map(|i| start_node(&bin, &root, &database, i, lease, shards))
                .collect::<Vec<_>>()
        })
        .await
        .expect("starting nodes does not panic");
        let cluster = ProcessCluster {
            nodes,
            url,
            trust,
            certs,
            _dir: dir,
        };
        cluster.wait_for_leases(n).await;
        cluster
    }

    /// Waits (bounded) until `n` nodes hold a live lease.
    pub async fn wait_for_leases(&self, n: usize) {
        crate::cluster::wait_for_live_nodes(&self.url, n).await;
    }

    /// A client configuration (with [`test_timers`]) that bootstraps from node
    /// `first` and knows every other node.
    pub fn client_config(&self, first: usize) -> ClientConfig {
        let mut config = ClientConfig::new(self.nodes[first].addr, self.trust.clone());
        config.more_servers = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, node)| node.addr.to_string())
            .collect();
        test_timers(&mut config);
        // A failover takes seconds; keep the participants of a meeting from rekeying
        // each other out for being away that long.
        config.drop_after = Duration::from_secs(15);
        config
    }
}

/// Starts node `i` on `127.0.0.i`, a free port, its own data directory and config.
fn start_node(
    bin: &Path,
    root: &Path,
    url: &str,
    i: usize,
    lease: Option<(u64, u64)>,
    shards: usize,
) -> NodeProcess {
    let node_id = format!("node-{i}");
    let ip = Ipv4Addr::new(127, 0, 0, u8::try_from(i).expect("at most 254 nodes"));
    let addr = free_udp_port(ip);
    let data = root.join(&node_id);
    std::fs::create_dir_all(&data).expect("a node data directory");
    let config = data.join("conclave.toml");
    let mut toml = format!("[cluster]\nnode_id = \"{node_id}\"\n");
    if let Some((lease_ms, renew_ms)) = lease {
        toml.push_str(&format!("lease_ms = {lease_ms}\nrenew_ms = {renew_ms}\n"));
    }
    // Tests drain in seconds, not the production 25 s.
    toml.push_str("[timing]\ndrain_grace_secs = 5\n");
    std::fs::write(&config, toml).expect("the node's config file");
    let certs = root.join("certs");
    let path = |p: PathBuf| p.display().to_string();
    let args = vec![
        "--listen".into(),
        addr.to_string(),
        "--metrics-listen".into(),
        "off".into(),
        "--data-dir".into(),
        path(data),
        "--config".into(),
        path(config),
        "--store".into(),
        url.to_string(),
        "--cert".into(),
        path(certs.join(tls::DEV_CERT_FILE)),
        "--key".into(),
        path(certs.join(tls::DEV_KEY_FILE)),
        "--log".into(),
        std::env::var("CONCLAVE_NODE_LOG").unwrap_or_else(|_| "info".into()),
        "--worker-threads".into(),
        shards.to_string(),
    ];
    NodeProcess::spawn(
        bin,
        &node_id,
        addr,
        args,
        root.join(format!("{node_id}.log")),
    )
}

/// A UDP port free on `ip` right now.
fn free_udp_port(ip: Ipv4Addr) -> SocketAddr {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind {ip}: {e}"))
}
