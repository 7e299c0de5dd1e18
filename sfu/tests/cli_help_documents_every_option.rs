//! `conclave-sfu --help` documents every option, with its default.

// Test helpers may panic on unexpected failures.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::process::Command;

#[test]
fn help_documents_every_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_conclave-sfu"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--metrics-listen",
        "--cert",
        "--key",
        "--config",
        "--store",
        "--store-ca-file",
        "--log",
        "--log-format",
        "--generate-vapid-key",
        "--help",
        "--version",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    // Each option's help names its default.
    for option in help
        .split("\n\n")
        .filter(|s| s.trim_start().starts_with("--"))
    {
        if option.contains("--help") || option.contains("--version") {
            continue;
        }
        assert!(
            option.contains("default"),
            "no default documented in:\n{option}"
        );
    }
}

#[test]
fn unknown_flag_is_rejected() {
    let output = Command::new(env!("CARGO_BIN_EXE_conclave-sfu"))
        .arg("--lisen")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--lisen"), "{stderr}");
}
