//! Conclave client SDK: sans-IO cryptographic core for end-to-end encrypted meetings.
#![forbid(unsafe_code)]

pub mod sframe;
