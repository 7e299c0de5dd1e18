//! How a client decides to trust the SFU's certificate.
//!
//! * [`ServerTrust::SystemRoots`]: the operating system's trust store (WebPKI rules).
//! * [`ServerTrust::CaPem`]: only certificates issued by the given CA(s).
//! * [`ServerTrust::PinnedSha256`]: exactly the leaf certificate with this SHA-256
//!   fingerprint (what `conclave-sfu` prints at start). The handshake signature is
//!   still verified, so the server must hold that certificate's private key.
//!
//! Every mode speaks TLS 1.3 only with ALPN `conclave/1`.

use std::sync::Arc;

use conclave_proto::frame::ALPN;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::TransportError;

/// Which server certificates to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerTrust {
    /// The operating system's root certificates.
    SystemRoots,
    /// CA certificates in PEM (the contents of a CA file).
    CaPem(Vec<u8>),
    /// The SHA-256 fingerprint of the server's leaf certificate (DER).
    PinnedSha256([u8; 32]),
}

impl ServerTrust {
    /// Parses a fingerprint written as 64 hex digits (colons and spaces allowed).
    pub fn pinned_hex(hex_fingerprint: &str) -> Result<Self, TransportError> {
        let digits: String = hex_fingerprint
            .chars()
            .filter(|c| !matches!(c, ':' | ' '))
            .collect();
        let mut pin = [0u8; 32];
        hex::decode_to_slice(&digits, &mut pin).map_err(|_| {
            TransportError::Connect(
                "a certificate pin must be 64 hex digits (the SHA-256 the server prints)".into(),
            )
        })?;
        Ok(ServerTrust::PinnedSha256(pin))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a quinn client configuration for `trust`: TLS 1.3, ALPN `conclave/1`,
/// 5 s keep-alive and 1 MiB datagram buffers.
pub fn client_config(trust: &ServerTrust) -> Result<quinn::ClientConfig, TransportError> {
    let tls = rustls_client_config(trust)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Connect(format!("TLS configuration for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    transport.datagram_receive_buffer_size(Some(1024 * 1024));
    transport.datagram_send_buffer_size(1024 * 1024);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The rustls part of [`client_config`] (TLS 1.3 only, ALPN `conclave/1`).
pub fn rustls_client_config(trust: &ServerTrust) -> Result<rustls::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Connect(format!("TLS configuration: {e}")))?;
    let mut tls = match trust {
        ServerTrust::SystemRoots => {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TransportError::Connect(
                    "no usable root certificates found in the system trust store; \
                     install ca-certificates or use a CA file or a pinned fingerprint"
                        .into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ServerTrust::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    TransportError::Connect(format!("CA file is not valid PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    TransportError::Connect(format!("CA certificate is not usable: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(TransportError::Connect(
                    "CA file holds no certificate (expected PEM CERTIFICATE blocks)".into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ServerTrust::PinnedSha256(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

/// Accepts exactly the leaf certificate whose SHA-256 equals the pin.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(got.ct_eq(&self.pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {} does not match the pinned {}",
                hex::encode(got),
                hex::encode(self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
