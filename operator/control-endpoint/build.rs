//! Generates the gRPC code of `proto/scistream.proto` (needs `protoc`: Debian `protobuf-compiler`,
//! installed by `kind-tests/setup.sh`, or `PROTOC=/path/to/protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/scistream.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/scistream.proto"], &["proto"])?;
    Ok(())
}
