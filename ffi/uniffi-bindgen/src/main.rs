//! `uniffi-bindgen`: UniFFI's binding generator, built from the workspace so that it is
//! always the UniFFI version `conclave-ffi` was compiled with (the generated code checks
//! that contract when the library loads).
//!
//! ```sh
//! cargo build -p conclave-ffi
//! cargo run -p conclave-uniffi-bindgen -- generate --library target/debug/libconclave_ffi.so \
//!     --language python --out-dir out/
//! ```
//! `docs/bindings.md` has the per-language steps.

fn main() {
    uniffi::uniffi_bindgen_main();
}
