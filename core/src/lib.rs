//! # Conclave core
//!
//! Conclave is an end-to-end encrypted group-conference system. This crate holds what a
//! client needs to keep the server blind, and what the server needs to check without
//! learning anything: identities, *secure communication containers* that carry meeting
//! keys to chosen devices, the meeting key schedule and rekey machine, SFrame media
//! encryption, media packetization and safety codes. The whole crate is **sans-IO**: no
//! sockets, no threads, no clock and no hidden randomness; its dependency tree holds no
//! async runtime or network crate, so the compiler keeps it that way. Every
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
//! reassembles them; [`push`] holds a device's Web Push keys and opens the wake-ups
//! the server sends it while it is offline. The `conclave-sdk` crate puts the QUIC
//! transport and the async client on top; the `conclave-sfu` server uses the identity,
//! meeting-id and room-proof types from here.
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
//!   [`meeting::MeetingError`], [`sframe::SframeError`], [`push::PushError`]) that says
//!   what went wrong.
//!
//! The wire formats and labels are specified in `docs/protocol.md`.
//!
//! ## Example: invite, open, send media
//! ```
//! use conclave_proto::v1::{self, container_payload::Body};
//! use conclave_core::container::{self, Recipient, ReplayCache, SealedContainer};
//! use conclave_core::identity::*;
//! use conclave_core::meeting::{Epoch, MeetingId, MeetingKey, SFRAME_SUITE};
//! use conclave_core::sframe::SframeReceiver;
//! use conclave_core::time::DAY_MS;
//! use conclave_core::{UnixMillis, UserId};
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
//! let key = MeetingKey::generate(Epoch::ZERO, &mut OsRng);
//! let mut invite = v1::ContainerPayload {
//!     body: Some(Body::MeetingInvite(v1::MeetingInvite {
//!         meeting_id: meeting_id.as_bytes().to_vec(),
//!         epoch: key.epoch().get(),
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
//! let bob_meeting_key = MeetingKey::from_slice(Epoch(received.epoch), &received.meeting_key)?;
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
//! `crypto_tour` example: `cargo run -p conclave-core --example crypto_tour`.
#![forbid(unsafe_code)]

pub mod container;
pub mod identity;
mod ids;
pub mod media;
pub mod meeting;
pub mod push;
pub mod safety;
pub mod sframe;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod time;

pub use ids::{ContainerId, DeviceId, MAX_USERNAME_BYTES, UserId};
pub use time::UnixMillis;
