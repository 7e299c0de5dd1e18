//! Web Push wake-ups for offline devices (RFC 8030, RFC 8291, RFC 8292).
//!
//! Data flow: a device registers a subscription (`SetPushSubscription`: an endpoint on
//! the operator's allow-list, its P-256 key and auth secret; kept in the store). When a
//! container is stored for a registered device that is not connected to this node, the
//! session tells the `PushService` (`PushService::stored`), which hands it to the
//! sans-IO `scheduler` through a bounded queue. When a wake-up falls due, an attempt
//! (`send`) reads the subscription and the device's waiting containers from the store
//! (none waiting: the device fetched them, here or on another node, and is not woken),
//! encrypts a `PushWakeUp { pending, urgency }` to the device's keys (RFC 8291,
//! aes128gcm), signs the request with the operator's VAPID key and POSTs it to the
//! endpoint with a `TTL`, an `Urgency` and a `Topic` (so a push service holds only the
//! latest wake-up for an offline device).
//!
//! What the server learns and sends: the payload carries a count and the urgency, both
//! known to the server; never a sender, a meeting or a container. The urgency is the
//! one bit a sender tells the server about a container (`SendContainer.wake_urgency`).
//!
//! Bounds: the queue into the task (8,192 events), the devices the scheduler
//! tracks (`push.max_tracked_devices`), requests in flight
//! (`push.max_concurrent_requests`), one wake-up per device per
//! `push.min_interval_secs`, `push.max_attempts` per wake-up, and the response bodies
//! (never read). Answers: 2xx sent; 404 and 410 delete the subscription (only if the
//! device has not replaced it meanwhile); 429, 5xx and network failures retry with
//! backoff; other 4xx fail without retry. Requests go only to allow-listed `https`
//! hosts, verified by TLS, and redirects are never followed.

mod resolve;
pub(crate) mod scheduler;
mod send;
mod vapid;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

pub use vapid::VapidKey;

use crate::config::{AllowList, EndpointRefused, PushConfig};
use crate::ratelimit::KeyedLimiter;
use crate::store::{DeviceIdBytes, Store, UserIdBytes};
use crate::telemetry;
use scheduler::{Concluded, Noted, Rules, Scheduler};

/// Events queued to the push task, at most.
const EVENT_QUEUE: usize = 8_192;

/// Why push could not be set up at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushSetupError {
    /// The VAPID key file could not be read.
    #[error("cannot read the VAPID key file {}: check push.vapid_key_file", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The VAPID key file holds no P-256 private key.
    #[error(
        "the VAPID key file {} holds no P-256 private key (PEM, PKCS#8 or SEC1); \
         `conclave-sfu --generate-vapid-key FILE` writes one",
        path.display()
    )]
    KeyFormat {
        /// The file.
        path: PathBuf,
    },
    /// A generated key could not be encoded.
    #[error("cannot encode the generated VAPID key")]
    KeyEncoding,
    /// The TLS client for push services could not be made.
    #[error("push TLS: {0}")]
    Tls(#[from] crate::tls::ClientTlsError),
    /// The HTTP client could not be built.
    #[error("cannot build the push HTTP client: {0}")]
    Client(String),
}

enum Event {
    Stored {
        device: DeviceIdBytes,
        urgent: bool,
        expires_at_ms: u64,
    },
    Connected(DeviceIdBytes),
}

/// The node's push sender: checks endpoints, queues wake-ups, knows the VAPID key.
pub(crate) struct PushService {
    vapid_public_key: [u8; 65],
    allow: AllowList,
    events: mpsc::Sender<Event>,
    /// Wake-ups each sending user may cause.
    senders: std::sync::Mutex<KeyedLimiter<UserIdBytes>>,
    /// High-urgency wake-ups per (sending user, device).
    urgent_pairs: std::sync::Mutex<KeyedLimiter<(UserIdBytes, DeviceIdBytes)>>,
    forward_urgency: bool,
}

