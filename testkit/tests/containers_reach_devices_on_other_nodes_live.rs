//! Cluster mode on a real PostgreSQL: a container sent through one node reaches its
//! recipient live on whichever node the recipient is connected to, once, in order; a
//! node that could not hear the store's signals for a while (its connection to
//! PostgreSQL cut) rescans when it hears them again, so nothing stored meanwhile waits
//! for the recipient to reconnect.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use conclave_proto::v1::{self, DeliveryStatus};
use conclave_sdk::container::ReplayCache;
use conclave_sdk::identity::{DeviceIdentity, PrekeyPool};
use conclave_sdk::time::DAY_MS;
use conclave_testkit::cluster::TestCluster;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::mailbox::{open_text, recipients_from, seal_text, status_for};
use conclave_testkit::protocol::{TestClient, device_id_bytes};
use conclave_testkit::sfu::TestSfu;

/// A registered device with prekeys, and what it needs to open containers.
struct Person {
    user: User,
    device: DeviceIdentity,
    pool: PrekeyPool,
    replay: ReplayCache,
    client: TestClient,
}

impl Person {
    async fn on(node: &TestSfu, name: &str) -> Person {
        let user = User::new(name);
        let (client, device) = TestClient::registered(node, &user).await;
        let mut pool = PrekeyPool::new(&device);
        client.upload_prekeys(&device, &mut pool, 8).await.unwrap();
        Person {
            user,
            device,
            pool,
            replay: ReplayCache::default(),
            client,
        }
    }

    fn id(&self) -> Vec<u8> {
        device_id_bytes(&self.device)
    }

    /// Seals `text` to every device of `to` and sends it; returns the answer.
    async fn send(&self, to: &[&Person], text: &str) -> v1::ContainerSent {
        let users: Vec<&User> = to.iter().map(|p| &p.user).collect();
        let bundles = self.client.fetch_bundles(&users).await.unwrap();
        let recipients = recipients_from(&bundles, &users);
        let container = seal_text(&self.device, &recipients, text, DAY_MS);
        let ids: Vec<Vec<u8>> = to.iter().map(|p| p.id()).collect();
        self.client.send_container(&ids, container).await.unwrap()
    }

    /// Waits for the next delivery, opens it (it must come from `from`) and returns
    /// its mailbox id and text.
    async fn receive(&mut self, from: &Person) -> (u64, String) {
        let delivery = self.client.mailbox_delivery().await;
        let (text, _) = open_text(
            &delivery.container,
            &from.user.identity,
            &self.device,
            &mut self.pool,
            &mut self.replay,
        )
        .expect("a delivered container opens, and is not a replay");
        (delivery.mailbox_id, text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_to_a_device_on_another_node_arrives_live_and_once() {
    let cluster = TestCluster::start(2).await;
    let [one, two] = [&cluster.nodes[0], &cluster.nodes[1]];
    let alice = Person::on(one, "alice").await;
    let mut bob = Person::on(two, "bob").await;
    let mut carol = Person::on(one, "carol").await;

    let sent = alice.send(&[&bob, &carol], "standup in five").await;
    // Carol is connected to the sender's node; bob's node is another one, and this
    // node cannot know he is connected there: stored, and pushed live by his node.
    assert_eq!(status_for(&sent, &carol.id()), DeliveryStatus::Delivered);
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Stored);
    let (bob_first, text) = bob.receive(&alice).await;
    assert_eq!(text, "standup in five");
    let (carol_first, text) = carol.receive(&alice).await;
    assert_eq!(text, "standup in five");

    // More containers: each arrives once (a second copy would be refused as a replay
    // when opened), in the order sent, on both nodes.
    for n in 1..=3 {
        alice.send(&[&bob, &carol], &format!("update {n}")).await;
    }
    let mut last = (bob_first, carol_first);
    for n in 1..=3 {
        let (id, text) = bob.receive(&alice).await;
        assert_eq!(text, format!("update {n}"));
        assert!(id > last.0, "bob's deliveries come in mailbox order");
        let (id2, text) = carol.receive(&alice).await;
        assert_eq!(text, format!("update {n}"));
        assert!(id2 > last.1, "carol's deliveries come in mailbox order");
        last = (id, id2);
    }
    bob.client.round_trip().await;
    let extra = conclave_testkit::protocol::mailbox::mailbox_events(bob.client.received_events());
    assert!(extra.is_empty(), "no delivery twice: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_stored_while_a_node_could_not_listen_arrives_when_it_listens_again() {
    let mut cluster = TestCluster::start_with_proxy(2).await;
    let mut bob = Person::on(&cluster.nodes[0], "bob").await;
    let alice = Person::on(&cluster.nodes[1], "alice").await;

    // Node one (bob's) loses PostgreSQL, and with it the store's signals. A cut this
    // short does not cost it its lease, and bob's QUIC connection is untouched.
    let proxy = cluster.proxy.as_mut().expect("node one is proxied");
    proxy.cut().await;
    let sent = alice.send(&[&bob], "while you were cut off").await;
    assert_eq!(status_for(&sent, &bob.id()), DeliveryStatus::Stored);
    proxy.restore().await;

    // The signal of that commit is lost for node one; its listener, connected again,
    // rescans and delivers without bob reconnecting.
    let (_, text) = bob.receive(&alice).await;
    assert_eq!(text, "while you were cut off");
    // Signals flow again afterwards.
    alice.send(&[&bob], "and after").await;
    let (_, text) = bob.receive(&alice).await;
    assert_eq!(text, "and after");
}
