//! Every participant derives the same safety number for an epoch, and a rekey changes
//! it. The safety words come from a commitment round through the meeting's room
//! (review M4): every participant's device commits to a nonce, then reveals it, and all
//! of them get the same words, again after a rekey.

use conclave_sdk::client::{MediaKind, Meeting};
use conclave_sdk::meeting::Epoch;
use conclave_sdk::safety::SafetyWords;
use conclave_testkit::prelude::*;

/// Waits (bounded) until every meeting has the same safety words for `epoch`.
async fn matching_words(meetings: &[&Meeting], epoch: Epoch) -> SafetyWords {
    tokio::time::timeout(WAIT, async {
        loop {
            let words: Vec<Option<SafetyWords>> =
                meetings.iter().map(|m| m.safety_words()).collect();
            if let Some(Some(first)) = words.first()
                && first.epoch() == epoch
                && words.iter().all(|w| w.as_ref() == Some(first))
            {
                return *first;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every participant gets the same safety words")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_codes_match_across_participants() {
    let sfu = TestSfu::start_for_clients().await;
    let ThreeParty {
        users: [_alice, _bob, _carol],
        devices: [_a, _b, _c],
        meetings: [meeting_a, meeting_b, meeting_c],
    } = ThreeParty::start(&sfu, ["alice", "bob", "carol"], &[MediaKind::Audio]).await;

    let code = meeting_a
        .safety_code()
        .expect("a code for the current epoch");
    assert_eq!(meeting_b.safety_code().as_ref(), Some(&code));
    assert_eq!(meeting_c.safety_code().as_ref(), Some(&code));
    assert_eq!(code.number().len(), 60);
    let epoch = meeting_a.sending_epoch();
    let words = matching_words(&[&meeting_a, &meeting_b, &meeting_c], epoch).await;

    // Carol leaves: Alice and Bob agree on a new code.
    let epoch = meeting_a.sending_epoch();
    meeting_c.leave().await.unwrap();
    wait_epoch_above(&meeting_a, epoch).await;
    wait_epoch_above(&meeting_b, epoch).await;
    let after = meeting_a.safety_code().unwrap();
    assert_ne!(after, code);
    assert_eq!(meeting_b.safety_code(), Some(after));
    let new_epoch = meeting_a.sending_epoch();
    let new_words = matching_words(&[&meeting_a, &meeting_b], new_epoch).await;
    assert_eq!(new_words.epoch(), new_epoch);
    assert_eq!(words.epoch(), epoch);
}
