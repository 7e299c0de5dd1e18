//! RFC 9605 Appendix C test vectors, shared by the unit tests of this module.

use serde::Deserialize;
use std::sync::OnceLock;

/// The vector file, embedded at compile time.
const VECTORS_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/sframe-rfc9605.json"
));

#[derive(Deserialize)]
pub(crate) struct Vectors {
    pub(crate) header: Vec<HeaderVector>,
}

#[derive(Deserialize)]
pub(crate) struct HeaderVector {
    pub(crate) kid: u64,
    pub(crate) ctr: u64,
    pub(crate) encoded: String,
}

pub(crate) fn vectors() -> &'static Vectors {
    static PARSED: OnceLock<Vectors> = OnceLock::new();
    PARSED.get_or_init(|| serde_json::from_str(VECTORS_JSON).expect("vector file is valid JSON"))
}

pub(crate) fn hex(text: &str) -> Vec<u8> {
    ::hex::decode(text).expect("vector field is valid hex")
}
