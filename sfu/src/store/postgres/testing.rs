//! A real PostgreSQL for tests: one throwaway server per test process, one fresh
//! database per test.
//!
//! [`fresh_database`] returns the URL of a new, empty database. The server is, in
//! order of preference:
//! 1. the one `CONCLAVE_TEST_POSTGRES` names (a URL whose user may create databases),
//! 2. a throwaway server this process starts: `initdb` into a temporary directory, then
//!    `postgres` on a free loopback port, with durability settings off for speed. When
//!    the test process exits, however it exits, a watchdog shell sees its stdin close,
//!    stops the server and deletes the directory. As root (PostgreSQL refuses to run as
//!    root) it runs as the `postgres` user that Debian's package creates (`runuser`
//!    for `initdb`, `setpriv` for the server, which must receive the stop signal).
//!
//! Without either, the test fails and says how to install PostgreSQL: a test that
//! needs a real database never skips silently.
//!
//! [`dedicated_server`] starts a throwaway server of the caller's own (always, even
//! with `CONCLAVE_TEST_POSTGRES` set), which [`TestServer::restart`] crashes and starts
//! again: for tests of what survives a PostgreSQL restart. It commits synchronously, so
//! what it acknowledged survives the crash (the machine does not crash, so the WAL in
//! the OS's cache is enough; `fsync` stays off).

#![allow(
    clippy::panic,
    reason = "test support: a panic with instructions is how a missing PostgreSQL fails a test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable naming an existing server to use instead.
pub const ENV_URL: &str = "CONCLAVE_TEST_POSTGRES";

/// How long a throwaway server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The server every test of this process shares.
#[derive(Debug)]
pub struct TestServer {
    /// Where to connect as an administrator (`postgres://user@host:port`, no database).
    base: String,
    /// The database administrative statements connect to.
    admin_db: String,
    /// The watchdog's stdin: the server lives as long as this stays open; a line
    /// `restart` crashes it and starts it again.
    watchdog: Option<Mutex<(Child, ChildStdin)>>,
    /// The throwaway server's directory (its log is `postgres.log` there).
    dir: Option<PathBuf>,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(1);

/// The shared server, started on first use.
///
/// # Panics
/// If no server can be had (see the module docs): the message says what to install.
#[must_use]
pub fn server() -> &'static TestServer {
    SERVER.get_or_init(|| match std::env::var(ENV_URL) {
        Ok(url) if !url.is_empty() => TestServer::external(&url),
        _ => TestServer::start_throwaway(false),
    })
}

/// A throwaway server of the caller's own, which it can [`TestServer::restart`].
///
/// # Panics
/// If PostgreSQL is not installed (the message says what to install).
#[must_use]
pub fn dedicated_server() -> TestServer {
    TestServer::start_throwaway(true)
}

/// A new empty database on the shared server; returns its URL.
///
/// # Panics
/// If the server cannot be had or refuses to create the database.
#[must_use]
pub fn fresh_database() -> String {
    server().create_database()
}

impl TestServer {
    fn external(url: &str) -> TestServer {
        let config: tokio_postgres::Config = url
            .parse()
            .unwrap_or_else(|e| panic!("{ENV_URL} is not a PostgreSQL URL: {e}"));
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        TestServer {
            base: format!("postgres://{user}{password}@{host}:{port}"),
            admin_db: config.get_dbname().unwrap_or("postgres").to_string(),
            watchdog: None,
            dir: None,
        }
    }

