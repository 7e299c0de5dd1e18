//! # Conclave test kit
//!
//! The one place where Conclave's test support is written: every integration test,
//! benchmark and example that needs a server, a client or a fixture takes it from
//! here. Tests, not production: nothing in this crate is published.
//!
//! ## Layout
//! * [`clock`]: [`now`] (the system clock as the crypto core takes it), the fixed
//!   instant [`NOW`] of deterministic fixtures, and [`WAIT`], the one upper bound on
//!   waiting (never an assertion about timing).
//! * [`fixtures`]: deterministic identity, prekey and container fixtures and protobuf
//!   field edits, re-exported from `conclave_core::test_util` (cargo feature
//!   `test-util`), where core's own tests and the fuzz targets use them without a
//!   runtime.
//! * [`identity`]: [`User`] with fresh random keys, its devices, prekeys for upload.
//! * [`sfu`]: [`TestSfu`], the real server in this process (start, start with a store
//!   or configuration or certificate, start hostile with the `adversary` feature's
//!   [`Adversary`](conclave_sfu::server::hooks::Adversary), restart, restart after a
//!   pause, stop) and the test configurations.
//! * [`protocol`]: [`TestClient`], a client that speaks the control protocol request by
//!   request on the SDK's transport, and [`RawControl`](protocol::raw::RawControl),
//!   which writes the control stream byte by byte.
//! * [`media`]: tagged datagram bursts and the marker technique for media-plane tests.
//! * [`clients`]: SDK clients ([`Device`]) of a [`User`] with short test timers, and
//!   waits for frames, epochs and rosters.
//! * [`meeting`]: the setup before most client tests: users connect and meet
//!   ([`Group`], [`ThreeParty`]).
//! * [`cluster`]: in-process cluster nodes on a throwaway PostgreSQL; [`proxy`]: a TCP
//!   proxy a test can cut between a node and PostgreSQL; [`process`]: cluster nodes as
//!   real processes on `127.0.0.i` (for `kill -9`, `SIGSTOP`, a PostgreSQL restart).
//! * [`hostile`]: the hostile server's tools: forged identities, directory rewrites,
//!   and the check whether the server could open what passed through it.
//! * [`prelude`]: what most tests import.
//!
//! ## The server's system tests
//! `tests/` holds the system tests of the server: real SFU, real clients. They live
//! here, not in `conclave-sfu`, because their clients use the SDK's transport and the
//! server must not depend on the SDK, not even for tests (`cargo tree -p conclave-sfu`
//! shows no `conclave-sdk`; CI checks it). Their file names say what they show. The
//! SDK's own tests (`client-sdk/tests/`) and examples use this crate as a
//! dev-dependency; `benches/throughput.rs` measures the server in-process.
#![allow(
    // A test kit fails the test that called it by panicking, with a message.
    clippy::panic,
    clippy::unwrap_used,
    // Clients of a simulation are addressed by index; a wrong one fails the test.
    clippy::indexing_slicing
)]

pub mod clients;
pub mod clock;
pub mod cluster;
pub mod hostile;
pub mod identity;
pub mod media;
pub mod meeting;
pub mod process;
pub mod protocol;
pub mod proxy;
pub mod push_service;
pub mod sfu;
pub mod sim;

pub use clients::Device;
pub use clock::{NOW, WAIT, now};
pub use conclave_core::test_util as fixtures;
pub use identity::User;
pub use meeting::{Group, ThreeParty};
pub use protocol::TestClient;
pub use sfu::TestSfu;

/// What most tests import: `use conclave_testkit::prelude::*;`.
pub mod prelude {
    pub use crate::clients::{
        Device, deliver, wait_epoch_above, wait_meeting_event, wait_participants,
    };
    pub use crate::clock::{NOW, WAIT, now};
    pub use crate::identity::User;
    pub use crate::meeting::{Group, ThreeParty, connect_users};
    pub use crate::protocol::TestClient;
    pub use crate::protocol::rooms::TestRoom;
    pub use crate::sfu::{TestSfu, client_test_config, drain_test_config, test_config};
    pub use conclave_sdk::meeting::Epoch;
}
