//! Push subscription requests: the server's VAPID key, registering and removing this
//! device's Web Push subscription (docs/protocol.md 12). Opening a wake-up needs no
//! connection: [`crate::push::open_wake_up`].

use conclave_proto::v1::{self, client_frame::Request, response};

use super::engine::Engine;
use crate::client::ClientError;

impl Engine {
    pub(super) async fn push_server_key(&mut self) -> Result<[u8; 65], ClientError> {
        let response::Result::PushKey(key) =
            self.request(Request::GetPushKey(v1::GetPushKey {})).await?
        else {
            return Err(ClientError::unexpected_answer("GetPushKey"));
        };
        vapid_key(&key.vapid_public_key).ok_or(ClientError::unexpected_answer("GetPushKey"))
    }

    pub(super) async fn register_push(
        &mut self,
        endpoint: String,
        p256dh: [u8; 65],
        auth: [u8; 16],
    ) -> Result<(), ClientError> {
        let request = Request::SetPushSubscription(v1::SetPushSubscription {
            endpoint,
            p256dh: p256dh.to_vec(),
            auth: auth.to_vec(),
        });
        let response::Result::PushSubscriptionSet(_) = self.request(request).await? else {
            return Err(ClientError::unexpected_answer("SetPushSubscription"));
        };
        Ok(())
    }

    pub(super) async fn unregister_push(&mut self) -> Result<bool, ClientError> {
        let request = Request::ClearPushSubscription(v1::ClearPushSubscription {});
        let response::Result::PushSubscriptionCleared(cleared) = self.request(request).await?
        else {
            return Err(ClientError::unexpected_answer("ClearPushSubscription"));
        };
        Ok(cleared.removed)
    }
}

/// A 65-byte uncompressed point, or nothing.
fn vapid_key(bytes: &[u8]) -> Option<[u8; 65]> {
    let key: [u8; 65] = bytes.try_into().ok()?;
    (key[0] == 0x04).then_some(key)
}
