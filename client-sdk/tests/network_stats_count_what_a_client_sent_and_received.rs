//! `Client::network_stats` reads QUIC's counters of the client's connections: media
//! sent and received shows up as UDP datagrams and bytes each way.

#![allow(clippy::unwrap_used)]

use conclave_sdk::client::MediaKind;
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_stats_count_what_a_client_sent_and_received() {
    let sfu = TestSfu::start_for_clients().await;
    let Group {
        devices: [a, b],
        meetings: [meeting_a, mut meeting_b],
        ..
    } = Group::start(&sfu, ["alice", "bob"], &[MediaKind::Video]).await;
    deliver(&meeting_a, MediaKind::Video, b"first", &mut meeting_b).await;

    let (sent_before, received_before) = (a.client.network_stats(), b.client.network_stats());
    assert!(received_before.udp_datagrams_received > 0);
    let frame = vec![0x42; 1_000];
    for _ in 0..20 {
        deliver(&meeting_a, MediaKind::Video, &frame, &mut meeting_b).await;
    }
    let (sent, received) = (a.client.network_stats(), b.client.network_stats());
    assert!(
        sent.udp_bytes_sent - sent_before.udp_bytes_sent >= 20_000,
        "{sent:?} after {sent_before:?}"
    );
    assert!(sent.udp_datagrams_sent - sent_before.udp_datagrams_sent >= 20);
    assert!(
        received.udp_bytes_received - received_before.udp_bytes_received >= 20_000,
        "{received:?} after {received_before:?}"
    );
    assert!(received.udp_datagrams_received - received_before.udp_datagrams_received >= 20);
}
