//! The `nnc check` command on the bundled examples and on every bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn nn_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace_root().join(folder))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "nn"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .nn files in {folder}");
    files
}

fn nnc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap()
}

#[test]
fn check_accepts_every_example_and_prints_its_ir() {
    for path in nn_files("examples") {
        let path = path.to_str().unwrap();
        let output = nnc(&["check", path, "--emit", "ir"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.starts_with("network "), "{path}: {stdout}");
    }
}

#[test]
fn check_rejects_every_bad_input_with_a_located_diagnostic() {
    for path in nn_files("tests/diagnostics") {
        let relative = path
            .strip_prefix(workspace_root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let output = nnc(&["check", &relative]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{relative}: {stderr}");
        assert!(!stderr.contains("panicked"), "{relative}: {stderr}");
        assert!(
            stderr.contains(&format!("┌─ {relative}:")),
            "{relative}: no file:line:col in\n{stderr}"
        );
        assert!(stderr.contains('^'), "{relative}: no caret in\n{stderr}");
        assert!(stderr.contains("could not compile"), "{relative}: {stderr}");
    }
}

#[test]
fn check_binds_dimensions_from_the_command_line() {
    let output = nnc(&[
        "check",
        "examples/mlp.nn",
        "--emit",
        "ir",
        "--dim",
        "batch=16",
    ]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("%0: f32[16, 784] = input x"));

    let output = nnc(&["check", "examples/mlp.nn", "--dim", "batch"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAME=SIZE"));
}

#[test]
fn check_reports_a_missing_file_without_panicking() {
    let output = nnc(&["check", "examples/does_not_exist.nn"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot read examples/does_not_exist.nn"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}
