//! TLS identity and QUIC endpoint configuration.
//!
//! The server speaks TLS 1.3 only (QUIC requires it), with the ALPN protocol
//! [`ALPN`] and no client certificates: clients authenticate inside the control
//! protocol. The identity is either an operator-supplied PEM certificate chain and
//! key ([`load_pem`]) or, for development, a self-signed certificate generated once
//! under the data directory ([`load_or_generate_dev`]).
//!
//! Clients trust the server by system roots, a CA file or the certificate's SHA-256
//! fingerprint (printed in the startup banner): see `conclave_sdk::transport`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::config::{Limits, Timing};
use conclave_proto::frame::PREFIX_LEN;

/// Why a TLS client configuration (for PostgreSQL or push services) could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientTlsError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {}: check the path and its permissions", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the CA file {} holds no PEM certificate", path.display())]
    NoTrustAnchors {
        /// The file.
        path: PathBuf,
    },
    /// The crypto provider refused the protocol versions (a build problem).
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
}

/// A TLS client configuration (rustls on aws-lc-rs, TLS 1.2 and 1.3) that verifies
/// servers against the certificates in `ca_file`, or the system's roots without one.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| ClientTlsError::CaFile {
                path: path.to_path_buf(),
                source,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
            // A CA file without an anchor is a mistake; an empty system store is not
            // (TLS then fails with its reason).
            if roots.is_empty() {
                return Err(ClientTlsError::NoTrustAnchors {
                    path: path.to_path_buf(),
                });
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientTlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The ALPN protocol identifier of the Conclave control and media protocol.
pub use conclave_proto::frame::ALPN;

/// File name of the development certificate under the data directory.
pub const DEV_CERT_FILE: &str = "dev-cert.pem";
/// File name of the development private key under the data directory.
pub const DEV_KEY_FILE: &str = "dev-key.pem";

/// Validity of a generated development certificate.
const DEV_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Datagram buffers per connection, each way (the forwarder's congestion signal).
const DATAGRAM_BUFFER_BYTES: usize = crate::DATAGRAM_SEND_BUFFER;

/// Why a TLS identity or configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("cannot {action} {}: check the path and its permissions", path.display())]
    Io {
        /// What was being done: "read", "write" or "create directory".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate found in {}: expected one or more PEM \"CERTIFICATE\" blocks, leaf first", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("no private key found in {}: expected a PKCS#8, PKCS#1 or SEC1 PEM block", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file is malformed.
    #[error("malformed PEM in {}: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key is unsupported or does not belong to the certificate.
    #[error("the private key in {} cannot be used with the certificate in {}: {message} (use the key the certificate was issued for; RSA, ECDSA P-256/P-384 and Ed25519 are supported)", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls reported.
        message: String,
    },
    /// Generating the development certificate failed.
    #[error("cannot generate the development certificate: {0}")]
    Generate(String),
    /// rustls or quinn rejected the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The server's certificate chain and private key.
pub struct ServerIdentity {
    /// Certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate's DER encoding.
    pub fingerprint_sha256: [u8; 32],
}

impl ServerIdentity {
    /// The leaf fingerprint as 64 lowercase hex digits.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint_sha256)
    }

    fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Option<ServerIdentity> {
        let fingerprint_sha256 = fingerprint(cert_chain.first()?);
        Some(ServerIdentity {
            cert_chain,
            key,
            fingerprint_sha256,
        })
    }
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("cert_chain_len", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .field("fingerprint_sha256", &self.fingerprint_hex())
            .finish()
    }
}

/// SHA-256 of a certificate's DER encoding.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// Loads a PEM certificate chain (leaf first) and its private key, and checks that
/// the key is usable and belongs to the leaf.
pub fn load_pem(cert: &Path, key: &Path) -> Result<ServerIdentity, TlsError> {
    let pem_err = |path: &Path, e: pem::Error| match e {
        pem::Error::Io(source) => TlsError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    };
    let cert_chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    let key_der = match PrivateKeyDer::from_pem_file(key) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey {
                path: key.to_path_buf(),
            });
        }
        Err(e) => return Err(pem_err(key, e)),
    };
    let identity = ServerIdentity::new(cert_chain, key_der).ok_or(TlsError::NoCertificate {
        path: cert.to_path_buf(),
    })?;
    CertifiedKey::from_der(
        identity.cert_chain.clone(),
        identity.key.clone_key(),
        &provider(),
    )
    .map_err(|e| TlsError::KeyMismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(identity)
}

