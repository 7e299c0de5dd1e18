//! Compiles `proto/conclave/v1/*.proto` with `protox` (a pure-Rust protobuf compiler),
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/conclave/v1/identity.proto",
        "proto/conclave/v1/container.proto",
        "proto/conclave/v1/payloads.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
