//! `--store` / `CONCLAVE_STORE` select PostgreSQL: the binary migrates a fresh
//! database before it prints that it listens, and a PostgreSQL it cannot reach stops
//! it before it listens, with the reason and without the password.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conclave_sfu::store::postgres::{SCHEMA_VERSION, testing};
use conclave_sfu::store::{PgOptions, PgStore};

fn sfu(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conclave-sfu"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn conclave_store_selects_postgres_and_the_schema_exists_before_the_banner() {
    let url = testing::fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let mut child = sfu(dir.path()).env("CONCLAVE_STORE", &url).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = BufReader::new(stdout).lines().next();
    let Some(Ok(line)) = first else {
        let _ = child.kill();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        panic!("no banner; stderr:\n{stderr}");
    };
    assert!(line.starts_with("conclave-sfu listening on "), "{line}");
    // The banner comes after the migration: the schema is there now.
    let store = PgStore::connect(&PgOptions::new(url)).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    // No redb file: the state lives in PostgreSQL.
    assert!(!dir.path().join("conclave.redb").exists());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unreachable_postgres_stops_the_server_before_it_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let output = sfu(dir.path())
        .arg("--store")
        .arg(format!(
            "postgres://conclave:s3cret@127.0.0.1:{port}/conclave"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("cannot open the PostgreSQL store postgres://conclave:***@127.0.0.1"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn a_store_that_is_neither_redb_nor_postgres_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = sfu(dir.path())
        .env("CONCLAVE_STORE", "mysql://root:hunter2@db/conclave")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("store must be `redb` or a postgres://"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
