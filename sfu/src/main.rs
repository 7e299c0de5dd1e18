//! `conclave-sfu` binary (to be written).
fn main() {}
