//! A typo in the config file stops the server at startup, naming the key.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::Command;

fn run_with_config(contents: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conclave.toml");
    std::fs::write(&path, contents).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_conclave-sfu"))
        .arg("--config")
        .arg(&path)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        output.stdout.is_empty(),
        "nothing is printed to stdout on failure"
    );
    (
        output.status.success(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn unknown_nested_key_is_named() {
    let (ok, stderr) = run_with_config("[limits]\nmax_conections = 5\n");
    assert!(!ok);
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert!(stderr.contains("conclave.toml"), "{stderr}");
}

#[test]
fn unknown_top_level_key_is_named() {
    let (ok, stderr) = run_with_config("listen_address = \"127.0.0.1:1\"\n");
    assert!(!ok);
    assert!(stderr.contains("listen_address"), "{stderr}");
}

#[test]
fn invalid_value_is_named() {
    let (ok, stderr) = run_with_config("[limits]\nmax_datagram_bytes = 9000\n");
    assert!(!ok);
    assert!(stderr.contains("max_datagram_bytes"), "{stderr}");
}

#[test]
fn cert_without_key_is_rejected() {
    let (ok, stderr) = run_with_config("cert = \"server.pem\"\n");
    assert!(!ok);
    assert!(stderr.contains("key"), "{stderr}");
}

#[test]
fn missing_config_file_is_reported() {
    let output = Command::new(env!("CARGO_BIN_EXE_conclave-sfu"))
        .args([
            "--config",
            "/nonexistent/conclave.toml",
            "--metrics-listen",
            "off",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/conclave.toml"), "{stderr}");
}
