//! Connecting, the client's event pump, and the calls on a connected client.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use conclave_sdk::client as sdk;
use conclave_sdk::identity::{UserIdentity, UserPublicKey};
use conclave_sdk::meeting::MeetingId;
use conclave_sdk::transport::ServerTrust as SdkTrust;

use crate::ConclaveError;
use crate::identity::Credentials;
use crate::ids::{device_hex, meeting_id, user_hex, user_id, user_ids};
use crate::meeting::{Meeting, MeetingListener, StartedMeeting};
use crate::push::PushKeys;
use crate::runtime::on_runtime;
use crate::types::{ClientEvent, InviteReport, MediaKind, PinnedUser, kinds_to_sdk};

/// Invitations kept for `accept`/`reject` at most; beyond it the oldest is forgotten
/// (the SDK itself bounds what it holds; this only mirrors it for lookups).
const MAX_KEPT_INVITATIONS: usize = 256;

/// How to authenticate the server.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ServerTrust {
    /// The operating system's root certificates (production with a public CA).
    SystemRoots,
    /// CA certificates in PEM, as bytes (a private CA).
    CaPem {
        /// The PEM text.
        pem: Vec<u8>,
    },
    /// CA certificates in a PEM file.
    CaFile {
        /// The file's path.
        path: String,
    },
    /// The SHA-256 fingerprint of the server's certificate, 64 hex digits (colons and
    /// spaces allowed): what `conclave-sfu` prints with a development certificate.
    PinnedSha256 {
        /// The fingerprint.
        fingerprint: String,
    },
}

impl ServerTrust {
    fn to_sdk(&self) -> Result<SdkTrust, ConclaveError> {
        Ok(match self {
            ServerTrust::SystemRoots => SdkTrust::SystemRoots,
            ServerTrust::CaPem { pem } => SdkTrust::CaPem(pem.clone()),
            ServerTrust::CaFile { path } => SdkTrust::CaPem(std::fs::read(path).map_err(|e| {
                ConclaveError::InvalidArgument {
                    what: "CA file".to_string(),
                    reason: format!("cannot read {path}: {e}"),
                }
            })?),
            ServerTrust::PinnedSha256 { fingerprint } => SdkTrust::pinned_hex(fingerprint)?,
        })
    }
}

/// How a client connects. Only `server` and `trust` are required.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientOptions {
    /// The SFU: `host:port` or `ip:port`.
    pub server: String,
    /// How to authenticate it.
    pub trust: ServerTrust,
    /// More addresses of the same service (other cluster nodes), tried after `server`.
    #[uniffi(default = [])]
    pub more_servers: Vec<String>,
    /// The name the certificate must be valid for (default: the host of `server`).
    #[uniffi(default = None)]
    pub server_name: Option<String>,
    /// Users whose identity keys the app stored (from `ClientEvent::UserPinned`).
    #[uniffi(default = [])]
    pub pinned_users: Vec<PinnedUser>,
    /// The name shown to the people this device calls ("Alice is calling"), sealed in
    /// its invitations; the server never sees it.
    #[uniffi(default = None)]
    pub display_name: Option<String>,
    /// How long the connection may stay silent before the client reconnects, ms
    /// (default 2,500; at least 600).
    #[uniffi(default = None)]
    pub idle_timeout_ms: Option<u64>,
    /// How long a connect may take, ms (default 10,000).
    #[uniffi(default = None)]
    pub connect_timeout_ms: Option<u64>,
    /// How long this device's invitations ring before they count as unanswered, ms
    /// (default 45,000; 1,000 to 600,000).
    #[uniffi(default = None)]
    pub ring_timeout_ms: Option<u64>,
    /// Whether this device's invitations ask the server to wake offline invitees at
    /// high push urgency (what a ringing call needs on a phone). The one thing the
    /// server learns about a container from its sender: that it is probably an
    /// invitation. With `false`, invitees are woken at normal urgency, as for any
    /// other container (default `true`).
    #[uniffi(default = true)]
    pub urgent_invitations: bool,
    /// Whether, as key leader, this device wraps its next Rekey ahead of time (a
    /// second after the meeting's last change), so that a participant's departure
    /// costs no directory round trip and no key agreement. The price: the key of that
    /// next Rekey waits in memory until it is used, at most 10 minutes
    /// (`docs/security.md`, "Prepared Rekeys"). Default `true`.
    #[uniffi(default = true)]
    pub prepare_rekeys: bool,
}

