//! Deterministic roster members and meetings for the protocol parts' unit tests.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::container::Recipient;
use crate::identity::{DeviceIdentity, PrekeyPool, UserIdentity, UserSigningKey, VerifiedPrekey};
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
    member_device(n, generation).0
}

/// [`member`], with its device's secrets.
fn member_device(n: u8, generation: u64) -> (RosterMember, DeviceIdentity) {
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
    let member = RosterMember::new(&identity, device.public().clone(), u32::from(n));
    (member, device)
}

/// [`member`] as a container recipient, with a fresh prekey valid from time 0 for
/// `prekey_ttl_ms`.
pub(crate) fn recipient(n: u8, generation: u64, prekey_ttl_ms: u64) -> Recipient {
    let (member, device) = member_device(n, generation);
    let mut rng = ChaCha20Rng::seed_from_u64(7_000 + u64::from(n));
    let mut pool = PrekeyPool::new(&device);
    let signed = pool
        .generate(&device, 1, UnixMillis(0), prekey_ttl_ms, &mut rng)
        .expect("a prekey");
    let prekey =
        VerifiedPrekey::verify(&signed[0], &member.device, UnixMillis(0)).expect("a valid prekey");
    Recipient::new(member.device, prekey).expect("the device's own prekey")
}

/// Device `n`'s secrets, as in [`member`] of generation 0.
pub(crate) fn device(n: u8) -> DeviceIdentity {
    member_device(n, 0).1
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
