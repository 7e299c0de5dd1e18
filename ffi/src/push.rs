//! Push wake-ups (Web Push, RFC 8030/8291/8292): the keys a device registers with the
//! server for push, and the opening of the wake-ups the server sends it while offline.
//!
//! ```text
//! once:      PushKeys.generate() ── export() ──▶ the app's secure storage (next to the
//!            credentials) ──▶ PushKeys.restore(stored) on later starts
//! connected: client.push_server_key() ──▶ subscribe with the platform's push service
//!            (VAPID application server key) ──▶ client.register_push(endpoint, keys)
//! offline:   push message body ──▶ open_wake_up(keys, body) ──▶ WakeUp { action:
//!            ConnectAndFetch } ──▶ connect: the waiting containers arrive as events
//! ```
//!
//! The private key leaves Rust only through [`PushKeys::export`] (the `auth` secret
//! is the subscription's, which the server holds too). A wake-up carries nothing the
//! server may not know (how many containers wait, whether it is urgent), so acting on
//! a forged one is harmless.

use std::sync::Arc;

use conclave_sdk::OsRng;
use conclave_sdk::push as sdk;
use zeroize::Zeroizing;

use crate::ConclaveError;

/// A device's Web Push subscription keys: a P-256 key pair (the subscription's
/// `p256dh`) and a 16-byte authentication secret (its `auth`). Wake-ups are encrypted
/// to them. Keep [`Self::export`] in the app's secure storage next to the credentials,
/// and register the keys again with the server whenever they or the push endpoint
/// change.
#[derive(uniffi::Object)]
pub struct PushKeys {
    keys: sdk::PushKeys,
}

impl core::fmt::Debug for PushKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The SDK's form: the start of the public key only.
        self.keys.fmt(f)
    }
}

impl PushKeys {
    /// The SDK's keys, for the client's calls.
    pub(crate) fn sdk(&self) -> &sdk::PushKeys {
        &self.keys
    }
}

#[uniffi::export]
impl PushKeys {
    /// Fresh keys from the operating system's random number generator.
    #[uniffi::constructor]
    pub fn generate() -> Arc<Self> {
        Arc::new(PushKeys {
            keys: sdk::PushKeys::generate(&mut OsRng),
        })
    }

    /// Reads keys written by [`Self::export`].
    ///
    /// # Errors
    /// [`ConclaveError::Credentials`] if the bytes are damaged, not push keys or from a
    /// newer SDK: generate new keys and register them with the server.
    #[uniffi::constructor]
    pub fn restore(stored: Vec<u8>) -> Result<Arc<Self>, ConclaveError> {
        let stored = Zeroizing::new(stored);
        let keys = sdk::PushKeys::from_bytes(&stored)?;
        Ok(Arc::new(PushKeys { keys }))
    }

    /// The stored form, 49 bytes (contains the private key and the auth secret:
    /// encrypt it at rest, like the credentials).
    pub fn export(&self) -> Vec<u8> {
        self.keys.to_bytes().to_vec()
    }

    /// The public key, 65 bytes (an uncompressed P-256 point): the subscription's
    /// `p256dh`. Public.
    pub fn public_key(&self) -> Vec<u8> {
        self.keys.public_key().to_vec()
    }

    /// The authentication secret, 16 bytes: the subscription's `auth`. The server and
    /// the push subscription hold it too; `register_push` sends it, so an app needs it
    /// only where its platform asks for the subscription's keys.
    pub fn auth_secret(&self) -> Vec<u8> {
        self.keys.auth_secret().to_vec()
    }
}

/// What a wake-up asks of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum WakeAction {
    /// Connect to the server now (if not connected): containers (invitations, ...)
    /// are waiting in the device's mailbox and arrive as client events.
    ConnectAndFetch,
}

impl WakeAction {
    fn from_sdk(action: sdk::WakeAction) -> Self {
        match action {
            sdk::WakeAction::ConnectAndFetch => WakeAction::ConnectAndFetch,
            // The SDK's enum is non-exhaustive; both are built together, so this only
            // guards against a future SDK. Connecting is always a safe answer.
            _ => WakeAction::ConnectAndFetch,
        }
    }
}

/// An opened wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct WakeUp {
    /// Containers waiting in the device's mailbox when the server sent it (a hint:
    /// more may arrive, some may have expired).
    pub pending: u32,
    /// Whether the server sent it at high urgency (probably an incoming call: connect
    /// at once, and let the invitation ring).
    pub urgent: bool,
    /// What to do.
    pub action: WakeAction,
}