/// Loads the development certificate from `data_dir`, or generates and stores one
/// (self-signed, ECDSA P-256, for `localhost`, `127.0.0.1` and `::1`, valid for a
/// year). Returns the identity and whether it was generated now.
pub fn load_or_generate_dev(data_dir: &Path) -> Result<(ServerIdentity, bool), TlsError> {
    let cert_path = data_dir.join(DEV_CERT_FILE);
    let key_path = data_dir.join(DEV_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        return Ok((load_pem(&cert_path, &key_path)?, false));
    }
    std::fs::create_dir_all(data_dir).map_err(|source| TlsError::Io {
        action: "create directory",
        path: data_dir.to_path_buf(),
        source,
    })?;
    let (cert_pem, key_pem) = generate_dev_pem()?;
    write_file(&key_path, key_pem.as_bytes(), true)?;
    write_file(&cert_path, cert_pem.as_bytes(), false)?;
    Ok((load_pem(&cert_path, &key_path)?, true))
}

/// A new self-signed development certificate and key, both PEM.
fn generate_dev_pem() -> Result<(String, String), TlsError> {
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let mut params = rcgen::CertificateParams::new(names).map_err(gen_err)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "conclave-sfu development certificate",
    );
    let now = std::time::SystemTime::now();
    // Tolerate a client clock that is a little behind.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + DEV_CERT_VALIDITY).into();
    let cert = params.self_signed(&key_pair).map_err(gen_err)?;
    Ok((cert.pem(), key_pair.serialize_pem()))
}

/// Replaces `path` atomically (write a temporary file, sync, rename), so a crash never
/// leaves a truncated PEM file; `private` files are readable by the owner only (on
/// Unix). The key is written before the certificate, so a present certificate implies
/// a complete key.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let io_err = |source| TlsError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    // A leftover from an interrupted start; create_new below must not reuse it, since
    // its permissions could be wider.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// The crypto provider used everywhere: rustls on aws-lc-rs, whose default key exchange
/// prefers the hybrid post-quantum X25519MLKEM768.
fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Builds the QUIC server configuration: TLS 1.3 only, ALPN [`ALPN`], no client
/// authentication, one bidirectional (control) stream per connection, no
/// unidirectional streams, datagrams enabled, migration allowed.
pub fn server_config(
    identity: &ServerIdentity,
    timing: &Timing,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TlsError> {
    let config_err = |e: &dyn fmt::Display| TlsError::Config(e.to_string());
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_err(&e))?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(|e| config_err(&e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| config_err(&e))?;

    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(timing, limits)?));
    config.migration(true);
    Ok(config)
}

