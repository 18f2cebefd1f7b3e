//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed, and writes the
//! descriptor set that server reflection serves. Also compiles the benchmarks' echo and fan-out
//! services (`src/bin/simgate-bench/proto`), which only the `simgate-bench` binary includes. They
//! are kept out of `proto/`, the buf module that `.ci/buf.sh` lints and checks for breaking
//! changes: they are no API, and they reuse simgate's messages on purpose.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/simgate/v1/cards.proto",
        "proto/simgate/v1/simulator.proto",
        "proto/simgate/v1/access.proto",
        "proto/simgate/v1/operations.proto",
        "proto/simgate/v1/monitoring.proto",
        "proto/simgate/v1/accounts.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("simgate_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    // The echo file imports simgate's messages; keeping only its own file in the set and
    // pointing the imported package at the library's types means no second copy is generated.
    let mut echo = protox::compile(
        ["src/bin/simgate-bench/proto/simgate/bench/v1/echo.proto"],
        ["src/bin/simgate-bench/proto", "proto"],
    )?;
    echo.file
        .retain(|f| f.name.as_deref() == Some("simgate/bench/v1/echo.proto"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".simgate.v1", "::simgate::pb")
        .compile_fds(echo)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=src/bin/simgate-bench/proto");
    Ok(())
}
