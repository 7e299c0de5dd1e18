//! # Conclave client SDK
//!
//! Conclave is an end-to-end encrypted group-conference system. This crate holds what a
//! client needs to keep the server blind: identities, *secure communication containers*
//! that carry meeting keys to chosen devices, the meeting key schedule, SFrame media
//! encryption and safety codes. Everything but [`transport`] and [`client`] is
//! **sans-IO**: no sockets, no threads, no clock and no hidden randomness. Every
//! operation that needs the time takes `now` ([`UnixMillis`], normally the server's
//! master clock) and every operation that needs randomness takes an `rng`
//! (`rand_core::OsRng` in production, a seeded RNG in tests).
//!
//! ## Data flow
//! ```text
//!  UserSigningKey ─certifies─▶ DeviceIdentity ─signs─▶ SignedPrekey (one-time, P-384)
//!        │                         │                          │
//!        │ (trusted by peers:      │ certificate + prekeys    │ fetched from the directory,
//!        │  TOFU / safety code)    ▼ published in directory   ▼ verified by the sender
//!        └───────────────▶ VerifiedDevice + VerifiedPrekey = container::Recipient
//!                                                  │
//!   MeetingKey (epoch) ──in a MeetingInvite/Rekey──▶ container::seal ──▶ bytes via server
//!        │                                                              │
//!        │                                         SealedContainer::decode + open (receiver)
//!        ├─ sframe_sender(i) / sframe_base_key(i) ──▶ SFrame frames ──▶ SframeReceiver
//!        ├─ room_auth_key(routing_id) ──▶ proves room membership to the SFU
//!        ├─ commitment(meeting_id) ──▶ SafetyCode (compared by humans)
//!        └─ ratchet() ──▶ next epoch's key for a mid-meeting joiner
//! ```
//!
//! [`meeting::rekey::MeetingState`] runs a meeting's roster, key leader and rekeys as a
//! sans-IO state machine; [`media`] splits SFrame ciphertexts into datagrams and
//! reassembles them; [`transport`] is the QUIC connection to the SFU; [`client`] is
//! the async client that ties them together (see the last example below).
//!
//! ## Invariants
//! * Containers are only sealed to recipients whose certificate and prekey verified
//!   ([`container::Recipient`] can only be built from verified parts).
//! * Opening verifies the sender's certificate chain before anything else, and deletes
//!   the prekey private half only after the whole container checked out.
//! * Secrets zeroize on drop and never appear in `Debug` output; identifiers in `Debug`
//!   output are truncated to four bytes.
//! * No input bytes can make this crate panic; every failure is a typed error
//!   ([`identity::IdentityError`], [`container::ContainerError`],
//!   [`meeting::MeetingError`], [`sframe::SframeError`]) that says what went wrong.
//!
//! The wire formats and labels are specified in `docs/protocol.md`.
//!
//! ## Example: invite, open, send media
//! ```
//! use conclave_proto::v1::{self, container_payload::Body};
//! use conclave_sdk::container::{self, Recipient, ReplayCache, SealedContainer};
//! use conclave_sdk::identity::*;
//! use conclave_sdk::meeting::{MeetingId, MeetingKey, SFRAME_SUITE};
//! use conclave_sdk::sframe::SframeReceiver;
//! use conclave_sdk::time::DAY_MS;
//! use conclave_sdk::{UnixMillis, UserId};
//! use rand_core::OsRng;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = UnixMillis(1_767_225_600_000); // the server's master clock
//!
//! // Each user has a signing key; each device a certificate and one-time prekeys.
//! let alice_key = UserSigningKey::generate(&mut OsRng);
//! let alice = UserIdentity { user_id: UserId::from_username("alice")?, key: alice_key.public_key() };
//! let alice_device = DeviceIdentity::create(&alice_key, alice.user_id, now, 365 * DAY_MS, &mut OsRng)?;
//!
//! let bob_key = UserSigningKey::generate(&mut OsRng);
//! let bob = UserIdentity { user_id: UserId::from_username("bob")?, key: bob_key.public_key() };
//! let bob_device = DeviceIdentity::create(&bob_key, bob.user_id, now, 365 * DAY_MS, &mut OsRng)?;
//! let mut bob_prekeys = PrekeyPool::new(&bob_device);
//! let published = bob_prekeys.generate(&bob_device, 5, now, 30 * DAY_MS, &mut OsRng)?;
//!
//! // Alice verifies Bob's directory bundle and invites him with the epoch-0 meeting key.
//! let bob_verified = VerifiedDevice::verify(bob_device.certificate(), &bob, now)?;
//! let prekey = VerifiedPrekey::verify(&published[0], &bob_verified, now)?;
//! let meeting_id = MeetingId::generate(&alice.user_id, &alice_device.device_id(), now, 2, &mut OsRng);
//! let key = MeetingKey::generate(0, &mut OsRng);
//! let mut invite = v1::ContainerPayload {
//!     body: Some(Body::MeetingInvite(v1::MeetingInvite {
//!         meeting_id: meeting_id.as_bytes().to_vec(),
//!         epoch: key.epoch(),
//!         meeting_key: key.expose_secret().to_vec(),
//!         ..Default::default()
//!     })),
//!     ..Default::default()
//! };
//! let bytes = container::seal(
//!     &alice_device,
//!     &[Recipient::new(bob_verified, prekey)?],
//!     &invite,
//!     now,
//!     container::DEFAULT_TTL_MS,
//!     &mut OsRng,
//! )?;
//! container::zeroize_payload_secrets(&mut invite); // the key now lives only in `key`
//!
//! // Bob opens it, verifying Alice's certificate against the key he trusts for her.
//! let mut replay = ReplayCache::default();
//! let sealed = SealedContainer::decode(&bytes)?;
//! assert_eq!(sealed.claimed_sender(), alice.user_id);
//! let opened = sealed.open(&alice, &bob_device, &mut bob_prekeys, &mut replay, now)?;
//! let Some(Body::MeetingInvite(received)) = &opened.payload().body else { unreachable!() };
//! let bob_meeting_key = MeetingKey::from_slice(received.epoch, &received.meeting_key)?;
//!
//! // Alice (sender index 0) encrypts a frame; Bob decrypts it.
//! let mut sender = key.sframe_sender(0)?;
//! let frame = sender.encrypt(b"", b"opus frame")?;
//! let mut receiver = SframeReceiver::new();
//! receiver.add_key(bob_meeting_key.sframe_kid(0)?, SFRAME_SUITE, bob_meeting_key.sframe_base_key(0).as_slice())?;
//! assert_eq!(receiver.decrypt(b"", &frame)?.plaintext, b"opus frame");
//! # Ok(())
//! # }
//! ```
//!
//! A fuller walk-through (three parties, safety codes, removal and rekey) is the
//! `crypto_tour` example: `cargo run -p conclave-sdk --example crypto_tour`.
//!
//! ## Example: a meeting with the async client
//! [`client::Client`] does all of the above over the network: it registers the device,
//! keeps its prekeys stocked, seals and opens the containers, drives rekeys and moves
//! the media. The app supplies credentials and media, and reacts to events.
//! ```no_run
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//!
//! use conclave_sdk::client::{Client, ClientConfig, DeviceCredentials, MediaKind, MeetingEvent};
//! use conclave_sdk::identity::UserSigningKey;
//! use conclave_sdk::transport::ServerTrust;
//! use conclave_sdk::{UnixMillis, UserId};
//! use rand_core::OsRng;
//!
//! # fn encode_audio() -> Vec<u8> { vec![0; 80] }
//! # fn play(_from: UserId, _kind: MediaKind, _data: &[u8]) {}
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Once per device; the app stores the parts (`DeviceCredentials::restore`).
//!     let user_key = UserSigningKey::generate(&mut OsRng);
//!     let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
//!     let now = UnixMillis(u64::try_from(since_epoch.as_millis())?);
//!     let credentials = DeviceCredentials::create("alice", &user_key, now, &mut OsRng)?;
//!
//!     // Pin the certificate fingerprint that `conclave-sfu` prints at start.
//!     let trust = ServerTrust::pinned_hex(&std::env::var("CONCLAVE_SFU_SHA256")?)?;
//!     let config = ClientConfig::new("127.0.0.1:4433".parse()?, trust);
//!     let (client, mut events) = Client::connect(config, credentials).await?;
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
pub mod container;
pub mod identity;
mod ids;
pub mod media;
pub mod meeting;
pub mod safety;
pub mod sframe;
pub mod time;
pub mod transport;

pub use ids::{ContainerId, DeviceId, MAX_USERNAME_BYTES, UserId};
pub use time::UnixMillis;
