//! # Conclave client SDK
//!
//! Conclave is an end-to-end encrypted group-conference system. This crate is what an
//! app embeds: [`client::Client`] registers the device, keeps its prekeys stocked, seals
//! and opens the containers that carry meeting keys, drives rekeys and moves SFrame
//! media over one QUIC connection to the SFU ([`transport`]).
//!
//! The cryptography and the protocol state machines live in the sans-IO
//! [`conclave_core`] crate; this crate re-exports its modules ([`identity`],
//! [`container`], [`meeting`], [`sframe`], [`media`], [`safety`], [`time`]), so an app
//! depends on `conclave-sdk` alone. Their walk-through is the `conclave_core` crate
//! documentation and its `crypto_tour` example.
//!
//! ## Example: a meeting with the async client
//! The app supplies credentials and media, and reacts to events.
//! ```no_run
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//!
//! use conclave_sdk::client::{Client, ClientConfig, DeviceCredentials, MediaKind, MeetingEvent};
//! use conclave_sdk::identity::UserSigningKey;
//! use conclave_sdk::transport::ServerTrust;
//! use conclave_sdk::{UnixMillis, UserId};
//! use conclave_sdk::OsRng;
//!
//! # fn encode_audio() -> Vec<u8> { vec![0; 80] }
//! # fn load_encrypted(_name: &str) -> Option<Vec<u8>> { None }
//! # fn store_encrypted(_name: &str, _bytes: &[u8]) {}
//! # fn play(_from: UserId, _kind: MediaKind, _data: &[u8]) {}
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
//!     let now = UnixMillis(u64::try_from(since_epoch.as_millis())?);
//!     // Once per device; later runs read back what the app stored (encrypted).
//!     let credentials = match load_encrypted("credentials") {
//!         Some(stored) => DeviceCredentials::import(&stored, now)?,
//!         None => {
//!             let user_key = UserSigningKey::generate(&mut OsRng);
//!             DeviceCredentials::create("alice", &user_key, now, &mut OsRng)?
//!         }
//!     };
//!
//!     // Pin the certificate fingerprint that `conclave-sfu` prints at start.
//!     let trust = ServerTrust::pinned_hex(&std::env::var("CONCLAVE_SFU_SHA256")?)?;
//!     let config = ClientConfig::new("sfu.example.com:4433", trust);
//!     let (client, mut events) = Client::connect(config, credentials).await?;
//!     // One object holds the device's keys and prekeys: store it again whenever
//!     // `ClientEvent::PrekeysConsumed` arrives, and before exiting.
//!     store_encrypted("credentials", &client.export_credentials().await?);
//!     // Client events (invitations, newly pinned identity keys, reconnects) must be read.
//!     tokio::spawn(async move { while let Some(_event) = events.recv().await {} });
//!
//!     // This device becomes the key leader; every verified device of Bob is invited.
//!     let bob = UserId::from_username("bob")?;
//!     let (mut meeting, report) = client.start_meeting(&[bob], &[MediaKind::Audio]).await?;
//!     for refused in &report.refused {
//!         eprintln!("not invited: {:?} ({})", refused.device_id, refused.reason);
//!     }
//!
//!     // Media goes out from any task or thread through a handle; sending never blocks.
//!     let handle = meeting.handle();
//!     tokio::spawn(async move {
//!         let mut tick = tokio::time::interval(Duration::from_millis(20));
//!         loop {
//!             tick.tick().await;
//!             match handle.send_frame(MediaKind::Audio, false, &encode_audio()) {
//!                 Ok(()) => {}
//!                 Err(e) if e.is_transient() => {} // not in the room yet, or reconnecting
//!                 Err(_) => break,                 // the meeting ended
//!             }
//!         }
//!     });
//!
//!     // Events: roster and epoch changes first, then decrypted frames (here until
//!     // 1,000 frames arrived or the meeting ended).
//!     let mut frames = 0;
//!     while frames < 1_000 {
//!         let Some(event) = meeting.next_event().await else { break };
//!         match event {
//!             MeetingEvent::Frame(frame) => {
//!                 play(frame.user_id, frame.kind, &frame.data);
//!                 frames += 1;
//!             }
//!             MeetingEvent::Reply { from, accepted, .. } => {
//!                 println!("{:?} accepted: {accepted}", from.user_id);
//!             }
//!             MeetingEvent::ParticipantsChanged | MeetingEvent::EpochChanged { .. } => {
//!                 // Show the participants and the safety number to compare out of band.
//!                 if let Some(code) = meeting.safety_code() {
//!                     let people = meeting.participants().len();
//!                     println!("{people} participants, safety number {code}");
//!                 }
//!             }
//!             MeetingEvent::SafetyWords(words) => {
//!                 // Everyone's device took part: the words can be read aloud.
//!                 println!("safety words: {words}");
//!             }
//!             MeetingEvent::Ended { reason } => {
//!                 println!("meeting ended: {reason:?}");
//!                 break;
//!             }
//!             _ => {}
//!         }
//!     }
//!     if !meeting.is_ended() {
//!         meeting.leave().await?; // the key leader rekeys the others without this device
//!     }
//!     client.close().await;
//!     Ok(())
//! }
//! ```
//!
//! The `three_party_meeting` example runs this against a real SFU, started in-process:
//! `cargo run -p conclave-sdk --example three_party_meeting`. The integration guide is
//! `docs/sdk.md`.
#![forbid(unsafe_code)]

pub mod client;
pub mod transport;

pub use conclave_core::{
    ContainerId, DeviceId, MAX_USERNAME_BYTES, UnixMillis, UserId, container, identity, media,
    meeting, push, safety, sframe, time,
};

/// The wire formats (protobuf messages, the media-datagram header), for apps that keep
/// or inspect protocol types; most apps need none of it.
pub use conclave_proto as proto;

/// The randomness traits the SDK's constructors take (`rand_core` 0.6), re-exported so
/// an app never has to match this version itself.
pub use rand_core;

/// The operating system's random number generator, the one to pass wherever the SDK
/// asks for `&mut impl CryptoRngCore` (`DeviceCredentials::create`, `UserSigningKey::generate`).
pub use rand_core::OsRng;