impl ClientOptions {
    fn to_config(&self) -> Result<sdk::ClientConfig, ConclaveError> {
        let mut config = sdk::ClientConfig::new(self.server.as_str(), self.trust.to_sdk()?);
        config.more_servers.clone_from(&self.more_servers);
        if let Some(name) = &self.server_name {
            config.server_name.clone_from(name);
        }
        config.pinned_users = self
            .pinned_users
            .iter()
            .map(|p| {
                let key = UserPublicKey::from_bytes(&p.identity_key).map_err(|e| {
                    ConclaveError::InvalidArgument {
                        what: "pinned user key".to_string(),
                        reason: e.to_string(),
                    }
                })?;
                Ok(UserIdentity {
                    user_id: user_id(&p.user_id)?,
                    key,
                })
            })
            .collect::<Result<_, ConclaveError>>()?;
        if let Some(name) = &self.display_name {
            config.profile = Some(sdk::CallerProfile::new(name).map_err(|e| {
                ConclaveError::InvalidArgument {
                    what: "display name".to_string(),
                    reason: e.to_string(),
                }
            })?);
        }
        if let Some(ms) = self.idle_timeout_ms {
            config.idle_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.connect_timeout_ms {
            config.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.ring_timeout_ms {
            config.ring_timeout = Duration::from_millis(ms);
        }
        config.urgent_invitations = self.urgent_invitations;
        if !self.prepare_rekeys {
            config.prepare_rekeys_after = None;
        }
        Ok(config)
    }
}

/// Receives a client's events. Called from the SDK's threads, one call at a time, in
/// order: return quickly.
#[uniffi::export(with_foreign)]
pub trait ClientListener: Send + Sync {
    /// Something happened to the client (an invitation, a reconnect, ...).
    fn on_event(&self, event: ClientEvent);
}

/// Invitations received and not yet answered, by meeting.
#[derive(Default)]
struct Invitations {
    by_meeting: BTreeMap<MeetingId, (u64, sdk::Invitation)>,
    next: u64,
}

impl Invitations {
    fn insert(&mut self, invitation: sdk::Invitation) {
        self.next += 1;
        self.by_meeting
            .insert(invitation.meeting_id, (self.next, invitation));
        while self.by_meeting.len() > MAX_KEPT_INVITATIONS {
            let oldest = self
                .by_meeting
                .iter()
                .min_by_key(|(_, (n, _))| *n)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.by_meeting.remove(&id);
            }
        }
    }
}

/// A connected client: one device, its connection to the SFU and its meetings.
#[derive(uniffi::Object)]
pub struct Client {
    inner: sdk::Client,
    invitations: Arc<Mutex<Invitations>>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("device_id", &self.inner.device_id())
            .finish_non_exhaustive()
    }
}

fn lock(invitations: &Mutex<Invitations>) -> MutexGuard<'_, Invitations> {
    invitations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether listeners are still called ([`stop_event_delivery`]).
