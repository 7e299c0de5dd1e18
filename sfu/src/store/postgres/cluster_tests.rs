//! Leases, claims and fences on a real PostgreSQL, with several stores standing for
//! several nodes.

use std::time::Duration;

use super::testing::fresh_database;
use super::{PgOptions, PgStore};
use crate::store::{ClusterStore, Fence, NodeId, NodeInfo, RoomClaim, RoomRecord, Store};

const LEASE: Duration = Duration::from_secs(30);

fn node(name: &str, port: u16) -> NodeInfo {
    NodeInfo {
        node_id: NodeId::new(name).unwrap(),
        quic_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(),
        server_name: "sfu.test".into(),
    }
}

fn store(url: &str) -> PgStore {
    let mut options = PgOptions::new(url);
    options.pool_size = 4;
    PgStore::connect(&options).unwrap()
}

fn record(epoch: u64) -> RoomRecord {
    RoomRecord {
        epoch,
        auth_public: [u8::try_from(epoch).unwrap_or(0); 32],
        updated_at_ms: epoch,
        leaders: vec![[1; 16]],
    }
}

fn owned(claim: RoomClaim) -> Fence {
    match claim {
        RoomClaim::Owned(fence) => fence,
        other => panic!("expected to own the room, got {other:?}"),
    }
}

#[test]
fn two_nodes_racing_for_a_room_a_thousand_times_have_exactly_one_winner_each_time() {
    let url = fresh_database();
    let (a, b) = (store(&url), store(&url));
    let (node_a, node_b) = (node("a", 1), node("b", 2));
    a.heartbeat(&node_a, LEASE).unwrap();
    b.heartbeat(&node_b, LEASE).unwrap();
    let mut wins = [0u32; 2];
    for round in 0u32..1000 {
        let mut room = [0u8; 32];
        room[..4].copy_from_slice(&round.to_be_bytes());
        let claims = std::thread::scope(|scope| {
            let ta = scope.spawn(|| a.claim_room(&room, &node_a.node_id).unwrap());
            let tb = scope.spawn(|| b.claim_room(&room, &node_b.node_id).unwrap());
            [ta.join().unwrap(), tb.join().unwrap()]
        });
        let winners: Vec<usize> = claims
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, RoomClaim::Owned(_)))
            .map(|(i, _)| i)
            .collect();
        let [winner] = winners[..] else {
            panic!("round {round}: {claims:?}");
        };
        wins[winner] += 1;
        // The loser is told who owns it, with the winner's fence.
        let RoomClaim::Owned(fence) = claims[winner] else {
            unreachable!()
        };
        let expected_owner = [&node_a, &node_b][winner];
        let RoomClaim::OwnedElsewhere {
            owner,
            fence: theirs,
            lease,
        } = &claims[1 - winner]
        else {
            panic!("round {round}: the loser was not redirected: {claims:?}");
        };
        assert_eq!((owner, *theirs), (expected_owner, fence));
        assert!(lease.left <= LEASE && lease.left > Duration::ZERO);
    }
    assert_eq!(wins[0] + wins[1], 1000, "{wins:?}");
}

#[test]
fn a_stale_fence_changes_nothing_after_a_takeover() {
    let url = fresh_database();
    let (old, new) = (store(&url), store(&url));
    let (node_old, node_new) = (node("old", 1), node("new", 2));
    let room = [7; 32];
    old.heartbeat(&node_old, LEASE).unwrap();
    new.heartbeat(&node_new, LEASE).unwrap();
    let old_fence = owned(old.claim_room(&room, &node_old.node_id).unwrap());
    // Claiming again keeps the fence; the other node is redirected.
    assert_eq!(
        owned(old.claim_room(&room, &node_old.node_id).unwrap()),
        old_fence
    );
    assert!(matches!(
        new.claim_room(&room, &node_new.node_id).unwrap(),
        RoomClaim::OwnedElsewhere { .. }
    ));
    assert!(old.put_room_fenced(&room, &record(1), old_fence).unwrap());
    // The old owner's lease ends (here: a lease of zero, as after a pause).
    old.heartbeat(&node_old, Duration::ZERO).unwrap();
    let new_fence = owned(new.claim_room(&room, &node_new.node_id).unwrap());
    assert!(new_fence > old_fence);
    assert!(new.put_room_fenced(&room, &record(2), new_fence).unwrap());
    // The old owner comes back, renews, and writes with its old fence: nothing changes.
    old.heartbeat(&node_old, LEASE).unwrap();
    assert!(!old.put_room_fenced(&room, &record(9), old_fence).unwrap());
    assert_eq!(new.room(&room).unwrap(), Some(record(2)));
    // It is not the owner any more either.
    assert_eq!(
        new.room_owner(&room).unwrap(),
        Some((node_new.clone(), new_fence))
    );
    assert!(matches!(
        old.claim_room(&room, &node_old.node_id).unwrap(),
        RoomClaim::OwnedElsewhere { .. }
    ));
}

