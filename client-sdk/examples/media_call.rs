//! A one-to-one call with media shaped like a real app's: what to hand the SDK from an
//! Opus encoder and a video encoder, and what a receiver does with what comes back.
//!
//! Alice calls Bob (her invitation says "Alice Liddell is calling"). Each side then runs
//! two capture loops, as an app would around its encoders:
//!
//! * audio: one Opus packet every 20 ms (48 kHz, 960 samples per packet), sized as a
//!   48 kbit/s VBR encoder makes them (about 120 bytes, 90 to 150);
//! * video: 30 frames a second sized as a 600 kbit/s VP8/H.264 stream: delta frames of
//!   about 2.5 KB, a keyframe of about 15 KB every 2 s, and one at once when the other
//!   side asks for it (`MeetingEvent::KeyframeRequested`).
//!
//! The bytes are synthetic (no codec is linked here); sizes, pacing, timestamps and
//! keyframe handling are what a real pipeline does, and each frame is passed with
//! its capture time (`send_frame_at`). The receiver keeps, per sender and media kind,
//! what a jitter buffer needs: loss from sequence gaps, and the RFC 3550 interarrival
//! jitter from capture times against arrival times. A third of the way in, Bob asks
//! Alice for a keyframe, as a decoder that lost a frame would. Then Bob hangs up and Alice is told
//! she is alone (`MeetingEvent::Alone`) and ends the call.
//!
//! ```sh
//! cargo run -p conclave-sdk --example media_call
//! ```
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use conclave_sdk::client::{
    CallerProfile, Client, ClientConfig, ClientEvent, ClientEvents, DeviceCredentials, MediaFrame,
    MediaKind, MeetingEvent, MeetingHandle,
};
use conclave_sdk::identity::UserSigningKey;
use conclave_sdk::rand_core::RngCore;
use conclave_sdk::{OsRng, UnixMillis, UserId};
use conclave_sfu::store::MemoryStore;
use conclave_testkit::sfu::{TestSfu, quiet_config};
use tokio::sync::watch;

/// How long the two sides talk.
const CALL: Duration = Duration::from_secs(4);
/// How long anything else may take.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sfu = TestSfu::start_with(quiet_config(), Arc::new(MemoryStore::new())).await;
    let run = OsRng.next_u32();
    let alice_profile = CallerProfile::new("Alice Liddell")?.with_avatar("avatar:alice-01")?;
    let (alice, mut alice_events) =
        connect(&sfu, &format!("alice-{run:08x}"), Some(alice_profile)).await?;
    let (bob, mut bob_events) = connect(&sfu, &format!("bob-{run:08x}"), None).await?;
    let bob_id = UserId::from_username(&format!("bob-{run:08x}"))?;

    // Alice calls; Bob's phone rings with her name, which only he could read.
    let (mut alice_call, _) = alice
        .start_meeting(&[bob_id], &[MediaKind::Audio, MediaKind::Video])
        .await?;
    let invitation = loop {
        match tokio::time::timeout(WAIT, bob_events.recv()).await? {
            Some(ClientEvent::Invited(invitation)) => break invitation,
            Some(_) => {}
            None => bail!("Bob's client closed"),
        }
    };
    let caller = invitation
        .caller
        .as_ref()
        .map_or("someone", CallerProfile::display_name);
    println!("  bob: {caller} is calling");
    let mut bob_call = bob
        .accept(&invitation, &[MediaKind::Audio, MediaKind::Video])
        .await?;
    tokio::spawn(async move { while alice_events.recv().await.is_some() {} });
    tokio::spawn(async move { while bob_events.recv().await.is_some() {} });

    // Both sides capture and send; keyframe requests reach the video loop through a
    // watch channel that the event loop below bumps.
    let (alice_kf, alice_kf_rx) = watch::channel(0u32);
    let (bob_kf, bob_kf_rx) = watch::channel(0u32);
    let senders = [
        tokio::spawn(capture(alice_call.handle(), alice_kf_rx)),
        tokio::spawn(capture(bob_call.handle(), bob_kf_rx)),
    ];

    let started = Instant::now();
    let (mut at_alice, mut at_bob) = (Receiver::default(), Receiver::default());
    let mut asked = false;
    while started.elapsed() < CALL {
        tokio::select! {
            event = alice_call.next_event() => on_event("alice", event, &mut at_alice, &alice_kf)?,
            event = bob_call.next_event() => on_event("  bob", event, &mut at_bob, &bob_kf)?,
        }
        // A third of the way in, Bob's decoder "loses" a frame of Alice's video and asks
        // for a keyframe (so Alice's video has one more keyframe than Bob's).
        if !asked && started.elapsed() > CALL / 3 {
            if let Some(index) = at_bob.video_sender() {
                bob_call.request_keyframe(index).await?;
                println!("  bob: asked Alice's video for a keyframe");
                asked = true;
            }
        }
    }
    for s in senders {
        s.abort();
    }
    at_bob.report("  bob", "Alice");
    at_alice.report("alice", "Bob");

    // Bob hangs up; Alice is told she is alone, and ends the call.
    bob_call.leave().await?;
    tokio::time::timeout(WAIT, async {
        loop {
            match alice_call.next_event().await {
                Some(MeetingEvent::Alone) => return Ok(()),
                Some(_) => {}
                None => bail!("Alice's meeting ended unexpectedly"),
            }
        }
    })
    .await
    .context("Alice was not told she is alone")??;
    println!("alice: Bob hung up and I am alone: ending the call");
    alice_call.leave().await?;
    alice.close().await;
    bob.close().await;
    sfu.stop().await?;
    Ok(())
}

