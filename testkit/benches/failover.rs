//! Failover time: how long after `kill -9` of the node that owns a meeting's room the
//! meeting's media flows again, both ways.
//!
//! Three `conclave-sfu` processes (this build's binary, release profile under
//! `cargo bench`) on 127.0.0.1–3 share a throwaway PostgreSQL (as the tests start it)
//! with the default lease settings (2.5 s lease, renewed every 500 ms). Each run: two SDK
//! devices that know all three nodes meet on node `run % 3` (which then owns the room)
//! and each sends an audio frame every 20 ms. The bench records `t0`, kills the owner
//! with SIGKILL, and from the moment the process is reaped marks every frame it sends
//! as "after". A run's sample is the time from `t0` until both devices have received
//! an "after" frame: the clients noticed the silence (their idle timeout, 2.5 s), moved
//! to another node, waited out the dead owner's lease and rejoined. The killed node is
//! then restarted, and the next run kills another.
//!
//! With `--guest-elsewhere` the guest connects first to the next node instead, so its
//! primary connection survives the kill and only its rooms-only connection to the
//! owner dies: it rejoins through its primary connection.
//!
//! `cargo bench -p conclave-testkit --bench failover -- [--runs N] [--idle-ms MS]
//! [--lease-ms MS --renew-ms MS] [--guest-elsewhere]` (default: 12 runs, the SDK's and
//! the nodes' defaults, both devices on the owner).
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use conclave_sdk::client::{MediaKind, Meeting, MeetingEvent};
use conclave_testkit::User;
use conclave_testkit::cluster::open;
use conclave_testkit::process::ProcessCluster;

const SFU: &str = env!("CARGO_BIN_EXE_conclave-sfu-under-test");
/// One audio frame per 20 ms, as a voice codec sends them.
const FRAME_EVERY: Duration = Duration::from_millis(20);
/// A run that has not recovered by then counts as failed.
const GIVE_UP: Duration = Duration::from_secs(30);

fn main() {
    // `RUST_LOG=conclave_sdk=info` shows what the clients do.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let settings = settings_from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench(settings));
}

/// What a run varies: `--runs N` (default 12), `--idle-ms` (the clients'
/// `idle_timeout`; default the SDK's), `--lease-ms` and `--renew-ms` (the nodes'
/// `[cluster]` settings; default theirs), `--guest-elsewhere`. Cargo passes `--bench`
/// too; it is ignored.
struct Settings {
    runs: usize,
    idle: Option<Duration>,
    lease: Option<(u64, u64)>,
    guest_elsewhere: bool,
}

fn settings_from_args() -> Settings {
    let args: Vec<String> = std::env::args().collect();
    let number = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|n| {
                n.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{flag} takes a number"))
            })
    };
    let lease = match (number("--lease-ms"), number("--renew-ms")) {
        (Some(lease), Some(renew)) => Some((lease, renew)),
        (None, None) => None,
        _ => panic!("--lease-ms and --renew-ms go together"),
    };
    Settings {
        runs: number("--runs").map_or(12, |n| usize::try_from(n).expect("a run count")),
        idle: number("--idle-ms").map(Duration::from_millis),
        lease,
        guest_elsewhere: args.iter().any(|a| a == "--guest-elsewhere"),
    }
}

async fn bench(settings: Settings) {
    let runs = settings.runs;
    let mut cluster = ProcessCluster::start_with_lease(SFU, 3, settings.lease).await;
    println!(
        "client idle timeout: {:?}; lease, renew (ms): {:?}; guest {}",
        settings
            .idle
            .unwrap_or(conclave_sdk::transport::DEFAULT_IDLE_TIMEOUT),
        settings.lease.unwrap_or((2_500, 500)),
        if settings.guest_elsewhere {
            "connected first to another node (its room on a rooms-only connection)"
        } else {
            "on the owner too"
        }
    );
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let victim = run % 3;
        let sample = one_run(&mut cluster, run, victim, &settings).await;
        match sample {
            Some(d) => println!(
                "run {run:>2}: owner node-{} killed; media again after {d:?}",
                victim + 1
            ),
            None => {
                println!(
                    "run {run:>2}: owner node-{} killed; no media within {GIVE_UP:?}",
                    victim + 1
                );
                for node in &cluster.nodes {
                    println!("--- {} log ---\n{}", node.node_id, node.log_tail(40));
                }
            }
        }
        samples.push(sample);
        cluster.nodes[victim].restart();
        cluster.wait_for_leases(3).await;
    }
    report(&samples);
}

