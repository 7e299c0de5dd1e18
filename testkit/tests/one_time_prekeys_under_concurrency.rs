//! One-time prekeys are handed out at most once, even to many fetchers at the same
//! time; the owner is warned when its pool runs low; uploads are checked whole.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use conclave_proto::v1::{self, ErrorCode, client_frame::Request, response};
use conclave_sdk::identity::{
    DEFAULT_PREKEY_TTL_MS, DeviceIdentity, PrekeyPool, UserIdentity, VerifiedDevice, VerifiedPrekey,
};
use conclave_sfu::store::{MemoryStore, RedbStore};
use conclave_testkit::clock::now;
use conclave_testkit::identity::User;
use conclave_testkit::protocol::TestClient;
use conclave_testkit::sfu::{TestSfu, test_config};
use rand_core::OsRng;
use tokio::sync::Barrier;

/// Generates `count` prekeys for `device` (ids continue from the pool's last one).
fn prekeys(device: &DeviceIdentity, pool: &mut PrekeyPool, count: usize) -> Vec<v1::SignedPrekey> {
    pool.generate(device, count, now(), DEFAULT_PREKEY_TTL_MS, &mut OsRng)
        .unwrap()
}

async fn upload(
    client: &TestClient,
    prekeys: Vec<v1::SignedPrekey>,
) -> Result<u32, conclave_sdk::transport::TransportError> {
    match client
        .request(Request::UploadPrekeys(v1::UploadPrekeys {
            prekeys,
            replace: false,
            last_resort: None,
        }))
        .await?
    {
        response::Result::PrekeysUploaded(r) => Ok(r.prekeys_held),
        other => panic!("expected PrekeysUploaded, got {other:?}"),
    }
}

/// Fetches the bundle of `owner`'s single device.
async fn fetch_device_bundle(client: &TestClient, owner: &UserIdentity) -> v1::DeviceBundle {
    let r = client
        .request(Request::FetchBundles(v1::FetchBundles {
            user_ids: vec![owner.user_id.as_bytes().to_vec()],
            ..Default::default()
        }))
        .await
        .unwrap();
    let response::Result::Bundles(mut bundles) = r else {
        panic!("expected Bundles, got {r:?}");
    };
    assert_eq!(bundles.users.len(), 1);
    let mut user = bundles.users.remove(0);
    assert_eq!(user.devices.len(), 1, "the owner has exactly one device");
    user.devices.remove(0)
}

/// The verified id of the prekey in `bundle`, or `None` if the bundle says exhausted.
fn prekey_id(bundle: &v1::DeviceBundle, owner: &UserIdentity) -> Option<u64> {
    let device = VerifiedDevice::verify(bundle.certificate.as_ref().unwrap(), owner, now())
        .expect("the owner's certificate verifies");
    match &bundle.prekey {
        Some(prekey) => {
            assert!(
                !bundle.prekeys_exhausted,
                "a bundle with a prekey is not exhausted"
            );
            let verified = VerifiedPrekey::verify(prekey, &device, now())
                .expect("a handed-out prekey verifies against the owner's certificate");
            Some(verified.prekey_id())
        }
        None => {
            assert!(
                bundle.prekeys_exhausted,
                "a bundle without a prekey says the pool is exhausted"
            );
            None
        }
    }
}

