//! `conclave-sfu`: the Conclave selective forwarding unit.
//!
//! Configuration comes from the built-in defaults, then an optional TOML file
//! (`--config`), then the environment (`CONCLAVE_<KEY>` and `CONCLAVE_<SECTION>__<KEY>`
//! for every setting, see `config::env`), then command-line flags, and is validated
//! before anything starts; an error names the file or variable of a bad value. The
//! store is opened (and its schema migrated) before the endpoints are bound.
//! Logs go to stderr. Once the endpoints are bound, stdout gets exactly these lines
//! (for scripts and tests; addresses are the bound ones, so port 0 works):
//!
//! ```text
//! conclave-sfu listening on <addr> (udp)
//! certificate sha-256 fingerprint: <64 hex digits>
//! metrics on http://<addr>/metrics            (only when enabled)
//! ```
//!
//! SIGINT or SIGTERM starts a drain: `/readyz` answers 503, new connections and rooms
//! are refused, clients are told to move, and the process exits 0 once they have gone
//! or `timing.drain_grace_secs` has passed; a second signal exits at once. SIGHUP
//! reloads the certificate and key from disk for new connections (a bad file is
//! refused and logged, and the old certificate stays). Any startup error exits nonzero
//! with its cause chain on stderr.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use conclave_sfu::config::{Config, ConfigError, StoreSetting, parse_metrics_listen};
use conclave_sfu::health::Health;
use conclave_sfu::store::{ClusterStore, PgOptions, PgStore, RedbStore, Store};
use conclave_sfu::{Listener, metrics_http, telemetry, tls};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Conclave SFU: QUIC control plane and end-to-end encrypted media forwarding.
///
/// Settings are taken from the defaults, then the --config file, then the environment
/// (CONCLAVE_<KEY>, CONCLAVE_<SECTION>__<KEY>), then these flags.
#[derive(Debug, Parser)]
#[command(name = "conclave-sfu", version, about, long_about)]
struct Cli {
    /// UDP address of the QUIC endpoint (default: 127.0.0.1:4433, or `listen` in the
    /// config file). Port 0 picks a free port; the bound address is printed.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Directory for the database and the development certificate (default: ./data,
    /// or `data_dir` in the config file). Created if missing.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// TCP address of the Prometheus /metrics and /healthz endpoint, or `off` to
    /// disable it (default: 127.0.0.1:9464, or `metrics_listen` in the config file).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_metrics_flag)]
    metrics_listen: Option<MetricsListen>,

    /// PEM certificate chain, leaf first, used with --key (default: none, which
    /// generates a self-signed development certificate in the data directory).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --cert (default: none).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Where durable state lives: `redb` (a file in the data directory, one node) or
    /// a PostgreSQL URL `postgres://user:password@host:port/database` shared by the
    /// nodes of a cluster (default: `store` in the config file, else redb).
    // Parsed after clap: clap would echo a refused value, password and all.
    #[arg(
        long,
        value_name = "redb|URL",
        env = "CONCLAVE_STORE",
        hide_env_values = true
    )]
    store: Option<String>,

    /// PEM CA certificate(s) that PostgreSQL's TLS certificate must chain to (default:
    /// `store_ca_file` in the config file, else the system trust store).
    #[arg(long, value_name = "FILE", env = "CONCLAVE_STORE_CA_FILE")]
    store_ca_file: Option<PathBuf>,

    /// TOML configuration file; unknown keys are errors (default: none, built-in
    /// defaults).
    #[arg(long, value_name = "FILE", env = "CONCLAVE_CONFIG")]
    config: Option<PathBuf>,

    /// Log filter for stderr, as a tracing EnvFilter directive such as `info` or
    /// `conclave_sfu=debug,quinn=warn` (default: $RUST_LOG if set, else `info`).
    #[arg(long, value_name = "FILTER", env = "CONCLAVE_LOG")]
    log: Option<String>,

    /// Log format on stderr: `text` for people, `json` (one object per line) for log
    /// collectors (default: text).
    #[arg(
        long,
        value_name = "FORMAT",
        env = "CONCLAVE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,

    /// Threads that serve connections (default: one per CPU). Each is a shard with its
    /// own socket on the node's one port and its own share of the rooms: a room's
    /// connections and its forwarding stay on one thread, so N threads carry about N
    /// times the load of one (clients are steered to a room's shard by a redirect).
    #[arg(
        long,
        value_name = "N",
        env = "CONCLAVE_WORKER_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=128)
    )]
    worker_threads: Option<u16>,

    /// Writes a new VAPID key (P-256, PKCS#8 PEM, mode 0600) to FILE for `[push]
    /// vapid_key_file`, prints its public key and exits. Refuses to overwrite a file.
    /// Without it (the default), the server starts.
    #[arg(long, value_name = "FILE")]
    generate_vapid_key: Option<PathBuf>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A parsed `--metrics-listen`: an address, or `None` for `off`.
