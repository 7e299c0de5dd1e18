//! Chat traffic (`--chat-per-minute`): every participant sends reliable in-meeting
//! messages at a steady rate during the measured phase; receivers count them, their
//! one-way latency and any that arrive out of a sender's order.
//!
//! A chat body is `u64be(sent µs) || u32be(sender tag) || u64be(sequence)`, padded to
//! `--chat-bytes`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use conclave_sdk::client::{ClientError, Delivery, MeetingHandle, ReceivedMessage};
use tokio::time::MissedTickBehavior;

use super::Clock;
use crate::stats::LatencyHistogram;

/// The topic of load-test chat messages.
pub(crate) const TOPIC: &str = "loadtest-chat";
/// Bytes of the stamp at the start of every chat body.
pub(crate) const STAMP_LEN: usize = 20;

/// Chat counts of the whole run, and whether the measured phase is on.
#[derive(Debug, Default)]
pub(crate) struct ChatTally {
    /// Chat is sent only while this is set (the measured phase).
    pub(crate) on: AtomicBool,
    pub(crate) sent: AtomicU64,
    /// Sends the SDK or the server refused (rate limits among them).
    pub(crate) failed: AtomicU64,
}

/// What one participant sends.
#[derive(Debug, Clone)]
pub(crate) struct ChatSpec {
    pub(crate) per_minute: f64,
    pub(crate) bytes: usize,
    pub(crate) phase: Duration,
    pub(crate) tag: u32,
    pub(crate) tally: Arc<ChatTally>,
}

/// Sends chat until `stop`.
pub(crate) async fn chat_loop(
    handle: MeetingHandle,
    spec: ChatSpec,
    stop: Arc<AtomicBool>,
    clock: Clock,
) {
    tokio::time::sleep(spec.phase).await;
    let period = Duration::from_secs_f64(60.0 / spec.per_minute);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq = 0u64;
    let mut body = vec![0u8; spec.bytes.max(STAMP_LEN)];
    while !stop.load(Ordering::Acquire) {
        ticker.tick().await;
        if stop.load(Ordering::Acquire) {
            break;
        }
        if !spec.tally.on.load(Ordering::Acquire) {
            continue;
        }
        let stamp = [
            &clock.now_us().to_be_bytes()[..],
            &spec.tag.to_be_bytes(),
            &seq.to_be_bytes(),
        ]
        .concat();
        if let Some(head) = body.get_mut(..STAMP_LEN) {
            head.copy_from_slice(&stamp);
        }
        seq += 1;
        match handle.send_message(Delivery::Reliable, TOPIC, &body).await {
            Ok(()) => spec.tally.sent.fetch_add(1, Ordering::Relaxed),
            Err(ClientError::MeetingEnded) => break,
            Err(e) => {
                tracing::debug!(error = %e, "chat message not sent");
                spec.tally.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A receiver's chat counts.
#[derive(Debug, Default)]
pub(crate) struct ChatReceived {
    pub(crate) received: u64,
    pub(crate) out_of_order: u64,
    pub(crate) latency: LatencyHistogram,
    last: HashMap<u32, u64>,
}

impl ChatReceived {
    /// Counts `m` if it is load-test chat; `now_us` on the run's clock.
    pub(crate) fn on_message(&mut self, m: &ReceivedMessage, now_us: u64) {
        if m.topic != TOPIC {
            return;
        }
        let Some(stamp) = m.body.get(..STAMP_LEN) else {
            return;
        };
        let num = |range: std::ops::Range<usize>| {
            stamp
                .get(range)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let (Some(sent_us), Some(seq)) = (num(0..8), num(12..20)) else {
            return;
        };
        let tag = stamp
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes);
        self.received += 1;
        self.latency.record_us(now_us.saturating_sub(sent_us));
        if self.last.get(&tag).is_some_and(|&last| seq <= last) {
            self.out_of_order += 1;
        }
        self.last.insert(tag, seq);
    }
}
