//! The client's receive path, isolated: CPU of one receiving SDK client per received
//! audio frame, from the UDP socket to the app (QUIC receive and ACKs, datagram parse,
//! reassembly, SFrame decrypt and replay check, envelope strip, delivery to the app's
//! frame stream), with real QUIC on loopback.
//!
//! ```text
//! cargo bench -p conclave-sdk --bench receive_path -- [--senders 4] [--fps 750] \
//!     [--bytes 120] [--seconds 10] [--batch]
//! ```
//!
//! One in-process SFU and `senders` SDK clients (on a runtime of their own) send
//! `bytes`-byte audio frames at `fps` each into one meeting; the measured client runs
//! alone on a current-thread runtime in its own OS thread, so every task of its receive
//! path (quinn's endpoint and connection drivers, the SDK's media reader, the app's
//! loop) runs on that thread, and that thread's CPU time (`/proc/thread-self/schedstat`)
//! divided by the frames its app received is the figure. Defaults: 4 × 750 fps = 3,000
//! frames/s, what one participant of a 61-person audio call receives. The senders,
//! the SFU and the kernel's loopback send path run on other threads and are not
//! counted. `--batch` makes the app read with `Meeting::recv_frames` (several frames
//! per wake-up) instead of one `recv_frame` per frame.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use conclave_sdk::client::{ClientConfig, MediaKind, Meeting};
use conclave_sfu::store::MemoryStore;
use conclave_testkit::sfu::{TestSfu, quiet_config};
use conclave_testkit::{Device, User};
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

struct Options {
    senders: usize,
    fps: u32,
    bytes: usize,
    seconds: f64,
    batch: bool,
}

