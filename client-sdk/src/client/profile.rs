//! How a caller presents themself in an invitation: a display name and an avatar
//! reference, sealed inside the invite so the server never learns them.

use conclave_proto::v1;

/// Longest display name, in UTF-8 bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 128;

/// Longest avatar reference, in bytes.
pub const MAX_AVATAR_BYTES: usize = 512;

/// How this user presents themself to the people they invite ("Alice is calling"),
/// set in [`ClientConfig::profile`](super::ClientConfig::profile) and received as
/// [`Invitation::caller`](super::Invitation::caller).
///
/// It travels inside the sealed invite: the server never sees it. It is the inviter's
/// own claim (anyone can call themself "Bank"): the verified identity is the
/// invitation's user id, and an app shows the name next to what it knows of that user
/// (its contact entry, the safety code). `Debug` does not print the name.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerProfile {
    display_name: String,
    avatar: Option<String>,
}

/// Why a [`CallerProfile`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The display name is empty (after trimming white space).
    #[error("a display name must not be empty")]
    EmptyName,
    /// The display name is longer than [`MAX_DISPLAY_NAME_BYTES`].
    #[error("a display name of {len} bytes exceeds the {MAX_DISPLAY_NAME_BYTES}-byte limit")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The display name contains a control character (line breaks, escapes, ...).
    #[error("a display name must not contain control characters")]
    ControlCharacter,
    /// The avatar reference is longer than [`MAX_AVATAR_BYTES`].
    #[error("an avatar reference of {len} bytes exceeds the {MAX_AVATAR_BYTES}-byte limit")]
    AvatarTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl CallerProfile {
    /// A profile with `display_name` (trimmed; 1..=128 bytes, no control characters)
    /// and no avatar.
    pub fn new(display_name: &str) -> Result<Self, ProfileError> {
        let name = display_name.trim();
        if name.is_empty() {
            return Err(ProfileError::EmptyName);
        }
        if name.len() > MAX_DISPLAY_NAME_BYTES {
            return Err(ProfileError::NameTooLong { len: name.len() });
        }
        if name.chars().any(char::is_control) {
            return Err(ProfileError::ControlCharacter);
        }
        Ok(CallerProfile {
            display_name: name.to_string(),
            avatar: None,
        })
    }

    /// Adds a reference to an avatar image (a URL, a content hash, an id the app
    /// understands; at most 512 bytes). The callee's app decides whether to fetch it:
    /// fetching a URL tells its server that the callee is being called.
    pub fn with_avatar(mut self, avatar: &str) -> Result<Self, ProfileError> {
        if avatar.len() > MAX_AVATAR_BYTES {
            return Err(ProfileError::AvatarTooLong { len: avatar.len() });
        }
        self.avatar = (!avatar.is_empty()).then(|| avatar.to_string());
        Ok(self)
    }

    /// The display name.
    #[must_use]
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// The avatar reference, if any.
    #[must_use]
    pub fn avatar(&self) -> Option<&str> {
        self.avatar.as_deref()
    }

    pub(crate) fn to_wire(&self) -> v1::CallerProfile {
        v1::CallerProfile {
            display_name: self.display_name.clone(),
            avatar: self.avatar.clone().unwrap_or_default(),
        }
    }

    /// The profile a received invite carries, if it is one this SDK would have sent;
    /// anything else (too long, control characters) is dropped, not shown.
    pub(crate) fn from_wire(wire: Option<&v1::CallerProfile>) -> Option<Self> {
        let wire = wire?;
        let profile = CallerProfile::new(&wire.display_name)
            .and_then(|p| p.with_avatar(&wire.avatar))
            .inspect_err(|e| tracing::debug!(error = %e, "an invite's caller profile was dropped"))
            .ok()?;
        // Only what `new` keeps unchanged: a name with surrounding space was not ours.
        (profile.display_name == wire.display_name).then_some(profile)
    }
}

impl core::fmt::Debug for CallerProfile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CallerProfile")
            .field(
                "display_name",
                &format_args!("<{} bytes>", self.display_name.len()),
            )
            .field("avatar", &self.avatar.as_ref().map(String::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(
            CallerProfile::new("  Alice  ").unwrap().display_name(),
            "Alice"
        );
        assert_eq!(CallerProfile::new(" \t"), Err(ProfileError::EmptyName));
        assert_eq!(
            CallerProfile::new(&"a".repeat(129)),
            Err(ProfileError::NameTooLong { len: 129 })
        );
        assert!(CallerProfile::new(&"é".repeat(64)).is_ok());
        assert_eq!(
            CallerProfile::new("Alice\u{1b}[2J"),
            Err(ProfileError::ControlCharacter)
        );
        let long = "x".repeat(513);
        assert_eq!(
            CallerProfile::new("A").unwrap().with_avatar(&long),
            Err(ProfileError::AvatarTooLong { len: 513 })
        );
    }

    #[test]
    fn a_profile_survives_the_wire_and_a_bad_one_is_dropped() {
        let p = CallerProfile::new("Alice")
            .unwrap()
            .with_avatar("https://img.example/alice.png")
            .unwrap();
        assert_eq!(CallerProfile::from_wire(Some(&p.to_wire())), Some(p));
        for (name, avatar) in [
            ("", ""),
            ("Al\nice", ""),
            (" Alice", ""),
            ("A", &*"x".repeat(600)),
        ] {
            let wire = v1::CallerProfile {
                display_name: name.into(),
                avatar: avatar.to_string(),
            };
            assert_eq!(CallerProfile::from_wire(Some(&wire)), None, "{name:?}");
        }
        assert_eq!(CallerProfile::from_wire(None), None);
    }

    #[test]
    fn debug_never_shows_the_name() {
        let p = CallerProfile::new("Alice Liddell").unwrap();
        assert!(!format!("{p:?}").contains("Alice"));
    }
}
