//! The record layer's fuzz targets on stable Rust, in every test run: each
//! file of the checked-in corpus (`fuzz/corpus/<target>/`) through its
//! target, and random inputs besides. The long libFuzzer runs are local
//! commands (`fuzz/README.md`); this keeps every input they saved, and
//! the seeds, passing.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use s2ds::relay::check::{cases, script, targets};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn run_corpus(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| run(&data)) {
            std::panic::resume_unwind(Box::new(format!("{}: {:?}", f.display(), e.downcast_ref::<String>())));
        }
    }
    eprintln!("{target}: {} corpus files pass", files.len());
}

#[test]
fn records_corpus() {
    run_corpus("records", targets::records);
}

#[test]
fn sequence_corpus() {
    run_corpus("sequence", targets::sequence);
}

#[test]
fn duplex_corpus() {
    run_corpus("duplex", targets::duplex);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn records_random(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        targets::records(&data);
    }

    #[test]
    fn sequence_random(data in prop::collection::vec(any::<u8>(), 0..512)) {
        targets::sequence(&data);
    }

    #[test]
    fn duplex_random(data in prop::collection::vec(any::<u8>(), 0..64)) {
        targets::duplex(&data);
    }
}

/// Flags byte of a target input: bit 0 the receiver's role, bits 3-7 the
/// number of cut-size bytes that follow it.
fn flags(client: bool, cuts: &[u8]) -> Vec<u8> {
    let mut v = vec![(cuts.len() as u8) << 3 | u8::from(client)];
    v.extend_from_slice(cuts);
    v
}

/// Rewrites the seed corpora from `cases::all()` (run after changing the
/// scripts; libFuzzer adds its own finds next to them):
/// `cargo test -p s2ds --test fuzz_corpus -- --ignored write_seeds`
#[test]
#[ignore = "writes the seed corpora"]
fn write_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: String, bytes: Vec<u8>| {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        std::fs::write(dir.join(target).join(name), bytes).unwrap();
    };
    let cuts: [&[u8]; 2] = [&[], &[0, 2, 6, 200, 1, 0x81, 4]];
    for (i, ops) in cases::all().iter().enumerate() {
        let encoded = script::encode(ops);
        if script::decode(&encoded) != *ops {
            continue; // outside what the fuzz input can say (e.g. padding over 63)
        }
        for client in [false, true] {
            for (k, c) in cuts.iter().enumerate() {
                let role = if client { "client" } else { "server" };
                write("sequence", format!("seed-{i:02}-{role}-{k}"), [flags(client, c), encoded.clone()].concat());
                let wire = targets::sealed_stream(&encoded, client).wire;
                write("records", format!("seed-{i:02}-{role}-{k}"), [flags(client, c), wire].concat());
            }
        }
    }
    for (i, p) in [[0u8, 16, 0, 16, 1, 1, 0], [1, 0, 0, 0, 3, 40, 9], [0, 0, 2, 0, 39, 2, 255], [4, 4, 4, 4, 7, 7, 1]]
        .iter()
        .enumerate()
    {
        for (k, c) in cuts.iter().enumerate() {
            write("duplex", format!("seed-{i:02}-{k}"), [flags(false, c), p.to_vec()].concat());
        }
    }
}

/// The scripts that fit the fuzz input decode back to themselves.
#[test]
fn scripts_encode_to_what_decodes_back() {
    let all = cases::all();
    let fitting = all.iter().filter(|ops| script::decode(&script::encode(ops)) == **ops).count();
    assert!(fitting + 3 >= all.len(), "only {fitting} of {} scripts round-trip", all.len());
}
