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

/// The largest `pending` a wake-up says ("this many or more").
const MAX_PENDING_HINT: usize = 127;

/// How long a VAPID token is valid (RFC 8292 allows up to 24 hours; a short one limits
/// what a captured token is worth).
const VAPID_VALIDITY_SECS: u64 = 3600;

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
            // Without the URL: the endpoint is a capability and stays out of logs.
            debug!(error = %e.without_url(), "push: request failed; retrying");
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
            drop_subscription(ctx, device, Some(subscription.endpoint), "gone").await;
            Outcome::Failed
        }
        429 | 500..=599 => Outcome::Retry { retry_after },
        // Other 4xx, and redirects (never followed): refused for good.
        _ => {
            info!(status, "push service refused a wake-up");
            counter!(telemetry::PUSH_FAILED, "reason" => "refused").increment(1);
            Outcome::Rejected
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
    let payload = payload(waiting, job.urgent);
    let mut request =
        WebPushBuilder::new(uri, ua_public, Auth::clone_from_slice(&subscription.auth))
            .with_valid_duration(Duration::from_secs(ttl))
            .build(payload)
            .map_err(|_| "bad_subscription")?;
    let authorization = ctx.tokens.authorization(
        &ctx.key,
        &url,
        &ctx.config.contact,
        now.as_secs(),
        VAPID_VALIDITY_SECS,
    );
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

/// The wake-up's plaintext. `pending` is a hint only, capped so that the body's length
/// (which the push service sees) is the same whatever the count: 127 is the largest
/// one-byte varint.
fn payload(waiting: usize, urgent: bool) -> Vec<u8> {
    let pending = u32::try_from(waiting.clamp(1, MAX_PENDING_HINT)).unwrap_or(1);
    WakeUp::new(pending, urgent).encode()
}

/// The push service refused the device's wake-ups for good several times in a row:
/// its subscription goes.
pub(super) async fn drop_refused(ctx: &Context, device: DeviceIdBytes) {
    drop_subscription(ctx, device, None, "refused").await;
}

/// Deletes the device's subscription (only if it is still at `endpoint`, when given:
/// the device may have registered another one meanwhile).
async fn drop_subscription(
    ctx: &Context,
    device: DeviceIdBytes,
    endpoint: Option<String>,
    reason: &'static str,
) {
    let store = Arc::clone(&ctx.store);
    let removed = tokio::task::spawn_blocking(move || {
        store.clear_push_subscription(&device, endpoint.as_deref())
    })
    .await;
    if let Ok(Ok(true)) = removed {
        counter!(telemetry::PUSH_SUBSCRIPTIONS_DROPPED, "reason" => reason).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wake_up_has_one_length_whatever_the_count() {
        let lengths: Vec<usize> = [1, 2, 127, 128, 5_000, usize::MAX]
            .iter()
            .map(|&n| payload(n, false).len())
            .collect();
        assert!(lengths.iter().all(|&l| l == lengths[0]), "{lengths:?}");
        assert_eq!(
            conclave_core::push::WakeUp::new(127, false).encode(),
            payload(1_000_000, false)
        );
    }
}