    /// `synchronous`: commit synchronously (for a server that will be crashed).
    fn start_throwaway(synchronous: bool) -> TestServer {
        let bin = find_bindir().unwrap_or_else(|| {
            panic!(
                "these tests need PostgreSQL: install it (Debian: apt-get install postgresql) \
                 so that initdb and postgres are on PATH or in /usr/lib/postgresql/*/bin, or \
                 set {ENV_URL}=postgres://user@host:port/db to use a running server"
            )
        });
        let as_root = is_root();
        let dir = std::env::temp_dir().join(format!(
            "conclave-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "running as root, the tests start PostgreSQL as the `postgres` user, which \
                 does not exist here: install Debian's postgresql package or set {ENV_URL}"
            );
        }
        let data = dir.join("data");
        let initdb = as_user(as_root, &bin.join("initdb"))
            .args([
                "-U",
                "conclave",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        // setpriv changes user and execs (runuser would fork and keep the signal from
        // reaching the server).
        let program = if as_root {
            args.extend(["--reuid=postgres", "--regid=postgres", "--init-groups"].map(Into::into));
            args.push(bin.join("postgres").into());
            PathBuf::from("setpriv")
        } else {
            bin.join("postgres")
        };
        args.extend([
            "-D".into(),
            data.into_os_string(),
            "-p".into(),
            port.to_string().into(),
        ]);
        args.extend(["-k".into(), dir.clone().into_os_string()]);
        let commit = if synchronous {
            "synchronous_commit=on"
        } else {
            "synchronous_commit=off"
        };
        for setting in [
            "listen_addresses=127.0.0.1",
            "fsync=off",
            commit,
            "full_page_writes=off",
            "max_connections=400",
        ] {
            args.extend(["-c".into(), setting.into()]);
        }
        // `$0` is the program, `$@` its arguments: no quoting of paths needed. A line
        // `restart` on stdin crashes the server (SIGQUIT: immediate shutdown) and starts
        // it again; end of input (the test process gone) stops it and cleans up.
        let script = "while :; do \"$0\" \"$@\" >>\"$LOG\" 2>&1 & pid=$!; \
                      read cmd || cmd=quit; \
                      if [ \"$cmd\" = restart ]; then kill -QUIT $pid; wait $pid; \
                      else kill -INT $pid; wait $pid; break; fi; done; rm -rf \"$DIR\"";
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&program)
            .args(&args)
            .env("LOG", dir.join("postgres.log"))
            .env("DIR", &dir)
            .stdin(Stdio::piped())
            // Not the test's own output: a reader of it would wait for the watchdog.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let stdin = child.stdin.take().expect("stdin was piped");
        let server = TestServer {
            base: format!("postgres://conclave@127.0.0.1:{port}"),
            admin_db: "postgres".to_string(),
            watchdog: Some(Mutex::new((child, stdin))),
            dir: Some(dir.clone()),
        };
        server.wait_until_ready(&dir);
        server
    }

    /// Crashes the server (immediate shutdown, as after a crash: no checkpoint, clients
    /// cut off) and starts it again on the same port and data; returns once it accepts
    /// connections again (after crash recovery).
    ///
    /// # Panics
    /// For a server this process did not start, or if it does not come back.
    pub fn restart(&self) {
        let (Some(watchdog), Some(dir)) = (&self.watchdog, &self.dir) else {
            panic!("only a throwaway server can be restarted (see dedicated_server)");
        };
        let before = self.start_time();
        {
            use std::io::Write as _;
            let mut guard = watchdog
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard
                .1
                .write_all(b"restart\n")
                .and_then(|()| guard.1.flush())
                .expect("the watchdog takes the restart");
        }
        let deadline = Instant::now() + START_TIMEOUT;
        // Until the old server stops answering (or a new one, started later, answers).
        while before.is_some() && self.start_time() == before {
            assert!(Instant::now() < deadline, "PostgreSQL did not go down");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_until_ready(dir);
    }

    /// A new empty database on this server; returns its URL.
    ///
    /// # Panics
    /// If the server refuses to create it.
    #[must_use]
    pub fn fresh_database(&self) -> String {
        self.create_database()
    }

    /// When the running server started, if it answers.
    fn start_time(&self) -> Option<String> {
        let url = format!("{}/{}", self.base, self.admin_db);
        query_text(&url, "SELECT pg_postmaster_start_time()::text").ok()
    }

    fn wait_until_ready(&self, dir: &Path) {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/{}", self.base, self.admin_db);
        loop {
            match admin(&url, "SELECT 1".to_string()) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    let log = std::fs::File::open(dir.join("postgres.log"))
                        .map(|f| {
                            BufReader::new(f)
                                .lines()
                                .map_while(Result::ok)
                                .collect::<Vec<_>>()
                                .join("\n")
                        })
                        .unwrap_or_default();
                    panic!("the throwaway PostgreSQL did not start: {e}\n{log}");
                }
            }
        }
    }

    /// The URL of `database` on this server.
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    fn create_database(&self) -> String {
        let name = format!(
            "conclave_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let admin_url = self.url(&self.admin_db);
        admin(&admin_url, format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        self.url(&name)
    }
}

/// Runs one statement on its own thread and runtime (callers may be inside an async
/// test, where blocking on another runtime is not allowed).
fn admin(url: &str, sql: String) -> Result<(), tokio_postgres::Error> {
    on_own_thread(url, sql, false).map(drop)
}

/// The first column of the first row of `sql`, as text.
fn query_text(url: &str, sql: &'static str) -> Result<String, tokio_postgres::Error> {
    on_own_thread(url, sql.to_string(), true).map(Option::unwrap_or_default)
}

/// Runs `sql` on a connection of its own, on a thread and runtime of its own;
/// `want_text`: returns the first column of the first row.
fn on_own_thread(
    url: &str,
    sql: String,
    want_text: bool,
) -> Result<Option<String>, tokio_postgres::Error> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            let task = tokio::spawn(connection);
            let result = if want_text {
                client
                    .query_one(sql.as_str(), &[])
                    .await
                    .map(|row| Some(row.get::<_, String>(0)))
            } else {
                client.batch_execute(&sql).await.map(|()| None)
            };
            drop(client);
            let _ = task.await;
            result
        })
    })
    .join()
    .expect("the admin thread does not panic")
}

fn as_user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The directory holding `initdb` and `postgres`: on PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps them off PATH).
fn find_bindir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a loopback port is free")
}
