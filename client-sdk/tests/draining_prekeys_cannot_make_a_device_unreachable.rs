//! Security review H2: any registered user can pop a victim's one-time prekeys. Each
//! pop leaves an orphaned private half in the victim's pool; once the pool was full,
//! the victim stopped replenishing and could not be invited for up to 60 days. Here an
//! attacker pops 5,000 of a victim's prekeys through a real SFU, and an invitation must
//! still reach the victim. The SFU's request and prekey-pop rate limits (the server's
//! own defence) are lifted, so the test shows the client's defence alone: many
//! attackers together could pop that many.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use conclave_proto::v1::{self, client_frame::Request, response};
use conclave_sdk::client::MediaKind;
use conclave_sfu::store::MemoryStore;
use conclave_testkit::hostile::raw_device;
use conclave_testkit::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_reaches_a_victim_after_5000_of_its_prekeys_were_popped() {
    let config = drain_test_config();
    let sfu = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let (alice, victim, mallory) = (
        User::new("alice"),
        User::new("victim"),
        User::new("mallory"),
    );
    let a = alice.connect(&sfu).await;
    let mut victim_config = sfu.client_config();
    victim_config.prekey_target = 100;
    let mut v = victim.connect_with(victim_config).await;
    let attacker = raw_device(&sfu, &mallory.credentials()).await;

    // Pop until 5,000 prekeys were taken, or until the victim has stopped
    // replenishing (nothing to take for two seconds): both bounded.
    let mut popped = 0;
    let mut dry_since = std::time::Instant::now();
    while popped < 5_000 && dry_since.elapsed() < std::time::Duration::from_secs(2) {
        let answer = attacker
            .request(Request::FetchBundles(v1::FetchBundles {
                user_ids: vec![victim.id().as_bytes().to_vec()],
                ..Default::default()
            }))
            .await
            .unwrap();
        let response::Result::Bundles(bundles) = answer else {
            panic!("expected Bundles");
        };
        let got = bundles
            .users
            .iter()
            .flat_map(|u| &u.devices)
            .filter(|d| d.prekey.is_some())
            .count();
        if got > 0 {
            popped += got;
            dry_since = std::time::Instant::now();
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    // Whatever the attack left, an invitation reaches the victim.
    let (_meeting, report) = tokio::time::timeout(WAIT, async {
        loop {
            match a
                .client
                .start_meeting(&[victim.id()], &[MediaKind::Audio])
                .await
            {
                Ok(started) => return started,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the victim can be invited within the wait bound");
    assert_eq!(report.invited, vec![(victim.id(), v.id())]);
    v.invitation().await;
}
