//! Meetings of SDK clients: users connect one device each, the first starts a meeting
//! with the others, and every other device accepts. What most client tests, and the
//! examples, do before the part they are about.

use conclave_sdk::client::{MediaKind, Meeting};

use crate::clients::Device;
use crate::identity::User;
use crate::sfu::TestSfu;

/// `N` users with one connected device each, in one meeting that the first started.
pub struct Group<const N: usize> {
    /// The users, in the order they were named.
    pub users: [User; N],
    /// Their devices, in the same order.
    pub devices: [Device; N],
    /// Their meetings, in the same order: the first is the key leader's.
    pub meetings: [Meeting; N],
}

/// Three parties, the usual setup: `let ThreeParty { users: [alice, bob, carol], .. }`.
pub type ThreeParty = Group<3>;

impl<const N: usize> Group<N> {
    /// Users called `names` connect to `sfu` (in order), and the first starts a
    /// meeting with the others; everyone sends `kinds`.
    pub async fn start(sfu: &TestSfu, names: [&str; N], kinds: &[MediaKind]) -> Self {
        let (users, devices) = connect_users(sfu, names).await;
        Self::meet(users, devices, kinds).await
    }

    /// The first of the connected `devices` starts a meeting with the other `users`,
    /// and the others accept; everyone sends `kinds`.
    pub async fn meet(users: [User; N], mut devices: [Device; N], kinds: &[MediaKind]) -> Self {
        let meetings = start_and_accept(&users, &mut devices, kinds).await;
        Group {
            users,
            devices,
            meetings: into_array(meetings),
        }
    }
}

/// Users called `names`, each with one device connected to `sfu` (in order).
pub async fn connect_users<const N: usize>(
    sfu: &TestSfu,
    names: [&str; N],
) -> ([User; N], [Device; N]) {
    let users = names.map(User::new);
    let mut devices = Vec::with_capacity(N);
    for user in &users {
        devices.push(user.connect(sfu).await);
    }
    (users, into_array(devices))
}

/// The first of `devices` starts a meeting with the other `users` (the device at each
/// index belongs to the user at that index), and every other device accepts its
/// invitation, in order; everyone sends `kinds`. Returns the meetings, the key
/// leader's first.
pub async fn start_and_accept(
    users: &[User],
    devices: &mut [Device],
    kinds: &[MediaKind],
) -> Vec<Meeting> {
    let (leader, others) = devices.split_first_mut().expect("a leader device");
    let invitees: Vec<_> = users.iter().skip(1).map(User::id).collect();
    let (meeting, report) = leader
        .client
        .start_meeting(&invitees, kinds)
        .await
        .expect("start a meeting");
    assert!(
        report.refused.is_empty(),
        "every invitee's device verifies: {:?}",
        report.refused
    );
    let mut meetings = vec![meeting];
    for device in others {
        meetings.push(device.accept_next(kinds).await);
    }
    meetings
}

fn into_array<T, const N: usize>(items: Vec<T>) -> [T; N] {
    items
        .try_into()
        .ok()
        .expect("one item for each of the N parties")
}
