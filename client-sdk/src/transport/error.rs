//! Why a transport operation failed: closed reason enums, with the quinn, rustls or
//! I/O error underneath as the [`source`](std::error::Error::source).

use std::sync::Arc;

use conclave_proto::frame::FrameError;
use conclave_proto::v1::ErrorCode;

use super::CertificateProblem;

/// Why a control-channel operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection could not be started: the trust settings are unusable or the
    /// local socket cannot be opened. Retrying does not help until the cause is fixed.
    #[error("cannot connect: {0}")]
    Connect(#[source] ConnectProblem),
    /// The QUIC or TLS handshake failed for a reason other than the certificate (no
    /// answer, protocol mismatch, ...). Transient unless it keeps happening.
    #[error("handshake with the server failed: {0}")]
    Handshake(#[source] quinn::ConnectionError),
    /// The server's certificate was refused: untrusted, expired, for another name, or
    /// not the pinned one.
    #[error("{0}")]
    Certificate(CertificateProblem),
    /// The connection or control stream is gone.
    #[error("connection closed: {0}")]
    Closed(#[source] ClosedReason),
    /// The server refused the request.
    #[error("server refused the request ({code:?}): {message}")]
    Server {
        /// The protocol error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// For `RateLimited`: how long to wait, ms.
        retry_after_ms: u64,
        /// For `WrongEpoch`: the room's current epoch as the server claims it (0 if
        /// unknown).
        room_epoch: u64,
        /// For `WrongNode` (cluster mode): where the room's owner is, as the server
        /// claims it. Only a place to connect to: the owner must pass the same trust
        /// setting as any server.
        redirect: Option<conclave_proto::v1::Redirect>,
    },
    /// The connection cannot carry the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[source] ProtocolProblem),
    /// No server address could be reached: every one tried failed (the last failure is
    /// the source).
    #[error("cannot reach {addresses}: {source}")]
    Unreachable {
        /// The addresses tried, as configured and as resolved.
        addresses: String,
        /// Why the last one failed.
        #[source]
        source: Box<TransportError>,
    },
    /// No server address answered within the connect timeout.
    #[error(
        "no answer from {addresses} within {after:?}: check the address, that UDP reaches \
         the server (firewalls often drop it), or raise ClientConfig::connect_timeout"
    )]
    ConnectTimedOut {
        /// The addresses tried, as configured and as resolved.
        addresses: String,
        /// The timeout.
        after: std::time::Duration,
    },
}

impl TransportError {
    /// The server's error code, if the server refused the request.
    #[must_use]
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<ConnectProblem> for TransportError {
    fn from(problem: ConnectProblem) -> Self {
        TransportError::Connect(problem)
    }
}

impl From<ClosedReason> for TransportError {
    fn from(reason: ClosedReason) -> Self {
        TransportError::Closed(reason)
    }
}

impl From<ProtocolProblem> for TransportError {
    fn from(problem: ProtocolProblem) -> Self {
        TransportError::Protocol(problem)
    }
}

/// Why a connection could not be started.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectProblem {
    /// A certificate pin is not 64 hex digits.
    #[error("a certificate pin must be 64 hex digits (the SHA-256 the server prints)")]
    BadPin,
    /// The system trust store holds no usable root certificate.
    #[error(
        "no usable root certificates found in the system trust store; install ca-certificates or use a CA file or a pinned fingerprint"
    )]
    NoSystemRoots,
    /// The CA file is not PEM.
    #[error("CA file is not valid PEM: {0}")]
    CaFileNotPem(#[source] Arc<rustls::pki_types::pem::Error>),
    /// The CA file holds no certificate.
    #[error("CA file holds no certificate (expected PEM CERTIFICATE blocks)")]
    CaFileEmpty,
    /// A certificate in the CA file cannot serve as a trust anchor.
    #[error("CA certificate is not usable: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The certificate verifier cannot be built from the trust anchors.
    #[error("certificate verifier: {0}")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    /// The TLS configuration has no cipher suite QUIC can start with.
    #[error("TLS configuration for QUIC: {0}")]
    QuicTls(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// No local UDP socket could be opened.
    #[error("cannot bind a UDP socket: {0}")]
    Bind(#[source] Arc<std::io::Error>),
    /// A cluster node's address (from a redirect) does not resolve.
    #[error("the address a redirect named does not resolve")]
    UnresolvedAddress,
    /// A server address is not `host:port`.
    #[error("server address {address:?} is not host:port (e.g. \"sfu.example.com:4433\")")]
    InvalidAddress {
        /// The address as configured.
        address: String,
    },
    /// A server's name does not resolve.
    #[error("cannot resolve {address}: {reason}; check the name and this device's DNS")]
    Unresolved {
        /// The address as configured.
        address: String,
        /// The resolver's answer.
        reason: String,
    },
    /// QUIC refused to start the connection (for example an invalid server name or
    /// address).
    #[error("{0}")]
    Start(#[source] quinn::ConnectError),
}

/// Why a connection or its control stream is gone.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClosedReason {
    /// The QUIC connection closed (by either side, or timed out).
    #[error("{0}")]
    Connection(#[source] quinn::ConnectionError),
    /// Writing to the control stream failed.
    #[error("control stream write failed: {0}")]
    Write(#[source] quinn::WriteError),
    /// QUIC refused a media datagram.
    #[error("media datagram refused: {0}")]
    Datagram(#[source] quinn::SendDatagramError),
    /// The server ended the control stream while the connection stayed up.
    #[error("the control stream ended")]
    StreamEnded,
    /// The connection was already closed on this side.
    #[error("the connection is gone")]
    Gone,
    /// This side closed the connection: the server sent more events than it holds
    /// unread ([`EventBudget`](super::EventBudget)). Reconnect (the SDK does):
    /// unacknowledged mailbox entries come again.
    #[error(
        "the server sent more events than this client holds ({held_events} events, {held_bytes} bytes held; budget {budget_bytes} bytes): closed to reconnect"
    )]
    FellBehind {
        /// Encoded bytes held when the next event did not fit.
        held_bytes: usize,
        /// Events held then.
        held_events: usize,
        /// The budget in bytes.
        budget_bytes: usize,
    },
}

/// Why the connection cannot carry the protocol.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolProblem {
    /// The TLS session offers no exporter, so proofs cannot be bound to it.
    #[error("TLS exporter unavailable")]
    NoTlsExporter,
    /// A request could not be framed.
    #[error("request cannot be framed: {0}")]
    Frame(#[source] Arc<FrameError>),
}
