//! One attempt at one wake-up: read, encrypt, sign, POST, classify the answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conclave_core::push::WakeUp;
use metrics::counter;
use tracing::{debug, info};
use web_push_native::{Auth, WebPushBuilder};

use super::Context;
use super::scheduler::{Job, Outcome};
use crate::store::{DeviceIdBytes, PushSubscription};
use crate::telemetry;

/// RFC 8030 `Topic`: a push service keeps only the newest message of a topic for an
/// offline device, so queued wake-ups collapse into one.
const TOPIC: &str = "conclave-mailbox";

/// Runs `job` once; the scheduler decides what follows.
pub(super) async fn attempt(ctx: Arc<Context>, job: Job) -> (DeviceIdBytes, Outcome) {
    let outcome = attempt_inner(&ctx, &job).await;
    (job.device, outcome)
}

async fn attempt_inner(ctx: &Context, job: &Job) -> Outcome {
    let device = job.device;
    let store = Arc::clone(&ctx.store);
    let looked_up = tokio::task::spawn_blocking(move || {
        let Some(subscription) = store.push_subscription(&device)? else {
            return Ok(None);
        };
        let waiting = store.mailbox_count(&device)?;
        Ok::<_, crate::store::StoreError>(Some((subscription, waiting)))
    })
    .await;
    let (subscription, waiting) = match looked_up {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => {
            counter!(telemetry::PUSH_SKIPPED, "reason" => "no_subscription").increment(1);
            return Outcome::Skipped;
        }
        Ok(Err(e)) => {
            debug!(error = %e, "push: store lookup failed; retrying");
            return Outcome::Retry { retry_after: None };
        }
        Err(_) => return Outcome::Retry { retry_after: None },
    };
    if waiting == 0 {
        // Fetched meanwhile (this node or another): no need to wake the device.
        counter!(telemetry::PUSH_SKIPPED, "reason" => "nothing_waiting").increment(1);
        return Outcome::Skipped;
    }
    let request = match build(ctx, job, &subscription, waiting) {
        Ok(request) => request,
        Err(reason) => {
            counter!(telemetry::PUSH_FAILED, "reason" => reason).increment(1);
            return Outcome::Failed;
        }
    };
    let response = match ctx.http.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            debug!(error = %e, "push: request failed; retrying");
            return Outcome::Retry { retry_after: None };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // The body is never read: the connection is dropped or reused without it.
    drop(response);
    match status {
        200..=299 => {
            counter!(telemetry::PUSH_SENT).increment(1);
            Outcome::Sent
        }
        404 | 410 => {
            drop_subscription(ctx, device, subscription.endpoint).await;
            Outcome::Failed
        }
        429 | 500..=599 => Outcome::Retry { retry_after },
        _ => {
            info!(status, "push service refused a wake-up");
            counter!(telemetry::PUSH_FAILED, "reason" => "refused").increment(1);
            Outcome::Failed
        }
    }
}

/// The encrypted, signed request; or the reason it cannot be made (a metric label).
fn build(
    ctx: &Context,
    job: &Job,
    subscription: &PushSubscription,
    waiting: usize,
) -> Result<reqwest::Request, &'static str> {
    // Checked again: the operator may have narrowed the list since it was registered.
    let url = ctx
        .allow
        .check(&subscription.endpoint)
        .map_err(|_| "not_allowed")?;
    let uri: http::Uri = url.as_str().parse().map_err(|_| "not_allowed")?;
    let ua_public = web_push_native::p256::PublicKey::from_sec1_bytes(&subscription.p256dh)
        .map_err(|_| "bad_subscription")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left_ms = job
        .expires_at_ms
        .saturating_sub(u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
    let ttl = ctx.config.ttl_secs.min(left_ms / 1000);
    let pending = u32::try_from(waiting).unwrap_or(u32::MAX);
    let payload = WakeUp::new(pending, job.urgent).encode();
    let mut request =
        WebPushBuilder::new(uri, ua_public, Auth::clone_from_slice(&subscription.auth))
            .with_valid_duration(Duration::from_secs(ttl))
            .build(payload)
            .map_err(|_| "bad_subscription")?;
    let authorization = ctx
        .key
        .authorization(&url, &ctx.config.contact, now.as_secs(), 12 * 3600);
    let headers = request.headers_mut();
    let urgency = if job.urgent { "high" } else { "normal" };
    headers.insert("urgency", http::HeaderValue::from_static(urgency));
    headers.insert("topic", http::HeaderValue::from_static(TOPIC));
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&authorization).map_err(|_| "bad_subscription")?,
    );
    reqwest::Request::try_from(request).map_err(|_| "bad_subscription")
}

/// The push service says the subscription is gone: delete it, unless the device has
/// registered another endpoint meanwhile.
async fn drop_subscription(ctx: &Context, device: DeviceIdBytes, endpoint: String) {
    let store = Arc::clone(&ctx.store);
    let removed = tokio::task::spawn_blocking(move || {
        store.clear_push_subscription(&device, Some(&endpoint))
    })
    .await;
    if let Ok(Ok(true)) = removed {
        counter!(telemetry::PUSH_SUBSCRIPTIONS_DROPPED, "reason" => "gone").increment(1);
    }
}
