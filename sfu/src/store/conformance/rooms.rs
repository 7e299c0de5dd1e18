//! Conformance: room records.

use super::Factory;
use crate::store::RoomRecord;

fn room(epoch: u64, updated_at_ms: u64) -> RoomRecord {
    RoomRecord {
        epoch,
        auth_public: [epoch as u8; 32],
        updated_at_ms,
        leaders: vec![[epoch as u8; 16]],
    }
}

pub(super) fn rooms_put_get_replace_delete(make: Factory) {
    let (store, _guard) = make();
    let r = [5; 32];
    assert_eq!(store.room(&r).unwrap(), None);
    store.put_room(&r, &room(1, 10)).unwrap();
    assert_eq!(store.room(&r).unwrap(), Some(room(1, 10)));
    store.put_room(&r, &room(2, 20)).unwrap();
    assert_eq!(store.room(&r).unwrap(), Some(room(2, 20)));
    store.delete_room(&r).unwrap();
    assert_eq!(store.room(&r).unwrap(), None);
    store.delete_room(&r).unwrap();
}

pub(super) fn expire_rooms_spares_recent_and_live(make: Factory) {
    let (store, _guard) = make();
    let (old, live, recent, at_cutoff) = ([1; 32], [2; 32], [3; 32], [4; 32]);
    store.put_room(&old, &room(1, 10)).unwrap();
    store.put_room(&live, &room(1, 10)).unwrap();
    store.put_room(&recent, &room(1, 500)).unwrap();
    store.put_room(&at_cutoff, &room(1, 100)).unwrap();
    let is_live = |id: &[u8; 32]| *id == live;
    assert_eq!(store.expire_rooms(100, &is_live).unwrap(), 1);
    assert_eq!(store.room(&old).unwrap(), None);
    for kept in [live, recent, at_cutoff] {
        assert!(store.room(&kept).unwrap().is_some());
    }
    assert_eq!(store.expire_rooms(1000, &|_| false).unwrap(), 3);
    assert_eq!(store.expire_rooms(1000, &|_| false).unwrap(), 0);
}
