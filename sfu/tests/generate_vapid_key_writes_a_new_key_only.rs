//! `conclave-sfu --generate-vapid-key FILE` writes a P-256 key the server then loads,
//! readable by its owner only, prints the public key, and never overwrites a file.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use conclave_sfu::push::VapidKey;

fn generate(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_conclave-sfu"))
        .arg("--generate-vapid-key")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn a_new_key_is_written_for_its_owner_and_an_existing_file_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vapid.pem");
    let first = generate(&path);
    assert!(first.status.success(), "{first:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let key = VapidKey::load(&path).unwrap();
    let stderr = String::from_utf8(first.stderr).unwrap();
    assert!(stderr.contains(&key.public_key_base64url()), "{stderr}");

    let written = std::fs::read(&path).unwrap();
    let again = generate(&path);
    assert!(!again.status.success(), "overwrote an existing key");
    assert!(
        String::from_utf8(again.stderr)
            .unwrap()
            .contains("must not exist"),
        "the refusal says why"
    );
    assert_eq!(std::fs::read(&path).unwrap(), written, "the key changed");
}
