//! Identifiers at the boundary: lowercase hex of their bytes.

use conclave_sdk::meeting::MeetingId;
use conclave_sdk::{DeviceId, UserId};

use crate::ConclaveError;

/// Hex of any identifier's bytes.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn parse<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], ConclaveError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s.trim(), &mut out).map_err(|_| ConclaveError::InvalidArgument {
        what: what.to_string(),
        reason: format!("expected {} hex digits", N * 2),
    })?;
    Ok(out)
}

/// A user id from its hex form.
pub(crate) fn user_id(s: &str) -> Result<UserId, ConclaveError> {
    parse::<32>("user id", s).map(UserId::from_bytes)
}

/// User ids from their hex forms; the first bad one is the error.
pub(crate) fn user_ids(list: &[String]) -> Result<Vec<UserId>, ConclaveError> {
    list.iter().map(|s| user_id(s)).collect()
}

/// A meeting id from its hex form.
pub(crate) fn meeting_id(s: &str) -> Result<MeetingId, ConclaveError> {
    parse::<32>("meeting id", s).map(MeetingId::from_bytes)
}

/// Hex of a user id.
pub(crate) fn user_hex(id: &UserId) -> String {
    to_hex(id.as_bytes())
}

/// Hex of a device id.
pub(crate) fn device_hex(id: &DeviceId) -> String {
    to_hex(id.as_bytes())
}

/// Hex of a meeting id.
pub(crate) fn meeting_hex(id: &MeetingId) -> String {
    to_hex(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex() {
        let user = UserId::from_username("alice").expect("valid username");
        assert_eq!(user_id(&user_hex(&user)).ok(), Some(user));
        let meeting = MeetingId::from_bytes([7; 32]);
        assert_eq!(meeting_id(&meeting_hex(&meeting)).ok(), Some(meeting));
    }

    #[test]
    fn a_bad_id_names_what_was_expected() {
        let err = user_id("abc").expect_err("too short");
        assert_eq!(err.to_string(), "invalid user id: expected 64 hex digits");
        assert!(meeting_id(&"zz".repeat(32)).is_err());
    }
}