fn prekeys_low(e: v1::event::Event) -> Option<v1::PrekeysLow> {
    match e {
        v1::event::Event::PrekeysLow(p) => Some(p),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetchers_each_get_a_distinct_prekey_until_the_pool_is_exhausted() {
    fetch_storm(TestSfu::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_durable_store_concurrent_fetchers_also_get_distinct_prekeys() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("conclave.redb")).unwrap();
    fetch_storm(TestSfu::start_with(test_config(), Arc::new(store)).await).await;
}

/// Eight fetchers race for the 60 prekeys of one owner.
async fn fetch_storm(server: TestSfu) {
    const PREKEYS: usize = 60;
    const FETCHERS: usize = 8;
    let owner = User::new("owner");
    let (mut owner_client, owner_device) = TestClient::registered(&server, &owner).await;
    // A new device holds no prekeys and is told so right away.
    let first = owner_client.event(prekeys_low).await;
    assert_eq!((first.prekeys_held, first.threshold), (0, 20));

    let mut pool = PrekeyPool::new(&owner_device);
    let uploaded = prekeys(&owner_device, &mut pool, PREKEYS);
    let uploaded_ids: BTreeSet<u64> = uploaded
        .iter()
        .map(|p| {
            VerifiedPrekey::verify(p, owner_device.public(), now())
                .unwrap()
                .prekey_id()
        })
        .collect();
    assert_eq!(uploaded_ids.len(), PREKEYS);
    assert_eq!(
        upload(&owner_client, uploaded).await.unwrap() as usize,
        PREKEYS
    );

    // Every fetcher is its own user with its own device and connection.
    let mut fetchers = Vec::new();
    for i in 0..FETCHERS {
        let user = User::new(&format!("fetcher-{i}"));
        fetchers.push(TestClient::registered(&server, &user).await.0);
    }
    let start = Arc::new(Barrier::new(FETCHERS));
    let mut tasks = Vec::new();
    for client in fetchers {
        let owner = owner.identity;
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut got = Vec::new();
            // Even a fetcher that wins every race is told "exhausted" on fetch N + 1.
            for _ in 0..=PREKEYS {
                let bundle = fetch_device_bundle(&client, &owner).await;
                match prekey_id(&bundle, &owner) {
                    Some(id) => got.push(id),
                    None => return (got, true),
                }
            }
            (got, false)
        }));
    }
    let mut handed_out = Vec::new();
    for task in tasks {
        let (got, saw_exhausted) = task.await.unwrap();
        assert!(saw_exhausted, "every fetcher ends on an exhausted pool");
        handed_out.extend(got);
    }

    let distinct: BTreeSet<u64> = handed_out.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        handed_out.len(),
        "no prekey was handed out twice: {handed_out:?}"
    );
    assert_eq!(handed_out.len(), PREKEYS, "every prekey was handed out");
    assert_eq!(distinct, uploaded_ids, "exactly the uploaded prekeys");

    // Later fetches keep saying exhausted, with the certificate but no prekey.
    let late = TestClient::registered(&server, &User::new("late")).await.0;
    for _ in 0..2 {
        let bundle = fetch_device_bundle(&late, &owner.identity).await;
        assert!(bundle.prekeys_exhausted);
        assert!(bundle.prekey.is_none());
        assert!(bundle.certificate.is_some());
    }
    let owner_id = *owner_device.device_id().as_bytes();
    assert_eq!(server.store.prekey_count(&owner_id).unwrap(), 0);

    // The owner, online throughout, was warned below the threshold, down to zero.
    let mut lowest = u32::MAX;
    while lowest > 0 {
        let low = owner_client.event(prekeys_low).await;
        assert_eq!(low.threshold, 20);
        assert!(
            low.prekeys_held < 20,
            "warned only below the threshold: {low:?}"
        );
        lowest = lowest.min(low.prekeys_held);
    }
}

#[tokio::test]
async fn the_owner_is_warned_once_its_pool_drops_below_the_threshold() {
    let server = TestSfu::start().await;
    let owner = User::new("owner");
    let (mut owner_client, owner_device) = TestClient::registered(&server, &owner).await;
    let first = owner_client.event(prekeys_low).await;
    assert_eq!(first.prekeys_held, 0);

    let mut pool = PrekeyPool::new(&owner_device);
    assert_eq!(
        upload(&owner_client, prekeys(&owner_device, &mut pool, 22))
            .await
            .unwrap(),
        22
    );
    let fetcher = TestClient::registered(&server, &User::new("fetcher"))
        .await
        .0;
    // 22 → 21 → 20: still at the threshold, no warning.
    for _ in 0..2 {
        fetch_device_bundle(&fetcher, &owner.identity).await;
    }
    owner_client.round_trip().await;
    fetcher.round_trip().await;
    let early: Vec<_> = owner_client
        .received_events()
        .into_iter()
        .filter_map(prekeys_low)
        .collect();
    assert!(early.is_empty(), "no warning at 21 or 20 held: {early:?}");

    // 20 → 19: below the threshold of 20.
    fetch_device_bundle(&fetcher, &owner.identity).await;
    let low = owner_client.event(prekeys_low).await;
    assert_eq!((low.prekeys_held, low.threshold), (19, 20));

    // Reconnecting with few prekeys warns again; uploading more does not.
    owner_client.conn.close().await;
    let mut again = TestClient::connect(&server).await;
    let auth = again.authenticate(&owner_device).await.unwrap();
    assert_eq!(auth.prekeys_held, 19);
    let low = again.event(prekeys_low).await;
    assert_eq!(low.prekeys_held, 19);
    assert_eq!(
        upload(&again, prekeys(&owner_device, &mut pool, 10))
            .await
            .unwrap(),
        29
    );
}

