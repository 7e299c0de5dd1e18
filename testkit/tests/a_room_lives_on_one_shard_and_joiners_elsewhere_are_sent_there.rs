//! A node whose port is served by several shards keeps each room on one shard: a
//! connection that reached another shard is told where the room is (`WRONG_NODE`
//! naming no other node, only the byte that steers a new connection to the room's
//! shard), a connection opened with that byte lands there and joins, and media flows
//! among members that all live on the room's shard.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::datagram::Slot;
use conclave_proto::v1::ErrorCode;
use conclave_sdk::transport::TransportError;
use conclave_testkit::User;
use conclave_testkit::media::{assert_exactly, collect_until_markers, send_burst, send_marker};
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::rooms::{TestRoom, handle_of, slot_of};
use conclave_testkit::sfu::{TestSfu, test_config};

const BURST: u32 = 20;

async fn steered_member(server: &TestSfu, byte: u8, name: &str) -> TestClient {
    let client = TestClient::connect_steered(server, byte).await;
    let user = User::new(name);
    client
        .register(&user, &user.device())
        .await
        .expect("Register");
    client
}

#[tokio::test]
async fn a_joiner_on_another_shard_is_sent_to_the_rooms_shard_and_media_flows_there() {
    let server = TestSfu::start_sharded(test_config(), 2).await;
    // One connection on each shard (the first byte of the initial connection ID
    // steers it: byte % 2).
    let on = [
        steered_member(&server, 0, "zero").await,
        steered_member(&server, 1, "one").await,
    ];
    let room = TestRoom::new();

    // Both try to open the room: the room's shard accepts, the other redirects.
    let mut joined = None;
    let mut redirect = None;
    for (shard, client) in on.iter().enumerate() {
        match client.open_room(&room.auth(), &room.routing).await {
            Ok(j) => joined = Some((shard, j)),
            Err(TransportError::Server {
                code: ErrorCode::WrongNode,
                redirect: Some(r),
                ..
            }) => redirect = Some((shard, r)),
            Err(e) => panic!("shard {shard}: unexpected {e}"),
        }
    }
    let (home, opened) = joined.expect("the room's own shard accepts the open");
    let (away, redirect) = redirect.expect("the other shard redirects");
    assert_ne!(home, away);
    // Nothing names another node: the same address, another shard of it.
    assert!(redirect.address.is_empty() && redirect.server_name.is_empty());
    let byte = u8::try_from(redirect.connection_id_byte.expect("a steering byte")).unwrap();
    assert_eq!(
        usize::from(byte) % 2,
        home,
        "the byte steers to the room's shard"
    );

    // A connection opened with that byte lands on the room's shard and joins.
    let moved = steered_member(&server, byte, "moved").await;
    let j = moved.join_room(&room.auth(), &room.routing).await.unwrap();
    let (h, opener) = (handle_of(&opened), &on[home]);
    assert_eq!(handle_of(&j), h);

    // Media flows both ways between the two members of the room's shard.
    send_burst(opener, h, Slot(0), 1, BURST);
    send_marker(opener, h, 1);
    send_burst(&moved, h, Slot(0), 2, BURST);
    send_marker(&moved, h, 2);
    let got = collect_until_markers(&moved, &[(h, 1)]).await;
    assert_exactly(&got, &[(h, 1, slot_of(&opened))], BURST, "moved");
    let got = collect_until_markers(opener, &[(h, 2)]).await;
    assert_exactly(&got, &[(h, 2, slot_of(&j))], BURST, "opener");

    // The connection on the other shard is still refused, however often it asks.
    let again = on[away].join_room(&room.auth(), &room.routing).await;
    assert!(
        matches!(
            &again,
            Err(TransportError::Server {
                code: ErrorCode::WrongNode,
                ..
            })
        ),
        "{again:?}"
    );
}