#[derive(Debug, Clone, Copy)]
struct MetricsListen(Option<SocketAddr>);

fn parse_metrics_flag(s: &str) -> Result<MetricsListen, String> {
    parse_metrics_listen(s).map(MetricsListen)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.generate_vapid_key {
        return match generate_vapid_key(path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(&e);
                ExitCode::FAILURE
            }
        };
    }
    let format = cli.log_format;
    // The control runtime: start-up, signals, metrics, background tasks. Connections
    // are served by the shards' threads (--worker-threads).
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("conclave-main")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(try_main(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match format {
                LogFormat::Text => report(&e),
                LogFormat::Json => report_json(&e),
            }
            ExitCode::FAILURE
        }
    }
}

/// `--generate-vapid-key`: a new key in a new file (never overwritten), readable by its
/// owner only.
fn generate_vapid_key(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let pem = conclave_sfu::push::VapidKey::generate_pem()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let key = conclave_sfu::push::VapidKey::load(path)?;
    let public = key.public_key_base64url();
    eprintln!("wrote a VAPID key to {}", path.display());
    eprintln!("public key (base64url, for web apps' applicationServerKey): {public}");
    Ok(())
}

/// [`report`] as one JSON object on one line, for `--log-format json`.
fn report_json(error: &anyhow::Error) {
    let causes: Vec<String> = error.chain().skip(1).map(ToString::to_string).collect();
    let line = serde_json::json!({
        "level": "ERROR",
        "message": error.to_string(),
        "causes": causes,
    });
    eprintln!("{line}");
}

/// Prints an error and its causes to stderr, one per line, without a backtrace.
fn report(error: &anyhow::Error) {
    eprintln!("error: {error}");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        let message = cause.to_string();
        // Some errors repeat their source's message in their own; print it once.
        if message != previous {
            eprintln!("  caused by: {message}");
        }
        previous = message;
    }
}

/// Everything after argument parsing; an error ends the process with status 1.
async fn try_main(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.log.as_deref(), cli.log_format)?;
    // From here on SIGHUP reloads instead of killing the process (its default), even
    // while the store opens.
    let hangups = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let config = build_config(&cli)?;
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        store = %config.store,
        metrics = ?config.metrics_listen,
        "starting conclave-sfu {}",
        env!("CARGO_PKG_VERSION"),
    );
    prepare_data_dir(&config.data_dir)?;

    // The store before anything answers: a server that cannot keep state must not
    // print that it listens or answer a health check.
    let (store, cluster_store) = open_store(&config).await?;

    // Signal handlers first: a signal that arrives after the banner must not kill us.
    let stop = shutdown_signal().context("cannot install signal handlers")?;

    // The metrics port is bound now (a port in use fails the start), but answers only
    // once the certificate is loaded and the QUIC port bound: nothing says "alive" about
    // a node that is about to exit. It serves until the node has drained.
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind_metrics(addr).await?),
        None => None,
    };
    let identity = load_identity(&config)?;
    let server_config = tls::server_config(&identity, &config.timing, &config.limits)
        .context("cannot configure QUIC")?;
    let shards = cli.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        usize::from,
    );
    let store_threads = config.store_threads_per_shard(shards);
    let listener = bind_quic(server_config, config.listen, shards, store_threads)?;
    let health = Arc::new(Health::new());
    let (metrics_stop, metrics_stopped) = watch::channel(false);
    let metrics = match metrics_listener {
        Some(listener) => Some(serve_metrics(
            listener,
            Arc::clone(&health),
            metrics_stopped,
        )?),
        None => None,
    };
    let quic_addr = listener.local_addr();

    print_banner(
        quic_addr,
        &identity.fingerprint_hex(),
        metrics.as_ref().map(|(addr, _)| *addr),
    );

    let node = match (&config.cluster, cluster_store) {
        (Some(cluster), Some(cluster_store)) => {
            let info = cluster
                .node_info(quic_addr)
                .map_err(|e| anyhow::anyhow!("invalid [cluster] section: {e}"))?;
            tracing::info!(node = %info.node_id, advertise = %info.quic_addr, "joining the cluster");
            Some(conclave_sfu::ClusterNode {
                info,
                store: cluster_store,
                lease: cluster.lease(),
            })
        }
        _ => None,
    };
    let reload = tokio::spawn(reload_on_hangup(
        hangups,
        listener.config_handle(),
        config.clone(),
        Arc::clone(&health),
    ));
    let served = conclave_sfu::run_node(listener, store, config, node, health, stopped(stop)).await;
    reload.abort();
    let _ = metrics_stop.send(true);
    served?;

    if let Some((_, task)) = metrics {
        task.await
            .context("metrics endpoint task failed")?
            .context("metrics endpoint failed")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the configured store (on the blocking pool: opening may wait for the disk or
/// for PostgreSQL, and migrates the schema).
async fn open_store(config: &Config) -> anyhow::Result<Stores> {
    let setting = config.store.clone();
    let path = config.data_dir.join("conclave.redb");
    let mut options = match &setting {
        StoreSetting::Postgres(url) => Some(PgOptions::new(url.clone())),
        _ => None,
    };
    if let Some(options) = options.as_mut() {
        options.pool_size = config.store_pool_size;
        options.ca_file.clone_from(&config.store_ca_file);
    }
    let shown = setting.to_string();
    let cache_bytes = config.store_cache_bytes();
    let stores = tokio::task::spawn_blocking(move || -> anyhow::Result<Stores> {
        match options {
            Some(options) => {
                let store = Arc::new(
                    PgStore::connect(&options)
                        .with_context(|| format!("cannot open the PostgreSQL store {shown}"))?,
                );
                let cluster: Arc<dyn ClusterStore> = Arc::clone(&store) as _;
                Ok((store, Some(cluster)))
            }
            None => {
                let store = RedbStore::open_with_cache(&path, cache_bytes)
                    .with_context(|| format!("cannot open the database {}", path.display()))?;
                Ok((Arc::new(store), None))
            }
        }
    })
    .await
    .context("the store-opening task failed")??;
    tracing::info!(store = %setting, "store open");
    Ok(stores)
}

/// The store, and its cluster side when it has one (PostgreSQL).
type Stores = (Arc<dyn Store>, Option<Arc<dyn ClusterStore>>);

/// Logs to stderr, filtered by `--log`, else `RUST_LOG`, else `info`, as text or JSON.
fn init_logging(flag: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let env = std::env::var("RUST_LOG").ok();
    let directive = flag.or(env.as_deref()).unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_new(directive).with_context(|| {
        format!("invalid log filter {directive:?} (from --log, CONCLAVE_LOG or RUST_LOG)")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot initialize logging: {e}"))
}

/// Creates the data directory if needed and checks that it is a directory this
/// process can write.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "data directory {} is a file, not a directory: point --data-dir (or data_dir, CONCLAVE_DATA_DIR) elsewhere",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let probe = dir.join(".conclave-write-check");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "cannot write to data directory {}: check its owner and permissions",
                dir.display()
            )
        })
}

