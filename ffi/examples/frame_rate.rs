//! Frames per second through the Rust API: the reference for the bindings' cost at
//! the boundary (`ffi/python/bench/frame_rate.py` does exactly the same from Python).
//!
//! ```sh
//! cargo run --release -p conclave-ffi --example frame_rate -- HOST:PORT FINGERPRINT [SIZE] [RATE]
//! ```
//! Two clients in this process join one meeting on a running conclave-sfu. *Send*:
//! 20,000 `send_frame` calls in a tight loop, calls per second. *Receive*: the sender
//! sends `RATE` frames per second (default 10,000) for 3 s; the receiver counts what
//! arrives: frames per second delivered, loss, and this process's CPU time per delivered
//! frame (sending and receiving). Prints one JSON object.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use conclave_loadtest::probe::process_cpu_seconds;
use conclave_sdk::client::{
    Client, ClientConfig, ClientError, ClientEvent, DeviceCredentials, MediaKind,
};
use conclave_sdk::identity::UserSigningKey;
use conclave_sdk::transport::ServerTrust;
use conclave_sdk::{OsRng, UnixMillis};

const SENDS: u32 = 20_000;
const SECONDS: f64 = 3.0;

fn now() -> UnixMillis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixMillis(ms)
}

async fn connect(
    name: &str,
    server: &str,
    pin: &str,
) -> anyhow::Result<(Client, conclave_sdk::client::ClientEvents)> {
    let key = UserSigningKey::generate(&mut OsRng);
    let username = format!("{name}-{:x}", rand_suffix());
    let creds = DeviceCredentials::create(&username, &key, now(), &mut OsRng)?;
    let config = ClientConfig::new(server, ServerTrust::pinned_hex(pin)?);
    Ok(Client::connect(config, creds).await?)
}

fn rand_suffix() -> u64 {
    use conclave_sdk::rand_core::RngCore;
    OsRng.next_u64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, pin, rest @ ..] = args.as_slice() else {
        bail!("usage: frame_rate HOST:PORT FINGERPRINT [SIZE] [RATE]");
    };
    let size: usize = rest
        .first()
        .map_or(Ok(160), |s| s.parse())
        .context("SIZE")?;
    let rate: u64 = rest
        .get(1)
        .map_or(Ok(10_000), |s| s.parse())
        .context("RATE")?;
    let kind = if size <= 300 {
        MediaKind::Audio
    } else {
        MediaKind::Video
    };

    let (sender, _sender_events) = connect("sender", server, pin).await?;
    let (receiver, mut receiver_events) = connect("receiver", server, pin).await?;
    let (meeting, _) = sender.start_meeting(&[receiver.user_id()], &[kind]).await?;
    let invitation = loop {
        match receiver_events.recv().await.context("receiver closed")? {
            ClientEvent::Invited(i) => break i,
            _ => continue,
        }
    };
    let mut incoming = receiver.accept(&invitation, &[kind]).await?;
    let frame = vec![0u8; size];

    // Count on a task of its own, as the bindings' pump does.
    let (count_tx, count_rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut frames = Vec::new();
        let mut total = 0u64;
        loop {
            let n = incoming.recv_frames(&mut frames, 64).await;
            if n == 0 {
                break;
            }
            total += n as u64;
            frames.clear();
            let _ = count_tx.send(total);
        }
    });
    let count = || *count_rx.borrow();

    // Until the receiver's room is joined and frames arrive.
    while count() == 0 {
        match meeting.send_frame(kind, false, &frame) {
            Ok(()) | Err(ClientError::NotJoined | ClientError::SendingPaused) => {}
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = Instant::now();
    for _ in 0..SENDS {
        meeting.send_frame(kind, false, &frame)?;
    }
    let send_seconds = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = count();
    let cpu0 = process_cpu_seconds().context("no /proc CPU figures")?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = t0.elapsed().as_secs_f64();
        if elapsed >= SECONDS {
            break;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let due = (elapsed * rate as f64) as u64;
        while sent < due {
            meeting.send_frame(kind, false, &frame)?;
            sent += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = process_cpu_seconds().context("no /proc CPU figures")? - cpu0;
    let delivered = count() - before;
    #[allow(clippy::cast_precision_loss)]
    let (delivered_f, sent_f) = (delivered as f64, sent as f64);
    println!(
        "{{\"api\": \"rust\", \"frame_bytes\": {size}, \"send_calls_per_second\": {:.0}, \
         \"offered_frames_per_second\": {rate}, \"delivered_frames_per_second\": {:.0}, \
         \"loss_percent\": {:.2}, \"process_cpu_us_per_delivered_frame\": {:.2}}}",
        f64::from(SENDS) / send_seconds,
        delivered_f / SECONDS,
        100.0 * (sent_f - delivered_f) / sent_f,
        1e6 * cpu / delivered_f.max(1.0),
    );
    receiver.close().await;
    sender.close().await;
    Ok(())
}
