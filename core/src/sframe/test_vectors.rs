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
    pub(crate) sframe: Vec<SframeVector>,
}

#[derive(Deserialize)]
pub(crate) struct HeaderVector {
    pub(crate) kid: u64,
    pub(crate) ctr: u64,
    pub(crate) encoded: String,
}

#[derive(Deserialize)]
pub(crate) struct SframeVector {
    pub(crate) cipher_suite: u16,
    pub(crate) kid: u64,
    pub(crate) ctr: u64,
    pub(crate) base_key: String,
    pub(crate) sframe_key_label: String,
    pub(crate) sframe_salt_label: String,
    pub(crate) sframe_secret: String,
    pub(crate) sframe_key: String,
    pub(crate) sframe_salt: String,
    pub(crate) metadata: String,
    pub(crate) nonce: String,
    pub(crate) aad: String,
    pub(crate) pt: String,
    pub(crate) ct: String,
}

pub(crate) fn vectors() -> &'static Vectors {
    static PARSED: OnceLock<Vectors> = OnceLock::new();
    PARSED.get_or_init(|| serde_json::from_str(VECTORS_JSON).expect("vector file is valid JSON"))
}

pub(crate) fn hex(text: &str) -> Vec<u8> {
    ::hex::decode(text).expect("vector field is valid hex")
}

/// The SFrame vectors of the AES-GCM suites (0x0004 and 0x0005). The AES-CTR-HMAC suites
/// (0x0001-0x0003) are skipped: Conclave does not offer them.
pub(crate) fn gcm_vectors() -> impl Iterator<Item = &'static SframeVector> {
    vectors()
        .sframe
        .iter()
        .filter(|v| matches!(v.cipher_suite, 0x0004 | 0x0005))
}
