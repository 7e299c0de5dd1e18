//! Filling meetings: participants connect at the ramp rate, leaders start their
//! meetings, invitees accept (also at the ramp rate); and single joins during churn.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conclave_sdk::UnixMillis;
use conclave_sdk::client::{
    Client, ClientError, ClientEvent, ClientEvents, DeviceCredentials, Invitation, MediaKind,
};
use conclave_sdk::identity::UserSigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tokio::task::JoinSet;

use super::board::Board;
use super::participant::{Member, SendSpec};
use super::{CHURN_BOUND, Env, MeetingSim, SimOutcome};
use crate::LoadError;

/// Longest a connect (registration, authentication, prekeys) may take.
const CONNECT_BOUND: Duration = Duration::from_secs(60);

/// A connected participant not in a meeting yet.
struct Connected {
    name: String,
    client: Client,
    events: ClientEvents,
}

fn failed(name: &str, action: &'static str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Participant {
        participant: name.to_string(),
        action,
        reason: e.to_string(),
    }
}

fn now_unix() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// Registers and connects a new user's device.
async fn connect(env: &Env, name: String) -> Result<(Connected, u64), LoadError> {
    let started = Instant::now();
    let key = UserSigningKey::generate(&mut OsRng);
    let creds = DeviceCredentials::create(&name, &key, now_unix(), &mut OsRng)
        .map_err(|e| failed(&name, "create its identity", e))?;
    let (config, first) = env.next_client_config();
    let (client, events) = tokio::time::timeout(CONNECT_BOUND, Client::connect(config, creds))
        .await
        .map_err(|_| failed(&name, "connect", "timed out"))?
        .map_err(|e| failed(&name, "connect", e))?;
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    env.placements.placed(&name, first);
    Ok((
        Connected {
            name,
            client,
            events,
        },
        us,
    ))
}

/// Waits for an invitation, then keeps draining the client's events in the
/// background (disconnects are logged).
async fn invitation(c: &mut Connected) -> Result<Invitation, LoadError> {
    let wait = async {
        while let Some(event) = c.events.recv().await {
            if let ClientEvent::Invited(i) = event {
                return Some(i);
            }
        }
        None
    };
    tokio::time::timeout(CONNECT_BOUND, wait)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| failed(&c.name, "receive its invitation", "none arrived"))
}

fn drain_events(env: &Env, name: String, mut events: ClientEvents) {
    let placements = Arc::clone(&env.placements);
    let ending = Arc::clone(&env.ending);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match &event {
                // Cluster mode: the meeting's room is on another node; the client
                // joins it there.
                ClientEvent::RoomRedirected { address, .. } => {
                    placements.redirected(&name, address);
                }
                ClientEvent::Disconnected { reason } => {
                    log_disconnect(&name, reason, ending.load(Ordering::Acquire));
                }
                _ => {}
            }
        }
    });
}

/// A participant lost its connection: a warning while the run measures, a debug
/// line once it is `ending` (then the participants and the server are being stopped).
fn log_disconnect(name: &str, reason: &dyn std::fmt::Display, ending: bool) {
    if ending {
        tracing::debug!(participant = %name, %reason, "participant disconnected (the run is ending)");
    } else {
        tracing::warn!(participant = %name, %reason, "participant disconnected");
    }
}

/// What one participant sends.
fn send_specs(
    env: &Env,
    board: &Board,
    audio: bool,
    video: bool,
    rng: &mut ChaCha20Rng,
) -> Vec<SendSpec> {
    let o = &env.options;
    let mut specs = Vec::new();
    let mut add = |kind, fps: u32, bytes| {
        let period_us = 1_000_000 / u64::from(fps.max(1));
        specs.push(SendSpec {
            kind,
            fps,
            bytes,
            phase: Duration::from_micros(rng.next_u64() % period_us.max(1)),
            stream: board.add(env.next_stream.fetch_add(1, Ordering::Relaxed)),
        });
    };
    if audio && o.audio_fps > 0 {
        add(MediaKind::Audio, o.audio_fps, o.audio_bytes);
    }
    if video {
        add(MediaKind::Video, o.video_fps, o.video_frame_bytes());
    }
    specs
}

fn kinds_of(specs: &[SendSpec]) -> Vec<MediaKind> {
    let kinds: Vec<MediaKind> = specs.iter().map(|s| s.kind).collect();
    if kinds.is_empty() {
        vec![MediaKind::Audio]
    } else {
        kinds
    }
}