#[tokio::test]
async fn an_upload_above_max_prekeys_per_upload_is_refused_whole() {
    let mut config = test_config();
    config.limits.max_prekeys_per_upload = 10;
    let server = TestSfu::start_with(config, Arc::new(MemoryStore::new())).await;
    let owner = User::new("owner");
    let (client, device) = TestClient::registered(&server, &owner).await;
    let mut pool = PrekeyPool::new(&device);

    let err = upload(&client, prekeys(&device, &mut pool, 11))
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::LimitExceeded), "{err}");
    assert!(err.to_string().contains("max_prekeys_per_upload"), "{err}");
    let id = *device.device_id().as_bytes();
    assert_eq!(server.store.prekey_count(&id).unwrap(), 0, "nothing stored");

    // Exactly the limit is fine.
    assert_eq!(
        upload(&client, prekeys(&device, &mut pool, 10))
            .await
            .unwrap(),
        10
    );
    assert_eq!(server.store.prekey_count(&id).unwrap(), 10);
}

#[tokio::test]
async fn a_prekey_not_signed_by_the_uploading_device_is_refused_and_nothing_is_stored() {
    let server = TestSfu::start().await;
    let owner = User::new("owner");
    let (client, device) = TestClient::registered(&server, &owner).await;
    let id = *device.device_id().as_bytes();
    let mut pool = PrekeyPool::new(&device);
    assert_eq!(
        upload(&client, prekeys(&device, &mut pool, 5))
            .await
            .unwrap(),
        5
    );

    // Another device of the same user (same user key, but not this device).
    let other = owner.device();
    let mut other_pool = PrekeyPool::new(&other);
    let foreign = prekeys(&other, &mut other_pool, 1).remove(0);

    // 1. The other device's prekey, in a batch with valid ones.
    let mut batch = prekeys(&device, &mut pool, 3);
    batch.push(foreign.clone());
    let err = upload(&client, batch).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadProof), "{err}");
    assert!(err.to_string().contains("nothing stored"), "{err}");
    assert_eq!(
        server.store.prekey_count(&id).unwrap(),
        5,
        "count unchanged"
    );

    // 2. This device's prekey body with the other device's signature.
    let mut forged = prekeys(&device, &mut pool, 1).remove(0);
    forged.signature = foreign.signature;
    let mut batch = prekeys(&device, &mut pool, 2);
    batch.insert(1, forged);
    let err = upload(&client, batch).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadProof), "{err}");
    assert_eq!(
        server.store.prekey_count(&id).unwrap(),
        5,
        "count unchanged"
    );

    // Nothing of the refused batches is ever handed out.
    let fetcher = TestClient::registered(&server, &User::new("fetcher"))
        .await
        .0;
    let mut ids = Vec::new();
    loop {
        let bundle = fetch_device_bundle(&fetcher, &owner.identity).await;
        match prekey_id(&bundle, &owner.identity) {
            Some(id) => ids.push(id),
            None => break,
        }
        assert!(ids.len() <= 5, "more prekeys than were accepted: {ids:?}");
    }
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn fetching_ones_own_user_returns_only_the_other_devices_and_spends_no_own_prekey() {
    let server = TestSfu::start().await;
    let alice = User::new("alice");
    let (c1, d1) = TestClient::registered(&server, &alice).await;
    let (c2, d2) = TestClient::registered(&server, &alice).await;
    let mut p1 = PrekeyPool::new(&d1);
    let mut p2 = PrekeyPool::new(&d2);
    upload(&c1, prekeys(&d1, &mut p1, 3)).await.unwrap();
    upload(&c2, prekeys(&d2, &mut p2, 3)).await.unwrap();

    let bundles = c1.fetch_bundles(&[&alice]).await.unwrap();
    let [user] = bundles.users.as_slice() else {
        panic!("one user bundle: {bundles:?}");
    };
    let [device] = user.devices.as_slice() else {
        panic!("only the other device: {user:?}");
    };
    let verified =
        VerifiedDevice::verify(device.certificate.as_ref().unwrap(), &alice.identity, now())
            .unwrap();
    assert_eq!(verified.device_id(), d2.device_id());
    assert!(device.prekey.is_some());
    let (id1, id2) = (*d1.device_id().as_bytes(), *d2.device_id().as_bytes());
    assert_eq!(
        server.store.prekey_count(&id1).unwrap(),
        3,
        "own pool untouched"
    );
    assert_eq!(server.store.prekey_count(&id2).unwrap(), 2);
}

