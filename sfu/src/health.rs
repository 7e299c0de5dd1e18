//! What a node tells its orchestrator and its operator about itself: whether it is
//! alive (`/livez`), whether it takes new work (`/readyz`), and the same as gauges
//! (`conclave_draining`, `conclave_store_up`).
//!
//! A node is ready once its server runs, while it is not draining and while its store
//! answers. Draining starts at the first SIGTERM (or SIGINT) and never ends: the
//! process exits when it is done. Orchestrators stop sending new clients to a node
//! that is not ready (a Kubernetes readiness probe takes it out of the bootstrap
//! Service), while its existing calls go on until they have moved.

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::gauge;

use crate::telemetry;

/// Why a node is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReady {
    /// The server is not serving yet (or any more).
    Starting,
    /// It is draining: its clients are moving to other nodes.
    Draining,
    /// Its store did not answer the last probe.
    StoreUnreachable,
}

impl NotReady {
    /// What `/readyz` answers.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            NotReady::Starting => "starting",
            NotReady::Draining => "draining",
            NotReady::StoreUnreachable => "store unreachable",
        }
    }
}

/// A node's health, shared by the server (which updates it) and the HTTP endpoint
/// (which reports it).
#[derive(Debug)]
pub struct Health {
    serving: AtomicBool,
    draining: AtomicBool,
    store_up: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Not serving yet, not draining, the store presumed up (it was opened at start).
    #[must_use]
    pub fn new() -> Self {
        Health {
            serving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            store_up: AtomicBool::new(true),
        }
    }

    /// The server accepts connections (or stopped).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Draining has begun.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        gauge!(telemetry::DRAINING).set(1.0);
    }

    /// Whether the node is draining.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The outcome of the latest store probe.
    pub fn set_store_up(&self, up: bool) {
        let was = self.store_up.swap(up, Ordering::AcqRel);
        if was != up {
            if up {
                tracing::info!("the store answers again");
            } else {
                tracing::warn!("the store does not answer: this node reports not ready");
            }
        }
        gauge!(telemetry::STORE_UP).set(if up { 1.0 } else { 0.0 });
    }

    /// Whether the node takes new work, or why not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            Err(NotReady::Draining)
        } else if !self.serving.load(Ordering::Acquire) {
            Err(NotReady::Starting)
        } else if !self.store_up.load(Ordering::Acquire) {
            Err(NotReady::StoreUnreachable)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_serving_with_a_store_and_not_draining() {
        let health = Health::new();
        assert_eq!(health.readiness(), Err(NotReady::Starting));
        health.set_serving(true);
        assert_eq!(health.readiness(), Ok(()));
        health.set_store_up(false);
        assert_eq!(health.readiness(), Err(NotReady::StoreUnreachable));
        health.set_store_up(true);
        assert_eq!(health.readiness(), Ok(()));
        health.start_draining();
        assert_eq!(health.readiness(), Err(NotReady::Draining));
        health.set_store_up(true);
        assert_eq!(health.readiness(), Err(NotReady::Draining));
    }
}
