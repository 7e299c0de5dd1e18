// Tests may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::config::Config;

fn listener(shards: usize, store_threads: usize) -> (tempfile::TempDir, Listener) {
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = crate::tls::load_or_generate_dev(dir.path()).unwrap();
    let config = Config::default();
    let server_config =
        crate::tls::server_config(&identity, &config.timing, &config.limits).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = Listener::bind(addr, server_config, shards, "st-test", store_threads).unwrap();
    (dir, listener)
}

/// The server runs every store call with `spawn_blocking` on the shard's runtime
/// (`Shared::blocking`). Unbounded, each call that finds the threads busy starts
/// another (tokio allows 512): 100 clients registering against a redb file made 86
/// threads, each with a stack and, with glibc, an allocator arena that keeps what it
/// once held. Bounded, calls wait their turn.
#[test]
fn a_shards_store_calls_run_on_at_most_its_store_threads() {
    const STORE_THREADS: usize = 2;
    const CALLS: usize = 24;
    let (_dir, listener) = listener(2, STORE_THREADS);
    for shard in listener.shards() {
        let runtime = shard
            .runtime
            .clone()
            .expect("a bound shard runs its own runtime");
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let calls = run_blocking_calls(&runtime, CALLS, &seen);
        assert_eq!(calls, CALLS, "every call ran");
        let threads = seen.lock().unwrap().len();
        assert!(
            (1..=STORE_THREADS).contains(&threads),
            "shard {}: {CALLS} overlapping store calls ran on {threads} threads",
            shard.index
        );
    }
}

/// Starts `n` blocking calls at once on `runtime`, each spawned from a task on it (as
/// the server's store calls are), holding its thread for a while and recording its id
/// in `seen`; returns how many finished.
fn run_blocking_calls(
    runtime: &Handle,
    n: usize,
    seen: &Arc<Mutex<HashSet<std::thread::ThreadId>>>,
) -> usize {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let (seen, done_tx) = (Arc::clone(seen), done_tx.clone());
        runtime.spawn(async move {
            let ran = tokio::task::spawn_blocking(move || {
                seen.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(Duration::from_millis(5));
            })
            .await;
            let _ = done_tx.send(ran.is_ok());
        });
    }
    drop(done_tx);
    done_rx.iter().filter(|ok| *ok).count()
}
