//! Generated code passes clippy with warnings denied, for every example and fixture.
//!
//! This runs `cargo clippy` on this crate, whose build script generates all the models, in a
//! target directory of its own so that it does not contend with the running test build.

use std::path::Path;
use std::process::Command;

#[test]
fn generated_code_has_no_clippy_warnings() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir.join("../..");
    let output = Command::new(env!("CARGO"))
        .args([
            "clippy",
            "--quiet",
            "-p",
            "nnc-codegen-tests",
            "--lib",
            "--",
            "-D",
            "warnings",
        ])
        .env(
            "CARGO_TARGET_DIR",
            workspace.join("target/generated-clippy"),
        )
        .current_dir(&workspace)
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "clippy found problems in generated code:\n{stderr}"
    );
    assert!(
        !stderr.contains("warning"),
        "clippy warned about generated code:\n{stderr}"
    );
}
