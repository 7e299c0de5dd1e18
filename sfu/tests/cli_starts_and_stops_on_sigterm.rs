//! The binary starts, prints its banner, serves `/healthz`, `/livez`, `/readyz` and its
//! metrics (present at zero from start), and exits 0 on SIGTERM;
//! its development certificate survives a restart.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A running `conclave-sfu` whose stdout lines arrive on a channel.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: thread::JoinHandle<String>,
}

impl Server {
    fn start(data_dir: &Path, metrics: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_conclave-sfu"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                metrics,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(["--log", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Server {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, which must start with `prefix`; returns the rest.
    fn expect_line(&mut self, prefix: &str) -> String {
        let line = match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("no line {prefix:?} ({e}); stderr:\n{}", self.take_stderr());
            }
        };
        match line.strip_prefix(prefix) {
            Some(rest) => rest.to_owned(),
            None => panic!("expected {prefix:?}, got {line:?}"),
        }
    }

    fn take_stderr(&mut self) -> String {
        let handle = std::mem::replace(&mut self.stderr, thread::spawn(String::new));
        handle.join().unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for a successful exit; returns the rest of
    /// stdout.
    fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("did not exit within 20 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(50));
        };
        let stderr = self.take_stderr();
        assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
        assert!(stderr.contains("SIGTERM"), "{stderr}");
        self.lines.iter().collect()
    }
}

impl Drop for Server {
    /// A failed test must not leave the server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn starts_serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let mut server = Server::start(&data_dir, "127.0.0.1:0");
    let quic: SocketAddr = server
        .expect_line("conclave-sfu listening on ")
        .strip_suffix(" (udp)")
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(quic.port(), 0);
    let fingerprint = server.expect_line("certificate sha-256 fingerprint: ");
    assert_eq!(fingerprint.len(), 64);
    assert!(
        fingerprint
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let metrics: SocketAddr = server
        .expect_line("metrics on http://")
        .strip_suffix("/metrics")
        .unwrap()
        .parse()
        .unwrap();

    let health = http_get(metrics, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let live = http_get(metrics, "/livez");
    assert!(live.ends_with("ok\n"), "{live}");
    // Ready once the server loop runs (it may still say `starting` right after the
    // banner).
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = http_get(metrics, "/readyz");
        if ready.starts_with("HTTP/1.1 200 OK\r\n") || Instant::now() > deadline {
            break ready;
        }
        assert!(ready.ends_with("starting\n"), "{ready}");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(ready.ends_with("ready\n"), "{ready}");
    let scrape = http_get(metrics, "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert!(scrape.contains("conclave_build_info"), "{scrape}");
    // Present at zero before anything happened: flat lines, not "no data".
    for idle in [
        "conclave_draining 0",
        "conclave_store_up 1",
        "conclave_datagrams_dropped_total{reason=\"congestion_audio\"} 0",
        "conclave_containers_stored_total 0",
    ] {
        assert!(scrape.contains(idle), "no {idle:?} in:\n{scrape}");
    }

    assert!(
        server.terminate().is_empty(),
        "no more stdout after the banner"
    );
    assert!(data_dir.join("dev-cert.pem").is_file());
    assert!(data_dir.join("dev-key.pem").is_file());

    // A second start reuses the certificate; without metrics there is no third line.
    let mut server = Server::start(&data_dir, "off");
    server.expect_line("conclave-sfu listening on ");
    assert_eq!(
        server.expect_line("certificate sha-256 fingerprint: "),
        fingerprint
    );
    let rest = server.terminate();
    assert!(rest.is_empty(), "unexpected stdout: {rest:?}");
}
