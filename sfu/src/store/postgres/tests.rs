//! What only PostgreSQL has: schema versions, connection failures, several nodes
//! (stores) on one database. The [`Store`] semantics are the conformance suite's.

use super::testing::fresh_database;
use super::*;
use crate::store::MailboxQuota;

fn options(url: String) -> PgOptions {
    let mut options = PgOptions::new(url);
    options.pool_size = 4;
    options
}

fn connect(url: &str) -> PgStore {
    PgStore::connect(&options(url.to_string())).expect("the test database accepts the schema")
}

#[test]
fn a_new_database_gets_the_current_schema_and_a_second_start_changes_nothing() {
    let url = fresh_database();
    assert_eq!(connect(&url).schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(connect(&url).schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn nodes_starting_together_migrate_once() {
    let url = fresh_database();
    let versions: Vec<u64> = std::thread::scope(|scope| {
        let nodes: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| connect(&url).schema_version().unwrap()))
            .collect();
        nodes.into_iter().map(|n| n.join().unwrap()).collect()
    });
    assert_eq!(versions, vec![SCHEMA_VERSION; 4]);
}

#[test]
fn a_database_written_by_a_newer_server_is_refused() {
    let url = fresh_database();
    let store = connect(&url);
    store
        .block_on(async {
            let client = store.client().await?;
            client
                .execute(
                    "UPDATE conclave_schema SET version = $1",
                    &[&to_sql(SCHEMA_VERSION + 7)],
                )
                .await
                .map_err(pg)
        })
        .unwrap();
    drop(store);
    let err = PgStore::connect(&options(url)).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedSchema { found, supported }
            if found == SCHEMA_VERSION + 7 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert!(err.to_string().contains("schema version"), "{err}");
}

#[test]
fn an_unreachable_server_is_a_clear_error_within_the_timeout() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut options = options(format!("postgres://conclave@127.0.0.1:{port}/conclave"));
    options.connect_timeout = Duration::from_secs(2);
    let err = PgStore::connect(&options).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Backend(
                BackendError::PostgresUnreachable(_) | BackendError::ConnectTimeout(_)
            )
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("storage backend failed"), "{err}");
    let source = std::error::Error::source(&err).expect("the backend error is the source");
    assert!(source.to_string().contains("PostgreSQL"), "{source}");
}

#[test]
fn a_malformed_url_or_ca_file_is_refused_before_connecting() {
    let err =
        PgStore::connect(&options("postgres://conclave@host:notaport/db".into())).unwrap_err();
    assert!(
        matches!(err, StoreError::Backend(BackendError::InvalidUrl(_))),
        "{err:?}"
    );
    let mut with_ca = options(fresh_database());
    with_ca.ca_file = Some("/nonexistent/ca.pem".into());
    let err = PgStore::connect(&with_ca).unwrap_err();
    assert!(
        matches!(err, StoreError::Backend(BackendError::CaFile { .. })),
        "{err:?}"
    );
}

#[test]
fn two_nodes_never_register_one_device_twice_or_hand_out_one_prekey_twice() {
    let url = fresh_database();
    let (a, b) = (connect(&url), connect(&url));
    let device = DeviceRecord {
        user_id: [1; 32],
        device_id: [2; 16],
        certificate: b"cert".to_vec(),
    };
    let outcomes: Vec<RegisterOutcome> = std::thread::scope(|scope| {
        let nodes = [&a, &b].map(|node| {
            let device = &device;
            scope.spawn(move || node.register_device(&[9; 32], device, 4).unwrap())
        });
        nodes.into_iter().map(|n| n.join().unwrap()).collect()
    });
    let mut sorted = outcomes.clone();
    sorted.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        sorted,
        [RegisterOutcome::AlreadyRegistered, RegisterOutcome::NewUser],
        "{outcomes:?}"
    );
    let prekeys: Vec<StoredPrekey> = (1..=50)
        .map(|id| StoredPrekey {
            prekey_id: id,
            expires_at_ms: 1_000,
            signed: vec![u8::try_from(id).unwrap_or(0)],
        })
        .collect();
    a.add_prekeys(&device.device_id, &prekeys, 100, 0).unwrap();
    let taken: Vec<u64> = std::thread::scope(|scope| {
        let nodes = [&a, &b, &a, &b].map(|node| {
            scope.spawn(move || {
                let mut got = Vec::new();
                while let Some(p) = node.take_prekeys(&[[2; 16]], 0).unwrap()[0].prekey.take() {
                    got.push(p.prekey_id);
                }
                got
            })
        });
        nodes.into_iter().flat_map(|n| n.join().unwrap()).collect()
    });
    let mut unique = taken.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), taken.len(), "a prekey was handed out twice");
    assert_eq!(unique, (1..=50).collect::<Vec<_>>());
}

