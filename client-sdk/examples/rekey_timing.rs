//! Measures rekey time: from a participant's `leave()` to every remaining device
//! sending on the new epoch, with real clients and an in-process SFU on loopback.
//!
//! ```text
//! cargo run --release -p conclave-sdk --example rekey_timing -- [SIZES...] [--rounds N]
//! ```
//! Default sizes `10 100`, 5 rounds each. Every round, one participant (not the key
//! leader) leaves; the leader rekeys the others. Clients and server share this machine.
#![allow(
    clippy::print_stdout,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use conclave_sdk::client::{
    Client, ClientConfig, ClientEvent, DeviceCredentials, MediaKind, Meeting, MeetingEvent,
};
use conclave_sdk::identity::UserSigningKey;
use conclave_sdk::transport::ServerTrust;
use conclave_sdk::{UnixMillis, UserId};
use conclave_sfu::store::MemoryStore;
use rand_core::OsRng;

const WAIT: Duration = Duration::from_secs(120);

fn now() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let mut sizes = Vec::new();
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().context("--rounds N")?.parse()?;
        } else {
            sizes.push(a.parse::<usize>().context("participant count")?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 100];
    }
    for n in sizes {
        measure(n.max(3), rounds).await?;
    }
    Ok(())
}

async fn measure(n: usize, rounds: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = conclave_sfu::config::Config::default();
    config.metrics_listen = None;
    let (identity, _) = conclave_sfu::tls::load_or_generate_dev(dir.path())?;
    let sfu = conclave_sfu::embedded::EmbeddedSfu::start(
        "127.0.0.1:0".parse()?,
        &identity,
        config,
        Arc::new(MemoryStore::new()),
    )?;
    let addr = sfu.addr();
    let mut client_config =
        ClientConfig::new(addr, ServerTrust::PinnedSha256(identity.fingerprint_sha256));
    // Enough prekeys for every round's containers without waiting for replenishment.
    client_config.prekey_target = 200;

    // N users, one device each.
    let setup = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("user{i}");
        let key = UserSigningKey::generate(&mut OsRng);
        let creds = DeviceCredentials::create(&name, &key, now(), &mut OsRng)?;
        let (client, mut events) = Client::connect(client_config.clone(), creds).await?;
        // The first prekey upload happens during connect.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(e) = events.recv().await {
                if matches!(e, ClientEvent::PrekeysUploaded { .. }) {
                    break;
                }
            }
        })
        .await;
        clients.push((client, events, UserId::from_username(&name)?));
    }
    let invitees: Vec<UserId> = clients[1..].iter().map(|c| c.2).collect();
    let (mut leader, report) = clients[0]
        .0
        .start_meeting(&invitees, &[MediaKind::Audio])
        .await?;
    anyhow::ensure!(report.invited.len() == n - 1, "every invitee verified");
    let mut meetings: Vec<Meeting> = Vec::with_capacity(n);
    let accepts = clients[1..]
        .iter_mut()
        .map(|(client, events, _)| async move {
            let invitation = loop {
                match events.recv().await.context("client closed")? {
                    ClientEvent::Invited(i) => break i,
                    _ => continue,
                }
            };
            client
                .accept(&invitation, &[MediaKind::Audio])
                .await
                .map_err(anyhow::Error::from)
        });
    for m in futures_join(accepts).await {
        meetings.push(m?);
    }
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
    for (client, _, _) in clients {
        client.close().await;
    }
    sfu.stop().await?;
    Ok(())
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(f);
    }
    let mut out = Vec::with_capacity(set.len());
    // Poll all at once by pinning them in a join set of local futures.
    let results = futures_util_join_all(set).await;
    out.extend(results);
    out
}

async fn futures_util_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}
