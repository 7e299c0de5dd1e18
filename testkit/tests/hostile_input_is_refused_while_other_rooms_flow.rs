//! Hostile bytes on one connection get a clear refusal (an error response, a counted
//! drop, or, for a frame that breaks the framing, a closed connection) and nothing
//! else: a healthy room keeps exchanging every one of its datagrams throughout.
//!
//! One test in this binary: it installs the process-wide Prometheus recorder before the
//! server starts, so the server's counters land in it and can be read back.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use conclave_proto::datagram::{DatagramHeader, HEADER_LEN, MediaKind, RoomHandle, Slot};
use conclave_proto::frame;
use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};
use conclave_sfu::server::close_code;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::clock::WAIT;
use conclave_testkit::identity::User;
use conclave_testkit::media::{Got, Tag, assert_exactly, member, send_marker};
use conclave_testkit::protocol::TestClient;
use conclave_testkit::protocol::raw::RawControl;
use conclave_testkit::protocol::rooms::{TestRoom, handle_of, slot_of};
use conclave_testkit::sfu::{TestSfu, test_config};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

/// Largest datagram the server accepts in this test: small, so that an oversize
/// datagram still fits the QUIC path and reaches the server's check.
const MAX_DATAGRAM: usize = 200;

/// The value of the series `name{labels}` in the Prometheus text (0 if absent).
fn metric(metrics: &PrometheusHandle, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = metrics.render();
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut have: Vec<&str> = series_labels.split(',').filter(|s| !s.is_empty()).collect();
        have.sort_unstable();
        let mut want: Vec<&str> = wanted.iter().map(String::as_str).collect();
        want.sort_unstable();
        if series_name == name && have == want {
            return value.parse::<f64>().unwrap() as u64;
        }
    }
    0
}

fn dropped(metrics: &PrometheusHandle, reason: &str) -> u64 {
    metric(
        metrics,
        "conclave_datagrams_dropped_total",
        &[("reason", reason)],
    )
}

fn malformed_frames(metrics: &PrometheusHandle) -> u64 {
    metric(
        metrics,
        "conclave_control_requests_total",
        &[("kind", "malformed"), ("outcome", "bad_request")],
    )
}

