//! Why a load test could not run.

use std::net::SocketAddr;

/// A load test that could not start or complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The options contradict each other or are out of range.
    #[error("invalid options: {0}")]
    Options(String),
    /// The in-process SFU (or the baseline relay) could not start.
    #[error("cannot start the {what} on {addr}: {reason}")]
    Start {
        /// Which server.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A participant could not connect, register or join.
    #[error("participant {participant} could not {action}: {reason}")]
    Participant {
        /// Its name.
        participant: String,
        /// What failed.
        action: &'static str,
        /// The SDK's error.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A runtime or TLS setup step failed.
    #[error("setup failed: {0}")]
    Setup(String),
}