static DELIVERING: AtomicBool = AtomicBool::new(true);
/// Listener calls under way right now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// How long [`stop_event_delivery`] waits for listener calls under way.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Stops every call into the app's listeners, for good (events and frames that
/// arrive afterwards are dropped), and waits (at most 2 s) for calls already under way
/// to return. Part of [`crate::shutdown`], which an app calls at exit; on its own for
/// an app that wants the clients to go on silently. Call it without holding a lock a
/// listener takes.
#[uniffi::export]
pub fn stop_event_delivery() {
    DELIVERING.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + STOP_WAIT;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Calls `f` unless delivery was stopped, reporting a panic (an exception a listener
/// let escape) instead of ending the event pump.
pub(crate) fn call_listener(what: &str, f: impl FnOnce()) {
    // Counted before the check, so that `stop_event_delivery` either sees this call
    // or this call sees the stop.
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    if DELIVERING.load(Ordering::SeqCst) && catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("the app's {what} failed; the event was dropped");
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
}

/// Connects to the server, authenticates the device (registering it and its user on
/// first use) and starts delivering the client's events to `listener`. Invitations
/// waiting in the mailbox arrive as `ClientEvent::Invited`.
///
/// # Errors
/// [`ConclaveError::Certificate`] if the server's certificate is refused,
/// [`ConclaveError::Connection`] if it cannot be reached, [`ConclaveError::Server`] if
/// it refuses the device (`UserKeyMismatch`: the username belongs to another key).
#[uniffi::export]
pub async fn connect(
    options: ClientOptions,
    credentials: Arc<Credentials>,
    listener: Arc<dyn ClientListener>,
) -> Result<Arc<Client>, ConclaveError> {
    let config = options.to_config()?;
    let creds = credentials.to_sdk()?;
    on_runtime(async move {
        let (client, mut events) = sdk::Client::connect(config, creds).await?;
        let invitations = Arc::new(Mutex::new(Invitations::default()));
        let book = Arc::clone(&invitations);
        // Ends when the client is closed (the SDK closes the event stream).
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match &event {
                    sdk::ClientEvent::Invited(i) => lock(&book).insert(i.clone()),
                    sdk::ClientEvent::MissedCall(i) => {
                        lock(&book).by_meeting.remove(&i.meeting_id);
                    }
                    _ => {}
                }
                if let Some(event) = ClientEvent::from_sdk(&event) {
                    call_listener("client listener", || listener.on_event(event));
                }
            }
        });
        Ok(Arc::new(Client {
            inner: client,
            invitations,
        }))
    })
    .await
}

impl Client {
    fn take_invitation(&self, meeting: &str) -> Result<sdk::Invitation, ConclaveError> {
        let id = meeting_id(meeting)?;
        lock(&self.invitations)
            .by_meeting
            .remove(&id)
            .map(|(_, i)| i)
            .ok_or(ConclaveError::NoInvitation)
    }
}

#[uniffi::export]
impl Client {
    /// This client's user (hex).
    pub fn user_id(&self) -> String {
        user_hex(&self.inner.user_id())
    }

    /// This client's device (hex).
    pub fn device_id(&self) -> String {
        device_hex(&self.inner.device_id())
    }

    /// Starts a meeting as key leader, inviting every verified device of `invitees`
    /// (user ids, hex: see `user_id_for_username`). `media_kinds` is what this device
    /// will send; the meeting's events go to `listener`.
    ///
    /// # Errors
    /// [`ConclaveError::NobodyToInvite`] if no invitee has a device that verified.
    pub async fn start_meeting(
        &self,
        invitees: Vec<String>,
        media_kinds: Vec<MediaKind>,
        listener: Arc<dyn MeetingListener>,
    ) -> Result<StartedMeeting, ConclaveError> {
        let invitees = user_ids(&invitees)?;
        let client = self.inner.clone();
        on_runtime(async move {
            let (meeting, report) = client
                .start_meeting(&invitees, &kinds_to_sdk(&media_kinds))
                .await?;
            Ok(StartedMeeting {
                meeting: Meeting::start(meeting, listener),
                report: InviteReport::from(&report),
            })
        })
        .await
    }

    /// Accepts the invitation to `meeting_id` (from `ClientEvent::Invited`), telling
    /// the key leader which media this device will send, and joins the meeting.
    ///
    /// # Errors
    /// [`ConclaveError::NoInvitation`] if no such invitation is pending,
    /// [`ConclaveError::InvitationExpired`] if it lapsed.
    pub async fn accept(
        &self,
        meeting_id: String,
        media_kinds: Vec<MediaKind>,
        listener: Arc<dyn MeetingListener>,
    ) -> Result<Arc<Meeting>, ConclaveError> {
        let invitation = self.take_invitation(&meeting_id)?;
        let client = self.inner.clone();
        on_runtime(async move {
            let meeting = client
                .accept(&invitation, &kinds_to_sdk(&media_kinds))
                .await?;
            Ok(Meeting::start(meeting, listener))
        })
        .await
    }

