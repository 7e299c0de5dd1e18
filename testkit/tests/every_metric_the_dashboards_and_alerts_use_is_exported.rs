//! The operator's artefacts and the server agree: two cluster nodes on a real
//! PostgreSQL serve a meeting, `/metrics` is scraped over HTTP, and every metric name
//! that the Grafana dashboard or a Prometheus alert rule uses
//! (`deploy/monitoring/…`) is in the scrape. A panel or an alert on a name the server
//! does not export would show "no data" or never fire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use conclave_sdk::client::MediaKind;
use conclave_sfu::config::PushConfig;
use conclave_sfu::health::Health;
use conclave_sfu::metrics_http;
use conclave_sfu::push::VapidKey;
use conclave_testkit::TestSfu;
use conclave_testkit::User;
use conclave_testkit::clients::deliver;
use conclave_testkit::cluster::TestCluster;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The metric names in `text`: tokens of PromQL identifier characters that start with
/// `conclave_` or `process_` (recording rules, `a:b:c`, start otherwise).
fn names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("conclave_") || t.starts_with("process_"))
        .filter(|t| !t.contains(':') && !t.ends_with('_'))
        .map(str::to_owned)
        .collect()
}

fn artefact(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../");
    std::fs::read_to_string(format!("{root}{path}"))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_alerts_use_is_exported() {
    let handle = metrics_http::install_recorder().unwrap();
    let cluster = TestCluster::start(2).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = std::sync::Arc::new(Health::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(metrics_http::serve(listener, handle, health, async {
        let _ = stopped.await;
    }));

    // Some traffic: a meeting across the two nodes, media both ways.
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.connect(&cluster.nodes[0]).await;
    let mut b = bob.connect(&cluster.nodes[1]).await;
    let (mut meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"to bob", &mut meeting_b).await;
    deliver(&meeting_b, MediaKind::Audio, b"to alice", &mut meeting_a).await;
    // A node with push wake-ups configured exports their series too (the dashboard's
    // push panels); it needs no push service to register them.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("vapid.pem");
    std::fs::write(&key_file, VapidKey::generate_pem().unwrap().as_bytes()).unwrap();
    let mut push = PushConfig::default();
    push.vapid_key_file = key_file;
    push.contact = "mailto:ops@conclave.test".into();
    push.allowed_hosts = vec!["push.example.net".into()];
    let push_node = TestSfu::start_edited(|config| config.push = Some(push)).await;

    let exported = names_in(
        &scrape(addr)
            .await
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut used = names_in(&artefact("deploy/monitoring/alerts.yml"));
    used.extend(names_in(&artefact(
        "deploy/monitoring/grafana/dashboards/conclave.json",
    )));
    assert!(used.len() > 20, "too few names found: {used:?}");
    // A histogram is exported as its `_bucket`, `_sum` and `_count` series.
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !exported.contains(*name) && !exported.contains(&format!("{name}_bucket")))
        .collect();
    assert!(
        missing.is_empty(),
        "used by a dashboard or an alert but not exported: {missing:?}"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    push_node.stop().await.unwrap();
}
