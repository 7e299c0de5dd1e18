//! The metrics endpoint with the process-wide recorder (one per test process).

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use conclave_sfu::metrics_http;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn global_recorder_is_served() {
    let handle = metrics_http::install_recorder().unwrap();
    assert!(
        metrics_http::install_recorder().is_err(),
        "a second install fails instead of replacing the recorder"
    );
    metrics::counter!("conclave_cli_test_total").increment(2);
    metrics::histogram!(metrics_http::CONTROL_REQUEST_SECONDS).record(0.02);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let health = std::sync::Arc::new(conclave_sfu::health::Health::new());
    let server = tokio::spawn(metrics_http::serve(listener, handle, health, async {
        let _ = stopped.await;
    }));

    let health = get(addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    let scrape = get(addr, "/metrics").await;
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert!(
        scrape.contains("content-type: text/plain; version=0.0.4"),
        "{scrape}"
    );
    assert!(scrape.contains("conclave_cli_test_total 2"), "{scrape}");
    // The process's own metrics come with every scrape.
    assert!(scrape.contains("process_cpu_seconds_total"), "{scrape}");
    assert!(scrape.contains("process_resident_memory_bytes"), "{scrape}");
    // Buckets, not a summary, for the control request histogram.
    assert!(
        scrape.contains("conclave_control_request_seconds_bucket{le=\"0.025\"} 1"),
        "{scrape}"
    );
    let missing = get(addr, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
