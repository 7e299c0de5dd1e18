//! In-memory [`Store`](super::Store) for tests (to be implemented).

/// In-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore;
