//! Deterministic roster members and meetings for the protocol parts' unit tests.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::identity::{DeviceIdentity, UserIdentity, UserSigningKey};
use crate::meeting::rekey::{MeetingState, RekeyConfig, Roster, RosterMember};
use crate::meeting::{Epoch, MeetingId, MeetingKey};
use crate::{DeviceId, UnixMillis, UserId};

/// Device `n`'s id.
pub(crate) fn dev(n: u8) -> DeviceId {
    DeviceId::from_slice(&[n; 16]).expect("16 bytes")
}

/// User `n`'s id.
pub(crate) fn user(n: u8) -> UserId {
    UserId::from_slice(&[n; 32]).expect("32 bytes")
}

/// Device `n` of user `n` at sender index `n`, with a real certificate; `generation`
/// picks its keys (a device whose certificate was replaced keeps its id, not its keys).
pub(crate) fn member(n: u8, generation: u64) -> RosterMember {
    let key = UserSigningKey::generate(&mut ChaCha20Rng::seed_from_u64(u64::from(n)));
    let identity = UserIdentity {
        user_id: user(n),
        key: key.public_key(),
    };
    let mut rng = ChaCha20Rng::seed_from_u64(1_000 * generation + u64::from(n));
    let device = DeviceIdentity::create_with_id(
        &key,
        user(n),
        dev(n),
        UnixMillis(0),
        u64::MAX / 2,
        &mut rng,
    )
    .expect("a valid certificate");
    RosterMember::new(&identity, device.public().clone(), u32::from(n))
}

/// Meeting `n`'s id.
pub(crate) fn meeting_id(n: u8) -> MeetingId {
    MeetingId::from_slice(&[n; 32]).expect("32 bytes")
}

/// Meeting `id` as started by device 1, with devices 2 and 3 on the roster.
pub(crate) fn started(id: MeetingId) -> MeetingState {
    let roster = Roster::new([member(1, 0), member(2, 0), member(3, 0)]).expect("a roster");
    let key = MeetingKey::generate(Epoch(0), &mut ChaCha20Rng::seed_from_u64(9));
    MeetingState::start(id, dev(1), roster, key, RekeyConfig::default()).expect("a meeting")
}
