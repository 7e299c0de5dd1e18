//! Measures rekey time: from a participant's `leave()` to every remaining device
//! sending on the new epoch, with real clients and an in-process SFU on loopback.
//!
//! ```text
//! cargo run --release -p conclave-sdk --example rekey_timing -- [SIZES...] [--rounds N] [--no-prepare]
//! ```
//! Default sizes `10 100`, 5 rounds each. Every round, one participant (not the key
//! leader) leaves; the leader rekeys the others. Clients and server share this machine.
//! Each round starts on a settled meeting: the epoch's safety-words round is over and
//! the leader has wrapped its next Rekey ahead of time
//! (`ClientConfig::prepare_rekeys_after`); `--no-prepare` turns the latter off, so
//! every Rekey is wrapped when the participant leaves.
#![allow(
    clippy::print_stdout,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use conclave_sdk::client::{ClientConfig, ClientEvent, MediaKind, Meeting, MeetingEvent};
use conclave_sfu::store::MemoryStore;
use conclave_testkit::meeting::start_and_accept;
use conclave_testkit::sfu::{TestSfu, quiet_config};
use conclave_testkit::{Device, User};

/// Upper bound for a meeting's set-up and each round's rekey (100 participants share
/// two cores with the server).
const WAIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<()> {
    // Logs go to stderr (the figures are stdout's), coloured only on a terminal. The
    // default shows errors only: the warnings of a meeting torn down between sizes
    // (successors retrying a rotation) are expected. `RUST_LOG=warn` shows them.
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut sizes = Vec::new();
    let mut rounds = 5usize;
    let mut prepare = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().context("--rounds N")?.parse()?;
        } else if a == "--no-prepare" {
            prepare = false;
        } else {
            sizes.push(a.parse::<usize>().context("participant count")?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 100];
    }
    for n in sizes {
        measure(n.max(3), rounds, prepare).await?;
    }
    Ok(())
}

async fn measure(n: usize, rounds: usize, prepare: bool) -> Result<()> {
    // The server with its default timers (the test kit's start-up, no metrics port).
    // Every participant registers from 127.0.0.1: the per-address registration limit
    // (20 at once by default, security review H3) would stop the 21st.
    let mut config = quiet_config();
    config.limits.registrations_per_ip_burst = u32::MAX;
    config.limits.registrations_per_ip_per_hour = u32::MAX;
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let mut client_config = ClientConfig::new(sfu.addr, sfu.trust.clone());
    // Enough prekeys for every round's containers without waiting for replenishment.
    client_config.prekey_target = 200;
    // Setting up 100 participants on two cores can take longer than a call rings.
    client_config.ring_timeout = conclave_sdk::client::MAX_RING_TIMEOUT;
    if !prepare {
        client_config.prepare_rekeys_after = None;
    }

    // N users, one device each.
    let setup = Instant::now();
    let users: Vec<User> = (0..n).map(|i| User::new(&format!("user{i}"))).collect();
    let mut devices: Vec<Device> = Vec::with_capacity(n);
    for user in &users {
        let mut device = user.connect_with(client_config.clone()).await;
        // The first prekey upload happens during connect.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(e) = device.events.recv().await {
                if matches!(e, ClientEvent::PrekeysUploaded { .. }) {
                    break;
                }
            }
        })
        .await;
        devices.push(device);
    }
    let mut meetings = start_and_accept(&users, &mut devices, &[MediaKind::Audio]).await;
    let mut leader = meetings.remove(0);
    let mut replies = 0;
    tokio::time::timeout(WAIT, async {
        while replies < n - 1 {
            if let Some(MeetingEvent::Reply { .. }) = leader.next_event().await {
                replies += 1;
            }
        }
    })
    .await?;
    println!(
        "{n} participants: set up in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let mut times = Vec::new();
    for round in 0..rounds.min(n - 2) {
        // Each round starts on a settled meeting: the epoch's safety-words round is
        // over (it starts a second after each epoch and would share the cores with
        // the rekey) and, unless `--no-prepare`, every other device's entry of the
        // next Rekey is wrapped (the leaver's among them).
        let others = meetings.len();
        tokio::time::timeout(WAIT, async {
            while leader.safety_words().is_none()
                || (prepare && leader.prepared_rekey_devices() < others)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .context("the meeting settles")?;
        let before = leader.sending_epoch();
        let leaver = meetings.pop().context("a participant to leave")?;
        let start = Instant::now();
        leaver.leave().await?;
        let remaining: Vec<&Meeting> = std::iter::once(&leader).chain(meetings.iter()).collect();
        tokio::time::timeout(WAIT, async {
            while remaining.iter().any(|m| m.sending_epoch() <= before) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .context("every remaining device switches epoch")?;
        let took = start.elapsed();
        println!(
            "  round {}: {} remaining devices on epoch {} after {:.1} ms",
            round + 1,
            remaining.len(),
            leader.sending_epoch(),
            took.as_secs_f64() * 1e3
        );
        times.push(took);
        // Drain queued events so the queues never fill.
        while leader.try_next_control_event().is_some() {}
        for m in &mut meetings {
            while m.try_next_control_event().is_some() {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{n} participants: rekey after leave  p50 {:.1} ms  max {:.1} ms  ({} rounds)",
        ms(times[times.len() / 2]),
        ms(*times.last().unwrap()),
        times.len()
    );
    for device in devices {
        device.client.close().await;
    }
    sfu.stop().await?;
    Ok(())
}