/// `k` of `n` places chosen at random: `true` at the chosen ones.
fn chosen(n: usize, k: usize, rng: &mut ChaCha20Rng) -> Vec<bool> {
    let mut v = vec![false; n];
    for i in shuffled(n, rng).into_iter().take(k) {
        if let Some(x) = v.get_mut(i) {
            *x = true;
        }
    }
    v
}

/// A seeded shuffle of `0..n`.
fn shuffled(n: usize, rng: &mut ChaCha20Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = usize::try_from(rng.next_u64() % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
    v
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Connects every participant, starts every meeting and joins everyone.
pub(super) async fn fill_meetings(
    env: &Arc<Env>,
    out: &mut SimOutcome,
) -> Result<Vec<MeetingSim>, LoadError> {
    let o = Arc::clone(&env.options);
    let total = o.meetings * o.participants;
    env.progress.set_length(total as u64 * 2);
    env.progress.set_message("connecting participants");
    let mut rng = ChaCha20Rng::seed_from_u64(o.seed);

    // Connect at the ramp rate.
    let mut tasks = JoinSet::new();
    let began = Instant::now();
    for k in 0..total {
        let env = Arc::clone(env);
        let (m, i) = (k / o.participants, k % o.participants);
        let name = format!("lt-{:08x}-m{m}-p{i}", env.run_id);
        let at = began + Duration::from_secs_f64(k as f64 / o.ramp);
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let r = connect(&env, name).await;
            env.progress.inc(1);
            (k, r)
        });
    }
    let mut slots: Vec<Option<Connected>> = (0..total).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (k, r) = done.map_err(|e| LoadError::Setup(format!("connect task: {e}")))?;
        let (c, us) = r?;
        out.connect.record_us(us);
        if let Some(slot) = slots.get_mut(k) {
            *slot = Some(c);
        }
    }

    // Start every meeting, then accept at the ramp rate.
    env.progress.set_message("joining meetings");
    let mut meetings = Vec::new();
    let mut accepts = JoinSet::new();
    let began = Instant::now();
    let mut k = 0usize;
    for (index, chunk) in slots.chunks_mut(o.participants).enumerate() {
        let mut people: Vec<Connected> = chunk.iter_mut().filter_map(Option::take).collect();
        if people.is_empty() {
            continue;
        }
        let board = Arc::new(Board::default());
        let audio = chosen(people.len(), o.audio_senders(), &mut rng);
        let video = chosen(people.len(), o.video_senders, &mut rng);
        let mut specs: Vec<Vec<SendSpec>> = (0..people.len())
            .map(|i| {
                send_specs(
                    env,
                    &board,
                    audio.get(i) == Some(&true),
                    video.get(i) == Some(&true),
                    &mut rng,
                )
            })
            .collect();
        let leader = people.remove(0);
        let leader_specs = specs.remove(0);
        let invitees: Vec<_> = people.iter().map(|p| p.client.user_id()).collect();
        let t0 = Instant::now();
        let (meeting, report) = leader
            .client
            .start_meeting(&invitees, &kinds_of(&leader_specs))
            .await
            .map_err(|e| failed(&leader.name, "start its meeting", e))?;
        if !report.refused.is_empty() {
            out.problems.push(format!(
                "meeting {index}: {} devices refused at invite",
                report.refused.len()
            ));
        }
        out.join.record_us(elapsed_us(t0));
        env.progress.inc(1);
        env.joined.fetch_add(1, Ordering::Relaxed);
        drain_events(env, leader.name.clone(), leader.events);
        let leader = Member::start(
            leader.name,
            leader.client,
            meeting,
            leader_specs,
            env.chat_spec(),
            env.clock,
            Arc::clone(&env.timeline),
        );
        for (person, spec) in people.into_iter().zip(specs) {
            let env = Arc::clone(env);
            let at = began + Duration::from_secs_f64(k as f64 / o.ramp);
            k += 1;
            accepts.spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let r = accept(&env, person, spec).await;
                env.progress.inc(1);
                (index, r)
            });
        }
        meetings.push(MeetingSim {
            index,
            board,
            members: vec![leader],
            joiners: 0,
        });
    }
    while let Some(done) = accepts.join_next().await {
        let (index, r) = done.map_err(|e| LoadError::Setup(format!("accept task: {e}")))?;
        let (member, us) = r?;
        out.join.record_us(us);
        if let Some(m) = meetings.iter_mut().find(|m| m.index == index) {
            m.members.push(member);
        }
    }
    Ok(meetings)
}