    /// Rejects the invitation to `meeting_id`; the key leader rekeys without this
    /// device.
    ///
    /// # Errors
    /// [`ConclaveError::NoInvitation`] if no such invitation is pending.
    pub async fn reject(&self, meeting_id: String) -> Result<(), ConclaveError> {
        let invitation = self.take_invitation(&meeting_id)?;
        let client = self.inner.clone();
        on_runtime(async move { Ok(client.reject(&invitation).await?) }).await
    }

    /// Identity keys pinned so far (store them; pass them in
    /// `ClientOptions::pinned_users` next time).
    ///
    /// # Errors
    /// [`ConclaveError::Closed`] after `disconnect`.
    pub async fn pinned_users(&self) -> Result<Vec<PinnedUser>, ConclaveError> {
        let client = self.inner.clone();
        on_runtime(async move {
            let users = client.pinned_users().await?;
            Ok(users.iter().map(PinnedUser::from).collect())
        })
        .await
    }

    /// This device's credentials with the current prekey pool: the one object to
    /// store (encrypted) after every `ClientEvent::PrekeysConsumed` and before exit.
    /// Contains secret keys.
    ///
    /// # Errors
    /// [`ConclaveError::Closed`] after `disconnect`.
    pub async fn export_credentials(&self) -> Result<Vec<u8>, ConclaveError> {
        let client = self.inner.clone();
        on_runtime(async move { Ok(client.export_credentials().await?.to_vec()) }).await
    }

    /// The prekey pool's private halves alone (for apps that store credentials in
    /// parts; `export_credentials` includes them). Contains secret keys.
    ///
    /// # Errors
    /// [`ConclaveError::Closed`] after `disconnect`.
    pub async fn export_prekeys(&self) -> Result<Vec<u8>, ConclaveError> {
        let client = self.inner.clone();
        on_runtime(async move { Ok(client.export_prekeys().await?.to_vec()) }).await
    }

    /// The server's VAPID public key (RFC 8292), 65 bytes: the application server key
    /// to subscribe with the platform's push service (Web Push `applicationServerKey`)
    /// before `register_push`.
    ///
    /// # Errors
    /// [`ConclaveError::PushNotOffered`] if the server does not offer push wake-ups;
    /// [`ConclaveError::Closed`] after `disconnect`.
    pub async fn push_server_key(&self) -> Result<Vec<u8>, ConclaveError> {
        let client = self.inner.clone();
        on_runtime(async move {
            let key = client
                .push_server_key()
                .await
                .map_err(ConclaveError::from_push_call)?;
            Ok(key.to_vec())
        })
        .await
    }

    /// Registers (or replaces) this device's push subscription: while the device is
    /// not connected, the server wakes it through `endpoint` (the push service's URL
    /// for this subscription) when containers wait for it, encrypting the wake-up to
    /// `keys` (open it with `open_wake_up`). Call it again when the platform hands
    /// out a new endpoint.
    ///
    /// # Errors
    /// [`ConclaveError::PushNotOffered`] if the server does not offer push wake-ups,
    /// [`ConclaveError::PushEndpointRefused`] if `endpoint` is not an https URL of a
    /// push service the server allows; [`ConclaveError::Closed`] after `disconnect`.
    pub async fn register_push(
        &self,
        endpoint: String,
        keys: Arc<PushKeys>,
    ) -> Result<(), ConclaveError> {
        let client = self.inner.clone();
        on_runtime(async move {
            client
                .register_push(&endpoint, keys.sdk())
                .await
                .map_err(ConclaveError::from_push_call)
        })
        .await
    }

    /// Removes this device's push subscription (the user turned notifications off, or
    /// the app is signing out); returns whether there was one.
    ///
    /// # Errors
    /// [`ConclaveError::Closed`] after `disconnect`.
    pub async fn unregister_push(&self) -> Result<bool, ConclaveError> {
        let client = self.inner.clone();
        on_runtime(async move {
            client
                .unregister_push()
                .await
                .map_err(ConclaveError::from_push_call)
        })
        .await
    }