/// Keys per rate-limit table of the push service (idle entries are evicted first).
const MAX_LIMITER_ENTRIES: usize = 100_000;

/// What an attempt needs (shared by the task and its requests).
pub(crate) struct Context {
    pub(crate) key: VapidKey,
    /// VAPID headers per push service origin.
    pub(crate) tokens: vapid::TokenCache,
    pub(crate) allow: AllowList,
    pub(crate) config: PushConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) http: reqwest::Client,
}

impl PushService {
    /// Loads the VAPID key and the TLS roots and starts the push task (on the current
    /// runtime) until `stop`.
    pub(crate) fn start(
        config: &PushConfig,
        store: Arc<dyn Store>,
        stop: watch::Receiver<bool>,
    ) -> Result<(Arc<PushService>, tokio::task::JoinHandle<()>), PushSetupError> {
        let allow = AllowList::parse(&config.allowed_hosts).map_err(PushSetupError::Client)?;
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let builder = match &config.proxy {
            Some(url) => reqwest::Client::builder().proxy(
                reqwest::Proxy::https(url.as_str())
                    .map_err(|e| PushSetupError::Client(e.to_string()))?,
            ),
            // Not the environment's HTTPS_PROXY: only what the operator set here.
            None => reqwest::Client::builder().no_proxy(),
        };
        let builder = if config.allow_private_addresses {
            builder
        } else {
            builder.dns_resolver(resolve::PublicOnly)
        };
        let http = builder
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .connect_timeout(Duration::from_secs(config.request_timeout_secs))
            .pool_max_idle_per_host(4)
            .user_agent(concat!("conclave-sfu/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PushSetupError::Client(e.to_string()))?;
        let key = VapidKey::load(&config.vapid_key_file)?;
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let service = Arc::new(PushService {
            vapid_public_key: key.public_key(),
            allow: allow.clone(),
            events,
            senders: std::sync::Mutex::new(KeyedLimiter::per_minute(
                config.wakeups_per_sender_per_minute,
                config.wakeup_burst_per_sender,
                MAX_LIMITER_ENTRIES,
            )),
            urgent_pairs: std::sync::Mutex::new(KeyedLimiter::per_hour(
                config.urgent_wakeups_per_pair_per_hour,
                config.urgent_wakeup_burst_per_pair,
                MAX_LIMITER_ENTRIES,
            )),
            forward_urgency: config.forward_urgency,
        });
        let ctx = Arc::new(Context {
            key,
            tokens: vapid::TokenCache::default(),
            allow,
            config: config.clone(),
            store,
            http,
        });
        let task = tokio::spawn(run(ctx, rx, stop));
        Ok((service, task))
    }

    /// The VAPID public key (uncompressed P-256 point).
    pub(crate) fn vapid_public_key(&self) -> [u8; 65] {
        self.vapid_public_key
    }

    /// Checks a subscription's endpoint against the allow-list; returns it normalised.
    pub(crate) fn check_endpoint(&self, endpoint: &str) -> Result<String, EndpointRefused> {
        self.allow.check(endpoint).map(String::from)
    }

    /// A container from `sender` was stored for `device`, which is not connected to
    /// this node. Within the sender's budget it schedules a wake-up (urgent if the
    /// sender asked, within its budget for this device).
    pub(crate) fn stored(
        &self,
        sender: UserIdBytes,
        device: DeviceIdBytes,
        urgent: bool,
        expires_at_ms: u64,
    ) {
        let now = Instant::now();
        if lock(&self.senders).try_take(&sender, now).is_err() {
            counter!(telemetry::PUSH_DROPPED, "reason" => "sender_budget").increment(1);
            return;
        }
        let urgent = urgent
            && self.forward_urgency
            && if lock(&self.urgent_pairs)
                .try_take(&(sender, device), now)
                .is_ok()
            {
                true
            } else {
                counter!(telemetry::PUSH_URGENCY_DOWNGRADED).increment(1);
                false
            };
        let event = Event::Stored {
            device,
            urgent,
            expires_at_ms,
        };
        if self.events.try_send(event).is_err() {
            counter!(telemetry::PUSH_DROPPED, "reason" => "queue_full").increment(1);
        }
    }

    /// `device` connected to this node.
    pub(crate) fn connected(&self, device: DeviceIdBytes) {
        // Best effort: a lost event only costs a wake-up the device does not need.
        let _ = self.events.try_send(Event::Connected(device));
    }
}

/// The push task: feeds the scheduler, runs due attempts (bounded), until `stop`.
async fn run(ctx: Arc<Context>, mut rx: mpsc::Receiver<Event>, mut stop: watch::Receiver<bool>) {
    let c = &ctx.config;
    let mut scheduler = Scheduler::new(Rules {
        delay: Duration::from_millis(c.delay_ms),
        min_interval: Duration::from_secs(c.min_interval_secs),
        max_interval: Duration::from_secs(c.max_interval_secs),
        max_attempts: c.max_attempts,
        retry_base: Duration::from_millis(c.retry_base_ms),
        retry_max: Duration::from_millis(c.retry_max_ms),
        max_tracked_devices: c.max_tracked_devices,
    });
    let max_in_flight = c.max_concurrent_requests;
    let mut in_flight: JoinSet<(DeviceIdBytes, scheduler::Outcome)> = JoinSet::new();
    // Which device each attempt is for, so that a failed task still completes its job.
    let mut attempts: HashMap<tokio::task::Id, DeviceIdBytes> = HashMap::new();
    loop {
        while in_flight.len() < max_in_flight {
            let Some(job) = scheduler.poll_job(Instant::now()) else {
                break;
            };
            let task = in_flight.spawn(send::attempt(Arc::clone(&ctx), job));
            attempts.insert(task.id(), job.device);
        }
        gauge!(telemetry::PUSH_TRACKED_DEVICES).set(scheduler.tracked() as f64);
        let wake = scheduler
            .poll_timeout()
            .filter(|_| in_flight.len() < max_in_flight)
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => break,
            event = rx.recv() => match event {
                Some(Event::Stored { device, urgent, expires_at_ms }) => {
                    match scheduler.stored(device, urgent, expires_at_ms, Instant::now()) {
                        Noted::Scheduled => {}
                        Noted::Folded => counter!(telemetry::PUSH_FOLDED).increment(1),
                        Noted::Refused => {
                            counter!(telemetry::PUSH_DROPPED, "reason" => "too_many_devices")
                                .increment(1);
                        }
                    }
                }
                Some(Event::Connected(device)) => scheduler.connected(&device, Instant::now()),
                None => break,
            },
            Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                let (device, outcome) = match joined {
                    Ok((id, done)) => {
                        attempts.remove(&id);
                        done
                    }
                    Err(e) => {
                        warn!("a push attempt task failed");
                        let Some(device) = attempts.remove(&e.id()) else {
                            continue;
                        };
                        (device, scheduler::Outcome::Retry { retry_after: None })
                    }
                };
                match scheduler.completed(&device, outcome, Instant::now()) {
                    Concluded::Done => {}
                    Concluded::Retrying => counter!(telemetry::PUSH_RETRIES).increment(1),
                    Concluded::GaveUp => {
                        debug!("push service unreachable; wake-up given up");
                        counter!(telemetry::PUSH_FAILED, "reason" => "unreachable").increment(1);
                    }
                    Concluded::DropSubscription => {
                        let ctx = Arc::clone(&ctx);
                        tokio::spawn(async move { send::drop_refused(&ctx, device).await });
                    }
                }
            }
            () = sleep_until(wake) => {}
        }
    }
    in_flight.abort_all();
}

/// Locks a limiter (its state is consistent between calls, so a poisoned lock is
/// recovered).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