#[test]
fn two_nodes_sending_together_never_overshoot_a_quota() {
    let url = fresh_database();
    let nodes = [connect(&url), connect(&url)];
    let quota = MailboxQuota {
        max_per_device: 1000,
        max_per_sender_per_device: 1000,
        max_sender_bytes: 1000,
        max_total_bytes: u64::MAX,
    };
    let stored: usize = std::thread::scope(|scope| {
        let senders: Vec<_> = nodes
            .iter()
            .cycle()
            .take(6)
            .map(|node| {
                scope.spawn(move || {
                    let new = NewContainer {
                        sender: &[5; 32],
                        recipients: &[[1; 16], [2; 16]],
                        container: &[0; 100],
                        stored_at_ms: 0,
                        expires_at_ms: 1000,
                    };
                    (0..5)
                        .filter(|_| match node.mailbox_store(&new, &quota) {
                            Ok(_) => true,
                            Err(StoreError::SenderQuota { .. }) => false,
                            Err(e) => panic!("unexpected {e:?}"),
                        })
                        .count()
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).sum()
    });
    // 1000 bytes allow ten 100-byte containers (each counted once for both recipients).
    assert_eq!(stored, 10);
    assert_eq!(nodes[1].mailbox_sender_bytes(&[5; 32]).unwrap(), 1000);
    let usage = nodes[0].mailbox_usage().unwrap();
    assert_eq!(
        (usage.bytes, usage.containers, usage.entries),
        (1000, 10, 20)
    );
}

#[test]
fn push_subscriptions_survive_reconnecting_and_a_version_3_database_gets_their_table() {
    let url = fresh_database();
    let subscription = |endpoint: &str| PushSubscription {
        endpoint: endpoint.to_string(),
        p256dh: [4; 65],
        auth: [9; 16],
        updated_at_ms: 1234,
    };
    let device = DeviceRecord {
        user_id: [1; 32],
        device_id: [2; 16],
        certificate: b"cert".to_vec(),
    };
    let store = connect(&url);
    store.register_device(&[9; 32], &device, 4).unwrap();
    store
        .set_push_subscription(&[2; 16], &subscription("https://push.example/a"))
        .unwrap();
    drop(store);
    let store = connect(&url);
    assert_eq!(
        store.push_subscription(&[2; 16]).unwrap(),
        Some(subscription("https://push.example/a"))
    );
    // Back to what version 3 had: no table, version 3. Starting migrates again.
    store
        .block_on(async {
            let client = store.client().await?;
            client
                .batch_execute(
                    "DROP TABLE push_subscriptions; UPDATE conclave_schema SET version = 3",
                )
                .await
                .map_err(pg)
        })
        .unwrap();
    drop(store);
    let store = connect(&url);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.push_subscription(&[2; 16]).unwrap(), None);
    store
        .set_push_subscription(&[2; 16], &subscription("https://push.example/b"))
        .unwrap();
    assert!(
        store
            .clear_push_subscription(&[2; 16], Some("https://push.example/b"))
            .unwrap()
    );
}

#[test]
fn a_malformed_push_subscription_row_is_reported_as_corrupt() {
    let store = connect(&fresh_database());
    let device = DeviceRecord {
        user_id: [1; 32],
        device_id: [2; 16],
        certificate: b"cert".to_vec(),
    };
    store.register_device(&[9; 32], &device, 4).unwrap();
    for (column, bad) in [("auth", "'\\x0102'::bytea"), ("p256dh", "'\\x04'::bytea")] {
        let sql = format!(
            "ALTER TABLE push_subscriptions DROP CONSTRAINT IF EXISTS push_subscriptions_{column}_check;
             DELETE FROM push_subscriptions;
             INSERT INTO push_subscriptions (device_id, endpoint, p256dh, auth, updated_at_ms)
             VALUES ('\\x{}'::bytea, 'https://push.example/x', '\\x{}'::bytea, '\\x{}'::bytea, 1);
             UPDATE push_subscriptions SET {column} = {bad};",
            "02".repeat(16),
            "04".repeat(65),
            "09".repeat(16),
        );
        store
            .block_on(async {
                let client = store.client().await?;
                client.batch_execute(&sql).await.map_err(pg)
            })
            .unwrap();
        let result = store.push_subscription(&[2; 16]);
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    }
}
