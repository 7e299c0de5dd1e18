//! A local Web Push service for tests: HTTPS on 127.0.0.1 (`localhost`) with a
//! certificate from a throwaway CA (whose PEM file the SFU is told to trust), recording
//! every request and answering with the statuses a test scripts (201 by default).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use crate::clock::WAIT;

/// The largest request body the service reads (push services take at least 4,096).
const MAX_BODY: usize = 8 * 1024;

/// One request the push service received.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// `POST`, normally.
    pub method: String,
    /// The path (`/push/<name>`).
    pub path: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The (encrypted) body.
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl PushRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<PushRequest>,
    /// Statuses for the next requests, in order; then 201.
    script: VecDeque<(u16, Option<u64>)>,
    /// A `Location` for the next response (a redirect).
    location: Option<String>,
}

/// The running service (stopped on drop).
pub struct LocalPushService {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA certificate (PEM) its certificate chains to: the SFU's `push.ca_file`.
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for LocalPushService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalPushService {
    /// Starts the service on a free port of 127.0.0.1.
    pub async fn start() -> LocalPushService {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");
        let leaf_key = KeyPair::generate().expect("a leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("a leaf certificate");
        let ca_file = dir.path().join("push-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA file");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("the server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("bound address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let arrived = Arc::new(Notify::new());
        let task = tokio::spawn(serve(
            listener,
            acceptor,
            Arc::clone(&state),
            Arc::clone(&arrived),
        ));
        LocalPushService {
            port,
            ca_file,
            state,
            arrived,
            task,
            _dir: dir,
        }
    }

    /// The subscription endpoint named `name`.
    pub fn endpoint(&self, name: &str) -> String {
        format!("https://localhost:{}/push/{name}", self.port)
    }

    /// The allow-list entry for this service.
    pub fn allowed_host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Answers the next requests with `statuses` (each with an optional `Retry-After`
    /// in seconds), then 201 again.
    pub fn script(&self, statuses: &[(u16, Option<u64>)]) {
        self.lock().script.extend(statuses.iter().copied());
    }

    /// Answers the next request with `307 Temporary Redirect` to `location`.
    pub fn redirect_next(&self, location: &str) {
        let mut state = self.lock();
        state.script.push_front((307, None));
        state.location = Some(location.to_string());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<PushRequest> {
        self.lock().requests.clone()
    }

    /// Waits until at least `n` requests have arrived (panics after [`WAIT`]).
    pub async fn wait_for(&self, n: usize) -> Vec<PushRequest> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.arrived.notified();
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{} push requests arrived; expected {n}", got.len());
            }
        }
    }

    /// Waits `quiet` and returns the requests then (for "nothing more arrives").
    pub async fn settle(&self, quiet: Duration) -> Vec<PushRequest> {
        tokio::time::sleep(quiet).await;
        self.requests()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let arrived = Arc::clone(&arrived);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let state = Arc::clone(&state);
                let arrived = Arc::clone(&arrived);
                async move { Ok::<_, hyper::Error>(answer(req, &state, &arrived).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    state: &Mutex<State>,
    arrived: &Notify,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let (status, retry_after, location) = {
        let mut s = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (status, retry_after) = s.script.pop_front().unwrap_or((201, None));
        let location = if status / 100 == 3 {
            s.location.take()
        } else {
            None
        };
        s.requests.push(PushRequest {
            method,
            path,
            headers,
            body,
            status,
        });
        (status, retry_after, location)
    };
    arrived.notify_waiters();
    let mut response = Response::builder().status(status);
    if let Some(secs) = retry_after {
        response = response.header("retry-after", secs.to_string());
    }
    if let Some(location) = location {
        response = response.header("location", location);
    }
    response
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}
