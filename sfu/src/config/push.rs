//! The `[push]` section: Web Push wake-ups for offline devices (RFC 8030, 8291, 8292).
//!
//! Without the section the server offers no push (`GetPushKey` answers `NOT_OFFERED`).
//! With it, devices may register a subscription whose endpoint is an `https` URL on
//! [`PushConfig::allowed_hosts`]: the server only ever sends requests to the push
//! services the operator listed, so a device cannot turn it into a request forwarder.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Web Push settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PushConfig {
    /// The operator's VAPID private key (RFC 8292): a PEM file holding a P-256 key, PKCS#8
    /// (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`). `conclave-sfu push-key`
    /// writes one. Every node of a cluster must use the same key: push services tie a
    /// subscription to the key the device subscribed with.
    pub vapid_key_file: PathBuf,
    /// Who runs this server, for push services to reach (`mailto:` or `https:` URL; the
    /// VAPID `sub` claim).
    pub contact: String,
    /// The push services the server may send to: host names, each exact
    /// (`updates.push.services.mozilla.com`) or a wildcard for its subdomains
    /// (`*.push.apple.com`), optionally with a port (`push.example.net:8443`; without one,
    /// only 443). In the environment: comma-separated.
    pub allowed_hosts: Vec<String>,
    /// PEM CA certificate(s) a push service's certificate must chain to (default: the
    /// system trust store).
    pub ca_file: Option<PathBuf>,
    /// How long a push service keeps an undelivered wake-up (the `TTL` header), at most;
    /// never longer than the waiting container lives.
    pub ttl_secs: u64,
    /// How long after a container is stored the server checks that it is still waiting
    /// and wakes the device (a device connected to another node of a cluster, or one that
    /// reconnects at once, has fetched it by then and is not woken).
    pub delay_ms: u64,
    /// At most one wake-up per device per this many seconds; containers stored
    /// meanwhile are counted into the next one. The interval doubles with each wake-up
    /// the device does not answer by connecting, up to `max_interval_secs`.
    pub min_interval_secs: u64,
    /// The longest interval between wake-ups of a device that does not connect.
    pub max_interval_secs: u64,
    /// Offline devices one sending user's containers may wake per minute, sustained
    /// (a container to 100 offline devices takes 100); beyond it containers are stored
    /// and delivered as usual, without a wake-up.
    pub wakeups_per_sender_per_minute: u32,
    /// ... and at once.
    pub wakeup_burst_per_sender: u32,
    /// High-urgency wake-ups one sending user may ask for one device per hour,
    /// sustained; beyond it they go out at normal urgency.
    pub urgent_wakeups_per_pair_per_hour: u32,
    /// ... and at once.
    pub urgent_wakeup_burst_per_pair: u32,
    /// Whether to pass a sender's high urgency on (`Urgency: high`). With `false`, every
    /// wake-up goes out at normal urgency, so the push service cannot tell a call from
    /// other mail (phones may then deliver call wake-ups late).
    pub forward_urgency: bool,
    /// Whether allowed push service names may resolve to loopback, private or other
    /// non-public addresses (a push service inside the operator's network, or a test's).
    /// Off by default: such addresses are dropped from the DNS answer.
    pub allow_private_addresses: bool,
    /// An HTTPS proxy for the requests to push services (`http://host:port`); by default
    /// none, whatever the environment's `HTTPS_PROXY` says.
    pub proxy: Option<String>,
    /// Attempts per wake-up when the push service answers 429 or 5xx or cannot be
    /// reached.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to `retry_max_ms` (a
    /// `Retry-After` from the push service is honoured within the same bound).
    pub retry_base_ms: u64,
    /// The longest delay between attempts.
    pub retry_max_ms: u64,
    /// Devices with a wake-up pending or rate-limit state, at most; wake-ups beyond are
    /// dropped and counted.
    pub max_tracked_devices: usize,
    /// Requests to push services in flight at once, at most.
    pub max_concurrent_requests: usize,
    /// How long one request to a push service may take.
    pub request_timeout_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            vapid_key_file: PathBuf::from("vapid.pem"),
            contact: String::new(),
            allowed_hosts: Vec::new(),
            ca_file: None,
            ttl_secs: 24 * 3600,
            delay_ms: 1_000,
            min_interval_secs: 10,
            max_interval_secs: 15 * 60,
            wakeups_per_sender_per_minute: 120,
            wakeup_burst_per_sender: 300,
            urgent_wakeups_per_pair_per_hour: 20,
            urgent_wakeup_burst_per_pair: 5,
            forward_urgency: true,
            allow_private_addresses: false,
            proxy: None,
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 5 * 60 * 1_000,
            max_tracked_devices: 100_000,
            max_concurrent_requests: 32,
            request_timeout_secs: 10,
        }
    }
}

