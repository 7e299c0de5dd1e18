//! redb-backed [`Store`](super::Store) (to be implemented).

/// redb store.
#[derive(Debug)]
pub struct RedbStore;
