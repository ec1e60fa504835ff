//! Generates the protobuf types from `schemas/` with a pure-Rust `.proto` compiler, so no
//! system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let schemas = manifest.join("schemas");
    let files = ["legacy.proto", "omemo2.proto", "session.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={}", schemas.join(file).display());
    }
    let descriptors = protox::compile(files, [&schemas])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
