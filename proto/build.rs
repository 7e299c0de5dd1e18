//! Compiles `proto/conclave/v1/*.proto` with `protox` (a pure-Rust protobuf compiler),
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/conclave/v1/identity.proto",
        "proto/conclave/v1/container.proto",
        "proto/conclave/v1/payloads.proto",
        "proto/conclave/v1/control.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // Messages carrying secrets or private content get hand-written, redacting
        // `Debug` impls (src/redact.rs) instead of the generated ones.
        .skip_debug([
            "conclave.v1.MeetingInvite",
            "conclave.v1.Rekey",
            "conclave.v1.TextMessage",
            "conclave.v1.StoredCredentials",
            "conclave.v1.CallerProfile",
        ])
        // A delivered container is one buffer shared by every recipient's frame (the
        // server writes it to each connection without copying it).
        .bytes([".conclave.v1.MailboxDelivery.container"])
        .compile_fds(descriptors)?;
    Ok(())
}
