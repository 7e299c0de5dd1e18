//! Server authentication: a pinned fingerprint, a custom CA; an untrusted, expired or
//! mismatched certificate fails with a specific error before anything is sent.

#![allow(clippy::unwrap_used)]

use conclave_sdk::client::{Client, ClientConfig, ClientError};
use conclave_sdk::transport::{CertificateProblem, ServerTrust};
use conclave_testkit::prelude::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::CertificateError;

/// A CA, and a server identity for "localhost" issued by it with the given validity.
fn ca_and_server(
    not_before_year: i32,
    not_after_year: i32,
) -> (String, conclave_sfu::tls::ServerIdentity) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.not_before = rcgen::date_time_ymd(not_before_year, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, leaf_cert.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    let identity = conclave_sfu::tls::load_pem(&cert_path, &key_path).unwrap();
    (ca_cert.pem(), identity)
}

async fn connect(config: ClientConfig) -> Result<(), ClientError> {
    let user = User::new("alice");
    Client::connect(config, user.credentials())
        .await
        .map(|_| ())
}

/// The error is `CertificateProblem::Expired`.
fn assert_expired(err: &ClientError) {
    assert!(
        matches!(
            err,
            ClientError::Certificate(CertificateProblem::Expired { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_ca_issued_certificate_is_accepted_with_its_ca_file() {
    let (ca, identity) = ca_and_server(2020, 2090);
    let sfu = TestSfu::start_with_identity(identity, client_test_config()).await;
    let config = ClientConfig::new(sfu.addr, ServerTrust::CaPem(ca.into_bytes()));
    connect(config).await.expect("trusted by the CA file");
}

#[tokio::test]
async fn an_expired_certificate_is_reported_as_expired() {
    let (ca, identity) = ca_and_server(2015, 2020);
    let sfu = TestSfu::start_with_identity(identity, client_test_config()).await;
    let config = ClientConfig::new(sfu.addr, ServerTrust::CaPem(ca.into_bytes()));
    let err = connect(config).await.unwrap_err();
    assert_expired(&err);
    assert!(err.to_string().contains("expired"), "{err}");
}

/// Review L4: the pinned mode used to accept an expired certificate silently.
#[tokio::test]
async fn an_expired_pinned_certificate_is_reported_as_expired() {
    let (_, identity) = ca_and_server(2015, 2020);
    let sfu = TestSfu::start_with_identity(identity, client_test_config()).await;
    assert!(matches!(sfu.trust, ServerTrust::PinnedSha256(_)));
    let err = connect(sfu.client_config()).await.unwrap_err();
    assert_expired(&err);
    // The cause names the bound that was passed: 2020-01-01T00:00:00Z.
    let ClientError::Certificate(CertificateProblem::Expired {
        cause: rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. }),
    }) = &err
    else {
        panic!("expected an expiry with its context, got {err:?}");
    };
    assert_eq!(not_after.as_secs(), 1_577_836_800, "{err}");
    assert!(err.to_string().contains("1577836800"), "{err}");
    // A pinned certificate that is not yet valid is refused the same way.
    let (_, identity) = ca_and_server(2090, 2095);
    let sfu = TestSfu::start_with_identity(identity, client_test_config()).await;
    let err = connect(sfu.client_config()).await.unwrap_err();
    assert_expired(&err);
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_reported_as_untrusted() {
    let (_, identity) = ca_and_server(2020, 2090);
    let (other_ca, _) = ca_and_server(2020, 2090);
    let sfu = TestSfu::start_with_identity(identity, client_test_config()).await;
    let config = ClientConfig::new(sfu.addr, ServerTrust::CaPem(other_ca.into_bytes()));
    let err = connect(config).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Certificate(CertificateProblem::Untrusted { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_reported() {
    let (ca, identity) = ca_and_server(2020, 2090);
    let sfu = TestSfu::start_with_identity(identity, client_test_config()).await;
    let mut config = ClientConfig::new(sfu.addr, ServerTrust::CaPem(ca.into_bytes()));
    config.server_name = "sfu.example.org".into();
    let err = connect(config).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Certificate(CertificateProblem::WrongName { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_fingerprint_mismatch_is_reported_with_both_fingerprints() {
    let sfu = TestSfu::start_for_clients().await;
    let config = ClientConfig::new(sfu.addr, ServerTrust::PinnedSha256([0xab; 32]));
    let err = connect(config).await.unwrap_err();
    let ClientError::Certificate(CertificateProblem::FingerprintMismatch { got, pinned }) = &err
    else {
        panic!("expected a fingerprint mismatch, got {err}");
    };
    assert_eq!(pinned, &"ab".repeat(32));
    let ServerTrust::PinnedSha256(real) = sfu.trust else {
        unreachable!()
    };
    assert_eq!(got, &hex::encode(real));
}