/// Binds the QUIC port with `shards` shards (each with `store_threads` threads for
/// store calls), saying plainly when the port is taken.
fn bind_quic(
    config: quinn::ServerConfig,
    addr: SocketAddr,
    shards: usize,
    store_threads: usize,
) -> anyhow::Result<Listener> {
    Listener::bind(addr, config, shards, "sfu-shard", store_threads).map_err(|e| {
        let hint = match e.io_kind() {
            Some(std::io::ErrorKind::AddrInUse) => {
                " (another process uses this port: stop it, or choose another --listen)"
            }
            Some(std::io::ErrorKind::AddrNotAvailable) => {
                " (no interface of this machine has that address)"
            }
            Some(std::io::ErrorKind::PermissionDenied) => {
                " (ports below 1024 need CAP_NET_BIND_SERVICE)"
            }
            _ => "",
        };
        anyhow::Error::new(e).context(format!(
            "cannot bind the QUIC endpoint on {addr} (udp){hint}"
        ))
    })
}

/// Reloads the certificate and key on every SIGHUP, for new connections (existing
/// ones keep theirs). A file that does not load is refused and logged; the certificate
/// in use stays. Nothing is reloaded while the node drains.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    endpoints: conclave_sfu::shards::ConfigHandle,
    config: Config,
    health: Arc<Health>,
) {
    while hangups.recv().await.is_some() {
        if health.is_draining() {
            tracing::info!("SIGHUP while draining: certificate not reloaded");
            continue;
        }
        let reloaded = reload_identity(&config).and_then(|identity| {
            let server = tls::server_config(&identity, &config.timing, &config.limits)
                .context("cannot configure QUIC with the new certificate")?;
            Ok((identity.fingerprint_hex(), server))
        });
        match reloaded {
            Ok((fingerprint, server)) => {
                endpoints.set_server_config(&server);
                metrics::counter!(telemetry::TLS_RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(%fingerprint, "SIGHUP: certificate reloaded for new connections");
            }
            Err(e) => {
                metrics::counter!(telemetry::TLS_RELOADS, "outcome" => "error").increment(1);
                tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: certificate not reloaded; the old one stays in use"
                );
            }
        }
    }
}

