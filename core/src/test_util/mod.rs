//! Fixtures for tests, benchmarks and fuzz targets (cargo feature `test-util`; never in
//! a release build).
//!
//! Everything here is deterministic: parties are built from fixed seeds at the fixed
//! instant [`NOW`], so a test or a fuzz corpus meets the same keys and bytes every run.
//! The crate stays sans-IO with the feature on: nothing here reads a clock or a socket.
//!
//! * [`identity`]: users, devices, prekey pools and verified recipients from seeds.
//! * [`containers`]: a sender, a recipient and a decoy, two genuinely sealed containers
//!   between them, and the signing helpers that play a dishonest or compromised signer.
//! * [`protobuf`]: a protobuf wire-format splitter and field edits for mutation tests.
//!
//! The `conclave-testkit` crate re-exports this module and adds what needs a runtime:
//! the embedded SFU, network clients and the system clock.
// Fixtures panic on a broken invariant (a test bug), and index the prekey lists they
// just generated with a known length.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod containers;
pub mod identity;
pub mod protobuf;

use crate::UnixMillis;

/// The fixed "server master clock" of deterministic fixtures (14 November 2023).
pub const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
