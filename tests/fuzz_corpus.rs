//! The fuzz targets' checks (fuzz/src/lib.rs) on stable: every committed corpus entry
//! (`fuzz/corpus/TARGET/`, minimized with `cargo fuzz cmin`) and every input that once crashed a
//! target (`fuzz/regressions/TARGET/`, kept after the fix) goes through the same function the
//! libFuzzer binary calls, so `cargo test` catches a regression without nightly or libFuzzer.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::{Path, PathBuf};

fn inputs(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_entry_and_past_crash_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for &(target, check) in fuzz_checks::TARGETS {
        let mut count = 0;
        for folder in ["corpus", "regressions"] {
            for path in inputs(&root.join(folder).join(target)) {
                // A fuzzer running on the corpus may have just replaced the file.
                let Ok(data) = std::fs::read(&path) else {
                    continue;
                };
                count += 1;
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    failures.push(format!("{target}: {}", path.display()));
                }
            }
        }
        assert!(count > 0, "the `{target}` target has no corpus");
        counts.push(format!("{target} {count}"));
    }
    eprintln!("inputs per target: {}", counts.join(", "));
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
}
