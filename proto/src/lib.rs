//! Conclave wire formats.
//!
//! Two kinds of bytes cross the network in Conclave, and this crate defines both:
//!
//! * **Control and container messages** ([`v1`]): protobuf types generated at build
//!   time from `proto/conclave/v1/*.proto` (with `protox`, so no system `protoc` is
//!   needed). Signed objects ([`v1::DeviceCertificate`], [`v1::SignedPrekey`],
//!   [`v1::Container`]) carry their signed part as *opaque serialized bytes*; verifiers
//!   check signatures over the bytes they received and decode afterwards, so nothing is
//!   ever re-encoded before verification.
//! * **Media datagrams** ([`datagram`]): a fixed 14-byte binary routing header followed
//!   by an SFrame ciphertext. The header is the only part the SFU reads; it carries no
//!   meeting identifier, no key material and nothing the SFU does not need to forward.
//!
//! # Invariants
//! * Decoding untrusted bytes never panics: protobuf decoding returns
//!   [`prost::DecodeError`], and [`datagram::DatagramHeader::decode`] returns a typed
//!   [`datagram::DatagramHeaderError`]. Callers bound input sizes *before* decoding
//!   protobuf (see [`limits`]).
//! * This crate performs no cryptography and no I/O.

#![forbid(unsafe_code)]

pub mod datagram;
pub mod frame;
pub mod limits;
mod redact;

/// Generated protobuf types of package `conclave.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/conclave.v1.rs"));
}

pub use prost::{self, Message};
