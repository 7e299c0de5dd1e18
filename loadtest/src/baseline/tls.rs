//! The relay's QUIC configuration: a fresh self-signed certificate that the bare
//! clients trust, and nothing else, plus the datagram-relevant transport settings of
//! the real server (`conclave_sfu::tls::server_config`) and client
//! (`conclave_sdk::transport::client_config`), so both runs pay the same transport.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::LoadError;

/// ALPN of the bare relay (deliberately not the SFU's: nothing else should talk to it).
const ALPN: &[u8] = b"conclave-baseline/1";

/// The name the certificate is issued for and the clients ask for.
pub(crate) const SERVER_NAME: &str = "localhost";

/// Client keep-alive, as the SDK sets it.
const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Client datagram buffers each way, as the SDK sets them.
const CLIENT_DATAGRAM_BUFFER_BYTES: usize = 1024 * 1024;

/// The server and client configurations of one baseline run.
pub(crate) fn configs() -> Result<(quinn::ServerConfig, quinn::ClientConfig), LoadError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| LoadError::Setup(format!("{what}: {e}"));
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .map_err(|e| setup("baseline relay certificate", &e))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));

    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup("baseline relay TLS", &e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .map_err(|e| setup("baseline relay TLS", &e))?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    server_tls.max_early_data_size = 0;
    let server_quic =
        QuicServerConfig::try_from(server_tls).map_err(|e| setup("baseline relay QUIC", &e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_quic));
    server.transport_config(Arc::new(server_transport()?));

    // Trust exactly the certificate generated above: a root store holding only it.
    let mut roots = RootCertStore::empty();
    roots
        .add(cert)
        .map_err(|e| setup("baseline client trust", &e))?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup("baseline client TLS", &e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let client_quic =
        QuicClientConfig::try_from(client_tls).map_err(|e| setup("baseline client QUIC", &e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(CLIENT_KEEP_ALIVE))
        .datagram_receive_buffer_size(Some(CLIENT_DATAGRAM_BUFFER_BYTES))
        .datagram_send_buffer_size(CLIENT_DATAGRAM_BUFFER_BYTES);
    client.transport_config(Arc::new(transport));
    Ok((server, client))
}

/// The SFU's transport parameters that matter to datagrams: its default idle timeout,
/// its datagram buffers each way, one bidirectional stream (here the join), none
/// unidirectional.
fn server_transport() -> Result<quinn::TransportConfig, LoadError> {
    let idle_secs = conclave_sfu::config::Timing::default().idle_timeout_secs;
    let idle = quinn::IdleTimeout::try_from(Duration::from_secs(idle_secs))
        .map_err(|e| LoadError::Setup(format!("baseline relay idle timeout: {e}")))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(conclave_sfu::DATAGRAM_SEND_BUFFER))
        .datagram_send_buffer_size(conclave_sfu::DATAGRAM_SEND_BUFFER);
    Ok(transport)
}

/// aws-lc-rs, as everywhere in Conclave (post-quantum hybrid key exchange preferred).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
