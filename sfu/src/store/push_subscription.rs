//! A device's Web Push subscription, as the store holds it.
//!
//! The endpoint is a capability (whoever holds it can push to the device) and `auth`
//! is the device's RFC 8291 secret, so `Debug` shows neither: only the endpoint's
//! origin, never its path, and `auth` as `"<redacted>"`.

use std::fmt;

/// Longest push endpoint URL accepted, in bytes. The server refuses longer ones before
/// storing; the store does not check it again.
pub const MAX_PUSH_ENDPOINT_BYTES: usize = 1024;

/// A device's Web Push subscription (RFC 8030 / RFC 8291).
#[derive(Clone, PartialEq, Eq)]
pub struct PushSubscription {
    /// The push resource URL (https, at most 1,024 bytes: the server checks both and its
    /// allow-list before storing). A capability: anyone holding it can push to the device.
    pub endpoint: String,
    /// The device's P-256 public key for RFC 8291, uncompressed SEC1 (65 bytes).
    pub p256dh: [u8; 65],
    /// The device's RFC 8291 authentication secret.
    pub auth: [u8; 16],
    /// When it was registered or last replaced (ms since the Unix epoch).
    pub updated_at_ms: u64,
}

/// What `Debug` shows of an endpoint: `scheme://host[:port]`, with any user info
/// dropped, then `/…` if anything followed. `None` if it does not look like a URL.
fn endpoint_origin(endpoint: &str) -> Option<String> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let scheme_ok = (1..=16).contains(&scheme.len())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let more = if tail.is_empty() { "" } else { "/…" };
    Some(format!("{scheme}://{host}{more}"))
}

impl fmt::Debug for PushSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = endpoint_origin(&self.endpoint).unwrap_or_else(|| "<not a URL>".to_string());
        f.debug_struct("PushSubscription")
            .field("endpoint", &endpoint)
            .field("p256dh", &format_args!("<{} bytes>", self.p256dh.len()))
            .field("auth", &"<redacted>")
            .field("updated_at_ms", &self.updated_at_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(endpoint: &str) -> PushSubscription {
        PushSubscription {
            endpoint: endpoint.to_string(),
            p256dh: [4; 65],
            auth: *b"AUTHSECRET-0x5a!",
            updated_at_ms: 42,
        }
    }

    #[test]
    fn debug_shows_the_endpoint_origin_but_not_its_path_or_the_auth_secret() {
        let shown = format!(
            "{:?}",
            subscription("https://push.example.net/wpush/v2/gAAAAABsecrettoken?x=1")
        );
        assert!(shown.contains("\"https://push.example.net/…\""), "{shown}");
        assert!(!shown.contains("wpush"), "{shown}");
        assert!(!shown.contains("secrettoken"), "{shown}");
        assert!(!shown.contains("AUTHSECRET"), "{shown}");
        // Neither as text nor as a byte list.
        assert!(!shown.contains("65, 85, 84, 72"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("updated_at_ms: 42"), "{shown}");

        let shown = format!(
            "{:#?}",
            subscription("https://user:pw@push.example.net:8443")
        );
        assert!(
            shown.contains("\"https://push.example.net:8443\""),
            "{shown}"
        );
        assert!(!shown.contains("pw"), "{shown}");
        let shown = format!("{:?}", subscription("no-scheme/secret-path"));
        assert!(!shown.contains("secret-path"), "{shown}");
        assert!(shown.contains("<not a URL>"), "{shown}");
    }
}