/// A participant that joined: its events drained in the background, its tasks started.
fn into_member(
    env: &Env,
    c: Connected,
    meeting: conclave_sdk::client::Meeting,
    specs: Vec<SendSpec>,
) -> Member {
    drain_events(env, c.name.clone(), c.events);
    Member::start(
        c.name,
        c.client,
        meeting,
        specs,
        env.chat_spec(),
        env.clock,
        Arc::clone(&env.timeline),
    )
}

/// Waits for the invitation and accepts it; returns the member and the join time
/// (invitation received to room joined), µs.
async fn accept(
    env: &Env,
    mut c: Connected,
    specs: Vec<SendSpec>,
) -> Result<(Member, u64), LoadError> {
    let invitation = invitation(&mut c).await?;
    let t0 = Instant::now();
    let meeting = c
        .client
        .accept(&invitation, &kinds_of(&specs))
        .await
        .map_err(|e| failed(&c.name, "accept", e))?;
    let us = elapsed_us(t0);
    env.joined.fetch_add(1, Ordering::Relaxed);
    let member = into_member(env, c, meeting, specs);
    Ok((member, us))
}

/// Churn: a new participant connects and the leader invites it. Returns the time from
/// the invite to the joiner in the room, ms (`None` if it failed or timed out).
pub(super) async fn join_one(
    env: &Arc<Env>,
    m: &mut MeetingSim,
    out: &mut SimOutcome,
) -> Option<f64> {
    m.joiners += 1;
    let name = format!("lt-{:08x}-m{}-j{}", env.run_id, m.index, m.joiners);
    let mut rng =
        ChaCha20Rng::seed_from_u64(env.options.seed ^ (m.index as u64) << 32 ^ m.joiners as u64);
    let (mut c, us) = match connect(env, name).await {
        Ok(x) => x,
        Err(e) => {
            out.problems.push(e.to_string());
            return None;
        }
    };
    out.connect.record_us(us);
    let audio = (rng.next_u64() % 1_000) < (env.options.senders * 1_000.0) as u64;
    let specs = send_specs(env, &m.board, audio, false, &mut rng);
    let leader = m.members.first()?;
    let t0 = Instant::now();
    let deadline = t0 + CHURN_BOUND;
    loop {
        match leader
            .handle
            .invite(&[c.client.user_id()], &kinds_of(&specs))
            .await
        {
            Ok(_) => break,
            Err(ClientError::MeetingRefused(e)) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "invite deferred");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                out.problems.push(format!(
                    "meeting {}: invite of {} failed: {e}",
                    m.index, c.name
                ));
                return None;
            }
        }
    }
    let invitation = match tokio::time::timeout(CHURN_BOUND, invitation(&mut c)).await {
        Ok(Ok(i)) => i,
        _ => {
            out.problems
                .push(format!("meeting {}: {} got no invitation", m.index, c.name));
            return None;
        }
    };
    let meeting = match c.client.accept(&invitation, &kinds_of(&specs)).await {
        Ok(meeting) => meeting,
        Err(e) => {
            out.problems.push(format!(
                "meeting {}: {} could not accept: {e}",
                m.index, c.name
            ));
            return None;
        }
    };
    let us = elapsed_us(t0);
    out.join.record_us(us);
    let member = into_member(env, c, meeting, specs);
    member.open_after(
        Arc::clone(&m.board),
        Duration::from_millis(env.options.settle_ms),
    );
    m.members.push(member);
    Some(us as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{RUN_FILTER, captured};

    #[test]
    fn a_disconnection_warns_only_while_the_run_measures() {
        let during = captured(RUN_FILTER, || log_disconnect("p1", &"reset", false));
        assert!(during.contains("WARN") && during.contains("p1"), "{during}");
        let ending = captured(RUN_FILTER, || log_disconnect("p1", &"reset", true));
        assert!(ending.is_empty(), "{ending}");
        let debug = captured("debug", || log_disconnect("p1", &"reset", true));
        assert!(
            debug.contains("DEBUG") && debug.contains("the run is ending"),
            "{debug}"
        );
    }
}
