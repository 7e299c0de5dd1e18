//! One simulated participant: a real SDK client, its sender tasks (audio and/or
//! video at a fixed frame rate, random phase) and its receiver task (decrypted frames
//! into the measurement window, epoch changes into the rekey log).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_sdk::UserId;
use conclave_sdk::client::{
    ClientError, MediaKind, MediaStats, Meeting, MeetingEvent, MeetingHandle,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::Clock;
use super::board::Stream;
use super::chat::{ChatReceived, ChatSpec, chat_loop};
use crate::payload::FrameHeader;
use crate::stats::{Counted, LatencyHistogram, ReceiverWindow, Timeline};

/// How often tasks add their counts to the timeline.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Most frames a receiver handles per batch.
const MAX_BATCH: usize = 256;

/// Most frames a removed participant's log keeps.
const MAX_AFTER_REMOVAL: usize = 100_000;

/// Epochs a participant switched to, with when.
#[derive(Debug, Default)]
pub(crate) struct EpochLog {
    latest: AtomicU64,
    log: Mutex<Vec<(u64, u64)>>,
}

impl EpochLog {
    fn record(&self, epoch: u64, at_us: u64) {
        self.latest.fetch_max(epoch, Ordering::AcqRel);
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() < 10_000 {
            log.push((epoch, at_us));
        }
    }

    /// The newest epoch this participant sends on.
    pub(crate) fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// When it first sent on an epoch above `epoch`, µs.
    pub(crate) fn first_above(&self, epoch: u64) -> Option<(u64, u64)> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(e, _)| *e > epoch)
            .copied()
    }
}

/// Commands to a receiver task.
#[derive(Debug)]
pub(crate) enum ToReceiver {
    /// Open the measurement window at this snapshot.
    Open(Vec<(u32, u64)>),
    /// Close it at this snapshot.
    Close(Vec<(u32, u64)>),
    /// This participant is being removed: log every frame it still decrypts.
    Removed,
    /// Stop and report.
    Finish,
}

/// What a receiver task measured.
#[derive(Debug, Default)]
pub(crate) struct ReceiverOutcome {
    pub(crate) window: ReceiverWindow,
    pub(crate) latency: LatencyHistogram,
    pub(crate) bytes: u64,
    /// (epoch, send time µs) of frames decrypted after `Removed`.
    pub(crate) after_removal: Vec<(u64, u64)>,
    /// Decrypted frames that were not load-test frames.
    pub(crate) foreign_frames: u64,
    pub(crate) stats: MediaStats,
    /// Load-test chat messages received (`--chat-per-minute`).
    pub(crate) chat: ChatReceived,
}

/// A media stream this participant sends.
#[derive(Debug, Clone)]
pub(crate) struct SendSpec {
    pub(crate) kind: MediaKind,
    pub(crate) fps: u32,
    pub(crate) bytes: usize,
    pub(crate) phase: Duration,
    pub(crate) stream: Arc<Stream>,
}

/// A participant in a meeting, with its running tasks.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) user: UserId,
    pub(crate) handle: MeetingHandle,
    pub(crate) epochs: Arc<EpochLog>,
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<u64>>,
    to_receiver: mpsc::UnboundedSender<ToReceiver>,
    receiver: Option<JoinHandle<ReceiverOutcome>>,
    /// Kept alive for the run (dropping the last handle would leave the meeting), and
    /// read for its network counters.
    pub(crate) client: conclave_sdk::client::Client,
}

impl Member {
    /// Starts the tasks of a participant that has just joined `meeting`.
    pub(crate) fn start(
        name: String,
        client: conclave_sdk::client::Client,
        meeting: Meeting,
        sends: Vec<SendSpec>,
        chat: Option<ChatSpec>,
        clock: Clock,
        timeline: Arc<Timeline>,
    ) -> Member {
        let handle = meeting.handle();
        let epochs = Arc::new(EpochLog::default());
        epochs.record(handle.sending_epoch().get(), clock.now_us());
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Vec<u32> = sends.iter().map(|s| s.stream.id).collect();
        let mut senders: Vec<JoinHandle<u64>> = sends
            .into_iter()
            .map(|spec| {
                tokio::spawn(send_loop(
                    handle.clone(),
                    spec,
                    Arc::clone(&stop),
                    clock,
                    Arc::clone(&timeline),
                ))
            })
            .collect();
        if let Some(spec) = chat {
            let (handle, stop) = (handle.clone(), Arc::clone(&stop));
            senders.push(tokio::spawn(async move {
                chat_loop(handle, spec, stop, clock).await;
                0
            }));
        }
        let (to_receiver, commands) = mpsc::unbounded_channel();
        let receiver = tokio::spawn(receive_loop(
            meeting,
            ReceiverWindow::new(streams.clone()),
            commands,
            Arc::clone(&epochs),
            clock,
            timeline,
        ));
        Member {
            name,
            user: client.user_id(),
            handle,
            epochs,
            stop,
            senders,
            to_receiver,
            receiver: Some(receiver),
            client,
        }
    }

