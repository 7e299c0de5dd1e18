//! Conclave SFU (crate docs to be written with the server).

pub mod config;
pub mod metrics_http;
pub mod store;
pub mod tls;
