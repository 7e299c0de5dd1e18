//! Conclave load test: hundreds of real SDK participants against a real SFU.
//!
//! Every participant registers, uploads prekeys, gets its invitation in a container,
//! joins the room and sends SFrame-encrypted frames over QUIC datagrams, exactly as an
//! app would. Frames carry (stream, sequence, send time) inside the encryption, so
//! loss, duplicates and one-way latency are measured after decryption.
//!
//! # Data flow
//! [`run`] starts the SFU in-process (its own runtime, threads named `sfu-rt`, so its
//! CPU time is measurable) or reaches `--server`; builds the participants' runtime;
//! `sim` connects participants at the ramp rate, starts meetings, and measures for
//! `--duration` seconds with churn; the optional `baseline` runs the same fan-out
//! through a bare QUIC relay; the result is a [`report::Report`] (JSON schema in
//! `docs/loadtest.md`), printed as a table and optionally written as JSON and HTML.
//! When the measurement ends, [`run_with`]'s callback lets the binary quiet the
//! expected teardown warnings (see [`console`]).
//!
//! # Invariants
//! * Expected frames are exact: each receiver's window opens and closes at snapshots
//!   of every stream's next sequence number (see [`stats::ReceiverWindow`]).
//! * Churn leaves and removals first take the participant out of the measurement, so
//!   the rekey they cause is measured on its own and no frame is wrongly expected.
//! * Everything is bounded: connects, joins and rekeys have time limits, the run ends
//!   after the ramp, the duration and a short drain.

pub mod baseline;
pub mod console;
pub mod error;
mod local_cluster;
pub mod metrics;
pub mod options;
pub mod payload;
pub mod probe;
pub mod report;
mod run;
mod sim;
pub mod stats;
mod target;

pub use error::LoadError;
pub use options::Options;
pub use run::{run, run_with};
