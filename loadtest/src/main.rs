//! `conclave-loadtest` binary.
fn main() {}
