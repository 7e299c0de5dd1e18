//! The simulation: participants connect at the ramp rate, each meeting starts as soon
//! as its participants are connected, everyone joins, the measured phase runs (with
//! churn), and every participant's measurements are collected.
//!
//! Data flow: sender tasks stamp frames (stream, sequence, send time) and publish
//! their next sequence number on the meeting's [`board::Board`]; receiver tasks decrypt
//! (inside the SDK), read the stamp and fill their [`crate::stats::ReceiverWindow`] and
//! latency histogram; everyone adds to the shared [`crate::stats::Timeline`]. The
//! controller (this module) opens and closes windows at board snapshots, so expected
//! frames are exact.

mod board;
mod chat;
mod churn;
mod participant;
mod setup;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use conclave_sdk::client::ClientConfig;
use indicatif::ProgressBar;

use crate::LoadError;
use crate::options::Options;
use crate::report::{ChurnEvent, ChurnKind};
use crate::stats::{LatencyHistogram, Timeline};
use board::Board;
use churn::ChurnPlan;
use participant::{Member, ReceiverOutcome, ToReceiver};

/// How long frames in flight get after a window closes.
const DRAIN: Duration = Duration::from_millis(500);

/// Longest wait for a rekey or a join to complete.
const CHURN_BOUND: Duration = Duration::from_secs(15);

