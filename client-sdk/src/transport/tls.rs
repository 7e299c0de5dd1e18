//! How a client decides to trust the SFU's certificate.
//!
//! * [`ServerTrust::SystemRoots`]: the operating system's trust store (WebPKI rules).
//! * [`ServerTrust::CaPem`]: only certificates issued by the given CA(s).
//! * [`ServerTrust::PinnedSha256`]: exactly the leaf certificate with this SHA-256
//!   fingerprint (what `conclave-sfu` prints at start). The handshake signature is
//!   still verified, so the server must hold that certificate's private key.
//!
//! Every mode speaks TLS 1.3 only with ALPN `conclave/1`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::frame::ALPN;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ConnectProblem, TransportError};

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
        hex::decode_to_slice(&digits, &mut pin).map_err(|_| ConnectProblem::BadPin)?;
        Ok(ServerTrust::PinnedSha256(pin))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why the server's certificate was not accepted. Where the verifier gave a reason, it
/// is the [`source`](std::error::Error::source) (a [`rustls::Error`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// The certificate is not issued by a trusted CA (system roots or the CA file).
    #[error(
        "the server certificate is not trusted ({cause}); use the server's CA file or pin its fingerprint"
    )]
    Untrusted {
        /// What the verifier reported.
        #[source]
        cause: rustls::Error,
    },
    /// The certificate has expired (or is not yet valid).
    #[error(
        "the server certificate has expired or is not yet valid ({cause}); the operator must renew it (or check this device's clock)"
    )]
    Expired {
        /// What the verifier reported (with the validity bound when known).
        #[source]
        cause: rustls::Error,
    },
    /// The certificate is valid, but not for the name the client asked for.
    #[error("the server certificate is not valid for this server name ({cause})")]
    WrongName {
        /// What the verifier reported.
        #[source]
        cause: rustls::Error,
    },
    /// The certificate's SHA-256 is not the pinned one.
    #[error(
        "server certificate fingerprint {got} does not match the pinned {pinned}; the server changed its certificate or this is not the right server"
    )]
    FingerprintMismatch {
        /// The presented certificate's SHA-256 (hex).
        got: String,
        /// The pinned SHA-256 (hex).
        pinned: String,
    },
    /// Any other rejection (revoked, malformed, unsupported signature, ...).
    #[error("the server certificate was rejected: {cause}")]
    Rejected {
        /// What the verifier reported.
        #[source]
        cause: rustls::Error,
    },
}

impl CertificateProblem {
    fn from_rustls(error: &rustls::Error) -> Self {
        let cause = error.clone();
        match error {
            rustls::Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => CertificateProblem::Expired { cause },
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => CertificateProblem::Untrusted { cause },
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => CertificateProblem::WrongName { cause },
            _ => CertificateProblem::Rejected { cause },
        }
    }
}

/// Where a verifier records why it refused a certificate, so a failed handshake can be
/// reported as a typed [`CertificateProblem`] instead of a TLS alert string.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProblemSlot(Arc<Mutex<Option<CertificateProblem>>>);

impl ProblemSlot {
    fn record(&self, problem: CertificateProblem) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(problem);
    }

    /// The recorded problem, if the verifier refused a certificate.
    pub(crate) fn take(&self) -> Option<CertificateProblem> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// How long a connection may go without a packet from the server before it counts
/// as lost, unless configured otherwise: 2.5 s. Keep-alives go out every sixth of it, so
/// a healthy connection is never idle that long, and a dead server (a crashed or
/// killed cluster node) is noticed within it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(2_500);

/// Builds a quinn client configuration for `trust`: TLS 1.3, ALPN `conclave/1`,
/// [`DEFAULT_IDLE_TIMEOUT`] and 1 MiB datagram buffers.
pub fn client_config(trust: &ServerTrust) -> Result<quinn::ClientConfig, TransportError> {
    recording_client_config(trust, &ProblemSlot::default(), DEFAULT_IDLE_TIMEOUT)
}

/// The shortest idle timeout a client uses (shorter ones are raised to it).
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(600);