/// The environment's `CONCLAVE_…` variables (a variable of another name is never
/// read, whatever its bytes; one of ours must be text).
fn environment() -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().filter(|k| k.starts_with("CONCLAVE_")) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("environment variable {key} is not valid UTF-8"))?;
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

/// Defaults, then the config file, then the environment, then flags; validated.
fn build_config(cli: &Cli) -> anyhow::Result<Config> {
    let vars = environment()?;
    let file = cli.config.as_deref();
    let mut config = Config::load_layered(file, vars.clone())?;
    apply_flags(cli, &mut config)?;
    if let Err(e) = config.validate() {
        // Name where the bad value came from: the variable without which the rest is
        // valid, else the file and flags.
        let finish = |mut c: Config| {
            apply_flags(cli, &mut c).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            c.validate()
        };
        return Err(match Config::blame_environment(file, &vars, finish) {
            Some(var) => anyhow::anyhow!("{e} (set by the environment variable {var})"),
            None => match file {
                Some(path) => anyhow::anyhow!(
                    "{e} (check the config file {} and the flags)",
                    path.display()
                ),
                None => anyhow::anyhow!("{e} (check the flags)"),
            },
        });
    }
    Ok(config)
}

/// The command-line flags, over everything else.
fn apply_flags(cli: &Cli, config: &mut Config) -> anyhow::Result<()> {
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(MetricsListen(metrics)) = cli.metrics_listen {
        config.metrics_listen = metrics;
    }
    if let Some(cert) = &cli.cert {
        config.cert = Some(cert.clone());
    }
    if let Some(key) = &cli.key {
        config.key = Some(key.clone());
    }
    if let Some(store) = &cli.store {
        config.store = StoreSetting::parse(store)
            .map_err(|e| anyhow::anyhow!("invalid --store (or CONCLAVE_STORE): {e}"))?;
    }
    if let Some(ca) = &cli.store_ca_file {
        config.store_ca_file = Some(ca.clone());
    }
    Ok(())
}

/// Binds the metrics endpoint.
async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot bind the metrics endpoint on {addr} (tcp): is another process using it?")
    })
}

/// Installs the recorder and serves the metrics endpoint in the background.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let handle = metrics_http::install_recorder().context("cannot install the metrics recorder")?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound metrics address")?;
    let task = tokio::spawn(metrics_http::serve(listener, handle, health, stopped(stop)));
    Ok((bound, task))
}

/// The certificate files again, for a reload: the operator's, or the development
/// certificate already in the data directory (a reload never generates one, which
/// would break every client's pin).
fn reload_identity(config: &Config) -> anyhow::Result<tls::ServerIdentity> {
    let (cert, key) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => (
            config.data_dir.join(tls::DEV_CERT_FILE),
            config.data_dir.join(tls::DEV_KEY_FILE),
        ),
    };
    Ok(tls::load_pem(&cert, &key)?)
}

/// The operator's certificate, or the development certificate (generated if needed).
fn load_identity(config: &Config) -> anyhow::Result<tls::ServerIdentity> {
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        let identity = tls::load_pem(cert, key)?;
        tracing::info!(cert = %cert.display(), "loaded TLS certificate");
        return Ok(identity);
    }
    let (identity, generated) = tls::load_or_generate_dev(&config.data_dir)?;
    let path = config.data_dir.join(tls::DEV_CERT_FILE);
    tracing::warn!(
        cert = %path.display(),
        generated,
        fingerprint = %identity.fingerprint_hex(),
        "USING A SELF-SIGNED DEVELOPMENT CERTIFICATE: clients must pin its fingerprint; \
         pass --cert and --key for production",
    );
    Ok(identity)
}

/// Prints the machine-readable startup lines to stdout and flushes.
fn print_banner(quic: SocketAddr, fingerprint: &str, metrics: Option<SocketAddr>) {
    let mut out = std::io::stdout().lock();
    let mut banner = format!(
        "conclave-sfu listening on {quic} (udp)\ncertificate sha-256 fingerprint: {fingerprint}\n"
    );
    if let Some(addr) = metrics {
        banner.push_str(&format!("metrics on http://{addr}/metrics\n"));
    }
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        // A closed stdout must not stop the server; the logs say the same.
        tracing::warn!(error = %e, "cannot write the startup banner to stdout");
    }
}

/// Registers SIGINT and SIGTERM handlers; the receiver turns `true` on the first
/// signal. A second signal exits immediately.
fn shutdown_signal() -> std::io::Result<watch::Receiver<bool>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!("{name} received: shutting down gracefully (signal again to exit now)");
        let _ = tx.send(true);
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::error!("second signal received: exiting without a graceful shutdown");
        std::process::exit(1);
    });
    Ok(rx)
}

/// Resolves once `stop` turns `true` (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
