//! What an operator sees when a node cannot start: a specific reason on stderr, a
//! non-zero exit, and no "listening" banner (so nothing, and no health check, claims
//! the node is up). And `--log-format json` logs one JSON object per line.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::UdpSocket;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const SFU: &str = env!("CARGO_BIN_EXE_conclave-sfu");
/// How long a run that must fail may take.
const BOUND: Duration = Duration::from_secs(30);

/// Runs the server with `args` and `env` until it exits (bounded); its status, stdout
/// and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut child = Command::new(SFU)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CONCLAVE_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not exit within {BOUND:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stdout, stderr)
}

/// The run failed with `expected` in its message and printed no banner.
fn refused(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let (status, stdout, stderr) = run(args, env);
    assert!(!status.success(), "{args:?} started; stderr:\n{stderr}");
    assert!(!stdout.contains("listening"), "{args:?} printed {stdout:?}");
    for text in expected {
        assert!(stderr.contains(text), "{args:?}: no {text:?} in:\n{stderr}");
    }
}

#[test]
fn startup_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let base = ["--metrics-listen", "off", "--data-dir", data];

    // A port another process holds.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut args = base.to_vec();
    args.extend(["--listen", addr.as_str()]);
    refused(
        &args,
        &[],
        &[
            "cannot bind the QUIC endpoint",
            "another process uses this port",
        ],
    );

    // A data directory that is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let file = file.to_str().unwrap();
    refused(
        &["--metrics-listen", "off", "--data-dir", file],
        &[],
        &["is a file, not a directory"],
    );

    // A certificate that is not there.
    let mut args = base.to_vec();
    args.extend([
        "--listen",
        "127.0.0.1:0",
        "--cert",
        "/nonexistent/chain.pem",
    ]);
    args.extend(["--key", "/nonexistent/key.pem"]);
    refused(&args, &[], &["/nonexistent/chain.pem"]);

    // A bad value from the environment names its variable.
    let mut args = base.to_vec();
    args.extend(["--listen", "127.0.0.1:0"]);
    refused(
        &args,
        &[("CONCLAVE_LIMITS__MAX_CONNECTIONS", "many")],
        &["CONCLAVE_LIMITS__MAX_CONNECTIONS", "a whole number"],
    );
    // One that reads but is out of range too.
    refused(
        &args,
        &[("CONCLAVE_TIMING__DRAIN_GRACE_SECS", "0")],
        &["drain_grace_secs", "CONCLAVE_TIMING__DRAIN_GRACE_SECS"],
    );

    // With JSON logs, the fatal error is a JSON object too.
    let mut args = base.to_vec();
    args.extend(["--listen", addr.as_str(), "--log-format", "json"]);
    let (status, _, stderr) = run(&args, &[]);
    assert!(!status.success());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("{\"") && last.ends_with('}') && last.contains("\"level\":\"ERROR\""),
        "{stderr}"
    );
    assert!(last.contains("another process uses this port"), "{last}");
}

/// Starts the server on `data` with `extra` flags and waits (bounded) for its banner;
/// its stderr is piped when `stderr` is set.
fn start(data: &str, extra: &[&str], stderr: bool) -> std::process::Child {
    let mut child = Command::new(SFU)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
            data,
        ])
        .args(extra)
        .env_remove("CONCLAVE_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let banner = lines.recv_timeout(BOUND).unwrap();
    assert!(banner.starts_with("conclave-sfu listening on "), "{banner}");
    child
}

#[test]
fn a_database_another_server_holds_stops_the_second_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let mut first = start(&data, &[], false);
    refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
            &data,
        ],
        &[],
        &["cannot open the database"],
    );
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let mut child = start(&data, &["--log-format", "json", "--log", "info"], true);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in lines {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not a JSON object: {line}"
        );
        assert!(
            line.contains("\"level\":\"") && line.contains("\"timestamp\":\""),
            "{line}"
        );
    }
    assert!(stderr.contains("\"message\":\"stopped\""), "{stderr}");
}