    /// Opens the measurement window after `delay` (a joiner settling on its epoch).
    pub(crate) fn open_after(&self, board: Arc<super::board::Board>, delay: Duration) {
        let to_receiver = self.to_receiver.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = to_receiver.send(ToReceiver::Open(board.snapshot()));
        });
    }

    /// Sends a command to the receiver task (ignored once it has finished).
    pub(crate) fn tell(&self, command: ToReceiver) {
        let _ = self.to_receiver.send(command);
    }

    /// Stops sending; returns the ticks the senders missed (load generator behind).
    pub(crate) async fn stop_sending(&mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        let mut missed = 0;
        for task in self.senders.drain(..) {
            missed += task.await.unwrap_or(0);
        }
        missed
    }

    /// Stops the receiver and returns what it measured.
    pub(crate) async fn finish(&mut self) -> ReceiverOutcome {
        self.tell(ToReceiver::Finish);
        match self.receiver.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => ReceiverOutcome::default(),
        }
    }
}

/// Sends one stream until stopped; returns ticks missed because the task ran late.
async fn send_loop(
    handle: MeetingHandle,
    spec: SendSpec,
    stop: Arc<AtomicBool>,
    clock: Clock,
    timeline: Arc<Timeline>,
) -> u64 {
    tokio::time::sleep(spec.phase).await;
    let period = Duration::from_secs_f64(1.0 / f64::from(spec.fps.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let keyframe_every = u64::from(spec.fps.max(1)) * 2;
    let kind = u8::from(spec.kind == MediaKind::Video);
    let started = clock.now_us();
    let mut ticks = 0u64;
    let mut buf = Vec::with_capacity(spec.bytes);
    let (mut frames, mut bytes, mut flushed_at) = (0u64, 0u64, started);
    while !stop.load(Ordering::Acquire) {
        ticker.tick().await;
        if stop.load(Ordering::Acquire) {
            break;
        }
        ticks += 1;
        let seq = spec.stream.next();
        let now = clock.now_us();
        FrameHeader {
            kind,
            sender: spec.stream.id,
            seq,
            sent_us: now,
        }
        .write(spec.bytes, &mut buf);
        match handle.send_frame(spec.kind, seq % keyframe_every == 0, &buf) {
            Ok(()) => {
                spec.stream.sent(seq);
                frames += 1;
                bytes += buf.len() as u64;
            }
            Err(ClientError::MeetingEnded) => break,
            Err(e) => tracing::debug!(error = %e, "frame not sent"),
        }
        if now.saturating_sub(flushed_at) >= FLUSH_EVERY.as_micros() as u64 {
            timeline.add_sent(now, frames, bytes);
            (frames, bytes, flushed_at) = (0, 0, now);
        }
    }
    timeline.add_sent(clock.now_us(), frames, bytes);
    let elapsed = clock.now_us().saturating_sub(started);
    let due = elapsed / (period.as_micros().max(1) as u64);
    due.saturating_sub(ticks)
}

/// Reads the meeting's events until told to finish.
async fn receive_loop(
    mut meeting: Meeting,
    mut window: ReceiverWindow,
    mut commands: mpsc::UnboundedReceiver<ToReceiver>,
    epochs: Arc<EpochLog>,
    clock: Clock,
    timeline: Arc<Timeline>,
) -> ReceiverOutcome {
    let mut out = ReceiverOutcome::default();
    let mut removed = false;
    let mut ended = false;
    let mut delta = LatencyHistogram::default();
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(ToReceiver::Open(s)) => window.open(&s),
                Some(ToReceiver::Close(s)) => window.close(&s),
                Some(ToReceiver::Removed) => removed = true,
                Some(ToReceiver::Finish) | None => break,
            },
            event = meeting.next_event(), if !ended => match event {
                Some(MeetingEvent::Frame(frame)) => {
                    // Everything already queued is handled as one batch, with one
                    // clock reading (control events wait for the next call, µs).
                    batch.push(frame);
                    meeting.try_recv_frames(&mut batch, MAX_BATCH);
                    let now = clock.now_us();
                    for frame in batch.drain(..) {
                        let Some(h) = FrameHeader::read(&frame.data) else {
                            out.foreign_frames += 1;
                            continue;
                        };
                        if removed && out.after_removal.len() < MAX_AFTER_REMOVAL {
                            out.after_removal.push((frame.epoch.get(), h.sent_us));
                        }
                        let transit = i64::try_from(now).unwrap_or(i64::MAX)
                            - i64::try_from(h.sent_us).unwrap_or(i64::MAX);
                        if window.on_frame(h.sender, h.seq, transit) == Counted::Yes {
                            delta.record_us(u64::try_from(transit).unwrap_or(0));
                            frames += 1;
                            bytes += frame.data.len() as u64;
                            out.bytes += frame.data.len() as u64;
                        }
                    }
                }
                Some(MeetingEvent::EpochChanged { epoch }) => {
                    epochs.record(epoch.get(), clock.now_us());
                }
                Some(MeetingEvent::Message(m)) => out.chat.on_message(&m, clock.now_us()),
                Some(_) => {}
                None => ended = true,
            },
            _ = flush.tick() => {
                // Latencies are recorded once, into the delta, and merged here.
                out.latency.merge(&delta);
                timeline.add_received(clock.now_us(), frames, bytes, &delta);
                delta.clear();
                (frames, bytes) = (0, 0);
            }
        }
    }
    out.latency.merge(&delta);
    timeline.add_received(clock.now_us(), frames, bytes, &delta);
    out.stats = meeting.stats();
    out.window = window;
    out
}
