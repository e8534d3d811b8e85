//! Generates the code of `proto/relay.proto` (needs `protoc`: Debian `protobuf-compiler`,
//! installed by `kind-tests/setup.sh`, or `PROTOC=/path/to/protoc`): the messages always, the
//! client with feature `client`, the server trait with feature `server`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/relay.proto");
    let client = std::env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let server = std::env::var_os("CARGO_FEATURE_SERVER").is_some();
    tonic_prost_build::configure()
        .build_client(client)
        .build_transport(client)
        .build_server(server)
        .compile_protos(&["proto/relay.proto"], &["proto"])?;
    Ok(())
}