impl From<sdk::WakeUp> for WakeUp {
    fn from(w: sdk::WakeUp) -> Self {
        WakeUp {
            pending: w.pending,
            urgent: w.urgent,
            action: WakeAction::from_sdk(w.action()),
        }
    }
}

/// Opens the body of a push message the platform delivered (the raw bytes the push
/// service carried, at most 4,096) with this device's push keys.
///
/// # Errors
/// [`ConclaveError::InvalidPushMessage`] if it does not open: not encrypted to these
/// keys, altered, too large, or a wake-up this SDK cannot read. Ignore it, or connect
/// anyway: a wake-up only ever asks the app to connect, which is always harmless.
#[uniffi::export]
pub fn open_wake_up(keys: Arc<PushKeys>, body: Vec<u8>) -> Result<WakeUp, ConclaveError> {
    Ok(sdk::open_wake_up(&keys.keys, &body)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_keys_survive_export_and_restore() {
        let keys = PushKeys::generate();
        let stored = keys.export();
        assert_eq!(stored.len(), 49);
        let back = PushKeys::restore(stored).expect("restored");
        assert_eq!(back.public_key(), keys.public_key());
        assert_eq!(back.auth_secret(), keys.auth_secret());
        assert_eq!(keys.public_key().len(), 65);
        assert_eq!(keys.public_key().first(), Some(&0x04));
        assert_eq!(keys.auth_secret().len(), 16);
        assert_ne!(
            PushKeys::generate().public_key(),
            keys.public_key(),
            "every generation is fresh"
        );
    }

    #[test]
    fn damaged_push_keys_are_a_credentials_error_that_says_what_to_do() {
        // Too short, empty, the wrong length, a private key above the group order, an
        // unknown version.
        let mut above_order = vec![1];
        above_order.extend([0xff; 48]);
        for stored in [
            b"junk".to_vec(),
            Vec::new(),
            vec![1; 48],
            above_order,
            vec![9; 49],
        ] {
            let e = PushKeys::restore(stored).expect_err("damaged keys restored");
            assert!(matches!(e, ConclaveError::Credentials { .. }), "{e:?}");
            assert!(e.to_string().contains("generate new push keys"), "{e}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let keys = PushKeys::generate();
        let stored = keys.export();
        let shown = format!("{keys:?}");
        let scalar = hex::encode(stored.get(1..33).unwrap_or_default());
        let auth = hex::encode(keys.auth_secret());
        for secret in [&scalar, &auth] {
            assert!(!shown.contains(secret.get(..8).unwrap_or("-")), "{shown}");
        }
        assert!(shown.starts_with("PushKeys"), "{shown}");
    }

    #[test]
    fn a_foreign_or_garbage_wake_up_is_an_invalid_push_message() {
        let keys = PushKeys::generate();
        let too_large = vec![0; 4097];
        for body in [Vec::new(), b"garbage".to_vec(), vec![0xa5; 200], too_large] {
            let result = open_wake_up(Arc::clone(&keys), body);
            assert!(
                matches!(result, Err(ConclaveError::InvalidPushMessage { .. })),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_body_that_decrypts_but_is_no_wake_up_is_an_invalid_push_message() {
        // RFC 8291 Appendix A: the user agent's keys and the message encrypted to them
        // ("When I grow up, I want to be a watermelon", not a wake-up), here in hex.
        let mut stored = vec![1];
        stored.extend(hex_bytes(
            "ab5757a70dd4a53e553a6bbf71ffefea2874ec07a6b379e3c48f895a02dc33de",
        ));
        stored.extend(hex_bytes("05305932a1c7eabe13b6cec9fda48882"));
        let keys = PushKeys::restore(stored).expect("the RFC's keys");
        let body = hex_bytes(concat!(
            "0c6bfaadad67958803092d454676f397000010004104fe33f4ab0dea71914db55823",
            "f73b54948f41306d920732dbb9a59a53286482200e597a7b7bc260ba1c227998580992",
            "e93973002f3012a28ae8f06bbb78e5ec0ff297de5b429bba7153d3a4ae0caa091fd425",
            "f3b4b5414add8ab37a19c1bbb05cf5cb5b2a2e0562d558635641ec52812c6c8ff42e95",
            "ccb86be7cd",
        ));
        let e = open_wake_up(keys, body).expect_err("the watermelon opened as a wake-up");
        assert!(
            matches!(e, ConclaveError::InvalidPushMessage { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("not a wake-up"), "{e}");
    }

    fn hex_bytes(text: &str) -> Vec<u8> {
        hex::decode(text).expect("hex")
    }
}
