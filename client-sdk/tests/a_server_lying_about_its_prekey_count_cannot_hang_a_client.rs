//! A hostile server answers every prekey upload of a device with "I hold none"
//! (`prekeys_held: 0`), never with an error. The client tops its pool up in a bounded
//! number of uploads and gets on with its work. Before, the top-up loop trusted the
//! count: it generated, signed and uploaded prekeys forever, and the client core never
//! read another command, so the client hung while still connected.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use conclave_proto::v1::{self, client_frame::Request, response, server_frame};
use conclave_sdk::client::MediaKind;
use conclave_testkit::prelude::*;

/// Uploads a client makes while it connects and runs one meeting whose invitation and
/// answer each pop its prekeys: a handful of top-up rounds of at most two uploads each
/// (the default target of 100 prekeys is one batch, plus one upload to see whether the
/// server's count rose).
const MAX_UPLOADS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lying_about_its_prekey_count_cannot_hang_a_client() {
    let sfu = TestSfu::start_hostile(client_test_config()).await;
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let alice_creds = alice.credentials();
    let alice_device = *alice_creds.device_id().as_bytes();
    // The server notes Alice's uploads and answers each, whatever happened to it
    // (stored, or refused by the server's own limits), with "I hold none".
    let uploads = Arc::new(Mutex::new(HashSet::new()));
    let noted = Arc::clone(&uploads);
    sfu.adversary().on_requests(Box::new(move |from, frame| {
        if from == Some(alice_device) && matches!(frame.request, Some(Request::UploadPrekeys(_))) {
            noted.lock().unwrap().insert(frame.request_id);
        }
        true
    }));
    let noted = Arc::clone(&uploads);
    sfu.adversary().on_frames(Box::new(move |to, frame| {
        if to == Some(alice_device)
            && let Some(server_frame::Kind::Response(r)) = &mut frame.kind
            && noted.lock().unwrap().contains(&r.request_id)
        {
            r.result = Some(response::Result::PrekeysUploaded(v1::PrekeysUploaded {
                prekeys_held: 0,
            }));
        }
        true
    }));

    // Connecting tops the pool up; the client answers commands afterwards.
    let a = alice.connect_credentials(&sfu, alice_creds).await;
    let mut b = bob.connect(&sfu).await;
    let (meeting_a, _) = tokio::time::timeout(
        WAIT,
        a.client.start_meeting(&[bob.id()], &[MediaKind::Audio]),
    )
    .await
    .expect("Alice's client answers a command after connecting")
    .unwrap();
    let mut meeting_b = b.accept_next(&[MediaKind::Audio]).await;
    deliver(&meeting_a, MediaKind::Audio, b"hello", &mut meeting_b).await;
    let made = uploads.lock().unwrap().len();
    assert!(
        (1..=MAX_UPLOADS).contains(&made),
        "{made} prekey uploads (at most {MAX_UPLOADS})"
    );
}
