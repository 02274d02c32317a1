//! Compiles `proto/` with protox (no `protoc` needed) and generates the tonic clients and servers,
//! plus the encoded file descriptor set that server reflection serves.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/connect/registry/v1/registry.proto",
    "proto/connect/registry/v1/runtime.proto",
    "proto/connect/broker/v1/broker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    // `compile_fds` skips the protoc run that would write this file, so write it here.
    std::fs::write(out_dir.join("connect_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // These messages carry secrets: their `Debug` is written by hand to redact them.
        .skip_debug([
            "connect.registry.v1.AuthorizeResponse",
            "connect.registry.v1.CreateConnectorRequest",
            "connect.registry.v1.UpdateConnectorRequest",
            "connect.broker.v1.GetTokenResponse",
        ])
        .compile_fds(fds)?;
    Ok(())
}
