//! Cluster mode: several nodes on one PostgreSQL store.
//!
//! Built so far: the shared store ([`PgStore`](crate::store::PgStore)), room
//! ownership under fenced leases in the store
//! ([`ClusterStore`](crate::store::ClusterStore)), and [`LeaseKeeper`], the sans-IO
//! machine that decides when a node renews its lease and until when it may act as the
//! owner of its rooms. The server does not run them yet: redirects, cross-node
//! delivery and failover are the next steps (see `docs/cluster.md`).

mod lease;

pub use lease::{LeaseConfig, LeaseEvent, LeaseKeeper, RenewalTicket};