/// The run's clock: µs since the run started (one clock for senders and receivers,
/// which share the process, so one-way latency needs no clock sync).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// µs since the run started.
    pub(crate) fn now_us(self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Hooks the runner calls at phase boundaries (SFU probes).
pub(crate) trait Probe {
    /// The measured phase starts or ends: take readings.
    fn mark(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// What the simulation measured (before the report is assembled).
#[derive(Debug, Default)]
pub(crate) struct SimOutcome {
    pub(crate) measured_s: f64,
    pub(crate) frames_sent: u64,
    pub(crate) send_shortfall: u64,
    pub(crate) receivers: Vec<ReceiverOutcome>,
    pub(crate) connect: LatencyHistogram,
    pub(crate) join: LatencyHistogram,
    pub(crate) rekey: Vec<f64>,
    pub(crate) rekeys_incomplete: u64,
    pub(crate) removed_decrypted_frames: u64,
    pub(crate) churn_events: Vec<ChurnEvent>,
    /// Chat messages sent and refused in the measured phase.
    pub(crate) chat_sent: u64,
    pub(crate) chat_failed: u64,
    pub(crate) problems: Vec<String>,
    pub(crate) timeline: Option<Arc<Timeline>>,
    /// With several servers: where participants connected and moved.
    pub(crate) cluster: Option<crate::report::ClusterLoad>,
    /// UDP datagrams the participants' connections received in the measured phase
    /// (QUIC's counters; a participant that joined during it counts from its connect).
    pub(crate) udp_datagrams_received: u64,
}

/// UDP datagrams `members` received so far.
fn udp_received<'a>(members: impl Iterator<Item = &'a Member>) -> u64 {
    members
        .map(|m| m.client.network_stats().udp_datagrams_received)
        .sum()
}

/// One meeting under test.
struct MeetingSim {
    index: usize,
    board: Arc<Board>,
    /// Index 0 is the key leader (never picked for churn).
    members: Vec<Member>,
    joiners: usize,
}

/// A participant that left or was removed, and what to check about it.
struct Departed {
    member: Member,
    /// For a removal: frames on epochs ≥ this, or sent after `after_us`, must not
    /// have decrypted.
    removal: Option<(u64, u64)>,
}

/// Everything the runner shares with its helpers.
pub(crate) struct Env {
    pub(crate) options: Arc<Options>,
    pub(crate) client_config: ClientConfig,
    /// Where participants connect first, in turn (one address without a cluster).
    pub(crate) servers: Vec<std::net::SocketAddr>,
    /// Each participant's first node and the node a redirect last sent it to.
    pub(crate) placements: Arc<Placements>,
    /// Participants connected so far (their index picks their first server).
    pub(crate) next_participant: AtomicUsize,
    pub(crate) clock: Clock,
    pub(crate) timeline: Arc<Timeline>,
    pub(crate) progress: ProgressBar,
    pub(crate) joined: AtomicUsize,
    pub(crate) run_id: u32,
    pub(crate) next_stream: std::sync::atomic::AtomicU32,
    /// Set once the measurement is over: participants are being stopped, so a
    /// disconnection is expected (logged at debug level, not as a warning).
    pub(crate) ending: Arc<std::sync::atomic::AtomicBool>,
    /// Chat counts, and whether chat is on (the measured phase).
    pub(crate) chat: Arc<chat::ChatTally>,
}

impl Env {
    /// What a new participant sends as chat (`None` without `--chat-per-minute`).
    pub(crate) fn chat_spec(&self) -> Option<chat::ChatSpec> {
        let o = &self.options;
        if o.chat_per_minute <= 0.0 {
            return None;
        }
        let tag = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let period_us = (60e6 / o.chat_per_minute) as u64;
        Some(chat::ChatSpec {
            per_minute: o.chat_per_minute,
            bytes: o.chat_bytes,
            // Spread over the period, the same for the same participant every run.
            phase: Duration::from_micros(u64::from(tag).wrapping_mul(7_919_000) % period_us.max(1)),
            tag,
            tally: Arc::clone(&self.chat),
        })
    }
}

/// Where one participant connected first, and where redirects moved it.
#[derive(Debug, Clone)]
struct Placement {
    name: String,
    first: std::net::SocketAddr,
    now: String,
    redirects: u64,
}

/// Every participant's [`Placement`].
#[derive(Debug, Default)]
pub(crate) struct Placements(std::sync::Mutex<Vec<Placement>>);

impl Placements {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Placement>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that participant `name` connected first to `first`.
    pub(crate) fn placed(&self, name: &str, first: std::net::SocketAddr) {
        self.lock().push(Placement {
            name: name.to_string(),
            first,
            now: first.to_string(),
            redirects: 0,
        });
    }

    /// Records a redirect of participant `name` to `address`.
    pub(crate) fn redirected(&self, name: &str, address: &str) {
        if let Some(p) = self.lock().iter_mut().find(|p| p.name == name) {
            p.now = address.to_string();
            p.redirects += 1;
        }
    }

    /// The cluster section of the report over `servers`.
    fn load(&self, servers: &[std::net::SocketAddr]) -> crate::report::ClusterLoad {
        let placements = self.lock();
        let nodes = servers
            .iter()
            .map(|addr| {
                let address = addr.to_string();
                crate::report::NodeLoad {
                    connected_first: placements.iter().filter(|p| p.first == *addr).count(),
                    placed_last: placements.iter().filter(|p| p.now == address).count(),
                    address,
                }
            })
            .collect();
        crate::report::ClusterLoad {
            nodes,
            redirects: placements.iter().map(|p| p.redirects).sum(),
        }
    }
}

impl Env {
    /// The client configuration of the next participant, and the server it connects
    /// to first: the servers in turn, each participant knowing the others.
    pub(crate) fn next_client_config(&self) -> (ClientConfig, std::net::SocketAddr) {
        let mut config = self.client_config.clone();
        let n = self.servers.len();
        let mut first = *self
            .servers
            .first()
            .expect("run() refuses to start without a server to test");
        if n > 1 {
            let index = self
                .next_participant
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The servers from this participant's turn on, wrapping around.
            let mut turn = self.servers.iter().cycle().skip(index % n).take(n);
            if let Some(next) = turn.next() {
                first = *next;
                config.server = first.into();
            }
            config.more_servers = turn.map(ToString::to_string).collect();
        }
        (config, first)
    }
}

/// Runs the whole simulation on the current (participants') runtime.
pub(crate) async fn simulate(
    options: Arc<Options>,
    client_config: ClientConfig,
    servers: Vec<std::net::SocketAddr>,
    progress: ProgressBar,
    probe: &impl Probe,
    on_teardown: &dyn Fn(),
) -> Result<SimOutcome, LoadError> {
    let env = Arc::new(Env {
        timeline: Arc::new(Timeline::new(options.duration)),
        options,
        client_config,
        servers,
        placements: Arc::new(Placements::default()),
        next_participant: AtomicUsize::new(0),
        clock: Clock::new(),
        progress,
        joined: AtomicUsize::new(0),
        run_id: rand_core::RngCore::next_u32(&mut rand_core::OsRng),
        next_stream: std::sync::atomic::AtomicU32::new(0),
        ending: Arc::default(),
        chat: Arc::default(),
    });
    let mut out = SimOutcome {
        timeline: Some(Arc::clone(&env.timeline)),
        ..SimOutcome::default()
    };
    let mut meetings = setup::fill_meetings(&env, &mut out).await?;

    tokio::time::sleep(Duration::from_millis(env.options.settle_ms)).await;
    let start_us = env.clock.now_us();
    env.timeline.start(start_us);
    probe.mark().await;
    let udp_at_start = udp_received(meetings.iter().flat_map(|m| &m.members));
    for m in &meetings {
        let snapshot = m.board.snapshot();
        for member in &m.members {
            member.tell(ToReceiver::Open(snapshot.clone()));
        }
    }
    env.chat
        .on
        .store(true, std::sync::atomic::Ordering::Release);
    let first_snapshots: Vec<Vec<(u32, u64)>> =
        meetings.iter().map(|m| m.board.snapshot()).collect();

    let departed = measure(&env, &mut meetings, start_us, &mut out).await;

    // Close every window at one snapshot per meeting, then stop sending.
    let end_us = env.clock.now_us();
    let mut last_snapshots = Vec::new();
    for m in &meetings {
        let snapshot = m.board.snapshot();
        for member in &m.members {
            member.tell(ToReceiver::Close(snapshot.clone()));
        }
        last_snapshots.push(snapshot);
    }
    env.chat
        .on
        .store(false, std::sync::atomic::Ordering::Release);
    // Measured: from here on, disconnections and dropped events are expected.
    env.ending.store(true, std::sync::atomic::Ordering::Release);
    on_teardown();
    probe.mark().await;
    let udp_at_end = udp_received(
        meetings
            .iter()
            .flat_map(|m| &m.members)
            .chain(departed.iter().map(|d| &d.member)),
    );
    out.udp_datagrams_received = udp_at_end.saturating_sub(udp_at_start);
    out.measured_s = end_us.saturating_sub(start_us) as f64 / 1e6;
    for m in &mut meetings {
        for member in &mut m.members {
            out.send_shortfall += member.stop_sending().await;
        }
    }
    tokio::time::sleep(DRAIN).await;
    out.chat_sent = env.chat.sent.load(std::sync::atomic::Ordering::Acquire);
    out.chat_failed = env.chat.failed.load(std::sync::atomic::Ordering::Acquire);

    // Frames sent in the measured phase: every stream's advance between the snapshots.
    for (first, last) in first_snapshots.iter().zip(&last_snapshots) {
        for (stream, end) in last {
            let start = first
                .iter()
                .find(|(s, _)| s == stream)
                .map_or(0, |(_, n)| *n);
            out.frames_sent += end.saturating_sub(start);
        }
    }
    for m in &mut meetings {
        for member in &mut m.members {
            out.receivers.push(member.finish().await);
        }
    }
    for mut d in departed {
        let outcome = d.member.finish().await;
        if let Some((epoch, after_us)) = d.removal {
            let bad = outcome
                .after_removal
                .iter()
                .filter(|(e, sent)| *e >= epoch || *sent > after_us)
                .count() as u64;
            if bad > 0 {
                out.problems.push(format!(
                    "removed participant {} decrypted {bad} frames after its removal",
                    d.member.name
                ));
            }
            out.removed_decrypted_frames += bad;
        }
        out.receivers.push(outcome);
    }
    out.cluster = (env.servers.len() > 1).then(|| env.placements.load(&env.servers));
    Ok(out)
}

/// The measured phase: progress, churn, until the duration is over.
async fn measure(
    env: &Arc<Env>,
    meetings: &mut [MeetingSim],
    start_us: u64,
    out: &mut SimOutcome,
) -> Vec<Departed> {
    let duration_us = (env.options.duration * 1e6) as u64;
    let end_us = start_us.saturating_add(duration_us);
    let mut plan = ChurnPlan::new(
        env.options.churn,
        meetings.len(),
        env.options.seed,
        start_us,
    );
    let mut departed = Vec::new();
    env.progress.set_length(duration_us / 1_000_000);
    env.progress.set_position(0);
    loop {
        let now = env.clock.now_us();
        let participants: usize = meetings.iter().map(|m| m.members.len()).sum();
        env.timeline.set_participants(now, participants);
        let recent = env.timeline.recent(now);
        env.progress
            .set_position(now.saturating_sub(start_us) / 1_000_000);
        env.progress.set_message(match recent {
            Some((fps, p99)) => format!(
                "{participants} participants · {fps:.0} frames/s out · p99 {}",
                p99.map_or("n/a".into(), |p| format!("{p:.1} ms"))
            ),
            None => format!("{participants} participants · measuring"),
        });
        if now >= end_us {
            break;
        }
        if let Some((kind, meeting)) = plan.poll(now) {
            let at_s = now.saturating_sub(start_us) as f64 / 1e6;
            if let Some(m) = meetings.get_mut(meeting) {
                let event = churn_event(env, m, kind, &mut plan, out, &mut departed).await;
                if let Some(ms) = event {
                    out.churn_events.push(ChurnEvent {
                        at_s,
                        kind,
                        meeting,
                        participants_after: m.members.len(),
                        ms,
                    });
                }
            }
            continue;
        }
        let next = plan.next_at().unwrap_or(u64::MAX).min(end_us);
        let wait = next.saturating_sub(env.clock.now_us()).min(500_000);
        tokio::time::sleep(Duration::from_micros(wait.max(1_000))).await;
    }
    departed
}

/// Runs one churn event; `None` if it was skipped, `Some(ms)` otherwise (`ms` is
/// `None` when it did not complete in time).
async fn churn_event(
    env: &Arc<Env>,
    m: &mut MeetingSim,
    kind: ChurnKind,
    plan: &mut ChurnPlan,
    out: &mut SimOutcome,
    departed: &mut Vec<Departed>,
) -> Option<Option<f64>> {
    match kind {
        ChurnKind::Join => Some(setup::join_one(env, m, out).await),
        ChurnKind::Leave | ChurnKind::Remove => {
            if m.members.len() <= 2 {
                return None; // keep the leader and one participant
            }
            let pick = 1 + plan.pick(m.members.len() - 1)?;
            let mut member = m.members.remove(pick);
            // Out of the measurement first: stop its media, close its window, let
            // frames in flight land. What remains measures the rekey alone.
            out.send_shortfall += member.stop_sending().await;
            member.tell(ToReceiver::Close(m.board.snapshot()));
            tokio::time::sleep(DRAIN).await;
            let before = m
                .members
                .iter()
                .map(|p| p.epochs.latest())
                .max()
                .unwrap_or(0);
            let t0 = env.clock.now_us();
            let result = if kind == ChurnKind::Leave {
                member.handle.leave().await
            } else {
                member.tell(ToReceiver::Removed);
                let leader = m.members.first()?;
                leader.handle.remove(&[member.user]).await
            };
            if let Err(e) = result {
                out.problems
                    .push(format!("{kind:?} of {} failed: {e}", member.name));
                departed.push(Departed {
                    member,
                    removal: None,
                });
                return Some(None);
            }
            let done = wait_rekeyed(&m.members, before).await;
            let ms = match done {
                Some((epoch, at_us)) => {
                    let ms = at_us.saturating_sub(t0) as f64 / 1e3;
                    out.rekey.push(ms);
                    let removal = (kind == ChurnKind::Remove).then_some((epoch, at_us));
                    departed.push(Departed { member, removal });
                    Some(ms)
                }
                None => {
                    out.rekeys_incomplete += 1;
                    out.problems.push(format!(
                        "meeting {}: the rekey after the {kind:?} of {} did not complete within {} s",
                        m.index,
                        member.name,
                        CHURN_BOUND.as_secs()
                    ));
                    departed.push(Departed {
                        member,
                        removal: None,
                    });
                    None
                }
            };
            Some(ms)
        }
    }
}

/// Waits until every member sends on an epoch above `before`; returns the lowest new
/// epoch and when the last member switched.
async fn wait_rekeyed(members: &[Member], before: u64) -> Option<(u64, u64)> {
    let deadline = Instant::now() + CHURN_BOUND;
    loop {
        if members.iter().all(|p| p.epochs.latest() > before) {
            let firsts: Vec<(u64, u64)> = members
                .iter()
                .filter_map(|p| p.epochs.first_above(before))
                .collect();
            let epoch = firsts.iter().map(|(e, _)| *e).min()?;
            let at = firsts.iter().map(|(_, t)| *t).max()?;
            return Some((epoch, at));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
