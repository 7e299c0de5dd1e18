//! Conclave for Swift, Kotlin and Python: the SDK ([`conclave_sdk`]) exported through
//! [UniFFI](https://mozilla.github.io/uniffi-rs/), so that every language runs the same
//! Rust code (containers, SFrame, rekeying, server authentication) and no app carries a
//! second crypto stack.
//!
//! # Data flow
//!
//! ```text
//!  app (Kotlin / Swift / Python)          conclave-ffi                 conclave-sdk
//!  ──────────────────────────────         ─────────────────────        ──────────────
//!  connect(options, credentials, ──────►  one tokio runtime      ───►  Client::connect
//!          ClientListener)                per process            (QUIC, directory,
//!  ClientListener.on_event  ◄──────────── pump task per client   ◄───  mailbox, rekeys)
//!  client.start_meeting / accept ──────►  Meeting object         ───►  Meeting
//!  MeetingListener.on_event/on_frames ◄── pump task per meeting  ◄───  next_event, frames
//!  meeting.send_frame(bytes) ──────────►  (no await: encrypts and hands to QUIC)
//!  client.register_push(url, keys) ────►  on the runtime         ───►  Client::register_push
//!  open_wake_up(keys, push body) ──────►  (no await, no I/O)     ───►  push::open_wake_up
//! ```
//!
//! * **Threading.** Every `async` call runs on the SDK's own multi-threaded tokio
//!   runtime ([`runtime_handle`]), whatever executor the app awaits it from (asyncio, Kotlin
//!   coroutines, Swift concurrency): the foreign future only waits for a task of that
//!   runtime. Listener methods are called from the runtime's threads, one call at a
//!   time per client or meeting, in order; they must return quickly (hand the work to
//!   the app's own queue), since the next event waits for them.
//! * **Events.** A client's events reach its [`ClientListener`]; a meeting's control
//!   events and media frames reach its [`MeetingListener`]. Frames that arrived
//!   together are handed over in one [`MeetingListener::on_frames`] call.
//! * **Secrets** cross the boundary only through the explicit export calls
//!   ([`Credentials::export`], [`UserKey::export`], [`PushKeys::export`],
//!   [`Client::export_credentials`], [`Client::export_prekeys`]); no other value,
//!   error message or `Debug` output carries one. (A push subscription's `auth`,
//!   [`PushKeys::auth_secret`], is shared with the server by design; the private key
//!   it goes with leaves only through the export.) Exported buffers are the app's to
//!   encrypt at rest. They become the language's own byte type (Python `bytes`,
//!   Kotlin `ByteArray`, Swift `Data`), which Rust cannot wipe: the SDK zeroizes its
//!   own copies, the app should drop (or overwrite, where the type allows) its copy
//!   once stored.
//! * **Identifiers** (users, devices, meetings) are lowercase hex strings of their
//!   bytes; [`user_id_for_username`] turns a username into its user id.
//! * **Errors** are one typed enum, [`ConclaveError`], whose variants say what the app
//!   can do about them; the message is for logs.
//!
//! # Unsafe code
//!
//! This is the one crate of the workspace that does not forbid `unsafe`: UniFFI's
//! generated scaffolding is `extern "C"` glue over raw buffers. The code written here
//! uses none.

uniffi::setup_scaffolding!("conclave");

mod client;
mod error;
mod identity;
mod ids;
mod meeting;
mod push;
mod runtime;
mod types;

pub use client::{
    Client, ClientListener, ClientOptions, ServerTrust, connect, stop_event_delivery,
};
pub use error::ConclaveError;
pub use identity::{Credentials, UserKey, user_id_for_username};
pub use meeting::{Meeting, MeetingListener, StartedMeeting};
pub use push::{PushKeys, WakeAction, WakeUp, open_wake_up};
pub use runtime::{runtime_handle, shutdown};
pub use types::{
    ClientEvent, EndReason, Invitation, InviteReport, MediaFrame, MediaKind, MediaStats,
    MeetingEvent, NetworkStats, Participant, PinnedUser, RefusedDevice, SafetyWords,
};

/// Sends the SDK's logs to stderr, filtered by `filter` (a `tracing` directive such as
/// `info` or `conclave_sdk=debug,warn`). Logs never contain secrets. Call it once, before
/// connecting; later calls change nothing.
///
/// # Errors
/// [`ConclaveError::InvalidArgument`] for a filter that does not parse.
#[uniffi::export]
pub fn init_logging(filter: String) -> Result<(), ConclaveError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
        ConclaveError::InvalidArgument {
            what: "log filter".to_string(),
            reason: e.to_string(),
        }
    })?;
    // Fails only when a subscriber is already installed: keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    Ok(())
}
