//! Every participant derives the same safety code for an epoch, and a rekey changes it.

mod support;

use conclave_sdk::client::MediaKind;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_codes_match_across_participants() {
    let sfu = Sfu::start().await;
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let a = alice.connect(&sfu).await;
    let mut b = bob.connect(&sfu).await;
    let mut c = carol.connect(&sfu).await;
    let (meeting_a, _) = a
        .client
        .start_meeting(&[bob.id(), carol.id()], &[MediaKind::Audio])
        .await
        .unwrap();
    let meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    let meeting_c = c.accept_next(&[MediaKind::Audio]).await;

    let code = meeting_a
        .safety_code()
        .expect("a code for the current epoch");
    assert_eq!(meeting_b.safety_code().as_ref(), Some(&code));
    assert_eq!(meeting_c.safety_code().as_ref(), Some(&code));
    assert_eq!(code.number().len(), 60);

    // Carol leaves: Alice and Bob agree on a new code.
    let epoch = meeting_a.sending_epoch();
    meeting_c.leave().await.unwrap();
    wait_epoch_above(&meeting_a, epoch).await;
    wait_epoch_above(&meeting_b, epoch).await;
    let after = meeting_a.safety_code().unwrap();
    assert_ne!(after, code);
    assert_eq!(meeting_b.safety_code(), Some(after));
}
