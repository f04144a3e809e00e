//! Compiles the `.proto` files under `<workspace>/proto` with protox (pure Rust: no system
//! `protoc` needed) and generates prost messages plus tonic clients and servers.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "apache/rocketmq/v2/definition.proto",
    "apache/rocketmq/v2/service.proto",
    "rocketlog/nameserver/v1/nameserver.proto",
    "rocketlog/admin/v1/admin.proto",
    "rocketlog/replication/v1/replication.proto",
    "rocketlog/controller/v1/controller.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("rocketlog_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    // The admin API in the proto3 JSON mapping too: the web console calls it over HTTP.
    pbjson_build::Builder::new()
        .register_descriptors(&prost::Message::encode_to_vec(&fds))?
        .out_dir(&out)
        .build(&[".rocketlog.admin.v1"])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .bytes(".apache.rocketmq.v2.Message.body")
        .bytes(".rocketlog.replication.v1.Chunk.data")
        .compile_fds(fds)?;
    Ok(())
}
