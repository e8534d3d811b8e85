//! Running the real `kubectl-scistream` binary from the plugin's tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the plugin with `--kubeconfig kubeconfig` and `args`.
pub fn plugin(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-scistream"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("cannot run kubectl-scistream")
}

/// Standard output then standard error, as text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
