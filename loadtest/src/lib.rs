//! Conclave load test.
#![allow(missing_docs)]

pub mod baseline;
pub mod error;
pub mod probe;
pub mod report;
pub mod stats;

pub use error::LoadError;
