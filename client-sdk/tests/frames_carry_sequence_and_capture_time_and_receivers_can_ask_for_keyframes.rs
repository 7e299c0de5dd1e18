//! Media metadata for jitter buffers and lip sync: every received frame carries its
//! sender's per-stream sequence number and capture timestamp, encrypted with it; the
//! numbers go on across a rekey. A receiver can ask a sender for a video keyframe
//! through the SFU, and the sender's app hears of it.
#![allow(clippy::panic, clippy::unwrap_used)]

use conclave_sdk::client::{ClientError, MediaFrame, MediaKind, Meeting, MeetingEvent};
use conclave_sdk::meeting::Epoch;
use conclave_testkit::prelude::*;
use conclave_testkit::{ThreeParty, WAIT};

/// Sends frames of `kind` from `from`, each carrying its ordinal in the stream (from
/// `*sent`) and its capture time, until `to` receives one sent on an epoch above
/// `above`; returns it. Checks every received frame of that kind on the way.
async fn stream_until(
    from: &Meeting,
    to: &mut Meeting,
    kind: MediaKind,
    sent: &mut u32,
    above: Option<Epoch>,
) -> MediaFrame {
    tokio::time::timeout(WAIT, async {
        loop {
            let ordinal = *sent;
            let capture_us = 1_000_000 + u64::from(ordinal) * 20_000;
            let mut payload = ordinal.to_be_bytes().to_vec();
            payload.extend_from_slice(&capture_us.to_be_bytes());
            if from
                .send_frame_at(kind, false, capture_us, &payload)
                .is_ok()
            {
                *sent += 1;
            }
            let got = tokio::time::timeout(std::time::Duration::from_millis(30), async {
                loop {
                    match to.next_event().await {
                        Some(MeetingEvent::Frame(f)) if f.kind == kind => return Some(f),
                        Some(_) => {}
                        None => return None,
                    }
                }
            })
            .await;
            let Ok(Some(frame)) = got else { continue };
            let (ordinal, capture) = frame.data.split_at(4);
            let ordinal = u32::from_be_bytes(ordinal.try_into().unwrap());
            let capture = u64::from_be_bytes(capture.try_into().unwrap());
            assert_eq!(
                frame.sequence, ordinal,
                "the sequence counts this stream's frames"
            );
            assert_eq!(
                frame.capture_us, capture,
                "the capture time is the sender's"
            );
            if above.is_none_or(|e| frame.epoch > e) {
                return frame;
            }
        }
    })
    .await
    .expect("a frame arrives within the wait bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_and_capture_times_survive_a_rekey() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty {
        users: [_alice, _bob, carol],
        devices: _devices,
        meetings: [meeting_a, mut meeting_b, _meeting_c],
    } = ThreeParty::start(
        &sfu,
        ["alice", "bob", "carol"],
        &[MediaKind::Audio, MediaKind::Video],
    )
    .await;
    let (mut audio, mut video) = (0u32, 0u32);
    let first = stream_until(
        &meeting_a,
        &mut meeting_b,
        MediaKind::Audio,
        &mut audio,
        None,
    )
    .await;
    // Video is a stream of its own: its numbers start at 0 whatever audio did.
    stream_until(
        &meeting_a,
        &mut meeting_b,
        MediaKind::Video,
        &mut video,
        None,
    )
    .await;
    assert!(audio > 0 && video > 0);

    // A rekey (Carol removed): the numbers go on, under the new key.
    meeting_a.remove(&[carol.id()]).await.unwrap();
    let after = stream_until(
        &meeting_a,
        &mut meeting_b,
        MediaKind::Audio,
        &mut audio,
        Some(first.epoch),
    )
    .await;
    assert!(after.epoch > first.epoch);
    assert!(
        after.sequence > first.sequence,
        "not restarted by the rekey"
    );
    stream_until(
        &meeting_a,
        &mut meeting_b,
        MediaKind::Video,
        &mut video,
        Some(first.epoch),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_asks_a_sender_for_a_keyframe_and_the_sender_is_told() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty {
        devices: _devices,
        meetings: [mut meeting_a, mut meeting_b, meeting_c],
        ..
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Video]).await;
    // Carol has sent nothing: Bob does not know where to send a request for her.
    let carol_index = meeting_c
        .participants()
        .into_iter()
        .find(|p| p.is_me)
        .unwrap()
        .sender_index;
    let err = meeting_b.request_keyframe(carol_index).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NoFramesFrom { sender_index } if sender_index == carol_index),
        "{err}"
    );

    let mut sent = 0;
    let frame = stream_until(
        &meeting_a,
        &mut meeting_b,
        MediaKind::Video,
        &mut sent,
        None,
    )
    .await;
    meeting_b
        .request_keyframe(frame.sender_index)
        .await
        .unwrap();
    // The sender hears of the request.
    wait_meeting_event(&mut meeting_a, |e| {
        matches!(e, MeetingEvent::KeyframeRequested)
    })
    .await;
}