#[test]
fn a_node_without_a_live_lease_cannot_claim_and_a_clean_stop_frees_its_rooms() {
    let url = fresh_database();
    let (a, b) = (store(&url), store(&url));
    let (node_a, node_b) = (node("a", 1), node("b", 2));
    let room = [3; 32];
    assert!(matches!(
        a.claim_room(&room, &node_a.node_id),
        Err(crate::store::StoreError::LeaseExpired)
    ));
    a.heartbeat(&node_a, LEASE).unwrap();
    b.heartbeat(&node_b, LEASE).unwrap();
    assert_eq!(
        a.live_nodes().unwrap(),
        vec![node_a.clone(), node_b.clone()]
    );
    let fence = owned(a.claim_room(&room, &node_a.node_id).unwrap());
    a.release_node(&node_a.node_id).unwrap();
    assert_eq!(a.live_nodes().unwrap(), vec![node_b.clone()]);
    assert_eq!(b.room_owner(&room).unwrap(), None);
    assert!(!a.put_room_fenced(&room, &record(1), fence).unwrap());
    assert!(owned(b.claim_room(&room, &node_b.node_id).unwrap()) > fence);
    assert!(matches!(
        a.claim_room(&room, &node_a.node_id),
        Err(crate::store::StoreError::LeaseExpired)
    ));
}

#[test]
fn a_redirect_says_how_long_the_owner_has_been_silent_and_how_much_lease_it_has_left() {
    let url = fresh_database();
    let (a, b) = (store(&url), store(&url));
    let (node_a, node_b) = (node("a", 1), node("b", 2));
    let room = [5; 32];
    a.heartbeat(&node_a, LEASE).unwrap();
    b.heartbeat(&node_b, LEASE).unwrap();
    owned(a.claim_room(&room, &node_a.node_id).unwrap());
    let pause = Duration::from_millis(300);
    std::thread::sleep(pause);
    let RoomClaim::OwnedElsewhere { lease, .. } = b.claim_room(&room, &node_b.node_id).unwrap()
    else {
        panic!("node a owns the room");
    };
    assert!(lease.silent_for >= pause, "{lease:?}");
    assert!(lease.left <= LEASE - pause, "{lease:?}");
    // A heartbeat: silent no more, the whole lease ahead again.
    a.heartbeat(&node_a, LEASE).unwrap();
    let RoomClaim::OwnedElsewhere { lease, .. } = b.claim_room(&room, &node_b.node_id).unwrap()
    else {
        panic!("node a owns the room");
    };
    assert!(lease.silent_for < pause, "{lease:?}");
    assert!(lease.left > LEASE - pause, "{lease:?}");
    // A node of an older version records no renewal time: unknown, never "silent" (its
    // clients are redirected to it, not told to wait for a lease it keeps renewing).
    a.block_on(async {
        let client = a.client().await?;
        client
            .execute(
                "UPDATE nodes SET renewed_at_ms = 0 WHERE node_id = 'a'",
                &[],
            )
            .await
            .map_err(super::pg)?;
        Ok(())
    })
    .unwrap();
    std::thread::sleep(pause);
    let RoomClaim::OwnedElsewhere { lease, .. } = b.claim_room(&room, &node_b.node_id).unwrap()
    else {
        panic!("node a owns the room");
    };
    assert_eq!(lease.silent_for, Duration::ZERO, "{lease:?}");
}