fn options() -> Options {
    let mut o = Options {
        senders: 4,
        fps: 750,
        bytes: 120,
        seconds: 10.0,
        batch: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value after the option");
        match a.as_str() {
            "--senders" => o.senders = value().parse().expect("--senders N"),
            "--fps" => o.fps = value().parse().expect("--fps N"),
            "--bytes" => o.bytes = value().parse().expect("--bytes N"),
            "--seconds" => o.seconds = value().parse().expect("--seconds S"),
            "--batch" => o.batch = true,
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    o
}

/// This thread's CPU time (ns) and voluntary context switches (wake-ups after a park).
fn thread_cpu() -> (u64, u64) {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = schedstat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let switches = status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (ns, switches)
}

struct Measured {
    frames: u64,
    bytes: u64,
    cpu_ns: u64,
    switches: u64,
    datagrams: u64,
}

fn main() {
    let o = options();
    if std::fs::metadata("/proc/thread-self/schedstat").is_err() {
        println!("receive_path: needs Linux's /proc/thread-self/schedstat; skipped");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(o));
}

async fn run(o: Options) {
    let mut config = quiet_config();
    config.limits.registrations_per_ip_burst = u32::MAX;
    config.limits.registrations_per_ip_per_hour = u32::MAX;
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let client_config = ClientConfig::new(sfu.addr, sfu.trust.clone());

    let users: Vec<User> = (0..o.senders)
        .map(|i| User::new(&format!("user{i}")))
        .collect();
    let mut senders: Vec<Device> = Vec::new();
    for user in &users {
        senders.push(user.connect_with(client_config.clone()).await);
    }

    // The measured client: its own thread and current-thread runtime.
    let (id_tx, id_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<Duration>();
    let receiver_config = client_config.clone();
    let batch = o.batch;
    // Named, so that a profile can pick it: `perf report --comms recv-measured`.
    let receiver = std::thread::Builder::new()
        .name("recv-measured".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let user = User::new("receiver");
                let mut device = user.connect_with(receiver_config).await;
                id_tx.send(user.id()).unwrap();
                let meeting = device.accept_next(&[MediaKind::Audio]).await;
                ready_tx.send(()).unwrap();
                let measure_for = go_rx.await.unwrap();
                measure(&device, meeting, measure_for, batch).await
            })
        })
        .unwrap();

    // The first sender starts the meeting with everyone; the others accept.
    let receiver_id = id_rx.await.unwrap();
    let invitees: Vec<_> = users[1..]
        .iter()
        .map(User::id)
        .chain([receiver_id])
        .collect();
    let (leader, others) = senders.split_first_mut().unwrap();
    let (first, report) = leader
        .client
        .start_meeting(&invitees, &[MediaKind::Audio])
        .await
        .unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let mut meetings = vec![first];
    for device in others {
        meetings.push(device.accept_next(&[MediaKind::Audio]).await);
    }
    ready_rx.await.unwrap();
    // Let the keys settle: every participant on the same epoch.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, meeting) in meetings.iter().enumerate() {
        let handle = meeting.handle();
        let stop = Arc::clone(&stop);
        let (fps, bytes) = (o.fps, o.bytes);
        tasks.push(tokio::spawn(async move {
            // Spread the senders' phases over one period.
            let period = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
            tokio::time::sleep(period.mul_f64(i as f64 / 8.0)).await;
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let data = vec![0x5a; bytes];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                if handle.send_frame(MediaKind::Audio, false, &data).is_ok() {
                    sent += 1;
                }
            }
            sent
        }));
    }
    // Warm-up: one second of media before the measurement starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    go_tx.send(Duration::from_secs_f64(o.seconds)).unwrap();
    let m = tokio::task::spawn_blocking(move || receiver.join().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    let cpu_us = m.cpu_ns as f64 / 1_000.0;
    println!(
        "receive_path: {} senders x {} fps x {} B, {} s, app reads {}",
        o.senders,
        o.fps,
        o.bytes,
        o.seconds,
        if o.batch {
            "batches"
        } else {
            "one frame per call"
        }
    );
    println!(
        "  frames received by the app {} ({:.0}/s), datagrams {}, bytes {}, frames sent (whole run) {}",
        m.frames,
        m.frames as f64 / o.seconds,
        m.datagrams,
        m.bytes,
        sent
    );
    println!(
        "  receiving thread CPU {:.1} ms ({:.1} % of a core), wake-ups {} ({:.2} per frame)",
        cpu_us / 1_000.0,
        cpu_us / 1e4 / o.seconds,
        m.switches,
        m.switches as f64 / m.frames.max(1) as f64
    );
    println!(
        "  CPU per received frame: {:.3} us",
        cpu_us / m.frames.max(1) as f64
    );
    drop(meetings);
    drop(sfu);
}

/// The app's loop: reads frames for `measure_for`, touching each frame's bytes.
async fn measure(
    device: &Device,
    mut meeting: Meeting,
    measure_for: Duration,
    batch: bool,
) -> Measured {
    let deadline = tokio::time::sleep(measure_for);
    tokio::pin!(deadline);
    let datagrams_before = device.client.datagrams_received();
    let (cpu0, sw0) = thread_cpu();
    let (mut frames, mut bytes) = (0u64, 0u64);
    if batch {
        let mut buf = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = &mut deadline => break,
                n = meeting.recv_frames(&mut buf, 256) => {
                    if n == 0 {
                        break;
                    }
                    for f in buf.drain(..) {
                        frames += 1;
                        bytes += f.data.len() as u64;
                    }
                }
            }
        }
    } else {
        loop {
            tokio::select! {
                biased;
                () = &mut deadline => break,
                f = meeting.recv_frame() => {
                    let Some(f) = f else { break };
                    frames += 1;
                    bytes += f.data.len() as u64;
                }
            }
        }
    }
    let (cpu1, sw1) = thread_cpu();
    Measured {
        frames,
        bytes,
        cpu_ns: cpu1.saturating_sub(cpu0),
        switches: sw1.saturating_sub(sw0),
        datagrams: device.client.datagrams_received() - datagrams_before,
    }
}
