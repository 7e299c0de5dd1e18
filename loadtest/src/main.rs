//! `conclave-loadtest`: see `conclave-loadtest --help` and docs/loadtest.md.

// The summary table is the program's output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use conclave_loadtest::console::Logging;
use conclave_loadtest::report::{Verdict, render_html, render_json, render_summary};
use conclave_loadtest::{Options, run_with};

fn main() -> ExitCode {
    let logging = Logging::init();
    match main_inner(&logging) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conclave-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(logging: &Logging) -> anyhow::Result<ExitCode> {
    let options = Options::parse();
    let json = options.json.clone();
    let html = options.html.clone();
    let report = run_with(options, &|| logging.quiet_teardown())?;
    println!("{}", render_summary(&report));
    if let Some(path) = json {
        std::fs::write(&path, render_json(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("JSON report: {}", path.display());
    }
    if let Some(path) = html {
        std::fs::write(&path, render_html(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("HTML report: {}", path.display());
    }
    // A security failure is a failed run, whatever else was measured; a missed
    // target is a FAIL verdict but not an error of the program.
    if Verdict::of(&report).security_failure() {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
