//! Push subscription requests: `GetPushKey`, `SetPushSubscription`,
//! `ClearPushSubscription` (the sending side is `crate::push`).

use conclave_proto::v1::{self, ErrorCode, response};

use super::session::{After, Handled, Session};
use super::{RequestError, now_ms};
use crate::push::PushService;
use crate::store::PushSubscription;

impl Session {
    fn push_service(&self) -> Result<&PushService, RequestError> {
        self.shared.push.as_deref().ok_or_else(|| {
            RequestError::new(
                ErrorCode::NotOffered,
                "this server does not offer push wake-ups (its operator has not configured \
                 [push]); the device learns of containers when it connects",
            )
        })
    }

    pub(super) fn get_push_key(&self) -> Handled {
        let push = self.push_service()?;
        Ok((
            response::Result::PushKey(v1::PushKey {
                vapid_public_key: push.vapid_public_key().to_vec(),
            }),
            After::Nothing,
        ))
    }

    pub(super) async fn set_push_subscription(&mut self, r: v1::SetPushSubscription) -> Handled {
        let me = self.device()?.record.device_id;
        let push = self.push_service()?;
        // Stored as parsed and normalised: the form the requests are made to.
        let endpoint = push.check_endpoint(&r.endpoint).map_err(|why| {
            RequestError::new(
                ErrorCode::ForbiddenEndpoint,
                format!("{why}: subscribe with one of the push services this server allows"),
            )
        })?;
        let p256dh: [u8; 65] = r
            .p256dh
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::bad_request("p256dh is not a 65-byte P-256 point"))?;
        if web_push_native::p256::PublicKey::from_sec1_bytes(&p256dh).is_err() {
            return Err(RequestError::bad_request(
                "p256dh is not an uncompressed point on P-256",
            ));
        }
        let auth: [u8; 16] = r
            .auth
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::bad_request("auth is not 16 bytes"))?;
        let vapid_public_key = push.vapid_public_key().to_vec();
        let subscription = PushSubscription {
            endpoint,
            p256dh,
            auth,
            updated_at_ms: now_ms(),
        };
        self.shared
            .blocking("push subscription", move |s| {
                s.set_push_subscription(&me, &subscription)
            })
            .await?;
        Ok((
            response::Result::PushSubscriptionSet(v1::PushSubscriptionSet { vapid_public_key }),
            After::Nothing,
        ))
    }

    pub(super) async fn clear_push_subscription(&mut self) -> Handled {
        let me = self.device()?.record.device_id;
        let removed = self
            .shared
            .blocking("push subscription", move |s| {
                s.clear_push_subscription(&me, None)
            })
            .await?;
        Ok((
            response::Result::PushSubscriptionCleared(v1::PushSubscriptionCleared { removed }),
            After::Nothing,
        ))
    }
}
