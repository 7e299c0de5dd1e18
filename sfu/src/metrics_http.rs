//! The operator's HTTP endpoint: Prometheus metrics and the health probes.
//!
//! * `GET /metrics`: the Prometheus text exposition of every metric recorded through
//!   the [`metrics`] macros, and the process's own (`process_cpu_seconds_total`,
//!   `process_resident_memory_bytes`, `process_open_fds`, ...).
//! * `GET /livez` (and its older name `/healthz`): `200 ok` as long as the process
//!   serves requests. A liveness probe: failing it means restart the process.
//! * `GET /readyz`: `200 ready` while the node takes new work; `503` with the reason
//!   (`starting`, `draining`, `store unreachable`) otherwise
//!   ([`Health`]). A readiness probe: failing it means send
//!   new clients elsewhere, not restart.
//!
//! Everything else is `404` (or `405` for another method on a known path). The
//! endpoint is plain HTTP/1.1; bind it to a loopback or otherwise private address.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::health::Health;

/// Name of the control request latency histogram, in seconds.
pub const CONTROL_REQUEST_SECONDS: &str = "conclave_control_request_seconds";

/// Histogram buckets of [`CONTROL_REQUEST_SECONDS`], from 0.5 ms to 5 s.
pub const CONTROL_REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Content type of the Prometheus text format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long open connections get to finish after shutdown before they are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The recorder without installing it (for tests that use a local recorder).
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Full(CONTROL_REQUEST_SECONDS.to_owned()),
        CONTROL_REQUEST_BUCKETS,
    )
}

/// Installs the Prometheus recorder as the process-wide [`metrics`] recorder.
///
/// Can succeed once per process. The handle's upkeep must run periodically, which
/// [`serve`] does; without an endpoint, do not install the recorder (the [`metrics`]
/// macros are then no-ops).
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    builder()?.install_recorder()
}

/// What the endpoint serves from: the recorder, the node's health and the process
/// metrics collector.
#[derive(Clone)]
struct Sources {
    handle: PrometheusHandle,
    health: Arc<Health>,
    process: Arc<metrics_process::Collector>,
}

/// Serves `/metrics`, `/livez`, `/healthz` and `/readyz` on `listener` until
/// `shutdown` resolves, then lets open connections finish (for up to five seconds).
/// Keep it running while the node drains: `/readyz` says so.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let process = Arc::new(metrics_process::Collector::default());
    process.describe();
    process.collect();
    let sources = Sources {
        handle: handle.clone(),
        health,
        process,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let stop = stop_rx.clone();
                    connections.spawn(serve_connection(stream, sources.clone(), stop));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Receivers may all be gone already; that is fine.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    Ok(())
}

/// Serves one HTTP/1.1 connection, shutting it down gracefully when `stop` flips.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    sources: Sources,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request| {
        let response = respond(&request, &sources);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async { let _ = stop.wait_for(|stopped| *stopped).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
    }
}

/// Routes one request.
fn respond(request: &Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/livez" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n", "text/plain");
    }
    if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n", "text/plain");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match path {
        "/metrics" => {
            sources.process.collect();
            text(
                StatusCode::OK,
                sources.handle.render(),
                PROMETHEUS_CONTENT_TYPE,
            )
        }
        "/readyz" => match sources.health.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n", "text/plain"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", why.reason()),
                "text/plain",
            ),
        },
        _ => text(StatusCode::OK, "ok\n", "text/plain"),
    }
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn routes_and_stops() {
        // A local recorder: the global one belongs to the integration tests.
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("conclave_test_total").increment(3);
            metrics::histogram!(CONTROL_REQUEST_SECONDS).record(0.002);
        });

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let health = Arc::new(Health::new());
        let server = tokio::spawn(serve(listener, handle, Arc::clone(&health), async {
            let _ = stopped.await;
        }));

        let metrics = get(addr, "GET", "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(metrics.contains("conclave_test_total 3"), "{metrics}");
        assert!(
            metrics.contains("conclave_control_request_seconds_bucket{le=\"0.0025\"} 1"),
            "{metrics}"
        );

        for path in ["/healthz", "/livez"] {
            let live = get(addr, "GET", path).await;
            assert!(live.starts_with("HTTP/1.1 200 OK\r\n"), "{live}");
            assert!(live.ends_with("\r\n\r\nok\n"), "{live}");
        }
        let starting = get(addr, "GET", "/readyz").await;
        assert!(starting.starts_with("HTTP/1.1 503 "), "{starting}");
        assert!(starting.ends_with("\r\n\r\nstarting\n"), "{starting}");
        health.set_serving(true);
        let ready = get(addr, "GET", "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200 OK\r\n"), "{ready}");
        health.start_draining();
        let draining = get(addr, "GET", "/readyz").await;
        assert!(draining.ends_with("\r\n\r\ndraining\n"), "{draining}");
        let live = get(addr, "GET", "/livez").await;
        assert!(live.starts_with("HTTP/1.1 200 OK\r\n"), "{live}");

        let missing = get(addr, "GET", "/").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = get(addr, "POST", "/metrics").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");

        // An idle keep-alive connection must not hold up shutdown.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
