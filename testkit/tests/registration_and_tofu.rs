//! Registration pins a user's signing key on first use; devices prove possession of
//! their signing key on every connection, bound to that connection's TLS session.

use conclave_proto::v1::{self, ErrorCode, client_frame::Request};
use conclave_testkit::identity::User;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::sfu::TestSfu;

#[tokio::test]
async fn first_registration_pins_the_user_key_and_later_devices_must_match_it() {
    let server = TestSfu::start().await;
    let alice = User::new("alice");

    let (c1, d1) = {
        let c = TestClient::connect(&server).await;
        let d = alice.device();
        let r = c.register(&alice, &d).await.unwrap();
        assert!(r.new_user);
        (c, d)
    };
    // A second device with the same user key joins the user.
    let c2 = TestClient::connect(&server).await;
    let d2 = alice.device();
    assert!(!c2.register(&alice, &d2).await.unwrap().new_user);

    // Someone else claiming the username "alice" with another key is refused.
    let mallory = User::new("alice");
    let c3 = TestClient::connect(&server).await;
    let err = c3.register(&mallory, &mallory.device()).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::UserKeyMismatch), "{err}");

    // Registering the same device again is an idempotent retry.
    let c4 = TestClient::connect(&server).await;
    assert!(!c4.register(&alice, &d1).await.unwrap().new_user);
    drop((c1, c2, c4));
}

#[tokio::test]
async fn returning_devices_authenticate_with_a_proof_bound_to_the_connection() {
    let server = TestSfu::start().await;
    let bob = User::new("bob");
    let (first, device) = TestClient::registered(&server, &bob).await;
    first.conn.close().await;

    let c = TestClient::connect(&server).await;
    let ok = c.authenticate(&device).await.unwrap();
    assert_eq!(ok.mailbox_pending, 0);

    // A proof made on another connection (another TLS exporter) is refused.
    let other = TestClient::connect(&server).await;
    let target = TestClient::connect(&server).await;
    let err = target
        .request(Request::Authenticate(v1::Authenticate {
            device_id: device.device_id().as_bytes().to_vec(),
            auth_signature: other.auth_signature(&device),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadProof), "{err}");

    // A device nobody registered.
    let stranger = User::new("stranger").device();
    let err = target.authenticate(&stranger).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::NotFound), "{err}");
}

#[tokio::test]
async fn a_certificate_not_signed_by_the_presented_user_key_is_refused() {
    let server = TestSfu::start().await;
    let carol = User::new("carol");
    let imposter = User::new("carol");
    let c = TestClient::connect(&server).await;
    // Carol's device certificate presented with the imposter's user key.
    let err = c.register(&imposter, &carol.device()).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadProof), "{err}");
}

#[tokio::test]
async fn requests_before_authentication_are_refused() {
    let server = TestSfu::start().await;
    let c = TestClient::connect(&server).await;
    let err = c
        .request(Request::FetchBundles(v1::FetchBundles {
            user_ids: vec![],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::Unauthenticated), "{err}");
    // GetTime is always allowed: the server's master clock.
    assert!(matches!(
        c.request(Request::GetTime(v1::GetTime {})).await.unwrap(),
        v1::response::Result::ServerTime(t) if t.server_time_ms > 0
    ));
}
