//! Every invitee replies to the key leader at once. The leader keeps only a few
//! prekeys on the server, so most replies find none left: they are sent again once the
//! leader has replenished, and every reply arrives.

use std::collections::BTreeSet;

use conclave_sdk::client::{MediaKind, MeetingEvent};
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_a_leader_whose_prekeys_ran_out() {
    let sfu = TestSfu::start_for_clients().await;
    let leader = User::new("leader");
    let mut config = sfu.client_config();
    // Three prekeys on the server for six replies arriving together.
    config.prekey_target = 3;
    let l = leader.connect_with(config).await;
    let users: Vec<User> = (0..6).map(|i| User::new(&format!("invitee{i}"))).collect();
    let mut devices = Vec::new();
    for u in &users {
        devices.push(u.connect(&sfu).await);
    }
    let ids: Vec<_> = users.iter().map(User::id).collect();
    let (mut meeting, _) = l
        .client
        .start_meeting(&ids, &[MediaKind::Audio])
        .await
        .unwrap();
    let mut invitations = Vec::new();
    for d in &mut devices {
        invitations.push(d.invitation().await);
    }
    // Accept all at once, so the replies race for the leader's prekeys.
    let mut accepts = tokio::task::JoinSet::new();
    for (d, invitation) in devices.iter().zip(invitations) {
        let client = d.client.clone();
        accepts.spawn(async move { client.accept(&invitation, &[MediaKind::Audio]).await });
    }
    let mut joined = Vec::new();
    while let Some(accepted) = accepts.join_next().await {
        joined.push(accepted.expect("accept task").expect("accept"));
    }

    let mut replied = BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        while replied.len() < ids.len() {
            if let Some(MeetingEvent::Reply {
                from,
                accepted: true,
                ..
            }) = meeting.next_event().await
            {
                replied.insert(from.user_id);
            }
        }
    })
    .await
    .expect("every reply reaches the leader");
    assert_eq!(replied, ids.iter().copied().collect());
}
