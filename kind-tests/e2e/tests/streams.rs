//! End to end on the embedded facilities (network namespaces as root, loopback otherwise):
//! a stream through real s2ds relays for each data channel, bytes verified at both ends,
//! nothing left afterwards. The demo (`kind-tests/demo.sh`) runs the same flow with 1 GiB.

use std::path::PathBuf;

use scistream_e2e::{stream, world};

fn bin(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; the workspace's binaries one level up.
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build -p s2ds -p scistream-plugin` (nextest builds it)",
        path.display()
    );
    path
}

async fn one_stream(data_channel: &str, implementation: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let netns = nix::unistd::geteuid().is_root();
    let opts = world::Options { netns, s2ds: bin("s2ds"), root, implementation: implementation.to_owned() };
    let w = world::World::start(&opts).await.expect("both facilities start");
    let so = stream::StreamOptions {
        name: format!("e2e-{}", data_channel.to_lowercase()),
        bytes: 64 << 20,
        connections: 4,
        rate: "20Gbps".into(),
        data_channel: data_channel.into(),
        plugin: bin("kubectl-scistream"),
    };
    let result = stream::run(&w, &so).await;
    w.shutdown().await;
    let report = result.unwrap_or_else(|e| panic!("{data_channel} through {implementation}: {e:#}"));
    assert_eq!(report.bytes, 64 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_through_s2ds() {
    one_stream("MutualTLS", "S2ds").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_through_s2ds_splice() {
    one_stream("Plain", "S2ds").await;
}
