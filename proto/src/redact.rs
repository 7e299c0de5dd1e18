//! `Debug` for messages that carry secrets or private content: the meeting key and the
//! text are replaced by their length, so logging a payload never leaks them.

use std::fmt;

use crate::v1::{CallerProfile, MeetingInvite, Rekey, StoredCredentials, TextMessage};

struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0)
    }
}

impl fmt::Debug for MeetingInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeetingInvite")
            .field("meeting_id", &self.meeting_id)
            .field("epoch", &self.epoch)
            .field("meeting_key", &Redacted(self.meeting_key.len()))
            .field("media_kinds", &self.media_kinds)
            .field("roster", &self.roster)
            .field("key_leader_device_id", &self.key_leader_device_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("caller", &self.caller.as_ref().map(|_| Redacted(0)))
            .finish()
    }
}

impl fmt::Debug for CallerProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerProfile")
            .field("display_name", &Redacted(self.display_name.len()))
            .field("avatar", &Redacted(self.avatar.len()))
            .finish()
    }
}

impl fmt::Debug for Rekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rekey")
            .field("meeting_id", &self.meeting_id)
            .field("epoch", &self.epoch)
            .field("meeting_key", &Redacted(self.meeting_key.len()))
            .field("roster", &self.roster)
            .field("key_leader_device_id", &self.key_leader_device_id)
            .field("reason", &self.reason)
            .finish()
    }
}

impl fmt::Debug for TextMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextMessage")
            .field("text", &Redacted(self.text.len()))
            .finish()
    }
}

impl fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("username", &self.username)
            .field("user_public_key", &self.user_public_key)
            .field("certificate", &self.certificate)
            .field(
                "device_signing_key",
                &Redacted(self.device_signing_key.len()),
            )
            .field("device_key", &Redacted(self.device_key.len()))
            .field("prekey_pool", &Redacted(self.prekey_pool.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::v1::{self, container_payload::Body};

    #[test]
    fn debug_of_payloads_never_shows_keys_or_text() {
        let payloads = [
            Body::MeetingInvite(v1::MeetingInvite {
                meeting_key: vec![0xA7; 32],
                caller: Some(v1::CallerProfile {
                    display_name: "launch control".into(),
                    avatar: "https://launch.example/a.png".into(),
                }),
                ..Default::default()
            }),
            Body::Rekey(v1::Rekey {
                meeting_key: vec![0xA7; 32],
                ..Default::default()
            }),
            Body::Text(v1::TextMessage {
                text: "the launch code is 0000".into(),
            }),
        ];
        for body in payloads {
            let dbg = format!(
                "{:?}",
                v1::ContainerPayload {
                    body: Some(body),
                    ..Default::default()
                }
            );
            assert!(!dbg.contains("167"), "{dbg}"); // 0xA7 in decimal
            assert!(!dbg.contains("launch"), "{dbg}");
            assert!(dbg.contains("<redacted"), "{dbg}");
        }
    }

    #[test]
    fn debug_of_stored_credentials_never_shows_secrets() {
        let stored = v1::StoredCredentials {
            username: "alice".into(),
            device_signing_key: vec![0xA7; 32],
            device_key: vec![0xA7; 48],
            prekey_pool: vec![0xA7; 100],
            ..Default::default()
        };
        let dbg = format!("{stored:?}");
        assert!(!dbg.contains("167"), "{dbg}");
        assert!(
            dbg.contains("alice") && dbg.contains("<redacted 48 bytes>"),
            "{dbg}"
        );
    }
}