async fn upload_last_resort(
    client: &TestClient,
    prekeys: Vec<v1::SignedPrekey>,
    last_resort: v1::SignedPrekey,
) -> Result<u32, conclave_sdk::transport::TransportError> {
    match client
        .request(Request::UploadPrekeys(v1::UploadPrekeys {
            prekeys,
            replace: false,
            last_resort: Some(last_resort),
        }))
        .await?
    {
        response::Result::PrekeysUploaded(r) => Ok(r.prekeys_held),
        other => panic!("expected PrekeysUploaded, got {other:?}"),
    }
}

/// The signed `last_resort` flag must match how a prekey is uploaded, and a
/// last-resort prekey must be the uploading device's; the accepted one is handed out,
/// never deleted, once the one-time prekeys are gone, and replaced by the next upload.
#[tokio::test]
async fn last_resort_uploads_are_checked_and_the_prekey_outlives_the_one_time_ones() {
    let server = TestSfu::start().await;
    let owner = User::new("owner");
    let (client, device) = TestClient::registered(&server, &owner).await;
    let id = *device.device_id().as_bytes();
    let mut pool = PrekeyPool::new(&device);
    pool.rotate_last_resort(&device, now(), DEFAULT_PREKEY_TTL_MS, &mut OsRng)
        .unwrap();
    let last_resort = pool.last_resort_prekey(&device).unwrap().unwrap();
    let other = owner.device();
    let mut other_pool = PrekeyPool::new(&other);
    other_pool
        .rotate_last_resort(&other, now(), DEFAULT_PREKEY_TTL_MS, &mut OsRng)
        .unwrap();
    let foreign = other_pool.last_resort_prekey(&other).unwrap().unwrap();

    // A last-resort prekey among the one-time ones.
    let mut batch = prekeys(&device, &mut pool, 2);
    batch.push(last_resort.clone());
    let err = upload(&client, batch).await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
    // A one-time prekey as the last-resort one.
    let one_time = prekeys(&device, &mut pool, 1).remove(0);
    let err = upload_last_resort(&client, Vec::new(), one_time)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadRequest), "{err}");
    // Another device's last-resort prekey.
    let err = upload_last_resort(&client, Vec::new(), foreign)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadProof), "{err}");
    assert_eq!(server.store.prekey_count(&id).unwrap(), 0);
    assert_eq!(server.store.last_resort_prekey(&id, 0).unwrap(), None);

    // Accepted alone or with one-time prekeys.
    assert_eq!(
        upload_last_resort(&client, prekeys(&device, &mut pool, 2), last_resort.clone())
            .await
            .unwrap(),
        2
    );
    let fetcher = TestClient::registered(&server, &User::new("fetcher"))
        .await
        .0;
    for _ in 0..2 {
        let bundle = fetch_device_bundle(&fetcher, &owner.identity).await;
        assert!(!bundle.last_resort && !bundle.prekeys_exhausted);
    }
    for _ in 0..3 {
        let bundle = fetch_device_bundle(&fetcher, &owner.identity).await;
        assert!(bundle.last_resort && bundle.prekeys_exhausted);
        assert_eq!(bundle.prekey.as_ref(), Some(&last_resort));
        let verified = VerifiedPrekey::verify(&last_resort, device.public(), now()).unwrap();
        assert!(verified.is_last_resort());
    }

    // A rotation replaces it.
    let later = now().saturating_add(conclave_sdk::identity::LAST_RESORT_ROTATION_MS);
    assert!(
        pool.rotate_last_resort(&device, later, DEFAULT_PREKEY_TTL_MS, &mut OsRng)
            .unwrap()
    );
    let rotated = pool.last_resort_prekey(&device).unwrap().unwrap();
    assert_ne!(rotated, last_resort);
    upload_last_resort(&client, Vec::new(), rotated.clone())
        .await
        .unwrap();
    let bundle = fetch_device_bundle(&fetcher, &owner.identity).await;
    assert_eq!(bundle.prekey, Some(rotated));
}