/// The QUIC receive window of an authenticated connection: a whole control frame
/// (plus its length prefix) may be in flight.
pub(crate) fn control_receive_window(max_frame_bytes: usize) -> quinn::VarInt {
    let window = u64::try_from(max_frame_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(64 * 1024);
    quinn::VarInt::from_u64(window).unwrap_or(quinn::VarInt::MAX)
}

/// The connection-level QUIC receive window before authentication: two frames of the
/// pre-authentication size (with their prefixes).
fn control_receive_window_before_auth(max_frame_bytes_before_auth: usize) -> quinn::VarInt {
    let window = u64::try_from(max_frame_bytes_before_auth)
        .unwrap_or(u64::MAX)
        .saturating_add(PREFIX_LEN as u64)
        .saturating_mul(2);
    quinn::VarInt::from_u64(window).unwrap_or(quinn::VarInt::MAX)
}

/// Transport parameters shared by every connection.
fn transport_config(timing: &Timing, limits: &Limits) -> Result<quinn::TransportConfig, TlsError> {
    let idle = Duration::from_secs(timing.idle_timeout_secs);
    let idle = quinn::IdleTimeout::try_from(idle).map_err(|_| {
        TlsError::Config(format!(
            "timing.idle_timeout_secs {} is too large",
            timing.idle_timeout_secs
        ))
    })?;
    // One control stream: let a whole frame (plus its length prefix) be in flight,
    // once authenticated. Until then the connection's window holds only two
    // pre-authentication frames, so an unauthenticated client cannot make quinn
    // buffer more; the session opens it when the device authenticates.
    let window = control_receive_window(limits.max_frame_bytes);
    let before_auth = control_receive_window_before_auth(limits.max_frame_bytes_before_auth);

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(window)
        .receive_window(before_auth)
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER_BYTES))
        .datagram_send_buffer_size(DATAGRAM_BUFFER_BYTES);
    Ok(transport)
}

#[cfg(test)]
mod tests {
    // The handshake tests, which need a client (the SDK's transport), are system tests
    // in `testkit/tests/tls_handshakes_check_the_pin_and_alpn.rs`.
    use super::*;

    fn dev_identity() -> (tempfile::TempDir, ServerIdentity) {
        let dir = tempfile::tempdir().unwrap();
        let (identity, generated) = load_or_generate_dev(dir.path()).unwrap();
        assert!(generated);
        (dir, identity)
    }

    #[test]
    fn generated_dev_certificate_reloads_with_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested").join("data");
        let (first, generated) = load_or_generate_dev(&data_dir).unwrap();
        assert!(generated);
        let (second, generated) = load_or_generate_dev(&data_dir).unwrap();
        assert!(!generated);
        assert_eq!(first.fingerprint_sha256, second.fingerprint_sha256);
        assert_eq!(first.fingerprint_hex().len(), 64);
        assert_eq!(
            first.fingerprint_hex(),
            first.fingerprint_hex().to_lowercase()
        );
        assert_eq!(
            first.fingerprint_sha256,
            fingerprint(&first.cert_chain[0]),
            "fingerprint is of the leaf DER"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(data_dir.join(DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut names: Vec<_> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [DEV_CERT_FILE, DEV_KEY_FILE],
            "no temporary files left"
        );

        // A lost certificate means a new identity, not a failure to start.
        std::fs::remove_file(data_dir.join(DEV_CERT_FILE)).unwrap();
        let (third, generated) = load_or_generate_dev(&data_dir).unwrap();
        assert!(generated);
        assert_ne!(third.fingerprint_sha256, first.fingerprint_sha256);
    }

    #[test]
    fn debug_never_prints_the_key() {
        let (_dir, identity) = dev_identity();
        let debug = format!("{identity:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains(&identity.fingerprint_hex()), "{debug}");
        let key_bytes = format!("{:?}", identity.key.secret_der());
        assert!(!debug.contains(&key_bytes));
    }

    #[test]
    fn load_pem_errors_tell_what_is_wrong() {
        let (dir, _identity) = dev_identity();
        let cert = dir.path().join(DEV_CERT_FILE);
        let key = dir.path().join(DEV_KEY_FILE);

        let missing = dir.path().join("missing.pem");
        let err = load_pem(&missing, &key).unwrap_err();
        assert!(matches!(err, TlsError::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        // Certificate and key swapped: neither file holds what is expected.
        let err = load_pem(&key, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = load_pem(&cert, &cert).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
        assert!(err.to_string().contains("PKCS#8, PKCS#1 or SEC1"), "{err}");

        // A key from another certificate.
        let (other_dir, _other) = dev_identity();
        let err = load_pem(&cert, &other_dir.path().join(DEV_KEY_FILE)).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }
}
