//! The settings the deploy files give a node (`deploy/kubernetes/base/conclave.toml` with
//! the StatefulSet's environment, compose's environment, the systemd environment
//! example) name only variables the server reads, and load and validate as the server
//! would load them: a renamed key or variable fails here, not at a pod's start.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use conclave_sfu::config::{Config, StoreSetting, is_known_variable};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `CONCLAVE_…` name in `text`.
fn variables(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("CONCLAVE_") && t.len() > "CONCLAVE_".len())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Loads and validates like the binary: file, environment (the store comes through
/// its flag's variable), validation.
fn node(file: Option<PathBuf>, vars: &[(&str, &str)]) -> Config {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut config = Config::load_layered(file.as_deref(), vars.clone()).unwrap();
    if let Some((_, store)) = vars.iter().find(|(k, _)| k == "CONCLAVE_STORE") {
        config.store = StoreSetting::parse(store).unwrap();
    }
    config.validate().unwrap();
    config
}

#[test]
fn every_variable_in_the_deploy_files_is_one_the_server_reads() {
    for path in [
        "kubernetes/base/statefulset.yaml",
        "compose.yaml",
        "systemd/conclave-sfu.env.example",
        "Dockerfile",
    ] {
        for var in variables(&read(path)) {
            // The StatefulSet's comment names the service-link variables it prevents.
            if var.starts_with("CONCLAVE_SFU_") {
                continue;
            }
            assert!(
                is_known_variable(&var),
                "{path}: {var} is not read by the server"
            );
        }
    }
}

#[test]
fn the_kubernetes_pod_settings_make_a_valid_cluster_node() {
    let config = node(
        Some(deploy("kubernetes/base/conclave.toml")),
        &[
            ("CONCLAVE_LISTEN", "0.0.0.0:4433"),
            ("CONCLAVE_METRICS_LISTEN", "0.0.0.0:9464"),
            ("CONCLAVE_DATA_DIR", "/var/lib/conclave"),
            (
                "CONCLAVE_STORE",
                "postgres://conclave:secret@db:5432/conclave",
            ),
            ("CONCLAVE_CERT", "/etc/conclave/tls/tls.crt"),
            ("CONCLAVE_KEY", "/etc/conclave/tls/tls.key"),
            ("CONCLAVE_CLUSTER__NODE_ID", "conclave-sfu-0"),
            (
                "CONCLAVE_CLUSTER__ADVERTISE",
                "conclave-sfu-0.sfu.example.com:4433",
            ),
        ],
    );
    let cluster = config.cluster.expect("a cluster node");
    assert_eq!(cluster.node_id, "conclave-sfu-0");
    assert_eq!(config.timing.drain_grace_secs, 25);
}

#[test]
fn the_compose_node_settings_make_a_valid_cluster_node() {
    let compose = read("compose.yaml");
    assert!(compose.contains("CONCLAVE_CLUSTER__ADVERTISE: 127.0.0.1:4431"));
    node(
        None,
        &[
            (
                "CONCLAVE_STORE",
                "postgres://conclave:conclave@postgres:5432/conclave?sslmode=disable",
            ),
            ("CONCLAVE_CERT", "/etc/conclave/tls/dev-cert.pem"),
            ("CONCLAVE_KEY", "/etc/conclave/tls/dev-key.pem"),
            ("CONCLAVE_METRICS_LISTEN", "0.0.0.0:9464"),
            ("CONCLAVE_CLUSTER__SERVER_NAME", "localhost"),
            ("CONCLAVE_TIMING__DRAIN_GRACE_SECS", "25"),
            ("CONCLAVE_LISTEN", "0.0.0.0:4431"),
            ("CONCLAVE_CLUSTER__NODE_ID", "sfu-1"),
            ("CONCLAVE_CLUSTER__ADVERTISE", "127.0.0.1:4431"),
        ],
    );
}

#[test]
fn the_systemd_environment_example_makes_a_valid_node() {
    let example = read("systemd/conclave-sfu.env.example");
    let vars: Vec<(&str, &str)> = example
        .lines()
        .filter(|l| l.starts_with("CONCLAVE_"))
        .filter_map(|l| l.split_once('='))
        .collect();
    assert!(vars.len() >= 3, "{vars:?}");
    node(None, &vars);
}
