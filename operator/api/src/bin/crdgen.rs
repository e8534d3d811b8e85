//! Writes the CRDs generated from the Rust types into `crds/` (and the Helm chart's copy),
//! or with `--check` fails if the committed files differ.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let targets = [root.join("crds"), root.join("charts/scistream-operator/crds")];
    let files = match scistream_api::crdgen::render() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("crdgen: cannot render the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = Vec::new();
    let reference = root.join("docs/reference.md");
    let doc = scistream_api::reference::render();
    if std::fs::read_to_string(&reference).unwrap_or_default() != doc {
        if check {
            stale.push(reference.display().to_string());
        } else if let Err(e) = std::fs::write(&reference, &doc) {
            eprintln!("crdgen: cannot write {}: {e}", reference.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", reference.display());
        }
    }
    for dir in targets.iter().filter(|d| !check || d.exists()) {
        for file in &files {
            let path = dir.join(&file.file_name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == file.yaml {
                continue;
            }
            if check {
                stale.push(path.display().to_string());
            } else if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &file.yaml)) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "crdgen: out of date: {}\nrun `cargo run -p scistream-api --bin crdgen` and commit the result",
            stale.join(", ")
        );
        ExitCode::FAILURE
    }
}
