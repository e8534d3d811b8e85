//! What the kubectl plugin links to speak `scistream.Control`: this crate's client only, not
//! the control endpoint's server (warp, tonic's server, authentication). Asked of cargo itself
//! (`cargo tree`, offline, the workspace's lock file), so a dependency added anywhere on the
//! way is caught.

use std::process::Command;

/// `cargo tree -p scistream-plugin` without dev-dependencies (the plugin's tests run an
/// operator in process; the binary does not), one package per line, with its features.
fn plugin_tree() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["tree", "--offline", "-p", "scistream-plugin", "-e", "no-dev", "-e", "features", "--prefix", "none"])
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("cargo tree prints UTF-8")
}

#[test]
fn the_plugin_links_the_client_without_the_endpoints_server() {
    let tree = plugin_tree();
    let has = |package: &str| tree.lines().any(|l| l.starts_with(&format!("{package} ")));
    assert!(has("scistream-control-proto"), "the plugin speaks gRPC through this crate:\n{tree}");
    for unwanted in ["warp", "scistream-control-endpoint"] {
        assert!(!has(unwanted), "the plugin links {unwanted}:\n{tree}");
    }
    let servers = ["tonic feature \"server\"", "tonic feature \"router\"", "hyper feature \"server\""];
    let found: Vec<&str> = tree.lines().filter(|l| servers.iter().any(|s| l.starts_with(s))).collect();
    assert!(found.is_empty(), "the plugin links an HTTP or gRPC server: {found:?}");
}