impl PushConfig {
    /// Checks ranges and the allow-list's entries; the message names the field.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.vapid_key_file.as_os_str().is_empty() {
            return Err("push.vapid_key_file must name the VAPID key's PEM file".into());
        }
        let contact = self.contact.trim();
        if !(contact.starts_with("mailto:") || contact.starts_with("https://"))
            || contact.len() < 10
        {
            return Err(format!(
                "push.contact must be a mailto: or https: URL push services can reach the \
                 operator at (RFC 8292), not {:?}",
                self.contact
            ));
        }
        if self.allowed_hosts.is_empty() {
            return Err(
                "push.allowed_hosts is empty: list the push services devices may register \
                 (e.g. [\"fcm.googleapis.com\", \"*.push.apple.com\"])"
                    .into(),
            );
        }
        AllowList::parse(&self.allowed_hosts)?;
        let nonzero: [(&str, u64); 13] = [
            ("ttl_secs", self.ttl_secs),
            ("min_interval_secs", self.min_interval_secs),
            ("max_interval_secs", self.max_interval_secs),
            (
                "wakeups_per_sender_per_minute",
                u64::from(self.wakeups_per_sender_per_minute),
            ),
            (
                "wakeup_burst_per_sender",
                u64::from(self.wakeup_burst_per_sender),
            ),
            (
                "urgent_wakeups_per_pair_per_hour",
                u64::from(self.urgent_wakeups_per_pair_per_hour),
            ),
            (
                "urgent_wakeup_burst_per_pair",
                u64::from(self.urgent_wakeup_burst_per_pair),
            ),
            ("max_attempts", u64::from(self.max_attempts)),
            ("retry_base_ms", self.retry_base_ms),
            ("retry_max_ms", self.retry_max_ms),
            ("max_tracked_devices", self.max_tracked_devices as u64),
            (
                "max_concurrent_requests",
                self.max_concurrent_requests as u64,
            ),
            ("request_timeout_secs", self.request_timeout_secs),
        ];
        for (field, value) in nonzero {
            if value == 0 {
                return Err(format!("push.{field} must be at least 1"));
            }
        }
        if self.max_interval_secs < self.min_interval_secs {
            return Err("push.max_interval_secs must be at least push.min_interval_secs".into());
        }
        if let Some(proxy) = &self.proxy
            && reqwest::Proxy::https(proxy.as_str()).is_err()
        {
            return Err(format!(
                "push.proxy {proxy:?} is not a proxy URL (http://host:port)"
            ));
        }
        if self.ttl_secs > 28 * 24 * 3600 {
            return Err("push.ttl_secs must be at most 28 days (2,419,200)".into());
        }
        if self.max_attempts > 20 {
            return Err("push.max_attempts must be at most 20".into());
        }
        if self.retry_base_ms > self.retry_max_ms {
            return Err("push.retry_base_ms must not exceed push.retry_max_ms".into());
        }
        if self.delay_ms > 60_000 {
            return Err("push.delay_ms must be at most 60,000".into());
        }
        if self.max_concurrent_requests > 1_024 {
            return Err("push.max_concurrent_requests must be at most 1,024".into());
        }
        Ok(())
    }
}

/// One allowed push service: a host (or `*.` suffix) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// Lower-case host, without the `*.` of a wildcard.
    host: String,
    /// Whether subdomains of `host` (not `host` itself) are meant.
    wildcard: bool,
    port: u16,
}

/// The parsed [`PushConfig::allowed_hosts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<AllowedHost>);

/// Why an endpoint is refused ([`AllowList::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointRefused {
    /// Longer than [`crate::store::MAX_PUSH_ENDPOINT_BYTES`].
    #[error("the push endpoint is longer than 1,024 bytes")]
    TooLong,
    /// Not a URL.
    #[error("the push endpoint is not a URL")]
    NotAUrl,
    /// Not `https`.
    #[error("the push endpoint must be an https URL")]
    NotHttps,
    /// Carries a user name or password.
    #[error("the push endpoint must not carry credentials")]
    Credentials,
    /// Its host and port are not on the operator's allow-list.
    #[error("the push endpoint's host is not one of this server's allowed push services")]
    HostNotAllowed,
}

