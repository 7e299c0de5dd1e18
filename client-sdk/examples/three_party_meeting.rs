//! A three-party meeting with the async client, over a real SFU.
//!
//! Alice starts a meeting with Bob and Carol; Bob answers with audio, Carol with video.
//! Everyone compares safety codes and exchanges SFrame-encrypted frames. Then Carol
//! leaves: the meeting rekeys to a new epoch that only Alice and Bob hold, with a new
//! safety code, and they carry on, with media and an end-to-end encrypted chat.
//!
//! Run it with an SFU started inside this process (127.0.0.1, throwaway certificate):
//!
//! ```sh
//! cargo run -p conclave-sdk --example three_party_meeting
//! ```
//!
//! or against a running `conclave-sfu`, pinning the fingerprint it prints:
//!
//! ```sh
//! cargo run -p conclave-sdk --example three_party_meeting -- --server 127.0.0.1:4433 --pin 3f1c…
//! ```
//!
//! `RUST_LOG=conclave_sdk=debug` shows what the clients do underneath.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use conclave_sdk::OsRng;
use conclave_sdk::UserId;
use conclave_sdk::client::{
    Client, ClientConfig, ClientEvent, ClientEvents, Delivery, DeviceCredentials, Invitation,
    MediaKind, Meeting, MeetingEvent,
};
use conclave_sdk::identity::UserSigningKey;
use conclave_sdk::meeting::Epoch;
use conclave_sdk::rand_core::RngCore;
use conclave_sdk::safety::SafetyWords;
use conclave_sdk::transport::ServerTrust;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::sfu::{TestSfu, quiet_config};
use conclave_testkit::{WAIT, now};

const USAGE: &str = "usage: three_party_meeting [--server HOST:PORT --pin SHA256HEX]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let sfu = match parse_args()? {
        Some((addr, trust)) => Sfu::running(addr, trust),
        None => Sfu::start().await,
    };
    let outcome = meet(&sfu).await;
    sfu.stop().await?;
    outcome
}