/// [`client_config`] whose verifier records a refusal in `slot`, with `idle_timeout`.
pub(crate) fn recording_client_config(
    trust: &ServerTrust,
    slot: &ProblemSlot,
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig, TransportError> {
    let tls = recording_rustls_config(trust, slot)?;
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(ConnectProblem::QuicTls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    let idle_timeout = idle_timeout.max(MIN_IDLE_TIMEOUT);
    transport.keep_alive_interval(Some(idle_timeout / 6));
    // A timeout quinn cannot represent (centuries) falls back to the default.
    let idle = quinn::IdleTimeout::try_from(idle_timeout).unwrap_or_else(|_| {
        quinn::IdleTimeout::try_from(DEFAULT_IDLE_TIMEOUT)
            .expect("invariant: a 2.5 s idle timeout is representable")
    });
    transport.max_idle_timeout(Some(idle));
    transport.datagram_receive_buffer_size(Some(1024 * 1024));
    transport.datagram_send_buffer_size(1024 * 1024);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The rustls part of [`client_config`] (TLS 1.3 only, ALPN `conclave/1`).
pub fn rustls_client_config(trust: &ServerTrust) -> Result<rustls::ClientConfig, TransportError> {
    recording_rustls_config(trust, &ProblemSlot::default())
}

fn recording_rustls_config(
    trust: &ServerTrust,
    slot: &ProblemSlot,
) -> Result<rustls::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConnectProblem::Tls)?;
    let mut tls = match trust {
        ServerTrust::SystemRoots => {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(ConnectProblem::NoSystemRoots.into());
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(webpki(roots, slot)?)
                .with_no_client_auth()
        }
        ServerTrust::CaPem(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ConnectProblem::CaFileNotPem(Arc::new(e)))?;
                roots.add(cert).map_err(ConnectProblem::CaCertificate)?;
            }
            if roots.is_empty() {
                return Err(ConnectProblem::CaFileEmpty.into());
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(webpki(roots, slot)?)
                .with_no_client_auth()
        }
        ServerTrust::PinnedSha256(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                algorithms: provider().signature_verification_algorithms,
                slot: slot.clone(),
            }))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

/// The standard WebPKI verifier for `roots`, recording why it refuses a certificate.
/// (`dangerous()` only because the verifier is wrapped; the checks are WebPKI's.)
fn webpki(
    roots: RootCertStore,
    slot: &ProblemSlot,
) -> Result<Arc<dyn ServerCertVerifier>, TransportError> {
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(ConnectProblem::Verifier)?;
    Ok(Arc::new(RecordingVerifier {
        inner,
        slot: slot.clone(),
    }))
}

/// Delegates to WebPKI and records a refusal.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    slot: ProblemSlot,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.slot.record(CertificateProblem::from_rustls(e)))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `cert` is within its validity period at `now`.
fn check_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), CertificateProblem> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| {
        CertificateProblem::Rejected {
            cause: rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
        }
    })?;
    let validity = parsed.validity();
    let unix = |t: x509_parser::time::ASN1Time| {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(t.timestamp()).unwrap_or(0),
        ))
    };
    let (not_before, not_after) = (unix(validity.not_before), unix(validity.not_after));
    let cause = if now < not_before {
        CertificateError::NotValidYetContext {
            time: now,
            not_before,
        }
    } else if now > not_after {
        CertificateError::ExpiredContext {
            time: now,
            not_after,
        }
    } else {
        return Ok(());
    };
    Err(CertificateProblem::Expired {
        cause: rustls::Error::InvalidCertificate(cause),
    })
}

/// Accepts exactly the leaf certificate whose SHA-256 equals the pin, while it is
/// within its validity period (security review L4: an expired pinned certificate is
/// reported as [`CertificateProblem::Expired`], so operators learn to renew it). The
/// server name is not checked: the pin names the server more precisely than any name.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    slot: ProblemSlot,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(got.ct_eq(&self.pin)) {
            if let Err(problem) = check_validity(end_entity, now) {
                let error = rustls::Error::General(problem.to_string());
                self.slot.record(problem);
                return Err(error);
            }
            Ok(ServerCertVerified::assertion())
        } else {
            let problem = CertificateProblem::FingerprintMismatch {
                got: hex::encode(got),
                pinned: hex::encode(self.pin),
            };
            let error = rustls::Error::General(problem.to_string());
            self.slot.record(problem);
            Err(error)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_problem(result: Result<impl std::fmt::Debug, TransportError>) -> ConnectProblem {
        match result {
            Err(TransportError::Connect(problem)) => problem,
            other => panic!("expected a connect problem, got {other:?}"),
        }
    }

    #[test]
    fn a_pin_that_is_not_64_hex_digits_is_refused() {
        let problem = connect_problem(ServerTrust::pinned_hex("ab:cd"));
        assert!(matches!(problem, ConnectProblem::BadPin), "{problem:?}");
        let ok = ServerTrust::pinned_hex(&format!("{}ab", "ab:".repeat(31)));
        assert!(matches!(ok, Ok(ServerTrust::PinnedSha256(pin)) if pin == [0xab; 32]));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let empty = connect_problem(client_config(&ServerTrust::CaPem(b"not pem".to_vec())));
        assert!(matches!(empty, ConnectProblem::CaFileEmpty), "{empty:?}");
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let problem = connect_problem(client_config(&ServerTrust::CaPem(broken.to_vec())));
        assert!(
            matches!(problem, ConnectProblem::CaFileNotPem(_)),
            "{problem:?}"
        );
        // The PEM parser's own error stays reachable as the source.
        let source = std::error::Error::source(&problem).expect("the PEM error is the source");
        assert!(
            source
                .downcast_ref::<Arc<rustls::pki_types::pem::Error>>()
                .is_some()
                || source
                    .downcast_ref::<rustls::pki_types::pem::Error>()
                    .is_some(),
            "{source}"
        );
    }
}
