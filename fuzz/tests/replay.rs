//! Replays every fuzz corpus (`fuzz/corpus/TARGET/`): inputs the fuzzer found
//! interesting, and every input that once made a target fail, stay checked by
//! `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn every_corpus_input_passes_its_target() {
    for &(name, target) in omemo_fuzz::TARGETS {
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(corpus(name))
            .unwrap_or_else(|e| panic!("corpus of {name}: {e}"))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "the corpus of {name} is empty");
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", input.display());
        }
    }
}

/// Every seed passes its target, so the seed corpus starts from working inputs.
#[test]
fn the_seeds_pass_their_targets() {
    for (name, data) in omemo_fuzz::seeds() {
        omemo_fuzz::target(name).unwrap()(&data);
    }
}

/// A `manager` input takes the same path every time (its generator is seeded), so a
/// crash the fuzzer saved replays from its file: the same stanzas on the network twice.
#[test]
fn the_manager_target_repeats_itself() {
    let script = [0u8, 0, 1, 0, 1, 2, 3, 0, 9, 1, 7, 7, 3, 0];
    let first = omemo_fuzz::manager_transcript(&script);
    assert!(!first.is_empty());
    assert_eq!(omemo_fuzz::manager_transcript(&script), first);
}

/// Writes the seeds into the corpora (run once when a target is added:
/// `cargo test -p omemo-fuzz -- --ignored write_seed_corpus`).
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seed_corpus() {
    for (i, (name, data)) in omemo_fuzz::seeds().into_iter().enumerate() {
        let dir = corpus(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{i:03}")), data).unwrap();
    }
}
