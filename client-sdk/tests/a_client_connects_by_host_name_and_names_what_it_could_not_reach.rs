//! The client takes `host:port` as well as socket addresses, resolves it on connect,
//! bounds a connect with `connect_timeout`, and names the addresses in its errors.

#![allow(clippy::panic)]

use std::time::Duration;

use conclave_sdk::client::{Client, ClientConfig, ClientError, ConnectionProblem, MediaKind};
use conclave_sdk::transport::{ConnectProblem, TransportError};
use conclave_testkit::clients::test_timers;
use conclave_testkit::prelude::*;

fn transport_error(err: ClientError) -> TransportError {
    match err {
        ClientError::Connection(ConnectionProblem::Transport(e)) => e,
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_runs_with_the_server_given_as_localhost_and_a_port() {
    let sfu = TestSfu::start_for_clients().await;
    let mut by_name =
        ClientConfig::new(format!("localhost:{}", sfu.addr.port()), sfu.trust.clone());
    test_timers(&mut by_name);
    assert_eq!(by_name.server_name, "localhost");
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.connect_with(by_name).await;
    let mut b = bob.connect(&sfu).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"resolved", &mut meeting_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_named_in_the_error() {
    let sfu = TestSfu::start_for_clients().await;
    let config = ClientConfig::new("no-such-sfu.invalid:4433", sfu.trust.clone());
    let err = Client::connect(config, User::new("alice").credentials())
        .await
        .expect_err("an unresolvable name cannot connect");
    let message = err.to_string();
    assert!(message.contains("no-such-sfu.invalid:4433"), "{message}");
    assert!(matches!(
        transport_error(err),
        TransportError::Connect(ConnectProblem::Unresolved { .. })
    ));

    let config = ClientConfig::new("no-port.example", sfu.trust.clone());
    let err = Client::connect(config, User::new("alice").credentials())
        .await
        .expect_err("an address without a port cannot connect");
    assert!(err.to_string().contains("no-port.example"), "{err}");
    assert!(matches!(
        transport_error(err),
        TransportError::Connect(ConnectProblem::InvalidAddress { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_fails_the_connect_within_the_timeout_naming_its_address() {
    let sfu = TestSfu::start_for_clients().await;
    // A UDP socket that takes the handshake's packets and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut config = ClientConfig::new(addr, sfu.trust.clone());
    config.connect_timeout = Duration::from_millis(800);
    config.idle_timeout = Duration::from_secs(30);
    let err = Client::connect(config, User::new("alice").credentials())
        .await
        .expect_err("a silent address cannot connect");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    match transport_error(err) {
        TransportError::ConnectTimedOut { after, .. } => {
            assert_eq!(after, Duration::from_millis(800));
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_names_the_address_it_tried() {
    let sfu = TestSfu::start_for_clients().await;
    // The handshake gives up first (idle timeout shorter than the connect timeout):
    // the error says which address did not answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut config = ClientConfig::new(addr, sfu.trust.clone());
    config.idle_timeout = Duration::from_millis(600);
    config.connect_timeout = Duration::from_secs(30);
    let err = Client::connect(config, User::new("alice").credentials())
        .await
        .expect_err("a silent address cannot connect");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(matches!(
        transport_error(err),
        TransportError::Unreachable { .. }
    ));
    drop(silent);
}