impl AllowList {
    /// Parses the entries; the message names the bad one.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut hosts = Vec::with_capacity(entries.len());
        for entry in entries {
            let bad = |why: &str| format!("push.allowed_hosts entry {entry:?}: {why}");
            let e = entry.trim().to_ascii_lowercase();
            let (host, port) = match e.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad("the port is not 1..=65535"))?,
                ),
                None => (e.as_str(), 443),
            };
            let (host, wildcard) = match host.strip_prefix("*.") {
                Some(rest) => (rest, true),
                None => (host, false),
            };
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(bad(
                    "expected a host name, `*.` and a domain, optionally with `:port`",
                ));
            }
            hosts.push(AllowedHost {
                host: host.to_owned(),
                wildcard,
                port,
            });
        }
        Ok(AllowList(hosts))
    }

    /// Checks that `endpoint` is an `https` URL without credentials whose host and port
    /// are allowed; returns it parsed.
    pub fn check(&self, endpoint: &str) -> Result<reqwest::Url, EndpointRefused> {
        if endpoint.len() > crate::store::MAX_PUSH_ENDPOINT_BYTES {
            return Err(EndpointRefused::TooLong);
        }
        let url = reqwest::Url::parse(endpoint).map_err(|_| EndpointRefused::NotAUrl)?;
        if url.scheme() != "https" {
            return Err(EndpointRefused::NotHttps);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointRefused::Credentials);
        }
        // A domain only: IP literals are never on the list (entries are host names).
        let Some(host) = url.domain() else {
            return Err(EndpointRefused::HostNotAllowed);
        };
        // A trailing dot would reach the same host under another origin (and VAPID
        // audience), which push services refuse: take the name as listed only.
        if host.ends_with('.') {
            return Err(EndpointRefused::HostNotAllowed);
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let allowed = self.0.iter().any(|a| {
            a.port == port
                && if a.wildcard {
                    host.len() > a.host.len() + 1
                        && host.ends_with(a.host.as_str())
                        && host.as_bytes().get(host.len() - a.host.len() - 1) == Some(&b'.')
                } else {
                    host == a.host
                }
        });
        if allowed {
            Ok(url)
        } else {
            Err(EndpointRefused::HostNotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .expect("valid entries")
    }

    #[test]
    fn exact_hosts_wildcards_and_ports_are_matched() {
        let l = list(&["fcm.googleapis.com", "*.push.apple.com", "localhost:8443"]);
        assert!(l.check("https://fcm.googleapis.com/fcm/send/abc").is_ok());
        assert!(l.check("https://FCM.googleapis.com/x").is_ok());
        assert!(l.check("https://api.push.apple.com/3/device/x").is_ok());
        assert!(l.check("https://localhost:8443/push/1").is_ok());
        for (endpoint, why) in [
            ("https://push.apple.com/x", EndpointRefused::HostNotAllowed),
            (
                "https://evilpush.apple.com/x",
                EndpointRefused::HostNotAllowed,
            ),
            (
                "https://fcm.googleapis.com.evil.net/x",
                EndpointRefused::HostNotAllowed,
            ),
            (
                "https://fcm.googleapis.com:444/x",
                EndpointRefused::HostNotAllowed,
            ),
            ("https://localhost/push", EndpointRefused::HostNotAllowed),
            (
                "https://fcm.googleapis.com./x",
                EndpointRefused::HostNotAllowed,
            ),
            ("https://0x7f.1:8443/push", EndpointRefused::HostNotAllowed),
            (
                "https://127.0.0.1.:8443/push",
                EndpointRefused::HostNotAllowed,
            ),
            (
                "https://[::ffff:127.0.0.1]:8443/push",
                EndpointRefused::HostNotAllowed,
            ),
            (
                "https://127.0.0.1:8443/push",
                EndpointRefused::HostNotAllowed,
            ),
            ("https://[::1]:8443/push", EndpointRefused::HostNotAllowed),
            ("http://fcm.googleapis.com/x", EndpointRefused::NotHttps),
            ("file:///etc/passwd", EndpointRefused::NotHttps),
            (
                "https://u:p@fcm.googleapis.com/x",
                EndpointRefused::Credentials,
            ),
            ("not a url", EndpointRefused::NotAUrl),
        ] {
            assert_eq!(l.check(endpoint).err(), Some(why), "{endpoint}");
        }
        let long = format!("https://fcm.googleapis.com/{}", "a".repeat(1_100));
        assert_eq!(l.check(&long).err(), Some(EndpointRefused::TooLong));
    }

    #[test]
    fn bad_entries_are_named() {
        for entry in [
            "",
            "*.",
            "a..b",
            "host:0",
            "host:99999",
            "ho st",
            "https://x",
        ] {
            let err = AllowList::parse(&[entry.to_string()]).unwrap_err();
            assert!(err.contains("allowed_hosts"), "{err}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let good = PushConfig {
            contact: "mailto:ops@example.com".into(),
            allowed_hosts: vec!["fcm.googleapis.com".into()],
            ..PushConfig::default()
        };
        good.validate().expect("valid");
        let check = |edit: fn(&mut PushConfig), field: &str| {
            let mut c = good.clone();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.contains(field), "{err} should name {field}");
        };
        check(|c| c.contact = "ops".into(), "contact");
        check(|c| c.allowed_hosts.clear(), "allowed_hosts");
        check(|c| c.min_interval_secs = 0, "min_interval_secs");
        check(|c| c.max_attempts = 0, "max_attempts");
        check(|c| c.retry_base_ms = c.retry_max_ms + 1, "retry_base_ms");
        check(|c| c.ttl_secs = 30 * 24 * 3600, "ttl_secs");
        check(|c| c.max_tracked_devices = 0, "max_tracked_devices");
        check(|c| c.max_interval_secs = 1, "max_interval_secs");
        check(|c| c.wakeup_burst_per_sender = 0, "wakeup_burst_per_sender");
        check(|c| c.proxy = Some("not a url".into()), "proxy");
    }
}
