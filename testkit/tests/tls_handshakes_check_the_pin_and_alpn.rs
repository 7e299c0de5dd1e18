//! The server's TLS: a client pinning the certificate's fingerprint completes the QUIC
//! handshake with the Conclave ALPN and datagrams enabled; a wrong pin or another ALPN
//! fails the handshake with a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conclave_sdk::transport::{ServerTrust, client_config, rustls_client_config};
use conclave_sfu::config::{Limits, Timing};
use conclave_sfu::tls::{ALPN, ServerIdentity, load_or_generate_dev, server_config};

fn dev_identity() -> (tempfile::TempDir, ServerIdentity) {
    let dir = tempfile::tempdir().unwrap();
    let (identity, generated) = load_or_generate_dev(dir.path()).unwrap();
    assert!(generated);
    (dir, identity)
}

fn pinned_client_config(fingerprint: [u8; 32]) -> quinn::ClientConfig {
    client_config(&ServerTrust::PinnedSha256(fingerprint)).unwrap()
}

fn pinned_client_config_with_alpn(fingerprint: [u8; 32], alpn: &[u8]) -> quinn::ClientConfig {
    let mut tls = rustls_client_config(&ServerTrust::PinnedSha256(fingerprint)).unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(quic))
}

/// A server endpoint on 127.0.0.1 that completes handshakes in the background.
fn server(identity: &ServerIdentity) -> (quinn::Endpoint, SocketAddr) {
    let config = server_config(identity, &Timing::default(), &Limits::default()).unwrap();
    let endpoint = quinn::Endpoint::server(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                if let Ok(connection) = incoming.await {
                    connection.closed().await;
                }
            });
        }
    });
    (endpoint, addr)
}

async fn connect(
    config: quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    client.set_default_client_config(config);
    let connecting = client.connect(addr, "localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("handshake finished in time")
}

#[tokio::test]
async fn pinned_client_completes_handshake() {
    let (_dir, identity) = dev_identity();
    let (_server, addr) = server(&identity);
    let connection = connect(pinned_client_config(identity.fingerprint_sha256), addr)
        .await
        .unwrap();
    let data = connection
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(data.protocol.as_deref(), Some(ALPN));
    // Datagrams are enabled on the server side.
    assert!(connection.max_datagram_size().is_some());
    connection.close(0u32.into(), b"done");
}

#[tokio::test]
async fn wrong_pin_fails_handshake() {
    let (_dir, identity) = dev_identity();
    let (_server, addr) = server(&identity);
    let mut pin = identity.fingerprint_sha256;
    pin[31] ^= 1;
    let err = connect(pinned_client_config(pin), addr).await.unwrap_err();
    assert!(
        matches!(err, quinn::ConnectionError::TransportError(_)),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
}

#[tokio::test]
async fn alpn_mismatch_fails_handshake() {
    let (_dir, identity) = dev_identity();
    let (_server, addr) = server(&identity);
    let config = pinned_client_config_with_alpn(identity.fingerprint_sha256, b"conclave/0");
    let err = connect(config, addr).await.unwrap_err();
    assert!(
        matches!(err, quinn::ConnectionError::ConnectionClosed(_)),
        "{err}"
    );
    // TLS alert 120: no_application_protocol.
    assert!(err.to_string().contains("error 120"), "{err}");
}
