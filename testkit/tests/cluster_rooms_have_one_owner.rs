//! Cluster mode on a real PostgreSQL: a room has one owner node; a join on another
//! node is answered with a redirect to the owner (its address, server name and fence),
//! where the join succeeds; a cleanly stopped owner frees its rooms at once.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::v1::{ErrorCode, Redirect};
use conclave_sdk::transport::TransportError;
use conclave_testkit::User;
use conclave_testkit::cluster::TestCluster;
use conclave_testkit::media::member;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::TestRoom;

fn redirect_of(result: Result<impl std::fmt::Debug, TransportError>) -> Redirect {
    match result {
        Err(TransportError::Server {
            code: ErrorCode::WrongNode,
            redirect: Some(redirect),
            ..
        }) => redirect,
        other => panic!("expected WRONG_NODE with a redirect, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_on_another_node_is_redirected_to_the_rooms_owner() {
    let cluster = TestCluster::start(2).await;
    let [one, two] = [&cluster.nodes[0], &cluster.nodes[1]];
    let alice = member(one, "alice").await;
    let bob_user = User::new("bob");
    let (bob, _) = TestClient::registered(two, &bob_user).await;
    let room = TestRoom::new();
    let key = room.auth();
    alice.open_room(&key, &room.routing).await.unwrap();

    // Bob's node does not own the room: it sends him to node one.
    let redirect = redirect_of(bob.join_room(&key, &room.routing).await);
    assert_eq!(redirect.address, one.addr.to_string());
    assert_eq!(redirect.server_name, "localhost");
    assert!(redirect.fence > 0);
    // Opening it there is refused the same way: one room, one owner.
    let again = redirect_of(bob.open_room(&key, &room.routing).await);
    assert_eq!(again, redirect);

    // The directory is shared: bob's user key, pinned through node two, is known on
    // node one (another key under his name is refused there).
    let impostor = User::new("bob");
    let refused = TestClient::connect(one)
        .await
        .register(&impostor, &impostor.device())
        .await;
    assert_eq!(
        refused.unwrap_err().server_code(),
        Some(ErrorCode::UserKeyMismatch)
    );
    let bob_at_owner = TestClient::registered(one, &bob_user).await.0;
    let joined = bob_at_owner.join_room(&key, &room.routing).await.unwrap();
    assert_eq!(joined.epoch, key.epoch());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_owner_frees_its_rooms_at_once() {
    let mut cluster = TestCluster::start(2).await;
    let alice = member(&cluster.nodes[0], "alice").await;
    let room = TestRoom::new();
    let key = room.auth();
    alice.open_room(&key, &room.routing).await.unwrap();
    let bob = member(&cluster.nodes[1], "bob").await;
    let first = redirect_of(bob.open_room(&key, &room.routing).await);

    let owner = cluster.nodes.remove(0);
    owner.stop().await.unwrap();
    // No lease to wait out: node two takes the room over on the next open.
    bob.open_room(&key, &room.routing).await.unwrap();
    // And a third party is now sent to node two, under a larger fence.
    let carol = member(&cluster.nodes[0], "carol").await;
    let joined = carol.join_room(&key, &room.routing).await.unwrap();
    assert_eq!(joined.epoch, key.epoch());
    assert!(first.fence > 0);
}