/// Waits (bounded) until `read` returns at least `target`, then returns its value.
async fn wait_for_count(what: &str, target: u64, mut read: impl FnMut() -> u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = read();
        if v >= target || tokio::time::Instant::now() >= deadline {
            assert!(v >= target, "{what}: {v} after {WAIT:?}, expected {target}");
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One direction of the healthy room's traffic: a sender pacing tagged datagrams until
/// told to stop (then its marker), and a receiver collecting until the marker.
struct Flow {
    who: &'static str,
    handle: RoomHandle,
    tag: u8,
    slot: Slot,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    sender: JoinHandle<u32>,
    receiver: JoinHandle<Vec<Got>>,
}

impl Flow {
    fn start(
        who: &'static str,
        from: &Arc<TestClient>,
        to: &Arc<TestClient>,
        handle: RoomHandle,
        tag: u8,
        slot: Slot,
    ) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let sender = tokio::spawn({
            let (from, stop) = (Arc::clone(from), Arc::clone(&stop));
            async move {
                let mut seq = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let payload = Tag {
                        sender: tag,
                        seq,
                        marker: false,
                    }
                    .encode();
                    from.send_media(handle, Slot(0), MediaKind::Audio, seq, &payload);
                    seq += 1;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                send_marker(&from, handle, tag);
                seq
            }
        });
        let receiver = tokio::spawn({
            let (to, received) = (Arc::clone(to), Arc::clone(&received));
            async move {
                let mut got = Vec::new();
                loop {
                    let (header, payload) = to
                        .recv_media(WAIT)
                        .await
                        .unwrap_or_else(|| panic!("{who}: the healthy room went silent"));
                    let decoded = Tag::decode(&payload);
                    if decoded.is_some_and(|t| t.marker && t.sender == tag) {
                        return got;
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                    got.push(Got {
                        header,
                        tag: decoded,
                        payload,
                    });
                }
            }
        });
        Flow {
            who,
            handle,
            tag,
            slot,
            stop,
            received,
            sender,
            receiver,
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.await.unwrap();
        let got = self.receiver.await.unwrap();
        assert!(sent > 0);
        assert_exactly(&got, &[(self.handle, self.tag, self.slot)], sent, self.who);
    }
}

/// Waits (bounded) until every flow has delivered more datagrams than now.
async fn assert_flowing(flows: &[&Flow], after: &str) {
    for flow in flows {
        let now = flow.received.load(Ordering::Relaxed);
        wait_for_count(&format!("{} after {after}", flow.who), now + 10, || {
            flow.received.load(Ordering::Relaxed)
        })
        .await;
    }
}

fn header(handle: RoomHandle) -> [u8; HEADER_LEN] {
    DatagramHeader {
        room_handle: handle,
        sender_slot: Slot(0),
        media_kind: MediaKind::Audio,
        keyframe: false,
        frame_number: 1,
        fragment_index: 0,
        fragment_count: 1,
    }
    .encode()
    .unwrap()
}

/// Datagrams that do not decode, naming the healthy room: garbage, truncated headers,
/// other versions, reserved flag bits, unknown media kinds, bad fragmentation.
fn malformed_datagrams(handle: RoomHandle) -> Vec<Vec<u8>> {
    let good = header(handle);
    let with = |at: usize, byte: u8| {
        let mut h = good.to_vec();
        h[at] = byte;
        h.extend_from_slice(b"ciphertext");
        h
    };
    vec![
        vec![0xee; 40],
        vec![0x01],
        b"hello, sfu".to_vec(),
        good[..HEADER_LEN - 1].to_vec(),
        good[..6].to_vec(),
        with(0, 0),
        with(0, 2),
        with(1, 0b1000_0000),
        with(1, 0b0000_1000),
        with(1, 0b0000_0110),
        with(1, 0b0000_0111),
        with(12, 2),
        with(13, 0),
        with(13, 65),
    ]
}

/// Datagrams above the server's limit: a well-formed one and garbage.
fn oversize_datagrams(handle: RoomHandle) -> Vec<Vec<u8>> {
    let mut well_formed = header(handle).to_vec();
    well_formed.resize(MAX_DATAGRAM + 1, 0x5a);
    vec![well_formed, vec![0xee; MAX_DATAGRAM * 2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_and_datagrams_are_refused_and_counted_while_a_healthy_room_flows() {
    let metrics = conclave_sfu::metrics_http::install_recorder().unwrap();
    let mut config = test_config();
    config.limits.max_datagram_bytes = MAX_DATAGRAM;
    let max_frame_bytes = config.limits.max_frame_bytes;
    let server = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;

    // The healthy room: Alice and Bob talk both ways, all along.
    let alice = Arc::new(member(&server, "alice").await);
    let bob = Arc::new(member(&server, "bob").await);
    let room = TestRoom::new();
    let ja = alice.open_room(&room.auth(), &room.routing).await.unwrap();
    let jb = bob.join_room(&room.auth(), &room.routing).await.unwrap();
    let handle = handle_of(&ja);

    // Mallory is a registered member of the same room (a participant gone rogue).
    let mut mallory = RawControl::connect(&server).await;
    let user = User::new("mallory");
    let device = user.device();
    mallory.register(&user, &device).await;
    let join_signature = room
        .auth()
        .sign_join(&mallory.binding, &mallory.challenge)
        .unwrap()
        .to_vec();
    let joined = mallory
        .call(
            3,
            Request::JoinRoom(v1::JoinRoom {
                routing_id: room.routing.as_bytes().to_vec(),
                epoch: 1,
                join_signature,
            }),
        )
        .await;
    let response::Result::RoomJoined(joined) = joined else {
        panic!("expected RoomJoined, got {joined:?}");
    };
    assert_eq!(handle_of(&joined), handle);

    let to_bob = Flow::start("alice to bob", &alice, &bob, handle, 1, slot_of(&ja));
    let to_alice = Flow::start("bob to alice", &bob, &alice, handle, 2, slot_of(&jb));
    let flows = [&to_bob, &to_alice];
    assert_flowing(&flows, "start").await;

    // (a) Undecodable frame bodies behind valid length prefixes: each gets BAD_REQUEST
    // for request id 0 (there is no id to echo), and the connection stays usable.
    let before = malformed_frames(&metrics);
    for body in [&[0xff; 8][..], &[0x00, 0x01], &[0x0a, 0x05, 0x01]] {
        let mut bytes = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        mallory.write(&bytes).await;
        let r = mallory.response().await;
        assert_eq!(r.request_id, 0, "{r:?}");
        let Some(response::Result::Error(e)) = r.result else {
            panic!("expected an error, got {r:?}");
        };
        assert_eq!(e.code, ErrorCode::BadRequest as i32, "{e:?}");
    }
    assert_eq!(malformed_frames(&metrics), before + 3);
    // A frame that decodes but carries no request is refused under its own id.
    mallory
        .write(
            &frame::encode(&v1::ClientFrame {
                request_id: 41,
                request: None,
            })
            .unwrap(),
        )
        .await;
    let r = mallory.response().await;
    assert_eq!(r.request_id, 41);
    assert!(
        matches!(&r.result, Some(response::Result::Error(e)) if e.code == ErrorCode::BadRequest as i32),
        "{r:?}"
    );
    // A zero-length frame leaves the stream in step (its body is the empty message, a
    // frame without a request): refused like an undecodable frame, not a framing
    // violation.
    let before = malformed_frames(&metrics);
    mallory.write(&[0, 0, 0, 0]).await;
    let r = mallory.response().await;
    assert_eq!(r.request_id, 0, "{r:?}");
    assert!(
        matches!(&r.result, Some(response::Result::Error(e)) if e.code == ErrorCode::BadRequest as i32),
        "{r:?}"
    );
    assert_eq!(malformed_frames(&metrics), before + 1);
    let time = mallory.call(42, Request::GetTime(v1::GetTime {})).await;
    assert!(matches!(time, response::Result::ServerTime(_)), "{time:?}");
    assert_flowing(&flows, "undecodable frames").await;

    // (c) Malformed and oversize datagrams naming the room are dropped and counted.
    let (malformed_before, oversize_before) = (
        dropped(&metrics, "malformed"),
        dropped(&metrics, "oversize"),
    );
    let malformed = malformed_datagrams(handle);
    let oversize = oversize_datagrams(handle);
    let path_max = mallory.conn.max_datagram_size().unwrap();
    assert!(
        oversize.iter().all(|d| d.len() <= path_max),
        "the QUIC path ({path_max} bytes) must carry the oversize datagrams to the server"
    );
    const ROUNDS: u64 = 5;
    for _ in 0..ROUNDS {
        for d in malformed.iter().chain(&oversize) {
            mallory.send_datagram(d.clone());
        }
    }
    let expect_malformed = malformed_before + ROUNDS * malformed.len() as u64;
    let expect_oversize = oversize_before + ROUNDS * oversize.len() as u64;
    let m = wait_for_count("malformed drops", expect_malformed, || {
        dropped(&metrics, "malformed")
    })
    .await;
    let o = wait_for_count("oversize drops", expect_oversize, || {
        dropped(&metrics, "oversize")
    })
    .await;
    assert_eq!(
        (m, o),
        (expect_malformed, expect_oversize),
        "every hostile datagram is counted once, under its reason"
    );
    assert_flowing(&flows, "hostile datagrams").await;

    // (b) A length prefix above max_frame_bytes breaks the framing for good: the
    // server says why, finishes its stream and closes the connection.
    let before = malformed_frames(&metrics);
    let too_long = u32::try_from(max_frame_bytes + 1).unwrap().to_be_bytes();
    mallory.write(&too_long).await;
    let r = mallory.response().await;
    assert_eq!(r.request_id, 0);
    let Some(response::Result::Error(e)) = r.result else {
        panic!("expected an error, got {r:?}");
    };
    assert_eq!(e.code, ErrorCode::BadRequest as i32, "{e:?}");
    assert!(e.message.contains("exceeds"), "{e:?}");
    assert!(
        mallory.next_frame().await.is_none(),
        "the server finishes its side of the control stream"
    );
    let closed = tokio::time::timeout(WAIT, mallory.conn.closed())
        .await
        .expect("the server closes the connection in bounded time");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            close.error_code,
            quinn::VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
            "{close:?}"
        ),
        other => panic!("expected an application close, got {other:?}"),
    }
    assert_eq!(malformed_frames(&metrics), before + 1);
    assert_flowing(&flows, "the oversized frame").await;

    // The healthy room got every datagram, and only those.
    to_bob.finish().await;
    to_alice.finish().await;
    assert_eq!(
        dropped(&metrics, "malformed"),
        expect_malformed,
        "no healthy datagram was ever counted as malformed"
    );
}