/// `--server ADDR --pin HEX`, or nothing for an in-process SFU.
fn parse_args() -> anyhow::Result<Option<(SocketAddr, ServerTrust)>> {
    let (mut server, mut pin) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--server" => server = Some(args.next().context(USAGE)?),
            "--pin" => pin = Some(args.next().context(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    match (server, pin) {
        (None, None) => Ok(None),
        (Some(addr), Some(pin)) => Ok(Some((
            addr.parse()
                .with_context(|| format!("bad --server {addr:?}"))?,
            ServerTrust::pinned_hex(&pin)?,
        ))),
        _ => bail!("--server and --pin go together\n{USAGE}"),
    }
}

/// The SFU the clients talk to.
struct Sfu {
    addr: SocketAddr,
    trust: ServerTrust,
    /// Set when this process runs the server.
    local: Option<TestSfu>,
}

impl Sfu {
    fn running(addr: SocketAddr, trust: ServerTrust) -> Self {
        println!("using the SFU at {addr}");
        Sfu {
            addr,
            trust,
            local: None,
        }
    }

    /// Starts an SFU on 127.0.0.1 (any free port) with an in-memory store and a
    /// development certificate in a temporary directory (the test kit's start-up);
    /// clients pin its fingerprint.
    async fn start() -> Self {
        let server = TestSfu::start_with(quiet_config(), Arc::new(MemoryStore::new())).await;
        println!(
            "SFU started on {} (certificate sha-256 {})",
            server.addr,
            server.fingerprint_hex()
        );
        Sfu {
            addr: server.addr,
            trust: server.trust.clone(),
            local: Some(server),
        }
    }

    /// Shuts the in-process server down gracefully (nothing for a running one).
    async fn stop(self) -> anyhow::Result<()> {
        if let Some(server) = self.local {
            server.stop().await?;
            println!("SFU stopped");
        }
        Ok(())
    }
}

/// One user with one device, connected.
struct Peer {
    name: &'static str,
    client: Client,
    events: ClientEvents,
}

impl Peer {
    /// Creates a user and a device, and connects it (registering both on first use).
    async fn connect(name: &'static str, run: u32, sfu: &Sfu) -> anyhow::Result<Self> {
        // A real app creates the user key once and stores it, with the device's
        // credentials (see `DeviceCredentials`). The username is made unique per run
        // because a server remembers which identity key owns a username.
        let user_key = UserSigningKey::generate(&mut OsRng);
        let username = format!("{name}-{run:08x}");
        let credentials = DeviceCredentials::create(&username, &user_key, now(), &mut OsRng)?;
        let mut config = ClientConfig::new(sfu.addr, sfu.trust.clone());
        // A short-lived demo needs few one-time prekeys (the default keeps 100 on the
        // server; generating them is slow in a debug build). Stay above the server's
        // low-water mark (20 by default), or it keeps asking for more.
        config.prekey_target = 30;
        let (client, events) = tokio::time::timeout(WAIT, Client::connect(config, credentials))
            .await
            .context("connecting took too long")??;
        println!("{name:>5}: connected as {username}");
        Ok(Peer {
            name,
            client,
            events,
        })
    }

    /// Waits for the next invitation, printing other client events.
    async fn invitation(&mut self) -> anyhow::Result<Invitation> {
        let name = self.name;
        let wait = async {
            loop {
                match self.events.recv().await.context("client closed")? {
                    ClientEvent::Invited(invitation) => return anyhow::Ok(invitation),
                    ClientEvent::UserPinned(user) => {
                        println!(
                            "{name:>5}: pinned the identity key of user {}",
                            user.user_id
                        );
                    }
                    other => println!("{name:>5}: {other:?}"),
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .context("no invitation arrived")?
    }
}

/// A participant's view of the meeting.
struct Seat {
    name: &'static str,
    meeting: Meeting,
    names: Rc<Names>,
}

/// Display names by user id, for printing.
struct Names(HashMap<UserId, &'static str>);

impl Names {
    fn of(&self, user: &UserId) -> &'static str {
        self.0.get(user).copied().unwrap_or("someone else")
    }
}

async fn meet(sfu: &Sfu) -> anyhow::Result<()> {
    use MediaKind::{Audio, Video};
    let run = OsRng.next_u32();
    let (alice, mut bob, mut carol) = tokio::try_join!(
        Peer::connect("alice", run, sfu),
        Peer::connect("bob", run, sfu),
        Peer::connect("carol", run, sfu),
    )?;
    let names = Rc::new(Names(
        [&alice, &bob, &carol]
            .iter()
            .map(|p| (p.client.user_id(), p.name))
            .collect(),
    ));

    println!("\n== Alice starts a meeting with Bob and Carol (she sends audio and video)");
    let (meeting, report) = alice
        .client
        .start_meeting(
            &[bob.client.user_id(), carol.client.user_id()],
            &[Audio, Video],
        )
        .await?;
    println!(
        "alice: invited {} devices, refused {}",
        report.invited.len(),
        report.refused.len()
    );
    for refused in &report.refused {
        println!(
            "alice: refused a device of {}: {}",
            refused.user_id, refused.reason
        );
    }
    let mut a = Seat {
        name: "alice",
        meeting,
        names: Rc::clone(&names),
    };

    let invitation = bob.invitation().await?;
    println!(
        "  bob: invited by {} ({:?}), {} participants; accepting with audio",
        names.of(&invitation.from.user_id),
        invitation.media_kinds,
        invitation.participants.len()
    );
    let mut b = Seat {
        name: "bob",
        meeting: bob.client.accept(&invitation, &[Audio]).await?,
        names: Rc::clone(&names),
    };
    let invitation = carol.invitation().await?;
    println!("carol: invited; accepting with video");
    let mut c = Seat {
        name: "carol",
        meeting: carol.client.accept(&invitation, &[Video]).await?,
        names: Rc::clone(&names),
    };

    // The key leader hears each answer, with the media that device will send.
    let mut answers = 0;
    while answers < 2 {
        if let MeetingEvent::Reply {
            from,
            accepted,
            media_kinds,
        } = next_event(&mut a).await?
        {
            let verb = if accepted { "accepted" } else { "rejected" };
            println!(
                "alice: {} {verb}, will send {media_kinds:?}",
                names.of(&from.user_id)
            );
            answers += 1;
        }
    }

    println!("\n== Safety codes (read aloud and compare: they must match)");
    let code = matching_safety_code(&[&a, &b, &c], None).await?;

    println!("\n== Media (sender, kind, bytes, epoch as received)");
    let mut video = b"alice video 1 ".to_vec();
    video.resize(4_000, 0x5a); // several datagrams, reassembled on receipt
    exchange(&a, Audio, b"alice audio 1", &mut [&mut b, &mut c]).await?;
    exchange(&a, Video, &video, &mut [&mut b, &mut c]).await?;
    exchange(&b, Audio, b"bob audio 1", &mut [&mut a, &mut c]).await?;
    exchange(&b, Audio, b"bob audio 2", &mut [&mut a, &mut c]).await?;
    exchange(&c, Video, b"carol video 1", &mut [&mut a, &mut b]).await?;

    println!("\n== Carol leaves; Alice (key leader) rekeys the meeting for Alice and Bob");
    let epoch = a.meeting.sending_epoch();
    c.meeting.leave().await?;
    loop {
        if let MeetingEvent::Ended { reason } = next_event(&mut c).await? {
            println!("carol: meeting ended ({reason:?}); every key is gone");
            break;
        }
    }
    match c.meeting.send_frame(Video, false, b"too late") {
        Err(e) => println!("carol: sending now fails: {e}"),
        Ok(()) => bail!("carol could still send after leaving"),
    }
    wait_for_epoch_above(&mut a, epoch).await?;
    wait_for_epoch_above(&mut b, epoch).await?;
    println!(
        "alice: participants now {:?}",
        a.meeting
            .participants()
            .iter()
            .map(|p| names.of(&p.user_id))
            .collect::<Vec<_>>()
    );
    println!("\n== New safety codes");
    matching_safety_code(&[&a, &b], Some(&code)).await?;

    println!("\n== Media on the new epoch");
    exchange(&a, Audio, b"alice audio 2", &mut [&mut b]).await?;
    exchange(&b, Audio, b"bob audio 3", &mut [&mut a]).await?;

    println!("\n== Chat (end-to-end encrypted, signed by the sending device)");
    chat(&a, "Carol had to go. Shall we go on?", &mut b).await?;
    chat(&b, "Yes, five more minutes.", &mut a).await?;

    for seat in [&a, &b] {
        let stats = seat.meeting.stats();
        println!(
            "{:>5}: sent {} frames, received {} (resends included), decryption failures {}",
            seat.name, stats.frames_sent, stats.frames_received, stats.decrypt_failures
        );
    }

    println!("\n== Closing");
    // `close` leaves every meeting the client is still in, then disconnects.
    for peer in [alice, bob, carol] {
        peer.client.close().await;
        println!("{:>5}: closed", peer.name);
    }
    Ok(())
}

/// The next meeting event (bounded wait), printing roster and epoch changes.
async fn next_event(seat: &mut Seat) -> anyhow::Result<MeetingEvent> {
    let event = tokio::time::timeout(WAIT, seat.meeting.next_event())
        .await
        .with_context(|| format!("{}: no meeting event in time", seat.name))?
        .with_context(|| format!("{}: the meeting's event stream ended", seat.name))?;
    let name = seat.name;
    match &event {
        MeetingEvent::ParticipantsChanged => {
            let now: Vec<&str> = seat
                .meeting
                .participants()
                .iter()
                .map(|p| seat.names.of(&p.user_id))
                .collect();
            println!("{name:>5}: participants changed: {now:?}");
        }
        MeetingEvent::EpochChanged { epoch } => {
            println!("{name:>5}: now sending on epoch {epoch}");
        }
        _ => {}
    }
    Ok(event)
}

/// Waits until `seat` sends on an epoch above `epoch`.
async fn wait_for_epoch_above(seat: &mut Seat, epoch: Epoch) -> anyhow::Result<()> {
    loop {
        // Frames still in flight from the previous epoch are skipped here.
        if let MeetingEvent::EpochChanged { epoch: new } = next_event(seat).await?
            && new > epoch
        {
            return Ok(());
        }
    }
}

/// Waits until every seat shows the same safety code (and, after a rekey, one that
/// differs from `previous`), prints it and returns it.
async fn matching_safety_code(
    seats: &[&Seat],
    previous: Option<&conclave_sdk::safety::SafetyCode>,
) -> anyhow::Result<conclave_sdk::safety::SafetyCode> {
    let deadline = Instant::now() + WAIT;
    loop {
        let codes: Vec<_> = seats.iter().map(|s| s.meeting.safety_code()).collect();
        if let Some(Some(first)) = codes.first()
            && codes.iter().all(|c| c.as_ref() == Some(first))
            && previous != Some(first)
        {
            let words = matching_safety_words(seats).await?;
            for seat in seats {
                println!(
                    "{:>5}: epoch {}  {words}  {first}",
                    seat.name,
                    seat.meeting.sending_epoch(),
                );
            }
            println!("       all {} match", seats.len());
            return Ok(first.clone());
        }
        if Instant::now() > deadline {
            bail!("the safety codes did not converge");
        }
        // Each device updates its code when it has switched epochs.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every seat has the same safety words for its current epoch (each device
/// commits to a nonce, then reveals it, through the meeting's room).
async fn matching_safety_words(seats: &[&Seat]) -> anyhow::Result<SafetyWords> {
    let deadline = Instant::now() + WAIT;
    loop {
        let words: Vec<_> = seats.iter().map(|s| s.meeting.safety_words()).collect();
        if let Some(Some(first)) = words.first()
            && words.iter().all(|w| w.as_ref() == Some(first))
        {
            return Ok(*first);
        }
        if Instant::now() > deadline {
            bail!("the safety words did not converge");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends one frame from `from` until every seat in `to` received it, and prints each
/// receipt. Media is unreliable (datagrams) and a join takes a moment to settle, so the
/// frame is re-sent after each round of reading (up to 50 ms per waiting receiver),
/// within a bound; receivers skip the extra copies.
async fn exchange(
    from: &Seat,
    kind: MediaKind,
    payload: &[u8],
    to: &mut [&mut Seat],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut waiting: Vec<usize> = (0..to.len()).collect();
    while !waiting.is_empty() {
        if Instant::now() > deadline {
            bail!("{}'s {kind:?} frame did not arrive", from.name);
        }
        match from.meeting.send_frame(kind, false, payload) {
            Ok(()) => {}
            Err(e) if e.is_transient() => {} // e.g. not joined to the room yet
            Err(e) => return Err(e.into()),
        }
        let mut still = Vec::new();
        for i in waiting {
            let Some(seat) = to.get_mut(i) else { continue };
            if !receive(seat, payload).await? {
                still.push(i);
            }
        }
        waiting = still;
    }
    Ok(())
}

/// Sends a reliable chat message from `from` and waits until `to` reads it.
async fn chat(from: &Seat, text: &str, to: &mut Seat) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        match from
            .meeting
            .send_message(Delivery::Reliable, "chat", text.as_bytes())
            .await
        {
            Ok(()) => break,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    loop {
        if let MeetingEvent::Message(m) = next_event(to).await? {
            println!(
                "{:>5} ◀ {:<5} {}: {:?} (epoch {}, message #{})",
                to.name,
                to.names.of(&m.user_id),
                m.topic,
                String::from_utf8_lossy(&m.body),
                m.epoch,
                m.sequence
            );
            return Ok(());
        }
    }
}

/// Reads `seat`'s events for up to 50 ms; true (after printing it) once the frame
/// carrying `payload` arrived. Control events are printed, other frames skipped.
async fn receive(seat: &mut Seat, payload: &[u8]) -> anyhow::Result<bool> {
    let until = tokio::time::Instant::now() + Duration::from_millis(50);
    loop {
        let Ok(event) = tokio::time::timeout_at(until, next_event(seat)).await else {
            return Ok(false);
        };
        if let MeetingEvent::Frame(frame) = event?
            && frame.data == payload
        {
            println!(
                "{:>5} ◀ {:<5} {:?} {} bytes, epoch {}",
                seat.name,
                seat.names.of(&frame.user_id),
                frame.kind,
                frame.data.len(),
                frame.epoch
            );
            return Ok(true);
        }
    }
}