/// One kill; the time until media flows both ways again.
async fn one_run(
    cluster: &mut ProcessCluster,
    run: usize,
    victim: usize,
    settings: &Settings,
) -> Option<Duration> {
    let (host_user, guest_user) = (
        User::new(&format!("host{run}")),
        User::new(&format!("guest{run}")),
    );
    let config = |first: usize| {
        let mut config = cluster.client_config(first);
        if let Some(idle) = settings.idle {
            config.idle_timeout = idle;
        }
        config
    };
    let guest_first = if settings.guest_elsewhere {
        (victim + 1) % 3
    } else {
        victim
    };
    let host = host_user.connect_with(config(victim)).await;
    let mut guest = guest_user.connect_with(config(guest_first)).await;
    let (host_meeting, _) = host
        .client
        .start_meeting(&[guest_user.id()], &[MediaKind::Audio])
        .await
        .expect("start a meeting");
    let guest_meeting = guest.accept_next(&[MediaKind::Audio]).await;
    let routing = *host_meeting.id().routing_id().as_bytes();
    let store = open(&cluster.url).await;
    let owner = tokio::task::spawn_blocking(move || {
        conclave_sfu::store::ClusterStore::room_owner(&*store, &routing)
    })
    .await
    .expect("the store probe runs")
    .expect("the store answers")
    .expect("the room has an owner");
    assert_eq!(owner.0.node_id.as_str(), format!("node-{}", victim + 1));

    let after = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(AtomicUsize::new(0));
    let streams = [host_meeting, guest_meeting].map(|meeting| {
        let (after, recovered) = (Arc::clone(&after), Arc::clone(&recovered));
        tokio::spawn(stream(meeting, after, recovered))
    });
    // Media flows before the kill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    cluster.nodes[victim].kill_9();
    after.store(true, Ordering::Release);
    let mut recovered = Some(Duration::ZERO);
    for stream in streams {
        let first = stream.await.expect("a stream task");
        recovered = match (recovered, first) {
            (Some(worst), Some(at)) => Some(worst.max(at.duration_since(t0))),
            _ => None,
        };
    }
    drop((host, guest));
    recovered
}

/// Sends a frame every 20 ms (marked "after" once `after` is set) and notes when the
/// first frame marked "after" arrives from the other device; keeps sending until both
/// devices have one (`recovered` counts them), so the other side gets its frame too.
async fn stream(
    mut meeting: Meeting,
    after: Arc<AtomicBool>,
    recovered: Arc<AtomicUsize>,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + GIVE_UP;
    let mut next_send = tokio::time::Instant::now();
    let mut seq: u32 = 0;
    let mut last_error = None;
    let mut first_after = None;
    loop {
        let now = tokio::time::Instant::now();
        if first_after.is_some() && recovered.load(Ordering::Acquire) == 2 {
            return first_after;
        }
        if now >= deadline {
            if first_after.is_some() {
                return first_after;
            }
            println!(
                "  a device got no media: {:?}; last send error: {last_error:?}; epoch {:?}; \
                 participants {}",
                meeting.stats(),
                meeting.sending_epoch(),
                meeting.participants().len()
            );
            return None;
        }
        if now >= next_send {
            let phase = u8::from(after.load(Ordering::Acquire));
            let mut payload = vec![phase];
            payload.extend_from_slice(&seq.to_be_bytes());
            // Sending fails while the client is between connections; that is the gap
            // being measured.
            if let Err(e) = meeting.send_frame(MediaKind::Audio, false, &payload) {
                last_error = Some(e.to_string());
            }
            seq = seq.wrapping_add(1);
            next_send += FRAME_EVERY;
        }
        match tokio::time::timeout_at(next_send, meeting.next_event()).await {
            Ok(Some(MeetingEvent::Frame(frame)))
                if frame.data.first() == Some(&1) && first_after.is_none() =>
            {
                first_after = Some(Instant::now());
                recovered.fetch_add(1, Ordering::AcqRel);
            }
            Ok(None) => return first_after,
            Ok(Some(_)) | Err(_) => {}
        }
    }
}

fn report(samples: &[Option<Duration>]) {
    let mut ok: Vec<Duration> = samples.iter().flatten().copied().collect();
    ok.sort_unstable();
    let failed = samples.len() - ok.len();
    println!();
    println!("failover: kill -9 of a room's owner → media both ways again");
    println!(
        "runs: {}, recovered: {}, failed: {failed}",
        samples.len(),
        ok.len()
    );
    if ok.is_empty() {
        return;
    }
    let rank = |p: f64| {
        // Nearest rank.
        let i = ((p * ok.len() as f64).ceil() as usize).clamp(1, ok.len()) - 1;
        ok[i]
    };
    println!(
        "min {:.2} s | p50 {:.2} s | p90 {:.2} s | p99 {:.2} s | max {:.2} s",
        ok[0].as_secs_f64(),
        rank(0.50).as_secs_f64(),
        rank(0.90).as_secs_f64(),
        rank(0.99).as_secs_f64(),
        ok[ok.len() - 1].as_secs_f64()
    );
}
