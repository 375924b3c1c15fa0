//! Models that do not fit in memory: `nnc run` prints an error naming the buffer and its bytes
//! and exits 1 (no abort, no panic), and `nnc check` / `nnc report` warn.
//!
//! `NNC_MEMORY_LIMIT` sets the memory budget to 8 GB so that the outcome does not depend on the
//! machine: without it the budget is the machine's memory, and a 40 GB request on a machine
//! with more would really be made.

use std::path::PathBuf;
use std::process::Command;

/// The model: 100,000 × 100,000 f32 weights, 40 GB.
const BIG_WEIGHTS: &str =
    "network bigw(x: f32[1, 100000]) -> (y) { y = linear(x, 100000) as fc }\n";

/// 100,000 × 100,000 f32 activations, 40 GB, from a 400 kB input and no weights.
const BIG_ARENA: &str = "network biga(x: f32[1, 100000]) -> (y) {
    column = reshape(x, [1, 100000, 1])
    row = reshape(x, [1, 1, 100000])
    y = column * row
}
";

const BUDGET: &str = "8000000000";

/// A scratch folder holding `model.nn` with `source` and `x.npy`, an f32[1, 100000] input.
fn scratch(name: &str, source: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("nnc-memory-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("model.nn"), source).unwrap();
    let input = ndarray::Array2::<f32>::zeros((1, 100_000));
    ndarray_npy::write_npy(folder.join("x.npy"), &input).unwrap();
    folder
}

/// `nnc run` on the scratch folder's model and input with random weights.
const RUN: &[&str] = &[
    "run",
    "model.nn",
    "--random-weights",
    "1",
    "--input",
    "x.npy",
];

/// Runs `nnc args` in `folder` with the 8 GB budget: its exit code and standard error.
fn nnc(folder: &PathBuf, args: &[&str]) -> (Option<i32>, String) {
    nnc_with(folder, args, ("NNC_MEMORY_LIMIT", BUDGET))
}

/// Runs `nnc args` in `folder` with one environment variable set, checking that it did not
/// panic: its exit code and standard error.
fn nnc_with(folder: &PathBuf, args: &[&str], (key, value): (&str, &str)) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(folder)
        .env(key, value)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code(), stderr)
}

#[test]
fn weights_larger_than_memory_are_an_error_naming_the_weight() {
    let folder = scratch("weights", BIG_WEIGHTS);
    let (code, stderr) = nnc(&folder, RUN);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "cannot allocate 40,000,000,000 bytes (37.3 GiB) for weight `fc.weight`: it is more than the limit NNC_MEMORY_LIMIT sets, 8,000,000,000 bytes (7.5 GiB)"
        ),
        "{stderr}"
    );
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn an_arena_larger_than_memory_is_an_error_naming_the_tensor() {
    let folder = scratch("arena", BIG_ARENA);
    let (code, stderr) = nnc(&folder, RUN);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot allocate 40,000,000,000 bytes (37.3 GiB) for the output of layer"),
        "{stderr}"
    );
    assert!(stderr.contains("f32[1, 100000, 100000]"), "{stderr}");
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn check_and_report_warn_when_a_model_needs_more_than_the_budget() {
    for (name, source) in [("weights", BIG_WEIGHTS), ("arena", BIG_ARENA)] {
        let folder = scratch(&format!("warn-{name}"), source);
        for command in ["check", "report"] {
            let (code, stderr) = nnc(&folder, &[command, "model.nn"]);
            assert_eq!(code, Some(0), "{command} {name}: {stderr}");
            assert!(
                stderr.contains("needs 40,") && stderr.contains("more than the memory budget"),
                "{command} {name}: {stderr}"
            );
        }
        std::fs::remove_dir_all(folder).unwrap();
    }
}

#[test]
fn a_garbage_memory_limit_is_an_error() {
    let folder = scratch("garbage", BIG_WEIGHTS);
    let (code, stderr) = nnc_with(&folder, RUN, ("NNC_MEMORY_LIMIT", "lots"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("NNC_MEMORY_LIMIT=\"lots\" is not a number of bytes"),
        "{stderr}"
    );
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn a_bad_thread_count_is_an_error() {
    let folder = scratch("threads", BIG_WEIGHTS);
    for value in ["0", "four", "-1"] {
        let (code, stderr) = nnc_with(&folder, &["check", "model.nn"], ("NNC_NUM_THREADS", value));
        assert_eq!(code, Some(1), "{value}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "NNC_NUM_THREADS=\"{value}\" is not a positive number of threads"
            )),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(folder).unwrap();
}