    /// Media datagrams received from the SFU so far (any room).
    pub fn datagrams_received(&self) -> u64 {
        self.inner.datagrams_received()
    }

    /// What this client's connections carried on the network so far (QUIC's counters):
    /// for a connection-quality indicator.
    pub fn network_stats(&self) -> crate::NetworkStats {
        self.inner.network_stats().into()
    }

    /// Leaves every meeting, closes the connection and stops the client's tasks. The
    /// client's other calls fail with [`ConclaveError::Closed`] afterwards. (Not
    /// `close`: in Kotlin and Swift that name frees the object itself.)
    pub async fn disconnect(&self) {
        let client = self.inner.clone();
        let _ = on_runtime(async move {
            client.close().await;
            Ok(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_the_sdks_config() {
        let options = ClientOptions {
            server: "sfu.example.org:4433".into(),
            trust: ServerTrust::PinnedSha256 {
                fingerprint: "ab".repeat(32),
            },
            more_servers: vec!["sfu2.example.org:4433".into()],
            server_name: None,
            pinned_users: Vec::new(),
            display_name: Some("Alice".into()),
            idle_timeout_ms: Some(5_000),
            connect_timeout_ms: None,
            ring_timeout_ms: Some(30_000),
            urgent_invitations: false,
            prepare_rekeys: false,
        };
        let config = options.to_config().expect("valid options");
        assert_eq!(config.trust, SdkTrust::PinnedSha256([0xab; 32]));
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.more_servers.len(), 1);
        assert!(config.profile.is_some());
        assert_eq!(config.ring_timeout, Duration::from_secs(30));
        assert!(!config.urgent_invitations);
        assert_eq!(config.prepare_rekeys_after, None);
    }

    #[test]
    fn rekeys_are_prepared_by_default_as_in_the_sdk() {
        // `#[uniffi(default = true)]` must match the SDK's default.
        let sdk = sdk::ClientConfig::new("sfu.example.org:4433", SdkTrust::SystemRoots);
        assert!(sdk.prepare_rekeys_after.is_some());
    }

    #[test]
    fn urgent_invitations_default_as_in_the_sdk() {
        // The record's default (`#[uniffi(default = true)]`) is what the foreign
        // languages fill in; it must be the SDK's.
        let sdk_default = sdk::ClientConfig::new("sfu.example.org:4433", SdkTrust::SystemRoots)
            .urgent_invitations;
        assert!(sdk_default, "the bindings document `true` as the default");
    }

    #[test]
    fn a_bad_pin_or_ca_file_is_an_invalid_argument() {
        let bad_pin = ServerTrust::PinnedSha256 {
            fingerprint: "xyz".into(),
        };
        assert!(matches!(
            bad_pin.to_sdk(),
            Err(ConclaveError::InvalidArgument { .. })
        ));
        let missing = ServerTrust::CaFile {
            path: "/nonexistent/ca.pem".into(),
        };
        let err = missing.to_sdk().expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn the_invitation_book_forgets_the_oldest_beyond_its_bound() {
        let mut book = Invitations::default();
        let template = |n: u16| {
            let mut id = [0u8; 32];
            id[..2].copy_from_slice(&n.to_be_bytes());
            sdk::Invitation {
                meeting_id: MeetingId::from_bytes(id),
                from: sample_participant(),
                media_kinds: Vec::new(),
                participants: Vec::new(),
                expires_at: conclave_sdk::UnixMillis(0),
                caller: None,
            }
        };
        for n in 0..=u16::try_from(MAX_KEPT_INVITATIONS).unwrap_or(u16::MAX) {
            book.insert(template(n));
        }
        assert_eq!(book.by_meeting.len(), MAX_KEPT_INVITATIONS);
        assert!(
            !book
                .by_meeting
                .contains_key(&MeetingId::from_bytes([0; 32]))
        );
    }

    fn sample_participant() -> sdk::Participant {
        sdk::Participant {
            user_id: conclave_sdk::UserId::from_bytes([1; 32]),
            device_id: conclave_sdk::DeviceId::from_bytes([2; 16]),
            sender_index: 0,
            is_leader: true,
            is_me: false,
        }
    }
}
