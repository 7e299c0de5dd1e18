//! `conclave-loadtest`: see `conclave-loadtest --help` and docs/loadtest.md.

// The summary table is the program's output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use conclave_loadtest::report::{render_html, render_summary};
use conclave_loadtest::{Options, run};

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match main_inner() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conclave-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner() -> anyhow::Result<ExitCode> {
    let options = Options::parse();
    let json = options.json.clone();
    let html = options.html.clone();
    let report = run(options)?;
    println!("{}", render_summary(&report));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("JSON report: {}", path.display());
    }
    if let Some(path) = html {
        std::fs::write(&path, render_html(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("HTML report: {}", path.display());
    }
    // A security failure is a failed run, whatever else was measured.
    if report.decrypt_failures > 0 || report.removed_decrypted_frames > 0 {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