async fn connect(
    sfu: &TestSfu,
    username: &str,
    profile: Option<CallerProfile>,
) -> anyhow::Result<(Client, ClientEvents)> {
    let user_key = UserSigningKey::generate(&mut OsRng);
    let credentials = DeviceCredentials::create(username, &user_key, now()?, &mut OsRng)?;
    let mut config = ClientConfig::new(sfu.addr, sfu.trust.clone());
    config.prekey_target = 30;
    config.profile = profile;
    Ok(tokio::time::timeout(WAIT, Client::connect(config, credentials)).await??)
}

fn now() -> anyhow::Result<UnixMillis> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH)?;
    Ok(UnixMillis(u64::try_from(since.as_millis())?))
}

/// The capture side of one participant: an audio loop (20 ms Opus packets) and a video
/// loop (30 fps), each stamping its frames with the capture clock.
async fn capture(meeting: MeetingHandle, mut keyframe_asked: watch::Receiver<u32>) {
    let clock = Instant::now();
    let capture_us = move || u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
    let audio = {
        let meeting = meeting.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                // What `opus_encode` returns for 20 ms of speech at 48 kbit/s VBR.
                let packet = synthetic(90 + (OsRng.next_u32() % 61) as usize);
                send(&meeting, MediaKind::Audio, false, capture_us(), &packet);
            }
        }
    };
    let video = async move {
        let mut tick = tokio::time::interval(Duration::from_micros(33_333));
        let mut since_keyframe = u32::MAX;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Ok(()) = keyframe_asked.changed() => since_keyframe = u32::MAX,
            }
            // A keyframe every 2 s (60 frames) or when asked: what the encoder's
            // "force keyframe" produces. Delta frames in between.
            let keyframe = since_keyframe >= 60;
            since_keyframe = if keyframe { 0 } else { since_keyframe + 1 };
            let size = if keyframe {
                15_000
            } else {
                2_000 + (OsRng.next_u32() % 1_000) as usize
            };
            send(
                &meeting,
                MediaKind::Video,
                keyframe,
                capture_us(),
                &synthetic(size),
            );
        }
    };
    tokio::join!(audio, video);
}

/// Sends one encoded frame; a frame the meeting cannot take right now is skipped, as a
/// real pipeline drops a frame rather than queueing it.
fn send(meeting: &MeetingHandle, kind: MediaKind, keyframe: bool, capture_us: u64, frame: &[u8]) {
    match meeting.send_frame_at(kind, keyframe, capture_us, frame) {
        Ok(()) => {}
        Err(e) if e.is_transient() => {}
        Err(e) => eprintln!("frame not sent: {e}"),
    }
}

fn synthetic(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

fn on_event(
    who: &str,
    event: Option<MeetingEvent>,
    receiver: &mut Receiver,
    keyframe: &watch::Sender<u32>,
) -> anyhow::Result<()> {
    match event {
        Some(MeetingEvent::Frame(frame)) => receiver.on_frame(&frame),
        Some(MeetingEvent::KeyframeRequested) => {
            println!("{who}: a keyframe was asked for: the encoder makes one now");
            keyframe.send_modify(|n| *n += 1);
        }
        Some(MeetingEvent::Ended { reason }) => bail!("{who}: the call ended: {reason:?}"),
        None => bail!("{who}: the meeting's events closed"),
        Some(_) => {}
    }
    Ok(())
}

/// What a jitter buffer tracks per sender and media kind.
#[derive(Default)]
struct Stream {
    frames: u64,
    bytes: u64,
    keyframes: u64,
    /// Frames the sequence numbers say were sent but never arrived.
    lost: u64,
    last_sequence: Option<u32>,
    /// The previous frame's (capture time, arrival time), µs.
    last_times: Option<(u64, u64)>,
    /// RFC 3550 interarrival jitter, µs.
    jitter_us: f64,
}

#[derive(Default)]
struct Receiver {
    start: Option<Instant>,
    streams: HashMap<(u32, bool), Stream>,
}

impl Receiver {
    fn on_frame(&mut self, frame: &MediaFrame) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let arrival_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let video = frame.kind == MediaKind::Video;
        let s = self.streams.entry((frame.sender_index, video)).or_default();
        if let Some(last) = s.last_sequence {
            s.lost += u64::from(frame.sequence.wrapping_sub(last).saturating_sub(1));
        }
        s.last_sequence = Some(frame.sequence);
        if let Some((last_capture, last_arrival)) = s.last_times {
            // D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}); J += (|D| - J) / 16.
            let d = (arrival_us as f64 - last_arrival as f64)
                - (frame.capture_us as f64 - last_capture as f64);
            s.jitter_us += (d.abs() - s.jitter_us) / 16.0;
        }
        s.last_times = Some((frame.capture_us, arrival_us));
        s.frames += 1;
        s.bytes += frame.data.len() as u64;
        s.keyframes += u64::from(frame.keyframe);
    }

    fn video_sender(&self) -> Option<u32> {
        self.streams
            .keys()
            .find(|(_, video)| *video)
            .map(|(index, _)| *index)
    }

    fn report(&self, who: &str, from: &str) {
        for ((_, video), s) in &self.streams {
            let kind = if *video { "video" } else { "audio" };
            println!(
                "{who}: {from}'s {kind}: {} frames ({} B average, {} keyframes), {} lost by sequence, jitter {:.1} ms",
                s.frames,
                s.bytes / s.frames.max(1),
                s.keyframes,
                s.lost,
                s.jitter_us / 1000.0
            );
        }
    }
}
